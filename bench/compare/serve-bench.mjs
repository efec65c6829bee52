#!/usr/bin/env node
/**
 * `falcon-native serve` side by side with llama.cpp's `llama-server` under the same load, alternating,
 * in one run; or, with --soak, our server alone for a bounded time with random client disconnects.
 *
 *   node bench/compare/serve-bench.mjs [--dtype bf16,q8_0] [--clients 1,4,16,64] [--rate 0.25]
 *        [--rate-slots 16] [--requests N] [--duration 300] [--prompt-tokens 64-512] [--output-tokens 32-256]
 *        [--threads 2] [--kv-cache-dtype T] [--seed 0] [--jobs N] [--small] [--json] [--out FILE] [--build-only]
 *   node bench/compare/serve-bench.mjs --soak 600 [--soak-clients 16] [--disconnect 0.3] [--warm-up S] [--dtype bf16] [--small]
 *
 * The model. falcon-native's random falcon-rw-1b-shaped model (the `bloom` pairing of compare.mjs),
 * written once for each side from the same weights: a GGUF for llama-server (bf16, or q8_0 quantised
 * from float32) and a keras-hub preset for us (bfloat16, or float32 served as --dtype int8: the same
 * weights before quantisation, each side quantising its own way). Both carry GPT-2's byte-level BPE
 * tokenizer (serve-model.ts). Cached in bench/.cache/.
 *
 * The servers. llama-server is built from the llama.cpp source node-llama-cpp ships, beside
 * llama-batched-bench (llama-build.mjs). For each load, each server is started fresh on a free
 * loopback port, polled on /health until ready, warmed up with one short request, loaded, then
 * stopped with SIGTERM:
 *   ours:   node dist/src/cli.js serve PRESET --port P --model-name falcon --threads T --dtype D --max-sequences N
 *           --kv-cache-bytes B
 *   theirs: llama-server -m GGUF --port P --parallel N --cont-batching --threads T --threads-batch T
 *           -c N×S --alias falcon --no-webui --cache-ram 0
 * N is the client count (the Poisson loads: --rate-slots); S (per-slot context) and B (our KV pool)
 * hold N sequences of the longest prompt plus the longest output. llama-server's host-memory prompt
 * cache is off: these prompts share no prefixes, and saving each finished slot's KV would only cost it.
 *
 * The load (bench/serve-load.ts, the same requests for both servers): streaming /v1/completions with
 * token-id prompts of --prompt-tokens, max_tokens of --output-tokens, ignore_eos, temperature 0;
 * closed loops of each --clients count and open-loop Poisson arrivals at each --rate, each bounded by
 * --requests (default 3 per client or slot, at least 8) and --duration seconds. Output tokens/s,
 * requests/s, time to first token and inter-token latency p50/p90/p99, failures; the server's peak
 * RSS (VmRSS) during the load, and the CPU share the server, the load generator and other processes
 * took (the comparison needs an otherwise idle machine).
 *
 * The soak: 16 clients against our server for --soak seconds (no request count to speak of), each
 * request aborted mid-stream with probability --disconnect. Reports failures that were not cancels
 * (target 0) and VmRSS sampled every 2 s: after warm-up (--warm-up seconds, default the first fifth:
 * long enough for every block of our KV pool to have been used once), max / min - 1 (target ≤ 5 %).
 * Afterwards /metrics must show no running sequence and no KV block in use, and a normal request
 * must still succeed.
 *
 * Needs the root build (`npx tsc -p .` and the addon), `npm ci` in bench/compare, cmake and a C++ compiler.
 */
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { runtimeInfo } from "../../dist/src/index.js";
import { describeLoad, runLoad } from "../../dist/bench/serve-load.js";
import { GPT2_ORDINARY_TOKENS, writeServePreset } from "../../dist/bench/serve-model.js";
import { cacheDir, cachedFalconGguf, DTYPES, fingerprint, PAIRINGS, parseDtypes, SHAPES } from "./falcon-gguf.mjs";
import { ensureLlamaBuild, llamaCppInfo } from "./llama-build.mjs";
import { helpIfAsked, positiveInt } from "./script-args.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, "..", "..", "dist", "src", "cli.js");
const MODEL_NAME = "falcon";

const { values: args } = parseArgs({
  options: {
    dtype: { type: "string", default: "bf16,q8_0" },
    clients: { type: "string", default: "1,4,16,64" },
    rate: { type: "string", default: "0.25" },
    "rate-slots": { type: "string", default: "16" },
    requests: { type: "string" },
    duration: { type: "string", default: "300" },
    "prompt-tokens": { type: "string", default: "64-512" },
    "output-tokens": { type: "string", default: "32-256" },
    threads: { type: "string", default: "2" },
    "kv-cache-dtype": { type: "string" },
    seed: { type: "string", default: "0" },
    jobs: { type: "string", default: String(os.availableParallelism()) },
    soak: { type: "string" },
    "soak-clients": { type: "string", default: "16" },
    "warm-up": { type: "string" },
    disconnect: { type: "string", default: "0.3" },
    small: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    out: { type: "string" },
    "build-only": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
helpIfAsked(args, import.meta.url);
const positive = (value, name) => {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) throw new Error(`--${name} must be a positive number, got ${value}`);
  return n;
};
const list = (text, parse, name) => text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => parse(s, name));
const range = (text, name) => {
  const match = /^(\d+)-(\d+)$/.exec(text.trim());
  if (!match || Number(match[1]) < 1 || Number(match[2]) < Number(match[1])) throw new Error(`--${name} must be LOW-HIGH, got ${text}`);
  return [Number(match[1]), Number(match[2])];
};

const dtypes = parseDtypes(args.dtype);
const clientCounts = list(args.clients, positiveInt, "clients");
const rates = list(args.rate, positive, "rate");
const rateSlots = positiveInt(args["rate-slots"], "rate-slots");
const durationSeconds = positive(args.duration, "duration");
const promptTokens = range(args["prompt-tokens"], "prompt-tokens");
const outputTokens = range(args["output-tokens"], "output-tokens");
const threads = positiveInt(args.threads, "threads");
const seed = Number(args.seed);
const jobs = positiveInt(args.jobs, "jobs");
const soakSeconds = args.soak === undefined ? null : positive(args.soak, "soak");
const soakClients = positiveInt(args["soak-clients"], "soak-clients");
// Our KV pool's pages become resident as its blocks are first used, so RSS climbs until every block has been.
const warmUpSeconds = soakSeconds === null ? null : args["warm-up"] === undefined ? soakSeconds / 5 : positive(args["warm-up"], "warm-up");
const disconnect = Number(args.disconnect);
if (!(disconnect >= 0 && disconnect <= 1)) throw new Error(`--disconnect must be in [0, 1], got ${args.disconnect}`);
const shapeName = args.small ? "small-gpt2" : "falcon-rw-1b";
const pairingKey = "bloom";
const shape = SHAPES[shapeName];
/** Context each sequence may need: the longest prompt, the longest output, and a block of slack. */
const perSequenceTokens = Math.ceil((promptTokens[1] + outputTokens[1] + 1) / 64) * 64;
const requestsFor = (slots) => (args.requests === undefined ? Math.max(8, 3 * slots) : positiveInt(args.requests, "requests"));

const log = (...parts) => console.error(...parts);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const workDir = mkdtempSync(path.join(os.tmpdir(), "falcon-serve-bench-"));

// ------------------------------------------------------------------------------------------------
// Models

/** Our side's model: a keras-hub preset of the GGUF's source weights, with GPT-2's tokenizer. */
async function cachedServePreset(dtypeKey, source) {
  const directory = path.join(cacheDir, `serve-preset-${shapeName}-${DTYPES[dtypeKey].source}-seed${seed}-${await fingerprint(source)}`);
  if (existsSync(path.join(directory, "config.json"))) {
    log(`[${dtypeKey}] cached preset ${path.relative(process.cwd(), directory)}`);
    return directory;
  }
  log(`[${dtypeKey}] writing our preset ${path.relative(process.cwd(), directory)}`);
  const t0 = performance.now();
  await writeServePreset(source, directory);
  log(`[${dtypeKey}] wrote it in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return directory;
}

async function prepareModels(dtypeKey) {
  const label = `${pairingKey} ${dtypeKey}`;
  if (DTYPES[dtypeKey].ours === null) throw new Error(`--dtype ${dtypeKey} has no falcon-native counterpart here`);
  const { file, source } = await cachedFalconGguf({
    shapeName, pairingKey, dtypeKey, seed, vocabulary: "gpt2", log: (message) => log(`[${label}] ${message}`),
  });
  try {
    return { gguf: file, preset: await cachedServePreset(dtypeKey, source), oursDtype: DTYPES[dtypeKey].ours };
  } finally {
    source.dispose();
  }
}

/** Bytes of KV our engine needs per token: keys and values of every layer in the pool's dtype. */
function kvBytesPerToken() {
  const dtypeBytes = { float32: 4, bfloat16: 2, float16: 2 }[args["kv-cache-dtype"] ?? "float32"];
  if (dtypeBytes === undefined) throw new Error(`--kv-cache-dtype must be float32, bfloat16 or float16, got ${args["kv-cache-dtype"]}`);
  return shape.numLayers * 2 * shape.hiddenDim * dtypeBytes;
}

// ------------------------------------------------------------------------------------------------
// Servers

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function serverCommand(side, models, slots, port) {
  if (side === "ours") {
    const kvCacheBytes = Math.ceil(slots * (perSequenceTokens + 16) * kvBytesPerToken());
    return {
      command: process.execPath,
      commandArgs: [
        cli, "serve", models.preset, "--host", "127.0.0.1", "--port", String(port), "--model-name", MODEL_NAME, "--threads", String(threads),
        "--dtype", models.oursDtype, "--max-sequences", String(slots), "--kv-cache-bytes", String(kvCacheBytes),
        ...(args["kv-cache-dtype"] ? ["--kv-cache-dtype", args["kv-cache-dtype"]] : []),
      ],
    };
  }
  return {
    command: build.binaries["llama-server"],
    commandArgs: [
      "-m", models.gguf, "--host", "127.0.0.1", "--port", String(port), "--parallel", String(slots), "--cont-batching",
      "--threads", String(threads), "--threads-batch", String(threads), "-c", String(slots * perSequenceTokens),
      "--alias", MODEL_NAME, "--no-webui", "--cache-ram", "0",
    ],
  };
}

/** VmRSS of a process in bytes, or null once it is gone. */
function rssBytes(pid) {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function tail(file, lines = 20) {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/** Starts a server, waits for /health 200 (the model loaded), and warms it up with one short request. */
async function startServer(side, models, slots, tag) {
  const port = await freePort();
  const { command, commandArgs } = serverCommand(side, models, slots, port);
  const logFile = path.join(workDir, `${tag}-${side}.log`);
  const output = createWriteStream(logFile);
  const child = spawn(command, commandArgs, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(output);
  child.stderr.pipe(output);
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let exit = null;
  void exited.then((value) => { exit = value; });
  const baseUrl = `http://127.0.0.1:${port}`;
  const commandLine = [command === process.execPath ? "node" : path.relative(process.cwd(), command), ...commandArgs].join(" ");
  log(`  ${side}: ${commandLine}`);
  const t0 = performance.now();
  for (;;) {
    if (exit) throw new Error(`${side} exited (${JSON.stringify(exit)}) before it was ready; ${logFile} ends:\n${tail(logFile)}`);
    if (performance.now() - t0 > 600_000) {
      child.kill("SIGKILL");
      throw new Error(`${side} was not ready after 600 s; ${logFile} ends:\n${tail(logFile)}`);
    }
    const status = await fetch(`${baseUrl}/health`).then((r) => r.status, () => null);
    if (status === 200) break;
    await sleep(250);
  }
  const readySeconds = (performance.now() - t0) / 1000;
  const warmUp = await fetch(`${baseUrl}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL_NAME, prompt: Array.from({ length: 16 }, (_, i) => 1000 + i), max_tokens: 8, temperature: 0 }),
  });
  const warmUpBody = await warmUp.text();
  if (warmUp.status !== 200) throw new Error(`${side}: the warm-up request got HTTP ${warmUp.status}: ${warmUpBody.slice(0, 500)}`);
  return {
    side, baseUrl, pid: child.pid, logFile, commandLine, readySeconds,
    /** SIGTERM, then the exit status (SIGKILL after 60 s). */
    async stop() {
      if (exit) return exit;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

const CLOCK_TICKS = 100;  // USER_HZ of /proc/stat and /proc/PID/stat on Linux

/** Busy CPU seconds of the machine, of the server and of this process (the load generator), or null off Linux. */
function cpuSnapshot(pid) {
  try {
    const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);  // utime and stime: the 14th and 15th fields
    const self = process.cpuUsage();
    return {
      busy: (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, server: (fields[11] + fields[12]) / CLOCK_TICKS,
      generator: (self.user + self.system) / 1e6, wall: performance.now() / 1000,
    };
  } catch {
    return null;
  }
}

/** CPU shares (0..1 of the machine) of the server, the load generator and everything else between two snapshots. */
function cpuShares(from, to) {
  if (!from || !to) return null;
  const capacity = (to.wall - from.wall) * os.cpus().length;
  const server = to.server - from.server;
  const generator = to.generator - from.generator;
  return { server: server / capacity, loadGenerator: generator / capacity, otherProcesses: Math.max(0, (to.busy - from.busy - server - generator) / capacity) };
}

/** Samples a process's VmRSS every `everyMs` until stopped: { stop() → samples [{ seconds, bytes }] }. */
function sampleRss(pid, everyMs) {
  const samples = [];
  const t0 = performance.now();
  const take = () => {
    const bytes = rssBytes(pid);
    if (bytes !== null) samples.push({ seconds: (performance.now() - t0) / 1000, bytes });
  };
  take();
  const timer = setInterval(take, everyMs);
  return { stop() { clearInterval(timer); take(); return samples; } };
}

/** One load against one freshly started server. */
async function measure(side, models, load, tag) {
  const server = await startServer(side, models, load.slots, tag);
  let report;
  let rss;
  let cpu;
  try {
    const sampler = sampleRss(server.pid, 1000);
    const before = cpuSnapshot(server.pid);
    report = await runLoad({
      baseUrl: server.baseUrl, model: MODEL_NAME, mode: load.mode, requests: load.requests, durationSeconds,
      promptTokens, outputTokens, promptVocabulary: GPT2_ORDINARY_TOKENS, seed,
    });
    cpu = cpuShares(before, cpuSnapshot(server.pid));
    rss = sampler.stop();
  } finally {
    server.exit = await server.stop();
  }
  log(describeLoad(report).split("\n").map((line) => `  [${side}] ${line}`).join("\n"));
  if (cpu) log(`  [${side}] CPU: server ${(cpu.server * 100).toFixed(0)} %, load generator ${(cpu.loadGenerator * 100).toFixed(0)} %, other processes ${(cpu.otherProcesses * 100).toFixed(0)} % of the machine`);
  if (report.failed > 0) log(`  [${side}] server log: ${server.logFile}`);
  const { records, ...summary } = report;
  return {
    ...summary,
    failures: records.filter((r) => r.outcome === "failed").slice(0, 10),
    command: server.commandLine,
    readySeconds: server.readySeconds,
    peakRssBytes: Math.max(...rss.map((s) => s.bytes)),
    cpu,
    exit: server.exit,
    log: server.logFile,
  };
}

// ------------------------------------------------------------------------------------------------
// Comparison

function cpuModel() {
  const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"));
  return line ? line.split(":").slice(1).join(":").trim() : os.cpus()[0]?.model ?? "unknown";
}

const loadName = (load) => (load.mode.kind === "closed" ? `${load.mode.clients} clients` : `Poisson ${load.mode.ratePerSecond}/s (${load.slots} slots)`);

async function compare() {
  const loads = [
    ...clientCounts.map((clients) => ({ mode: { kind: "closed", clients }, slots: clients, requests: requestsFor(clients) })),
    ...rates.map((ratePerSecond) => ({ mode: { kind: "poisson", ratePerSecond }, slots: rateSlots, requests: requestsFor(rateSlots) })),
  ];
  const runs = [];
  for (const dtypeKey of dtypes) {
    const models = await prepareModels(dtypeKey);
    for (const [index, load] of loads.entries()) {
      // Alternate which server goes first, so drift in the machine's speed does not favour one side.
      const order = index % 2 === 0 ? ["ours", "llama-server"] : ["llama-server", "ours"];
      log(`[${dtypeKey}] ${loadName(load)}, ${load.requests} requests (${order.join(" then ")})`);
      const results = {};
      for (const side of order) results[side] = await measure(side, models, load, `${dtypeKey}-${index}`);
      runs.push({ dtype: dtypeKey, oursDtype: models.oursDtype, load: loadName(load), mode: load.mode, slots: load.slots, requests: load.requests, ours: results.ours, llamaServer: results["llama-server"] });
    }
  }
  return runs;
}

/** The issue's targets at 16 clients: output tokens/s ≥ 1.5× llama-server, p99 TTFT ≤ llama-server's, no failures. */
function targets(runs) {
  return runs.filter((r) => r.mode.kind === "closed" && r.mode.clients === 16).map((r) => ({
    dtype: r.dtype,
    throughputRatio: r.ours.outputTokensPerSecond / r.llamaServer.outputTokensPerSecond,
    throughputMet: r.ours.outputTokensPerSecond >= 1.5 * r.llamaServer.outputTokensPerSecond,
    p99TtftMs: { ours: r.ours.ttftMs?.p99 ?? null, llamaServer: r.llamaServer.ttftMs?.p99 ?? null },
    p99TtftMet: r.ours.ttftMs !== null && r.llamaServer.ttftMs !== null && r.ours.ttftMs.p99 <= r.llamaServer.ttftMs.p99,
    failures: r.ours.failed,
    failuresMet: r.ours.failed === 0,
  }));
}

const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}×` : "—");
const ms = (p, key) => (p ? p[key].toFixed(0) : "—");
const share = (cpu) => (cpu ? `${(cpu.otherProcesses * 100).toFixed(0)} %` : "—");

function printTable(report) {
  console.log(`falcon-native serve vs llama-server (llama.cpp ${report.llamaCpp.release}, ${report.llamaCpp.commit.slice(0, 12)}), ` +
    `${report.machine.cpu}, ${report.machine.logicalCpus} CPUs, ${threads} threads, our ISA ${report.machine.oursIsa}`);
  console.log(`model: ${shapeName} (llama.cpp bloom); prompts ${promptTokens.join("–")} tokens, outputs ${outputTokens.join("–")} tokens (ignore_eos), ` +
    `temperature 0, at most ${durationSeconds} s per load`);
  console.log("");
  console.log("| dtype | load | output tok/s ours / llama (ratio) | req/s ours / llama | TTFT p50 / p99 ms ours | llama | ITL p50 / p99 ms ours | llama | failed ours / llama | peak RSS GiB ours / llama | other processes' CPU ours / llama |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const r of report.runs) {
    const [o, l] = [r.ours, r.llamaServer];
    const dtype = `${r.dtype} (ours ${r.oursDtype})`;
    console.log(`| ${dtype} | ${r.load} | ${o.outputTokensPerSecond.toFixed(1)} / ${l.outputTokensPerSecond.toFixed(1)} (${ratio(o.outputTokensPerSecond, l.outputTokensPerSecond)}) | ` +
      `${o.requestsPerSecond.toFixed(3)} / ${l.requestsPerSecond.toFixed(3)} | ${ms(o.ttftMs, "p50")} / ${ms(o.ttftMs, "p99")} | ${ms(l.ttftMs, "p50")} / ${ms(l.ttftMs, "p99")} | ` +
      `${ms(o.itlMs, "p50")} / ${ms(o.itlMs, "p99")} | ${ms(l.itlMs, "p50")} / ${ms(l.itlMs, "p99")} | ${o.failed} / ${l.failed} | ` +
      `${(o.peakRssBytes / 2 ** 30).toFixed(2)} / ${(l.peakRssBytes / 2 ** 30).toFixed(2)} | ${share(o.cpu)} / ${share(l.cpu)} |`);
  }
  for (const r of report.runs) {
    const [o, l] = [r.ours, r.llamaServer];
    if (o.completed === o.started && l.completed === l.started && o.usagePromptTokens !== l.usagePromptTokens) {
      console.log(`\nwarning: ${r.dtype} ${r.load}: the servers counted different prompt tokens (ours ${o.usagePromptTokens}, llama-server ${l.usagePromptTokens})`);
    }
  }
  const unfinished = report.runs.filter((r) => r.ours.unfinished + r.llamaServer.unfinished > 0);
  if (unfinished.length > 0) console.log(`\nunfinished at the time bound: ${unfinished.map((r) => `${r.dtype} ${r.load}: ours ${r.ours.unfinished}, llama ${r.llamaServer.unfinished}`).join("; ")}`);
  console.log("");
  for (const t of report.targets) {
    const mark = (met) => (met ? "met" : "MISSED");
    console.log(`target ${t.dtype}, 16 clients: output tokens/s ${t.throughputRatio.toFixed(2)}× (≥ 1.5×: ${mark(t.throughputMet)}); ` +
      `p99 TTFT ${t.p99TtftMs.ours?.toFixed(0)} vs ${t.p99TtftMs.llamaServer?.toFixed(0)} ms (${mark(t.p99TtftMet)}); failed ${t.failures} (${mark(t.failuresMet)})`);
  }
  if (report.targets.length === 0) console.log("(no 16-client load in this run: the issue's targets are not evaluated)");
}

// ------------------------------------------------------------------------------------------------
// Soak

/** A gauge's value(s) from Prometheus text: { labels → value }. */
function metricValues(text, name) {
  const values = {};
  for (const line of text.split("\n")) {
    const match = new RegExp(`^${name}(\\{[^}]*\\})?\\s+(\\S+)$`).exec(line);
    if (match) values[match[1] ?? ""] = Number(match[2]);
  }
  return values;
}

async function soak() {
  const dtypeKey = dtypes[0];
  const models = await prepareModels(dtypeKey);
  log(`[soak] ${dtypeKey}: ${soakClients} clients for ${soakSeconds} s against our server, disconnect probability ${disconnect}`);
  const server = await startServer("ours", models, soakClients, "soak");
  let report;
  let samples;
  let after = null;
  try {
    const sampler = sampleRss(server.pid, 2000);
    report = await runLoad({
      baseUrl: server.baseUrl, model: MODEL_NAME, mode: { kind: "closed", clients: soakClients }, requests: 1_000_000,
      durationSeconds: soakSeconds, promptTokens, outputTokens, promptVocabulary: GPT2_ORDINARY_TOKENS, seed,
      disconnectProbability: disconnect,
    });
    samples = sampler.stop();
    // Cancelled sequences are freed within a step; give the last ones a moment, then read the gauges.
    await sleep(2000);
    const metrics = await fetch(`${server.baseUrl}/metrics`).then((r) => r.text()).catch((error) => `unavailable: ${error.message}`);
    const check = await fetch(`${server.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL_NAME, prompt: [1, 2, 3, 4], max_tokens: 4, temperature: 0 }),
    }).then(async (r) => ({ status: r.status, body: (await r.text()).slice(0, 300) }), (error) => ({ status: null, body: error.message }));
    after = {
      runningSequences: metricValues(metrics, "falcon_running_sequences"),
      kvBlocks: metricValues(metrics, "falcon_kv_blocks"),
      queueDepth: metricValues(metrics, "falcon_queue_depth"),
      requestAfterSoak: check,
    };
  } finally {
    server.exit = await server.stop();
  }
  const steady = samples.filter((s) => s.seconds >= warmUpSeconds).map((s) => s.bytes);
  const rssAfterWarmUp = steady.length > 0 ? {
    samples: steady.length, first: steady[0], last: steady[steady.length - 1], min: Math.min(...steady), max: Math.max(...steady),
    spread: Math.max(...steady) / Math.min(...steady) - 1,
  } : null;
  const { records, ...summary } = report;
  return {
    dtype: dtypeKey, oursDtype: models.oursDtype, clients: soakClients, seconds: soakSeconds, disconnectProbability: disconnect,
    command: server.commandLine, exit: server.exit, log: server.logFile,
    load: { ...summary, failures: records.filter((r) => r.outcome === "failed").slice(0, 20) },
    warmUpSeconds, rssSamples: samples, rssAfterWarmUp, after,
    targets: {
      noUncancelledFailures: report.failed === 0,
      rssFlatWithin5Percent: rssAfterWarmUp !== null && rssAfterWarmUp.spread <= 0.05,
    },
  };
}

function printSoak(s) {
  const gib = (b) => (b / 2 ** 30).toFixed(3);
  console.log(`soak: falcon-native serve, ${s.dtype} (ours ${s.oursDtype}), ${s.clients} clients, ${s.seconds} s, disconnect probability ${s.disconnectProbability}`);
  console.log(describeLoad({ ...s.load, records: [] }));
  if (s.rssAfterWarmUp) {
    const r = s.rssAfterWarmUp;
    console.log(`RSS after ${s.warmUpSeconds.toFixed(0)} s of warm-up (${r.samples} samples): first ${gib(r.first)} GiB, last ${gib(r.last)}, ` +
      `min ${gib(r.min)}, max ${gib(r.max)}: spread ${(r.spread * 100).toFixed(2)} % (≤ 5 %: ${s.targets.rssFlatWithin5Percent ? "met" : "MISSED"})`);
  }
  console.log(`failed requests that were not cancelled: ${s.load.failed} (0: ${s.targets.noUncancelledFailures ? "met" : "MISSED"})`);
  if (s.after) {
    console.log(`afterwards: running sequences ${JSON.stringify(s.after.runningSequences)}, KV blocks ${JSON.stringify(s.after.kvBlocks)}, ` +
      `a normal request: HTTP ${s.after.requestAfterSoak.status}`);
  }
  console.log(`server exit: ${JSON.stringify(s.exit)}; log: ${s.log}`);
}

// ------------------------------------------------------------------------------------------------
// Main

// The soak runs our server alone: it needs no llama.cpp build.
const build = soakSeconds === null || args["build-only"] ? ensureLlamaBuild({ jobs, log }) : null;
if (args["build-only"]) process.exit(0);
if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npx tsc -p .\` first`);

const machine = { cpu: cpuModel(), logicalCpus: os.cpus().length, threads, oursIsa: runtimeInfo().isa };
const model = { shape: shapeName, ...shape, pairing: PAIRINGS[pairingKey].name, seed, tokenizer: "GPT-2 byte-level BPE (50257 tokens)" };
let report;
if (soakSeconds !== null) {
  report = { tool: "serve-bench soak", machine, model, soak: await soak() };
  printSoak(report.soak);
} else {
  const llamaCpp = { source: "node-llama-cpp's gitRelease.bundle", release: llamaCppInfo().tag, commit: build.commit, buildSeconds: build.buildSeconds };
  const settings = { promptTokens, outputTokens, durationSeconds, threads, perSequenceTokens, kvCacheDtype: args["kv-cache-dtype"] ?? null };
  const runs = await compare();
  report = { tool: "serve-bench", machine, llamaCpp, model, settings, runs, targets: targets(runs) };
  if (!args.json) printTable(report);
}
if (args.out) writeFileSync(args.out, JSON.stringify(report, null, 2));
if (args.json) console.log(JSON.stringify(report, null, 2));
log(`server logs: ${workDir}`);
