/**
 * A load generator for OpenAI-compatible servers (ours, llama.cpp's llama-server): streaming
 * `POST /v1/completions` requests with token-id prompts, on loopback only, bounded both in request
 * count and in wall time. Used by `npm run bench:serve` (bench/compare/serve-bench.mjs) and runnable alone:
 *
 *   node dist/bench/serve-load.js --url http://127.0.0.1:8080 [--api-key KEY] [--model falcon]
 *        (--clients 16 | --rate 2) [--requests 64] [--duration 120] [--prompt-tokens 64-512]
 *        [--output-tokens 32-256] [--prompt-vocabulary 50256] [--disconnect 0] [--seed 0] [--json]
 *
 * Load. Closed loop: N clients, each sending its next request when the last one ends. Open loop: a
 * Poisson arrival process (exponential gaps of mean 1/rate), each request sent at its arrival time
 * however many are in flight. Request i is the same in every run with the same seed (prompt length,
 * prompt ids, max_tokens), whatever the mode, so two servers get identical work. Requests ask for
 * `ignore_eos` (both servers accept it), so every completion runs to max_tokens, and temperature 0.
 *
 * Bounds. No request starts after `durationSeconds`; at that moment requests still in flight are
 * aborted and counted as unfinished (their tokens so far still count). With `disconnectProbability`,
 * a request is aborted on purpose after a random number of text chunks (0: right after the response
 * headers, during prefill): counted as cancelled, never as failed.
 *
 * Measures per request: time to first token (request sent → first chunk with text), inter-token
 * latency (gaps between successive chunks with text: a server that holds back a partial UTF-8
 * character sends two tokens in one chunk, so a gap can span more than one token), output tokens (the
 * final `usage` chunk, asked for with stream_options.include_usage; the count of text chunks when the
 * stream was cut), and why it failed. A failure: a status other than 200, a network error, an `error`
 * object in the stream, a malformed chunk, or a stream that ends without `data: [DONE]`.
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

import { seededRandom } from "../test/helpers/seeded-random.js";

export type LoadMode = { kind: "closed"; clients: number } | { kind: "poisson"; ratePerSecond: number };

export interface LoadOptions {
  /** Server root, e.g. http://127.0.0.1:8080 (loopback only). */
  baseUrl: string;
  apiKey?: string;
  /** The `model` field of every request (default "falcon"). */
  model?: string;
  mode: LoadMode;
  /** Requests sent at most. */
  requests: number;
  /** Wall-time bound: no request starts after it, and the ones in flight are aborted then. */
  durationSeconds: number;
  /** Inclusive ranges, drawn uniformly per request. */
  promptTokens?: readonly [number, number];
  outputTokens?: readonly [number, number];
  /** Prompt ids are drawn from 0 .. promptVocabulary - 1 (keep special tokens out). */
  promptVocabulary: number;
  seed?: number;
  /** Chance that a request is aborted on purpose mid-stream (the soak's disconnects). */
  disconnectProbability?: number;
}

export type RequestOutcome = "ok" | "failed" | "cancelled" | "unfinished";

export interface RequestRecord {
  index: number;
  promptTokens: number;
  maxTokens: number;
  outcome: RequestOutcome;
  /** Milliseconds from the start of the run. */
  startMs: number;
  endMs: number;
  /** Milliseconds from sending the request to its first chunk with text; null if none came. */
  ttftMs: number | null;
  /** Gaps between successive chunks with text, milliseconds. */
  itlMs: number[];
  /** Completion tokens: the usage chunk's count, else the text chunks received. */
  outputTokens: number;
  usage: { promptTokens: number; completionTokens: number } | null;
  finishReason: string | null;
  status: number | null;
  error: string | null;
}

export interface Percentiles {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface LoadReport {
  baseUrl: string;
  mode: LoadMode;
  seed: number;
  requestsPlanned: number;
  durationSeconds: number;
  promptTokenRange: readonly [number, number];
  outputTokenRange: readonly [number, number];
  disconnectProbability: number;
  started: number;
  completed: number;
  failed: number;
  cancelled: number;
  unfinished: number;
  /** Completed requests that stopped before max_tokens (the server ignored ignore_eos or capped the length). */
  short: number;
  /** From the first request sent to the last one ended. */
  wallSeconds: number;
  outputTokens: number;
  /** Prompt tokens the server counted (usage chunks): the same load must give the same sum on every server. */
  usagePromptTokens: number;
  outputTokensPerSecond: number;
  /** Completed requests per second. */
  requestsPerSecond: number;
  ttftMs: Percentiles | null;
  itlMs: Percentiles | null;
  /** Distinct failure messages with their counts. */
  errors: { message: string; count: number }[];
  records: RequestRecord[];
}

export const DEFAULT_PROMPT_TOKENS: readonly [number, number] = [64, 512];
export const DEFAULT_OUTPUT_TOKENS: readonly [number, number] = [32, 256];
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** Linear interpolation between closest ranks (numpy's default); `sorted` ascending and non-empty. */
export function percentile(sorted: readonly number[], q: number): number {
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (position - below);
}

export function percentiles(values: readonly number[]): Percentiles | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    mean: sorted.reduce((sum, v) => sum + v, 0) / sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1]!,
  };
}

interface PlannedRequest {
  index: number;
  prompt: number[];
  maxTokens: number;
  /** Abort after this many text chunks (0: once the headers are in); null: never. */
  disconnectAfterChunks: number | null;
}

const uniformInt = (random: () => number, [low, high]: readonly [number, number]) => low + Math.floor(random() * (high - low + 1));

/** Request i depends only on the seed and i, so every mode and every server gets the same request i. */
export function planRequest(index: number, options: Required<Pick<LoadOptions, "promptTokens" | "outputTokens" | "promptVocabulary" | "seed" | "disconnectProbability">>): PlannedRequest {
  const random = seededRandom(Math.imul(options.seed + 1, 0x9e3779b1) ^ index);
  const promptLength = uniformInt(random, options.promptTokens);
  const maxTokens = uniformInt(random, options.outputTokens);
  const prompt = Array.from({ length: promptLength }, () => Math.floor(random() * options.promptVocabulary));
  const disconnect = options.disconnectProbability > 0 && random() < options.disconnectProbability;
  return { index, prompt, maxTokens, disconnectAfterChunks: disconnect ? Math.floor(random() * maxTokens) : null };
}

function checkRange(range: readonly [number, number], name: string): void {
  if (!Number.isInteger(range[0]) || !Number.isInteger(range[1]) || range[0] < 1 || range[1] < range[0]) {
    throw new Error(`${name} must be a range of positive integers low-high, got ${range.join("-")}`);
  }
}

function checkOptions(options: LoadOptions): void {
  const url = new URL(options.baseUrl);
  if (!LOOPBACK_HOSTS.has(url.hostname)) throw new Error(`the load generator runs on loopback only, got host ${url.hostname}`);
  if (!Number.isInteger(options.requests) || options.requests < 1) throw new Error(`requests must be a positive integer, got ${options.requests}`);
  if (!(options.durationSeconds > 0)) throw new Error(`durationSeconds must be positive, got ${options.durationSeconds}`);
  if (options.mode.kind === "closed" && (!Number.isInteger(options.mode.clients) || options.mode.clients < 1)) {
    throw new Error(`clients must be a positive integer, got ${options.mode.clients}`);
  }
  if (options.mode.kind === "poisson" && !(options.mode.ratePerSecond > 0)) {
    throw new Error(`the arrival rate must be positive, got ${options.mode.ratePerSecond}`);
  }
  if (!Number.isInteger(options.promptVocabulary) || options.promptVocabulary < 1) {
    throw new Error(`promptVocabulary must be a positive integer, got ${options.promptVocabulary}`);
  }
  const p = options.disconnectProbability ?? 0;
  if (!(p >= 0 && p <= 1)) throw new Error(`disconnectProbability must be in [0, 1], got ${p}`);
}

/** Why a stream chunk is unusable, or null: its JSON parsed, without an `error` member. */
function chunkProblem(chunk: unknown): string | null {
  if (typeof chunk !== "object" || chunk === null) return "a stream chunk is not a JSON object";
  const error = (chunk as { error?: unknown }).error;
  if (error !== undefined) {
    const message = typeof error === "object" && error !== null ? (error as { message?: unknown }).message : error;
    return `error in the stream: ${String(message)}`;
  }
  return null;
}

/** The summed `text` of a completion chunk's choices, its finish_reason, and its usage if any. */
function readChunk(chunk: Record<string, unknown>) {
  let text = "";
  let finishReason: string | null = null;
  const choices = Array.isArray(chunk["choices"]) ? chunk["choices"] as Record<string, unknown>[] : [];
  for (const choice of choices) {
    if (typeof choice?.["text"] === "string") text += choice["text"];
    if (typeof choice?.["finish_reason"] === "string") finishReason = choice["finish_reason"];
  }
  const usage = chunk["usage"] as Record<string, unknown> | null | undefined;
  const counts = usage && typeof usage["completion_tokens"] === "number" && typeof usage["prompt_tokens"] === "number"
    ? { promptTokens: usage["prompt_tokens"], completionTokens: usage["completion_tokens"] } : null;
  return { text, finishReason, usage: counts };
}

class StreamCut extends Error {}

/** Sends one request and follows its stream to the end, the run's deadline or its planned disconnect. */
async function sendRequest(plan: PlannedRequest, options: LoadOptions, runStart: number, deadline: AbortSignal): Promise<RequestRecord> {
  const record: RequestRecord = {
    index: plan.index, promptTokens: plan.prompt.length, maxTokens: plan.maxTokens, outcome: "ok",
    startMs: performance.now() - runStart, endMs: 0, ttftMs: null, itlMs: [], outputTokens: 0,
    usage: null, finishReason: null, status: null, error: null,
  };
  const sentAt = performance.now();
  const disconnect = new AbortController();
  const signal = AbortSignal.any([deadline, disconnect.signal]);
  let textChunks = 0;
  let lastTextAt = 0;
  let sawDone = false;
  const cutIfPlanned = () => {
    if (plan.disconnectAfterChunks !== null && textChunks >= plan.disconnectAfterChunks) {
      disconnect.abort();
      throw new StreamCut();
    }
  };
  try {
    const response = await fetch(new URL("/v1/completions", options.baseUrl), {
      method: "POST",
      signal,
      headers: {
        "content-type": "application/json",
        ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
      },
      body: JSON.stringify({
        model: options.model ?? "falcon",
        prompt: plan.prompt,
        max_tokens: plan.maxTokens,
        temperature: 0,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    record.status = response.status;
    if (response.status !== 200 || response.body === null) {
      const body = await response.text().catch(() => "");
      throw new Error(`HTTP ${response.status}: ${body.slice(0, 300)}`);
    }
    cutIfPlanned();
    const decoder = new TextDecoder();
    let pending = "";
    for await (const bytes of response.body as AsyncIterable<Uint8Array>) {
      pending += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = pending.search(/\r?\n\r?\n/)) >= 0) {
        const event = pending.slice(0, end);
        pending = pending.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart()).join("\n");
        if (data === "") continue;
        if (sawDone) throw new Error("data after data: [DONE]");
        if (data === "[DONE]") {
          sawDone = true;
          continue;
        }
        let chunk: unknown;
        try {
          chunk = JSON.parse(data);
        } catch {
          throw new Error(`a stream chunk is not JSON: ${data.slice(0, 200)}`);
        }
        const problem = chunkProblem(chunk);
        if (problem) throw new Error(problem);
        const { text, finishReason, usage } = readChunk(chunk as Record<string, unknown>);
        if (usage) record.usage = usage;
        if (finishReason) record.finishReason = finishReason;
        if (text === "") continue;
        const now = performance.now();
        if (record.ttftMs === null) record.ttftMs = now - sentAt;
        else record.itlMs.push(now - lastTextAt);
        lastTextAt = now;
        textChunks++;
        cutIfPlanned();
      }
    }
    if (!sawDone) throw new Error("the stream ended without data: [DONE]");
  } catch (error) {
    if (error instanceof StreamCut || disconnect.signal.aborted) {
      record.outcome = "cancelled";
    } else if (deadline.aborted) {
      record.outcome = "unfinished";
    } else {
      record.outcome = "failed";
      record.error = describeError(error);
    }
  }
  record.outputTokens = record.usage?.completionTokens ?? textChunks;
  record.endMs = performance.now() - runStart;
  return record;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch reports network failures as "fetch failed" with the reason in `cause`.
  const cause = error.cause instanceof Error ? `: ${(error.cause as NodeJS.ErrnoException).code ?? error.cause.message}` : "";
  return `${error.message}${cause}`;
}

/** Runs the load and summarizes it. Never throws for what a server does: every failure is in the report. */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  checkOptions(options);
  const settings = {
    promptTokens: options.promptTokens ?? DEFAULT_PROMPT_TOKENS,
    outputTokens: options.outputTokens ?? DEFAULT_OUTPUT_TOKENS,
    promptVocabulary: options.promptVocabulary,
    seed: options.seed ?? 0,
    disconnectProbability: options.disconnectProbability ?? 0,
  };
  checkRange(settings.promptTokens, "promptTokens");
  checkRange(settings.outputTokens, "outputTokens");
  const deadline = new AbortController();
  const runStart = performance.now();
  const timer = setTimeout(() => deadline.abort(), options.durationSeconds * 1000);
  const records: RequestRecord[] = [];
  let next = 0;
  const take = (): PlannedRequest | null => (next < options.requests && !deadline.signal.aborted ? planRequest(next++, settings) : null);
  try {
    if (options.mode.kind === "closed") {
      await Promise.all(Array.from({ length: options.mode.clients }, async () => {
        for (let plan = take(); plan !== null; plan = take()) records.push(await sendRequest(plan, options, runStart, deadline.signal));
      }));
    } else {
      const arrivals = seededRandom(settings.seed ^ 0x5bd1e995);
      const inFlight: Promise<void>[] = [];
      let arrivalMs = 0;
      for (let plan = take(); plan !== null; plan = take()) {
        const wait = arrivalMs - (performance.now() - runStart);
        if (wait > 0 && !(await sleepUnlessAborted(wait, deadline.signal))) break;
        const sent = plan;
        inFlight.push(sendRequest(sent, options, runStart, deadline.signal).then((record) => { records.push(record); }));
        arrivalMs += (-Math.log(1 - arrivals()) / options.mode.ratePerSecond) * 1000;
      }
      await Promise.all(inFlight);
    }
  } finally {
    clearTimeout(timer);
  }
  records.sort((a, b) => a.index - b.index);
  return summarizeLoad(options, settings, records);
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function summarizeLoad(
  options: LoadOptions,
  settings: { promptTokens: readonly [number, number]; outputTokens: readonly [number, number]; seed: number; disconnectProbability: number },
  records: RequestRecord[],
): LoadReport {
  const count = (outcome: RequestOutcome) => records.filter((r) => r.outcome === outcome).length;
  const first = Math.min(...records.map((r) => r.startMs));
  const last = Math.max(...records.map((r) => r.endMs));
  const wallSeconds = records.length > 0 ? (last - first) / 1000 : 0;
  const outputTokens = records.reduce((sum, r) => sum + r.outputTokens, 0);
  const completed = count("ok");
  const errors = new Map<string, number>();
  for (const r of records) if (r.error !== null) errors.set(r.error, (errors.get(r.error) ?? 0) + 1);
  return {
    baseUrl: options.baseUrl,
    mode: options.mode,
    seed: settings.seed,
    requestsPlanned: options.requests,
    durationSeconds: options.durationSeconds,
    promptTokenRange: settings.promptTokens,
    outputTokenRange: settings.outputTokens,
    disconnectProbability: settings.disconnectProbability,
    started: records.length,
    completed,
    failed: count("failed"),
    cancelled: count("cancelled"),
    unfinished: count("unfinished"),
    short: records.filter((r) => r.outcome === "ok" && r.outputTokens < r.maxTokens).length,
    wallSeconds,
    outputTokens,
    usagePromptTokens: records.reduce((sum, r) => sum + (r.usage?.promptTokens ?? 0), 0),
    outputTokensPerSecond: wallSeconds > 0 ? outputTokens / wallSeconds : 0,
    requestsPerSecond: wallSeconds > 0 ? completed / wallSeconds : 0,
    ttftMs: percentiles(records.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs]))),
    itlMs: percentiles(records.flatMap((r) => r.itlMs)),
    errors: [...errors].map(([message, n]) => ({ message, count: n })).sort((a, b) => b.count - a.count),
    records,
  };
}

const fixed = (value: number | undefined, digits = 1) => (value === undefined ? "—" : value.toFixed(digits));

/** One human-readable paragraph of a report. */
export function describeLoad(report: LoadReport): string {
  const mode = report.mode.kind === "closed" ? `${report.mode.clients} clients (closed loop)` : `Poisson ${report.mode.ratePerSecond} req/s (open loop)`;
  const lines = [
    `${report.baseUrl}: ${mode}, ${report.started}/${report.requestsPlanned} requests started in ${report.wallSeconds.toFixed(1)} s`,
    `  completed ${report.completed}, failed ${report.failed}, cancelled ${report.cancelled}, unfinished ${report.unfinished}, short ${report.short}`,
    `  output ${report.outputTokens} tokens: ${report.outputTokensPerSecond.toFixed(2)} tokens/s, ${report.requestsPerSecond.toFixed(3)} requests/s`,
    `  TTFT ms p50 ${fixed(report.ttftMs?.p50)} p90 ${fixed(report.ttftMs?.p90)} p99 ${fixed(report.ttftMs?.p99)}; ` +
      `ITL ms p50 ${fixed(report.itlMs?.p50)} p90 ${fixed(report.itlMs?.p90)} p99 ${fixed(report.itlMs?.p99)}`,
  ];
  for (const { message, count } of report.errors.slice(0, 5)) lines.push(`  error ×${count}: ${message}`);
  return lines.join("\n");
}

function parseRange(text: string, name: string): [number, number] {
  const match = /^(\d+)(?:-(\d+))?$/.exec(text.trim());
  if (!match) throw new Error(`--${name} must be N or LOW-HIGH, got ${text}`);
  const low = Number(match[1]);
  return [low, match[2] === undefined ? low : Number(match[2])];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      "api-key": { type: "string" },
      model: { type: "string", default: "falcon" },
      clients: { type: "string" },
      rate: { type: "string" },
      requests: { type: "string", default: "64" },
      duration: { type: "string", default: "120" },
      "prompt-tokens": { type: "string", default: DEFAULT_PROMPT_TOKENS.join("-") },
      "output-tokens": { type: "string", default: DEFAULT_OUTPUT_TOKENS.join("-") },
      "prompt-vocabulary": { type: "string", default: "50256" },
      disconnect: { type: "string", default: "0" },
      seed: { type: "string", default: "0" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help || values.url === undefined || (values.clients === undefined) === (values.rate === undefined)) {
    console.log("usage: node dist/bench/serve-load.js --url http://127.0.0.1:PORT (--clients N | --rate R) [--requests 64] [--duration 120]\n" +
      "  [--api-key KEY] [--model falcon] [--prompt-tokens 64-512] [--output-tokens 32-256] [--prompt-vocabulary 50256]\n" +
      "  [--disconnect P] [--seed 0] [--json]");
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const report = await runLoad({
    baseUrl: values.url,
    apiKey: values["api-key"] ?? process.env["FALCON_API_KEY"],
    model: values.model,
    mode: values.clients !== undefined ? { kind: "closed", clients: Number(values.clients) } : { kind: "poisson", ratePerSecond: Number(values.rate) },
    requests: Number(values.requests),
    durationSeconds: Number(values.duration),
    promptTokens: parseRange(values["prompt-tokens"]!, "prompt-tokens"),
    outputTokens: parseRange(values["output-tokens"]!, "output-tokens"),
    promptVocabulary: Number(values["prompt-vocabulary"]),
    disconnectProbability: Number(values.disconnect),
    seed: Number(values.seed),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : describeLoad(report));
  if (report.failed > 0) process.exitCode = 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await main();
