/**
 * A small streaming GGUF v3 writer, and the export of a FalconBackbone's weights as a llama.cpp
 * `bloom` or `falcon` model, for the side-by-side benchmark in bench/compare.
 *
 * Format (ggml's docs/gguf.md): little-endian; "GGUF", u32 version 3, u64 tensor count, u64
 * metadata count; the metadata key/values; one info per tensor (name, u32 n_dims, u64 ne[n_dims]
 * with ne[0] the fastest-varying dimension, u32 ggml type, u64 offset into the data section);
 * padding to `general.alignment` (32); the tensor data, each tensor starting at an aligned offset.
 * Tensors are written one at a time from a callback, so a multi-gigabyte model never sits in memory.
 */
import { open, rename, mkdir, rm } from "node:fs/promises";
import path from "node:path";

import type { FalconBackbone } from "../src/index.js";
import { GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_VALUE } from "../src/presets/gguf.js";

export { GGUF_DEFAULT_ALIGNMENT };
export const GGUF_VERSION = 3;

/** ggml tensor types written here. */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 } as const;
export type GgmlType = (typeof GGML_TYPE)[keyof typeof GGML_TYPE];
export const GGML_TYPE_NAME: Record<GgmlType, string> = { 0: "F32", 1: "F16", 2: "Q4_0", 8: "Q8_0", 30: "BF16" };

/** llama.cpp's llama_ftype for `general.file_type`. */
const LLAMA_FTYPE: Record<GgmlType, number> = { 0: 0, 1: 1, 2: 2, 8: 7, 30: 32 };

/** Q8_0: blocks of 32 weights, one float16 scale and 32 int8 quants (34 bytes). */
export const Q8_0_BLOCK = 32;
const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;
/** Q4_0: blocks of 32 weights, one float16 scale and 32 4-bit quants, two to a byte (18 bytes). */
const Q4_0_BLOCK = 32;
const Q4_0_BLOCK_BYTES = 2 + Q4_0_BLOCK / 2;

/** Bytes of a tensor of ggml dims `ne` (ne[0] fastest) of any ggml type falcon-native reads (src/presets/gguf.ts). */
export function tensorByteSize(ne: readonly number[], type: number): number {
  const info = GGML_TYPES.get(type);
  if (!info) throw new Error(`ggml type ${type} has no known block size`);
  const elements = ne.reduce((a, b) => a * b, 1);
  if (ne[0]! % info.blockValues !== 0) throw new Error(`${info.name} needs rows of a multiple of ${info.blockValues} values, got ${ne[0]}`);
  return (elements / info.blockValues) * info.blockBytes;
}

const align = (offset: number, alignment: number): number => Math.ceil(offset / alignment) * alignment;

/** Growable little-endian byte buffer for the header. */
class ByteSink {
  #buffer = Buffer.alloc(1 << 16);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #reserve(bytes: number): number {
    if (this.#length + bytes > this.#buffer.length) {
      const grown = Buffer.alloc(Math.max(this.#buffer.length * 2, this.#length + bytes));
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    const at = this.#length;
    this.#length += bytes;
    return at;
  }

  // Reserve first: growing replaces the buffer, so it must not be read before.
  u8(value: number): void { const at = this.#reserve(1); this.#buffer.writeUInt8(value, at); }
  u32(value: number): void { const at = this.#reserve(4); this.#buffer.writeUInt32LE(value, at); }
  i32(value: number): void { const at = this.#reserve(4); this.#buffer.writeInt32LE(value, at); }
  f32(value: number): void { const at = this.#reserve(4); this.#buffer.writeFloatLE(value, at); }
  u64(value: number): void { const at = this.#reserve(8); this.#buffer.writeBigUInt64LE(BigInt(value), at); }
  string(value: string): void {
    const bytes = Buffer.from(value, "utf8");
    this.u64(bytes.length);
    const at = this.#reserve(bytes.length);
    bytes.copy(this.#buffer, at);
  }
  zeros(count: number): void { const at = this.#reserve(count); this.#buffer.fill(0, at, at + count); }
  bytes(): Buffer { return this.#buffer.subarray(0, this.#length); }
}

export interface GgufTensorInfo {
  name: string;
  /** ggml dims, ne[0] (the row length, our `cols`) first. */
  ne: number[];
  /** A GgmlType here; tests also write the other types falcon-native reads. */
  type: number;
  byteSize: number;
  /** Offset from the start of the data section. */
  offset: number;
}

type MetadataWriter = (sink: ByteSink) => void;

/** Collects metadata and tensor infos, then streams the file. */
export class GgufWriter {
  readonly #metadata = new Map<string, MetadataWriter>();
  readonly #tensors: GgufTensorInfo[] = [];
  readonly #alignment: number;
  #dataSize = 0;

  constructor(alignment = GGUF_DEFAULT_ALIGNMENT) {
    this.#alignment = alignment;
    this.addUint32("general.alignment", alignment);
  }

  #add(key: string, type: number, write: (sink: ByteSink) => void): this {
    if (this.#metadata.has(key)) throw new Error(`duplicate GGUF key ${key}`);
    this.#metadata.set(key, (sink) => {
      sink.string(key);
      sink.u32(type);
      write(sink);
    });
    return this;
  }

  addUint32(key: string, value: number): this { return this.#add(key, GGUF_VALUE.UINT32, (s) => s.u32(value)); }
  addInt32(key: string, value: number): this { return this.#add(key, GGUF_VALUE.INT32, (s) => s.i32(value)); }
  addFloat32(key: string, value: number): this { return this.#add(key, GGUF_VALUE.FLOAT32, (s) => s.f32(value)); }
  addBool(key: string, value: boolean): this { return this.#add(key, GGUF_VALUE.BOOL, (s) => s.u8(value ? 1 : 0)); }
  addString(key: string, value: string): this { return this.#add(key, GGUF_VALUE.STRING, (s) => s.string(value)); }

  addStringArray(key: string, values: readonly string[]): this {
    return this.#add(key, GGUF_VALUE.ARRAY, (s) => {
      s.u32(GGUF_VALUE.STRING);
      s.u64(values.length);
      for (const value of values) s.string(value);
    });
  }

  addInt32Array(key: string, values: ArrayLike<number>): this {
    return this.#add(key, GGUF_VALUE.ARRAY, (s) => {
      s.u32(GGUF_VALUE.INT32);
      s.u64(values.length);
      for (let i = 0; i < values.length; i++) s.i32(values[i]);
    });
  }

  addFloat32Array(key: string, values: ArrayLike<number>): this {
    return this.#add(key, GGUF_VALUE.ARRAY, (s) => {
      s.u32(GGUF_VALUE.FLOAT32);
      s.u64(values.length);
      for (let i = 0; i < values.length; i++) s.f32(values[i]);
    });
  }

  /** Declares a tensor; its bytes come from write()'s callback, in declaration order. */
  addTensor(name: string, ne: readonly number[], type: number): GgufTensorInfo {
    if (this.#tensors.some((t) => t.name === name)) throw new Error(`duplicate GGUF tensor ${name}`);
    if (ne.length < 1 || ne.length > 4 || ne.some((n) => !Number.isInteger(n) || n <= 0)) {
      throw new Error(`tensor ${name}: bad dims [${ne.join(", ")}]`);
    }
    const info: GgufTensorInfo = { name, ne: [...ne], type, byteSize: tensorByteSize(ne, type), offset: this.#dataSize };
    this.#dataSize = align(this.#dataSize + info.byteSize, this.#alignment);
    this.#tensors.push(info);
    return info;
  }

  get tensors(): readonly GgufTensorInfo[] {
    return this.#tensors;
  }

  /** Total file size once written. */
  get fileSize(): number {
    return align(this.#header().length, this.#alignment) + this.#dataSize;
  }

  #header(): Buffer {
    const sink = new ByteSink();
    sink.u8(0x47); sink.u8(0x47); sink.u8(0x55); sink.u8(0x46); // "GGUF"
    sink.u32(GGUF_VERSION);
    sink.u64(this.#tensors.length);
    sink.u64(this.#metadata.size);
    for (const write of this.#metadata.values()) write(sink);
    for (const tensor of this.#tensors) {
      sink.string(tensor.name);
      sink.u32(tensor.ne.length);
      for (const n of tensor.ne) sink.u64(n);
      sink.u32(tensor.type);
      sink.u64(tensor.offset);
    }
    sink.zeros(align(sink.length, this.#alignment) - sink.length);
    return sink.bytes();
  }

  /**
   * Writes the file to `<file>.partial` and renames it into place, asking `tensorData` for each
   * tensor's bytes (exactly `byteSize` of them, in the declared type) one at a time.
   */
  async write(file: string, tensorData: (tensor: GgufTensorInfo) => Promise<Uint8Array>): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true });
    const partial = `${file}.partial`;
    const handle = await open(partial, "w");
    try {
      const header = this.#header();
      await handle.write(header, 0, header.length, 0);
      const dataStart = header.length;
      const padding = new Uint8Array(this.#alignment);
      for (const tensor of this.#tensors) {
        const bytes = await tensorData(tensor);
        if (bytes.byteLength !== tensor.byteSize) {
          throw new Error(`tensor ${tensor.name}: got ${bytes.byteLength} bytes, expected ${tensor.byteSize}`);
        }
        let position = dataStart + tensor.offset;
        for (let at = 0; at < bytes.byteLength;) {
          const { bytesWritten } = await handle.write(bytes, at, Math.min(bytes.byteLength - at, 1 << 26), position);
          at += bytesWritten;
          position += bytesWritten;
        }
        const pad = align(tensor.byteSize, this.#alignment) - tensor.byteSize;
        if (pad > 0) await handle.write(padding, 0, pad, position);
      }
      await handle.close();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await rm(partial, { force: true });
      throw error;
    }
    await rename(partial, file);
  }
}

// ---------------------------------------------------------------------------------------------
// Number formats

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 → IEEE binary16 bits, round to nearest even (as the F16C instruction and ggml do). */
export function float32ToFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0); // inf / NaN
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    const m = mantissa | 0x800000; // subnormal: shift the implicit bit in
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let result = m >>> shift;
    if (rest > half || (rest === half && (result & 1))) result++;
    return sign | result;
  }
  let result = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (result & 1))) result++; // may carry into the exponent: still correct
  return sign | result;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** float32 → bfloat16 bits, round to nearest even (NaN kept quiet). */
export function float32ToBfloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export type SourceDType = "float32" | "bfloat16" | "float16";

/** Little-endian bytes of `dtype` values → float32. */
export function toFloat32(bytes: Uint8Array, dtype: SourceDType): Float32Array {
  if (dtype === "float32") {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return new Float32Array(bytes.slice().buffer);
  }
  const count = bytes.byteLength / 2;
  const out = new Float32Array(count);
  if (dtype === "bfloat16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = float16BitsToFloat32(bytes[2 * i] | (bytes[2 * i + 1] << 8));
  }
  return out;
}

function to16Bit(values: Float32Array, convert: (value: number) => number): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const bits = convert(values[i]);
    out[2 * i] = bits & 0xff;
    out[2 * i + 1] = bits >>> 8;
  }
  return out;
}

/** ggml's reference Q8_0 quantisation: per block of 32, d = max|x| / 127, q = round(x / d). */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) throw new Error(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values`);
  const blocks = values.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  const quants = new Int8Array(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const first = b * Q8_0_BLOCK;
    let amax = 0;
    for (let i = 0; i < Q8_0_BLOCK; i++) amax = Math.max(amax, Math.abs(values[first + i]));
    const d = Math.fround(amax / 127);
    const inverse = d ? Math.fround(1 / d) : 0;
    const scaleBits = float32ToFloat16Bits(d);
    const at = b * Q8_0_BLOCK_BYTES;
    out[at] = scaleBits & 0xff;
    out[at + 1] = scaleBits >>> 8;
    for (let i = 0; i < Q8_0_BLOCK; i++) {
      const x = Math.fround(values[first + i] * inverse);
      quants[at + 2 + i] = Math.sign(x) * Math.round(Math.abs(x)); // roundf: halves away from zero
    }
  }
  return out;
}

/**
 * ggml's reference Q4_0 quantisation (quantize_row_q4_0_ref), in float32 steps as C computes them:
 * per block of 32, d = max / -8 with max the value of largest magnitude, q = min(15, trunc(x / d + 8.5));
 * byte j holds q[j] in its low nibble and q[j + 16] in its high one.
 */
export function quantizeQ4_0(values: Float32Array): Uint8Array {
  if (values.length % Q4_0_BLOCK !== 0) throw new Error(`Q4_0 needs a multiple of ${Q4_0_BLOCK} values`);
  const blocks = values.length / Q4_0_BLOCK;
  const out = new Uint8Array(blocks * Q4_0_BLOCK_BYTES);
  const f = Math.fround;
  for (let b = 0; b < blocks; b++) {
    const x = values.subarray(b * Q4_0_BLOCK, (b + 1) * Q4_0_BLOCK);
    let amax = 0;
    let max = 0;
    for (const v of x) {
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -8);
    const inverse = d ? f(1 / d) : 0;
    const at = b * Q4_0_BLOCK_BYTES;
    const scaleBits = float32ToFloat16Bits(d);
    out[at] = scaleBits & 0xff;
    out[at + 1] = scaleBits >>> 8;
    const q = (v: number) => Math.min(15, Math.trunc(f(f(v * inverse) + 8.5)));
    for (let j = 0; j < Q4_0_BLOCK / 2; j++) out[at + 2 + j] = q(x[j]!) | (q(x[j + Q4_0_BLOCK / 2]!) << 4);
  }
  return out;
}

/** Converts little-endian `dtype` bytes to the bytes of ggml `type`; a no-op copy-free path when they match. */
export function convertTensor(bytes: Uint8Array, dtype: SourceDType, type: GgmlType): Uint8Array {
  if ((dtype === "float32" && type === GGML_TYPE.F32) || (dtype === "float16" && type === GGML_TYPE.F16) ||
      (dtype === "bfloat16" && type === GGML_TYPE.BF16)) {
    return bytes;
  }
  const values = toFloat32(bytes, dtype);
  switch (type) {
    case GGML_TYPE.F32: return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case GGML_TYPE.F16: return to16Bit(values, float32ToFloat16Bits);
    case GGML_TYPE.BF16: return to16Bit(values, float32ToBfloat16Bits);
    case GGML_TYPE.Q8_0: return quantizeQ8_0(values);
    case GGML_TYPE.Q4_0: return quantizeQ4_0(values);
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal GPT-2 byte-level BPE vocabulary that llama.cpp loads

/** GPT-2's reversible byte → printable code point table. */
function gpt2ByteChars(): string[] {
  const chars = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCodePoint(printable ? b : next++);
  }
  return chars;
}

/** A byte-level BPE vocabulary as GGUF's tokenizer.ggml.* metadata holds it. */
export interface GgufVocabulary {
  /** Tokens in id order, one per row of the embedding. */
  tokens: string[];
  /** llama_token_type per token: 1 normal, 3 control, 5 unused. */
  tokenTypes: Int32Array;
  /** "left right", in priority order. */
  merges: string[];
  /** Used for BOS and EOS. */
  eosId: number;
  /** tokenizer.ggml.pre: llama.cpp's pre-tokenizer ("default", or "gpt-2" for GPT-2's regex). */
  pre: string;
}

/**
 * `size` tokens: the 256 byte tokens, then two-byte tokens (each with its BPE merge), and
 * `<|endoftext|>` last as the control token used for BOS and EOS. Real text round-trips.
 */
export function syntheticGpt2Vocabulary(size: number): GgufVocabulary {
  const pairs = size - 257;
  if (pairs < 0 || pairs > 256 * 256) throw new Error(`the synthetic vocabulary supports 257..${256 * 256 + 257} tokens, got ${size}`);
  const bytes = gpt2ByteChars();
  const tokens = [...bytes];
  const merges: string[] = [];
  for (let i = 0; i < pairs; i++) {
    // Printable ASCII pairs first, so common text merges.
    const a = bytes[(0x20 + (i >> 8)) % 256];
    const b = bytes[(0x20 + (i & 0xff)) % 256];
    tokens.push(a + b);
    merges.push(`${a} ${b}`);
  }
  tokens.push("<|endoftext|>");
  const tokenTypes = new Int32Array(size).fill(1); // NORMAL
  tokenTypes[size - 1] = 3; // CONTROL
  return { tokens, tokenTypes, merges, eosId: size - 1, pre: "default" };
}

/** `vocabulary` as tokenizer.ggml.* metadata of a GPT-2 BPE tokenizer, its EOS token also BOS. */
export function addGpt2Vocabulary(writer: GgufWriter, vocabulary: GgufVocabulary): void {
  writer.addString("tokenizer.ggml.model", "gpt2");
  writer.addString("tokenizer.ggml.pre", vocabulary.pre);
  writer.addStringArray("tokenizer.ggml.tokens", vocabulary.tokens);
  writer.addInt32Array("tokenizer.ggml.token_type", vocabulary.tokenTypes);
  writer.addStringArray("tokenizer.ggml.merges", vocabulary.merges);
  writer.addUint32("tokenizer.ggml.bos_token_id", vocabulary.eosId);
  writer.addUint32("tokenizer.ggml.eos_token_id", vocabulary.eosId);
}

// ---------------------------------------------------------------------------------------------
// FalconBackbone → llama.cpp `bloom` / `falcon`

export type LlamaCppArch = "bloom" | "falcon";

export interface FalconGgufOptions {
  arch: LlamaCppArch;
  /** ggml type of the matrices (norms and biases stay F32, as llama.cpp's converter writes them). */
  type: GgmlType;
  name?: string;
  /** Tokenizer metadata; default syntheticGpt2Vocabulary (the model's vocabulary size). */
  vocabulary?: GgufVocabulary;
}

export interface TensorMapping {
  /** Our canonical weight name, or a description of a synthesised tensor. */
  from: string;
  to: string;
}

type WeightReader = Pick<Awaited<ReturnType<FalconBackbone["nativeModel"]>>, "getWeight" | "weightNames">;

interface PlannedTensor {
  info: GgufTensorInfo;
  /** null: a synthesised tensor (`constant` fills it). */
  source: string | null;
  constant?: number;
}

/**
 * The `bloom` mapping: llama.cpp's bloom block is falcon-rw's (sequential, ALiBi, MHA, biases,
 * GELU) plus a layer norm on the token embeddings (`token_embd_norm`), which we add as an
 * identity-initialised LayerNorm (gamma 1, beta 0). The fused QKV keeps our row order, all query
 * heads then all key heads then all value heads: llama.cpp's converter rearranges BLOOM's per-head
 * interleaved rows into exactly that before writing `attn_qkv` (conversion/bloom.py), and
 * build_qkv views Q, K, V as consecutive row blocks.
 *
 * The `falcon` mapping: parallel block with one layer norm feeding attention and MLP, rotary (NeoX
 * halves), no projection biases; the fused QKV is again [all Q; all K; all V], the layout
 * llama.cpp's falcon converter produces from Hugging Face's per-group interleave (conversion/falcon.py).
 */
function planFalconGguf(config: ReturnType<FalconBackbone["getConfig"]>, names: readonly string[], options: FalconGgufOptions) {
  const { arch, type } = options;
  const D = config.hiddenDim;
  const F = config.intermediateDim;
  const H = config.numAttentionHeads;
  const Hkv = config.numKeyValueHeads;
  const qkvRows = D + 2 * (D / H) * Hkv;
  if (arch === "bloom") {
    if (config.blockLayout !== "sequential" || config.positionEncoding !== "alibi" || !config.useBias || Hkv !== H) {
      throw new Error("the bloom mapping needs falcon-rw's block: sequential, ALiBi, biases, multi-head attention");
    }
  } else if (config.blockLayout !== "parallel_one_norm" || config.positionEncoding !== "rotary" || config.useBias) {
    throw new Error("the falcon mapping needs the falcon-7b block: parallel with one norm, rotary, no projection biases");
  }
  if (config.ropeScaling !== null) throw new Error("rope scaling is not mapped");

  const writer = new GgufWriter();
  const matrixType = type;
  const planned: PlannedTensor[] = [];
  const mappings: TensorMapping[] = [];
  const have = new Set(names);
  const matrix = (from: string, to: string, rows: number, cols: number) => {
    if (!have.has(from)) throw new Error(`the model has no weight ${from}`);
    planned.push({ info: writer.addTensor(to, [cols, rows], matrixType), source: from });
    mappings.push({ from, to });
  };
  const vector = (from: string, to: string, length: number) => {
    if (!have.has(from)) throw new Error(`the model has no weight ${from}`);
    planned.push({ info: writer.addTensor(to, [length], GGML_TYPE.F32), source: from });
    mappings.push({ from, to });
  };
  const constant = (value: number, to: string, length: number, description: string) => {
    planned.push({ info: writer.addTensor(to, [length], GGML_TYPE.F32), source: null, constant: value });
    mappings.push({ from: description, to });
  };

  matrix("token_embedding", "token_embd.weight", config.vocabularySize, D);
  if (arch === "bloom") {
    constant(1, "token_embd_norm.weight", D, "(added) embedding LayerNorm gamma = 1");
    constant(0, "token_embd_norm.bias", D, "(added) embedding LayerNorm beta = 0");
  }
  vector("final_norm.gamma", "output_norm.weight", D);
  vector("final_norm.beta", "output_norm.bias", D);
  if (!config.tieWordEmbeddings) matrix("lm_head", "output.weight", config.vocabularySize, D);
  for (let l = 0; l < config.numLayers; l++) {
    const ours = `layers.${l}.`;
    const theirs = `blk.${l}.`;
    vector(`${ours}attn_norm.gamma`, `${theirs}attn_norm.weight`, D);
    vector(`${ours}attn_norm.beta`, `${theirs}attn_norm.bias`, D);
    matrix(`${ours}qkv.weight`, `${theirs}attn_qkv.weight`, qkvRows, D);
    matrix(`${ours}attn_out.weight`, `${theirs}attn_output.weight`, D, D);
    matrix(`${ours}ffn_up.weight`, `${theirs}ffn_up.weight`, F, D);
    matrix(`${ours}ffn_down.weight`, `${theirs}ffn_down.weight`, D, F);
    if (arch === "bloom") {
      vector(`${ours}qkv.bias`, `${theirs}attn_qkv.bias`, qkvRows);
      vector(`${ours}attn_out.bias`, `${theirs}attn_output.bias`, D);
      vector(`${ours}ffn_up.bias`, `${theirs}ffn_up.bias`, F);
      vector(`${ours}ffn_down.bias`, `${theirs}ffn_down.bias`, D);
      vector(`${ours}mlp_norm.gamma`, `${theirs}ffn_norm.weight`, D);
      vector(`${ours}mlp_norm.beta`, `${theirs}ffn_norm.bias`, D);
    }
  }

  writer.addString("general.architecture", arch);
  writer.addString("general.name", options.name ?? `falcon-native random ${arch}`);
  writer.addUint32("general.file_type", LLAMA_FTYPE[type]);
  writer.addUint32("general.quantization_version", 2);
  writer.addUint32(`${arch}.context_length`, config.maxPositionEmbeddings);
  writer.addUint32(`${arch}.embedding_length`, D);
  writer.addUint32(`${arch}.feed_forward_length`, F);
  writer.addUint32(`${arch}.block_count`, config.numLayers);
  writer.addUint32(`${arch}.attention.head_count`, H);
  writer.addUint32(`${arch}.attention.head_count_kv`, Hkv);
  writer.addFloat32(`${arch}.attention.layer_norm_epsilon`, config.layerNormEpsilon);
  if (arch === "falcon") {
    writer.addFloat32(`${arch}.rope.freq_base`, config.ropeTheta);
    writer.addUint32(`${arch}.rope.dimension_count`, D / H);
  }
  const vocabulary = options.vocabulary ?? syntheticGpt2Vocabulary(config.vocabularySize);
  if (vocabulary.tokens.length !== config.vocabularySize || vocabulary.tokenTypes.length !== config.vocabularySize) {
    throw new Error(`the GGUF vocabulary has ${vocabulary.tokens.length} tokens, the model ${config.vocabularySize} embedding rows`);
  }
  addGpt2Vocabulary(writer, vocabulary);
  writer.addBool("tokenizer.ggml.add_bos_token", false);
  writer.addBool("tokenizer.ggml.add_eos_token", false);
  return { writer, planned, mappings };
}

/** The tensor mapping writeFalconGguf would use, without writing anything. */
export function falconGgufMapping(backbone: FalconBackbone, names: readonly string[], options: FalconGgufOptions): TensorMapping[] {
  return planFalconGguf(backbone.getConfig(), names, options).mappings;
}

/**
 * Streams `backbone`'s weights into a GGUF file llama.cpp loads as `options.arch`, one weight at a
 * time (converted to `options.type`). Returns the tensor mapping and the file size.
 */
export async function writeFalconGguf(
  backbone: FalconBackbone,
  file: string,
  options: FalconGgufOptions,
  onTensor?: (done: number, total: number, name: string) => void,
): Promise<{ mappings: TensorMapping[]; bytes: number }> {
  const model: WeightReader = await backbone.nativeModel();
  const { writer, planned, mappings } = planFalconGguf(backbone.getConfig(), model.weightNames(), options);
  const byName = new Map(planned.map((p) => [p.info.name, p]));
  let done = 0;
  await writer.write(file, async (tensor) => {
    const plan = byName.get(tensor.name)!;
    onTensor?.(++done, planned.length, tensor.name);
    if (plan.source === null) {
      return new Uint8Array(new Float32Array(tensor.ne[0]).fill(plan.constant ?? 0).buffer);
    }
    const weight = await model.getWeight(plan.source);
    if (weight.rows * weight.cols !== tensor.ne.reduce((a, b) => a * b, 1)) {
      throw new Error(`weight ${plan.source} is [${weight.rows}, ${weight.cols}], GGUF tensor ${tensor.name} is [${tensor.ne.join(", ")}]`);
    }
    // Vectors come back as float32 whatever the model dtype.
    const dtype = weight.data.byteLength === weight.rows * weight.cols * 4 ? "float32" : weight.dtype;
    return convertTensor(weight.data, dtype, tensor.type as GgmlType);
  });
  return { mappings, bytes: writer.fileSize };
}
