/**
 * Mutations of valid inputs: bytes (flips, zeroed runs, boundary integers, truncation, extension),
 * JSON values (boundary numbers, wrong types, deep nesting, huge values, duplicated and missing keys)
 * and the file system (a directory, FIFO, device, symlink loop or nothing where a file should be).
 * Every mutator appends what it did to `notes`, which a failure report prints.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";

import type { FuzzRandom } from "./random.js";

// ---------------------------------------------------------------------------------------------- bytes

/** Little-endian integers that break length and offset arithmetic. */
const BOUNDARY_INTEGERS: readonly bigint[] = [
  0n, 1n, 7n, 8n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n,
  2n ** 53n, 2n ** 53n + 1n, 0x7fffffffffffffffn, 0xffffffffffffffffn,
];

/** Byte offsets near which a mutation most likely hits structure (HDF5 object headers, JSON keys). */
export type Hotspots = readonly number[];

function position(rng: FuzzRandom, length: number, hotspots: Hotspots): number {
  if (length === 0) return 0;
  if (hotspots.length > 0 && rng.chance(0.6)) {
    return Math.min(length - 1, Math.max(0, rng.pick(hotspots) + rng.between(-16, 96)));
  }
  // Metadata lives mostly at the start of every format this library reads.
  return rng.chance(0.5) ? rng.below(Math.min(length, 4096)) : rng.below(length);
}

/** One random structural byte mutation; returns a new array (the input is not modified). */
export function mutateBytes(rng: FuzzRandom, input: Uint8Array, notes: string[], hotspots: Hotspots = []): Uint8Array {
  const bytes = new Uint8Array(input);
  const at = position(rng, bytes.length, hotspots);
  const kind = rng.weighted<string>([[3, "flip"], [3, "zero-run"], [3, "integer"], [2, "byte"], [2, "truncate"], [1, "extend"], [1, "copy"], [1, "random-run"]]);
  switch (kind) {
    case "flip": {
      const flips = rng.between(1, 8);
      for (let i = 0; i < flips; i++) {
        const where = i === 0 ? at : position(rng, bytes.length, hotspots);
        bytes[where]! ^= 1 << rng.below(8);
      }
      notes.push(`flip ${flips} bits from byte ${at}`);
      return bytes;
    }
    case "zero-run": {
      const length = rng.pick([1, 4, 8, 16, 35, 64, 512]);
      bytes.fill(0, at, at + length);
      notes.push(`zero ${length} bytes at ${at}`);
      return bytes;
    }
    case "integer": {
      const width = rng.pick([1, 2, 4, 8]);
      const value = rng.pick(BOUNDARY_INTEGERS) & ((1n << BigInt(8 * width)) - 1n);
      const start = Math.min(at, Math.max(0, bytes.length - width));
      for (let i = 0; i < width && start + i < bytes.length; i++) bytes[start + i] = Number((value >> BigInt(8 * i)) & 0xffn);
      notes.push(`write ${width}-byte integer ${value} at ${start}`);
      return bytes;
    }
    case "byte": {
      const value = rng.pick([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, rng.below(256)]);
      bytes[at] = value;
      notes.push(`set byte ${at} to ${value}`);
      return bytes;
    }
    case "truncate": {
      const length = rng.weighted<number>([[2, at], [1, rng.below(64)], [1, Math.max(0, bytes.length - rng.between(1, 16))]]);
      notes.push(`truncate to ${length} of ${bytes.length} bytes`);
      return bytes.subarray(0, length);
    }
    case "extend": {
      const extra = rng.pick([1, 7, 8, 4096, 65536]);
      const out = new Uint8Array(bytes.length + extra);
      out.set(bytes);
      if (rng.chance(0.5)) out.set(rng.bytes(extra), bytes.length);
      notes.push(`append ${extra} bytes`);
      return out;
    }
    case "copy": {
      const length = rng.between(1, 256);
      const from = rng.below(Math.max(1, bytes.length));
      bytes.copyWithin(at, from, from + length);
      notes.push(`copy ${length} bytes from ${from} to ${at}`);
      return bytes;
    }
    default: {
      const length = rng.between(1, 64);
      bytes.set(rng.bytes(Math.min(length, bytes.length - at)), at);
      notes.push(`randomise ${length} bytes at ${at}`);
      return bytes;
    }
  }
}

/** Offsets of every occurrence of the ASCII signatures in `bytes`. */
export function signatureOffsets(bytes: Uint8Array, signatures: readonly string[]): number[] {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offsets: number[] = [];
  for (const signature of signatures) {
    for (let at = buffer.indexOf(signature); at >= 0; at = buffer.indexOf(signature, at + 1)) offsets.push(at);
  }
  return offsets;
}

// ----------------------------------------------------------------------------------------------- JSON

/** JSON text spliced in verbatim: deep nesting built without recursion, duplicate keys, invalid literals. */
export class RawJson {
  constructor(readonly text: string) {}
}

export type JsonValue = null | boolean | number | string | RawJson | JsonValue[] | { [key: string]: JsonValue };

/** Serialises a JsonValue; RawJson is written as is (JSON.stringify writes NaN and Infinity as null). */
export function jsonText(value: JsonValue, indent = false): string {
  if (value instanceof RawJson) return value.text;
  if (Array.isArray(value)) return `[${value.map((item) => jsonText(item, indent)).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}:${indent ? " " : ""}${jsonText(item, indent)}`);
    return indent ? `{\n${entries.join(",\n")}\n}` : `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

function nested(depth: number, open: string, close: string, inner = "0"): RawJson {
  return new RawJson(open.repeat(depth) + inner + close.repeat(depth));
}

/** Values that break type checks and arithmetic wherever a JSON value is expected. */
export function hostileValue(rng: FuzzRandom, current: JsonValue): JsonValue {
  const numbers: JsonValue[] = [0, -1, 1, 2, 3, -0.5, 0.5, 1.5, 2 ** 24, 2 ** 31, 2 ** 32, 2 ** 32 + 5, 2 ** 53, 2 ** 63, 1e6, 1e9, 1e300, -1e300, 5e-324];
  const strings: JsonValue[] = ["", "0", "-1", "1e6", "2147483648", "NaN", "Infinity", "true", "false", "null", "float32", "bfloat16", "../x", "\u0000", "x".repeat(rng.pick([256, 100_000]))];
  const invalidLiterals = [new RawJson("NaN"), new RawJson("Infinity"), new RawJson("-0"), new RawJson("1e999"), new RawJson("123456789012345678901234567890"), new RawJson("0x10")];
  return rng.weighted<() => JsonValue>([
    [4, () => rng.pick(numbers)],
    [3, () => rng.pick(strings)],
    [2, () => rng.pick([true, false, null])],
    // An object whose toString is not a function: String(value) and `${value}` throw a TypeError.
    [2, () => rng.pick<JsonValue>([{}, [], [current], { value: current }, [0, 0], [-1, 2 ** 53], ["a", "b"], { toString: 0 }, { valueOf: 0, toString: 0 }])],
    // An object from an earlier mutation may have no callable toString: String() would throw in the harness.
    [1, () => (typeof current === "number" ? current * rng.pick([1e6, 2 ** 20, -1, 1e300]) : current === null || typeof current === "object" ? 0 : String(current))],
    [1, () => nested(rng.pick([64, 5_000, 100_000]), "[", "]")],
    [1, () => nested(rng.pick([64, 5_000, 100_000]), '{"a":', "}")],
    [1, () => new RawJson(`[${new Array(rng.pick([1_000, 200_000])).fill(rng.pick(["0", "1e300", "-1", "\"x\""])).join(",")}]`)],
    [1, () => rng.pick(invalidLiterals)],
  ])();
}

interface Location {
  parent: JsonValue[] | { [key: string]: JsonValue } | undefined;
  key: string | number;
  value: JsonValue;
  path: string;
}

/** Every value of the tree with its parent (the root's parent is undefined), breadth-limited. */
function locations(root: JsonValue): Location[] {
  const found: Location[] = [{ parent: undefined, key: "", value: root, path: "$" }];
  for (let i = 0; i < found.length && found.length < 20_000; i++) {
    const { value, path } = found[i]!;
    if (value instanceof RawJson || value === null || typeof value !== "object") continue;
    if (Array.isArray(value)) value.forEach((item, index) => found.push({ parent: value, key: index, value: item, path: `${path}[${index}]` }));
    else for (const [key, item] of Object.entries(value)) found.push({ parent: value, key, value: item, path: `${path}.${key}` });
  }
  return found;
}

function setAt(root: { value: JsonValue }, location: Location, value: JsonValue): void {
  if (location.parent === undefined) root.value = value;
  else (location.parent as Record<string | number, JsonValue>)[location.key] = value;
}

/**
 * One mutation of a JSON document in place (the root is boxed so it can be replaced). `fieldNames`
 * are keys the parser reads; adding one with a hostile value reaches optional fields a seed lacks.
 */
export function mutateJson(rng: FuzzRandom, root: { value: JsonValue }, notes: string[], fieldNames: readonly string[] = []): void {
  const all = locations(root.value);
  const objects = all.filter((l) => l.value !== null && typeof l.value === "object" && !Array.isArray(l.value) && !(l.value instanceof RawJson));
  const kind = rng.weighted<string>([[6, "replace"], [2, "delete"], [2, "add-field"], [1, "duplicate-key"], [1, "rename"]]);
  if (kind === "add-field" && objects.length > 0) {
    const target = rng.pick(objects);
    const key = fieldNames.length > 0 && rng.chance(0.8) ? rng.pick(fieldNames) : rng.pick(["__proto__", "constructor", "toString", "unknown_field", ""]);
    const value = hostileValue(rng, null);
    (target.value as Record<string, JsonValue>)[key] = value;
    notes.push(`set ${target.path}.${key} = ${describeJson(value)}`);
    return;
  }
  const candidates = all.filter((l) => l.parent !== undefined);
  // "add-field" lands here only when the document has no object to add to.
  if (candidates.length === 0 || kind === "replace" || kind === "add-field") {
    const target = candidates.length > 0 && rng.chance(0.97) ? rng.pick(candidates) : all[0]!;
    const value = hostileValue(rng, target.value);
    setAt(root, target, value);
    notes.push(`${target.path} = ${describeJson(value)}`);
    return;
  }
  const target = rng.pick(candidates);
  const parent = target.parent!;
  if (kind === "delete") {
    if (Array.isArray(parent)) parent.splice(target.key as number, 1);
    else delete parent[target.key as string];
    notes.push(`delete ${target.path}`);
    return;
  }
  if (Array.isArray(parent)) {
    parent.push(target.value);
    notes.push(`duplicate array item ${target.path}`);
    return;
  }
  if (kind === "rename") {
    const key = target.key as string;
    const renamed = rng.pick([key.toUpperCase(), `${key} `, `_${key}`, key.slice(1)]);
    const entries = Object.entries(parent).map(([k, v]) => [k === key ? renamed : k, v] as const);
    for (const k of Object.keys(parent)) delete parent[k];
    for (const [k, v] of entries) parent[k] = v;
    notes.push(`rename ${target.path} to ${JSON.stringify(renamed)}`);
    return;
  }
  // A duplicated key: JSON.parse keeps the last, other readers the first.
  const value = hostileValue(rng, target.value);
  const grandparent = locations(root.value).find((l) => l.value === parent)!;
  const entries = Object.entries(parent).map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`);
  entries.push(`${JSON.stringify(target.key)}:${jsonText(value)}`);
  setAt(root, grandparent, new RawJson(`{${entries.join(",")}}`));
  notes.push(`duplicate key ${target.path} = ${describeJson(value)}`);
}

export function describeJson(value: JsonValue): string {
  const text = jsonText(value);
  return text.length > 60 ? `${text.slice(0, 40)}…(${text.length} chars)` : text;
}

// ---------------------------------------------------------------------------------------- file system

export type FileSystemMutation = "directory" | "fifo" | "missing" | "empty" | "symlink-loop" | "dangling-symlink" | "device";

/** Replaces the file at `file` (which may already exist) with something that is not a readable regular file. */
export function replaceFile(rng: FuzzRandom, file: string, notes: string[]): FileSystemMutation {
  // A FIFO case costs a whole timeout until the parsers refuse FIFOs: they are rare on purpose.
  const kind = rng.weighted<FileSystemMutation>([[3, "directory"], [1, "fifo"], [3, "missing"], [3, "empty"], [2, "symlink-loop"], [2, "dangling-symlink"], [2, "device"]]);
  rmSync(file, { recursive: true, force: true });
  switch (kind) {
    case "directory":
      mkdirSync(file);
      break;
    case "fifo":
      // Nobody ever writes to it: an open for reading blocks until the case's timeout kills the child.
      execFileSync("mkfifo", [file]);
      break;
    case "missing":
      break;
    case "empty":
      writeFileSync(file, "");
      break;
    case "symlink-loop":
      symlinkSync(file, file);
      break;
    case "dangling-symlink":
      symlinkSync(`${file}.absent`, file);
      break;
    case "device":
      symlinkSync(rng.pick(["/dev/zero", "/dev/null", "/dev/urandom"]), file);
      break;
  }
  notes.push(`${file.slice(file.lastIndexOf("/") + 1)} replaced: ${kind}`);
  return kind;
}
