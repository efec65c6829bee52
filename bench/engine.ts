/**
 * The engine's rows of `npm run bench`: aggregate decode tokens/s at 1, 4, 16 and 64 concurrent streams,
 * and time to first token with and without a cached 256-token prefix, each beside its floor.
 *
 * Floors. A step of R decode rows reads every weight once and multiplies R rows by every matrix (the LM
 * head included, one row per stream): it takes at least max(weight bytes / read bandwidth,
 * R · FLOP per token / peak), so R streams decode at most R / that many tokens per second. A prompt
 * of P tokens takes at least P · FLOP per prompt token / peak (and one read of the weights).
 */
import type { CompleteOptions, FalconCausalLM } from "../src/index.js";
import { benchTokens } from "./measure.js";
import { summarize, type Summary } from "./stats.js";

export interface StreamsMeasure {
  streams: number;
  /** Decode tokens per second of all streams together, over the steps where every stream decodes. */
  tokensPerSecond: Summary;
}

export interface FirstTokenMeasure {
  promptLength: number;
  prefixLength: number;
  /** Seconds from submitting a request to its first token, without and with its prefix cached. */
  cold: Summary;
  warm: Summary;
}

/**
 * How the streams sample: greedy, "random" (the whole softmax at temperature 1, seeded per stream:
 * what an OpenAI request without sampling fields gets from the server), or "topP" (the nucleus of mass
 * 0.9 at temperature 1: what a request with top_p 0.9 gets).
 */
export type StreamsSampler = "greedy" | "random" | "topP";

function samplerConfig(sampler: StreamsSampler, seed: number): CompleteOptions["sampler"] {
  switch (sampler) {
    case "greedy": return "greedy";
    case "random": return { type: "random", seed };
    case "topP": return { type: "topP", p: 0.9, seed };
  }
}

/**
 * `streams` requests of a `promptLength`-token prompt each (different tokens per stream) and `generated`
 * new tokens, submitted together. The window starts when the last stream has its first token (from
 * then on every step decodes one token of every stream, as llama-batched-bench's T_TG) and ends with
 * the last token.
 */
export async function measureStreams(
  lm: FalconCausalLM, streams: number, generated: number, repetitions: number, promptLength = 8, sampler: StreamsSampler = "greedy",
): Promise<StreamsMeasure> {
  const vocabularySize = lm.backbone.getConfig().vocabularySize;
  const rates: number[] = [];
  for (let r = 0; r < repetitions; r++) {
    const engine = lm.engine({ maxSequences: streams, maxBatchTokens: Math.max(512, streams), prefixCaching: false });
    try {
      const times: number[][] = Array.from({ length: streams }, () => []);
      await Promise.all(Array.from({ length: streams }, (_, s) =>
        engine.complete(Int32Array.from(benchTokens(promptLength, vocabularySize, 100 * r + s + 1)), {
          maxNewTokens: generated, stopTokenIds: null, sampler: samplerConfig(sampler, 100 * r + s + 1),
          onToken: () => times[s]!.push(performance.now()),
        })));
      const windowStart = Math.max(...times.map((t) => t[0]!));
      const windowEnd = Math.max(...times.map((t) => t[t.length - 1]!));
      const tokens = times.reduce((sum, t) => sum + t.filter((at) => at > windowStart).length, 0);
      rates.push(tokens / ((windowEnd - windowStart) / 1000));
    } finally {
      await engine.close();
    }
  }
  return { streams, tokensPerSecond: summarize(rates) };
}

/**
 * Time to first token of a `prefixLength + 8`-token prompt into an idle engine: cold (nothing cached),
 * then warm (another request with the same prefix and different own tokens, the prefix's blocks cached).
 */
export async function measureFirstToken(lm: FalconCausalLM, prefixLength: number, repetitions: number): Promise<FirstTokenMeasure> {
  const vocabularySize = lm.backbone.getConfig().vocabularySize;
  const cold: number[] = [];
  const warm: number[] = [];
  const engine = lm.engine({ maxSequences: 4, maxBatchTokens: 512 });
  const firstToken = async (prompt: Int32Array): Promise<number> => {
    const start = performance.now();
    await engine.complete(prompt, { maxNewTokens: 1, stopTokenIds: null, sampler: "greedy" });
    return (performance.now() - start) / 1000;
  };
  try {
    for (let r = 0; r < repetitions; r++) {
      const prefix = benchTokens(prefixLength, vocabularySize, 7000 + r);
      cold.push(await firstToken(Int32Array.from([...prefix, ...benchTokens(8, vocabularySize, 8000 + r)])));
      warm.push(await firstToken(Int32Array.from([...prefix, ...benchTokens(8, vocabularySize, 9000 + r)])));
    }
  } finally {
    await engine.close();
  }
  return { promptLength: prefixLength + 8, prefixLength, cold: summarize(cold), warm: summarize(warm) };
}
