/** Messages between the fuzz parent (pool.ts) and its children (runner.ts), and the family names. */

/** Every family, in a fixed order: a family's number seeds its random streams, so never reorder. */
export const FAMILY_NAMES = ["safetensors", "safetensors-index", "hf-config", "keras-config", "keras-h5", "tokenizer", "cli"] as const;
export type FamilyName = (typeof FAMILY_NAMES)[number];

export function familyNumber(name: string): number {
  const number = FAMILY_NAMES.indexOf(name as FamilyName);
  if (number < 0) throw new Error(`unknown fuzz family "${name}" (families: ${FAMILY_NAMES.join(", ")})`);
  return number;
}

/** The harness probes' stream number, apart from every family's. */
export const PROBE_FAMILY_NUMBER = 127;

export interface CaseRequest {
  family: string;
  index: number;
  seed: number;
  /** The run's temporary directory: the case builds in root/<family>-<index>. */
  root: string;
  /** Generated seed inputs (seeds.ts). */
  seeds: string;
}

export type CaseOutcome =
  | { status: "ok" }
  | { status: "accepted"; reason: string }
  | { status: "threw"; errorClass: string; falconError: boolean; message: string; stack: string };

export type ChildMessage =
  | { type: "ready" }
  | { type: "prepared"; notes: string[] }
  | { type: "result"; outcome: CaseOutcome }
  | { type: "harness-error"; message: string };

/** Precedes the JSON line a fuzzed CLI process writes to stderr about the error main() caught. */
export const CAUGHT_MARKER = "FUZZ-CLI-CAUGHT ";
