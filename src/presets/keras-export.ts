/**
 * Writes keras-hub presets (spec §5) that keras-hub 0.17 itself loads: config.json and metadata.json
 * as keras-hub writes them, and model.weights.h5 with the exact HDF5 tree of keras' saving_lib,
 * including the empty `vars` groups of variable-free layers and each group's `name` attribute.
 */
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";

import h5wasm, { dtype_to_metadata } from "h5wasm/node";

import type { FalconDType, ResolvedBackboneConfig } from "../config.js";
import { FalconPresetError } from "../errors.js";
import { callNative, type NativeFloatDType, type NativeModel } from "../native.js";
import { Hdf5Reader } from "./hdf5.js";
import { kerasWeightTargets, requireKerasCompatible } from "./keras.js";

export interface WriteKerasPresetOptions {
  /** Write into a directory that already has files, replacing config.json, metadata.json and model.weights.h5. */
  overwrite?: boolean;
}

type WeightTarget = ReturnType<typeof kerasWeightTargets>[number];
type H5Module = Awaited<typeof h5wasm.ready>;
type ElementBits = Uint16Array | Uint32Array;

const KERAS_VERSION = "3.6.0";
const KERAS_HUB_VERSION = "0.17.0";
const SCAN_BLOCK_BYTES = 16 * 1024 * 1024;

/** Layers whose `vars` group is named after an attribute rather than the layer (spec §5.5 "naming traps"). */
const RENAMED_LAYERS: Record<string, string> = {
  reversible_embedding: "token_embedding",
  layer_normalization: "final_layernorm",
};
/** Variable-free sub-layers of each decoder, which keras still gives an empty `vars` group. */
const DECODER_EMPTY_LAYERS = [
  "attention_dropout",
  "feedforward_dropout",
  "attention_layer/attention_dropout",
  "attention_layer/softmax",
];

/**
 * HDF5 datatype message bodies for the 2-byte dtypes, byte for byte as h5py writes them in keras'
 * own presets (read from the keras-written fixture files): IEEE half little-endian, and bfloat16 as a
 * 2-byte opaque type with an empty tag (keras PR #19091).
 */
const DATATYPE_MESSAGES: Record<"float16" | "bfloat16", Buffer> = {
  float16: Buffer.from([0x11, 0x20, 0x0f, 0x00, 0x02, 0, 0, 0, 0x00, 0x00, 0x10, 0x00, 0x0a, 0x05, 0x00, 0x0a, 0x0f, 0, 0, 0]),
  bfloat16: Buffer.from([0x15, 0x00, 0x00, 0x00, 0x02, 0, 0, 0]),
};
const HDF5_DATATYPE_MESSAGE = 0x0003;

/**
 * Writes `model` as a keras-hub preset in `directory`. Throws FalconPresetError for architectures
 * keras-hub's FalconBackbone cannot express and for a non-empty directory unless `overwrite`.
 * model.weights.h5 is written under a temporary name and renamed once complete.
 */
export async function writeKerasPreset(
  directory: string,
  config: ResolvedBackboneConfig,
  model: NativeModel,
  options: WriteKerasPresetOptions = {},
): Promise<void> {
  requireKerasCompatible(config, `cannot save ${directory} as a keras-hub preset`);
  prepareDirectory(directory, options.overwrite ?? false);
  const targets = kerasWeightTargets(config);
  const weightsFile = path.join(directory, "model.weights.h5");
  const partial = temporaryName(weightsFile);
  try {
    await writeWeights(partial, config, model, targets);
    renameSync(partial, weightsFile);
  } finally {
    rmSync(partial, { force: true });
  }
  removeShardedWeights(directory);
  writeFileAtomically(path.join(directory, "metadata.json"), pythonJson(kerasMetadata(targets)));
  writeFileAtomically(path.join(directory, "config.json"), pythonJson(kerasConfig(config)));
}

function prepareDirectory(directory: string, overwrite: boolean): void {
  if (!existsSync(directory)) {
    mkdirSync(directory, { recursive: true });
    return;
  }
  if (!statSync(directory).isDirectory()) throw new FalconPresetError(`${directory}: exists and is not a directory`);
  if (!overwrite && readdirSync(directory).length > 0) {
    throw new FalconPresetError(`${directory}: directory is not empty (pass { overwrite: true } to replace the preset in it)`);
  }
}

/** keras-hub prefers a sharded model.weights.json over model.weights.h5, so an overwritten preset must not keep one. */
function removeShardedWeights(directory: string): void {
  for (const name of readdirSync(directory)) {
    if (name === "model.weights.json" || /^model_\d{5}\.weights\.h5$/.test(name)) rmSync(path.join(directory, name));
  }
}

/** A hidden sibling name, so a crash never leaves a file that looks like part of the preset. */
function temporaryName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString("hex")}.partial`);
}

function writeFileAtomically(file: string, text: string): void {
  const partial = temporaryName(file);
  try {
    writeFileSync(partial, text);
    renameSync(partial, file);
  } finally {
    rmSync(partial, { force: true });
  }
}

/** keras-hub v0.17's serialized FalconBackbone: no dtype (it is chosen at load), key order as keras writes it. */
function kerasConfig(config: ResolvedBackboneConfig): Record<string, unknown> {
  return {
    module: "keras_hub.src.models.falcon.falcon_backbone",
    class_name: "FalconBackbone",
    config: {
      name: "falcon_backbone",
      trainable: true,
      vocabulary_size: config.vocabularySize,
      num_layers: config.numLayers,
      num_attention_heads: config.numAttentionHeads,
      hidden_dim: config.hiddenDim,
      intermediate_dim: config.intermediateDim,
      attention_dropout_rate: config.attentionDropoutRate,
      feedforward_dropout_rate: config.feedforwardDropoutRate,
      layer_norm_epsilon: config.layerNormEpsilon,
    },
    registered_name: "keras_hub>FalconBackbone",
  };
}

function kerasMetadata(targets: WeightTarget[]): Record<string, unknown> {
  const parameterCount = targets.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
  const now = new Date();
  const two = (n: number) => String(n).padStart(2, "0");
  // keras formats datetime.now() (local time) with "%Y-%m-%d@%H:%M:%S".
  const dateSaved = `${now.getFullYear()}-${two(now.getMonth() + 1)}-${two(now.getDate())}@${two(now.getHours())}:${two(now.getMinutes())}:${two(now.getSeconds())}`;
  return { keras_version: KERAS_VERSION, keras_hub_version: KERAS_HUB_VERSION, parameter_count: parameterCount, date_saved: dateSaved };
}

/**
 * Python's `json.dumps(value, indent=4)` for the flat objects of config.json and metadata.json.
 * Numbers follow Python's repr: 1e-05 rather than JavaScript's 1e-5. Integral values are written as
 * integers, as keras-hub's integer defaults (dropout rate 0) are.
 */
function pythonJson(value: unknown, indent = ""): string {
  if (typeof value === "number") {
    if (Number.isInteger(value) || Math.abs(value) >= 1e-4) return String(value);
    return value.toExponential().replace(/e([+-])(\d)$/, "e$10$2");
  }
  if (typeof value === "object" && value !== null) {
    const inner = `${indent}    `;
    const entries = Object.entries(value).map(([key, item]) => `${inner}${JSON.stringify(key)}: ${pythonJson(item, inner)}`);
    return entries.length === 0 ? "{}" : `{\n${entries.join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}

/** The dtype keras stores a policy's variables in: mixed policies keep float32 variables. */
function kerasVariableDType(dtype: FalconDType): NativeFloatDType {
  return dtype === "bfloat16" || dtype === "float16" ? dtype : "float32";
}

/** Every `vars` group keras writes for this config, with the layer name it records (spec §5.5). */
function kerasVarsGroups(config: ResolvedBackboneConfig, targets: WeightTarget[]): Map<string, string> {
  const groups = new Map<string, string>([
    ["vars", "falcon_backbone"],
    ["layers/input_layer/vars", "token_ids"],
    ["layers/input_layer_1/vars", "padding_mask"],
  ]);
  for (const target of targets) {
    const layer = path.posix.basename(path.posix.dirname(path.posix.dirname(target.dataset)));
    groups.set(path.posix.dirname(target.dataset), RENAMED_LAYERS[layer] ?? layer);
  }
  for (let i = 0; i < config.numLayers; i++) {
    // The decoder's group is wherever keras.ts places layer i's variables.
    const decoder = targets.find((t) => t.name.startsWith(`layers.${i}.`))!.dataset.split("/").slice(0, 2).join("/");
    groups.set(`${decoder}/vars`, `transformer_layer_${i}`);
    groups.set(`${decoder}/attention_layer/vars`, "attention");
    for (const layer of DECODER_EMPTY_LAYERS) groups.set(`${decoder}/${layer}/vars`, path.posix.basename(layer));
  }
  return groups;
}

async function writeWeights(file: string, config: ResolvedBackboneConfig, model: NativeModel, targets: WeightTarget[]): Promise<void> {
  const module = await h5wasm.ready;
  const variableDType = kerasVariableDType(config.dtype);
  // h5wasm cannot create float16 or opaque datasets, so 2-byte variables are written with a 2-byte
  // compound placeholder type whose member name marks it, and their datatype messages are then
  // rewritten in place to exactly what h5py writes (patchPlaceholderTypes).
  const placeholder = `falcon_native_${variableDType}`;
  const elementMetadata = dtype_to_metadata(variableDType === "float32" ? "<f4" : [[placeholder, "<H"]]);
  // The earliest format bounds give h5py's default layout (superblock v0, v1 object headers).
  const out = new h5wasm.File(file, "w", { libver: ["earliest", "latest"] });
  try {
    const varsGroups = kerasVarsGroups(config, targets);
    const groups = new Set<string>();
    for (const group of varsGroups.keys()) {
      const parts = group.split("/");
      for (let depth = 1; depth <= parts.length; depth++) groups.add(parts.slice(0, depth).join("/"));
    }
    // A path sorts after its prefixes, so each parent exists before its children (h5wasm makes no intermediate groups).
    for (const group of [...groups].sort()) {
      const created = out.create_group(group);
      const layerName = varsGroups.get(group);
      if (layerName !== undefined) created.create_attribute("name", layerName);
    }
    const byWeight = new Map<string, WeightTarget[]>();
    for (const target of targets) {
      const sharing = byWeight.get(target.name);
      if (sharing) sharing.push(target);
      else byWeight.set(target.name, [target]);
    }
    // One native weight in memory at a time; q, k and v come from slices of the same fused weight.
    for (const [name, weightTargets] of byWeight) {
      const weight = await callNative(() => model.getWeight(name), `reading weight ${name}`);
      const elements = convertElements(weight.data, weight.dtype, variableDType);
      for (const target of weightTargets) {
        if (weight.cols !== target.cols || weight.rows < target.rowOffset + target.rows) {
          throw new FalconPresetError(
            `weight ${name} is [${weight.rows}, ${weight.cols}], expected ${target.cols} columns and at least ${target.rowOffset + target.rows} rows`,
          );
        }
        createDataset(module, out.file_id, target, elements, elementMetadata);
        if (variableDType === "bfloat16") {
          (out.get(target.dataset) as InstanceType<typeof h5wasm.Dataset>).create_attribute("dtype", "bfloat16");
        }
      }
    }
  } finally {
    out.close();
  }
  if (variableDType !== "float32") patchPlaceholderTypes(file, placeholder, DATATYPE_MESSAGES[variableDType], targets.length);
  await verifyWeights(file, targets, variableDType);
}

/** Writes one keras variable, laying the elements out straight into the wasm heap. */
function createDataset(
  module: H5Module,
  fileId: bigint,
  target: WeightTarget,
  elements: ElementBits,
  elementMetadata: ReturnType<typeof dtype_to_metadata>,
): void {
  const count = target.rows * target.cols;
  const pointer = module._malloc(count * elements.BYTES_PER_ELEMENT);
  if (pointer === 0) throw new FalconPresetError(`out of memory writing /${target.dataset}`);
  try {
    const heap = module.HEAPU8.buffer;
    const into = elements instanceof Uint16Array ? new Uint16Array(heap, pointer, count) : new Uint32Array(heap, pointer, count);
    const { rows, cols, rowOffset } = target;
    if (target.inputMajor) {
      // Our matrices are [out, in]; keras kernels are [in, out].
      for (let r = 0; r < rows; r++) {
        const source = (rowOffset + r) * cols;
        for (let c = 0; c < cols; c++) into[c * rows + r] = elements[source + c];
      }
    } else {
      into.set(elements.subarray(rowOffset * cols, (rowOffset + rows) * cols));
    }
    const shape = target.shape.map(BigInt);
    const status = module.create_dataset(fileId, `/${target.dataset}`, BigInt(pointer), { ...elementMetadata, shape, maxshape: shape });
    if (status < 0) throw new FalconPresetError(`writing /${target.dataset} failed (HDF5 status ${status})`);
  } finally {
    module._free(pointer);
  }
}

/** The weight's elements as raw bits of `to`: a view when the dtypes agree, else a converted copy. */
function convertElements(data: Uint8Array, from: NativeFloatDType, to: NativeFloatDType): ElementBits {
  const width = from === "float32" ? 4 : 2;
  const source = width === 4
    ? new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4)
    : new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  if (from === to) return source;
  let bits32: Uint32Array;
  if (source instanceof Uint32Array) {
    bits32 = source;
  } else {
    const widen = from === "bfloat16" ? (h: number) => (h << 16) >>> 0 : float16ToFloat32Bits;
    bits32 = Uint32Array.from(source, widen);
  }
  if (to === "float32") return bits32;
  return Uint16Array.from(bits32, to === "bfloat16" ? float32BitsToBfloat16 : float32BitsToFloat16);
}

function float16ToFloat32Bits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // A subnormal half is a normal float: shift the mantissa up to its implicit bit.
  let shifted = mantissa;
  let biased = 113;
  while ((shifted & 0x400) === 0) {
    shifted <<= 1;
    biased--;
  }
  return (sign | (biased << 23) | ((shifted & 0x3ff) << 13)) >>> 0;
}

/** Round to nearest even. Our vectors already hold values of the model dtype, so this is exact for them. */
function float32BitsToBfloat16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

function float32BitsToFloat16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  const halfExponent = exponent - 112;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  // Normal halves drop 13 mantissa bits; subnormals shift the full significand further. A rounding
  // carry correctly moves into the exponent (up to infinity).
  const significand = halfExponent > 0 ? mantissa : mantissa | 0x800000;
  const shift = halfExponent > 0 ? 13 : 14 - halfExponent;
  if (shift > 24) return sign;
  const base = halfExponent > 0 ? (halfExponent << 10) | (significand >>> shift) : significand >>> shift;
  const remainder = significand & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return sign | (remainder > halfway || (remainder === halfway && (base & 1) === 1) ? base + 1 : base);
}

/**
 * Replaces the body of every placeholder datatype message with `message`, zero-padding the rest of
 * the message (HDF5 ignores bytes after a datatype's encoding). A placeholder is recognised by its
 * compound header (1 member, 2 bytes) plus the member name, preceded by a datatype message header.
 */
function patchPlaceholderTypes(file: string, memberName: string, message: Buffer, expected: number): void {
  const signature = Buffer.concat([Buffer.from([0x16, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]), Buffer.from(`${memberName}\0`, "latin1")]);
  const fd = openSync(file, "r+");
  let patched = 0;
  try {
    const size = statSync(file).size;
    const block = Buffer.alloc(SCAN_BLOCK_BYTES);
    const header = Buffer.alloc(8);
    // Blocks overlap by the signature length; a patched match no longer matches when re-read.
    for (let start = 0; start < size; start += SCAN_BLOCK_BYTES - signature.length) {
      const length = readSync(fd, block, 0, SCAN_BLOCK_BYTES, start);
      const view = block.subarray(0, length);
      for (let at = view.indexOf(signature); at >= 0; at = view.indexOf(signature, at + 1)) {
        const position = start + at;
        if (position < header.length) continue;
        readSync(fd, header, 0, header.length, position - header.length);
        const messageSize = header.readUInt16LE(2);
        if (header.readUInt16LE(0) !== HDF5_DATATYPE_MESSAGE || messageSize < message.length) continue;
        const body = Buffer.alloc(messageSize);
        message.copy(body);
        writeSync(fd, body, 0, body.length, position);
        patched++;
      }
      if (start + length >= size) break;
    }
  } finally {
    closeSync(fd);
  }
  if (patched !== expected) {
    throw new FalconPresetError(
      `${file}: found ${patched} placeholder datatype messages to rewrite, expected ${expected} (h5wasm's file layout is not the one this writer knows)`,
    );
  }
}

/** Re-reads every dataset's type and shape through HDF5 itself, so a bad patch fails here, not in keras. */
async function verifyWeights(file: string, targets: WeightTarget[], dtype: NativeFloatDType): Promise<void> {
  const reader = await Hdf5Reader.open(file);
  try {
    for (const target of targets) {
      const info = await reader.dataset(target.dataset);
      if (info?.dtype !== dtype || info.shape.join(",") !== target.shape.join(",")) {
        throw new FalconPresetError(
          `${file}: /${target.dataset} reads back as ${info ? `${info.dtype} [${info.shape.join(", ")}]` : "missing"}, expected ${dtype} [${target.shape.join(", ")}]`,
        );
      }
    }
  } finally {
    reader.close();
  }
}
