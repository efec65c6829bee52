/**
 * Checks that a preset's weight files are all there and whole, reading only safetensors headers and
 * HDF5 metadata (no tensor bytes), so `falcon-native inspect` can vouch for a download in
 * milliseconds instead of reporting sizes computed from config.json alone.
 */
import { existsSync, statSync } from "node:fs";
import path from "node:path";

import { parameterCount, type ResolvedBackboneConfig } from "./config.js";
import { FalconPresetError } from "./errors.js";
import { Hdf5Reader } from "./presets/hdf5.js";
import type { Preset } from "./presets/index.js";
import { readJsonObject } from "./presets/json.js";
import { kerasWeightTargets } from "./presets/keras.js";
import { readCheckpointTensors } from "./presets/safetensors.js";

export interface WeightFile {
  /** The file name inside the preset directory. */
  file: string;
  bytes: number;
}

export interface WeightFilesReport {
  files: WeightFile[];
  /** Parameters the files hold; equals the config's parameter count, or the check throws. */
  parameters: number;
}

/** Buffers Hugging Face exporters may keep in the state dict that the loader recomputes (hf.ts skips them too). */
const RECOMPUTED_TENSOR = /(rotary_emb|maybe_rotary)\.inv_freq$/;

function fileSizes(directory: string, files: Iterable<string>): WeightFile[] {
  return [...new Set(files)].sort().map((file) => ({ file: path.relative(directory, file), bytes: statSync(file).size }));
}

/** Hugging Face checkpoints: every shard's header is validated against its file's size, then the tensors are counted. */
function checkSafetensors(directory: string, config: ResolvedBackboneConfig): WeightFilesReport {
  const tensors = readCheckpointTensors(directory);
  let parameters = 0;
  for (const tensor of tensors.values()) {
    if (RECOMPUTED_TENSOR.test(tensor.name)) continue;
    // A tied head is the embedding: a stored copy is ignored by the loader.
    if (tensor.name === "lm_head.weight" && config.tieWordEmbeddings) continue;
    parameters += tensor.shape.reduce((a, b) => a * b, 1);
  }
  const expected = parameterCount(config);
  if (parameters !== expected) {
    throw new FalconPresetError(
      `${directory}: the safetensors files hold ${parameters.toLocaleString("en-US")} parameters but config.json describes ` +
        `${expected.toLocaleString("en-US")}; a shard is missing or the weights belong to another configuration`,
    );
  }
  return { files: fileSizes(directory, [...tensors.values()].map((tensor) => tensor.file)), parameters };
}

/** The .weights.h5 files of a keras-hub preset: model.weights.h5, or every shard model.weights.json names. */
function kerasWeightFileNames(directory: string): string[] {
  if (existsSync(path.join(directory, "model.weights.h5"))) return ["model.weights.h5"];
  const index = path.join(directory, "model.weights.json");
  if (!existsSync(index)) throw new FalconPresetError(`${directory}: no model.weights.h5 (or sharded model.weights.json) in the preset`);
  const weightMap = readJsonObject(index)["weight_map"];
  if (typeof weightMap !== "object" || weightMap === null) throw new FalconPresetError(`${index}: missing "weight_map"`);
  const names = Object.values(weightMap as Record<string, unknown>).flat();
  for (const name of names) {
    if (typeof name !== "string" || path.basename(name) !== name || !name.endsWith(".weights.h5")) {
      throw new FalconPresetError(`${index}: weight_map names ${JSON.stringify(name)}, not a .weights.h5 file in the preset directory`);
    }
  }
  return [...new Set(names as string[])];
}

/** keras-hub presets: every HDF5 file is checked against its superblock's size, then every variable's shape. */
async function checkKerasWeights(directory: string, config: ResolvedBackboneConfig): Promise<WeightFilesReport> {
  const shapes = new Map<string, { file: string; shape: number[] }>();
  const files: string[] = [];
  for (const name of kerasWeightFileNames(directory)) {
    const file = path.join(directory, name);
    const reader = await Hdf5Reader.open(file);
    try {
      for (const dataset of reader.datasetPaths()) {
        const info = reader.dataset(dataset);
        if (info) shapes.set(dataset, { file, shape: info.shape });
      }
    } finally {
      reader.close();
    }
    files.push(file);
  }
  let parameters = 0;
  const expected = new Set<string>();
  for (const target of kerasWeightTargets(config)) {
    expected.add(target.dataset);
    const found = shapes.get(target.dataset);
    if (!found) throw new FalconPresetError(`${directory}: missing weight /${target.dataset} (no weight file holds it)`);
    if (found.shape.join() !== target.shape.join()) {
      throw new FalconPresetError(`${found.file}: weight /${target.dataset} has shape [${found.shape.join(", ")}], expected [${target.shape.join(", ")}]`);
    }
    parameters += target.shape.reduce((a, b) => a * b, 1);
  }
  for (const [dataset, { file }] of shapes) {
    if (!expected.has(dataset)) throw new FalconPresetError(`${file}: unexpected weight /${dataset} (not part of a FalconBackbone with this config)`);
  }
  return { files: fileSizes(directory, files), parameters };
}

/** Throws a FalconPresetError naming the file when a weight file is missing, truncated or does not match the config. */
export async function checkWeightFiles(preset: Preset, config: ResolvedBackboneConfig): Promise<WeightFilesReport> {
  return preset.format === "keras" ? checkKerasWeights(preset.directory, config) : checkSafetensors(preset.directory, config);
}
