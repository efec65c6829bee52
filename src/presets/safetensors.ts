/**
 * safetensors headers (an 8-byte little-endian length, a JSON header, then raw tensor bytes),
 * validated against the file before any offset is trusted. Tensor bytes are never read here: the
 * native loader maps the file and checks every range again.
 */
import { closeSync, existsSync } from "node:fs";
import path from "node:path";

import { describeValue, FalconPresetError } from "../errors.js";
import type { NativeSourceDType } from "../native.js";
import { MAX_INDEX_JSON_BYTES, openRegularFile, readExactly, readJsonObject } from "./json.js";

export interface SafetensorsTensor {
  name: string;
  file: string;
  dtype: NativeSourceDType;
  shape: number[];
  /** Absolute offset of the first byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

const DTYPES: Record<string, [NativeSourceDType, number]> = {
  F32: ["float32", 4],
  F16: ["float16", 2],
  BF16: ["bfloat16", 2],
};
/** Real headers are kilobytes; a larger claim is corruption or an attempt to make us allocate. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export function readSafetensorsHeader(file: string): Map<string, SafetensorsTensor> {
  const { fd, size } = openRegularFile(file);
  let header: Record<string, unknown>;
  let dataStart: number;
  try {
    if (size < 8) throw new FalconPresetError(`${file}: truncated: ${size} bytes cannot hold a safetensors header length`);
    const lengthBytes = Buffer.alloc(8);
    readExactly(fd, file, lengthBytes, 0);
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength === 0n || headerLength > BigInt(size - 8)) {
      throw new FalconPresetError(`${file}: header length ${headerLength} runs past the end of the file (${size} bytes); the file is truncated or not safetensors`);
    }
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new FalconPresetError(`${file}: header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const text = Buffer.alloc(Number(headerLength));
    readExactly(fd, file, text, 8);
    dataStart = 8 + text.length;
    try {
      header = JSON.parse(text.toString("utf8"));
    } catch (cause) {
      throw new FalconPresetError(`${file}: malformed header JSON (${(cause as Error).message})`, { cause });
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new FalconPresetError(`${file}: the header must be a JSON object`);
    }
  } finally {
    closeSync(fd);
  }

  const dataBytes = size - dataStart;
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const where = `${file}: tensor "${name}"`;
    if (typeof entry !== "object" || entry === null) throw new FalconPresetError(`${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    // An own-property lookup: "constructor" or "toString" must not find Object.prototype's members.
    const known = typeof dtype === "string" && Object.hasOwn(DTYPES, dtype) ? DTYPES[dtype] : undefined;
    if (!known) {
      throw new FalconPresetError(`${where} has dtype ${describeValue(dtype)}; supported dtypes are ${Object.keys(DTYPES).join(", ")}`);
    }
    if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw new FalconPresetError(`${where}: shape must be an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw new FalconPresetError(`${where}: data_offsets must be [begin, end] with non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataBytes) {
      throw new FalconPresetError(`${where}: data_offsets [${begin}, ${end}] fall outside the ${dataBytes} data bytes; the file is truncated or corrupt`);
    }
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = elements * known[1];
    if (expected !== end - begin) {
      throw new FalconPresetError(
        `${where}: shape [${(shape as number[]).join(", ")}] of ${dtype} needs ${expected} bytes but data_offsets span ${end - begin}`,
      );
    }
    tensors.set(name, { name, file, dtype: known[0], shape: shape as number[], byteOffset: dataStart + begin, byteLength: end - begin });
  }
  const ordered = [...tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < ordered.length; i++) {
    const previous = ordered[i - 1];
    if (ordered[i].byteOffset < previous.byteOffset + previous.byteLength) {
      throw new FalconPresetError(`${file}: tensors "${previous.name}" and "${ordered[i].name}" overlap`);
    }
  }
  return tensors;
}

/** Every tensor of a checkpoint directory and the file that lists them (the weights, or their index). */
export interface CheckpointTensors {
  tensors: Map<string, SafetensorsTensor>;
  source: string;
}

/** Every tensor of a checkpoint directory: model.safetensors, or the shards of model.safetensors.index.json. */
export function readCheckpointTensors(directory: string): CheckpointTensors {
  const single = path.join(directory, "model.safetensors");
  const indexFile = path.join(directory, "model.safetensors.index.json");
  if (existsSync(single)) return { tensors: readSafetensorsHeader(single), source: single };
  if (!existsSync(indexFile)) {
    throw new FalconPresetError(
      `${directory}: no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not supported: convert them with safetensors' convert script)`,
    );
  }
  const weightMap = readJsonObject(indexFile, MAX_INDEX_JSON_BYTES)["weight_map"];
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new FalconPresetError(`${indexFile}: missing "weight_map" object`);
  }
  const shards = new Map<string, Map<string, SafetensorsTensor>>();
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    // A bare file name: "../x.safetensors", "/abs/x.safetensors" and "sub/x.safetensors" cannot leave the directory.
    if (typeof shard !== "string" || path.basename(shard) !== shard || /[\\/]/.test(shard) || !shard.endsWith(".safetensors")) {
      throw new FalconPresetError(`${indexFile}: tensor "${name}" maps to ${describeValue(shard)}, not a .safetensors file in the checkpoint directory`);
    }
    let header = shards.get(shard);
    if (!header) {
      header = readSafetensorsHeader(path.join(directory, shard));
      shards.set(shard, header);
    }
    const tensor = header.get(name);
    if (!tensor) throw new FalconPresetError(`${path.join(directory, shard)}: tensor "${name}" listed in the index is missing`);
    tensors.set(name, tensor);
  }
  return { tensors, source: indexFile };
}
