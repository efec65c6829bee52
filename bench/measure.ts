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

/** Prefill of `promptLength` tokens into a fresh cache: tokens per second per repetition. */
export async function measurePrefill(model: FalconBackbone, promptLength: number, repetitions: number): Promise<Summary> {
  const tokens = [benchTokens(promptLength, model.getConfig().vocabularySize)];
  const rates: number[] = [];
  for (let r = 0; r < repetitions; r++) {
    const cache = model.createCache({ batchSize: 1, maxLength: promptLength });
    const seconds = await timed(() => model.callWithCache(tokens, cache, 0));
    cache.dispose();
    rates.push(promptLength / seconds);
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
  for (let r = 0; r < repetitions; r++) {
    const cache = model.createCache({ batchSize, maxLength: generated + 1 });
    const first = benchTokens(batchSize, vocabularySize, 7 + r).map((id) => [id]);
    await model.callWithCache(first, cache, 0);
    const steps = benchTokens(generated * batchSize, vocabularySize, 11 + r);
    const seconds = await timed(async () => {
      for (let t = 0; t < generated; t++) {
        const ids = Array.from({ length: batchSize }, (_, b) => [steps[t * batchSize + b]]);
        await model.tokenEmbedding.reverse(await model.callWithCache(ids, cache, t + 1));
      }
    });
    cache.dispose();
    rates.push((generated * batchSize) / seconds);
  }
  return summarize(rates);
}
