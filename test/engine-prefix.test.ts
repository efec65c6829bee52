/**
 * Prefix sharing in the engine's block manager (native/core/block_manager.h), through the fake step
 * runner: full blocks are reused by later requests with the same leading tokens (hits counted, tokens
 * equal to an uncached run), freed to the cache when their last user ends, and evicted least recently
 * used first when the pool needs them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fakeEngine, fakeGreedy, promptOf, runSteps } from "./helpers/fake-engine.js";

const VOCAB = 1000;

async function greedy(engine: ReturnType<typeof fakeEngine>, prompt: number[], maxNewTokens: number): Promise<number[]> {
  const tokens = Array.from(await engine.generate(prompt, { maxNewTokens, stripPrompt: true }));
  assert.deepEqual(tokens, fakeGreedy(prompt, maxNewTokens, VOCAB));
  return tokens;
}

describe("engine prefix cache", () => {
  it("a request whose prompt starts with cached blocks reuses them, counts the hits and gives the uncached tokens", async () => {
    await using engine = fakeEngine({ numBlocks: 32 });
    const shared = promptOf(40, 1);
    await greedy(engine, [...shared, ...promptOf(5, 2)], 4);
    // 40 + 5 prompt tokens + 3 fed generated ones = 48 computed: blocks 0..2 full and cached.
    assert.deepEqual(engine.stats().kvBlocks, { total: 32, used: 0, free: 29, cached: 3 });
    assert.equal(engine.stats().prefixHitTokens, 0);
    // Same 40 leading tokens: blocks 0 and 1 (32 tokens) match; block 2 holds other tokens.
    const second = [...shared, ...promptOf(7, 3)];
    const tokens = await greedy(engine, second, 6);
    assert.equal(engine.stats().prefixHitTokens, 32);
    // The same request on an engine without the cache.
    await using uncached = fakeEngine({ numBlocks: 32, prefixCaching: false });
    assert.deepEqual(Array.from(await uncached.generate(second, { maxNewTokens: 6, stripPrompt: true })), tokens);
    assert.equal(uncached.stats().prefixHitTokens, 0);
    assert.equal(uncached.stats().kvBlocks.cached, 0);
  });

  it("never reuses the block holding a prompt's last token: a fully cached prompt still computes it", async () => {
    await using engine = fakeEngine({ numBlocks: 32 });
    const prompt = promptOf(32, 4);
    await greedy(engine, prompt, 2);
    const before = engine.stats().prefixHitTokens;
    await greedy(engine, prompt, 3);
    // 32 tokens = 2 full blocks, but at most 31 tokens may come from the cache: only block 0 is reused.
    assert.equal(engine.stats().prefixHitTokens - before, 16);
  });

  it("concurrent requests share blocks; the blocks go to the cache when the last user ends", async () => {
    await using engine = fakeEngine({ numBlocks: 40 });
    const shared = promptOf(64, 5);
    await greedy(engine, [...shared, 1], 1);
    const cachedBefore = engine.stats().kvBlocks.cached;
    assert.equal(cachedBefore, 4);
    engine.native.pause();
    const runs = Array.from({ length: 5 }, (_, r) => greedy(engine, [...shared, ...promptOf(3 + r, 10 + r)], 20));
    await new Promise((resolve) => setImmediate(resolve));
    await runSteps(engine, 2);  // the five prompts together, then a decode step
    assert.equal(engine.stats().running, 5);
    // Five sequences of up to 64 + 7 + 19 slots need 6 blocks each alone; sharing the first 4 they need at most 2 more each.
    const { used } = engine.stats().kvBlocks;
    assert.ok(used <= 4 + 5 * 2, `${used} blocks used by 5 sequences sharing 4`);
    engine.native.resume();
    await Promise.all(runs);
    assert.equal(engine.stats().prefixHitTokens, 5 * 64);
    const { kvBlocks } = engine.stats();
    assert.equal(kvBlocks.used, 0);
    assert.equal(kvBlocks.free + kvBlocks.cached, 40);
    assert.ok(kvBlocks.cached > cachedBefore, "the finished requests' own full blocks are cached too");
  });

  it("evicts the least recently used cached blocks first when the pool needs them", async () => {
    await using engine = fakeEngine({ numBlocks: 8 });
    const a = promptOf(33, 6);
    const b = promptOf(33, 7);
    await greedy(engine, a, 1);  // caches a's blocks 0 and 1 (33 computed tokens; block 2 is partial, freed)
    await greedy(engine, b, 1);  // then b's
    assert.deepEqual(engine.stats().kvBlocks, { total: 8, used: 0, free: 4, cached: 4 });
    // 80 prompt tokens need 5 blocks: the 4 free ones and the least recently used cached one, a's block 0.
    await greedy(engine, promptOf(80, 8), 1);
    let hits = engine.stats().prefixHitTokens;
    await greedy(engine, b, 1);
    assert.equal(engine.stats().prefixHitTokens - hits, 32, "b's blocks were kept");
    hits = engine.stats().prefixHitTokens;
    await greedy(engine, a, 1);
    assert.equal(engine.stats().prefixHitTokens - hits, 0, "a's first block was evicted, so nothing of a matches");
  });
});
