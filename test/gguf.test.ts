/**
 * GGUF loading (src/presets/gguf.ts, native/core/gguf_dequant.cpp): llama.cpp `falcon` GGUFs written
 * from the HF fixtures and from random models, in every tensor type read, against the same weights
 * loaded another way; the dequantisation against an independent JavaScript one; hostile headers.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { float16BitsToFloat32, float32ToFloat16Bits, GGML_TYPE, syntheticGpt2Vocabulary, writeFalconGguf } from "../bench/gguf.js";
import { FalconBackbone, FalconCausalLM, FalconPresetError, FalconTokenizer } from "../src/index.js";
import { resolveBackboneConfig, type FalconDType } from "../src/config.js";
import { GGUF_DEFAULT_DTYPE } from "../src/presets/gguf.js";
import { readPreset } from "../src/presets/index.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { dequantize, quantize, QUANT_TYPES, type QuantType } from "./helpers/ggml-quants.js";
import { modelWithWeights, nativeLogits, writeGgufModel, type TensorTypeName } from "./helpers/gguf-model.js";

const temporary = mkdtempSync(path.join(os.tmpdir(), "falcon-gguf-"));
after(() => rmSync(temporary, { recursive: true, force: true }));
let fileCount = 0;
const tempFile = (name: string) => path.join(temporary, `${fileCount++}-${name}.gguf`);

const TOKENS = { tokenIds: new Int32Array([3, 17, 42, 99, 0, 64, 5, 23, 77, 11, 2, 88]), shape: [2, 6] as [number, number] };

async function logits(model: FalconBackbone, inputs = TOKENS): Promise<Float32Array> {
  return (await model.tokenEmbedding.reverse(await model.call(inputs))).data;
}

/** The same unmasked native calls nativeLogits makes, on a loaded backbone's model. */
async function rawLogits(model: FalconBackbone): Promise<Float32Array> {
  return nativeLogits(await model.nativeModel(), TOKENS.tokenIds, 2, 6);
}

function assertSameValues(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) assert.fail(`${what}: value ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

async function weightValues(model: FalconBackbone, name: string): Promise<Float32Array> {
  const weight = await (await model.nativeModel()).getWeight(name);
  assert.equal(weight.dtype, "float32");
  return new Float32Array(weight.data.slice().buffer);
}

describe("GGUF: the HF fixtures written as F32 llama.cpp falcon files", () => {
  for (const fixture of ["f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln"]) {
    it(`${fixture}: config and logits equal the safetensors checkpoint's exactly`, async () => {
      const reference = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", fixture, "checkpoint"));
      const file = tempFile(fixture);
      await writeGgufModel(reference, file, { matrixType: "F32" });
      const loaded = await FalconBackbone.fromPreset(file);
      // GGUF stores the epsilon as a float32; it reads back as the shortest decimal of that float32.
      assert.deepEqual(loaded.getConfig(), reference.getConfig());
      assertSameValues(await logits(loaded), await logits(reference), fixture);
      loaded.dispose();
      reference.dispose();
    });
  }

  it("loads through FalconCausalLM.fromPreset, without a tokenizer when the file has none", async () => {
    const reference = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", "f40b_newarch_gqa", "checkpoint"));
    const file = tempFile("causal");
    await writeGgufModel(reference, file, { matrixType: "F32" });
    const lm = await FalconCausalLM.fromPreset(file);
    assert.equal(lm.tokenizer, undefined);
    assertSameValues((await lm.call(TOKENS)).data, await logits(reference), "causal LM");
    const preset = await readPreset(file);
    assert.equal(preset.format, "gguf");
    assert.equal(preset.location, file);
    lm.dispose();

    // hf://org/name/file.gguf from the Hugging Face cache layout (offline: no network in tests).
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const repoDir = path.join(temporary, "hub", "models--acme--falcon-gguf");
    mkdirSync(path.join(repoDir, "snapshots", commit, "q"), { recursive: true });
    mkdirSync(path.join(repoDir, "refs"), { recursive: true });
    writeFileSync(path.join(repoDir, "refs", "main"), commit);
    copyFileSync(file, path.join(repoDir, "snapshots", commit, "q", "model.gguf"));
    const fromHub = await FalconBackbone.fromPreset("hf://acme/falcon-gguf/q/model.gguf", { cacheDir: path.join(temporary, "hub"), offline: true });
    assertSameValues(await logits(fromHub), await logits(reference), "hf:// GGUF");
    fromHub.dispose();
    reference.dispose();
  });
});

/** A random model whose rows are whole K-quant super-blocks (256 values). */
const BLOCK_CONFIG = {
  vocabularySize: 300, numLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, hiddenDim: 256, intermediateDim: 512,
  positionEncoding: "rotary", blockLayout: "parallel_two_norms", useBias: false, tieWordEmbeddings: false, seed: 7,
} as const;

describe("GGUF: every tensor type against the same values loaded as float32", () => {
  let source: FalconBackbone;
  before(async () => {
    source = new FalconBackbone({ ...BLOCK_CONFIG, dtype: "float32" });
    await source.call({ tokenIds: new Int32Array([0]), shape: [1, 1] });
  });
  after(() => source.dispose());

  const types: TensorTypeName[] = ["F16", "BF16", ...QUANT_TYPES];
  for (const type of types) {
    it(`${type}: native loading holds exactly the JavaScript dequantisation, and the logits follow`, async () => {
      const file = tempFile(type);
      const written = await writeGgufModel(source, file, { matrixType: type });
      const loaded = await FalconBackbone.fromPreset(file, { dtype: "float32" });
      for (const name of ["token_embedding", "lm_head", "layers.1.qkv.weight", "layers.0.ffn_down.weight"]) {
        assertSameValues(await weightValues(loaded, name), written.weights.get(name)!.data, `${type} ${name}`);
      }
      const expected = await modelWithWeights(source, written.weights);
      assertSameValues(await rawLogits(loaded), await nativeLogits(expected, TOKENS.tokenIds, 2, 6), `${type} logits`);
      loaded.dispose();
      expected.dispose();
    });

    it(`${type}: loads by default as ${GGUF_DEFAULT_DTYPE[type]}, equal to those values stored as ${GGUF_DEFAULT_DTYPE[type]}`, async () => {
      const file = tempFile(`${type}-default`);
      const written = await writeGgufModel(source, file, { matrixType: type });
      const loaded = await FalconBackbone.fromPreset(file);
      const dtype: FalconDType = GGUF_DEFAULT_DTYPE[type]!;
      assert.equal(loaded.getConfig().dtype, dtype);
      if (dtype === "int4") {
        // Our int4 is ggml's Q4_0 scheme: the file's blocks are stored as they are, nothing re-rounded.
        for (const name of ["token_embedding", "lm_head", "layers.1.qkv.weight", "layers.0.ffn_down.weight"]) {
          assertSameValues(await weightValues(loaded, name), written.weights.get(name)!.data, `${type} ${name} as int4`);
        }
      }
      const expected = await modelWithWeights(source, written.weights, dtype);
      assertSameValues(await rawLogits(loaded), await nativeLogits(expected, TOKENS.tokenIds, 2, 6), `${type} as ${dtype}`);
      loaded.dispose();
      expected.dispose();
    });
  }

  it("a mixed file (llama-quantize's Q4_K_M style) takes its dtype from the main type and reports every conversion", async () => {
    const file = tempFile("mixed");
    const typeOf = (name: string): TensorTypeName | undefined =>
      name === "token_embd.weight" ? "Q6_K" : name === "output.weight" ? "Q8_0" : name.includes("ffn_down") ? "Q5_K" : undefined;
    await writeGgufModel(source, file, { matrixType: "Q4_K", typeOf });
    const preset = await readPreset(file);
    assert.equal(preset.config.dtype, "bfloat16");
    const prepared = await preset.prepareWeights(resolveBackboneConfig(preset.config));
    prepared.dispose();
    assert.deepEqual(
      prepared.conversions?.map((c) => `${c.ggmlType} ${c.tensors} ${c.read} ${c.storedAs}`).sort(),
      [
        "Q4_K 6 dequantised to float32 bfloat16",
        "Q5_K 2 dequantised to float32 bfloat16",
        "Q6_K 1 dequantised to float32 bfloat16",
        "Q8_0 1 dequantised to float32 bfloat16",
      ],
    );
  });

  it("bench's writer at Q4_0 (bench:compare's q4_0 file) holds exactly the int4 weights of the same seed", async () => {
    // compare.mjs pairs llama.cpp on this file with our int4 model of the same seed as the same weights.
    const config = { ...BLOCK_CONFIG, positionEncoding: "rotary", blockLayout: "parallel_one_norm", numKeyValueHeads: 4, tieWordEmbeddings: true } as const;
    const float = new FalconBackbone({ ...config, dtype: "float32" });
    const int4 = new FalconBackbone({ ...config, dtype: "int4" });
    const file = tempFile("bench-q4_0");
    await writeFalconGguf(float, file, { arch: "falcon", type: GGML_TYPE.Q4_0 });
    const loaded = await FalconBackbone.fromPreset(file);
    assert.equal(loaded.getConfig().dtype, "int4");
    const names = (await int4.nativeModel()).weightNames();
    assert.deepEqual((await loaded.nativeModel()).weightNames(), names);
    for (const name of names) {
      const ours = await (await int4.nativeModel()).getWeight(name);
      const theirs = await (await loaded.nativeModel()).getWeight(name);
      assertSameValues(new Float32Array(theirs.data.slice().buffer), new Float32Array(ours.data.slice().buffer), name);
    }
    assertSameValues(await logits(loaded), await logits(int4), "logits");
    for (const model of [float, int4, loaded]) model.dispose();
  });
});

describe("GGUF: Q8_0 and Q4_0 files of a fixture hold its safetensors weights within ggml's quantisation step", () => {
  for (const type of ["Q8_0", "Q4_0"] as const) {
    it(`${type}: every loaded weight within the bound ggml's quantiser implies, block by block`, async () => {
      const reference = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", "f40b_newarch_gqa", "checkpoint"));
      const file = tempFile(`bound-${type}`);
      const written = await writeGgufModel(reference, file, { matrixType: type });
      const loaded = await FalconBackbone.fromPreset(file, { dtype: "float32" });
      for (const name of written.weights.keys()) {
        const original = await weightValues(reference, name);
        const held = await weightValues(loaded, name);
        if (written.weights.get(name)!.cols === 1) {
          assertSameValues(held, original, `${name} (F32 vector)`);
          continue;
        }
        for (let block = 0; block < original.length / 32; block++) {
          const values = original.subarray(32 * block, 32 * block + 32);
          const amax = Math.max(...Array.from(values, Math.abs));
          // Q8_0: q = round(x / d), d = amax/127 stored as float16 d16: |x − q·d16| ≤ d/2 + 127·|d16 − d|.
          // Q4_0: d = ∓amax/8, q = min(15, ⌊x/d + 8.5⌋): the clamp at 15 makes the worst case |d| (−max becomes 7·d).
          const d = type === "Q8_0" ? amax / 127 : amax / 8;
          const d16 = float16BitsToFloat32(float32ToFloat16Bits(d));
          const bound = (type === "Q8_0" ? d / 2 + 127 * Math.abs(d16 - d) : d16 * (1 + 2 ** -10)) + 1e-7;
          for (let j = 0; j < 32; j++) {
            const i = 32 * block + j;
            assert.ok(Math.abs(held[i]! - original[i]!) <= bound, `${name}[${i}]: ${held[i]} vs ${original[i]}, bound ${bound}`);
          }
        }
      }
      loaded.dispose();
      reference.dispose();
    });
  }
});

describe("GGUF: the JavaScript dequantisation the native one is checked against", () => {
  /** 0.5 as little-endian binary16. */
  const HALF = [0x00, 0x38];

  it("Q4_0: (nibble − 8) × d, low nibbles first", () => {
    const block = new Uint8Array([...HALF, ...Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4))]);
    const expected = [...Array.from({ length: 16 }, (_, j) => (j - 8) * 0.5), ...Array.from({ length: 16 }, (_, j) => (7 - j) * 0.5)];
    assert.deepEqual(Array.from(dequantize("Q4_0", block, 32)), expected);
  });

  it("Q8_0: int8 × d", () => {
    const quants = Array.from({ length: 32 }, (_, j) => (j * 9 - 128) & 0xff);
    const block = new Uint8Array([...HALF, ...quants]);
    assert.deepEqual(Array.from(dequantize("Q8_0", block, 32)), quants.map((q) => ((q << 24) >> 24) * 0.5));
  });

  it("Q5_1: (nibble | qh bit << 4) × d + m", () => {
    const block = new Uint8Array(24);
    block.set(HALF, 0);
    block.set([0x00, 0x3c], 2); // m = 1.0
    block.set([0x01, 0x00, 0x01, 0x80], 4); // high bits of values 0, 16 and 31
    for (let j = 0; j < 16; j++) block[8 + j] = 3 | (5 << 4);
    const expected = Array.from({ length: 32 }, (_, j) => ((j < 16 ? 3 : 5) + ([0, 16, 31].includes(j) ? 16 : 0)) * 0.5 + 1);
    assert.deepEqual(Array.from(dequantize("Q5_1", block, 32)), expected);
  });

  it("Q6_K: d × scale(16-value group) × (6-bit − 32); d is the block's last two bytes", () => {
    const block = new Uint8Array(210);
    block.set(HALF, 208);
    for (let s = 0; s < 16; s++) block[192 + s] = (s - 8) & 0xff;
    // Every 6-bit quant 33 (low nibble 1, high bits 2): value = 0.5 × (s − 8) × 1.
    block.fill(0x11, 0, 128);
    block.fill(0b10101010, 128, 192);
    const expected = Array.from({ length: 256 }, (_, e) => 0.5 * ((e >> 4) - 8) * 1);
    assert.deepEqual(Array.from(dequantize("Q6_K", block, 256)), expected);
  });

  it("the K-quant scale packing round-trips every 6-bit scale and min", () => {
    const values = new Float32Array(256).map((_, i) => Math.sin(i * 0.7) * (1 + (i >> 5)));
    for (const type of ["Q4_K", "Q5_K"] as QuantType[]) {
      const back = dequantize(type, quantize(type, values), 256);
      // The sub-block step is (max − min) / levels ≤ 2 × 8 / 15; rounding to nearest errs by at most half a step,
      // plus the 6-bit rounding of the scale and min (at most half of d and dmin each, times 15 or 31 levels).
      for (let i = 0; i < 256; i++) assert.ok(Math.abs(back[i]! - values[i]!) < 0.6, `${type} value ${i}: ${back[i]} vs ${values[i]}`);
    }
  });

  it("Q8_0 and Q4_0 round trips err by at most ggml's step: d/2 (+ d's float16 rounding × 127) and |d|", () => {
    const values = new Float32Array(64).map((_, i) => Math.cos(i * 1.3) * (i < 32 ? 0.02 : 3));
    const q8 = quantize("Q8_0", values);
    const q4 = quantize("Q4_0", values);
    const back8 = dequantize("Q8_0", q8, 64);
    const back4 = dequantize("Q4_0", q4, 64);
    for (let b = 0; b < 2; b++) {
      const block = values.subarray(32 * b, 32 * b + 32);
      const amax = Math.max(...Array.from(block, Math.abs));
      const d8 = float16BitsToFloat32(q8[34 * b]! | (q8[34 * b + 1]! << 8));
      const d4 = float16BitsToFloat32(q4[18 * b]! | (q4[18 * b + 1]! << 8));
      for (let j = 0; j < 32; j++) {
        const i = 32 * b + j;
        assert.ok(Math.abs(back8[i]! - values[i]!) <= amax / 127 / 2 + 127 * Math.abs(d8 - amax / 127) + 1e-7, `Q8_0 ${i}`);
        // q = min(15, ⌊x/d + 8.5⌋): the clamp at 15 errs by up to |d| at −max.
        assert.ok(Math.abs(back4[i]! - values[i]!) <= Math.abs(d4) * (1 + 2 ** -10) + 1e-7, `Q4_0 ${i}`);
      }
    }
  });
});

describe("GGUF: the tokenizer comes from the file's vocabulary", () => {
  it("tokens, merges and control tokens make the tokenizer an equivalent tokenizer.json makes", async () => {
    const config = { ...BLOCK_CONFIG, vocabularySize: 320, numLayers: 1 };
    const source = new FalconBackbone(config);
    const vocabulary = syntheticGpt2Vocabulary(320);
    vocabulary.pre = "falcon";
    const file = tempFile("tokenizer");
    await writeGgufModel(source, file, { matrixType: "F32", vocabulary });
    const lm = await FalconCausalLM.fromPreset(file);
    const tokenizer = lm.tokenizer!;
    assert.ok(tokenizer instanceof FalconTokenizer);
    assert.equal(tokenizer.vocabularySize, 320);
    assert.equal(tokenizer.endTokenId, 319);
    assert.equal(lm.preprocessor.tokenizer, tokenizer);

    const json = {
      model: {
        type: "BPE", vocab: Object.fromEntries(vocabulary.tokens.map((t, i) => [t, i])), merges: vocabulary.merges,
      },
      added_tokens: [{ id: 319, content: "<|endoftext|>", special: true, normalized: false }],
      normalizer: null,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Punctuation", behavior: "Contiguous" },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
          { type: "Digits", individual_digits: false },
          { type: "Split", pattern: { Regex: "[0-9][0-9][0-9]" }, behavior: "Isolated", invert: false },
        ],
      },
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    };
    const jsonFile = path.join(temporary, "tokenizer.json");
    writeFileSync(jsonFile, JSON.stringify(json));
    const reference = FalconTokenizer.fromHfTokenizerJson(jsonFile);
    for (const text of ["Hello world", "price: 12,345.67 <|endoftext|>x", "  spaces\tand\nlines", "ünïcödé ☃"]) {
      assert.deepEqual(Array.from(tokenizer.encode(text)), Array.from(reference.encode(text)), text);
      assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
    }
    assert.deepEqual(Array.from(tokenizer.encode("a<|endoftext|>b")).includes(319), true);
    lm.dispose();
    source.dispose();
  });

  it("a vocabulary longer than the embedding, duplicate tokens or an unknown tokenizer model is a typed error", async () => {
    const source = new FalconBackbone({ ...BLOCK_CONFIG, vocabularySize: 300, numLayers: 1 });
    const cases: [string, (v: ReturnType<typeof syntheticGpt2Vocabulary>) => void, RegExp][] = [
      ["duplicate", (v) => { v.tokens[298] = v.tokens[297]!; }, /appears twice \(ids 297 and 298\)/],
      ["pre", (v) => { v.pre = "qwen2"; }, /tokenizer\.ggml\.pre "qwen2" is not supported/],
    ];
    for (const [name, damage, message] of cases) {
      const vocabulary = syntheticGpt2Vocabulary(300);
      damage(vocabulary);
      const file = tempFile(`tok-${name}`);
      await writeGgufModel(source, file, { matrixType: "F32", vocabulary });
      await assert.rejects(FalconCausalLM.fromPreset(file), (error: Error) => error instanceof FalconPresetError && message.test(error.message));
    }
    const tooLong = syntheticGpt2Vocabulary(301);
    const file = tempFile("tok-long");
    await assert.rejects(writeGgufModel(source, file, { matrixType: "F32", vocabulary: tooLong }).then(() => FalconCausalLM.fromPreset(file)),
      (error: Error) => error instanceof FalconPresetError && /301 tokens, more than the 300 embedding rows/.test(error.message));
    source.dispose();
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile headers

/** A minimal GGUF header written field by field, so a test can put any value in any field. */
class RawGguf {
  parts: Buffer[] = [];
  u32(v: number) { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.parts.push(b); return this; }
  u64(v: bigint | number) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.parts.push(b); return this; }
  str(s: string, length?: bigint) { const bytes = Buffer.from(s); this.u64(length ?? BigInt(bytes.length)); this.parts.push(bytes); return this; }
  bytes(b: Buffer) { this.parts.push(b); return this; }
  buffer() { return Buffer.concat(this.parts); }
}

interface RawOptions {
  magic?: number; version?: number; tensorCount?: bigint; keyCount?: bigint;
  arch?: string; alignment?: number; tensorType?: number; tensorOffset?: bigint; ne0?: bigint; nDims?: number;
  nameLength?: bigint; dataBytes?: number; extraKeys?: (raw: RawGguf) => number;
}

/** One F32 tensor `t` of ne = [ne0, 2] after an "general.architecture" key (and the alignment key when given). */
function rawFile(options: RawOptions = {}): Buffer {
  const raw = new RawGguf();
  raw.u32(options.magic ?? 0x46554747).u32(options.version ?? 3);
  const extra = new RawGguf();
  const extraKeys = options.extraKeys?.(extra) ?? 0;
  raw.u64(options.tensorCount ?? 1n).u64(options.keyCount ?? BigInt(1 + (options.alignment !== undefined ? 1 : 0) + extraKeys));
  raw.str("general.architecture").u32(8).str(options.arch ?? "falcon");
  if (options.alignment !== undefined) raw.str("general.alignment").u32(4).u32(options.alignment);
  raw.bytes(extra.buffer());
  raw.str("t", options.nameLength).u32(options.nDims ?? 2).u64(options.ne0 ?? 32n);
  if ((options.nDims ?? 2) >= 2) raw.u64(2n);
  raw.u32(options.tensorType ?? 0).u64(options.tensorOffset ?? 0n);
  const header = raw.buffer();
  const alignment = options.alignment ?? 32;
  const padded = Math.ceil(header.length / alignment) * alignment;
  return Buffer.concat([header, Buffer.alloc(padded - header.length), Buffer.alloc(options.dataBytes ?? 32 * 2 * 4)]);
}

async function rejectsFile(bytes: Buffer, message: RegExp, name = "hostile"): Promise<void> {
  const file = tempFile(name);
  writeFileSync(file, bytes);
  await assert.rejects(FalconBackbone.fromPreset(file), (error: Error) => {
    assert.ok(error instanceof FalconPresetError, `${error.name}: ${error.message}`);
    assert.match(error.message, message);
    return true;
  });
}

describe("GGUF: hostile headers are typed errors naming the field", () => {
  it("the well-formed raw header gets past the header checks (to the missing tensors)", async () => {
    await rejectsFile(rawFile(), /metadata "falcon\.block_count" is missing|token_embd\.weight" is missing/);
  });

  const cases: [string, RawOptions | (() => Buffer), RegExp][] = [
    ["bad magic", { magic: 0x12345678 }, /not a GGUF file/],
    ["version 1", { version: 1 }, /GGUF version 1 is not supported/],
    ["big-endian version", { version: 0x03000000 }, /version 50331648 is not supported/],
    ["huge tensor count", { tensorCount: 1n << 62n }, /tensor count = \d+ exceeds the limit/],
    ["tensor count past the file", { tensorCount: 60000n }, /cannot fit in the \d+-byte file/],
    ["huge key count", { keyCount: 1n << 40n }, /metadata key count = \d+ exceeds the limit/],
    ["huge string length", { nameLength: 1n << 60n }, /tensor 0 name length = \d+ exceeds the limit/],
    ["string past the end", { nameLength: 60000n }, /tensor 0 name claims 60000 bytes/],
    ["offset past the data", { tensorOffset: 256n }, /bytes \[256, 512\) of the data section run past its end \(256 bytes\)/],
    ["offset past the file", { tensorOffset: 1n << 40n }, /offset = \d+ exceeds the limit/],
    ["misaligned offset", { tensorOffset: 4n, dataBytes: 1024 }, /offset 4 is not a multiple of the alignment 32/],
    ["shape past the file", { ne0: 1n << 20n }, /needs more bytes than the \d+-byte data section holds/],
    ["huge dimension", { ne0: 1n << 62n }, /ne\[0\] = \d+ exceeds the limit/],
    ["zero dimension", { ne0: 0n }, /ne\[0\] is 0/],
    ["five dimensions", { nDims: 5 }, /n_dims 5 is outside 1\.\.4/],
    ["unknown type", { tensorType: 99 }, /ggml type 99, which is not supported/],
    ["partial block", { tensorType: 8, ne0: 48n }, /rows of 48 values are not whole Q8_0 blocks of 32/],
    ["alignment not a power of two", { alignment: 24 }, /general\.alignment must be a u32 power of two/],
    ["wrong architecture", { arch: "llama" }, /general\.architecture "llama" is not llama\.cpp's "falcon"/],
    ["bloom", { arch: "bloom" }, /"bloom" is not loaded: llama\.cpp's bloom block adds a LayerNorm/],
    ["huge array", { extraKeys: (raw) => { raw.str("a").u32(9).u32(8).u64(1n << 40n); return 1; } }, /array length = \d+ exceeds the limit/],
    ["array past the file", { extraKeys: (raw) => { raw.str("a").u32(9).u32(4).u64(1n << 20n); return 1; } }, /claims 1048576 u32 items, more than/],
    ["nested array", { extraKeys: (raw) => { raw.str("a").u32(9).u32(9).u64(1n); return 1; } }, /arrays of arrays are not supported/],
    ["unknown value type", { extraKeys: (raw) => { raw.str("a").u32(13); return 1; } }, /unknown value type 13/],
    ["duplicate key", { extraKeys: (raw) => { raw.str("general.architecture").u32(8).str("falcon"); return 1; } }, /appears twice/],
    ["bool not 0 or 1", { extraKeys: (raw) => { raw.str("b").u32(7).bytes(Buffer.from([7])); return 1; } }, /bool byte 7/],
    ["invalid UTF-8", { extraKeys: (raw) => { raw.str("s").u32(8).u64(2n).bytes(Buffer.from([0xc3, 0x28])); return 1; } }, /not valid UTF-8/],
  ];
  for (const [name, options, message] of cases) {
    it(name, async () => rejectsFile(typeof options === "function" ? options() : rawFile(options), message, name.replaceAll(" ", "-")));
  }

  it("a real file truncated anywhere, or with its metadata counts and tensor infos changed, fails typed", async () => {
    const reference = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", "f40b_newarch_gqa", "checkpoint"));
    const file = tempFile("whole");
    await writeGgufModel(reference, file, { matrixType: "Q8_0", typeOf: (n) => (n.startsWith("token_embd") ? "F16" : "F32") });
    reference.dispose();
    const whole = readFileSync(file);
    const cut = tempFile("cut");
    for (const length of [0, 3, 23, 24, 40, 100, 333, 1000, 2000, 4000, whole.length - 1]) {
      writeFileSync(cut, whole);
      truncateSync(cut, length);
      await assert.rejects(FalconBackbone.fromPreset(cut), (error: Error) => error instanceof FalconPresetError, `truncated to ${length}`);
    }
    // Overwrite every 8-byte word of the header with all ones in turn: no value crashes or escapes untyped.
    const headerEnd = whole.indexOf(Buffer.from("blk.1.ffn_down.weight")) + 64;
    for (let at = 8; at < headerEnd; at += 56) {
      const damaged = Buffer.from(whole);
      damaged.fill(0xff, at, at + 8);
      writeFileSync(cut, damaged);
      try {
        (await FalconBackbone.fromPreset(cut)).dispose();
      } catch (error) {
        assert.ok(error instanceof FalconPresetError, `damage at ${at}: ${(error as Error).name}: ${(error as Error).message}`);
      }
    }
  });

  it("a block_count other than the file's layers is refused before any per-layer list is built", async () => {
    const reference = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", "f40b_newarch_gqa", "checkpoint"));
    const file = tempFile("layers");
    await writeGgufModel(reference, file, { matrixType: "F32" });
    reference.dispose();
    const bytes = readFileSync(file);
    const key = Buffer.from("falcon.block_count");
    const at = bytes.indexOf(key) + key.length;
    assert.equal(bytes.readUInt32LE(at), 4); // u32
    bytes.writeUInt32LE(1 << 15, at + 4);
    await rejectsFile(bytes, /falcon\.block_count = 32768, but the file holds tensors of 2 layers/, "layers");
  });

  it("metadata the falcon graph cannot run is refused: partial rotary, unknown rope scaling, a non-integer count", async () => {
    const source = new FalconBackbone({ ...BLOCK_CONFIG, numLayers: 1 });
    const cases: [string, (writer: import("../bench/gguf.js").GgufWriter) => void, RegExp][] = [
      ["rope-dims", (w) => { w.addUint32("falcon.rope.dimension_count", 32); }, /rope\.dimension_count = 32: Falcon rotates the whole head \(64 dims\)/],
      ["rope-scaling", (w) => { w.addString("falcon.rope.scaling.type", "yarn"); }, /rope\.scaling\.type "yarn" is not supported/],
      ["float-count", (w) => { w.addFloat32("falcon.attention.head_count_kv", 2); }, /"falcon\.attention\.head_count_kv" must be an integer, got a f32/],
    ];
    for (const [name, extra, message] of cases) {
      const file = tempFile(name);
      await writeGgufModel(source, file, { matrixType: "F32", extra, omit: ["falcon.attention.head_count_kv"].filter(() => name === "float-count") });
      await assert.rejects(FalconBackbone.fromPreset(file), (error: Error) => error instanceof FalconPresetError && message.test(error.message), name);
    }
    source.dispose();
  });

  it("a tensor the falcon architecture lacks, or a quantised norm vector, is refused", async () => {
    const source = new FalconBackbone({ ...BLOCK_CONFIG, numLayers: 1 });
    const file = tempFile("extra");
    await writeGgufModel(source, file, {
      matrixType: "F32", extra: (writer) => { writer.addTensor("blk.0.attn_qkv.bias", [256 + 2 * 2 * 64], 0); },
    });
    await assert.rejects(FalconBackbone.fromPreset(file), (error: Error) =>
      error instanceof FalconPresetError && /missing tensor|unexpected tensor "blk\.0\.attn_qkv\.bias"/.test(error.message));
    source.dispose();
  });
});

