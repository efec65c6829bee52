/**
 * The engine's scheduling policy (native/core/scheduler.h), driven through the fake step runner so no
 * model is needed: arrival-order admission, the token budget and chunked prompts while decodes keep
 * flowing, maxSequences, preemption of the youngest when blocks run out (and its recompute giving the
 * same tokens), and refusal at submit of a request no pool state could hold. Every run's tokens are
 * checked against the fake model written again in test/helpers/fake-engine.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { FalconInputError } from "../src/index.js";
import type { Engine } from "../src/engine/engine.js";
import { fakeEngine, fakeGreedy, promptOf, submitTogether } from "./helpers/fake-engine.js";

type StepLog = ReturnType<Engine["native"]["stepLog"]>;

const VOCAB = 1000;

/** Submits requests in order and checks each one's tokens; returns the step log of the whole run. */
async function runAll(engine: Engine, requests: { prompt: number[]; maxNewTokens: number }[]): Promise<StepLog> {
  const results = await Promise.all(requests.map(({ prompt, maxNewTokens }) => engine.generate(prompt, { maxNewTokens, stripPrompt: true })));
  results.forEach((tokens, r) => {
    assert.deepEqual(Array.from(tokens), fakeGreedy(requests[r]!.prompt, requests[r]!.maxNewTokens, VOCAB), `request ${r}`);
  });
  return engine.native.stepLog();
}

describe("engine scheduler", () => {
  it("admits waiting requests in arrival order up to maxSequences, and decodes every running sequence each step", async () => {
    await using engine = fakeEngine({ maxSequences: 4, maxBatchTokens: 64 });
    const requests = Array.from({ length: 7 }, (_, r) => ({ prompt: promptOf(5 + r, r + 1), maxNewTokens: 3 + (r % 3) }));
    const steps = await submitTogether(engine, () => runAll(engine, requests));
    // Admission order is arrival order: each id first appears no earlier than the ids before it.
    const firstStep = new Map<number, number>();
    steps.forEach((step, s) => step.chunks.forEach((chunk) => firstStep.has(chunk.id) || firstStep.set(chunk.id, s)));
    const ids = [...firstStep.keys()].sort((a, b) => a - b);
    assert.deepEqual(ids, [1, 2, 3, 4, 5, 6, 7]);
    for (let i = 1; i < ids.length; i++) assert.ok(firstStep.get(ids[i]!)! >= firstStep.get(ids[i - 1]!)!, `id ${ids[i]} admitted before ${ids[i - 1]}`);
    // The first four start together; the others only as running ones finish.
    assert.deepEqual(steps[0]!.chunks.map((chunk) => chunk.id), [1, 2, 3, 4]);
    for (const step of steps) assert.ok(new Set(step.chunks.map((chunk) => chunk.id)).size <= 4, "more than maxSequences running");
    // A running sequence is in every step from its admission until its last token.
    const lastStep = new Map<number, number>();
    steps.forEach((step, s) => step.chunks.forEach((chunk) => lastStep.set(chunk.id, s)));
    for (const id of ids) {
      for (let s = firstStep.get(id)!; s <= lastStep.get(id)!; s++) {
        assert.ok(steps[s]!.chunks.some((chunk) => chunk.id === id), `request ${id} skipped step ${s}`);
      }
    }
  });

  it("chunks a long prompt within maxBatchTokens while a running sequence decodes a token every step", async () => {
    await using engine = fakeEngine({ maxSequences: 4, maxBatchTokens: 16 });
    const decoding = { prompt: promptOf(4, 1), maxNewTokens: 40 };
    const long = { prompt: promptOf(100, 2), maxNewTokens: 2 };
    const [decoded, chunked] = await submitTogether(engine, () => Promise.all([
      engine.generate(decoding.prompt, { maxNewTokens: decoding.maxNewTokens, stripPrompt: true }),
      engine.generate(long.prompt, { maxNewTokens: 2, stripPrompt: true }),
    ]));
    assert.deepEqual(Array.from(decoded), fakeGreedy(decoding.prompt, 40, VOCAB));
    assert.deepEqual(Array.from(chunked), fakeGreedy(long.prompt, 2, VOCAB));
    const log = engine.native.stepLog();
    const prefill = log.filter((step) => step.chunks.some((chunk) => chunk.id === 2 && chunk.count > 1));
    // 12 tokens beside the first step's 4-token prompt, then 15 beside each decode.
    assert.deepEqual(prefill.map((step) => step.chunks.find((chunk) => chunk.id === 2)!.count), [12, 15, 15, 15, 15, 15, 13]);
    let next = 0;
    for (const step of prefill) {
      const total = step.chunks.reduce((sum, chunk) => sum + chunk.count, 0);
      assert.ok(total <= 16, `a step of ${total} tokens exceeds maxBatchTokens`);
      // Request 1 computes its 4-token prompt in the first step, then decodes one token in every step.
      const decode = step.chunks.find((chunk) => chunk.id === 1);
      assert.ok(decode && decode.count === (step === prefill[0] ? 4 : 1), "the decoding request skipped a step of the prefill");
      const chunk = step.chunks.find((c) => c.id === 2)!;
      assert.equal(chunk.start, next, "prompt chunks are consecutive");
      next += chunk.count;
    }
    assert.equal(next, 100);
  });

  it("preempts the youngest running sequence when blocks run out, and its recompute gives the same tokens", async () => {
    // 6 blocks of 16 slots; each request needs up to 4 (20 + 40 − 1 slots): three cannot all run.
    await using engine = fakeEngine({ numBlocks: 6, maxSequences: 4, maxBatchTokens: 64, prefixCaching: false });
    const requests = Array.from({ length: 3 }, (_, r) => ({ prompt: promptOf(20, r + 10), maxNewTokens: 40 }));
    const log = await submitTogether(engine, () => runAll(engine, requests));
    const preemptions = log.flatMap((step, s) => step.preempted.map((id) => ({ id, s })));
    assert.ok(preemptions.length > 0, "the pool should have run out");
    assert.equal(engine.stats().preemptions, preemptions.length);
    for (const { id, s } of preemptions) {
      for (const chunk of log[s]!.chunks) {
        if (chunk.id !== id) assert.ok(chunk.id < id, `step ${s} preempted ${id}, which is older than running ${chunk.id}`);
      }
      // The recompute starts over from slot 0 with prompt and generated tokens together.
      const resumed = log.slice(s + 1).find((step) => step.chunks.some((chunk) => chunk.id === id));
      assert.equal(resumed?.chunks.find((chunk) => chunk.id === id)?.start, 0);
    }
    assert.deepEqual(engine.stats().kvBlocks, { total: 6, used: 0, free: 6, cached: 0 });
  });

  it("preemption with prefix caching: a recompute reuses its own cached blocks and gives the same tokens", async () => {
    await using engine = fakeEngine({ numBlocks: 6, maxSequences: 4, maxBatchTokens: 64 });
    const requests = Array.from({ length: 3 }, (_, r) => ({ prompt: promptOf(20, r + 20), maxNewTokens: 40 }));
    const log = await submitTogether(engine, () => runAll(engine, requests));
    assert.ok(log.some((step) => step.preempted.length > 0), "the pool should have run out");
    assert.equal(engine.stats().kvBlocks.used, 0);
  });

  it("refuses at submit a request that could never fit the pool, and takes one that fits exactly", async () => {
    await using engine = fakeEngine({ numBlocks: 4 });
    // 60 + 10 − 1 = 69 slots need 5 blocks of 16.
    await assert.rejects(engine.generate(promptOf(60, 1), { maxNewTokens: 10 }), (error: unknown) =>
      error instanceof FalconInputError && /needs 5 KV blocks but the engine's pool has 4/.test(error.message));
    // 60 + 5 − 1 = 64 slots: exactly 4 blocks.
    const tokens = await engine.generate(promptOf(60, 1), { maxNewTokens: 5, stripPrompt: true });
    assert.deepEqual(Array.from(tokens), fakeGreedy(promptOf(60, 1), 5, VOCAB));
  });
});
