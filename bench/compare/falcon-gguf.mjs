/**
 * The models bench/compare measures, shared by compare.mjs (node-llama-cpp) and batched-bench.mjs
 * (llama.cpp's llama-batched-bench): the shapes, the architecture pairings, and falcon-native's
 * random model written as a GGUF file, cached in bench/.cache/ (keyed by arch, shape, dtype, seed
 * and a fingerprint of the weights).
 */
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { FalconBackbone, FALCON_DTYPES } from "../../dist/src/index.js";
import { falconGgufMapping, GGML_TYPE, writeFalconGguf } from "../../dist/bench/gguf.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const cacheDir = path.resolve(here, "..", ".cache");
/** Bump when the GGUF layout written for a given model changes, so cached files are rewritten. */
export const GGUF_FORMAT_REVISION = 1;

export const SHAPES = {
  "falcon-rw-1b": { vocabularySize: 50304, numLayers: 24, numAttentionHeads: 32, hiddenDim: 2048, intermediateDim: 8192 },
  small: { vocabularySize: 1024, numLayers: 4, numAttentionHeads: 4, hiddenDim: 256, intermediateDim: 1024 },
  // The small shape with room for GPT-2's tokenizer (50257 tokens), for the servers of serve-bench.mjs.
  "small-gpt2": { vocabularySize: 50304, numLayers: 4, numAttentionHeads: 4, hiddenDim: 256, intermediateDim: 1024 },
};

/**
 * The GGUF's tokenizer metadata: "synthetic" (byte tokens + printable pairs; compare.mjs and
 * batched-bench.mjs feed token ids only) or "gpt2", GPT-2's real vocabulary (serve-bench.mjs: the
 * servers load a tokenizer, and ours has the same one).
 */
const VOCABULARIES = {
  synthetic: { suffix: "", build: async () => undefined },
  // Imported when used: building GPT-2's merges takes a second, and compare.mjs never needs them.
  gpt2: { suffix: "-gpt2", build: async (size) => (await import("../../dist/bench/serve-model.js")).gpt2GgufVocabulary(size) },
};

/**
 * --dtype names → our dtype, the GGUF tensor type, and the dtype of the model the GGUF is written
 * from. q8_0 pairs with falcon-native's int8 (per-row scales) where it exists, built from the same
 * seed: the same weights before quantisation, each side quantising its own way. q4_0 pairs with
 * int4, which quantises at load as ggml's Q4_0 does: both sides run the same 4-bit weights.
 */
export const DTYPES = {
  f32: { ours: "float32", ggml: GGML_TYPE.F32, source: "float32" },
  bf16: { ours: "bfloat16", ggml: GGML_TYPE.BF16, source: "bfloat16" },
  f16: { ours: "float16", ggml: GGML_TYPE.F16, source: "float16" },
  q8_0: { ours: FALCON_DTYPES.find((d) => /^(q8_0|q8|int8)$/i.test(d)) ?? null, ggml: GGML_TYPE.Q8_0, source: "float32" },
  q4_0: { ours: "int4", ggml: GGML_TYPE.Q4_0, source: "float32", sameQuantisation: true },
};
export const DTYPE_ALIASES = { float32: "f32", bfloat16: "bf16", float16: "f16", q8: "q8_0", int8: "q8_0", int4: "q4_0" };

/** `--dtype` list → DTYPES keys; throws on an unknown name. */
export function parseDtypes(list) {
  const dtypes = list.split(",").map((d) => d.trim().toLowerCase()).filter(Boolean).map((d) => DTYPE_ALIASES[d] ?? d);
  for (const d of dtypes) if (!DTYPES[d]) throw new Error(`unknown --dtype ${d} (use f32, bf16, f16, q8_0, q4_0)`);
  return dtypes;
}

export const PAIRINGS = {
  bloom: {
    name: "falcon-rw ↔ llama.cpp bloom",
    arch: "bloom",
    ours: "falcon-rw (ALiBi, MHA, biases, sequential block, GELU)",
    theirs: "bloom (the same block + a LayerNorm on the token embeddings, initialised to gamma 1 / beta 0)",
    config: { positionEncoding: "alibi", blockLayout: "sequential", useBias: true, tieWordEmbeddings: true },
    notes: "not identical math: llama.cpp's bloom adds the embedding LayerNorm and applies ALiBi after the 1/sqrt(d) scale " +
      "(falcon-rw adds it before), so llama.cpp's logits are checked against a JS model of its bloom graph on the same weights instead",
  },
  falcon: {
    name: "falcon-7b-style ↔ llama.cpp falcon",
    arch: "falcon",
    ours: "falcon-7b-style variant (rotary, MHA, parallel block with one LayerNorm, no projection biases)",
    theirs: "falcon (the same block; n_head_kv = n_head)",
    config: { positionEncoding: "rotary", blockLayout: "parallel_one_norm", useBias: false, tieWordEmbeddings: true },
    notes: "identical math up to GELU (ours erf, llama.cpp's ggml_gelu the tanh form) and the f16 KV cache: last-position logits compared",
  },
};

/** The config of our random model for a shape and pairing. */
export function modelConfig(shapeName, pairingKey, seed) {
  const shape = SHAPES[shapeName];
  return { ...shape, ...PAIRINGS[pairingKey].config, numKeyValueHeads: shape.numAttentionHeads, seed };
}

/** A short hash of one weight: cache keys change when the random model does. */
export async function fingerprint(backbone) {
  const model = await backbone.nativeModel();
  const weight = await model.getWeight("layers.0.attn_out.weight");
  return createHash("sha256").update(weight.data).digest("hex").slice(0, 12);
}

/**
 * Builds our random model in the dtype the GGUF is written from and writes it as a GGUF file unless
 * the cache has it. Returns the file, the tensor mapping and the source model (the caller disposes it).
 */
export async function cachedFalconGguf({ shapeName, pairingKey, dtypeKey, seed, log, vocabulary = "synthetic" }) {
  const pairing = PAIRINGS[pairingKey];
  const dtype = DTYPES[dtypeKey];
  const tokenizer = VOCABULARIES[vocabulary];
  if (!tokenizer) throw new Error(`unknown GGUF vocabulary ${vocabulary} (use ${Object.keys(VOCABULARIES).join(", ")})`);
  log(`building our random ${shapeName} model (${dtype.source})`);
  const source = new FalconBackbone({ ...modelConfig(shapeName, pairingKey, seed), dtype: dtype.source });
  const print = await fingerprint(source);
  const file = path.join(cacheDir, `${pairing.arch}-${shapeName}-${dtypeKey}-seed${seed}-${print}${tokenizer.suffix}-r${GGUF_FORMAT_REVISION}.gguf`);
  if (existsSync(file)) {
    log(`cached GGUF ${path.relative(process.cwd(), file)}`);
    const mapping = falconGgufMapping(source, (await source.nativeModel()).weightNames(), { arch: pairing.arch, type: dtype.ggml });
    return { file, mapping, source };
  }
  log(`writing GGUF ${path.relative(process.cwd(), file)}`);
  const t0 = performance.now();
  let lastReport = 0;
  const { mappings: mapping } = await writeFalconGguf(source, file, {
    arch: pairing.arch, type: dtype.ggml, name: `falcon-native random ${shapeName} (${pairing.ours}), seed ${seed}`,
    vocabulary: await tokenizer.build(SHAPES[shapeName].vocabularySize),
  }, (done, total) => {
    if (performance.now() - lastReport > 5000 || done === total) {
      lastReport = performance.now();
      log(`  ${done}/${total} tensors`);
    }
  });
  log(`wrote ${(statSync(file).size / 2 ** 30).toFixed(2)} GiB in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return { file, mapping, source };
}
