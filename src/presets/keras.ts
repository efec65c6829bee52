/**
 * keras-hub preset directories (spec §5): config.json, and weights in model.weights.h5 or sharded as
 * model.weights.json + model_NNNNN.weights.h5, with the HDF5 tree of keras' saving_lib.
 */
import { existsSync } from "node:fs";
import path from "node:path";

import type { FalconBackboneConfig, FalconDType, ResolvedBackboneConfig } from "../config.js";
import { describeValue, FalconPresetError } from "../errors.js";
import { callNative } from "../native.js";
import { HDF5_ELEMENT_BYTES, Hdf5Files, type Hdf5DatasetInfo, type Hdf5Reader } from "./hdf5.js";
import type { PreparedWeights } from "./index.js";
import { JsonFields, MAX_INDEX_JSON_BYTES, readJsonObject } from "./json.js";

export const KERAS_REGISTERED_NAMES = ["keras_hub>FalconBackbone", "keras_nlp>FalconBackbone"];

/** FalconBackbone's arguments, their config keys and JSON types. */
const KERAS_CONFIG_FIELDS: Record<string, [keyof FalconBackboneConfig, "integer" | "number"]> = {
  vocabulary_size: ["vocabularySize", "integer"],
  num_layers: ["numLayers", "integer"],
  num_attention_heads: ["numAttentionHeads", "integer"],
  hidden_dim: ["hiddenDim", "integer"],
  intermediate_dim: ["intermediateDim", "integer"],
  layer_norm_epsilon: ["layerNormEpsilon", "number"],
  attention_dropout_rate: ["attentionDropoutRate", "number"],
  feedforward_dropout_rate: ["feedforwardDropoutRate", "number"],
};
const KERAS_IGNORED_FIELDS = new Set(["name", "trainable", "dtype"]);

/** True when a config.json is a serialized Keras object rather than an HF config. */
export function isKerasConfig(json: Record<string, unknown>): boolean {
  return "registered_name" in json || "class_name" in json;
}

/** keras' DTypePolicy name from a HEAD-era config (a string or a serialized policy), if any. */
function policyName(fields: JsonFields): string | undefined {
  if (typeof fields.raw("dtype") === "object") return fields.object(["dtype"])?.object(["config"])?.string(["name"], undefined);
  return fields.string(["dtype"], undefined);
}

/** Parses a keras-hub FalconBackbone config.json into our config; rejects other classes and bad fields. */
export function parseKerasConfig(json: Record<string, unknown>, file: string): FalconBackboneConfig {
  const registered = json["registered_name"];
  if (!KERAS_REGISTERED_NAMES.includes(registered as string) && json["class_name"] !== "FalconBackbone") {
    throw new FalconPresetError(
      `${file}: registered_name ${describeValue(registered)} is not a Falcon backbone (expected one of ${KERAS_REGISTERED_NAMES.join(", ")})`,
    );
  }
  const inner = new JsonFields(json, file).object(["config"]);
  if (inner === undefined) throw new FalconPresetError(`${file}: missing "config" object`);
  const config: Record<string, unknown> = {};
  for (const key of inner.keys()) {
    // Own keys only: a field named "toString" must not find Object.prototype's.
    const mapped = Object.hasOwn(KERAS_CONFIG_FIELDS, key) ? KERAS_CONFIG_FIELDS[key] : undefined;
    if (mapped) {
      const [name, type] = mapped;
      const value = type === "integer" ? inner.integer([key], null) : inner.number([key], null);
      if (value !== null) config[name] = value;
    } else if (!KERAS_IGNORED_FIELDS.has(key)) {
      throw new FalconPresetError(`${file}: unknown FalconBackbone argument "${key}"`);
    }
  }
  for (const required of ["vocabulary_size", "num_layers", "num_attention_heads", "hidden_dim", "intermediate_dim"]) {
    if (!inner.has([required])) throw new FalconPresetError(`${file}: config is missing "${required}"`);
  }
  // Unused here, but a file giving them the wrong type is malformed, not merely ignorable.
  inner.string(["name"], "");
  inner.boolean(["trainable"], true);
  const dtype = policyName(inner);
  if (dtype !== undefined && dtype !== "float64") config["dtype"] = dtype as FalconDType;
  return config as unknown as FalconBackboneConfig;
}

/** Where each `.../vars` group lives: one file, or a list of shard files. */
class KerasWeightFiles {
  private readonly readers = new Map<string, Hdf5Reader>();
  private hdf5: Hdf5Files | undefined;

  private constructor(
    private readonly directory: string,
    private readonly weightMap: Map<string, string[]> | undefined,
  ) {}

  static open(directory: string): KerasWeightFiles {
    const single = path.join(directory, "model.weights.h5");
    const index = path.join(directory, "model.weights.json");
    if (existsSync(single)) return new KerasWeightFiles(directory, undefined);
    if (!existsSync(index)) {
      throw new FalconPresetError(`${directory}: no model.weights.h5 (or sharded model.weights.json) in the preset`);
    }
    const json = readJsonObject(index, MAX_INDEX_JSON_BYTES);
    const map = json["weight_map"];
    if (typeof map !== "object" || map === null) throw new FalconPresetError(`${index}: missing "weight_map"`);
    const weightMap = new Map<string, string[]>();
    for (const [group, files] of Object.entries(map as Record<string, unknown>)) {
      const list = typeof files === "string" ? [files] : files;
      if (!Array.isArray(list) || !list.every((f) => typeof f === "string" && /^[\w.-]+\.weights\.h5$/.test(f))) {
        throw new FalconPresetError(`${index}: weight_map entry for ${group} must name shard files in the preset directory`);
      }
      weightMap.set(group.replace(/^\/+/, ""), list as string[]);
    }
    return new KerasWeightFiles(directory, weightMap);
  }

  async reader(file: string): Promise<Hdf5Reader> {
    let reader = this.readers.get(file);
    if (!reader) {
      this.hdf5 ??= await Hdf5Files.start();
      reader = await this.hdf5.open(path.join(this.directory, file));
      this.readers.set(file, reader);
    }
    return reader;
  }

  /** model.weights.h5, or the shard index: the file a problem with the whole set of weights is reported against. */
  entryFile(): string {
    return path.join(this.directory, this.weightMap ? "model.weights.json" : "model.weights.h5");
  }

  /** The files that may hold the datasets of `group` (a `.../vars` path without a leading slash). */
  filesFor(group: string): string[] {
    if (!this.weightMap) return ["model.weights.h5"];
    return this.weightMap.get(group) ?? [];
  }

  allFiles(): string[] {
    if (!this.weightMap) return ["model.weights.h5"];
    return [...new Set([...this.weightMap.values()].flat())];
  }

  close(): void {
    this.hdf5?.close();
    this.hdf5 = undefined;
    this.readers.clear();
  }
}

/** One keras variable and where its values go in the native model. */
interface WeightTarget {
  dataset: string;
  shape: number[];
  name: string;
  rowOffset: number;
  rows: number;
  cols: number;
  inputMajor: boolean;
}

function decoderPath(layer: number): string {
  return layer === 0 ? "layers/falcon_transformer_decoder" : `layers/falcon_transformer_decoder_${layer}`;
}

/** The full keras-hub FalconBackbone variable list (spec §5.5) for a falcon-rw config. */
export function kerasWeightTargets(config: ResolvedBackboneConfig): WeightTarget[] {
  const D = config.hiddenDim;
  const H = config.numAttentionHeads;
  const d = D / H;
  const F = config.intermediateDim;
  const V = config.vocabularySize;
  const vector = (dataset: string, name: string, size: number, rowOffset = 0, shape = [size]): WeightTarget => ({
    dataset, shape, name, rowOffset, rows: size, cols: 1, inputMajor: false,
  });
  const kernel = (dataset: string, name: string, shape: number[], rows: number, cols: number, rowOffset = 0): WeightTarget => ({
    dataset, shape, name, rowOffset, rows, cols, inputMajor: true,
  });
  const targets: WeightTarget[] = [
    { dataset: "layers/reversible_embedding/vars/0", shape: [V, D], name: "token_embedding", rowOffset: 0, rows: V, cols: D, inputMajor: false },
    vector("layers/layer_normalization/vars/0", "final_norm.gamma", D),
    vector("layers/layer_normalization/vars/1", "final_norm.beta", D),
  ];
  for (let i = 0; i < config.numLayers; i++) {
    const p = decoderPath(i);
    const n = `layers.${i}.`;
    const attention = `${p}/attention_layer`;
    targets.push(
      vector(`${p}/input_layernorm/vars/0`, `${n}attn_norm.gamma`, D),
      vector(`${p}/input_layernorm/vars/1`, `${n}attn_norm.beta`, D),
      vector(`${p}/post_attention_layernorm/vars/0`, `${n}mlp_norm.gamma`, D),
      vector(`${p}/post_attention_layernorm/vars/1`, `${n}mlp_norm.beta`, D),
    );
    ["query_dense", "key_dense", "value_dense"].forEach((part, j) => {
      targets.push(
        kernel(`${attention}/${part}/vars/0`, `${n}qkv.weight`, [D, H, d], H * d, D, j * H * d),
        vector(`${attention}/${part}/vars/1`, `${n}qkv.bias`, H * d, j * H * d, [H, d]),
      );
    });
    targets.push(
      kernel(`${attention}/output_dense/vars/0`, `${n}attn_out.weight`, [D, D], D, D),
      vector(`${attention}/output_dense/vars/1`, `${n}attn_out.bias`, D),
      kernel(`${p}/dense_h_to_4h/vars/0`, `${n}ffn_up.weight`, [D, F], F, D),
      vector(`${p}/dense_h_to_4h/vars/1`, `${n}ffn_up.bias`, F),
      kernel(`${p}/dense_4h_to_h/vars/0`, `${n}ffn_down.weight`, [F, D], D, F),
      vector(`${p}/dense_4h_to_h/vars/1`, `${n}ffn_down.bias`, D),
    );
  }
  return targets;
}

/** The config a keras preset can describe: falcon-rw. */
export function requireKerasCompatible(config: ResolvedBackboneConfig, what: string): void {
  const problems: string[] = [];
  if (config.positionEncoding !== "alibi") problems.push("rotary position encoding");
  if (config.numKeyValueHeads !== config.numAttentionHeads) problems.push("grouped or multi-query KV heads");
  if (config.blockLayout !== "sequential") problems.push("a parallel block layout");
  if (!config.useBias) problems.push("projections without bias");
  if (!config.tieWordEmbeddings) problems.push("an untied LM head");
  if (problems.length > 0) {
    throw new FalconPresetError(`${what}: keras-hub's FalconBackbone (falcon-rw) cannot express ${problems.join(", ")}`);
  }
}

/** The config.json fields a keras shape's dimensions follow from, for naming a mismatch. */
function kerasShapeFields(config: ResolvedBackboneConfig, actual: number[], expected: number[]): string {
  const fields: [string, number][] = [
    ["vocabulary_size", config.vocabularySize],
    ["hidden_dim", config.hiddenDim],
    ["intermediate_dim", config.intermediateDim],
    ["num_attention_heads", config.numAttentionHeads],
    ["hidden_dim / num_attention_heads", config.hiddenDim / config.numAttentionHeads],
  ];
  const differing = expected.filter((n, i) => actual[i] !== n);
  const named = fields.filter(([, value]) => (differing.length > 0 ? differing : expected).includes(value));
  return named.map(([name, value]) => `${name} = ${value}`).join(", ");
}

const DECODER_LAYER = /^layers\/falcon_transformer_decoder(?:_(\d+))?\//;

/**
 * Checks a keras preset's weights against `config` before any model memory exists: the layer
 * count, then every variable's presence and shape, and nothing extra. A config that implies more
 * parameters than the files hold fails here, naming the config field, the file and the mismatch.
 */
export async function prepareKerasWeights(directory: string, config: ResolvedBackboneConfig, configFile: string): Promise<PreparedWeights> {
  const files = KerasWeightFiles.open(directory);
  try {
    const layersInFiles = new Set<number>();
    const datasets: { dataset: string; file: string }[] = [];
    for (const file of files.allFiles()) {
      const reader = await files.reader(file);
      for (const dataset of await reader.datasetPaths()) {
        const layer = DECODER_LAYER.exec(dataset);
        if (layer) layersInFiles.add(Number(layer[1] ?? 0));
        datasets.push({ dataset, file: reader.path });
      }
    }
    // Checked first: the expected-variable list grows with num_layers, the files' list does not.
    if (config.numLayers !== layersInFiles.size) {
      throw new FalconPresetError(`${configFile}: num_layers = ${config.numLayers}, but ${files.entryFile()} holds ${layersInFiles.size} decoder layers`);
    }
    const targets = kerasWeightTargets(config);
    const expected = new Set(targets.map((t) => t.dataset));
    for (const { dataset, file } of datasets) {
      if (!expected.has(dataset)) {
        throw new FalconPresetError(`${file}: unexpected weight /${dataset} (not part of a FalconBackbone with this config)`);
      }
    }
    const found: { target: WeightTarget; reader: Hdf5Reader; info: Hdf5DatasetInfo }[] = [];
    for (const target of targets) {
      const group = target.dataset.slice(0, target.dataset.lastIndexOf("/"));
      let located: { reader: Hdf5Reader; info: Hdf5DatasetInfo } | undefined;
      for (const file of files.filesFor(group)) {
        const reader = await files.reader(file);
        const info = await reader.dataset(target.dataset);
        if (info) {
          located = { reader, info };
          break;
        }
      }
      if (!located) {
        const where = files.filesFor(group).map((f) => path.join(directory, f)).join(" or ") || `${directory} (no shard lists /${group})`;
        throw new FalconPresetError(`${where}: missing weight /${target.dataset}`);
      }
      const { reader, info } = located;
      if (info.shape.length !== target.shape.length || info.shape.some((n, i) => n !== target.shape[i])) {
        throw new FalconPresetError(
          `${reader.path}: weight /${target.dataset} has shape [${info.shape.join(", ")}], expected [${target.shape.join(", ")}] for this config (${configFile}: ${kerasShapeFields(config, info.shape, target.shape)})`,
        );
      }
      found.push({ target, reader, info });
    }
    // A dataset may declare a shape without storing its bytes: the files must hold what the config implies.
    const claimed = new Map<Hdf5Reader, number>();
    for (const { reader, info } of found) {
      claimed.set(reader, (claimed.get(reader) ?? 0) + info.shape.reduce((a, b) => a * b, 1) * HDF5_ELEMENT_BYTES[info.dtype]);
    }
    for (const [reader, bytes] of claimed) {
      if (bytes > reader.byteSize) {
        throw new FalconPresetError(
          `${reader.path}: the weights this config implies (${configFile}) take ${bytes} bytes, but the file has only ${reader.byteSize}`,
        );
      }
    }
    return {
      files: files.allFiles(),
      load: async (model) => {
        try {
          for (const { target, reader, info } of found) {
            const bytes = await reader.readRaw(target.dataset, info);
            await callNative(
              () => model.setWeight(target.name, target.rowOffset, bytes, info.dtype, target.rows, target.cols, target.inputMajor),
              `${reader.path}: /${target.dataset}`,
            );
          }
        } finally {
          files.close();
        }
        model.requireComplete();
      },
      dispose: () => files.close(),
    };
  } catch (error) {
    files.close();
    throw error;
  }
}
