#!/usr/bin/env node
/**
 * falcon-native side by side with llama.cpp on the same random weights, shape and dtype, alternating
 * rounds: ours, then llama.cpp built natively for this CPU (`llama-bench`, the main comparison), then
 * node-llama-cpp 3.21.1's prebuilt CPU binary (the second column), within one run.
 *
 *   node bench/compare/compare.mjs [--dtype f32,bf16[,f16,q8_0,q4_0]] [--reps 5] [--threads 2]
 *        [--pairing bloom,falcon] [--measures pp128,pp512,tg128] [--seed 0] [--small] [--json]
 *        [--sides native,prebuilt] [--isa native|avx2|avx2-vnni] [--jobs N] [--flash-attn auto|on|off] [--no-check]
 *        [--out results.json]
 *
 * --isa avx2 runs our AVX2 kernels (AVX-VNNI hidden) beside llama.cpp built for AVX2 without AVX-512
 * and AVX-VNNI (llama-build.mjs's "avx2" build): an AVX2-only machine's code on this one. --isa
 * avx2-vnni is the same with AVX-VNNI on both sides (a CPU that has it). The prebuilt binary picks its
 * own kernels, so those runs have the native side only.
 *
 * Needs the root build (`npx tsc -p .` and the addon in build/Release) and `npm ci` in bench/compare.
 * The native llama.cpp is built once by llama-build.mjs into bench/compare/.llama-build/ (minutes).
 * GGUF files are cached in bench/.cache/ (keyed by arch, shape, dtype, seed and a weight fingerprint).
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { getLlama, LlamaLogLevel, readGgufFileInfo } from "node-llama-cpp";

import { FalconBackbone, runtimeInfo, setIsa, setNumThreads } from "../../dist/src/index.js";
import { native } from "../../dist/src/native.js";
import { benchTokens, layerMatrixParameters, measureDecode, measurePrefill } from "../../dist/bench/measure.js";
import { summarize } from "../../dist/bench/stats.js";
import { bloomReferenceLogits } from "./bloom-reference.mjs";
import { GGML_TYPE_NAME } from "../../dist/bench/gguf.js";
import { cachedFalconGguf, DTYPES, modelConfig, PAIRINGS, parseDtypes, SHAPES } from "./falcon-gguf.mjs";
import { ensureLlamaBuild, llamaCppInfo } from "./llama-build.mjs";
import { helpIfAsked, positiveInt } from "./script-args.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_LLAMA_CPP_VERSION = JSON.parse(readFileSync(path.join(here, "node_modules", "node-llama-cpp", "package.json"), "utf8")).version;

// ------------------------------------------------------------------------------------------------
// Options

const { values: args } = parseArgs({
  options: {
    dtype: { type: "string", default: "f32,bf16" },
    reps: { type: "string", default: "5" },
    threads: { type: "string", default: "2" },
    pairing: { type: "string", default: "bloom,falcon" },
    measures: { type: "string", default: "pp128,pp512,tg128" },
    seed: { type: "string", default: "0" },
    "flash-attn": { type: "string", default: "auto" },
    sides: { type: "string" },
    isa: { type: "string", default: "native" },
    jobs: { type: "string", default: String(os.availableParallelism()) },
    small: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    out: { type: "string" },
    "no-check": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
helpIfAsked(args, import.meta.url);
const reps = positiveInt(args.reps, "reps");
const threads = positiveInt(args.threads, "threads");
const seed = Number(args.seed);
const flashAttention = { auto: "auto", on: true, off: false }[args["flash-attn"]];
if (flashAttention === undefined) throw new Error("--flash-attn must be auto, on or off");

const dtypes = parseDtypes(args.dtype);

const isa = args.isa;
if (!["native", "avx2", "avx2-vnni"].includes(isa)) throw new Error(`unknown --isa ${isa} (use native, avx2, avx2-vnni)`);
const oursAvx2 = isa !== "native";
// llama.cpp's "avx2" build leaves AVX-VNNI off, so ours hides it too; read when our addon first asks
// for the CPU's features, which is after this.
if (isa === "avx2") process.env.FALCON_CPU_WITHOUT = [process.env.FALCON_CPU_WITHOUT, "avx_vnni"].filter(Boolean).join(",");
if (isa === "avx2-vnni" && !runtimeInfo().features.avx_vnni) throw new Error("--isa avx2-vnni needs a CPU with AVX-VNNI");
const sides = new Set((args.sides ?? (oursAvx2 ? "native" : "native,prebuilt")).split(",").map((side) => side.trim()).filter(Boolean));
for (const side of sides) if (side !== "native" && side !== "prebuilt") throw new Error(`unknown --sides ${side} (use native, prebuilt)`);
if (sides.size === 0) throw new Error("--sides needs native, prebuilt or both");
if (oursAvx2 && sides.has("prebuilt")) throw new Error(`--isa ${isa} runs the native side only: the prebuilt binary picks its own kernels`);
const jobs = positiveInt(args.jobs, "jobs");

const shapeName = args.small ? "small" : "falcon-rw-1b";
const shape = SHAPES[shapeName];

const pairings = args.pairing.split(",").map((p) => p.trim()).filter(Boolean);
for (const p of pairings) if (!PAIRINGS[p]) throw new Error(`unknown --pairing ${p} (use bloom, falcon)`);

const MEASURES = args.measures.split(",").map((m) => m.trim()).filter(Boolean).map((m) => {
  const match = /^(pp|tg)(\d+)$/.exec(m);
  if (!match) throw new Error(`unknown measure ${m} (use ppN or tgN)`);
  return { name: m, kind: match[1], tokens: Number(match[2]) };
});
const longestPrompt = Math.max(1, ...MEASURES.map((m) => (m.kind === "pp" ? m.tokens : m.tokens + 1)));
const contextSize = Math.max(640, 2 ** Math.ceil(Math.log2(longestPrompt + 2)));
const batchSize = 512;

const log = (...parts) => console.error(...parts);

// ------------------------------------------------------------------------------------------------
// Machine

function cpuModel() {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"));
    if (line) return line.split(":").slice(1).join(":").trim();
  } catch { /* not Linux */ }
  return os.cpus()[0]?.model ?? "unknown";
}

// ------------------------------------------------------------------------------------------------
// llama.cpp side (node-llama-cpp)

const llamaLogs = [];
const llama = !sides.has("prebuilt") ? null : await getLlama({
  gpu: false,
  build: "never", // only the prebuilt binary from the @node-llama-cpp/<platform> npm package; never download or compile
  maxThreads: threads,
  logLevel: LlamaLogLevel.log, // "load_backend: loaded CPU backend from …" is logged at this level
  logger: (level, message) => {
    llamaLogs.push(message);
    if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log(`[llama.cpp] ${message.trimEnd()}`);
  },
});

/** The ggml CPU backend variant node-llama-cpp loaded (libggml-cpu-<variant>.so), from llama.cpp's logs. */
await new Promise((resolve) => setTimeout(resolve, 100)); // logs are relayed asynchronously
const llamaCpuBackend = llamaLogs.map((l) => /libggml-cpu-([\w-]+)\.so/.exec(l)?.[1]).filter(Boolean).at(-1) ?? null;
if (llama) llama.logLevel = LlamaLogLevel.warn;

async function loadTheirs(file) {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true });
  const context = await model.createContext({
    contextSize, batchSize, sequences: 1, flashAttention, threads: { ideal: threads, min: threads },
  });
  return { model, context, sequence: context.getSequence() };
}

/**
 * llama-bench's pp: the prompt into an empty sequence in one batch, logits for the last token only.
 * controlledEvaluate is node-llama-cpp's lowest-level public evaluation: it decodes exactly the given
 * tokens and computes logits only where `generateNext` asks (here: the last token, greedy-sampled).
 */
async function theirsPrefill(theirs, tokens) {
  await theirs.sequence.clearHistory();
  const input = tokens.map((t, i) => (i === tokens.length - 1 ? [t, { generateNext: { token: true } }] : t));
  const start = performance.now();
  await theirs.sequence.controlledEvaluate(input);
  return tokens.length / ((performance.now() - start) / 1000);
}

/** llama-bench's tg: `generated` single-token decodes, each with logits (+ greedy pick), after one untimed token. */
async function theirsDecode(theirs, generated, vocabularySize, rep) {
  await theirs.sequence.clearHistory();
  await theirs.sequence.controlledEvaluate([benchTokens(1, vocabularySize, 7 + rep)[0]]);
  const steps = benchTokens(generated, vocabularySize, 11 + rep);
  const start = performance.now();
  for (let t = 0; t < generated; t++) await theirs.sequence.controlledEvaluate([[steps[t], { generateNext: { token: true } }]]);
  return generated / ((performance.now() - start) / 1000);
}

// ------------------------------------------------------------------------------------------------
// llama.cpp side (built natively: llama-bench)

const nativeBuild = sides.has("native") ? ensureLlamaBuild({ jobs, log, buildName: isa }) : null;

/**
 * The x86 vector extensions the native build's CPU kernels target: the -m flags its ggml-cpu sources
 * are compiled with (Ninja's build file; -march=native for GGML_NATIVE=ON), as the compiler expands
 * them. llama-bench prints no ISA line.
 */
function nativeIsa() {
  const cache = readFileSync(path.join(nativeBuild.buildDir, "CMakeCache.txt"), "utf8");
  const compiler = /^CMAKE_CXX_COMPILER:\w+=(.*)$/m.exec(cache)?.[1] ?? "c++";
  let ninja = "";
  try {
    ninja = readFileSync(path.join(nativeBuild.buildDir, "build.ninja"), "utf8");
  } catch { /* another generator */ }
  const cpuObject = /ggml-cpu\.c\.o:[^\n]*\n(?:  [^\n]*\n)*?  FLAGS = ([^\n]*)/.exec(ninja);
  if (!cpuObject) return `${nativeBuild.cmakeFlags.filter((f) => /GGML_(NATIVE|AVX|FMA|F16C|BMI2)/.test(f)).join(" ")} (the compile flags unread)`;
  const machineFlags = cpuObject[1].split(/\s+/).filter((f) => f.startsWith("-m"));
  const macros = spawnSync(compiler, [...machineFlags, "-dM", "-E", "-x", "c++", "/dev/null"], { encoding: "utf8" });
  if (macros.status !== 0) return `${machineFlags.join(" ")} (its extensions unknown: the compiler did not list them)`;
  const names = [...macros.stdout.matchAll(/#define __(AVX\w*|FMA|F16C|AMX\w*)__ 1/g)].map((m) => m[1]);
  return `${machineFlags.join(" ")}: ${[...new Set(names)].sort().join(" ") || "no AVX"}`;
}

/**
 * One llama-bench run of one measure (pp: -p N -n 0; tg: -p 0 -n N), one repetition after its own
 * warm-up, on the same threads, batch and flash-attention setting as the other sides. Returns
 * tokens/s and the model's bytes as llama-bench reports them.
 */
function nativeOnce(file, measure) {
  const commandArgs = [
    "-m", file, "-p", measure.kind === "pp" ? String(measure.tokens) : "0", "-n", measure.kind === "tg" ? String(measure.tokens) : "0",
    "-t", String(threads), "-b", String(batchSize), "-ub", String(batchSize), "-fa", args["flash-attn"], "-r", "1", "-o", "json",
  ];
  const result = spawnSync(nativeBuild.binaries["llama-bench"], commandArgs, { encoding: "utf8", maxBuffer: 1 << 24 });
  if (result.status !== 0) throw new Error(`llama-bench ${commandArgs.join(" ")} failed (exit ${result.status}): ${result.stderr.slice(-2000)}`);
  const [test] = JSON.parse(result.stdout);
  if (!test?.samples_ts?.length) throw new Error(`llama-bench returned no samples: ${result.stdout.slice(0, 500)}`);
  return { tokensPerSecond: test.samples_ts[0], modelBytes: test.model_size, command: ["llama-bench", ...commandArgs].join(" ") };
}

async function oursOnce(ours, measure) {
  if (measure.kind === "pp") return (await measurePrefill(ours, measure.tokens, 1)).median;
  return (await measureDecode(ours, measure.tokens, 1, 1)).median;
}

async function theirsOnce(theirs, measure, rep, vocabularySize) {
  if (measure.kind === "pp") return theirsPrefill(theirs, benchTokens(measure.tokens, vocabularySize));
  return theirsDecode(theirs, measure.tokens, vocabularySize, rep);
}

// ------------------------------------------------------------------------------------------------
// Correctness: last-position logits of a short prompt, where the math is the same

function logSoftmax(logits) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

/** Last-position logits on `prompt`: falcon-native itself where the math is the same, else a JS model of llama.cpp's graph. */
async function referenceLogits(ours, arch, prompt) {
  if (arch === "bloom") return bloomReferenceLogits(ours, prompt);
  const hidden = await ours.call({ tokenIds: [prompt] });
  const D = ours.getConfig().hiddenDim;
  const last = { data: hidden.data.slice((prompt.length - 1) * D), shape: [1, D] };
  return (await ours.tokenEmbedding.reverse(last)).data;
}

async function checkLogits(ours, arch, theirs, vocabularySize) {
  const prompt = benchTokens(8, vocabularySize, 3);
  const reference = await referenceLogits(ours, arch, prompt);

  await theirs.sequence.clearHistory();
  const input = prompt.map((t, i) => (i === prompt.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
  const output = await theirs.sequence.controlledEvaluate(input);
  await theirs.sequence.clearHistory();
  const probabilities = output[prompt.length - 1]?.next?.probabilities;
  if (!probabilities || probabilities.size !== vocabularySize) throw new Error("node-llama-cpp returned no full probability list");

  // node-llama-cpp exposes softmax(logits), not the logits: compare log-softmax, i.e. the logits
  // with their (irrelevant) additive constant removed.
  const referenceLog = logSoftmax(reference);
  let maxDiff = 0;
  let theirsArgmax = -1;
  let best = -Infinity;
  let referenceArgmax = 0;
  for (let i = 0; i < vocabularySize; i++) if (reference[i] > reference[referenceArgmax]) referenceArgmax = i;
  for (const [token, p] of probabilities) {
    if (p > best) { best = p; theirsArgmax = token; }
    if (!(p > 0)) continue; // underflowed in float32
    maxDiff = Math.max(maxDiff, Math.abs(Math.log(p) - referenceLog[token]));
  }
  let spread = 0;
  const mean = reference.reduce((a, b) => a + b, 0) / vocabularySize;
  for (const v of reference) spread += (v - mean) ** 2;
  return {
    reference: arch === "bloom" ? "JS float32 model of llama.cpp's bloom graph on the same weights" : "falcon-native (same math)",
    promptTokens: prompt.length,
    maxAbsDiff: maxDiff,
    logitStd: Math.sqrt(spread / vocabularySize),
    argmaxMatch: referenceArgmax === theirsArgmax,
    referenceArgmax,
    theirsArgmax,
  };
}

// ------------------------------------------------------------------------------------------------
// Background load: CPU time other processes took while we measured (the comparison assumes an idle machine)

const CLOCK_TICKS = 100;
function cpuSnapshot() {
  let busy = null;
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = fields;
    busy = (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
    void idle; void iowait;
  } catch { /* not Linux */ }
  const usage = process.cpuUsage();
  // llama-bench runs as a child: its CPU time (reaped children's, fields 16-17 of /proc/self/stat) is ours too.
  let children = 0;
  try {
    const self = readFileSync("/proc/self/stat", "utf8");
    const fields = self.slice(self.lastIndexOf(")") + 2).split(" ").map(Number);
    children = (fields[13] + fields[14]) / CLOCK_TICKS;
  } catch { /* not Linux */ }
  return { busy, ours: (usage.user + usage.system) / 1e6 + children, wall: performance.now() / 1000 };
}
/** Share of the machine's CPUs (0..1) used by other processes between two snapshots. */
function backgroundLoad(from, to) {
  if (from.busy === null || to.busy === null) return null;
  const others = (to.busy - from.busy) - (to.ours - from.ours);
  return Math.max(0, others / ((to.wall - from.wall) * os.cpus().length));
}

// ------------------------------------------------------------------------------------------------
// Run

const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const fmtSummary = (s) => (s ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : "—");

setNumThreads(threads);
if (oursAvx2) setIsa("avx2");
const runtime = runtimeInfo();
const llamaRelease = llama?.llamaCppRelease ?? null;
const machine = {
  cpu: cpuModel(),
  logicalCpus: os.cpus().length,
  threads,
  oursIsa: runtime.isa,
  oursSupportedIsas: runtime.supportedIsas,
  llamaCppNative: nativeBuild && {
    release: llamaCppInfo().tag ?? null,
    commit: nativeBuild.commit,
    cmakeFlags: nativeBuild.cmakeFlags,
    isa: nativeIsa(),
  },
  llamaCpp: llama && {
    nodeLlamaCpp: NODE_LLAMA_CPP_VERSION,
    release: llamaRelease?.release ?? null,
    buildType: llama.buildType,
    cpuBackend: llamaCpuBackend,
    systemInfo: llama.systemInfo,
  },
  node: process.version,
};

const results = [];
const checks = [];
const mappings = [];
const startedAt = Date.now();

// The machine's floors by falcon-native's own probes, as bench/run.ts takes them: the compute ceilings
// are the best of every probe in the run; memory bandwidth drifts, so each dtype uses the higher of
// the probes just before and just after its measures.
const peaks = { f32Gflops: 0, bf16Gflops: 0, int8Gops: 0 };
async function probeReadGBps() {
  const probe = await native().probeMachine(args.small ? 2 ** 28 : 2 ** 31);
  peaks.f32Gflops = Math.max(peaks.f32Gflops, probe.f32FlopsPerSecond / 1e9);
  peaks.bf16Gflops = Math.max(peaks.bf16Gflops, probe.bf16FlopsPerSecond / 1e9);
  peaks.int8Gops = Math.max(peaks.int8Gops, probe.int8OpsPerSecond / 1e9);
  return probe.readBytesPerSecond / 1e9;
}

/** Per-round ratios a[i] / b[i], summarised (median, min, max). */
const roundRatios = (a, b) => (a.length && b.length ? summarize(a.map((v, i) => v / b[i])) : null);

for (const pairingKey of pairings) {
  const pairing = PAIRINGS[pairingKey];
  for (const dtypeKey of dtypes) {
    const dtype = DTYPES[dtypeKey];
    const label = `${pairing.arch} ${dtypeKey}`;
    const config = modelConfig(shapeName, pairingKey, seed);

    // The source model: its weights go into the GGUF (q8_0: quantised from float32 for llama.cpp).
    const { file, mapping, source } = await cachedFalconGguf({
      shapeName, pairingKey, dtypeKey, seed, log: (message) => log(`[${label}] ${message}`),
    });
    if (!mappings.some((m) => m.arch === pairing.arch)) {
      mappings.push({ arch: pairing.arch, pairing: pairing.name, ours: pairing.ours, theirs: pairing.theirs, notes: pairing.notes, tensors: mapping });
    }
    const info = await readGgufFileInfo(file, { readTensorInfo: true });
    if (info.metadata.general.architecture !== pairing.arch) throw new Error(`${file}: unexpected architecture`);

    const theirs = llama ? await loadTheirs(file) : null;
    if (theirs) {
      log(`[${label}] node-llama-cpp context: ${theirs.context.contextSize} tokens, batch ${theirs.context.batchSize}, ` +
        `${theirs.context.idealThreads} threads, flash attention ${theirs.context.flashAttention}`);
    }

    // The logits check reads probabilities through node-llama-cpp (llama-bench returns none): the same
    // GGUF and graph code as the native build, so it validates the file both sides run.
    const check = async (model, referenceLabel) => {
      if (args["no-check"] || !theirs) return;
      const result = await checkLogits(model, pairing.arch, theirs, shape.vocabularySize);
      checks.push({ pairing: pairing.name, arch: pairing.arch, dtype: dtypeKey, ...result, reference: referenceLabel ?? result.reference });
      log(`[${label}] logits check: max |Δ log-softmax| ${result.maxAbsDiff.toExponential(2)} (logit std ${result.logitStd.toFixed(3)}), ` +
        `argmax ${result.argmaxMatch ? "matches" : `differs (${result.referenceArgmax} vs ${result.theirsArgmax})`}`);
    };
    // bloom: llama.cpp against a JS model of its graph on the source weights. falcon with a
    // quantised GGUF: against our float32 source model (the weights before llama.cpp's quantisation).
    if (pairing.arch === "bloom") await check(source);
    else if (dtype.ours !== dtype.source) await check(source, `falcon-native ${dtype.source} (the weights before quantisation)`);
    // Our side in the dtype compared: the source itself, or a model of our own quantised dtype (same seed), or none.
    let ours = source;
    if (dtype.ours !== dtype.source) {
      source.dispose();
      ours = dtype.ours ? new FalconBackbone({ ...config, dtype: dtype.ours }) : null;
      if (ours) await ours.nativeModel();
    }
    if (pairing.arch === "falcon" && ours) {
      const quantisation = dtype.sameQuantisation ? "the same quantised weights" : "its own quantisation";
      await check(ours, dtype.ours === dtype.source ? undefined : `falcon-native ${dtype.ours} (same seed; ${quantisation})`);
    }

    const readBefore = await probeReadGBps();
    const dtypeRows = [];
    for (const measure of MEASURES) {
      // One warm-up each, then alternating rounds: ours, llama.cpp native, llama.cpp prebuilt, ours, ...
      if (ours) await oursOnce(ours, measure);
      if (nativeBuild) nativeOnce(file, measure);
      if (theirs) await theirsOnce(theirs, measure, 0, shape.vocabularySize);
      const oursRates = [];
      const nativeRates = [];
      const prebuiltRates = [];
      let nativeRun = null;
      const before = cpuSnapshot();
      for (let r = 0; r < reps; r++) {
        if (ours) oursRates.push(await oursOnce(ours, measure));
        if (nativeBuild) {
          nativeRun = nativeOnce(file, measure);
          nativeRates.push(nativeRun.tokensPerSecond);
        }
        if (theirs) prebuiltRates.push(await theirsOnce(theirs, measure, r, shape.vocabularySize));
      }
      const load = backgroundLoad(before, cpuSnapshot());
      const withSamples = (rates) => (rates.length ? { ...summarize(rates), samples: rates } : null);
      const row = {
        pairing: pairing.name,
        arch: pairing.arch,
        dtype: dtypeKey,
        oursDtype: dtype.ours,
        ggmlType: GGML_TYPE_NAME[dtype.ggml],
        measure: measure.name,
        unit: "tokens/s",
        ours: withSamples(oursRates),
        llamaCppNative: nativeRun && { ...withSamples(nativeRates), command: nativeRun.command, modelBytes: nativeRun.modelBytes },
        llamaCppPrebuilt: withSamples(prebuiltRates),
        // Per round: ours / the llama.cpp run right after it.
        ratioNative: roundRatios(oursRates, nativeRates),
        ratioPrebuilt: roundRatios(oursRates, prebuiltRates),
        backgroundLoad: load,
      };
      dtypeRows.push(row);
      results.push(row);
      const ratioText = (name, ratio) => (ratio ? `  ${name} ${fmtSummary(ratio)}` : "");
      log(`[${label}] ${measure.name}: ours ${fmtSummary(row.ours)}  llama.cpp native ${fmtSummary(row.llamaCppNative)}  ` +
        `prebuilt ${fmtSummary(row.llamaCppPrebuilt)}${ratioText("ours/native", row.ratioNative)}${ratioText("ours/prebuilt", row.ratioPrebuilt)}` +
        (load === null ? "" : `  (other processes: ${(100 * load).toFixed(0)}% CPU)`));
    }
    const readGBps = Math.max(readBefore, await probeReadGBps());

    // Floors (bench/run.ts's): prefill multiplies each layer matrix once per token at our dtype's
    // peak; a decoded token reads every weight byte once (llama.cpp's: its GGUF's tensor bytes).
    if (ours) {
      const oursConfig = ours.getConfig();
      // int4 multiplies through the int8 dot products (its nibbles widened to bytes).
      const integer = dtype.ours === "int8" || dtype.ours === "int4";
      const peak = 1e9 * (dtype.ours === "bfloat16" ? peaks.bf16Gflops : integer ? peaks.int8Gops : peaks.f32Gflops);
      for (const row of dtypeRows) {
        const prefill = row.measure.startsWith("pp");
        const floor = prefill ? peak / (2 * layerMatrixParameters(oursConfig)) : (readGBps * 1e9) / ours.info().weightBytes;
        const nativeFloor = prefill || !row.llamaCppNative ? floor : (readGBps * 1e9) / row.llamaCppNative.modelBytes;
        row.floor = {
          limit: prefill ? "compute" : "bandwidth",
          tokensPerSecond: floor,
          readGBps,
          peakGops: peak / 1e9,
          oursPercent: (100 * row.ours.median) / floor,
          nativePercent: row.llamaCppNative ? (100 * row.llamaCppNative.median) / nativeFloor : null,
        };
      }
    }

    if (theirs) {
      await theirs.context.dispose();
      await theirs.model.dispose();
    }
    ours?.dispose();
  }
}
await llama?.dispose();

const setup = {
  shape: shapeName,
  ...shape,
  seed,
  repetitions: reps,
  threads,
  contextSize,
  batchSize,
  flashAttention: args["flash-attn"],
  oursKvCache: "float32",
  llamaCppKvCache: "f16 (llama-bench's and node-llama-cpp's default)",
  llamaCppNativeApi: `llama-bench -p N -n 0 (pp) or -p 0 -n N (tg), -t ${threads} -b ${batchSize} -ub ${batchSize} ` +
    `-fa ${args["flash-attn"]} -r 1: one repetition per round after llama-bench's own warm-up run`,
  llamaCppApi: "LlamaContextSequence.controlledEvaluate (pp: prompt in one batch, logits for the last token; " +
    "tg: one token per call with logits + greedy pick; clearHistory() between repetitions)",
  oursApi: "FalconBackbone.callWithCache (pp: prompt into a fresh cache, no LM head; tg: one token per step + LM head)",
  seconds: Math.round((Date.now() - startedAt) / 1000),
};

const report = { machine, setup, mappings, checks, results };
if (args.out) writeFileSync(args.out, `${JSON.stringify(report, null, 2)}\n`);
if (args.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const lines = [];
  lines.push(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs; ${threads} threads each`);
  lines.push(`  falcon-native ISA: ${machine.oursIsa} (supported: ${machine.oursSupportedIsas.join(", ")})`);
  if (machine.llamaCppNative) {
    lines.push(`  llama.cpp native ISA: ${machine.llamaCppNative.isa} (llama.cpp ${machine.llamaCppNative.commit.slice(0, 12)}, ` +
      `built here by llama-build.mjs: ${machine.llamaCppNative.cmakeFlags.filter((f) => /GGML_(NATIVE|AVX2|AVX512)=/.test(f)).map((f) => f.slice(2)).join(", ")}, Release)`);
  }
  if (machine.llamaCpp) {
    lines.push(`  llama.cpp prebuilt ISA: CPU backend ${machine.llamaCpp.cpuBackend ?? "?"} (llama.cpp ${machine.llamaCpp.release ?? "?"} via ` +
      `node-llama-cpp ${machine.llamaCpp.nodeLlamaCpp}, ${machine.llamaCpp.buildType}); ${String(machine.llamaCpp.systemInfo).trim()}`);
  }
  lines.push(`shape: ${shapeName} (vocab ${shape.vocabularySize}, ${shape.numLayers} layers, ${shape.numAttentionHeads} heads, ` +
    `hidden ${shape.hiddenDim}, ffn ${shape.intermediateDim}); ${reps} alternating repetitions after one warm-up each; ` +
    `tokens/s, median (min–max); ratios = ours / llama.cpp per round, median (min–max) (> 1: ours faster)`);
  if (machine.llamaCppNative) lines.push(`llama.cpp native: ${setup.llamaCppNativeApi}; KV cache f16`);
  if (machine.llamaCpp) {
    lines.push(`llama.cpp prebuilt: ${setup.llamaCppApi}; context ${contextSize}, batch ${batchSize}, flash attention ${args["flash-attn"]}, KV cache f16`);
  }
  lines.push(`ours: ${setup.oursApi}; KV cache float32`);
  lines.push("mappings:");
  for (const m of mappings) {
    lines.push(`  ${m.pairing}: ours = ${m.ours}; llama.cpp = ${m.theirs}. ${m.notes}.`);
    const layer0 = m.tensors.filter((t) => !/(^|\.)([1-9]\d*)\./.test(t.from) || /^\(added\)/.test(t.from));
    lines.push(`    tensors (layer 0 shown; every layer alike): ${layer0.map((t) => `${t.from} → ${t.to}`).join(", ")}`);
  }
  lines.push("  fused QKV rows are [all query heads; all key heads; all value heads] on both sides (no reordering needed).");
  const loads = results.map((r) => r.backgroundLoad).filter((l) => l !== null);
  if (loads.some((l) => l > 0.05)) {
    lines.push(`WARNING: other processes used up to ${(100 * Math.max(...loads)).toFixed(0)}% of the CPUs during some measures; ` +
      "both sides suffer, but not equally (ggml's threads spin at barriers): rerun on an idle machine for numbers to quote.");
  }
  lines.push("");
  const fmtRatio = (s) => (s ? `${s.median.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})` : "—");
  const header = ["pairing", "dtype", "measure", "ours", "llama.cpp native", "ours/native", "prebuilt", "ours/prebuilt",
    "floor", "ours", "native", "other load"];
  const rows = results.map((r) => [
    r.pairing, r.dtype, r.measure,
    fmtSummary(r.ours), fmtSummary(r.llamaCppNative), fmtRatio(r.ratioNative), fmtSummary(r.llamaCppPrebuilt), fmtRatio(r.ratioPrebuilt),
    r.floor ? `${fmt(r.floor.tokensPerSecond)} (${r.floor.limit})` : "—",
    r.floor ? `${r.floor.oursPercent.toFixed(0)}%` : "—",
    r.floor?.nativePercent != null ? `${r.floor.nativePercent.toFixed(0)}%` : "—",
    r.backgroundLoad === null ? "?" : `${(100 * r.backgroundLoad).toFixed(0)}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  lines.push(line(header));
  lines.push(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) lines.push(line(row));
  const probed = results.find((r) => r.floor)?.floor;
  if (probed) {
    lines.push(`floors by falcon-native's probes (${machine.oursIsa} kernels; memory read ${Math.max(...results.filter((r) => r.floor).map((r) => r.floor.readGBps)).toFixed(1)} GB/s, ` +
      `f32 FMA ${peaks.f32Gflops.toFixed(0)} GFLOP/s, bf16 ${peaks.bf16Gflops.toFixed(0)} GFLOP/s, int8 ${peaks.int8Gops.toFixed(0)} GOP/s): ` +
      "pp = our dtype's peak / the layer matrices' multiply-adds per token; tg = bandwidth / weight bytes (llama.cpp native's % uses " +
      "its GGUF's bytes; its pp % is of our compute floor, which is the " + machine.oursIsa + " kernels')");
  }
  if (checks.length) {
    lines.push("");
    lines.push("logits check, llama.cpp (node-llama-cpp) vs a reference (8-token prompt, last position; node-llama-cpp exposes probabilities, " +
      "so log-softmax = logits less their additive constant is compared):");
    for (const c of checks) {
      lines.push(`  ${c.pairing} ${c.dtype} vs ${c.reference}: max |Δ| ${c.maxAbsDiff.toExponential(2)} ` +
        `(logit std ${c.logitStd.toFixed(3)}), argmax ${c.argmaxMatch ? "matches" : `differs (${c.referenceArgmax} vs ${c.theirsArgmax})`}`);
    }
  }
  console.log(lines.join("\n"));
}
