import { readFileSync } from "node:fs";

import { FalconPresetError } from "../errors.js";

/** Reads a JSON object from disk; a missing or malformed file is a FalconPresetError naming it. */
export function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    throw new FalconPresetError(`${file}: cannot read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, {
      cause,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new FalconPresetError(`${file}: malformed JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new FalconPresetError(`${file}: expected a JSON object`);
  }
  return parsed as Record<string, unknown>;
}
