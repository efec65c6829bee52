/**
 * Reading preset files safely: only regular files (a FIFO, device, socket or directory named like a
 * preset file would block the event loop or fail untyped), and only files whose size is bounded
 * before anything is allocated for them. Every failure is a FalconPresetError naming the file.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

import { describeValue, FalconPresetError } from "../errors.js";

/** config.json, generation_config.json, tokenizer_config.json: kilobytes in practice. */
export const MAX_CONFIG_JSON_BYTES = 16 * 1024 * 1024;
/** A sharded checkpoint's index (model.safetensors.index.json, model.weights.json): a weight map of a few thousand names. */
export const MAX_INDEX_JSON_BYTES = 64 * 1024 * 1024;

/** Opening a FIFO for reading blocks until a writer appears; non-blocking open returns at once (Windows has no FIFOs). */
const OPEN_READ_NONBLOCKING = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

function errnoText(cause: unknown): string {
  return (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
}

function kindOf(stats: import("node:fs").Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "a device";
  return "not a regular file";
}

/** An open regular file and its size; the caller closes `fd`. */
export interface RegularFile {
  fd: number;
  size: number;
}

/**
 * Opens `file` (following symlinks, as the Hugging Face cache needs) and checks that what it names
 * is a regular file; anything else is refused before a byte is read.
 */
export function openRegularFile(file: string): RegularFile {
  let fd: number;
  try {
    fd = openSync(file, OPEN_READ_NONBLOCKING);
  } catch (cause) {
    throw new FalconPresetError(`${file}: cannot open (${errnoText(cause)})`, { cause });
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new FalconPresetError(`${file}: ${kindOf(stats)}, not a regular file`);
    return { fd, size: stats.size };
  } catch (cause) {
    closeSync(fd);
    if (cause instanceof FalconPresetError) throw cause;
    throw new FalconPresetError(`${file}: cannot stat (${errnoText(cause)})`, { cause });
  }
}

/**
 * Fills `buffer` from `position` of an open file; a file that ends early (it shrank, or lied about
 * its size) is a FalconPresetError rather than a short buffer.
 */
export function readExactly(fd: number, file: string, buffer: Uint8Array, position: number): void {
  let done = 0;
  try {
    while (done < buffer.length) {
      const read = readSync(fd, buffer, done, buffer.length - done, position + done);
      if (read === 0) break;
      done += read;
    }
  } catch (cause) {
    throw new FalconPresetError(`${file}: read failed (${errnoText(cause)})`, { cause });
  }
  if (done !== buffer.length) {
    throw new FalconPresetError(`${file}: truncated: expected ${buffer.length} bytes at offset ${position}, the file ended after ${done}`);
  }
}

/** A whole regular file of at most `maxBytes`, as text. */
export function readBoundedTextFile(file: string, maxBytes: number): string {
  const { fd, size } = openRegularFile(file);
  try {
    if (size > maxBytes) {
      throw new FalconPresetError(`${file}: ${size} bytes exceeds the ${maxBytes}-byte limit for this file`);
    }
    const bytes = Buffer.alloc(size);
    readExactly(fd, file, bytes, 0);
    return bytes.toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** Parses a regular file of at most `maxBytes` as JSON; any failure is a FalconPresetError naming it. */
export function readJsonValue(file: string, maxBytes: number): unknown {
  const text = readBoundedTextFile(file, maxBytes);
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FalconPresetError(`${file}: malformed JSON (${(cause as Error).message})`, { cause });
  }
}

/** Reads a JSON object from a regular file of at most `maxBytes`; any failure is a FalconPresetError naming it. */
export function readJsonObject(file: string, maxBytes: number = MAX_CONFIG_JSON_BYTES): Record<string, unknown> {
  const parsed = readJsonValue(file, maxBytes);
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new FalconPresetError(`${file}: expected a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

type JsonTypeName = "boolean" | "integer" | "number" | "string" | "object";

function hasJsonType(value: unknown, type: JsonTypeName): boolean {
  switch (type) {
    case "integer":
      return Number.isSafeInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
    default:
      return typeof value === type;
  }
}

/**
 * Reads typed fields of one JSON object: the first of `names` that is present (not undefined or
 * null) must have the type asked for; `"alibi": "false"` must not read as true.
 */
export class JsonFields {
  constructor(
    private readonly json: Record<string, unknown>,
    private readonly where: string,
  ) {}

  private get(names: string[], type: JsonTypeName): unknown {
    for (const name of names) {
      const value = this.json[name];
      if (value === undefined || value === null) continue;
      if (!hasJsonType(value, type)) {
        const article = type === "integer" || type === "object" ? "an" : "a";
        throw new FalconPresetError(`${this.where}: "${name}" must be ${article} ${type}, got ${describeValue(value)}`);
      }
      return value;
    }
    return undefined;
  }

  keys(): string[] {
    return Object.keys(this.json);
  }

  /** The value as parsed, unchecked. */
  raw(name: string): unknown {
    return this.json[name];
  }

  has(names: string[]): boolean {
    return names.some((name) => this.json[name] !== undefined && this.json[name] !== null);
  }

  boolean(names: string[], fallback: boolean): boolean {
    return (this.get(names, "boolean") as boolean | undefined) ?? fallback;
  }

  integer(names: string[], fallback: number): number;
  integer(names: string[], fallback: null): number | null;
  integer(names: string[], fallback: number | null): number | null {
    return (this.get(names, "integer") as number | undefined) ?? fallback;
  }

  number(names: string[], fallback: number): number;
  number(names: string[], fallback: null): number | null;
  number(names: string[], fallback: number | null): number | null {
    return (this.get(names, "number") as number | undefined) ?? fallback;
  }

  string(names: string[], fallback: string): string;
  string(names: string[], fallback: undefined): string | undefined;
  string(names: string[], fallback: string | undefined): string | undefined {
    return (this.get(names, "string") as string | undefined) ?? fallback;
  }

  object(names: string[]): JsonFields | undefined {
    const value = this.get(names, "object") as Record<string, unknown> | undefined;
    return value === undefined ? undefined : new JsonFields(value, `${this.where} ${names[0]}`);
  }
}
