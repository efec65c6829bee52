#!/usr/bin/env node
/**
 * llama.cpp's own `llama-batched-bench` on falcon-native's random falcon-rw-1b-shaped model (the
 * `bloom` pairing of compare.mjs, same GGUF files): aggregate decode tokens/s with 1, 4, 16 and 64
 * parallel sequences, and right after it, in the same run, falcon-native's engine on the same weights
 * and the same work (npl streams, an npp-token prompt each, ntg tokens each; the decode rate over the
 * steps where every stream decodes, as S_TG): the ratio ours / llama.cpp per npl.
 *
 *   node bench/compare/batched-bench.mjs [--dtype bf16,q8_0] [--npl 1,4,16,64] [--npp 128] [--ntg 32]
 *        [--threads 2] [--ctx N] [--batch 2048] [--ubatch 512] [--flash-attn auto|on|off] [--seed 0]
 *        [--jobs N] [--small] [--json] [--out results.json] [--build-only]
 *
 * llama-batched-bench is built once from the llama.cpp source node-llama-cpp ships, beside
 * llama-server (llama-build.mjs: bench/compare/.llama-build/, this CPU only, no network libraries).
 * Needs the root build (`npx tsc -p .` and the addon) and `npm ci` in bench/compare, cmake and a C++
 * compiler. GGUF files are cached in bench/.cache/.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { FalconBackbone, FalconCausalLM, setNumThreads } from "../../dist/src/index.js";
import { measureStreams } from "../../dist/bench/engine.js";
import { cachedFalconGguf, DTYPES, modelConfig, PAIRINGS, parseDtypes, SHAPES } from "./falcon-gguf.mjs";
import { ensureLlamaBuild, llamaCppInfo } from "./llama-build.mjs";
import { helpIfAsked, positiveInt } from "./script-args.mjs";

const { values: args } = parseArgs({
  options: {
    dtype: { type: "string", default: "bf16,q8_0" },
    npl: { type: "string", default: "1,4,16,64" },
    npp: { type: "string", default: "128" },
    ntg: { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
    ctx: { type: "string" },
    batch: { type: "string", default: "2048" },
    ubatch: { type: "string", default: "512" },
    "flash-attn": { type: "string", default: "auto" },
    seed: { type: "string", default: "0" },
    jobs: { type: "string", default: String(os.availableParallelism()) },
    small: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    out: { type: "string" },
    "build-only": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
helpIfAsked(args, import.meta.url);
const dtypes = parseDtypes(args.dtype);
const npl = args.npl.split(",").map((n) => positiveInt(n.trim(), "npl"));
const npp = positiveInt(args.npp, "npp");
const ntg = positiveInt(args.ntg, "ntg");
const threads = positiveInt(args.threads, "threads");
// Every sequence has its own npp + ntg cells (the prompt is not shared): the largest npl needs them all.
const ctx = args.ctx === undefined ? Math.max(...npl) * (npp + ntg) : positiveInt(args.ctx, "ctx");
const batch = positiveInt(args.batch, "batch");
const ubatch = positiveInt(args.ubatch, "ubatch");
const jobs = positiveInt(args.jobs, "jobs");
const seed = Number(args.seed);
if (!["auto", "on", "off"].includes(args["flash-attn"])) throw new Error("--flash-attn must be auto, on or off");
const shapeName = args.small ? "small" : "falcon-rw-1b";
const pairingKey = "bloom";

const log = (...parts) => console.error(...parts);

// ------------------------------------------------------------------------------------------------
// Run and parse

const COLUMNS = ["pp", "tg", "npl", "nKv", "tPp", "sPp", "tTg", "sTg", "t", "s"];

/**
 * The rows of llama-batched-bench's markdown table:
 * |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
 * S_TG is B × TG / T_TG: the aggregate decode tokens/s of B sequences decoding together.
 */
function parseBatchedBenchTable(output) {
  const rows = [];
  for (const line of output.split("\n")) {
    if (!/^\|\s*\d/.test(line)) continue;
    const cells = line.split("|").slice(1, -1).map((cell) => Number(cell.trim()));
    if (cells.length !== COLUMNS.length || cells.some((v) => !Number.isFinite(v))) {
      throw new Error(`unexpected llama-batched-bench row: ${line}`);
    }
    rows.push(Object.fromEntries(COLUMNS.map((name, i) => [name, cells[i]])));
  }
  return rows;
}

const CLOCK_TICKS = 100;  // USER_HZ of /proc/stat and /proc/self/stat on Linux

/** Busy CPU seconds of the whole machine and of this process's finished children (Linux; null elsewhere). */
function cpuSnapshot() {
  try {
    const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    // /proc/self/stat: fields after the command name; cutime and cstime are the 16th and 17th fields.
    const self = readFileSync("/proc/self/stat", "utf8");
    const fields = self.slice(self.lastIndexOf(")") + 2).split(" ").map(Number);
    const children = (fields[13] + fields[14]) / CLOCK_TICKS;
    return { busy: (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, children, wall: performance.now() / 1000 };
  } catch {
    return null;
  }
}

/** Share of the machine's CPUs (0..1) other processes used while llama-batched-bench ran: it needs an idle machine. */
function otherProcessesLoad(from, to) {
  if (!from || !to) return null;
  const others = (to.busy - from.busy) - (to.children - from.children);
  return Math.max(0, others / ((to.wall - from.wall) * os.cpus().length));
}

/** Runs the binary, relaying its table rows to stderr as they come; resolves to { status, stdout, stderr }. */
function runRelayed(command, commandArgs) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      stdout += chunk;
      for (const line of chunk.split("\n")) if (line.startsWith("|")) log(`  ${line}`);
    });
    child.stderr.setEncoding("utf8").on("data", (chunk) => { stderr += chunk; });
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

async function runBatchedBench(file) {
  const commandArgs = [
    "-m", file, "-c", String(ctx), "-b", String(batch), "-ub", String(ubatch),
    "-npp", String(npp), "-ntg", String(ntg), "-npl", npl.join(","),
    "-t", String(threads), "-fa", args["flash-attn"], "--output-format", "md",
  ];
  const command = [path.relative(process.cwd(), binary), ...commandArgs].join(" ");
  log(`running ${command}`);
  const t0 = performance.now();
  const before = cpuSnapshot();
  const result = await runRelayed(binary, commandArgs);
  const otherProcessesCpu = otherProcessesLoad(before, cpuSnapshot());
  const output = `${result.stdout}\n${result.stderr}`;
  if (result.status !== 0) throw new Error(`llama-batched-bench failed (exit ${result.status}):\n${output.split("\n").slice(-30).join("\n")}`);
  const rows = parseBatchedBenchTable(result.stdout);
  const missing = npl.filter((n) => !rows.some((row) => row.npl === n));
  if (missing.length > 0) throw new Error(`llama-batched-bench skipped npl ${missing.join(",")} (context ${ctx} too small?)`);
  const settings = /n_kv_max = .*$/m.exec(output)?.[0] ?? null;
  return { command, seconds: (performance.now() - t0) / 1000, otherProcessesCpu, settings, rows };
}

function cpuModel() {
  const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"));
  return line ? line.split(":").slice(1).join(":").trim() : os.cpus()[0]?.model ?? "unknown";
}

/**
 * falcon-native's engine on the model the GGUF was written from (q8_0: our int8 of the same float32
 * weights): npl concurrent streams of an npp-token prompt and ntg new tokens each, per npl.
 */
async function measureOurEngine(dtypeKey, label) {
  const ours = DTYPES[dtypeKey].ours;
  if (ours === null) return null;
  setNumThreads(threads);
  const backbone = new FalconBackbone({ ...modelConfig(shapeName, pairingKey, seed), dtype: ours });
  const lm = new FalconCausalLM(backbone);
  const decodeTokensPerSecond = {};
  try {
    for (const n of npl) {
      const { tokensPerSecond } = await measureStreams(lm, n, ntg, 1, npp);
      decodeTokensPerSecond[n] = tokensPerSecond.median;
      log(`[${label}] falcon-native engine, ${n} streams: ${tokensPerSecond.median.toFixed(2)} decode tokens/s`);
    }
  } finally {
    backbone.dispose();
  }
  return { dtype: ours, decodeTokensPerSecond };
}

// ------------------------------------------------------------------------------------------------
// Main

const build = ensureLlamaBuild({ jobs, log });
const binary = build.binaries["llama-batched-bench"];
if (args["build-only"]) process.exit(0);

const llamaInfo = llamaCppInfo();
const runs = [];
for (const dtypeKey of dtypes) {
  const label = `${pairingKey} ${dtypeKey}`;
  const { file, source } = await cachedFalconGguf({ shapeName, pairingKey, dtypeKey, seed, log: (message) => log(`[${label}] ${message}`) });
  source.dispose();  // llama.cpp maps the file; our copy of the weights is not needed while it runs
  const result = await runBatchedBench(file);
  const ours = await measureOurEngine(dtypeKey, label);
  const decodeTokensPerSecond = Object.fromEntries(result.rows.map((row) => [row.npl, row.sTg]));
  log(`[${label}] S_TG (aggregate decode tokens/s) by parallel sequences: ` +
    Object.entries(decodeTokensPerSecond).map(([n, v]) => `${n}: ${v.toFixed(2)}`).join(", ") + ` (${result.seconds.toFixed(0)} s` +
    (result.otherProcessesCpu === null ? ")" : `; other processes: ${(result.otherProcessesCpu * 100).toFixed(0)}% CPU)`));
  runs.push({ dtype: dtypeKey, ggmlType: DTYPES[dtypeKey].ggml, file: path.relative(process.cwd(), file), ...result, decodeTokensPerSecond, ours });
}

const report = {
  tool: "llama-batched-bench",
  machine: { cpu: cpuModel(), logicalCpus: os.cpus().length, threads },
  llamaCpp: {
    source: "node-llama-cpp's gitRelease.bundle",
    release: llamaInfo.tag,
    commit: build.commit,
    buildSeconds: build.buildSeconds,
    cmakeFlags: build.cmakeFlags,
  },
  model: { shape: shapeName, ...SHAPES[shapeName], pairing: PAIRINGS[pairingKey].name, theirs: PAIRINGS[pairingKey].theirs, seed },
  settings: { npp, ntg, npl, ctx, batch, ubatch, flashAttention: args["flash-attn"], promptShared: false },
  measure: "S_TG = npl × ntg / T_TG: aggregate decode tokens/s, npl sequences decoding one token each per step after an npp-token prompt each",
  runs,
};

if (args.out) writeFileSync(args.out, JSON.stringify(report, null, 2));
if (args.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  console.log(`llama-batched-bench (llama.cpp ${llamaInfo.tag}, ${build.commit.slice(0, 12)}), ${report.machine.cpu}, ${threads} threads`);
  console.log(`model: ${shapeName} as llama.cpp bloom; npp ${npp}, ntg ${ntg}, context ${ctx}, batch ${batch}/${ubatch}, flash attention ${args["flash-attn"]}`);
  console.log("");
  console.log(`| dtype | ${npl.map((n) => `${n} seq: ours / llama.cpp`).join(" | ")} | other processes (llama.cpp run) |`);
  console.log(`| --- | ${npl.map(() => "---").join(" | ")} | --- |`);
  for (const r of runs) {
    const load = r.otherProcessesCpu === null ? "—" : `${(r.otherProcessesCpu * 100).toFixed(0)}% CPU`;
    const cell = (n) => {
      const theirs = r.decodeTokensPerSecond[n];
      const mine = r.ours?.decodeTokensPerSecond[n];
      return mine === undefined ? theirs.toFixed(2) : `${(mine / theirs).toFixed(2)}× (${mine.toFixed(2)} vs ${theirs.toFixed(2)})`;
    };
    console.log(`| ${r.dtype}${r.ours ? ` (ours ${r.ours.dtype})` : ""} | ${npl.map(cell).join(" | ")} | ${load} |`);
  }
  console.log("");
  console.log("aggregate decode tokens/s (llama.cpp: S_TG; ours: the engine over the same decode steps)");
}
