/**
 * The fuzzer's randomness: the library's own xoshiro128** (SeededRandom), one independent stream per
 * (family, case index), so any case is rebuilt exactly from the run seed and its index alone.
 */
import { SeededRandom } from "../../../src/samplers.js";

/** Cases per family are indexed below 2^24; the family number fills the stream's high bits. */
const CASE_INDEX_LIMIT = 2 ** 24;

export class FuzzRandom {
  readonly #source: SeededRandom;

  constructor(seed: number, familyNumber: number, caseIndex: number) {
    if (!Number.isSafeInteger(caseIndex) || caseIndex < 0 || caseIndex >= CASE_INDEX_LIMIT) {
      throw new Error(`case index ${caseIndex} is outside [0, ${CASE_INDEX_LIMIT})`);
    }
    this.#source = new SeededRandom(seed, familyNumber * CASE_INDEX_LIMIT + caseIndex);
  }

  /** An integer in [0, bound). */
  below(bound: number): number {
    return Math.floor(this.#source.next() * bound);
  }

  /** An integer in [low, high]. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }

  chance(probability: number): boolean {
    return this.#source.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.below(items.length)]!;
  }

  /** Picks by relative weight: [[weight, value], ...]. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((sum, [weight]) => sum + weight, 0);
    let point = this.#source.next() * total;
    for (const [weight, value] of choices) {
      point -= weight;
      if (point < 0) return value;
    }
    return choices[choices.length - 1]![1];
  }

  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.#source.nextUint32() & 0xff;
    return out;
  }
}
