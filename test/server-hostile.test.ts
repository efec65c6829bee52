/**
 * The server under hostile HTTP: malformed and mistyped bodies, unknown models and routes, requests too
 * long for the context, oversized bodies, slow clients, hundreds of abrupt disconnects mid-stream, bad
 * keys, a full queue, parameters the server does not implement. Each attack gets its status and an error
 * in OpenAI's shape naming the field at fault, and after each batch a normal request still succeeds.
 * At the end the engine holds nothing: no sequence running or waiting, no KV block in use.
 *
 * The model is a tiny random rotary Falcon with the real GPT-2 tokenizer (context 512).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { FalconCausalLM } from "../src/causal-lm.js";
import { FalconInputError } from "../src/errors.js";
import { createServer, type FalconServer, type RequestLogEntry } from "../src/server/server.js";
import { waitFor } from "./helpers/fake-engine.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { chatBody, completionBody, expectOpenAIError, postJson, RawClient, rawPost, sseData, untilEngineIdle } from "./helpers/server-http.js";
import { writeRandomTextCheckpoint } from "./helpers/text-model.js";

const KEY = "sk-hostile-test-key";
const AUTH = { authorization: `Bearer ${KEY}` };
const BODY_LIMIT = 16 * 1024;
const REQUEST_TIMEOUT_MS = 600;
const CONTEXT = 512;


let lm: FalconCausalLM;
let server: FalconServer;
let url: string;
let port: number;

before(async () => {
  const dir = makeTempDir("falcon-server-hostile-");
  writeRandomTextCheckpoint(dir);
  lm = await FalconCausalLM.fromPreset(dir);
  server = createServer(lm, { apiKey: KEY, bodyLimit: BODY_LIMIT, requestTimeoutMs: REQUEST_TIMEOUT_MS });
  ({ url, port } = await server.listen({ port: 0 }));
});

after(async () => {
  await server.close({ graceMs: 0 });
  lm.dispose();
});

/** A normal request of each endpoint, streamed and not, succeeds: the server keeps serving. */
async function assertServing(): Promise<void> {
  const plain = await postJson(`${url}/v1/completions`, completionBody(), AUTH);
  const text = await plain.text();
  assert.equal(plain.status, 200, text);
  const body = JSON.parse(text);
  assert.equal(body.choices[0].finish_reason, "length");
  assert.equal(body.usage.completion_tokens, 4);
  const streamed = await postJson(`${url}/v1/chat/completions`, chatBody({ stream: true }), AUTH);
  assert.equal(streamed.status, 200);
  const events = sseData(await streamed.text());
  assert.equal(events.at(-1), "[DONE]");
  assert.equal(JSON.parse(events.at(-2)!).choices[0].finish_reason, "length");
}

/** Sends `bytes` on a new connection and returns all the server sends until it closes the connection. */
async function exchange(bytes: string): Promise<string> {
  const client = await RawClient.connect(port);
  await client.write(bytes).catch(() => undefined);
  await client.closed;
  return client.received;
}

describe("server under hostile HTTP", () => {
  it("serves a normal request before any attack", assertServing);

  it("answers malformed and empty bodies with 400 in OpenAI's shape", async () => {
    for (const endpoint of ["/v1/completions", "/v1/chat/completions"]) {
      for (const body of ["{", "{\"model\": \"falcon\",}", "not json", "\"unterminated", "[1, 2", "{\"a\": NaN}", "\u0000"]) {
        await expectOpenAIError(await postJson(`${url}${endpoint}`, body, AUTH), 400, { param: null });
      }
      // Empty, with and without a JSON content type.
      await expectOpenAIError(await postJson(`${url}${endpoint}`, "", AUTH), 400);
      await expectOpenAIError(await fetch(`${url}${endpoint}`, { method: "POST", headers: AUTH }), 400);
      // Valid JSON that is not an object.
      for (const body of ["null", "[]", "42", "\"text\"", "true"]) {
        await expectOpenAIError(await postJson(`${url}${endpoint}`, body, AUTH), 400, { param: null });
      }
      // A prototype-pollution attempt is refused, not merged.
      await expectOpenAIError(await postJson(`${url}${endpoint}`, '{"model":"falcon","prompt":"x","messages":[],"__proto__":{"admin":true}}', AUTH), 400);
    }
    // Bodies nested thousands deep: ignored in an unknown field, refused in a known one, never a crash.
    const nested = (field: string, depth: number) => `{"model":"falcon","prompt":"x","max_tokens":1,"${field}":${"[".repeat(depth)}${"]".repeat(depth)}}`;
    const ignored = await postJson(`${url}/v1/completions`, nested("extra", 7000), AUTH);
    assert.equal(ignored.status, 200, await ignored.clone().text());
    await ignored.body?.cancel();
    for (const [field, param] of [["prompt", "prompt"], ["stop", "stop"], ["stop_token_ids", "stop_token_ids[0]"], ["logit_bias", "logit_bias"]] as const) {
      await expectOpenAIError(await postJson(`${url}/v1/completions`, nested(field, 7000), AUTH), 400, { param });
    }
    await assertServing();
  });

  it("answers HTTP-level garbage (bad request lines, huge headers, bad chunking, smuggling) and keeps serving", async () => {
    assert.match(await exchange("GARBAGE\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await exchange("\u0000\u0001\u0002\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await exchange(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
    const chunked = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    assert.match(await exchange(`${chunked}Authorization: Bearer ${KEY}\r\n\r\nzz\r\n{}\r\n`), /^HTTP\/1\.1 400 /);
    assert.match(await exchange(`${chunked}Content-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n`), /^HTTP\/1\.1 400 /);
    // Two requests in one write (pipelining) get two answers, in order.
    const client = await RawClient.connect(port);
    await client.write(rawPost("/v1/completions", JSON.stringify(completionBody({ max_tokens: 2 })), AUTH) + rawPost("/v1/completions", "{", AUTH));
    assert.ok(await client.waitFor("not valid JSON"), client.received);
    assert.match(client.received, /^HTTP\/1\.1 200 [^]*"finish_reason":"length"[^]*HTTP\/1\.1 400 /);
    client.destroy();
    await assertServing();
  });

  it("names the field of every mistyped, missing or out-of-range value of /v1/completions (400)", async () => {
    const cases: [string, Record<string, unknown>][] = [
      ["model", { model: 5 }], ["model", { model: null }], ["model", { model: undefined }],
      ["prompt", { prompt: 5 }], ["prompt", { prompt: { text: "x" } }], ["prompt", { prompt: undefined }], ["prompt", { prompt: null }],
      ["prompt", { prompt: [] }], ["prompt", { prompt: [1.5] }], ["prompt", { prompt: [-1] }], ["prompt", { prompt: [[]] }],
      ["prompt", { prompt: [1, "a"] }], ["prompt", { prompt: [[1], ["a"]] }], ["prompt", { prompt: [2 ** 31] }],
      ["max_tokens", { max_tokens: "16" }], ["max_tokens", { max_tokens: 1.5 }], ["max_tokens", { max_tokens: -1 }], ["max_tokens", { max_tokens: true }],
      ["temperature", { temperature: "hot" }], ["temperature", { temperature: -0.1 }], ["temperature", { temperature: 2.5 }],
      ["top_p", { top_p: "1" }], ["top_p", { top_p: 0 }], ["top_p", { top_p: 1.01 }],
      ["top_k", { top_k: 2.5 }], ["top_k", { top_k: -2 }], ["top_k", { top_k: "5" }],
      ["n", { n: 0 }], ["n", { n: 17 }], ["n", { n: "2" }], ["n", { n: 1.5 }],
      ["seed", { seed: "7" }], ["seed", { seed: 0.5 }],
      ["stop", { stop: 5 }], ["stop", { stop: "" }], ["stop", { stop: ["a", 5] }], ["stop", { stop: Array(17).fill("x") }], ["stop", { stop: "x".repeat(1001) }],
      // 1000 characters as the engine counts them (UTF-16 units): 600 eagles are 1200.
      ["stop", { stop: "🦅".repeat(600) }], ["stop", { stop: ["a", "🦅".repeat(501)] }],
      ["stop_token_ids", { stop_token_ids: 5 }], ["stop_token_ids[0]", { stop_token_ids: [-1] }], ["stop_token_ids[0]", { stop_token_ids: ["1"] }],
      ["ignore_eos", { ignore_eos: "yes" }],
      ["stream", { stream: "true" }], ["stream", { stream: 1 }],
      ["stream_options", { stream_options: "usage" }], ["stream_options.include_usage", { stream_options: { include_usage: "yes" } }],
      ["presence_penalty", { presence_penalty: "0" }], ["frequency_penalty", { frequency_penalty: [] }],
      ["logit_bias", { logit_bias: [1, 2] }], ["logit_bias", { logit_bias: "none" }],
      ["user", { user: 5 }],
      ["logprobs", { logprobs: true }], ["logprobs", { logprobs: 21 }], ["logprobs", { logprobs: -1 }],
      ["echo", { echo: "yes" }],
      ["best_of", { best_of: 0 }], ["best_of", { best_of: "1" }],
      ["suffix", { suffix: 5 }],
    ];
    for (const [param, fields] of cases) {
      const body = completionBody(fields);
      const error = await expectOpenAIError(await postJson(`${url}/v1/completions`, body, AUTH), 400, { param, code: null });
      assert.ok(error.message.includes(param), `${JSON.stringify(fields)}: ${error.message}`);
      // The same attack on a stream gets the same answer, before any event.
      if (body.model !== undefined && body.prompt !== undefined && !("stream" in fields)) {
        await expectOpenAIError(await postJson(`${url}/v1/completions`, { ...body, stream: true }, AUTH), 400, { param });
      }
    }
    await assertServing();
  });

  it("names the field of every mistyped, missing or out-of-range value of /v1/chat/completions (400)", async () => {
    const cases: [string, Record<string, unknown>][] = [
      ["model", { model: ["falcon"] }], ["model", { model: undefined }],
      ["messages", { messages: undefined }], ["messages", { messages: "Hello" }], ["messages", { messages: [] }], ["messages", { messages: {} }],
      ["messages[0]", { messages: ["Hello"] }],
      ["messages[0].role", { messages: [{ role: "robot", content: "x" }] }], ["messages[0].role", { messages: [{ content: "x" }] }],
      ["messages[0].role", { messages: [{ role: 1, content: "x" }] }],
      ["messages[0].content", { messages: [{ role: "user" }] }], ["messages[0].content", { messages: [{ role: "user", content: 5 }] }],
      ["messages[0].content", { messages: [{ role: "user", content: { text: "x" } }] }],
      ["messages[0].content", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }],
      ["messages[1].name", { messages: [{ role: "user", content: "x" }, { role: "user", content: "y", name: 5 }] }],
      ["max_tokens", { max_tokens: "4" }], ["max_tokens", { max_tokens: -5 }],
      ["max_completion_tokens", { max_completion_tokens: "4" }], ["max_completion_tokens", { max_completion_tokens: -1 }],
      ["top_p", { top_p: 2 }], ["temperature", { temperature: {} }], ["top_k", { top_k: [] }], ["n", { n: 100 }], ["seed", { seed: "x" }],
      ["stop", { stop: [""] }], ["stop", { stop: ["🦅".repeat(501)], stream: true }], ["stop_token_ids[0]", { stop_token_ids: [1.5] }], ["ignore_eos", { ignore_eos: 0 }],
      ["stream", { stream: "yes" }], ["stream_options.include_usage", { stream_options: { include_usage: 1 } }],
      ["presence_penalty", { presence_penalty: true }], ["frequency_penalty", { frequency_penalty: "0" }],
      ["logit_bias", { logit_bias: 3 }], ["user", { user: false }],
      ["logprobs", { logprobs: 5 }], ["logprobs", { logprobs: "true" }],
      ["top_logprobs", { logprobs: true, top_logprobs: 21 }], ["top_logprobs", { logprobs: true, top_logprobs: "2" }],
      ["response_format", { response_format: "json" }], ["response_format.type", { response_format: {} }],
      ["tools", { tools: {} }], ["tools", { tools: "none" }],
    ];
    for (const [param, fields] of cases) {
      const error = await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody(fields), AUTH), 400, { param, code: null });
      assert.ok(error.message.includes(param), `${JSON.stringify(fields)}: ${error.message}`);
    }
    await assertServing();
  });

  it("answers an unknown model and unknown routes with 404", async () => {
    const unknownModel = { param: "model", code: "model_not_found" };
    await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ model: "gpt-4" }), AUTH), 404, unknownModel);
    await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody({ model: "" }), AUTH), 404, unknownModel);
    await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ model: "Falcon", stream: true }), AUTH), 404, unknownModel);
    for (const [method, path] of [["GET", "/v1/engines"], ["POST", "/v1/embeddings"], ["GET", "/v1/completions"], ["DELETE", "/v1/models"], ["GET", "/"], ["GET", "/v1/models/../../etc/passwd"], ["POST", "/health"]] as const) {
      await expectOpenAIError(await fetch(`${url}${path}`, { method, headers: AUTH }), 404, { param: null, code: "not_found" });
    }
    // Unknown paths share one metrics label: a scan of random URLs cannot grow the metrics without bound.
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.doesNotMatch(metrics, /endpoint="\/v1\/engines"/);
    assert.match(metrics, /falcon_requests_total\{endpoint="unknown",status="404"\}/);
    await assertServing();
  });

  it("refuses huge max_tokens and prompts longer than the context with 400 context_length_exceeded", async () => {
    const tooLong = "hello ".repeat(CONTEXT + 10);
    const exceeded = "context_length_exceeded";
    for (const stream of [false, true]) {
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ max_tokens: 1e9, stream }), AUTH), 400, { param: "max_tokens", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ max_tokens: 2 ** 53 + 2 }), AUTH), 400, { param: "max_tokens", code: exceeded });
      // A prompt that alone leaves no room for max_tokens.
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: Array(CONTEXT - 2).fill(11), max_tokens: 3, stream }), AUTH), 400, { param: "max_tokens", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: tooLong, stream }), AUTH), 400, { param: "prompt", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: Array(CONTEXT + 1).fill(11), max_tokens: 0, stream }), AUTH), 400, { param: "prompt", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: ["short", tooLong], stream }), AUTH), 400, { param: "prompt[1]", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody({ max_tokens: 1e12, stream }), AUTH), 400, { param: "max_tokens", code: exceeded });
      await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody({ max_tokens: undefined, max_completion_tokens: 600, stream }), AUTH), 400, { param: "max_completion_tokens", code: exceeded });
      for (const limit of [{}, { max_completion_tokens: 5 }]) {
        await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody({ messages: [{ role: "user", content: tooLong }], max_tokens: undefined, ...limit, stream }), AUTH), 400, { param: "messages", code: exceeded });
      }
    }
    // Exactly the context fits.
    const full = await postJson(`${url}/v1/completions`, completionBody({ prompt: Array(CONTEXT - 3).fill(11), max_tokens: 3, temperature: 0 }), AUTH);
    assert.equal(full.status, 200, await full.clone().text());
    assert.equal((await full.json()).usage.total_tokens, CONTEXT);
    await assertServing();
  });

  it("refuses token ids outside the vocabulary and requests of more sequences than the server holds (400)", async () => {
    const vocabulary = lm.backbone.getConfig().vocabularySize;
    await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: [1, vocabulary] }), AUTH), 400, { param: "prompt" });
    await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: [[1], [2, vocabulary + 5]] }), AUTH), 400, { param: "prompt[1]" });
    // 64 prompts × 16 choices can never be admitted: retrying (429) would never help.
    const error = await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: Array(64).fill("x"), n: 16, max_tokens: 1 }), AUTH), 400, { param: "n" });
    assert.match(error.message, /1024/);
    await assertServing();
  });

  it("runs 16 choices of one request without a listener-leak warning", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on("warning", onWarning);
    try {
      const response = await postJson(`${url}/v1/completions`, completionBody({ n: 16, max_tokens: 2 }), AUTH);
      assert.equal(response.status, 200);
      assert.equal((await response.json()).choices.length, 16);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(warnings, []);
  });

  it("answers an oversized body with 413, announced or chunked", async () => {
    const big = JSON.stringify(completionBody({ prompt: "word ".repeat(BODY_LIMIT / 4) }));
    assert.ok(big.length > BODY_LIMIT);
    for (const endpoint of ["/v1/completions", "/v1/chat/completions"]) {
      await expectOpenAIError(await postJson(`${url}${endpoint}`, big, AUTH), 413, { param: null, code: "request_too_large" });
      // Without a Content-Length: the server counts as it reads.
      const chunked = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < 8; i++) controller.enqueue(new TextEncoder().encode(" ".repeat(BODY_LIMIT / 4)));
          controller.close();
        },
      });
      await expectOpenAIError(await fetch(`${url}${endpoint}`, { method: "POST", headers: { ...AUTH, "content-type": "application/json" }, body: chunked, duplex: "half" } as RequestInit), 413, { code: "request_too_large" });
    }
    // A body just under the limit is read and parsed.
    const fits = JSON.stringify(completionBody({ prompt: "a b ", stop: ["x".repeat(1000)] }));
    assert.equal((await postJson(`${url}/v1/completions`, fits + " ".repeat(BODY_LIMIT - fits.length - 1), AUTH)).status, 200);
    await assertServing();
  });

  it("cuts slow clients (headers or body sent a byte at a time) within requestTimeoutMs, serving others meanwhile", async () => {
    const request = rawPost("/v1/completions", JSON.stringify(completionBody()), AUTH);
    const headerEnd = request.indexOf("\r\n\r\n") + 4;
    const slow = async (from: number): Promise<number> => {
      const client = await RawClient.connect(port);
      const started = performance.now();
      await client.write(request.slice(0, from));
      let next = from;
      const drip = setInterval(() => {
        if (next < request.length && !client.socket.destroyed) void client.write(request[next++]!).catch(() => undefined);
      }, 50);
      await client.closed;
      clearInterval(drip);
      assert.ok(next < request.length, "the slow request was cut before it was sent whole");
      // Node answers 408 as it cuts the connection, or just cuts it.
      assert.ok(client.received === "" || client.received.startsWith("HTTP/1.1 408 "), client.received);
      return performance.now() - started;
    };
    const slowClients = [slow(0), slow(20), slow(headerEnd), slow(headerEnd + 5)];
    await assertServing();
    const durations = await Promise.all(slowClients);
    // Node checks the deadline every min(1 s, requestTimeoutMs).
    const inTime = (duration: number) => duration > REQUEST_TIMEOUT_MS - 50 && duration < 2 * REQUEST_TIMEOUT_MS + 1500;
    for (const duration of durations) assert.ok(inTime(duration), `cut after ${duration} ms`);
    // A connection that sends nothing at all is cut too.
    const silent = await RawClient.connect(port);
    const started = performance.now();
    await silent.closed;
    assert.ok(inTime(performance.now() - started), `cut after ${performance.now() - started} ms`);
    await assertServing();
  });

  it("keeps a stream that outlasts requestTimeoutMs: the deadline is for receiving the request", async () => {
    const timeoutMs = 100;
    const quick = createServer(lm, { requestTimeoutMs: timeoutMs });
    try {
      const { url: quickUrl } = await quick.listen({ port: 0 });
      const started = performance.now();
      const response = await postJson(`${quickUrl}/v1/completions`, completionBody({ max_tokens: 500, n: 2, stream: true }));
      const events = sseData(await response.text());
      const elapsed = performance.now() - started;
      assert.ok(elapsed > 4 * timeoutMs, `the stream took ${elapsed} ms: too short to outlast the deadline's check`);
      assert.equal(events.at(-1), "[DONE]");
      const finishes = events.slice(0, -1).map((data) => JSON.parse(data).choices[0].finish_reason).filter((reason) => reason !== null);
      assert.deepEqual(finishes, ["length", "length"]);
    } finally {
      await quick.close({ graceMs: 0 });
    }
  });

  it("survives 200 abrupt disconnects mid-stream (and before and after headers), cancelling each sequence", async () => {
    const streamRequest = (index: number) => rawPost(
      index % 2 === 0 ? "/v1/completions" : "/v1/chat/completions",
      JSON.stringify(index % 2 === 0
        ? completionBody({ prompt: `Client ${index} says`, max_tokens: 400, stream: true, n: 1 + (index % 3) })
        : chatBody({ messages: [{ role: "user", content: `Client ${index}` }], max_tokens: 400, stream: true })),
      AUTH,
    );
    let midStream = 0;
    // Tokens the dropped streams would generate if they ran to their end.
    let budget = 0;
    const generatedBefore = server.engine!.stats().generatedTokens;
    const dropAfterFirstChunk = async (index: number) => {
      budget += 400 * (index % 2 === 0 ? 1 + (index % 3) : 1);
      const client = await RawClient.connect(port);
      await client.write(streamRequest(index));
      assert.ok(await client.waitFor("data: {"), `no first chunk: ${client.received}`);
      assert.match(client.received, /^HTTP\/1\.1 200 /);
      client.destroy();
      midStream++;
    };
    for (let round = 0; round < 20; round++) {
      await Promise.all(Array.from({ length: 10 }, (_, i) => dropAfterFirstChunk(round * 10 + i)));
    }
    assert.equal(midStream, 200);
    await untilEngineIdle(server.engine!);
    const generated = server.engine!.stats().generatedTokens - generatedBefore;
    assert.ok(generated < budget / 10, `the dropped streams generated ${generated} of their ${budget} tokens: not cancelled`);
    // Dropped at once after sending, half-closed, and non-streaming requests dropped mid-generation.
    for (let i = 0; i < 20; i++) {
      const client = await RawClient.connect(port);
      await client.write(streamRequest(i));
      if (i % 2 === 0) client.destroy();
      else client.socket.end();
    }
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const abort = new AbortController();
      const pending = postJson(`${url}/v1/completions`, completionBody({ max_tokens: 500, prompt: `Non-streaming ${i}` }), AUTH, abort.signal);
      setTimeout(() => abort.abort(), 5 + i * 3);
      await assert.rejects(pending, { name: "AbortError" });
    }));
    // fetch + AbortController after the first chunk.
    for (let i = 0; i < 10; i++) {
      const abort = new AbortController();
      const response = await postJson(`${url}/v1/chat/completions`, chatBody({ max_tokens: 450, stream: true }), AUTH, abort.signal);
      const reader = response.body!.getReader();
      await reader.read();
      abort.abort();
    }
    budget += 20 * 400 + 10 * 500 + 10 * 450;
    await untilEngineIdle(server.engine!);
    const generatedInAll = server.engine!.stats().generatedTokens - generatedBefore;
    assert.ok(generatedInAll < budget / 10, `the dropped requests generated ${generatedInAll} of their ${budget} tokens: not cancelled`);
    await assertServing();
  });

  it("drops a client that stops reading its stream once 1 MiB waits for it, and logs why", async () => {
    const entries: RequestLogEntry[] = [];
    const dropping = createServer(lm, { requestLog: (entry) => entries.push(entry) });
    try {
      const { port: droppingPort, url: droppingUrl } = await dropping.listen({ port: 0 });
      // Echoed prompts of 500 × a 66-character token: 16 prompts × 16 choices open the stream with 8 MB at once.
      const longestToken = 38093;
      assert.equal(lm.tokenizer!.decode([longestToken]).length, 66);
      const body = completionBody({ prompt: Array.from({ length: 16 }, () => Array(500).fill(longestToken)), n: 16, echo: true, max_tokens: 1, stream: true });
      const client = await RawClient.connect(droppingPort);
      client.socket.pause();
      await client.write(rawPost("/v1/completions", JSON.stringify(body)));
      await waitFor(() => entries.length === 1, "the dropped request's log entry");
      assert.equal(entries[0]!.error, "the client reads the stream too slowly");
      // What the kernel had taken still arrives, then the connection ends: no stream left open without an end.
      client.socket.resume();
      await client.closed;
      assert.match(client.received, /^HTTP\/1\.1 200 /);
      assert.ok(!client.received.includes("[DONE]"));
      await untilEngineIdle(dropping.engine!);
      assert.equal((await postJson(`${droppingUrl}/v1/completions`, completionBody())).status, 200);
    } finally {
      await dropping.close({ graceMs: 0 });
    }
  });

  it("answers bad and missing API keys with 401 on /v1/*; /health and /metrics stay open", async () => {
    const keyError = { param: null, code: "invalid_api_key" };
    const attempts: (Record<string, string>)[] = [
      {}, { authorization: "" }, { authorization: "Bearer" }, { authorization: "Bearer " }, { authorization: KEY },
      { authorization: `Basic ${Buffer.from(`user:${KEY}`).toString("base64")}` }, { authorization: `Bearer ${KEY}x` },
      { authorization: `Bearer ${KEY.slice(0, -1)}` }, { authorization: `Bearer ${KEY.toUpperCase()}` }, { authorization: `Bearer  ${KEY}` },
      { authorization: `Bearer ${"k".repeat(8000)}` }, { "x-api-key": KEY }, { authorization: `Bearer ${KEY}\u00e9` },
    ];
    for (const headers of attempts) {
      for (const [method, path, body] of [["POST", "/v1/completions", completionBody()], ["POST", "/v1/chat/completions", chatBody({ stream: true })], ["GET", "/v1/models", undefined]] as const) {
        const init: RequestInit = { method, headers: { "content-type": "application/json", ...headers } };
        if (body) init.body = JSON.stringify(body);
        await expectOpenAIError(await fetch(`${url}${path}`, init), 401, keyError);
      }
    }
    // The key guards the route a request reaches, however its target spells it: without the right key,
    // never an answer from the route.
    for (const target of ["/%761/completions", `http://127.0.0.1:${port}/v1/completions`, "/v1/completions?debug=1", "/v1/./completions", "/%76%31/models"]) {
      const send = (headers: Record<string, string>) => exchange(rawPost(target, JSON.stringify(completionBody()), { Connection: "close", ...headers }));
      for (const headers of [{}, { Authorization: "Bearer wrong" }] as Record<string, string>[]) {
        assert.match(await send(headers), /^HTTP\/1\.1 (401|404) /, `${target} ${JSON.stringify(headers)}`);
      }
      assert.match(await send(AUTH), /^HTTP\/1\.1 (200|404) /, target);
    }
    // Bad keys do not get a malformed body parsed first: authentication comes before the body.
    await expectOpenAIError(await postJson(`${url}/v1/completions`, "{", {}), 401, keyError);
    await expectOpenAIError(await postJson(`${url}/v1/completions`, "x".repeat(BODY_LIMIT * 2), {}), 401, keyError);
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const metrics = await fetch(`${url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /falcon_requests_total\{endpoint="\/v1\/completions",status="401"\} \d+/);
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    assert.equal((await postJson(`${url}/v1/completions`, completionBody(), { authorization: `bearer ${KEY}` })).status, 200);
    const models = await fetch(`${url}/v1/models`, { headers: AUTH });
    assert.equal(models.status, 200);
    assert.equal((await models.json()).data[0].id, "falcon");
    await assertServing();
  });

  it("refuses an API key that no client could send in a header", async () => {
    for (const apiKey of ["ключ", "key\n", " key", "key ", "a\u0000b", ""]) {
      assert.throws(() => createServer(lm, { apiKey }), FalconInputError, JSON.stringify(apiKey));
    }
    // Any visible ASCII or Latin-1, spaces inside.
    for (const apiKey of ["sk-ABC_123.~!", "two words", "caf\u00e9"]) await createServer(lm, { apiKey }).close({ graceMs: 0 });
  });

  it("refuses parameters the server does not implement with 400 naming them", async () => {
    const completionCases: [string, Record<string, unknown>][] = [
      ["presence_penalty", { presence_penalty: 0.5 }], ["presence_penalty", { presence_penalty: -2 }],
      ["frequency_penalty", { frequency_penalty: 1 }], ["logit_bias", { logit_bias: { "50256": -100 } }],
      ["best_of", { best_of: 2 }], ["best_of", { best_of: 1, n: 3 }], ["suffix", { suffix: "end" }],
      ["echo", { echo: true, logprobs: 2 }],
    ];
    for (const [param, fields] of completionCases) {
      for (const stream of [false, true]) {
        await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ ...fields, stream }), AUTH), 400, { param });
      }
    }
    const chatCases: [string, Record<string, unknown>][] = [
      ["presence_penalty", { presence_penalty: 0.1 }], ["frequency_penalty", { frequency_penalty: -0.5 }],
      ["logit_bias", { logit_bias: { "1": 1 } }],
      ["tools", { tools: [{ type: "function", function: { name: "f", parameters: {} } }] }],
      ["response_format", { response_format: { type: "json_object" } }],
      ["top_logprobs", { top_logprobs: 3 }],
    ];
    for (const [param, fields] of chatCases) {
      for (const stream of [false, true]) {
        await expectOpenAIError(await postJson(`${url}/v1/chat/completions`, chatBody({ ...fields, stream }), AUTH), 400, { param });
      }
    }
    // Their no-op values are accepted.
    const noOps = { presence_penalty: 0, frequency_penalty: 0, logit_bias: {} };
    assert.equal((await postJson(`${url}/v1/completions`, completionBody({ ...noOps, best_of: 2, n: 2 }), AUTH)).status, 200);
    assert.equal((await postJson(`${url}/v1/chat/completions`, chatBody({ ...noOps, tools: [], response_format: { type: "text" } }), AUTH)).status, 200);
    await assertServing();
  });

  it("streams whole answers for extreme but valid sampling values", async () => {
    const extremes: Record<string, unknown>[] = [
      { seed: 2 ** 53 - 1, n: 2 }, { seed: -1e300, n: 3 }, { seed: 1e300 }, { top_k: 2 ** 31 }, { top_k: 1e300 },
      { top_p: 1e-300 }, { temperature: 1e-300 }, { temperature: 2, top_k: 1 }, { stop_token_ids: Array(64).fill(2 ** 31 - 1) },
      { stop: Array(16).fill("x".repeat(1000)) }, { logprobs: 20, n: 16 }, { ignore_eos: true, stream_options: { include_usage: true } },
    ];
    for (const fields of extremes) {
      const response = await postJson(`${url}/v1/completions`, completionBody({ ...fields, stream: true }), AUTH);
      assert.equal(response.status, 200);
      const events = sseData(await response.text());
      assert.equal(events.at(-1), "[DONE]");
      assert.ok(events.every((data) => !data.includes('"error"')), `${JSON.stringify(fields)}: ${events.join("\n").slice(0, 500)}`);
    }
  });

  it("serves odd but valid text: lone surrogates, NULs, control characters, an empty stop list", async () => {
    for (const prompt of ["\ud800 lone", "nul\u0000nul", "\u001b[31mred\u001b[0m", "🦅".repeat(50), "\ufeffbom"]) {
      const response = await postJson(`${url}/v1/completions`, completionBody({ prompt, stop: [] }), AUTH);
      assert.equal(response.status, 200, await response.clone().text());
      assert.equal((await response.json()).choices.length, 1);
    }
    const chatted = await postJson(`${url}/v1/chat/completions`, chatBody({ messages: [{ role: "system", content: "" }, { role: "user", content: [{ type: "text", text: "\ud83d" }] }] }), AUTH);
    assert.equal(chatted.status, 200, await chatted.clone().text());
    // An empty text prompt has no token to start from.
    await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ prompt: "" }), AUTH), 400, { param: "prompt" });
    await assertServing();
  });

  it("holds nothing once the attacks are over: no sequence running or waiting, no KV block in use", async () => {
    await untilEngineIdle(server.engine!);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^falcon_running_sequences 0$/m);
    assert.match(metrics, /^falcon_queue_depth 0$/m);
    assert.match(metrics, /^falcon_kv_blocks\{state="used"\} 0$/m);
  });
});

describe("server with a full queue", () => {
  let busy: FalconServer;
  let busyUrl: string;

  before(async () => {
    busy = createServer(lm, { engine: { maxSequences: 1, maxBatchTokens: 64 }, maxQueue: 0 });
    ({ url: busyUrl } = await busy.listen({ port: 0 }));
  });
  after(() => busy.close({ graceMs: 0 }));

  it("answers 429 with Retry-After while one long request holds the only slot, then serves again", async () => {
    const holder = new AbortController();
    const long = await postJson(`${busyUrl}/v1/completions`, completionBody({ max_tokens: 500, logprobs: 20, stream: true }), {}, holder.signal);
    assert.equal(long.status, 200);
    const reader = long.body!.getReader();
    await reader.read();
    for (const [endpoint, body] of [["/v1/completions", completionBody()], ["/v1/chat/completions", chatBody({ stream: true })]] as const) {
      const response = await postJson(`${busyUrl}${endpoint}`, body);
      assert.equal(response.headers.get("retry-after"), "1");
      await expectOpenAIError(response, 429, { param: null, code: "queue_full" });
    }
    // More choices than the server ever holds is the request's fault, not a reason to retry.
    await expectOpenAIError(await postJson(`${busyUrl}/v1/completions`, completionBody({ n: 2 })), 400, { param: "n" });
    holder.abort();
    await untilEngineIdle(busy.engine!);
    // The slot is free again (the holder's admission is released with its connection).
    let status = 429;
    for (let attempt = 0; attempt < 100 && status === 429; attempt++) {
      const response = await postJson(`${busyUrl}/v1/completions`, completionBody());
      status = response.status;
      await response.body?.cancel();
      if (status === 429) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(status, 200);
  });

  it("lets clients that give up while queued leave the queue", async () => {
    const queued = createServer(lm, { engine: { maxSequences: 2, maxBatchTokens: 64 }, maxQueue: 6 });
    try {
      const { url: queuedUrl } = await queued.listen({ port: 0 });
      const aborts = Array.from({ length: 8 }, () => new AbortController());
      // Half stream (answered 200 at once), half JSON (answered when done: never, here).
      const pending = aborts.map((abort, i) =>
        postJson(`${queuedUrl}/v1/completions`, completionBody({ prompt: `Queued ${i}`, max_tokens: 500, stream: i % 2 === 0 }), {}, abort.signal));
      await waitFor(() => queued.engine!.stats().waiting === 6, "six queued sequences");
      await expectOpenAIError(await postJson(`${queuedUrl}/v1/completions`, completionBody()), 429, { code: "queue_full" });
      for (const abort of aborts) abort.abort();
      for (const request of pending) {
        // A stream was answered before the abort: its body is aborted with it.
        await request.then((response) => response.body?.cancel().catch(() => undefined), (error: Error) => assert.equal(error.name, "AbortError"));
      }
      await untilEngineIdle(queued.engine!);
      // At most the two running requests' budgets: none of the six queued ones ran.
      assert.ok(queued.engine!.stats().generatedTokens < 2 * 500, JSON.stringify(queued.engine!.stats()));
      const response = await postJson(`${queuedUrl}/v1/completions`, completionBody());
      assert.equal(response.status, 200, await response.clone().text());
    } finally {
      await queued.close({ graceMs: 0 });
    }
  });
});

describe("server with a prompt that is slow to tokenize", () => {
  let slowServer: FalconServer;
  let slowUrl: string;

  before(async () => {
    slowServer = createServer(lm, { apiKey: KEY });
    ({ url: slowUrl } = await slowServer.listen({ port: 0 }));
  });

  after(() => slowServer.close({ graceMs: 0 }));

  it("tokenizes it off the event loop: the loop keeps turning meanwhile, and the prompt is refused for its length", async () => {
    // The server runs in this process: the longest gap between 10 ms ticks is how long its event loop was held.
    let last = performance.now();
    let longestGap = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }, 10);
    try {
      // One 300 000-letter run: no pre-token boundary for BPE to cut at, seconds of tokenization.
      const started = performance.now();
      const response = await postJson(`${slowUrl}/v1/completions`, completionBody({ prompt: "a".repeat(300_000) }), AUTH);
      const ms = performance.now() - started;
      await expectOpenAIError(response, 400, { param: "prompt", code: "context_length_exceeded" });
      assert.ok(longestGap < Math.max(250, ms / 4), `the event loop stood still for ${longestGap.toFixed(0)} ms of the prompt's ${ms.toFixed(0)} ms`);
      assert.equal((await fetch(`${slowUrl}/health`)).status, 200);
    } finally {
      clearInterval(ticker);
    }
  });
});
