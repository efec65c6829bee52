/**
 * GGUF files (ggml's docs/gguf.md) of llama.cpp's `falcon` architecture: config from the metadata,
 * the tokenizer from the file's own vocabulary and merges, tensors in F32 / F16 / BF16 read as they
 * are and ggml's block quantisations dequantised natively on load (native/core/gguf_dequant.cpp).
 *
 * Layout: little-endian; "GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count; the
 * metadata key/values; one info per tensor (name, u32 n_dims, u64 ne[n_dims] with ne[0] the row
 * length, u32 ggml type, u64 offset into the data section); padding to `general.alignment`; the data.
 * Every count, length, offset, shape and type is checked against the file and against limits before
 * anything is allocated for it; the header is read through a bounded window, never the whole file.
 */
import { closeSync, readSync } from "node:fs";
import path from "node:path";

import type { FalconBackboneConfig, FalconDType, ResolvedBackboneConfig } from "../config.js";
import { describeValue, FalconPresetError, quoted } from "../errors.js";
import { callNative, native, type NativeFloatDType, type NativeModel, type NativeWeightFile } from "../native.js";
import type { FalconCausalLMPreprocessorOptions } from "../preprocessor.js";
import { FalconTokenizer } from "../tokenizer.js";
import type { PreparedWeights } from "./index.js";
import { openRegularFile } from "./json.js";

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types. */
export const GGUF_VALUE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9,
  UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
const VALUE_TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"];
const FIXED_VALUE_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const INTEGER_VALUE_TYPES = new Set<number>([0, 1, 2, 3, 4, 5, 10, 11]);

/**
 * The ggml tensor types read here: block size in values and bytes, and how they load. `direct` types
 * are copied (and cast to the model dtype) as they are; the others are dequantised to float32 first.
 */
export interface GgmlTypeInfo {
  name: string;
  blockValues: number;
  blockBytes: number;
  direct: NativeFloatDType | null;
}
export const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map([
  [0, { name: "F32", blockValues: 1, blockBytes: 4, direct: "float32" }],
  [1, { name: "F16", blockValues: 1, blockBytes: 2, direct: "float16" }],
  [30, { name: "BF16", blockValues: 1, blockBytes: 2, direct: "bfloat16" }],
  [2, { name: "Q4_0", blockValues: 32, blockBytes: 18, direct: null }],
  [3, { name: "Q4_1", blockValues: 32, blockBytes: 20, direct: null }],
  [6, { name: "Q5_0", blockValues: 32, blockBytes: 22, direct: null }],
  [7, { name: "Q5_1", blockValues: 32, blockBytes: 24, direct: null }],
  [8, { name: "Q8_0", blockValues: 32, blockBytes: 34, direct: null }],
  [12, { name: "Q4_K", blockValues: 256, blockBytes: 144, direct: null }],
  [13, { name: "Q5_K", blockValues: 256, blockBytes: 176, direct: null }],
  [14, { name: "Q6_K", blockValues: 256, blockBytes: 210, direct: null }],
] as [number, GgmlTypeInfo][]);

/**
 * The dtype a model loaded from a GGUF runs in by default: the nearest one we run for the file's main
 * matrix type. Q8_0's 32-value blocks become int8's per-row scales (requantised from the exact
 * float32 values); Q4_0 runs as int4, which is Q4_0's own scheme, so requantising its exact float32
 * values gives back the file's nibbles and scales; the other 4- to 6-bit types run as bfloat16, whose
 * rounding (2^-9 relative) is far below their own quantisation step.
 */
export const GGUF_DEFAULT_DTYPE: Readonly<Record<string, FalconDType>> = {
  F32: "float32", F16: "float16", BF16: "bfloat16", Q8_0: "int8",
  Q4_0: "int4", Q4_1: "bfloat16", Q5_0: "bfloat16", Q5_1: "bfloat16", Q4_K: "bfloat16", Q5_K: "bfloat16", Q6_K: "bfloat16",
};

// Limits: real files stay far below each (falcon-180b: ~560 tensors, ~30 keys, 65k tokens and merges).
const MAX_TENSORS = 1 << 16;
const MAX_METADATA_KEYS = 1 << 16;
const MAX_KEY_BYTES = 65535;
const MAX_STRING_BYTES = 16 * 1024 * 1024;
const MAX_ARRAY_LENGTH = 1 << 24;
/** Array items of the whole header together, so many large arrays cannot add up to an allocation bomb. */
const MAX_METADATA_ITEMS = 1 << 25;
const MAX_DIMS = 4;
/** One dimension; the product of the dims is then checked against the data section. */
const MAX_DIM = 2 ** 40;
const MAX_ALIGNMENT = 1 << 20;
/** Bytes read per refill of the header window. */
const WINDOW_BYTES = 1 << 20;

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufMetadataEntry {
  type: number;
  /** For arrays, the item type. */
  itemType?: number;
  value: GgufValue;
}

export interface GgufTensor {
  name: string;
  /** ggml dims, ne[0] (the row length) first. */
  ne: number[];
  type: number;
  typeInfo: GgmlTypeInfo;
  /** Absolute offset of the first byte in the file. */
  byteOffset: number;
  byteLength: number;
  /** ne[0], and the product of the other dims. */
  cols: number;
  rows: number;
}

export interface GgufHeader {
  file: string;
  version: number;
  alignment: number;
  dataStart: number;
  metadata: Map<string, GgufMetadataEntry>;
  tensors: Map<string, GgufTensor>;
}

/** Sequential little-endian reads of an open file through a bounded window; every read is checked against the size. */
class HeaderCursor {
  position = 0;
  #window = Buffer.alloc(0);
  #windowStart = 0;

  constructor(readonly fd: number, readonly file: string, readonly size: number) {}

  fail(message: string): never {
    throw new FalconPresetError(`${this.file}: ${message}`);
  }

  /** Makes `bytes` (≤ WINDOW_BYTES) readable at the position, or fails naming `field` when the file ends first. */
  #need(bytes: number, field: string): number {
    if (bytes > this.size - this.position) {
      this.fail(`truncated: ${field} needs ${bytes} bytes at offset ${this.position}, the file has ${this.size}`);
    }
    const at = this.position - this.#windowStart;
    if (at >= 0 && at + bytes <= this.#window.length) return at;
    const length = Math.min(Math.max(WINDOW_BYTES, bytes), this.size - this.position);
    const window = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const got = readSync(this.fd, window, done, length - done, this.position + done);
      if (got === 0) this.fail(`truncated while reading ${field}: the file shrank to ${this.position + done} bytes`);
      done += got;
    }
    this.#window = window;
    this.#windowStart = this.position;
    return 0;
  }

  u8(field: string): number { const at = this.#need(1, field); this.position += 1; return this.#window.readUInt8(at); }
  i8(field: string): number { const at = this.#need(1, field); this.position += 1; return this.#window.readInt8(at); }
  u16(field: string): number { const at = this.#need(2, field); this.position += 2; return this.#window.readUInt16LE(at); }
  i16(field: string): number { const at = this.#need(2, field); this.position += 2; return this.#window.readInt16LE(at); }
  u32(field: string): number { const at = this.#need(4, field); this.position += 4; return this.#window.readUInt32LE(at); }
  i32(field: string): number { const at = this.#need(4, field); this.position += 4; return this.#window.readInt32LE(at); }
  f32(field: string): number { const at = this.#need(4, field); this.position += 4; return this.#window.readFloatLE(at); }
  f64(field: string): number { const at = this.#need(8, field); this.position += 8; return this.#window.readDoubleLE(at); }
  u64Big(field: string): bigint { const at = this.#need(8, field); this.position += 8; return this.#window.readBigUInt64LE(at); }
  i64Big(field: string): bigint { const at = this.#need(8, field); this.position += 8; return this.#window.readBigInt64LE(at); }

  /** A u64 count or size, at most `max` (and so a safe integer). */
  count(field: string, max: number): number {
    const value = this.u64Big(field);
    if (value > BigInt(max)) this.fail(`${field} = ${value} exceeds the limit of ${max}`);
    return Number(value);
  }

  string(field: string, maxBytes: number): string {
    const length = this.count(`${field} length`, maxBytes);
    if (length > this.size - this.position) {
      this.fail(`truncated: ${field} claims ${length} bytes at offset ${this.position}, the file has ${this.size}`);
    }
    let bytes: Buffer;
    if (length <= WINDOW_BYTES) {
      const at = this.#need(length, field);
      bytes = this.#window.subarray(at, at + length);
    } else {
      bytes = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const got = readSync(this.fd, bytes, done, length - done, this.position + done);
        if (got === 0) this.fail(`truncated while reading ${field}`);
        done += got;
      }
    }
    this.position += length;
    try {
      return UTF8.decode(bytes);
    } catch {
      return this.fail(`${field} is not valid UTF-8`);
    }
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

function readScalar(cursor: HeaderCursor, type: number, field: string): GgufValue {
  switch (type) {
    case GGUF_VALUE.UINT8: return cursor.u8(field);
    case GGUF_VALUE.INT8: return cursor.i8(field);
    case GGUF_VALUE.UINT16: return cursor.u16(field);
    case GGUF_VALUE.INT16: return cursor.i16(field);
    case GGUF_VALUE.UINT32: return cursor.u32(field);
    case GGUF_VALUE.INT32: return cursor.i32(field);
    case GGUF_VALUE.FLOAT32: return cursor.f32(field);
    case GGUF_VALUE.BOOL: {
      const byte = cursor.u8(field);
      if (byte > 1) cursor.fail(`${field}: bool byte ${byte} is neither 0 nor 1`);
      return byte === 1;
    }
    case GGUF_VALUE.STRING: return cursor.string(field, MAX_STRING_BYTES);
    case GGUF_VALUE.UINT64: return cursor.u64Big(field);
    case GGUF_VALUE.INT64: return cursor.i64Big(field);
    case GGUF_VALUE.FLOAT64: return cursor.f64(field);
    default: return cursor.fail(`${field}: unknown value type ${type}`);
  }
}

/** Parses and checks a GGUF header; reads no tensor data. */
export function readGgufHeader(file: string): GgufHeader {
  const { fd, size } = openRegularFile(file);
  try {
    return parseHeader(new HeaderCursor(fd, file, size));
  } finally {
    closeSync(fd);
  }
}

function parseHeader(cursor: HeaderCursor): GgufHeader {
  const { file, size } = cursor;
  if (size < 24) cursor.fail(`truncated: ${size} bytes cannot hold a GGUF header (24 bytes)`);
  if (cursor.u32("magic") !== GGUF_MAGIC) cursor.fail(`not a GGUF file (the first bytes are not "GGUF")`);
  const version = cursor.u32("version");
  if (version !== 2 && version !== 3) {
    cursor.fail(`GGUF version ${version} is not supported (2 and 3 are; a big-endian file reads as a huge version)`);
  }
  const tensorCount = cursor.count("tensor count", MAX_TENSORS);
  const keyCount = cursor.count("metadata key count", MAX_METADATA_KEYS);
  // Each key/value takes at least 8 + 4 + 1 bytes and each tensor info 8 + 4 + 8 + 4 + 8.
  if (keyCount * 13 + tensorCount * 32 > size - cursor.position) {
    cursor.fail(`truncated: ${keyCount} metadata keys and ${tensorCount} tensor infos cannot fit in the ${size}-byte file`);
  }

  const metadata = new Map<string, GgufMetadataEntry>();
  let items = 0;
  for (let k = 0; k < keyCount; k++) {
    const key = cursor.string(`metadata key ${k}`, MAX_KEY_BYTES);
    if (metadata.has(key)) cursor.fail(`metadata key ${quoted(key)} appears twice`);
    const field = `metadata ${quoted(key)}`;
    const type = cursor.u32(`${field} type`);
    if (type !== GGUF_VALUE.ARRAY) {
      metadata.set(key, { type, value: readScalar(cursor, type, field) });
      continue;
    }
    const itemType = cursor.u32(`${field} array item type`);
    if (itemType === GGUF_VALUE.ARRAY) cursor.fail(`${field}: arrays of arrays are not supported`);
    if (itemType > GGUF_VALUE.FLOAT64) cursor.fail(`${field}: unknown array item type ${itemType}`);
    const length = cursor.count(`${field} array length`, MAX_ARRAY_LENGTH);
    const minItemBytes = itemType === GGUF_VALUE.STRING ? 8 : FIXED_VALUE_BYTES[itemType]!;
    if (length * minItemBytes > size - cursor.position) {
      cursor.fail(`truncated: ${field} claims ${length} ${VALUE_TYPE_NAMES[itemType]} items, more than the file's remaining ${size - cursor.position} bytes hold`);
    }
    items += length;
    if (items > MAX_METADATA_ITEMS) cursor.fail(`${field}: the metadata arrays hold more than ${MAX_METADATA_ITEMS} items in all`);
    const values: GgufValue[] = new Array(length);
    for (let i = 0; i < length; i++) values[i] = readScalar(cursor, itemType, `${field}[${i}]`);
    metadata.set(key, { type, itemType, value: values });
  }

  const alignmentEntry = metadata.get("general.alignment");
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignmentEntry !== undefined) {
    const value = alignmentEntry.value;
    if (alignmentEntry.type !== GGUF_VALUE.UINT32 || typeof value !== "number" || value === 0 || (value & (value - 1)) !== 0 || value > MAX_ALIGNMENT) {
      cursor.fail(`general.alignment must be a u32 power of two up to ${MAX_ALIGNMENT}, got ${describeValue(value)}`);
    }
    alignment = value;
  }

  const infos: { name: string; ne: number[]; type: number; offset: number }[] = [];
  const names = new Set<string>();
  for (let t = 0; t < tensorCount; t++) {
    const name = cursor.string(`tensor ${t} name`, MAX_KEY_BYTES);
    if (names.has(name)) cursor.fail(`tensor ${quoted(name)} appears twice`);
    names.add(name);
    const field = `tensor ${quoted(name)}`;
    const dims = cursor.u32(`${field} n_dims`);
    if (dims < 1 || dims > MAX_DIMS) cursor.fail(`${field}: n_dims ${dims} is outside 1..${MAX_DIMS}`);
    const ne: number[] = [];
    for (let d = 0; d < dims; d++) {
      const n = cursor.count(`${field} ne[${d}]`, MAX_DIM);
      if (n === 0) cursor.fail(`${field}: ne[${d}] is 0`);
      ne.push(n);
    }
    const type = cursor.u32(`${field} type`);
    const offset = cursor.count(`${field} offset`, size);
    infos.push({ name, ne, type, offset });
  }
  const dataStart = Math.ceil(cursor.position / alignment) * alignment;
  if (dataStart > size) cursor.fail(`truncated: the data section would start at ${dataStart}, past the end (${size} bytes)`);
  const dataBytes = size - dataStart;

  const tensors = new Map<string, GgufTensor>();
  for (const { name, ne, type, offset } of infos) {
    const field = `tensor ${quoted(name)}`;
    const typeInfo = GGML_TYPES.get(type);
    if (!typeInfo) {
      const known = [...GGML_TYPES.values()].map((t) => t.name).join(", ");
      cursor.fail(`${field} has ggml type ${type}, which is not supported (supported: ${known})`);
    }
    if (ne[0]! % typeInfo.blockValues !== 0) {
      cursor.fail(`${field}: rows of ${ne[0]} values are not whole ${typeInfo.name} blocks of ${typeInfo.blockValues}`);
    }
    // Checked after each dim, so the product never grows past 2^40 × the data bytes before it is refused.
    let elements = 1;
    for (const n of ne) {
      elements *= n;
      if (elements / typeInfo.blockValues * typeInfo.blockBytes > dataBytes) {
        cursor.fail(`${field}: shape [${ne.join(", ")}] of ${typeInfo.name} needs more bytes than the ${dataBytes}-byte data section holds`);
      }
    }
    const byteLength = (elements / typeInfo.blockValues) * typeInfo.blockBytes;
    if (offset % alignment !== 0) cursor.fail(`${field}: offset ${offset} is not a multiple of the alignment ${alignment}`);
    if (offset > dataBytes || byteLength > dataBytes - offset) {
      cursor.fail(`${field}: bytes [${offset}, ${offset + byteLength}) of the data section run past its end (${dataBytes} bytes); the file is truncated or corrupt`);
    }
    tensors.set(name, {
      name, ne, type, typeInfo, byteOffset: dataStart + offset, byteLength, cols: ne[0]!, rows: elements / ne[0]!,
    });
  }
  const ordered = [...tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < ordered.length; i++) {
    const previous = ordered[i - 1]!;
    if (ordered[i]!.byteOffset < previous.byteOffset + previous.byteLength) {
      cursor.fail(`tensors ${quoted(previous.name)} and ${quoted(ordered[i]!.name)} overlap`);
    }
  }
  return { file, version, alignment, dataStart, metadata, tensors };
}

// ---------------------------------------------------------------------------------------------
// Typed metadata lookups

/**
 * The shortest decimal that is the same float32: converters write 1e-5 as the float32 nearest it,
 * which reads back as 0.000009999999747…; the decimal it was written from is the config's value.
 */
function shortestFloat32Decimal(value: number): number {
  for (let digits = 1; digits < 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return candidate;
  }
  return value;
}

class GgufFields {
  constructor(readonly header: GgufHeader) {}

  fail(message: string): never {
    throw new FalconPresetError(`${this.header.file}: ${message}`);
  }

  has(key: string): boolean {
    return this.header.metadata.has(key);
  }

  /** An integer-typed value in [min, max]; `fallback` when absent (undefined: required). */
  integer(key: string, min: number, max: number, fallback?: number): number {
    const entry = this.header.metadata.get(key);
    if (entry === undefined) {
      if (fallback === undefined) this.fail(`metadata ${quoted(key)} is missing`);
      return fallback;
    }
    if (!INTEGER_VALUE_TYPES.has(entry.type)) this.fail(`metadata ${quoted(key)} must be an integer, got a ${VALUE_TYPE_NAMES[entry.type]}`);
    const value = Number(entry.value as number | bigint);
    if (!Number.isSafeInteger(value) || value < min || value > max) this.fail(`metadata ${quoted(key)} = ${String(entry.value)} is outside ${min}..${max}`);
    return value;
  }

  number(key: string, fallback?: number): number {
    const entry = this.header.metadata.get(key);
    if (entry === undefined) {
      if (fallback === undefined) this.fail(`metadata ${quoted(key)} is missing`);
      return fallback;
    }
    if (entry.type !== GGUF_VALUE.FLOAT32 && entry.type !== GGUF_VALUE.FLOAT64 && !INTEGER_VALUE_TYPES.has(entry.type)) {
      this.fail(`metadata ${quoted(key)} must be a number, got a ${VALUE_TYPE_NAMES[entry.type]}`);
    }
    const value = Number(entry.value as number | bigint);
    if (!Number.isFinite(value)) this.fail(`metadata ${quoted(key)} = ${value} is not finite`);
    return entry.type === GGUF_VALUE.FLOAT32 ? shortestFloat32Decimal(value) : value;
  }

  string(key: string, fallback?: string): string {
    const entry = this.header.metadata.get(key);
    if (entry === undefined) {
      if (fallback === undefined) this.fail(`metadata ${quoted(key)} is missing`);
      return fallback;
    }
    if (entry.type !== GGUF_VALUE.STRING) this.fail(`metadata ${quoted(key)} must be a string, got a ${VALUE_TYPE_NAMES[entry.type]}`);
    return entry.value as string;
  }

  boolean(key: string): boolean | undefined {
    const entry = this.header.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== GGUF_VALUE.BOOL) this.fail(`metadata ${quoted(key)} must be a bool, got a ${VALUE_TYPE_NAMES[entry.type]}`);
    return entry.value as boolean;
  }

  /** An array of `itemTypes` items, or undefined when absent. */
  array(key: string, itemTypes: ReadonlySet<number>, what: string): GgufValue[] | undefined {
    const entry = this.header.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== GGUF_VALUE.ARRAY || !itemTypes.has(entry.itemType!)) this.fail(`metadata ${quoted(key)} must be an array of ${what}`);
    return entry.value as GgufValue[];
  }
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's `falcon` architecture

const ARCHITECTURE = "falcon";

/** The file's architecture, refused with the reason when it is not llama.cpp's `falcon`. */
function requireFalcon(fields: GgufFields): void {
  const architecture = fields.string("general.architecture");
  if (architecture === ARCHITECTURE) return;
  if (architecture === "bloom") {
    fields.fail(`general.architecture "bloom" is not loaded: llama.cpp's bloom block adds a LayerNorm on the token embeddings and applies ALiBi differently, so it is not a Falcon model (falcon-rw checkpoints load from their Hugging Face safetensors)`);
  }
  fields.fail(`general.architecture ${quoted(architecture)} is not llama.cpp's "falcon"`);
}

/** The GGUF tensors of layer `i` and our weights they fill (attn_norm_2 is falcon-40b's ln_attn, attn_norm then its ln_mlp). */
function layerTensorNames(i: number, twoNorms: boolean): [gguf: string, ours: string][] {
  const b = `blk.${i}.`;
  const l = `layers.${i}.`;
  const norms: [string, string][] = twoNorms
    ? [[`${b}attn_norm_2`, `${l}attn_norm`], [`${b}attn_norm`, `${l}mlp_norm`]]
    : [[`${b}attn_norm`, `${l}attn_norm`]];
  return [
    ...norms.flatMap(([g, o]): [string, string][] => [[`${g}.weight`, `${o}.gamma`], [`${g}.bias`, `${o}.beta`]]),
    [`${b}attn_qkv.weight`, `${l}qkv.weight`],
    [`${b}attn_output.weight`, `${l}attn_out.weight`],
    [`${b}ffn_up.weight`, `${l}ffn_up.weight`],
    [`${b}ffn_down.weight`, `${l}ffn_down.weight`],
  ];
}

export interface GgufWeightConversion {
  /** The ggml type of the file's tensors. */
  ggmlType: string;
  tensors: number;
  /** What loading does: read as is, or dequantised to float32 with ggml's reference formulas. */
  read: "as stored" | "dequantised to float32";
  /** The dtype matrices are stored in (norm vectors are always float32). */
  storedAs: FalconDType;
}

/** The parts of a GGUF that the preset reader needs. */
export interface GgufPreset {
  file: string;
  config: FalconBackboneConfig;
  /** Builds the tokenizer from the file's vocabulary, or null when the file has none. */
  tokenizer(): FalconTokenizer | null;
  /** Start/end/pad ids and whether prompts get the start token, from tokenizer.ggml.*. */
  preprocessor: FalconCausalLMPreprocessorOptions;
  prepareWeights(config: ResolvedBackboneConfig): PreparedWeights;
}

/** Reads a `falcon` GGUF's header into a config and the weight plan; no tensor bytes are read. */
export function readGgufPreset(file: string): GgufPreset {
  const header = readGgufHeader(file);
  const fields: GgufFields = new GgufFields(header);
  requireFalcon(fields);
  const layout = fields.string(`${ARCHITECTURE}.tensor_data_layout`, "jploski");
  if (layout !== "jploski") {
    // "jploski" is the converter's [all Q; all K; all V] rows, our own layout; another is unknown.
    fields.fail(`${ARCHITECTURE}.tensor_data_layout ${quoted(layout)} is not supported (only "jploski", the fused QKV as all query heads, then key heads, then value heads)`);
  }
  const tensors = header.tensors;
  const embedding = tensors.get("token_embd.weight");
  if (!embedding || embedding.ne.length !== 2) fields.fail(`tensor "token_embd.weight" is missing or not 2-dimensional`);

  const layerIndices = new Set<number>();
  for (const name of tensors.keys()) {
    const layer = /^blk\.(\d+)\./.exec(name)?.[1];
    if (layer !== undefined) layerIndices.add(Number(layer));
  }
  const numLayers = fields.integer(`${ARCHITECTURE}.block_count`, 1, MAX_TENSORS);
  // Checked before any per-layer list is built: the files' layers bound block_count.
  if (numLayers !== layerIndices.size) fields.fail(`${ARCHITECTURE}.block_count = ${numLayers}, but the file holds tensors of ${layerIndices.size} layers`);
  const hiddenDim = fields.integer(`${ARCHITECTURE}.embedding_length`, 1, 1 << 20);
  const heads = fields.integer(`${ARCHITECTURE}.attention.head_count`, 1, 1 << 16);
  const kvHeads = fields.integer(`${ARCHITECTURE}.attention.head_count_kv`, 1, 1 << 16, heads);
  const headDim = hiddenDim / heads;
  const ropeDims = fields.integer(`${ARCHITECTURE}.rope.dimension_count`, 1, 1 << 20, Number.isInteger(headDim) ? headDim : 1);
  if (Number.isInteger(headDim) && ropeDims !== headDim) {
    fields.fail(`${ARCHITECTURE}.rope.dimension_count = ${ropeDims}: Falcon rotates the whole head (${headDim} dims)`);
  }
  const scalingType = fields.string(`${ARCHITECTURE}.rope.scaling.type`, "none");
  if (scalingType !== "none" && scalingType !== "linear") fields.fail(`${ARCHITECTURE}.rope.scaling.type ${quoted(scalingType)} is not supported (none and linear are)`);
  const scalingFactor = fields.number(`${ARCHITECTURE}.rope.scaling.factor`, 1);
  const twoNorms = tensors.has("blk.0.attn_norm_2.weight");

  const config: FalconBackboneConfig = {
    vocabularySize: embedding.ne[1]!,
    numLayers,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    hiddenDim,
    intermediateDim: fields.integer(`${ARCHITECTURE}.feed_forward_length`, 1, 1 << 24),
    layerNormEpsilon: fields.number(`${ARCHITECTURE}.attention.layer_norm_epsilon`),
    positionEncoding: "rotary",
    ropeTheta: fields.number(`${ARCHITECTURE}.rope.freq_base`, 10000),
    ropeScaling: scalingType === "linear" && scalingFactor !== 1 ? { type: "linear", factor: scalingFactor } : null,
    maxPositionEmbeddings: fields.integer(`${ARCHITECTURE}.context_length`, 1, 1 << 24),
    blockLayout: twoNorms ? "parallel_two_norms" : "parallel_one_norm",
    useBias: false,
    tieWordEmbeddings: !tensors.has("output.weight"),
    dtype: GGUF_DEFAULT_DTYPE[mainMatrixType(tensors)] ?? "float32",
  };
  return {
    file,
    config,
    tokenizer: () => ggufTokenizer(fields, config.vocabularySize),
    preprocessor: ggufSpecialTokens(fields),
    prepareWeights: (resolved) => prepareGgufWeights(header, resolved),
  };
}

/** The ggml type that holds the most matrix values: the file's quantisation (token_embd and output often differ). */
function mainMatrixType(tensors: ReadonlyMap<string, GgufTensor>): string {
  const values = new Map<string, number>();
  for (const tensor of tensors.values()) {
    if (tensor.ne.length < 2) continue;
    values.set(tensor.typeInfo.name, (values.get(tensor.typeInfo.name) ?? 0) + tensor.rows * tensor.cols);
  }
  let best = "F32";
  let most = -1;
  for (const [name, count] of values) if (count > most) [best, most] = [name, count];
  return best;
}

/** Every GGUF tensor the config implies, with our weight name and the [rows, cols] it must have. */
function expectedTensors(config: ResolvedBackboneConfig): Map<string, { ours: string; rows: number; cols: number; vector: boolean }> {
  const D = config.hiddenDim;
  const F = config.intermediateDim;
  const d = D / config.numAttentionHeads;
  const qkvRows = (config.numAttentionHeads + 2 * config.numKeyValueHeads) * d;
  const shapes = new Map<string, { ours: string; rows: number; cols: number; vector: boolean }>();
  const matrix = (gguf: string, ours: string, rows: number, cols: number) => shapes.set(gguf, { ours, rows, cols, vector: false });
  const vector = (gguf: string, ours: string) => shapes.set(gguf, { ours, rows: D, cols: 1, vector: true });
  matrix("token_embd.weight", "token_embedding", config.vocabularySize, D);
  vector("output_norm.weight", "final_norm.gamma");
  vector("output_norm.bias", "final_norm.beta");
  if (!config.tieWordEmbeddings) matrix("output.weight", "lm_head", config.vocabularySize, D);
  for (let i = 0; i < config.numLayers; i++) {
    for (const [gguf, ours] of layerTensorNames(i, config.blockLayout === "parallel_two_norms")) {
      if (ours.endsWith(".gamma") || ours.endsWith(".beta")) vector(gguf, ours);
      else if (ours.endsWith("qkv.weight")) matrix(gguf, ours, qkvRows, D);
      else if (ours.endsWith("ffn_up.weight")) matrix(gguf, ours, F, D);
      else if (ours.endsWith("ffn_down.weight")) matrix(gguf, ours, D, F);
      else matrix(gguf, ours, D, D);
    }
  }
  return shapes;
}

/**
 * Checks the file's tensors against `config` (a dtype variant of the file's own): every tensor the
 * config implies, with its shape, and nothing else. Norm vectors must be unquantised.
 */
function prepareGgufWeights(header: GgufHeader, config: ResolvedBackboneConfig): PreparedWeights & { conversions: GgufWeightConversion[] } {
  const { file, tensors } = header;
  const fail = (message: string): never => {
    throw new FalconPresetError(`${file}: ${message}`);
  };
  if (config.positionEncoding !== "rotary" || config.useBias || config.blockLayout === "sequential") {
    fail(`llama.cpp's falcon architecture is rotary, parallel and without projection biases; the config asks for ${config.positionEncoding}, ${config.blockLayout}${config.useBias ? ", biases" : ""}`);
  }
  const expected = expectedTensors(config);
  const plan: { tensor: GgufTensor; ours: string; rows: number; cols: number }[] = [];
  for (const [name, { ours, rows, cols, vector }] of expected) {
    const tensor = tensors.get(name) ?? fail(`missing tensor ${quoted(name)}`);
    const shape = vector ? [rows] : [cols, rows];
    if (tensor.ne.length !== shape.length || tensor.ne.some((n, i) => n !== shape[i])) {
      fail(`tensor ${quoted(name)} has ggml shape [${tensor.ne.join(", ")}], expected [${shape.join(", ")}] for this config (hidden ${config.hiddenDim}, ${config.numAttentionHeads} heads, ${config.numKeyValueHeads} kv heads, feed-forward ${config.intermediateDim}, vocabulary ${config.vocabularySize})`);
    }
    if (vector && tensor.typeInfo.direct === null) fail(`tensor ${quoted(name)} is ${tensor.typeInfo.name}; norm vectors must be F32, F16 or BF16`);
    plan.push({ tensor, ours, rows, cols });
  }
  for (const name of tensors.keys()) {
    if (!expected.has(name)) fail(`unexpected tensor ${quoted(name)} for this config (llama.cpp's falcon has no biases besides the norms'${name.includes("attn_norm_2") ? "; attn_norm_2 appears in some layers only" : ""})`);
  }
  const byType = new Map<string, GgufWeightConversion>();
  for (const { tensor } of plan) {
    if (tensor.ne.length < 2) continue;
    const entry = byType.get(tensor.typeInfo.name) ?? {
      ggmlType: tensor.typeInfo.name, tensors: 0, read: tensor.typeInfo.direct ? "as stored" : "dequantised to float32", storedAs: config.dtype,
    };
    entry.tensors++;
    byType.set(tensor.typeInfo.name, entry);
  }
  return {
    files: [path.basename(file)],
    conversions: [...byType.values()],
    load: (model) => loadGgufTensors(file, plan, model),
    dispose: () => undefined,
  };
}

async function loadGgufTensors(
  file: string,
  plan: readonly { tensor: GgufTensor; ours: string; rows: number; cols: number }[],
  model: NativeModel,
): Promise<void> {
  const weights: NativeWeightFile = await callNative(() => new (native().NativeWeightFile)(file));
  try {
    for (const { tensor, ours, rows, cols } of plan) {
      const { direct } = tensor.typeInfo;
      await callNative(
        () => direct !== null
          ? model.setWeightFromFile(ours, 0, weights, tensor.byteOffset, direct, rows, cols, false)
          : model.setWeightFromGgml(ours, 0, weights, tensor.byteOffset, tensor.type, rows, cols),
        `${file}: tensor "${tensor.name}"`,
      );
    }
  } finally {
    weights.dispose();
  }
  model.requireComplete();
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
const STRING_ITEMS = new Set<number>([GGUF_VALUE.STRING]);
const INTEGER_ITEMS = INTEGER_VALUE_TYPES;

/**
 * llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) → the Hugging Face pre-tokenizer they stand for.
 * "falcon" is tiiuae/falcon-7b's tokenizer.json pipeline; "gpt-2" and "default" are GPT-2's regex.
 */
const PRE_TOKENIZERS: Record<string, object> = {
  falcon: {
    type: "Sequence",
    pretokenizers: [
      { type: "Punctuation", behavior: "Contiguous" },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      { type: "Digits", individual_digits: false },
      { type: "Split", pattern: { Regex: "[0-9][0-9][0-9]" }, behavior: "Isolated", invert: false },
    ],
  },
  "gpt-2": { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  default: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
};

/** The tokenizer a GGUF carries (byte-level BPE, tokenizer.ggml.model "gpt2"), as a tokenizer.json. */
function ggufTokenizer(fields: GgufFields, vocabularySize: number): FalconTokenizer | null {
  const tokens = fields.array("tokenizer.ggml.tokens", STRING_ITEMS, "strings") as string[] | undefined;
  if (tokens === undefined) return null;
  const model = fields.string("tokenizer.ggml.model");
  if (model !== "gpt2") fields.fail(`tokenizer.ggml.model ${quoted(model)} is not supported (only "gpt2", byte-level BPE)`);
  const pre = fields.string("tokenizer.ggml.pre", "default");
  const preTokenizer = Object.hasOwn(PRE_TOKENIZERS, pre) ? PRE_TOKENIZERS[pre] : undefined;
  if (!preTokenizer) fields.fail(`tokenizer.ggml.pre ${quoted(pre)} is not supported (${Object.keys(PRE_TOKENIZERS).join(", ")} are)`);
  if (tokens.length > vocabularySize) fields.fail(`tokenizer.ggml.tokens has ${tokens.length} tokens, more than the ${vocabularySize} embedding rows`);
  const types = fields.array("tokenizer.ggml.token_type", INTEGER_ITEMS, "integers");
  if (types !== undefined && types.length !== tokens.length) {
    fields.fail(`tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`);
  }
  const merges = fields.array("tokenizer.ggml.merges", STRING_ITEMS, "strings") ?? [];
  const vocab: Record<string, number> = Object.create(null);
  const added: { id: number; content: string; special: boolean; normalized: boolean }[] = [];
  tokens.forEach((token, id) => {
    if (Object.hasOwn(vocab, token)) fields.fail(`tokenizer.ggml.tokens: ${quoted(token)} appears twice (ids ${vocab[token]} and ${id})`);
    vocab[token] = id;
    const type = types === undefined ? TOKEN_TYPE.NORMAL : Number(types[id]);
    if (type === TOKEN_TYPE.CONTROL || type === TOKEN_TYPE.USER_DEFINED) {
      added.push({ id, content: token, special: type === TOKEN_TYPE.CONTROL, normalized: false });
    }
  });
  const json = {
    version: "1.0",
    model: { type: "BPE", vocab: { ...vocab }, merges, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null },
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  };
  return FalconTokenizer.fromHfTokenizerObject(json, `${fields.header.file} (tokenizer.ggml.*)`);
}

/** bos/eos/pad ids and add_bos_token of tokenizer.ggml.*, as the preprocessor takes them. */
function ggufSpecialTokens(fields: GgufFields): FalconCausalLMPreprocessorOptions {
  const options: FalconCausalLMPreprocessorOptions = { addStartToken: fields.boolean("tokenizer.ggml.add_bos_token") ?? false };
  const id = (key: string) => (fields.has(key) ? fields.integer(key, 0, 0x7fffffff) : undefined);
  const [start, end, pad] = [id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.padding_token_id")];
  if (start !== undefined) options.startTokenId = start;
  if (end !== undefined) options.endTokenId = end;
  if (pad !== undefined) options.padTokenId = pad;
  return options;
}

/** Whether a preset path names a GGUF file (by its extension, as llama.cpp's tools name them). */
export function isGgufPath(pathOrName: string): boolean {
  return pathOrName.toLowerCase().endsWith(".gguf");
}

