/**
 * The fake step runner's model, written again from its definition (native/core/fake_step_runner.h)
 * rather than read back from the engine: the greedy next token after `tokens` is FNV-1a (32-bit)
 * over every token id, modulo the vocabulary; logit[v] = −((v − next) mod V) / 8.
 */
import { FalconCausalLMPreprocessor } from "../../src/index.js";
import { Engine } from "../../src/engine/engine.js";
import type { NativeFakeRunnerOptions } from "../../src/native.js";
import type { FalconTokenizer } from "../../src/tokenizer.js";

export function fakeNextToken(tokens: ArrayLike<number>, vocabularySize: number, allowed = vocabularySize): number {
  let hash = 2166136261;
  for (let i = 0; i < tokens.length; i++) hash = Math.imul(hash ^ tokens[i]!, 16777619) >>> 0;
  const next = hash % vocabularySize;
  // Among ids below `allowed`, the best is the first at or after `next`, cyclically: 0 when next ≥ allowed.
  return next < allowed ? next : 0;
}

/** Greedy tokens the fake model generates after `prompt`: maxNewTokens, or up to a stop id (included). */
export function fakeGreedy(
  prompt: ArrayLike<number>, maxNewTokens: number, vocabularySize: number, options: { stopTokenIds?: number[]; allowed?: number } = {},
): number[] {
  const tokens = Array.from(prompt);
  const generated: number[] = [];
  while (generated.length < maxNewTokens) {
    const next = fakeNextToken(tokens, vocabularySize, options.allowed);
    tokens.push(next);
    generated.push(next);
    if (options.stopTokenIds?.includes(next)) break;
  }
  return generated;
}

/** The fake's logits row after `tokens` (float32, as the runner writes it). */
export function fakeLogits(tokens: ArrayLike<number>, vocabularySize: number): Float32Array {
  const next = fakeNextToken(tokens, vocabularySize);
  return Float32Array.from({ length: vocabularySize }, (_, v) => -((v - next + vocabularySize) % vocabularySize) / 8);
}

/** An Engine over the fake runner; prompts are token ids unless a tokenizer is given. */
export function fakeEngine(
  options: Partial<NativeFakeRunnerOptions> & { tokenizer?: FalconTokenizer; samplingVocabularySize?: number } = {},
): Engine {
  const { tokenizer, samplingVocabularySize, ...runner } = options;
  const preprocessor = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength: 4096, addStartToken: false });
  return Engine.withFakeRunner({ vocabSize: 1000, numBlocks: 256, recordSteps: true, ...runner }, { preprocessor, samplingVocabularySize });
}

/** Ids [start, start + length) spread over the vocabulary: prompts that differ from each other. */
export function promptOf(length: number, seed: number, vocabularySize = 1000): number[] {
  return Array.from({ length }, (_, i) => (seed * 7919 + i * 104729) % vocabularySize);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves once `condition()` holds (polled), or rejects after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

/** Lets a paused engine run exactly `count` steps (native pause/resume), and waits for them. */
export async function runSteps(engine: Engine, count: number): Promise<void> {
  const target = engine.native.stats().steps + count;
  engine.native.resume(count);
  await waitFor(() => engine.native.stats().steps >= target, `${count} steps`);
}

/** Calls `submit` while the engine is held, so everything it submits is there for the next step. */
export async function submitTogether<T>(engine: Engine, submit: () => T): Promise<T> {
  engine.native.pause();
  const submitted = submit();
  // Requests reach the native engine after a few microtasks (generate awaits the model's readiness).
  await new Promise((resolve) => setImmediate(resolve));
  engine.native.resume();
  return submitted;
}
