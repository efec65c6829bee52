/**
 * Hugging Face Falcon checkpoints (spec §4, §6): config.json of model_type "falcon" (or the legacy
 * RefinedWeb custom-code configs) and safetensors weights, mapped onto the native core. The fused
 * query_key_value rows are laid out as G groups × (r query heads, 1 key, 1 value); they are
 * de-interleaved into the core's [all queries; all keys; all values] rows while loading.
 */
import path from "node:path";

import type { BlockLayout, FalconBackboneConfig, FalconDType, ResolvedBackboneConfig } from "../config.js";
import { describeValue, FalconPresetError } from "../errors.js";
import { callNative, native, type NativeWeightFile, type NativeModel } from "../native.js";
import type { PreparedWeights } from "./index.js";
import { JsonFields } from "./json.js";
import { readCheckpointTensors, type SafetensorsTensor } from "./safetensors.js";

const MODEL_TYPES = ["falcon", "RefinedWeb", "RefinedWebModel"];

export function isHfConfig(json: Record<string, unknown>): boolean {
  return MODEL_TYPES.includes(json["model_type"] as string);
}

/** Parses an HF Falcon config into our config; unsupported values are refused, never ignored. */
export function parseHfConfig(json: Record<string, unknown>, file: string): FalconBackboneConfig {
  const fail = (message: string): never => {
    throw new FalconPresetError(`${file}: ${message}`);
  };
  if (!isHfConfig(json)) fail(`model_type ${describeValue(json["model_type"])} is not a Falcon model`);
  const fields = new JsonFields(json, file);
  // The custom-code RefinedWeb configs name n_head_kv only for the new decoder architecture.
  const legacyNewArchitecture = fields.has(["n_head_kv"]);
  const hiddenSize = fields.integer(["hidden_size", "n_embed"], 4544);
  const heads = fields.integer(["num_attention_heads", "n_head"], 71);
  const newArchitecture = fields.boolean(["new_decoder_architecture"], legacyNewArchitecture);
  const multiQuery = fields.boolean(["multi_query"], true);
  const parallel = fields.boolean(["parallel_attn"], true);
  const alibi = fields.boolean(["alibi"], false);
  const activation = fields.string(["activation"], "gelu");
  if (activation !== "gelu") fail(`activation "${activation}" is not supported (Falcon uses exact GELU)`);

  const kvHeads = newArchitecture ? fields.integer(["num_kv_heads", "n_head_kv"], heads) : multiQuery ? 1 : heads;
  const normsPerBlock = fields.integer(["num_ln_in_parallel_attn"], null);
  let blockLayout: BlockLayout;
  if (newArchitecture) {
    if (!parallel) fail("new_decoder_architecture with parallel_attn=false has no defined forward pass in transformers");
    const norms = normsPerBlock ?? 2;
    if (norms !== 1 && norms !== 2) fail(`num_ln_in_parallel_attn must be 1 or 2, got ${norms}`);
    blockLayout = norms === 2 ? "parallel_two_norms" : "parallel_one_norm";
  } else {
    if (normsPerBlock !== null && !(parallel && normsPerBlock === 1)) {
      fail(`num_ln_in_parallel_attn=${normsPerBlock} needs new_decoder_architecture`);
    }
    blockLayout = parallel ? "parallel_one_norm" : "sequential";
  }

  // Older configs: rope_theta + rope_scaling {type, factor}; the newest: rope_parameters {rope_type, rope_theta, factor}.
  const ropeParameters = fields.object(["rope_parameters"]);
  const scaling = fields.object(["rope_scaling"]);
  const ropeTheta = ropeParameters?.has(["rope_theta"])
    ? ropeParameters.number(["rope_theta"], 10000)
    : fields.number(["rope_theta"], 10000);
  let scalingType =
    ropeParameters?.string(["rope_type"], undefined) ?? scaling?.string(["type", "rope_type"], undefined) ?? "default";
  const scalingFactor = ropeParameters?.has(["factor"]) ? ropeParameters.number(["factor"], 1) : (scaling?.number(["factor"], 1) ?? 1);
  if (scalingType === "default") scalingType = "none";
  if (!["none", "linear", "dynamic"].includes(scalingType)) fail(`rope scaling type "${scalingType}" is not supported (linear and dynamic are)`);
  if (alibi && scalingType !== "none") fail("rope scaling cannot be combined with ALiBi");

  const torchDtype = fields.string(["torch_dtype", "dtype"], "float32");
  const dtype: FalconDType = torchDtype === "bfloat16" || torchDtype === "float16" ? torchDtype : "float32";
  return {
    vocabularySize: fields.integer(["vocab_size"], 65024),
    numLayers: fields.integer(["num_hidden_layers", "n_layer"], 32),
    numAttentionHeads: heads,
    hiddenDim: hiddenSize,
    intermediateDim: fields.integer(["ffn_hidden_size"], 4 * hiddenSize),
    layerNormEpsilon: fields.number(["layer_norm_epsilon"], 1e-5),
    attentionDropoutRate: fields.number(["attention_dropout"], 0),
    feedforwardDropoutRate: fields.number(["hidden_dropout"], 0),
    dtype,
    numKeyValueHeads: kvHeads,
    positionEncoding: alibi ? "alibi" : "rotary",
    ropeTheta,
    ropeScaling: scalingType === "none" ? null : { type: scalingType as "linear" | "dynamic", factor: scalingFactor },
    maxPositionEmbeddings: fields.integer(["max_position_embeddings"], 2048),
    blockLayout,
    useBias: fields.boolean(["bias"], false),
    tieWordEmbeddings: fields.boolean(["tie_word_embeddings"], true),
  };
}

/** One contiguous block of a checkpoint tensor and the rows of a native weight it fills. */
interface TensorPart {
  tensor: string;
  name: string;
  /** First source row and how many rows; columns are the tensor's own. */
  sourceRow: number;
  rows: number;
  rowOffset: number;
}

/** Buffers some exporters keep in the state dict; they are recomputed, never loaded. */
const IGNORED_TENSOR = /(rotary_emb|maybe_rotary)\.inv_freq$/;

function layerNormNames(layout: BlockLayout): { attn: string; mlp?: string } {
  switch (layout) {
    case "sequential":
      return { attn: "input_layernorm", mlp: "post_attention_layernorm" };
    case "parallel_one_norm":
      return { attn: "input_layernorm" };
    case "parallel_two_norms":
      return { attn: "ln_attn", mlp: "ln_mlp" };
  }
}

/** A tensor's expected shape and the config.json fields it follows from. */
interface ExpectedTensor {
  shape: number[];
  fields: string;
}

/** Every checkpoint tensor (without the transformer. prefix) this config needs, with its shape. */
function expectedTensors(config: ResolvedBackboneConfig): Map<string, ExpectedTensor> {
  const D = config.hiddenDim;
  const F = config.intermediateDim;
  const d = D / config.numAttentionHeads;
  const qkvRows = (config.numAttentionHeads + 2 * config.numKeyValueHeads) * d;
  const hidden = `hidden_size = ${D}`;
  const ffn = `ffn_hidden_size = ${F}, ${hidden}`;
  const qkv = `num_attention_heads = ${config.numAttentionHeads}, num_kv_heads = ${config.numKeyValueHeads}, ${hidden}`;
  const shapes = new Map<string, ExpectedTensor>([
    ["word_embeddings.weight", { shape: [config.vocabularySize, D], fields: `vocab_size = ${config.vocabularySize}, ${hidden}` }],
    ["ln_f.weight", { shape: [D], fields: hidden }],
    ["ln_f.bias", { shape: [D], fields: hidden }],
  ]);
  const norms = layerNormNames(config.blockLayout);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `h.${i}.`;
    for (const norm of [norms.attn, norms.mlp].filter(Boolean)) {
      shapes.set(`${p}${norm}.weight`, { shape: [D], fields: hidden }).set(`${p}${norm}.bias`, { shape: [D], fields: hidden });
    }
    shapes.set(`${p}self_attention.query_key_value.weight`, { shape: [qkvRows, D], fields: qkv });
    shapes.set(`${p}self_attention.dense.weight`, { shape: [D, D], fields: hidden });
    shapes.set(`${p}mlp.dense_h_to_4h.weight`, { shape: [F, D], fields: ffn });
    shapes.set(`${p}mlp.dense_4h_to_h.weight`, { shape: [D, F], fields: ffn });
    if (config.useBias) {
      shapes.set(`${p}self_attention.query_key_value.bias`, { shape: [qkvRows], fields: qkv });
      shapes.set(`${p}self_attention.dense.bias`, { shape: [D], fields: hidden });
      shapes.set(`${p}mlp.dense_h_to_4h.bias`, { shape: [F], fields: ffn });
      shapes.set(`${p}mlp.dense_4h_to_h.bias`, { shape: [D], fields: hidden });
    }
  }
  return shapes;
}

/** Where each block of each checkpoint tensor goes in the native model. */
function tensorParts(config: ResolvedBackboneConfig): TensorPart[] {
  const whole = (tensor: string, name: string, rows: number): TensorPart => ({ tensor, name, sourceRow: 0, rows, rowOffset: 0 });
  const D = config.hiddenDim;
  const F = config.intermediateDim;
  const H = config.numAttentionHeads;
  const groups = config.numKeyValueHeads;
  const perGroup = H / groups;
  const d = D / H;
  const parts: TensorPart[] = [
    whole("word_embeddings.weight", "token_embedding", config.vocabularySize),
    whole("ln_f.weight", "final_norm.gamma", D),
    whole("ln_f.bias", "final_norm.beta", D),
  ];
  const norms = layerNormNames(config.blockLayout);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `h.${i}.`;
    const n = `layers.${i}.`;
    parts.push(whole(`${p}${norms.attn}.weight`, `${n}attn_norm.gamma`, D), whole(`${p}${norms.attn}.bias`, `${n}attn_norm.beta`, D));
    if (norms.mlp) {
      parts.push(whole(`${p}${norms.mlp}.weight`, `${n}mlp_norm.gamma`, D), whole(`${p}${norms.mlp}.bias`, `${n}mlp_norm.beta`, D));
    }
    const fused = config.useBias ? ["weight", "bias"] : ["weight"];
    for (const kind of fused) {
      const tensor = `${p}self_attention.query_key_value.${kind}`;
      const name = `${n}qkv.${kind}`;
      for (let g = 0; g < groups; g++) {
        const groupRow = g * (perGroup + 2) * d;
        parts.push(
          { tensor, name, sourceRow: groupRow, rows: perGroup * d, rowOffset: g * perGroup * d },
          { tensor, name, sourceRow: groupRow + perGroup * d, rows: d, rowOffset: (H + g) * d },
          { tensor, name, sourceRow: groupRow + (perGroup + 1) * d, rows: d, rowOffset: (H + groups + g) * d },
        );
      }
    }
    parts.push(
      whole(`${p}self_attention.dense.weight`, `${n}attn_out.weight`, D),
      whole(`${p}mlp.dense_h_to_4h.weight`, `${n}ffn_up.weight`, F),
      whole(`${p}mlp.dense_4h_to_h.weight`, `${n}ffn_down.weight`, D),
    );
    if (config.useBias) {
      parts.push(
        whole(`${p}self_attention.dense.bias`, `${n}attn_out.bias`, D),
        whole(`${p}mlp.dense_h_to_4h.bias`, `${n}ffn_up.bias`, F),
        whole(`${p}mlp.dense_4h_to_h.bias`, `${n}ffn_down.bias`, D),
      );
    }
  }
  return parts;
}

function sameShape(actual: number[], expected: number[]): boolean {
  return actual.length === expected.length && actual.every((n, i) => n === expected[i]);
}

/**
 * Checks a checkpoint's safetensors against `config` before any model memory exists: the layer
 * count, then every tensor's presence and shape, and nothing extra. A config that implies more
 * parameters than the files hold fails here, naming the config field, the file and the mismatch.
 */
export function prepareHfWeights(directory: string, config: ResolvedBackboneConfig, configFile: string): PreparedWeights {
  const { tensors, source } = readCheckpointTensors(directory);
  // FalconForCausalLM checkpoints prefix the body with "transformer."; FalconModel ones do not.
  const prefix = [...tensors.keys()].some((name) => name.startsWith("transformer.")) ? "transformer." : "";
  const layersInFiles = new Set<number>();
  for (const name of tensors.keys()) {
    const layer = /^h\.(\d+)\./.exec(name.slice(prefix.length))?.[1];
    if (name.startsWith(prefix) && layer !== undefined) layersInFiles.add(Number(layer));
  }
  // Checked first: the expected-tensor list grows with num_hidden_layers, the files' list does not.
  if (config.numLayers !== layersInFiles.size) {
    throw new FalconPresetError(
      `${configFile}: num_hidden_layers = ${config.numLayers}, but ${source} holds ${layersInFiles.size} layers`,
    );
  }
  const expected = expectedTensors(config);
  const lookup = (name: string): SafetensorsTensor => {
    const tensor = tensors.get(name);
    if (!tensor) throw new FalconPresetError(`${source}: missing tensor "${name}"`);
    return tensor;
  };
  for (const [name, { shape, fields }] of expected) {
    const tensor = lookup(prefix + name);
    if (!sameShape(tensor.shape, shape)) {
      throw new FalconPresetError(
        `${tensor.file}: tensor "${tensor.name}" has shape [${tensor.shape.join(", ")}], expected [${shape.join(", ")}] for this config (${configFile}: ${fields})`,
      );
    }
  }
  if (!config.tieWordEmbeddings) {
    const head = lookup("lm_head.weight");
    if (!sameShape(head.shape, [config.vocabularySize, config.hiddenDim])) {
      throw new FalconPresetError(
        `${head.file}: tensor "lm_head.weight" has shape [${head.shape.join(", ")}], expected [${config.vocabularySize}, ${config.hiddenDim}] for this config (${configFile}: vocab_size = ${config.vocabularySize}, hidden_size = ${config.hiddenDim})`,
      );
    }
  }
  for (const name of tensors.keys()) {
    const known = (name.startsWith(prefix) && expected.has(name.slice(prefix.length))) || name === "lm_head.weight";
    if (!known && !IGNORED_TENSOR.test(name)) {
      throw new FalconPresetError(`${tensors.get(name)!.file}: unexpected tensor "${name}" for this config`);
    }
  }

  const parts = tensorParts(config).map((part) => ({ ...part, tensor: prefix + part.tensor }));
  if (!config.tieWordEmbeddings) parts.push({ tensor: "lm_head.weight", name: "lm_head", sourceRow: 0, rows: config.vocabularySize, rowOffset: 0 });
  const files = [...new Set([...tensors.values()].map((tensor) => path.relative(directory, tensor.file)))].sort();
  return { files, load: (model) => loadHfParts(parts, lookup, model), dispose: () => undefined };
}

/** Maps the checked tensors into the native model. */
async function loadHfParts(parts: TensorPart[], lookup: (name: string) => SafetensorsTensor, model: NativeModel): Promise<void> {
  const files = new Map<string, NativeWeightFile>();
  try {
    for (const part of parts) {
      const tensor = lookup(part.tensor);
      let file = files.get(tensor.file);
      if (!file) {
        const path = tensor.file;
        file = await callNative(() => new (native().NativeWeightFile)(path));
        files.set(tensor.file, file);
      }
      const cols = tensor.shape.length === 1 ? 1 : tensor.shape[1];
      const rowBytes = tensor.byteLength / (tensor.shape[0] || 1);
      const weightFile = file;
      await callNative(
        () => model.setWeightFromFile(part.name, part.rowOffset, weightFile, tensor.byteOffset + part.sourceRow * rowBytes, tensor.dtype, part.rows, cols, false),
        `${tensor.file}: tensor "${tensor.name}"`,
      );
    }
  } finally {
    // Weights used in place keep their mapping alive natively.
    for (const file of files.values()) file.dispose();
  }
  model.requireComplete();
}
