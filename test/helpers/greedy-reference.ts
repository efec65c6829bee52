/**
 * Greedy next tokens a reference determines: every valid position t of a reference logits tensor
 * [B, L, V] computed over token rows says what greedy decoding must pick after the prompt row[0..t]
 * (with its padding mask). Where the reference's best logit leads another by no more than the
 * comparison tolerance allows an implementation to move them, either id is a correct answer.
 */
import { readFileSync } from "node:fs";

export interface GreedyStep {
  tokenIds: number[];
  paddingMask: number[];
  /** argmax of the reference logits (lowest id on ties). */
  next: number;
  /** Every id the tolerance cannot tell from `next` (`next` included). */
  candidates: number[];
  where: string;
}

export interface ReferenceLogits {
  name: string;
  tokenIds: number[][];
  /** null: every position is valid. */
  paddingMask: number[][] | null;
  logits: ArrayLike<number>;
  vocabulary: number;
}

/**
 * `slack(best, other)`: how far apart two reference logits may be and still swap places in an
 * implementation within tolerance. `usable(mask prefix)` filters the prompts (the last position
 * is always a real token).
 */
export function greedySteps(
  reference: ReferenceLogits,
  slack: (best: number, other: number) => number,
  usable: (maskPrefix: number[]) => boolean = () => true,
): GreedyStep[] {
  const { tokenIds, paddingMask, logits, vocabulary: V } = reference;
  const steps: GreedyStep[] = [];
  const L = tokenIds[0]!.length;
  for (const [b, row] of tokenIds.entries()) {
    const mask = paddingMask?.[b] ?? new Array<number>(L).fill(1);
    for (let t = 0; t < L; t++) {
      if (mask[t] !== 1 || !usable(mask.slice(0, t + 1))) continue;
      const from = (b * L + t) * V;
      let next = 0;
      for (let v = 1; v < V; v++) if (logits[from + v]! > logits[from + next]!) next = v;
      const best = logits[from + next]!;
      const candidates: number[] = [];
      for (let v = 0; v < V; v++) if (best - logits[from + v]! <= slack(best, logits[from + v]!)) candidates.push(v);
      steps.push({ tokenIds: row.slice(0, t + 1), paddingMask: mask.slice(0, t + 1), next, candidates, where: `${reference.name} row ${b} position ${t}` });
    }
  }
  return steps;
}

/** Groups steps by prompt length so each group is one rectangular { tokenIds, paddingMask } batch. */
export function byPromptLength(steps: GreedyStep[]): GreedyStep[][] {
  const groups = new Map<number, GreedyStep[]>();
  for (const step of steps) {
    const group = groups.get(step.tokenIds.length) ?? [];
    group.push(step);
    groups.set(step.tokenIds.length, group);
  }
  return [...groups.values()];
}

/** A raw little-endian float32 or float64 reference file, widened to float64. */
export function readReferenceBin(file: string, dtype: "float32" | "float64"): Float64Array {
  const bytes = readFileSync(file);
  const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return Float64Array.from(dtype === "float64" ? new Float64Array(copy) : new Float32Array(copy));
}
