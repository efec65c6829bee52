/**
 * Graceful shutdown with requests in flight. Library: close({graceMs}) lets requests that finish within
 * the grace period complete, answers new ones with 503 (or refuses their connection once the listener
 * is closed), cancels the rest past the grace period (a stream ends with an error event and
 * `data: [DONE]`, a JSON request gets 503), resolves, and closes the engine. CLI: SIGTERM lets a running
 * stream finish and exits 0. Readiness: /health answers 503 while the model loads, 200 once it is ready.
 *
 * The model is a tiny random rotary Falcon with the real GPT-2 tokenizer (context 512); a step of a
 * dozen sequences takes tens of milliseconds on 2 cores, so 500-token requests outlast the grace periods.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { FalconCausalLM } from "../src/causal-lm.js";
import { FalconInputError } from "../src/errors.js";
import { createServer } from "../src/server/server.js";
import { waitFor } from "./helpers/fake-engine.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { chatBody, checkErrorBody, completionBody, expectOpenAIError, postJson, RawClient, rawPost, sseData } from "./helpers/server-http.js";
import { writeRandomTextCheckpoint } from "./helpers/text-model.js";

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli.js");


let dir: string;
let lm: FalconCausalLM;

before(async () => {
  dir = makeTempDir("falcon-server-shutdown-");
  writeRandomTextCheckpoint(dir);
  lm = await FalconCausalLM.fromPreset(dir);
});

after(() => lm.dispose());

/** The finish reasons of a stream's chunks, in order (an error event has none). */
function finishReasons(events: string[]): string[] {
  return events.filter((data) => data !== "[DONE]").flatMap((data) => {
    const chunk = JSON.parse(data);
    if ("error" in chunk) return [];
    return chunk.choices.map((choice: { finish_reason: string | null }) => choice.finish_reason).filter((reason: string | null) => reason !== null);
  });
}

describe("close({ graceMs }) with requests in flight", () => {
  it("completes what finishes within the grace period, refuses new requests, cancels the rest, closes the engine", async () => {
    const server = createServer(lm);
    const { url, port } = await server.listen({ port: 0 });
    const engine = server.engine!;
    const graceMs = 2500;

    // Long requests: 500 tokens × 4 choices each, far past the grace period.
    const longStreams = await Promise.all([0, 1].map((i) => postJson(`${url}/v1/completions`, completionBody({ prompt: `Long ${i}`, max_tokens: 500, n: 4, stream: true }))));
    const longJson = postJson(`${url}/v1/chat/completions`, chatBody({ messages: [{ role: "user", content: "Long" }], max_tokens: 500, n: 4 }));
    // A request that has sent its headers but not yet its body when the server starts closing.
    const late = await RawClient.connect(port);
    const lateRequest = rawPost("/v1/completions", JSON.stringify(completionBody()));
    await late.write(lateRequest.slice(0, lateRequest.length - 4));
    // Short ones: 20 tokens, well within the grace period.
    const shortStreams = await Promise.all([0, 1, 2].map((i) => postJson(`${url}/v1/completions`, completionBody({ prompt: `Short ${i}`, max_tokens: 20, stream: true }))));
    for (const response of [...longStreams, ...shortStreams]) assert.equal(response.status, 200);
    const shortDone = shortStreams.map(async (response) => ({ text: await response.text(), at: performance.now() }));
    const longDone = longStreams.map((response) => response.text());
    await waitFor(() => engine.stats().running === 15, "all 15 sequences running");

    const closeStarted = performance.now();
    const closed = server.close({ graceMs });
    let closeResolved = false;
    void closed.then(() => (closeResolved = true));

    // New requests: 503 on a connection the server already reads, refused on a new one.
    await late.write(lateRequest.slice(-4));
    assert.ok(await late.waitFor("\r\n\r\n{"), late.received);
    assert.match(late.received, /^HTTP\/1\.1 503 /);
    checkErrorBody(JSON.parse(late.received.slice(late.received.indexOf("\r\n\r\n") + 4)), 503, { param: null });
    const fresh = await RawClient.connect(port).catch((error: NodeJS.ErrnoException) => error);
    if (fresh instanceof RawClient) {
      await fresh.write(rawPost("/v1/completions", JSON.stringify(completionBody())));
      assert.ok(await fresh.waitFor("\r\n\r\n{"), `a new connection got no answer: ${JSON.stringify(fresh.received)}`);
      assert.match(fresh.received, /^HTTP\/1\.1 503 /);
    } else {
      assert.equal(fresh.code, "ECONNREFUSED", String(fresh));
    }

    for (const { text, at } of await Promise.all(shortDone)) {
      const events = sseData(text);
      assert.equal(events.at(-1), "[DONE]");
      assert.deepEqual(finishReasons(events), ["length"], text.slice(-500));
      assert.ok(at > closeStarted, "the short stream was still running when close() began");
      assert.ok(at - closeStarted < graceMs, `the short stream ended ${at - closeStarted} ms into the grace period`);
    }
    assert.equal(closeResolved, false, "close() waits for the grace period while long requests run");

    for (const text of await Promise.all(longDone)) {
      const events = sseData(text);
      assert.equal(events.at(-1), "[DONE]");
      checkErrorBody(JSON.parse(events.at(-2)!), 503);
      assert.deepEqual(finishReasons(events), [], "no choice of a cancelled stream finished");
    }
    await expectOpenAIError(await longJson, 503, { param: null });
    await closed;
    const closeTook = performance.now() - closeStarted;
    assert.ok(closeTook >= graceMs - 50, `close() took ${closeTook} ms`);
    assert.ok(closeTook < graceMs + 3000, `close() took ${closeTook} ms`);
    assert.equal(engine.closed, true);
    assert.equal(server.engine?.closed, true);
    // The listener is gone.
    await assert.rejects(RawClient.connect(port), { code: "ECONNREFUSED" });
    // close() again is the same settled promise.
    await server.close();
  });

  it("waits for every request with a grace period of Infinity or past setTimeout's range; refuses a negative or NaN one", async () => {
    for (const graceMs of [Infinity, 2 ** 32]) {
      const server = createServer(lm);
      const { url } = await server.listen({ port: 0 });
      const response = await postJson(`${url}/v1/completions`, completionBody({ max_tokens: 100, stream: true }));
      assert.equal(response.status, 200);
      const closed = server.close({ graceMs });
      const events = sseData(await response.text());
      assert.deepEqual(finishReasons(events), ["length"], `graceMs ${graceMs}: ${events.at(-2)}`);
      await closed;
      assert.equal(server.engine?.closed, true);
    }
    const server = createServer(lm);
    for (const graceMs of [-1, Number.NaN, "5"]) {
      await assert.rejects(server.close({ graceMs: graceMs as number }), FalconInputError);
    }
    await server.close({ graceMs: 0 });
    assert.equal(server.engine?.closed, true);
  });

  it("resolves at once when nothing runs, and twice is once", async () => {
    const server = createServer(lm);
    const { url } = await server.listen({ port: 0 });
    assert.equal((await postJson(`${url}/v1/completions`, completionBody())).status, 200);
    const started = performance.now();
    await Promise.all([server.close({ graceMs: 10_000 }), server.close({ graceMs: 10_000 })]);
    assert.ok(performance.now() - started < 2000, `close() took ${performance.now() - started} ms`);
    assert.equal(server.engine?.closed, true);
  });
});

describe("readiness while the model loads", () => {
  it("answers /health 503 {status: loading} and /v1/* 503 until the model is ready, then 200", async () => {
    let provide!: (model: FalconCausalLM) => void;
    const loading = new Promise<FalconCausalLM>((resolve) => (provide = resolve));
    const server = createServer(loading);
    try {
      const { url } = await server.listen({ port: 0 });
      assert.equal(server.engine, undefined);
      const health = await fetch(`${url}/health`);
      assert.equal(health.status, 503);
      assert.deepEqual(await health.json(), { status: "loading" });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody()), 503, { param: null });
      await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody({ stream: true })), 503);
      await expectOpenAIError(await fetch(`${url}/v1/models`), 503);
      const metrics = await fetch(`${url}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^falcon_running_sequences 0$/m);

      provide(lm);
      await server.ready;
      const ready = await fetch(`${url}/health`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: "ok" });
      const response = await postJson(`${url}/v1/completions`, completionBody());
      assert.equal(response.status, 200, await response.clone().text());
      assert.equal((await response.json()).usage.completion_tokens, 4);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });

  it("answers 503 naming the failure when the model fails to load", async () => {
    const server = createServer(Promise.reject(new Error("no such checkpoint")));
    try {
      const { url } = await server.listen({ port: 0 });
      await assert.rejects(server.ready, /no such checkpoint/);
      const health = await fetch(`${url}/health`);
      assert.equal(health.status, 503);
      assert.deepEqual(await health.json(), { status: "error", message: "no such checkpoint" });
      const error = await expectOpenAIError(await postJson(`${url}/v1/completions`, completionBody()), 503);
      assert.match(error.message, /no such checkpoint/);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });

  it("closes the engine of a model that arrives while the server is closing", async () => {
    let provide!: (model: FalconCausalLM) => void;
    const server = createServer(new Promise<FalconCausalLM>((resolve) => (provide = resolve)));
    await server.listen({ port: 0 });
    const closed = server.close({ graceMs: 0 });
    provide(lm);
    await closed;
    assert.equal(server.engine?.closed, true);
  });
});

/** `falcon-native serve DIR --port 0` in a child process, with its output so far and its exit. */
function serve() {
  const child = spawn(process.execPath, [CLI, "serve", dir, "--port", "0", "--model-name", "falcon"], {
    env: { ...process.env, FALCON_NUM_THREADS: "2" }, stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { stdout: "", stderr: "" };
  child.stdout.on("data", (chunk: Buffer) => void (output.stdout += chunk.toString()));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("exit", (code, signal) => resolve([code, signal])));
  const url = new Promise<string>((resolve, reject) => {
    child.stderr.on("data", (chunk: Buffer) => {
      output.stderr += chunk.toString();
      const match = /listening on (http:\/\/\S+)/.exec(output.stderr);
      if (match) resolve(match[1]!);
    });
    void exited.then(() => reject(new Error(`serve exited before listening: ${output.stderr}`)));
  });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  return { child, output, exited, url, kill };
}

describe("falcon-native serve and SIGTERM", () => {
  it("exits 0 on SIGTERM while the model loads", { timeout: 60_000 }, async () => {
    const server = serve();
    try {
      await server.url;
      server.child.kill("SIGTERM");
      assert.deepEqual(await server.exited, [0, null], server.output.stderr);
      assert.match(server.output.stderr, /SIGTERM: finishing running requests[^]*stopped/);
    } finally {
      server.kill();
    }
  });

  it("lets a running stream finish, then exits 0", { timeout: 60_000 }, async () => {
    const server = serve();
    const { child, output, exited } = server;
    try {
      const url = await server.url;
      for (let attempt = 0; ; attempt++) {
        const health = await fetch(`${url}/health`);
        if (health.status === 200) {
          assert.deepEqual(await health.json(), { status: "ok" });
          break;
        }
        assert.deepEqual({ status: health.status, body: await health.json() }, { status: 503, body: { status: "loading" } });
        assert.ok(attempt < 500, "the model never became ready");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const response = await postJson(`${url}/v1/completions`, completionBody({ max_tokens: 300, n: 4, stream: true }));
      assert.equal(response.status, 200);
      const reader = response.body!.getReader();
      let text = "";
      const decoder = new TextDecoder();
      const first = await reader.read();
      text += decoder.decode(first.value, { stream: true });
      child.kill("SIGTERM");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      const events = sseData(text);
      assert.equal(events.at(-1), "[DONE]");
      assert.deepEqual(finishReasons(events), ["length", "length", "length", "length"]);
      const tokens = events.slice(0, -1).map((data) => JSON.parse(data).choices[0]).filter((choice) => choice.finish_reason === null).length;
      assert.ok(tokens > 0);
      assert.deepEqual(await exited, [0, null], output.stderr);
      assert.match(output.stderr, /SIGTERM: finishing running requests[^]*stopped/);
      const logs = output.stdout.trim().split("\n").map((line) => JSON.parse(line));
      const streamLog = logs.find((entry) => entry.url === "/v1/completions");
      assert.ok(streamLog, output.stdout);
      assert.equal(streamLog.status, 200);
      assert.equal(streamLog.completionTokens, 4 * 300);
      assert.equal(streamLog.error, undefined);
    } finally {
      server.kill();
    }
  });
});
