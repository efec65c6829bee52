/** Command-line argument parsing the commands share: typed numbers, id lists, dtypes; mistakes are UsageErrors. */
import { isFalconDevice, type FalconDevice } from "./backbone.js";
import { FALCON_DTYPES, type FalconDType } from "./config.js";
import { FalconError } from "./errors.js";

/** A usage mistake: the message says what to type instead. */
export class UsageError extends FalconError {}

export function positiveInteger(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new UsageError(`${flag} must be a positive integer, got "${value}"`);
  return parsed;
}

export function nonNegativeInteger(value: string, flag: string): number {
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(parsed) || parsed < 0) {
    throw new UsageError(`${flag} must be a non-negative integer, got "${value}"`);
  }
  return parsed;
}

export function finiteNumber(value: string, flag: string): number {
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed)) throw new UsageError(`${flag} must be a number, got "${value}"`);
  return parsed;
}

/** "1,2,3" (spaces allowed) → [1, 2, 3]. */
export function idList(value: string, flag: string): number[] {
  const parts = value.split(/[\s,]+/).filter((part) => part !== "");
  if (parts.length === 0) throw new UsageError(`${flag} needs comma-separated token ids, e.g. ${flag} 1,2,3`);
  return parts.map((part) => nonNegativeInteger(part, flag));
}

/** --device: where the model runs (FalconDevice). */
export function deviceOption(value: string | undefined): FalconDevice | undefined {
  if (value !== undefined && !isFalconDevice(value)) throw new UsageError(`--device must be auto, cpu, cuda or cuda:N, got "${value}"`);
  return value;
}

export function dtypeOption(value: string | undefined): FalconDType | undefined {
  if (value !== undefined && !FALCON_DTYPES.includes(value as FalconDType)) {
    throw new UsageError(`--dtype must be one of ${FALCON_DTYPES.join(", ")}, got "${value}"`);
  }
  return value as FalconDType | undefined;
}
