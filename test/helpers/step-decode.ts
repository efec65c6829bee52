/**
 * A native step runner (stepRunnerForTest) driven as one sequence, as the engine would: the prompt in
 * one step, then one token a step.
 */
import { callNativeSync, type NativeStepRunnerForTest } from "../../src/native.js";

export interface DecodeSpec {
  vocabulary: number;
  prompt: number[];
  decodeSteps: number;
  /** The sequence's pool blocks, in order. */
  blockTable: Int32Array;
  /** Tokens to feed (indexed as the whole sequence); the greedy choice of the step before where absent. */
  forced?: number[];
}

/** Every step's logit rows (one per prompt token, then one per decode step) and the tokens fed. */
export function decodeOneSequence(runner: NativeStepRunnerForTest, spec: DecodeSpec): { rows: Float32Array[]; tokens: number[] } {
  const { vocabulary, prompt, decodeSteps, blockTable, forced } = spec;
  const tokens = [...prompt];
  const rows: Float32Array[] = [];
  for (let start = 0, count = prompt.length; start + count <= prompt.length + decodeSteps; start += count, count = 1) {
    const logits = callNativeSync(() => runner.run({
      sequences: [{ blockTable, start, count, ropeLength: start + count }],
      tokenIds: Int32Array.from(tokens.slice(start, start + count)),
      positions: Int32Array.from({ length: count }, (_, t) => start + t),
      valid: new Uint8Array(count).fill(1),
      outputRows: Int32Array.from({ length: count }, (_, t) => t),
    }));
    for (let t = 0; t < count; t++) rows.push(logits.subarray(t * vocabulary, (t + 1) * vocabulary));
    if (tokens.length === prompt.length + decodeSteps) break;
    const last = rows[rows.length - 1]!;
    tokens.push(forced?.[tokens.length] ?? last.reduce((best, x, i) => (x > last[best]! ? i : best), 0));
  }
  return { rows, tokens };
}
