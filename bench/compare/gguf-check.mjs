/**
 * GGUF files that llama.cpp's own tools write, loaded by falcon-native (not part of npm test: it
 * needs the native llama.cpp build of llama-build.mjs).
 *
 *   node bench/compare/gguf-check.mjs [--types Q8_0,Q4_0,Q4_K] [--pure] [--layers 4] [--hidden 512] [--seed 1]
 *
 * 1. A random falcon-7b-style model (rotary, multi-query, parallel block with one LayerNorm, no biases)
 *    is written as an F32 llama.cpp `falcon` GGUF (bench/gguf.ts).
 * 2. llama-quantize (bench/compare/.llama-build/build/bin) quantises it to each --types entry; without
 *    --pure llama.cpp picks its usual mixture (e.g. Q6_K for the output/embedding tensor).
 * 3. falcon-native loads each file (as float32, and in its default dtype) and its logits are compared
 *    with the float32 source model's: the quantisation's error, alongside the weights' own relative error.
 * 4. node-llama-cpp (llama.cpp) evaluates the same quantised file; its log-softmax is compared with
 *    falcon-native's on that file (llama.cpp's GELU is the tanh form and it quantises activations for
 *    quantised matmuls, so some difference remains; the F32 row shows the baseline).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { getLlama, LlamaLogLevel } from "node-llama-cpp";

import { FalconBackbone } from "../../dist/src/index.js";
import { readPreset } from "../../dist/src/presets/index.js";
import { resolveBackboneConfig } from "../../dist/src/config.js";
import { GGML_TYPE, syntheticGpt2Vocabulary, writeFalconGguf } from "../../dist/bench/gguf.js";
import { helpIfAsked, positiveInt } from "./script-args.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    types: { type: "string", default: "Q8_0,Q4_0,Q4_K" },
    pure: { type: "boolean", default: false },
    layers: { type: "string", default: "4" },
    hidden: { type: "string", default: "512" },
    seed: { type: "string", default: "1" },
    help: { type: "boolean" },
  },
});
helpIfAsked(args, import.meta.url);

const quantize = path.join(here, ".llama-build", "build", "bin", "llama-quantize");
if (!existsSync(quantize)) throw new Error(`${quantize} is missing: build it with node bench/compare/llama-build.mjs`);
const work = path.resolve(here, "..", ".cache", "gguf-check");
mkdirSync(work, { recursive: true });

const hidden = positiveInt(args.hidden, "hidden");
const config = {
  vocabularySize: 1024, numLayers: positiveInt(args.layers, "layers"), numAttentionHeads: hidden / 64, numKeyValueHeads: 1,
  hiddenDim: hidden, intermediateDim: 4 * hidden, positionEncoding: "rotary", blockLayout: "parallel_one_norm", useBias: false,
  tieWordEmbeddings: false, seed: positiveInt(args.seed, "seed"), dtype: "float32",
};
const source = new FalconBackbone(config);
const f32File = path.join(work, `falcon-h${hidden}-l${config.numLayers}-s${config.seed}-f32.gguf`);
await writeFalconGguf(source, f32File, { arch: "falcon", type: GGML_TYPE.F32, vocabulary: syntheticGpt2Vocabulary(config.vocabularySize) });

const prompt = Array.from({ length: 16 }, (_, i) => (i * 389 + 17) % 1000);
async function lastLogits(model) {
  const hiddenStates = await model.call({ tokenIds: [prompt] });
  const D = model.getConfig().hiddenDim;
  return (await model.tokenEmbedding.reverse({ data: hiddenStates.data.slice((prompt.length - 1) * D), shape: [1, D] })).data;
}
function compare(actual, expected) {
  let maxDiff = 0, maxRef = 0, diff2 = 0, ref2 = 0, argA = 0, argE = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    maxDiff = Math.max(maxDiff, Math.abs(d));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    diff2 += d * d;
    ref2 += expected[i] ** 2;
    if (actual[i] > actual[argA]) argA = i;
    if (expected[i] > expected[argE]) argE = i;
  }
  return { maxRel: maxDiff / Math.max(1, maxRef), rmsRel: Math.sqrt(diff2 / ref2), argmax: argA === argE };
}
function logSoftmax(values) {
  let max = -Infinity;
  for (const v of values) max = Math.max(max, v);
  let sum = 0;
  for (const v of values) sum += Math.exp(v - max);
  return Float64Array.from(values, (v) => v - max - Math.log(sum));
}
async function weightRmsRel(model, name) {
  const ours = await (await model.nativeModel()).getWeight(name);
  const ref = await (await source.nativeModel()).getWeight(name);
  const a = new Float32Array(ours.data.slice().buffer), e = new Float32Array(ref.data.slice().buffer);
  let d2 = 0, r2 = 0;
  for (let i = 0; i < e.length; i++) { d2 += (a[i] - e[i]) ** 2; r2 += e[i] ** 2; }
  return Math.sqrt(d2 / r2);
}

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
async function llamaCppLogSoftmax(file) {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 64, batchSize: 64, sequences: 1 });
  const sequence = context.getSequence();
  const input = prompt.map((t, i) => (i === prompt.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
  const output = await sequence.controlledEvaluate(input);
  const probabilities = output[prompt.length - 1]?.next?.probabilities;
  await context.dispose();
  await model.dispose();
  return probabilities;
}
function compareWithLlamaCpp(ourLogits, probabilities) {
  const ours = logSoftmax(ourLogits);
  let maxDiff = 0, best = -Infinity, theirsArgmax = -1, oursArgmax = 0;
  for (let i = 0; i < ours.length; i++) if (ours[i] > ours[oursArgmax]) oursArgmax = i;
  for (const [token, p] of probabilities) {
    if (p > best) [best, theirsArgmax] = [p, token];
    if (p > 0) maxDiff = Math.max(maxDiff, Math.abs(Math.log(p) - ours[token]));
  }
  return { maxLogSoftmaxDiff: maxDiff, argmax: theirsArgmax === oursArgmax };
}

const reference = await lastLogits(source);
const rows = [];
for (const type of ["F32", ...args.types.split(",").map((t) => t.trim()).filter(Boolean)]) {
  let file = f32File;
  if (type !== "F32") {
    file = path.join(work, `falcon-h${hidden}-l${config.numLayers}-s${config.seed}-${type}${args.pure ? "-pure" : ""}.gguf`);
    execFileSync(quantize, [...(args.pure ? ["--pure"] : []), f32File, file, type], { stdio: "ignore" });
  }
  const preset = await readPreset(file);
  const prepared = await preset.prepareWeights(resolveBackboneConfig(preset.config));
  prepared.dispose();
  const asF32 = await FalconBackbone.fromPreset(file, { dtype: "float32" });
  const asDefault = await FalconBackbone.fromPreset(file);
  const ourLogits = await lastLogits(asF32);
  const row = {
    type,
    tensors: prepared.conversions.map((c) => `${c.ggmlType}×${c.tensors}`).join(" "),
    defaultDtype: asDefault.getConfig().dtype,
    weightRmsRel: await weightRmsRel(asF32, "layers.0.ffn_up.weight"),
    f32VsSource: compare(ourLogits, reference),
    defaultVsSource: compare(await lastLogits(asDefault), reference),
    llamaCpp: compareWithLlamaCpp(ourLogits, await llamaCppLogSoftmax(file)),
  };
  rows.push(row);
  asF32.dispose();
  asDefault.dispose();
}

const e = (x) => x.toExponential(2);
console.log(`model: falcon-7b-style random, hidden ${hidden}, ${config.numLayers} layers, ${config.numAttentionHeads} heads (MQA), vocab 1024, seed ${config.seed}; prompt ${prompt.length} tokens, last-position logits`);
console.log(`llama-quantize ${args.pure ? "--pure" : "(default mixtures)"}`);
console.log("| file | tensor types | ffn_up weight rel. RMS err | ours (float32) vs source: max rel / rel RMS / argmax | ours (default dtype) vs source | ours vs llama.cpp, same file: max Δ log-softmax / argmax |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.type} | ${r.tensors} | ${e(r.weightRmsRel)} | ${e(r.f32VsSource.maxRel)} / ${e(r.f32VsSource.rmsRel)} / ${r.f32VsSource.argmax ? "same" : "differs"} | ` +
    `${r.defaultDtype}: ${e(r.defaultVsSource.maxRel)} / ${e(r.defaultVsSource.rmsRel)} / ${r.defaultVsSource.argmax ? "same" : "differs"} | ` +
    `${e(r.llamaCpp.maxLogSoftmaxDiff)} / ${r.llamaCpp.argmax ? "same" : "differs"} |`);
}
source.dispose();
