/**
 * The engine's lifecycle, through the fake step runner: cancellation mid-prompt and mid-decode frees
 * blocks before the next step, a thousand requests leave nothing behind, close() with requests in
 * flight, a failing step fails only its requests with a typed error, and a process (or worker) that
 * ends with an engine running exits promptly. Checks that could hang or abort run in a child process.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { FalconDisposedError, FalconError, FalconInputError } from "../src/index.js";
import type { Engine } from "../src/engine/engine.js";
import { describeChild, runNode } from "./helpers/child-node.js";
import { fakeEngine, fakeGreedy, promptOf, runSteps, waitFor } from "./helpers/fake-engine.js";
import { settledMemoryStats } from "./helpers/native-memory.js";

const VOCAB = 1000;
const FAKE_ENGINE_URL = new URL("./helpers/fake-engine.js", import.meta.url).href;

const steps = (engine: Engine) => engine.native.stats().steps;

async function assertAbortError(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (error: unknown) => error instanceof DOMException && error.name === "AbortError");
}

describe("engine cancellation", () => {
  it("aborting mid-prompt rejects with an AbortError and frees the blocks before the next step", async () => {
    await using engine = fakeEngine({ maxBatchTokens: 16, maxSequences: 4 });
    const controller = new AbortController();
    engine.native.pause();
    const request = engine.generate(promptOf(400, 1), { maxNewTokens: 4, signal: controller.signal });
    await new Promise((resolve) => setImmediate(resolve));
    await runSteps(engine, 2);  // two 16-token chunks of the prompt
    assert.equal(engine.stats().kvBlocks.used, 25);
    controller.abort();
    await assertAbortError(request);
    const atAbort = steps(engine);
    // Taken in while the engine is held: the blocks are freed without another step.
    await waitFor(() => engine.stats().kvBlocks.used === 0, "the blocks to be freed");
    assert.equal(steps(engine), atAbort);
    assert.equal(engine.stats().running, 0);
    engine.native.resume();
  });

  it("aborting mid-decode rejects with an AbortError and frees the blocks before the next step", async () => {
    await using engine = fakeEngine({ stepDelayMs: 10 });
    const controller = new AbortController();
    let produced = 0;
    const request = engine.generate(promptOf(20, 2), {
      maxNewTokens: 500, signal: controller.signal, onToken: () => {
        if (++produced === 3) controller.abort();
      },
    });
    await assertAbortError(request);
    assert.equal(produced, 3, "no token is reported after the abort");
    const atAbort = steps(engine);
    await waitFor(() => engine.stats().kvBlocks.used === 0, "the blocks to be freed");
    assert.ok(steps(engine) <= atAbort + 1);
    // Other requests are unaffected.
    assert.deepEqual(Array.from(await engine.generate(promptOf(5, 3), { maxNewTokens: 4, stripPrompt: true })), fakeGreedy(promptOf(5, 3), 4, VOCAB));
  });

  it("an already aborted signal rejects without submitting", async () => {
    await using engine = fakeEngine();
    await assertAbortError(engine.generate([1, 2, 3], { maxNewTokens: 2, signal: AbortSignal.abort() }));
    assert.equal(engine.stats().generatedTokens, 0);
  });

  it("breaking out of a stream cancels its request", async () => {
    const { FalconTokenizer } = await import("../src/index.js");
    const { gpt2Vocabulary, hfTokenizerJson, makeTempDir } = await import("./helpers/gpt2-vocab.js");
    const { writeFileSync } = await import("node:fs");
    const dir = makeTempDir("falcon-engine-stream-");
    writeFileSync(`${dir}/tokenizer.json`, JSON.stringify(hfTokenizerJson(gpt2Vocabulary(), "pair")));
    await using engine = fakeEngine({ vocabSize: 50304, samplingVocabularySize: 50257, stepDelayMs: 5, tokenizer: FalconTokenizer.fromPreset(dir) });
    let pieces = 0;
    for await (const piece of engine.stream("Hello there", { maxNewTokens: 1000 })) {
      assert.equal(typeof piece, "string");
      if (++pieces === 3) break;
    }
    await waitFor(() => engine.stats().kvBlocks.used === 0 && engine.stats().running === 0, "the stream's request to end");
    assert.ok(engine.stats().generatedTokens < 100);
  });
});

describe("engine resources", () => {
  it("1,000 requests in a bounded loop leave zero blocks in use and flat native live bytes", async () => {
    await using engine = fakeEngine({ numBlocks: 64, maxBatchTokens: 64, maxSequences: 16 });
    const run = async (index: number) => {
      const prompt = promptOf(1 + (index * 37) % 50, index);
      const maxNewTokens = 1 + (index % 9);
      if (index % 10 === 3) {
        // Every tenth is aborted after its first token.
        const controller = new AbortController();
        await assertAbortError(engine.generate(prompt, { maxNewTokens: 50, signal: controller.signal, onToken: () => controller.abort() }));
        return;
      }
      const tokens = await engine.generate(prompt, { maxNewTokens, stripPrompt: true });
      assert.deepEqual(Array.from(tokens), fakeGreedy(prompt, maxNewTokens, VOCAB), `request ${index}`);
    };
    const loop = async (from: number, to: number) => {
      // 32 in flight at a time.
      let next = from;
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (next < to) await run(next++);
      }));
      await waitFor(() => engine.stats().kvBlocks.used === 0 && engine.stats().running === 0, "the loop's requests to end");
      engine.native.stepLog();  // the log grows with steps; tests read and drop it
    };
    await loop(0, 100);  // warm up: every container at its working size
    const before = await settledMemoryStats();
    await loop(100, 1100);
    const after = await settledMemoryStats();
    const { kvBlocks, waiting, running } = engine.stats();
    assert.equal(kvBlocks.used, 0);
    assert.equal(waiting + running, 0);
    assert.equal(after.liveBytes, before.liveBytes, "native live bytes grew over 1,000 requests");
    assert.equal(after.liveAllocations, before.liveAllocations);
  });

  it("close() rejects requests in flight (running and waiting) with FalconDisposedError, and later calls too", async () => {
    const engine = fakeEngine({ maxSequences: 2, maxBatchTokens: 64 });
    engine.native.pause();
    const requests = Array.from({ length: 5 }, (_, r) => engine.generate(promptOf(10, r), { maxNewTokens: 1000 }));
    await new Promise((resolve) => setImmediate(resolve));
    await runSteps(engine, 3);
    assert.equal(engine.stats().running, 2);
    assert.equal(engine.stats().waiting, 3);
    await engine.close();
    for (const request of requests) await assert.rejects(request, FalconDisposedError);
    assert.equal(engine.closed, true);
    await engine.close();  // idempotent
    await assert.rejects(engine.generate([1, 2], { maxNewTokens: 1 }), FalconDisposedError);
    assert.throws(() => engine.stats(), FalconDisposedError);
  });

  it("a step that fails (out of memory) fails its requests with a typed error and the engine goes on", async () => {
    await using engine = fakeEngine({ failToken: 999 });
    await assert.rejects(engine.generate([5, 999, 6], { maxNewTokens: 3 }), (error: unknown) =>
      error instanceof FalconError && /out of memory/.test(error.message));
    assert.equal(engine.stats().kvBlocks.used, 0);
    assert.deepEqual(Array.from(await engine.generate([5, 6], { maxNewTokens: 3, stripPrompt: true })), fakeGreedy([5, 6], 3, VOCAB));
  });

  it("checks every size from the caller before allocating", async () => {
    await using engine = fakeEngine({ numBlocks: 8 });
    await assert.rejects(engine.complete([1, 2], { maxNewTokens: 2, logprobs: 21 }), FalconInputError);
    await assert.rejects(engine.generate([1, 2000], { maxNewTokens: 2 }), /out of range/);
    await assert.rejects(engine.generate([1, 2], { maxNewTokens: 2 ** 40 }), FalconInputError);
    await assert.rejects(engine.generate([[1, 2], [3]] as never, { maxNewTokens: 2 }), /one prompt/);
    await assert.rejects(engine.generate([1, 2], { maxNewTokens: 2, bogus: 1 } as never), /unknown generate option "bogus"/);
    await assert.rejects(engine.generate([1, 2], { stop: "x" }), /stop strings need a tokenizer/);
    const { native } = await import("../src/native.js");
    assert.throws(() => native().NativeEngine.withFakeRunner({ vocabSize: 10, numBlocks: 4, maxSequences: 8, maxBatchTokens: 4 }, () => undefined),
      /maxBatchTokens must be at least maxSequences/);
    assert.throws(() => native().NativeEngine.withFakeRunner({ vocabSize: 10, numBlocks: 2 ** 40 }, () => undefined), /numBlocks/);
    assert.throws(() => engine.native.submit({ promptIds: [1], maxNewTokens: 1, sampler: { type: "greedy", k: null, p: null, temperature: 0, seed: 0 }, allowedVocabulary: 5000 }),
      /allowedVocabulary/);
  });
});

describe("engine and process teardown", () => {
  it("a process that exits with an engine mid-request exits promptly with code 0", () => {
    const started = Date.now();
    const child = runNode(`
      const { fakeEngine, promptOf } = await import(${JSON.stringify(FAKE_ENGINE_URL)});
      const engine = fakeEngine({ stepDelayMs: 50, numBlocks: 4096 });
      for (let r = 0; r < 8; r++) engine.generate(promptOf(100, r), { maxNewTokens: 100000 }).catch(() => {});
      setTimeout(() => { console.log("exiting"); process.exit(0); }, 120);`, { timeoutMs: 20_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.match(child.stdout, /exiting/);
    assert.ok(Date.now() - started < 10_000);
  });

  it("an idle engine does not keep a process alive, and a dropped one is collected (its thread ends)", () => {
    const child = runNode(`
      import { readFileSync } from "node:fs";
      import v8 from "node:v8";
      import vm from "node:vm";
      const { fakeEngine, promptOf } = await import(${JSON.stringify(FAKE_ENGINE_URL)});
      const threads = () => Number(/^Threads:\\s+(\\d+)/m.exec(readFileSync("/proc/self/status", "utf8"))[1]);
      const engine = fakeEngine();
      console.log((await engine.generate(promptOf(10, 1), { maxNewTokens: 3 })).length);
      const before = threads();
      let dropped = fakeEngine();
      await dropped.generate([1, 2, 3], { maxNewTokens: 2 });
      const withDropped = threads();
      dropped = null;
      v8.setFlagsFromString("--expose-gc");
      const gc = vm.runInNewContext("gc");
      for (let round = 0; round < 100 && threads() !== before; round++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      console.log(withDropped - before, threads() - before);`, { timeoutMs: 20_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.deepEqual(child.stdout.trim().split("\n"), ["13", "1 0"]);
  });

  it("requests in flight keep the process alive until they finish", () => {
    const child = runNode(`
      const { fakeEngine, promptOf } = await import(${JSON.stringify(FAKE_ENGINE_URL)});
      fakeEngine({ stepDelayMs: 5 }).generate(promptOf(10, 1), { maxNewTokens: 20 }).then((ids) => console.log(ids.length));`,
    { timeoutMs: 20_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.equal(child.stdout.trim(), "30");
  });

  it("worker.terminate() while the worker's engine runs neither hangs nor crashes", () => {
    const workerSource = `
      const { parentPort } = require("node:worker_threads");
      import(${JSON.stringify(FAKE_ENGINE_URL)}).then(({ fakeEngine, promptOf }) => {
        const engine = fakeEngine({ stepDelayMs: 2, numBlocks: 4096 });
        for (let r = 0; r < 8; r++) engine.generate(promptOf(50, r), { maxNewTokens: 100000 }).catch(() => {});
        parentPort.postMessage("running");
      });`;
    const child = runNode(`
      import { Worker } from "node:worker_threads";
      for (let round = 0; round < 12; round++) {
        const worker = new Worker(${JSON.stringify(workerSource)}, { eval: true, execArgv: [] });
        await new Promise((resolve) => worker.once("message", resolve));
        await new Promise((resolve) => setTimeout(resolve, 5 + (round % 4) * 5));
        await worker.terminate();
      }
      console.log("alive");`, { timeoutMs: 60_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.match(child.stdout, /alive/);
  });
});

