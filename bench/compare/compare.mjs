#!/usr/bin/env node
/**
 * falcon-native side by side with llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binary), on the
 * same random weights, shape and dtype, alternating ours / llama.cpp within one process.
 *
 *   node bench/compare/compare.mjs [--dtype f32,bf16[,f16,q8_0]] [--reps 5] [--threads 2]
 *        [--pairing bloom,falcon] [--measures pp128,pp512,tg128] [--seed 0] [--small] [--json]
 *        [--flash-attn auto|on|off] [--no-check] [--out results.json]
 *
 * Needs the root build (`npx tsc -p .` and the addon in build/Release) and `npm ci` in bench/compare.
 * GGUF files are cached in bench/.cache/ (keyed by arch, shape, dtype, seed and a weight fingerprint).
 */
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { getLlama, LlamaLogLevel, readGgufFileInfo } from "node-llama-cpp";

import { FalconBackbone, runtimeInfo, setNumThreads } from "../../dist/src/index.js";
import { benchTokens, measureDecode, measurePrefill } from "../../dist/bench/measure.js";
import { summarize } from "../../dist/bench/stats.js";
import { bloomReferenceLogits } from "./bloom-reference.mjs";
import { GGML_TYPE_NAME } from "../../dist/bench/gguf.js";
import { cachedFalconGguf, DTYPES, modelConfig, PAIRINGS, parseDtypes, SHAPES } from "./falcon-gguf.mjs";
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
const llama = await getLlama({
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
llama.logLevel = LlamaLogLevel.warn;

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
  return { busy, ours: (usage.user + usage.system) / 1e6, wall: performance.now() / 1000 };
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
const runtime = runtimeInfo();
const llamaRelease = llama.llamaCppRelease;
const machine = {
  cpu: cpuModel(),
  logicalCpus: os.cpus().length,
  threads,
  oursIsa: runtime.isa,
  oursSupportedIsas: runtime.supportedIsas,
  llamaCpp: {
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

    const theirs = await loadTheirs(file);
    log(`[${label}] llama.cpp context: ${theirs.context.contextSize} tokens, batch ${theirs.context.batchSize}, ` +
      `${theirs.context.idealThreads} threads, flash attention ${theirs.context.flashAttention}`);

    const check = async (model, referenceLabel) => {
      if (args["no-check"]) return;
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
      await check(ours, dtype.ours === dtype.source ? undefined : `falcon-native ${dtype.ours} (same seed; its own quantisation)`);
    }

    for (const measure of MEASURES) {
      // One warm-up each, then alternate: ours, llama.cpp, ours, llama.cpp, ...
      if (ours) await oursOnce(ours, measure);
      await theirsOnce(theirs, measure, 0, shape.vocabularySize);
      const oursRates = [];
      const theirsRates = [];
      const before = cpuSnapshot();
      for (let r = 0; r < reps; r++) {
        if (ours) oursRates.push(await oursOnce(ours, measure));
        theirsRates.push(await theirsOnce(theirs, measure, r, shape.vocabularySize));
      }
      const load = backgroundLoad(before, cpuSnapshot());
      const oursSummary = ours ? summarize(oursRates) : null;
      const theirsSummary = summarize(theirsRates);
      const row = {
        pairing: pairing.name,
        arch: pairing.arch,
        dtype: dtypeKey,
        oursDtype: dtype.ours,
        ggmlType: GGML_TYPE_NAME[dtype.ggml],
        measure: measure.name,
        unit: "tokens/s",
        ours: oursSummary && { ...oursSummary, samples: oursRates },
        llamaCpp: { ...theirsSummary, samples: theirsRates },
        ratio: oursSummary ? oursSummary.median / theirsSummary.median : null,
        backgroundLoad: load,
      };
      results.push(row);
      log(`[${label}] ${measure.name}: ours ${fmtSummary(oursSummary)}  llama.cpp ${fmtSummary(theirsSummary)}  ` +
        `ratio ${row.ratio === null ? "—" : row.ratio.toFixed(2)}` +
        (load === null ? "" : `  (other processes: ${(100 * load).toFixed(0)}% CPU)`));
    }

    await theirs.context.dispose();
    await theirs.model.dispose();
    ours?.dispose();
  }
}
await llama.dispose();

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
  llamaCppKvCache: "f16 (node-llama-cpp default)",
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
  lines.push(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs; ${threads} threads each; ` +
    `falcon-native ISA ${machine.oursIsa}; llama.cpp ${machine.llamaCpp.release ?? "?"} via node-llama-cpp ` +
    `${machine.llamaCpp.nodeLlamaCpp} (${machine.llamaCpp.buildType}, CPU backend ${machine.llamaCpp.cpuBackend ?? "?"})`);
  lines.push(`shape: ${shapeName} (vocab ${shape.vocabularySize}, ${shape.numLayers} layers, ${shape.numAttentionHeads} heads, ` +
    `hidden ${shape.hiddenDim}, ffn ${shape.intermediateDim}); ${reps} alternating repetitions after one warm-up each; ` +
    `tokens/s, median (min–max); ratio = ours / llama.cpp (> 1: ours faster)`);
  lines.push(`llama.cpp API: ${setup.llamaCppApi}; context ${contextSize}, batch ${batchSize}, flash attention ${args["flash-attn"]}, KV cache f16`);
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
  const header = ["pairing", "dtype", "measure", "ours", "llama.cpp", "ours/llama.cpp", "other load"];
  const rows = results.map((r) => [
    r.pairing, r.dtype, r.measure,
    fmtSummary(r.ours), fmtSummary(r.llamaCpp), r.ratio === null ? "—" : r.ratio.toFixed(2),
    r.backgroundLoad === null ? "?" : `${(100 * r.backgroundLoad).toFixed(0)}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  lines.push(line(header));
  lines.push(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) lines.push(line(row));
  if (checks.length) {
    lines.push("");
    lines.push("logits check, llama.cpp vs a reference (8-token prompt, last position; node-llama-cpp exposes probabilities, " +
      "so log-softmax = logits less their additive constant is compared):");
    for (const c of checks) {
      lines.push(`  ${c.pairing} ${c.dtype} vs ${c.reference}: max |Δ| ${c.maxAbsDiff.toExponential(2)} ` +
        `(logit std ${c.logitStd.toFixed(3)}), argmax ${c.argmaxMatch ? "matches" : `differs (${c.referenceArgmax} vs ${c.theirsArgmax})`}`);
    }
  }
  console.log(lines.join("\n"));
}
