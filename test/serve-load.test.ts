/**
 * bench/serve-load.ts, the load generator of `npm run bench:serve`, against a scripted SSE server on
 * loopback: what it measures (time to first token, gaps, tokens), how it counts failures, cancels
 * and unfinished requests, and that it stops by itself at its request count and its wall time.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import { percentile, percentiles, planRequest, runLoad, type LoadOptions } from "../bench/serve-load.js";
import { gpt2GgufVocabulary, GPT2_ORDINARY_TOKENS } from "../bench/serve-model.js";
import { END_OF_TEXT, END_OF_TEXT_ID, gpt2Vocabulary } from "./helpers/gpt2-vocab.js";

interface CompletionBody {
  prompt: number[];
  max_tokens: number;
  ignore_eos: boolean;
  stream: boolean;
  stream_options: { include_usage: boolean };
  temperature: number;
  model: string;
}

/** How the scripted server answers one request. */
type Script = (body: CompletionBody, res: ServerResponse, req: IncomingMessage) => Promise<void> | void;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const send = (res: ServerResponse, chunk: unknown) => res.write(`data: ${JSON.stringify(chunk)}\n\n`);

/** Waits until `condition` holds (a busy machine delays the server's close events), at most 10 s. */
async function eventually(condition: () => boolean): Promise<void> {
  for (const started = performance.now(); !condition() && performance.now() - started < 10_000;) await sleep(10);
}

/**
 * Streams max_tokens one-character chunks `gapMs` apart after `firstMs`, then (after `lastMs`) finish,
 * usage and [DONE].
 */
function streamCompletion(firstMs: number, gapMs: number, lastMs = 0): Script {
  return async (body, res, req) => {
    let closed = false;
    let wake = () => {};
    req.socket.on("close", () => { closed = true; wake(); });
    // Stop waiting once the client is gone, so no timer outlives the test.
    const wait = (ms: number) => new Promise<void>((resolve) => {
      if (closed) return resolve();
      const timer = setTimeout(resolve, ms);
      wake = () => { clearTimeout(timer); resolve(); };
    });
    res.writeHead(200, { "content-type": "text/event-stream" });
    await wait(firstMs);
    for (let i = 0; i < body.max_tokens && !closed; i++) {
      if (i > 0) await wait(gapMs);
      send(res, { object: "text_completion", choices: [{ index: 0, text: "x", finish_reason: null }] });
    }
    if (lastMs > 0) await wait(lastMs);
    if (closed) return;
    send(res, { choices: [{ index: 0, text: "", finish_reason: "length" }] });
    send(res, { choices: [], usage: { prompt_tokens: body.prompt.length, completion_tokens: body.max_tokens } });
    res.end("data: [DONE]\n\n");
  };
}

describe("serve-load", () => {
  let server: Server;
  let baseUrl: string;
  let script: Script = streamCompletion(0, 0);
  let active = 0;
  let maxActive = 0;
  let bodies: CompletionBody[] = [];
  let clientClosedEarly = 0;

  before(async () => {
    server = createServer((req, res) => {
      let text = "";
      req.on("data", (bytes: Buffer) => { text += bytes.toString("utf8"); });
      req.on("end", () => {
        const body = JSON.parse(text) as CompletionBody;
        bodies.push(body);
        active++;
        maxActive = Math.max(maxActive, active);
        res.on("close", () => {
          active--;
          if (!res.writableFinished) clientClosedEarly++;
        });
        void Promise.resolve(script(body, res, req)).catch(() => res.destroy());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const reset = (next: Script) => {
    script = next;
    bodies = [];
    maxActive = 0;
    clientClosedEarly = 0;
  };
  const options = (overrides: Partial<LoadOptions>): LoadOptions => ({
    baseUrl, mode: { kind: "closed", clients: 2 }, requests: 4, durationSeconds: 20,
    promptTokens: [3, 6], outputTokens: [2, 5], promptVocabulary: 100, ...overrides,
  });

  it("percentiles interpolate between closest ranks, as numpy does", () => {
    assert.equal(percentile([1, 2, 3, 4], 0.5), 2.5);
    assert.ok(Math.abs(percentile([1, 2, 3, 4], 0.9) - 3.7) < 1e-12);
    assert.equal(percentile([7], 0.99), 7);
    const summary = percentiles([10, 0, 5])!;
    assert.deepEqual([summary.count, summary.mean, summary.p50, summary.max], [3, 5, 5, 10]);
    assert.equal(percentiles([]), null);
  });

  it("request i is the same for every run with the seed, and within its ranges", () => {
    const settings = { promptTokens: [64, 512] as const, outputTokens: [32, 256] as const, promptVocabulary: 50256, seed: 3, disconnectProbability: 0 };
    const lengths = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const plan = planRequest(i, settings);
      assert.deepEqual(planRequest(i, settings), plan);
      assert.ok(plan.prompt.length >= 64 && plan.prompt.length <= 512);
      assert.ok(plan.maxTokens >= 32 && plan.maxTokens <= 256);
      assert.ok(plan.prompt.every((id) => Number.isInteger(id) && id >= 0 && id < 50256));
      assert.equal(plan.disconnectAfterChunks, null);
      lengths.add(plan.prompt.length);
    }
    assert.ok(lengths.size > 100, "prompt lengths vary");
    assert.notDeepEqual(planRequest(0, { ...settings, seed: 4 }).prompt, planRequest(0, settings).prompt);
  });

  it("closed loop: N clients at most, every request streamed in full and measured", async () => {
    reset(streamCompletion(40, 15));
    const report = await runLoad(options({ mode: { kind: "closed", clients: 3 }, requests: 7 }));
    assert.equal(maxActive, 3);
    assert.equal(bodies.length, 7);
    for (const body of bodies) {
      assert.equal(body.stream, true);
      assert.equal(body.ignore_eos, true);
      assert.deepEqual(body.stream_options, { include_usage: true });
      assert.equal(body.temperature, 0);
    }
    assert.deepEqual([report.started, report.completed, report.failed, report.cancelled, report.unfinished, report.short], [7, 7, 0, 0, 0, 0]);
    const expectedTokens = report.records.reduce((sum, r) => sum + r.maxTokens, 0);
    assert.equal(report.outputTokens, expectedTokens);
    assert.equal(report.usagePromptTokens, bodies.reduce((sum, body) => sum + body.prompt.length, 0));
    for (const record of report.records) {
      assert.equal(record.finishReason, "length");
      assert.deepEqual(record.usage, { promptTokens: record.promptTokens, completionTokens: record.maxTokens });
      assert.equal(record.itlMs.length, record.maxTokens - 1);
      assert.ok(record.ttftMs! >= 35, `ttft ${record.ttftMs}`);
    }
    assert.ok(report.ttftMs!.p50 >= 35 && report.ttftMs!.p50 < 1000);
    assert.ok(report.itlMs!.p50 >= 10 && report.itlMs!.p50 < 500, `itl p50 ${report.itlMs!.p50}`);
    assert.ok(Math.abs(report.outputTokensPerSecond - report.outputTokens / report.wallSeconds) < 1e-9);
    assert.ok(Math.abs(report.requestsPerSecond - 7 / report.wallSeconds) < 1e-9);
  });

  it("counts what a server gets wrong as failures, with the reason, and keeps going", async () => {
    let n = 0;
    reset((body, res, req) => {
      const kind = n++ % 5;
      if (kind === 0) {
        res.writeHead(429, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "queue full" } }));
      } else if (kind === 1) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        send(res, { choices: [{ index: 0, text: "x", finish_reason: null }] });
        res.end();  // no [DONE]
      } else if (kind === 2) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        send(res, { error: { message: "boom" } });
        res.end("data: [DONE]\n\n");
      } else if (kind === 3) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end("data: {not json\n\ndata: [DONE]\n\n");
      } else {
        return streamCompletion(0, 0)(body, res, req);
      }
    });
    const report = await runLoad(options({ mode: { kind: "closed", clients: 1 }, requests: 10 }));
    assert.deepEqual([report.started, report.completed, report.failed], [10, 2, 8]);
    const messages = report.errors.map((e) => `${e.count} ${e.message}`).sort();
    assert.deepEqual(messages, [
      "2 a stream chunk is not JSON: {not json",
      "2 error in the stream: boom",
      "2 the stream ended without data: [DONE]",
      `2 HTTP 429: ${JSON.stringify({ error: { message: "queue full" } })}`,
    ].sort());
    assert.equal(report.records.find((r) => r.index === 0)!.status, 429);
  });

  it("a refused connection is a failure, not an exception", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const report = await runLoad(options({ baseUrl: `http://127.0.0.1:${port}`, requests: 2 }));
    assert.equal(report.failed, 2);
    assert.match(report.errors[0]!.message, /fetch failed: ECONNREFUSED/);
  });

  it("stops at its wall time: requests in flight are aborted and counted unfinished, not failed", async () => {
    reset(streamCompletion(0, 10_000));
    const started = performance.now();
    const report = await runLoad(options({ mode: { kind: "closed", clients: 2 }, requests: 100, durationSeconds: 0.5, outputTokens: [5, 5] }));
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds < 2, `took ${seconds} s`);
    assert.deepEqual([report.started, report.completed, report.failed, report.unfinished], [2, 0, 0, 2]);
    assert.equal(report.outputTokens, 2, "the one token each stream sent still counts");
    await eventually(() => clientClosedEarly === 2);
    assert.equal(clientClosedEarly, 2, "the server saw both connections close");
  });

  it("planned disconnects are cancelled requests, never failures, and the server sees them", async () => {
    // The stream's end waits (until the client leaves), so no request can finish before its planned cut.
    reset(streamCompletion(0, 5, 10_000));
    const report = await runLoad(options({ mode: { kind: "closed", clients: 4 }, requests: 12, outputTokens: [20, 30], disconnectProbability: 1 }));
    assert.deepEqual([report.started, report.completed, report.failed, report.cancelled], [12, 0, 0, 12]);
    for (const record of report.records) {
      const plan = planRequest(record.index, { promptTokens: [3, 6], outputTokens: [20, 30], promptVocabulary: 100, seed: 0, disconnectProbability: 1 });
      assert.equal(record.outputTokens, plan.disconnectAfterChunks, "cut after exactly its planned chunks");
    }
    await eventually(() => clientClosedEarly === 12);
    assert.equal(clientClosedEarly, 12);
  });

  it("open loop: requests arrive on a Poisson schedule regardless of the ones in flight", async () => {
    reset(streamCompletion(0, 100));
    const report = await runLoad(options({ mode: { kind: "poisson", ratePerSecond: 200 }, requests: 8, outputTokens: [3, 3] }));
    assert.deepEqual([report.started, report.completed, report.failed], [8, 8, 0]);
    assert.ok(maxActive >= 6, `arrivals did not wait for completions (at most ${maxActive} in flight)`);
    const starts = report.records.map((r) => r.startMs);
    assert.ok(Math.max(...starts) - Math.min(...starts) < 200, "8 arrivals at 200/s take well under the 200 ms one stream lasts");
  });

  it("runs on loopback only and checks its options", async () => {
    await assert.rejects(runLoad(options({ baseUrl: "http://10.0.0.1:8080" })), /loopback only/);
    await assert.rejects(runLoad(options({ requests: 0 })), /requests must be a positive integer/);
    await assert.rejects(runLoad(options({ promptTokens: [5, 2] })), /promptTokens must be a range/);
    await assert.rejects(runLoad(options({ mode: { kind: "poisson", ratePerSecond: 0 } })), /arrival rate must be positive/);
  });
});

describe("serve-model: the GGUF's GPT-2 vocabulary", () => {
  it("has one token per embedding row: GPT-2's in id order, then unused padding", () => {
    const vocabulary = gpt2GgufVocabulary(50304);
    const gpt2 = gpt2Vocabulary();
    assert.equal(vocabulary.tokens.length, 50304);
    assert.equal(vocabulary.tokenTypes.length, 50304);
    for (const [token, id] of Object.entries(gpt2.vocabulary)) assert.equal(vocabulary.tokens[id], token);
    assert.equal(vocabulary.tokens[END_OF_TEXT_ID], END_OF_TEXT);
    assert.equal(vocabulary.eosId, END_OF_TEXT_ID);
    assert.equal(vocabulary.tokenTypes[END_OF_TEXT_ID], 3);
    assert.equal(vocabulary.tokens[50303], "[PAD50303]");
    assert.ok(vocabulary.tokenTypes.subarray(50257).every((type) => type === 5));
    assert.ok(vocabulary.tokenTypes.subarray(0, END_OF_TEXT_ID).every((type) => type === 1));
    assert.equal(vocabulary.merges.length, gpt2.merges.length);
    assert.equal(vocabulary.merges[0], gpt2.merges[0]!.join(" "));
    assert.equal(vocabulary.pre, "gpt-2");
    assert.equal(GPT2_ORDINARY_TOKENS, END_OF_TEXT_ID);
    assert.throws(() => gpt2GgufVocabulary(50000), /more than the model's 50000 rows/);
  });
});
