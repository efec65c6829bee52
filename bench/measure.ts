/**
 * llama-bench's measures on one model: prefill tokens/s (ppN), decode tokens/s (tgN) and batched
 * decode throughput, each repeated and summarised. Shared by `npm run bench` and the side-by-side
 * comparison with llama.cpp.
 */
import type { FalconBackbone, FalconBackboneConfig } from "../src/index.js";
import { summarize, type Summary } from "./stats.js";

/** Deterministic token ids in [0, vocabularySize). */
export function benchTokens(count: number, vocabularySize: number, seed = 1): number[] {
  let state = seed >>> 0;
  return Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % vocabularySize;
  });
}

/** Parameters multiplied per prompt token: every layer's matrices (the LM head is not run by pp). */
export function layerMatrixParameters(config: Required<FalconBackboneConfig>): number {
  const D = config.hiddenDim;
  const d = D / config.numAttentionHeads;
  const perLayer = D * (config.numAttentionHeads + 2 * config.numKeyValueHeads) * d + D * D + 2 * D * config.intermediateDim;
  return config.numLayers * perLayer;
}

async function timed(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await run();
  return (performance.now() - start) / 1000;
}

/**
 * A cache for `batchSize` sequences of `length` tokens with every page of its KV touched by an untimed
 * prefill, as llama-bench's warm-up run touches its context's: a fresh cache's first writes fault its
 * memory in from the kernel, which is no part of prefill or decode (on the 2-core VM of the README,
 * 192 MiB, pp512's float32 cache, took 230-380 ms to fault in, 4-8 % of a float32 pp512).
 */
async function warmCache(model: FalconBackbone, batchSize: number, length: number) {
  const cache = model.createCache({ batchSize, maxLength: length });
  const vocabularySize = model.getConfig().vocabularySize;
  await model.callWithCache(Array.from({ length: batchSize }, (_, b) => benchTokens(length, vocabularySize, 3 + b)), cache, 0);
  return cache;
}

/** Prefill of `promptLength` tokens into an empty sequence: tokens per second per repetition. */
export async function measurePrefill(model: FalconBackbone, promptLength: number, repetitions: number): Promise<Summary> {
  const tokens = [benchTokens(promptLength, model.getConfig().vocabularySize)];
  const rates: number[] = [];
  // Each repetition writes positions [0, promptLength) afresh: no earlier token is attended to.
  const cache = await warmCache(model, 1, promptLength);
  try {
    for (let r = 0; r < repetitions; r++) {
      const seconds = await timed(() => model.callWithCache(tokens, cache, 0));
      rates.push(promptLength / seconds);
    }
  } finally {
    cache.dispose();
  }
  return summarize(rates);
}

/**
 * `generated` single-token steps for `batchSize` sequences after a one-token prompt, each step
 * including the LM head (as llama-bench's tg does): total new tokens per second.
 */
export async function measureDecode(model: FalconBackbone, generated: number, repetitions: number, batchSize = 1): Promise<Summary> {
  const vocabularySize = model.getConfig().vocabularySize;
  const rates: number[] = [];
  // Each repetition rewrites positions [0, generated] of every sequence, attending only to its own.
  const cache = await warmCache(model, batchSize, generated + 1);
  try {
    for (let r = 0; r < repetitions; r++) {
      const first = benchTokens(batchSize, vocabularySize, 7 + r).map((id) => [id]);
      await model.callWithCache(first, cache, 0);
      const steps = benchTokens(generated * batchSize, vocabularySize, 11 + r);
      const seconds = await timed(async () => {
        for (let t = 0; t < generated; t++) {
          const ids = Array.from({ length: batchSize }, (_, b) => [steps[t * batchSize + b]]);
          await model.tokenEmbedding.reverse(await model.callWithCache(ids, cache, t + 1));
        }
      });
      rates.push((generated * batchSize) / seconds);
    }
  } finally {
    cache.dispose();
  }
  return summarize(rates);
}
