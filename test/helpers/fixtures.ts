/** Locations of the shared reference fixtures and comparison helpers used by every fixture test. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** test/fixtures of the repository (tests run from dist/test/helpers/...); test/fixtures/README.md says what made them. */
export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "test", "fixtures");

export function readJson<T = any>(file: string): T {
  return JSON.parse(readFileSync(file, "utf8")) as T;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/**
 * numpy.allclose over the rows where `valid(row)` holds, rows being the leading dimensions flattened
 * with `width` values each. Returns a description of the worst violation, or undefined.
 */
export function compareRows(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  width: number,
  tolerance: Tolerance,
  valid: (row: number) => boolean = () => true,
): string | undefined {
  if (actual.length !== expected.length) return `length ${actual.length} != expected ${expected.length}`;
  let worst: { excess: number; index: number } | undefined;
  let compared = 0;
  for (let i = 0; i < actual.length; i++) {
    if (!valid(Math.floor(i / width))) continue;
    compared++;
    const bound = tolerance.atol + tolerance.rtol * Math.abs(expected[i]);
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= bound) && (!worst || error - bound > worst.excess)) worst = { excess: error - bound, index: i };
  }
  if (compared === 0) return "no valid rows were compared";
  if (!worst) return undefined;
  const i = worst.index;
  return `element ${i} (row ${Math.floor(i / width)}): got ${actual[i]}, expected ${expected[i]} (atol ${tolerance.atol}, rtol ${tolerance.rtol})`;
}
