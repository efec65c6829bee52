/**
 * The parsers under fuzz, each as a user reaches it: a case builds a mutated copy of a valid seed in
 * its own directory, then loads it through the public API and uses what loaded. Families that run in
 * the child runner have `prepare`; the CLI family builds an argv that the parent runs as a process.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

import { FalconBackbone, FalconCausalLM, FalconError, FalconTokenizer, FALCON_DTYPES } from "../../../src/index.js";
import {
  RawJson,
  jsonText,
  mutateBytes,
  mutateJson,
  replaceFile,
  signatureOffsets,
  type JsonValue,
} from "./mutate.js";
import type { FuzzRandom } from "./random.js";
import { GENERATED, HF_CHECKPOINTS, HF_SHARDED_CHECKPOINT, KERAS_PRESETS } from "./seeds.js";

export interface CaseContext {
  rng: FuzzRandom;
  index: number;
  /** An empty directory of this case's own. */
  directory: string;
  /** The run's generated seeds (see seeds.ts). */
  seeds: string;
  notes: string[];
}

export interface PreparedCase {
  /** Loads and uses the input; true when it loaded, false when it was refused with a FalconError. */
  run(): Promise<boolean>;
  /** Set when the input must be refused (a shard outside the preset, a wrong-typed field): loading it fails the case. */
  mustFail?: string;
}

export interface InProcessFamily {
  name: string;
  prepare(context: CaseContext): PreparedCase;
}

// ------------------------------------------------------------------------------------------- helpers

const fileCache = new Map<string, Uint8Array>();

function seedBytes(file: string): Uint8Array {
  let bytes = fileCache.get(file);
  if (!bytes) {
    bytes = new Uint8Array(readFileSync(file));
    fileCache.set(file, bytes);
  }
  return bytes;
}

function seedJson(file: string): JsonValue {
  return JSON.parse(Buffer.from(seedBytes(file)).toString("utf8")) as JsonValue;
}

/** A seed's JSON file, or `fallback` where that seed has none (a base-model checkpoint has no generation config). */
function seedJsonOr(file: string, fallback: JsonValue): JsonValue {
  return existsSync(file) ? seedJson(file) : structuredClone(fallback);
}

/** Links every file of `source` into `target` (mutations replace a link, never write through it). */
function linkSeed(source: string, target: string): void {
  mkdirSync(target, { recursive: true });
  for (const entry of readdirSync(source, { withFileTypes: true })) {
    if (entry.isFile()) symlinkSync(path.join(source, entry.name), path.join(target, entry.name));
    else if (entry.isDirectory()) linkSeed(path.join(source, entry.name), path.join(target, entry.name));
  }
}

/** Writes new contents in place of a file or of a link to a read-only seed (never through the link). */
function replaceWith(file: string, contents: Uint8Array | string): void {
  rmSync(file, { force: true });
  writeFileSync(file, contents);
}

/** Applies 1-3 JSON mutations to a seed file and writes the result (sometimes as invalid text). */
function mutateJsonFile(rng: FuzzRandom, seed: string, target: string, notes: string[], fieldNames: readonly string[], fallback: JsonValue = {}): void {
  const root = { value: seedJsonOr(seed, fallback) };
  const count = rng.between(1, 3);
  for (let i = 0; i < count; i++) mutateJson(rng, root, notes, fieldNames);
  let text = jsonText(root.value, true);
  if (rng.chance(0.1)) {
    const bytes = mutateBytes(rng, Buffer.from(text), notes);
    replaceWith(target, bytes);
    return;
  }
  if (rng.chance(0.05)) text = `\ufeff${text}`;
  replaceWith(target, text);
}

/** A FalconError with a message is the only acceptable way for a parser to refuse input. */
async function attempt(operation: () => unknown): Promise<boolean> {
  try {
    await operation();
    return true;
  } catch (error) {
    if (error instanceof FalconError && error.message.trim() !== "") return false;
    throw error;
  }
}

/** Loads a backbone and runs one short forward pass, freeing it whatever happens. */
async function loadAndRunBackbone(directory: string, dtype?: (typeof FALCON_DTYPES)[number]): Promise<boolean> {
  let backbone: FalconBackbone | undefined;
  await attempt(async () => {
    backbone = await FalconBackbone.fromPreset(directory, dtype ? { dtype } : {});
  });
  if (!backbone) return false;
  try {
    await attempt(() => backbone!.call({ tokenIds: new Int32Array([1, 2, 3]), shape: [1, 3] }));
  } finally {
    backbone.dispose();
  }
  return true;
}

/** Loads a causal LM (with its tokenizer and generation settings) and generates two tokens. */
async function loadAndGenerate(directory: string): Promise<boolean> {
  let lm: FalconCausalLM | undefined;
  await attempt(async () => {
    lm = await FalconCausalLM.fromPreset(directory);
  });
  if (!lm) return false;
  try {
    await attempt(() => lm!.generate([[1, 2, 3]], { maxNewTokens: 2 }));
    if (lm.tokenizer) await attempt(() => lm!.generate("The falcon", { maxNewTokens: 2 }));
  } finally {
    lm.dispose();
  }
  return true;
}

const DTYPE_OVERRIDES = [undefined, undefined, undefined, "bfloat16", "float16", "int8", "int4"] as const;

// ------------------------------------------------------------------------------------- safetensors

interface SafetensorsParts {
  header: Record<string, JsonValue>;
  data: Uint8Array;
}

function splitSafetensors(bytes: Uint8Array): SafetensorsParts {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = Number(view.readBigUInt64LE(0));
  return { header: JSON.parse(view.toString("utf8", 8, 8 + length)) as Record<string, JsonValue>, data: bytes.subarray(8 + length) };
}

const SAFETENSORS_FIELDS = ["dtype", "shape", "data_offsets", "__metadata__", "format"];

/** A mutated safetensors file: header JSON edits (re-serialised, aligned or not), raw bytes, or a bad length field. */
function mutatedSafetensors(rng: FuzzRandom, seed: Uint8Array, notes: string[]): Uint8Array {
  if (rng.chance(0.3)) {
    let bytes = seed;
    const count = rng.between(1, 3);
    for (let i = 0; i < count; i++) bytes = mutateBytes(rng, bytes, notes, [0, 8]);
    return bytes;
  }
  const { header, data } = splitSafetensors(seed);
  const root: { value: JsonValue } = { value: header };
  const tensors = Object.keys(header).filter((name) => name !== "__metadata__");
  const special = rng.chance(0.35) && tensors.length > 1;
  if (special) {
    const name = rng.pick(tensors);
    const entry = header[name] as Record<string, JsonValue>;
    const other = header[rng.pick(tensors.filter((n) => n !== name))] as Record<string, JsonValue>;
    const kind = rng.pick(["alias", "huge-shape", "dtype", "transpose", "offsets-past-end", "empty"]);
    if (kind === "alias") entry["data_offsets"] = other["data_offsets"]!;
    if (kind === "huge-shape") {
      entry["shape"] = rng.pick<JsonValue>([[2 ** 31, 2 ** 31], [2 ** 53 - 1], [2 ** 26, 2 ** 26, 2 ** 26], [0, 2 ** 40], [4294967296, 1]]);
      if (rng.chance(0.5)) entry["data_offsets"] = rng.pick<JsonValue>([[0, 2 ** 53 - 1], [0, 2 ** 62], [2 ** 53 - 4, 2 ** 53 - 1]]);
    }
    if (kind === "dtype") entry["dtype"] = rng.pick<JsonValue>(["F16", "BF16", "F32", "F64", "I8", "U8", "BOOL", "F8_E4M3", { F32: 1 }, { toString: 1 }, ["F32"], ""]);
    if (kind === "transpose") entry["shape"] = [...(entry["shape"] as number[])].reverse();
    if (kind === "offsets-past-end") entry["data_offsets"] = [data.length - 4, data.length + 4];
    if (kind === "empty") {
      entry["shape"] = [0];
      entry["data_offsets"] = [0, 0];
    }
    notes.push(`tensor "${name}": ${kind} → ${jsonText(entry).slice(0, 120)}`);
  } else {
    const count = rng.between(1, 3);
    for (let i = 0; i < count; i++) mutateJson(rng, root, notes, SAFETENSORS_FIELDS);
  }
  let text = jsonText(root.value);
  if (rng.chance(0.5)) text += " ".repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  else notes.push("header unpadded (tensor data may be unaligned)");
  const headerBytes = Buffer.from(text);
  let declared = BigInt(headerBytes.length);
  if (rng.chance(0.15)) {
    declared = rng.pick([0n, 1n, declared - 1n, declared + 1n, declared + 3n, BigInt(headerBytes.length + data.length), 2n ** 31n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]);
    notes.push(`header length field ${declared} (header is ${headerBytes.length} bytes)`);
  }
  const out = Buffer.alloc(8 + headerBytes.length + data.length);
  out.writeBigUInt64LE(declared);
  headerBytes.copy(out, 8);
  out.set(data, 8 + headerBytes.length);
  if (rng.chance(0.1)) {
    const cut = rng.below(data.length);
    notes.push(`tensor data truncated by ${data.length - cut} bytes`);
    return out.subarray(0, 8 + headerBytes.length + cut);
  }
  return out;
}

const safetensors: InProcessFamily = {
  name: "safetensors",
  prepare({ rng, directory, notes }) {
    const seed = rng.pick(HF_CHECKPOINTS);
    notes.push(`seed ${path.relative(path.dirname(path.dirname(path.dirname(seed))), seed)}`);
    const checkpoint = path.join(directory, "checkpoint");
    linkSeed(seed, checkpoint);
    const file = path.join(checkpoint, "model.safetensors");
    if (rng.chance(0.08)) replaceFile(rng, file, notes);
    else replaceWith(file, mutatedSafetensors(rng, seedBytes(path.join(seed, "model.safetensors")), notes));
    const dtype = rng.pick(DTYPE_OVERRIDES);
    if (dtype) notes.push(`dtype override ${dtype}`);
    return { run: () => loadAndRunBackbone(checkpoint, dtype) };
  },
};

const INDEX_FIELDS = ["weight_map", "metadata", "total_size"];

const safetensorsIndex: InProcessFamily = {
  name: "safetensors-index",
  prepare({ rng, directory, notes }) {
    const checkpoint = path.join(directory, "checkpoint");
    linkSeed(HF_SHARDED_CHECKPOINT, checkpoint);
    const indexFile = path.join(checkpoint, "model.safetensors.index.json");
    const index = seedJson(indexFile) as { weight_map: Record<string, string> };
    const shards = [...new Set(Object.values(index.weight_map))];
    const kind = rng.weighted<string>([[4, "index-json"], [3, "traversal"], [2, "shard-bytes"], [1, "shard-file"], [1, "index-file"]]);
    let mustFail: string | undefined;
    if (kind === "index-json") {
      mutateJsonFile(rng, indexFile, indexFile, notes, INDEX_FIELDS);
    } else if (kind === "traversal") {
      // A valid copy of the shard outside the checkpoint: a loader that follows the path would succeed.
      const tensor = rng.pick(Object.keys(index.weight_map));
      const shard = index.weight_map[tensor]!;
      const outside = path.join(directory, "outside");
      mkdirSync(outside, { recursive: true });
      symlinkSync(path.join(HF_SHARDED_CHECKPOINT, shard), path.join(outside, shard));
      const escaping = [`../outside/${shard}`, path.join(outside, shard), `sub/../../outside/${shard}`, `..\\outside\\${shard}`, `./../outside/${shard}`];
      const inside = [`./${shard}`, `${shard}/`, "..", ".safetensors", `${shard}\u0000.txt`, "config.json", "model-00003-of-00002.safetensors", `sub/${shard}`];
      const value = rng.chance(0.6) ? rng.pick(escaping) : rng.pick(inside);
      if (escaping.includes(value) && !value.includes("\\")) mustFail = `shard path ${JSON.stringify(value)} escapes the checkpoint directory`;
      const edited = { ...index, weight_map: { ...index.weight_map, [tensor]: value } };
      replaceWith(indexFile, JSON.stringify(edited, null, 2));
      notes.push(`weight_map["${tensor}"] = ${JSON.stringify(value)}`);
    } else if (kind === "shard-bytes") {
      const shard = rng.pick(shards);
      notes.push(`shard ${shard}`);
      replaceWith(path.join(checkpoint, shard), mutatedSafetensors(rng, seedBytes(path.join(HF_SHARDED_CHECKPOINT, shard)), notes));
    } else if (kind === "shard-file") {
      replaceFile(rng, path.join(checkpoint, rng.pick(shards)), notes);
    } else {
      replaceFile(rng, indexFile, notes);
    }
    return { run: () => loadAndRunBackbone(checkpoint), mustFail };
  },
};

// ------------------------------------------------------------------------------------------ configs

const HF_CONFIG_FIELDS = [
  "model_type", "architectures", "hidden_size", "n_embed", "num_attention_heads", "n_head", "n_head_kv", "num_kv_heads",
  "new_decoder_architecture", "multi_query", "parallel_attn", "alibi", "activation", "num_ln_in_parallel_attn",
  "rope_parameters", "rope_theta", "rope_scaling", "torch_dtype", "dtype", "vocab_size", "num_hidden_layers", "n_layer",
  "ffn_hidden_size", "layer_norm_epsilon", "attention_dropout", "hidden_dropout", "max_position_embeddings", "bias",
  "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "type", "factor", "rope_type",
];

/** Sizes that pass every plausibility cap (2^24) yet multiply into gigabytes. */
const LARGE_DIMENSIONS = [2 ** 24, 2 ** 24 - 1, 2 ** 24 + 1, 1e6, 2 ** 20, 65536];

/** Writes the seed config with one size field set to a large value (at `inner`, when sizes sit in a sub-object). */
function largeDimension(rng: FuzzRandom, seed: string, target: string, fields: readonly string[], notes: string[], inner?: string): void {
  const json = seedJson(seed) as Record<string, JsonValue>;
  const sizes = (inner ? json[inner] : json) as Record<string, JsonValue>;
  const field = rng.pick(fields);
  sizes[field] = rng.pick(LARGE_DIMENSIONS);
  notes.push(`${inner ? `${inner}.` : ""}${field} = ${sizes[field]}`);
  replaceWith(target, JSON.stringify(json, null, 2));
}

/**
 * Writes the seed config with one field given a value of the wrong JSON type ("false" for a boolean,
 * "2" or 2.5 for a count): such a config must be refused, never read as something else.
 */
function wrongType(rng: FuzzRandom, seed: string, target: string, fields: { booleans: readonly string[]; counts: readonly string[] }, notes: string[], inner?: string): string {
  const json = seedJson(seed) as Record<string, JsonValue>;
  const values = (inner ? json[inner] : json) as Record<string, JsonValue>;
  const boolean = fields.booleans.length > 0 && rng.chance(0.5);
  const field = rng.pick(boolean ? fields.booleans : fields.counts);
  const current = values[field];
  values[field] = boolean ? rng.pick<JsonValue>(["false", "true", 0, 1, "yes", [false]])
    : rng.pick<JsonValue>([String(typeof current === "number" ? current : 2), 2.5, true, [2], { value: 2 }]);
  const where = `${inner ? `${inner}.` : ""}${field}`;
  notes.push(`${where} = ${jsonText(values[field]!)}`);
  replaceWith(target, JSON.stringify(json, null, 2));
  return `${where} = ${jsonText(values[field]!)} has the wrong type`;
}

const hfConfig: InProcessFamily = {
  name: "hf-config",
  prepare({ rng, directory, notes }) {
    const seed = rng.pick(HF_CHECKPOINTS);
    notes.push(`seed ${path.basename(path.dirname(seed))}/${path.basename(seed)}`);
    const checkpoint = path.join(directory, "checkpoint");
    linkSeed(seed, checkpoint);
    const target = rng.chance(0.8) ? "config.json" : "generation_config.json";
    const file = path.join(checkpoint, target);
    let mustFail: string | undefined;
    if (rng.chance(0.08)) replaceFile(rng, file, notes);
    else if (target === "config.json" && rng.chance(0.06)) largeDimension(rng, path.join(seed, target), file, ["num_hidden_layers", "hidden_size", "vocab_size", "ffn_hidden_size", "num_attention_heads", "max_position_embeddings"], notes);
    else if (target === "config.json" && rng.chance(0.06)) {
      mustFail = wrongType(rng, path.join(seed, target), file, {
        booleans: ["alibi", "bias", "parallel_attn", "multi_query", "new_decoder_architecture", "tie_word_embeddings"],
        counts: ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "ffn_hidden_size"],
      }, notes);
    } else mutateJsonFile(rng, path.join(seed, target), file, notes, HF_CONFIG_FIELDS, { bos_token_id: 11, eos_token_id: 11 });
    return { run: () => loadAndGenerate(checkpoint), mustFail };
  },
};

const KERAS_CONFIG_FIELDS = [
  "vocabulary_size", "num_layers", "num_attention_heads", "hidden_dim", "intermediate_dim", "layer_norm_epsilon",
  "attention_dropout_rate", "feedforward_dropout_rate", "dtype", "name", "trainable", "registered_name", "class_name", "module", "config",
];
const PREPROCESSOR_FIELDS = ["sequence_length", "add_start_token", "add_end_token", "config", "class_name", "registered_name"];
const PREPROCESSOR_SEED: JsonValue = {
  module: "keras_hub.src.models.falcon.falcon_causal_lm_preprocessor",
  class_name: "FalconCausalLMPreprocessor",
  config: { name: "falcon_causal_lm_preprocessor", trainable: true, sequence_length: 16, add_start_token: true, add_end_token: false },
  registered_name: "keras_hub>FalconCausalLMPreprocessor",
};

const kerasConfig: InProcessFamily = {
  name: "keras-config",
  prepare({ rng, directory, notes }) {
    const seed = rng.pick(KERAS_PRESETS);
    notes.push(`seed ${path.basename(path.dirname(seed))}`);
    const preset = path.join(directory, "preset");
    linkSeed(seed, preset);
    const target = rng.weighted<string>([[6, "config.json"], [1, "metadata.json"], [2, "preprocessor.json"]]);
    const file = path.join(preset, target);
    let mustFail: string | undefined;
    if (rng.chance(0.08)) {
      replaceFile(rng, file, notes);
    } else if (target === "config.json" && rng.chance(0.06)) {
      largeDimension(rng, path.join(seed, target), file, ["vocabulary_size", "num_layers", "num_attention_heads", "hidden_dim", "intermediate_dim"], notes, "config");
    } else if (target === "config.json" && rng.chance(0.06)) {
      mustFail = wrongType(rng, path.join(seed, target), file, { booleans: [], counts: ["vocabulary_size", "num_layers", "num_attention_heads", "hidden_dim", "intermediate_dim"] }, notes, "config");
    } else if (target === "preprocessor.json") {
      const root = { value: structuredClone(PREPROCESSOR_SEED) };
      const count = rng.between(1, 3);
      for (let i = 0; i < count; i++) mutateJson(rng, root, notes, PREPROCESSOR_FIELDS);
      writeFileSync(file, jsonText(root.value, true));
    } else {
      mutateJsonFile(rng, path.join(seed, target), file, notes, KERAS_CONFIG_FIELDS);
    }
    return { run: () => loadAndGenerate(preset), mustFail };
  },
};

// ------------------------------------------------------------------------------------------- HDF5

const HDF5_SIGNATURES = ["\x89HDF", "OHDR", "OCHK", "TREE", "HEAP", "SNOD", "GCOL", "FRHP", "FHDB", "FHIB", "BTHD", "BTLF", "BTIN", "FSHD", "FSSE", "vars", "dtype"];

const kerasH5: InProcessFamily = {
  name: "keras-h5",
  prepare({ rng, directory, seeds, notes }) {
    const sharded = rng.chance(0.25);
    const seed = sharded ? path.join(seeds, GENERATED.kerasSharded) : rng.pick(KERAS_PRESETS);
    notes.push(`seed ${sharded ? "sharded keras preset" : path.basename(path.dirname(seed))}`);
    const preset = path.join(directory, "preset");
    linkSeed(seed, preset);
    const weightFiles = sharded ? ["model_00000.weights.h5", "model_00001.weights.h5"] : ["model.weights.h5"];
    let mustFail: string | undefined;
    const kind = rng.weighted<string>(sharded ? [[5, "bytes"], [2, "index-json"], [1, "traversal"], [1, "file"]] : [[12, "bytes"], [1, "file"]]);
    if (kind === "bytes") {
      const weights = rng.pick(weightFiles);
      let bytes = seedBytes(path.join(seed, weights));
      const hotspots = signatureOffsets(bytes, HDF5_SIGNATURES);
      const count = rng.between(1, 3);
      for (let i = 0; i < count; i++) bytes = mutateBytes(rng, bytes, notes, hotspots);
      replaceWith(path.join(preset, weights), bytes);
    } else if (kind === "index-json") {
      mutateJsonFile(rng, path.join(seed, "model.weights.json"), path.join(preset, "model.weights.json"), notes, ["weight_map", "metadata"]);
    } else if (kind === "traversal") {
      const index = seedJson(path.join(seed, "model.weights.json")) as { weight_map: Record<string, string[]> };
      const group = rng.pick(Object.keys(index.weight_map));
      const shard = index.weight_map[group]![0]!;
      const outside = path.join(directory, "outside");
      mkdirSync(outside);
      symlinkSync(path.join(seed, shard), path.join(outside, shard));
      const value = rng.pick([`../outside/${shard}`, path.join(outside, shard), `./../outside/${shard}`]);
      mustFail = `shard path ${JSON.stringify(value)} escapes the preset directory`;
      index.weight_map[group] = [value];
      replaceWith(path.join(preset, "model.weights.json"), JSON.stringify(index));
      notes.push(`weight_map["${group}"] = ${JSON.stringify(value)}`);
    } else {
      replaceFile(rng, path.join(preset, rng.pick(sharded ? [...weightFiles, "model.weights.json"] : weightFiles)), notes);
    }
    return { run: () => loadAndRunBackbone(preset), mustFail };
  },
};

// -------------------------------------------------------------------------------------- tokenizers

/** Regular expressions that are invalid, or valid and exponential on a run of "a" with no match at the end. */
const HOSTILE_PATTERNS = ["(a+)+$", "(a|aa)+$", "(a*)*b", "(", "[", "\\", "a{2147483648}", "(?<=a+)b", "\\p{NoSuchProperty}", "\\k<name>", "(?i", "*", ""];
const HF_TOKENIZER_FIELDS = [
  "model", "vocab", "merges", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "type", "id",
  "content", "special", "pattern", "Regex", "String", "behavior", "invert", "pretokenizers", "normalizers", "decoders",
  "single", "pair", "special_tokens", "add_prefix_space", "use_regex", "trim_offsets", "unk_token", "byte_fallback",
  "continuing_subword_prefix", "end_of_word_suffix", "dropout", "truncation", "padding", "max_length",
];
const TEXTS = [
  "The falcon flies over the sea.",
  "a".repeat(40) + "!",
  "<|endoftext|>the<|endoftext|> falcon",
  "\u0000\ud800 \u0085\ufeff\r\n\t  日本 🦅",
];

function hostileTokenizerEdit(rng: FuzzRandom, json: Record<string, JsonValue>, notes: string[]): void {
  const kind = rng.pick(["split-regex", "replace-regex", "added-token", "nested-sequence", "template", "model-type"]);
  const pattern = rng.pick(HOSTILE_PATTERNS);
  switch (kind) {
    case "split-regex":
      json["pre_tokenizer"] = { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: pattern }, behavior: rng.pick(["Isolated", "Removed", "MergedWithNext", "Bogus"]), invert: rng.chance(0.3) }, json["pre_tokenizer"] ?? null] };
      notes.push(`pre_tokenizer Split regex ${JSON.stringify(pattern)}`);
      break;
    case "replace-regex":
      json["normalizer"] = { type: "Replace", pattern: { Regex: pattern }, content: rng.pick(["", "aa", "$1"]) };
      notes.push(`normalizer Replace regex ${JSON.stringify(pattern)}`);
      break;
    case "added-token": {
      const tokens = json["added_tokens"] as Record<string, JsonValue>[];
      const id = rng.pick<JsonValue>([-1, 2 ** 31, 2 ** 53, 1.5, "5", null, 0, 300]);
      tokens.push({ id, content: rng.pick(["<x>", "", "a", "<|endoftext|>"]), single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
      notes.push(`added token id ${JSON.stringify(id)}`);
      break;
    }
    case "nested-sequence": {
      const depth = rng.pick([100, 20_000]);
      const field = rng.pick(["pre_tokenizer", "normalizer", "decoder", "post_processor"]);
      const list = { pre_tokenizer: "pretokenizers", normalizer: "normalizers", decoder: "decoders", post_processor: "processors" }[field]!;
      json[field] = new RawJson(`{"type":"Sequence","${list}":[`.repeat(depth) + "]}".repeat(depth));
      notes.push(`${field}: ${depth} nested Sequences`);
      break;
    }
    case "template":
      json["post_processor"] = { type: "TemplateProcessing", single: rng.pick<JsonValue>(["$A </s>", 5, [{ Sequence: { id: "A", type_id: "x" } }]]), pair: "$A $B", special_tokens: rng.pick<JsonValue>([{}, "x", { "</s>": { id: "</s>", ids: [-1], tokens: ["</s>"] } }]) };
      notes.push("post_processor TemplateProcessing with hostile template");
      break;
    default: {
      const model = json["model"] as Record<string, JsonValue>;
      model["type"] = rng.pick(["WordPiece", "Unigram", "WordLevel", "bpe", ""]);
      notes.push(`model.type ${JSON.stringify(model["type"])}`);
    }
  }
}

async function loadAndUseTokenizer(rng: FuzzRandom, directory: string): Promise<boolean> {
  let tokenizer: FalconTokenizer | undefined;
  await attempt(() => {
    tokenizer = FalconTokenizer.fromPreset(directory);
  });
  if (!tokenizer) return false;
  const loaded = tokenizer;
  for (const text of TEXTS) await attempt(() => loaded.encode(text));
  const random = Array.from(rng.bytes(256), (byte) => String.fromCharCode(byte < 128 ? byte : 0x3000 + byte)).join("");
  await attempt(() => loaded.encodeBatch([random, ""]));
  const size = loaded.vocabularySize;
  await attempt(() => loaded.decode(Array.from({ length: 16 }, () => rng.below(size))));
  await attempt(() => loaded.decode([rng.pick([-1, size, 1.5, Number.NaN, 2 ** 31])]));
  return true;
}

const tokenizer: InProcessFamily = {
  name: "tokenizer",
  prepare({ rng, directory, seeds, notes }) {
    const dir = path.join(directory, "tokenizer");
    if (rng.chance(0.55)) {
      notes.push("seed HF tokenizer.json");
      const seed = path.join(seeds, GENERATED.hfTokenizer);
      linkSeed(seed, dir);
      const file = path.join(dir, "tokenizer.json");
      if (rng.chance(0.06)) {
        replaceFile(rng, file, notes);
      } else if (rng.chance(0.4)) {
        const json = seedJson(path.join(seed, "tokenizer.json")) as Record<string, JsonValue>;
        hostileTokenizerEdit(rng, json, notes);
        replaceWith(file, jsonText(json));
      } else {
        mutateJsonFile(rng, path.join(seed, "tokenizer.json"), file, notes, HF_TOKENIZER_FIELDS);
      }
    } else {
      notes.push("seed keras-hub tokenizer assets");
      const seed = path.join(seeds, GENERATED.kerasTokenizer);
      linkSeed(seed, dir);
      const target = rng.pick(["assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt", "tokenizer.json"]);
      const file = path.join(dir, target);
      if (rng.chance(0.1)) {
        replaceFile(rng, file, notes);
      } else if (target.endsWith("merges.txt")) {
        const lines = Buffer.from(seedBytes(path.join(seed, target))).toString("utf8").split("\n");
        const kind = rng.pick(["bytes", "three-parts", "unknown-token", "duplicate", "huge-line", "crlf"]);
        if (kind === "bytes") {
          replaceWith(file, mutateBytes(rng, seedBytes(path.join(seed, target)), notes));
        } else {
          const at = rng.between(1, lines.length - 1);
          if (kind === "three-parts") lines.splice(at, 0, "a b c");
          if (kind === "unknown-token") lines.splice(at, 0, rng.pick(["zz qq", "Ġ <|endoftext|>", "a  b", " a"]));
          if (kind === "duplicate") lines.splice(at, 0, lines[1]!);
          if (kind === "huge-line") lines.splice(at, 0, `${"a".repeat(100_000)} b`);
          replaceWith(file, kind === "crlf" ? lines.join("\r\n") : lines.join("\n"));
          notes.push(`merges.txt: ${kind} at line ${at + 1}`);
        }
      } else {
        mutateJsonFile(rng, path.join(seed, target), file, notes, target === "tokenizer.json" ? ["config", "unsplittable_tokens", "add_prefix_space", "sequence_length", "config_file", "registered_name"] : []);
      }
    }
    return { run: () => loadAndUseTokenizer(rng, dir) };
  },
};

export const IN_PROCESS_FAMILIES: readonly InProcessFamily[] = [safetensors, safetensorsIndex, hfConfig, kerasConfig, kerasH5, tokenizer];

// --------------------------------------------------------------------------------------------- CLI

const NUMBERS = ["0", "1", "2", "3", "-1", "1.5", "1e3", "1e6", "1e9", "2147483648", "4294967301", "9007199254740993", "1e300", "NaN", "Infinity", " 4", "0x10", "", "abc", "64", "1000"];
/**
 * run's --batch and --length: invalid, small, or too large for memory (refused), but none that is a
 * valid request for minutes of work (1,000 rows, or a 10^6-token row's quadratic attention).
 */
const RUN_SIZES = ["0", "1", "2", "3", "-1", "1.5", "1e8", "1e9", "2147483648", "4294967301", "9007199254740993", "1e300", "NaN", "Infinity", " 4", "0x10", "", "abc", "64"];

/** A CLI argv over a real preset, a hostile path, or none; the parent runs it as `falcon-native ...argv`. */
export function cliArguments(rng: FuzzRandom, directory: string, seeds: string, notes: string[]): string[] {
  const fifoPreset = path.join(directory, "fifo-preset");
  const presets = [
    path.join(seeds, GENERATED.cycleCheckpoint), KERAS_PRESETS[0]!, HF_CHECKPOINTS[0]!, HF_SHARDED_CHECKPOINT,
    path.join(directory, "absent"), fifoPreset, "/", "", "falcon_refinedweb_1b_en", "--json", "/dev/null",
  ];
  const preset = (): string => {
    const chosen = rng.pick(presets);
    if (chosen === fifoPreset) {
      mkdirSync(fifoPreset, { recursive: true });
      replaceFile(rng, path.join(fifoPreset, "config.json"), notes);
    }
    return chosen;
  };
  const number = (): string => rng.pick(NUMBERS);
  const idList = (): string => rng.pick(["1,2,3", "11", "", ",", "-1", "1e9", "101", "50303", "99999999999", "1,,2", "a", "1 2", `${"7,".repeat(5000)}7`]);
  const options: Record<string, () => string[]> = {
    "--preset": () => ["--preset", preset()],
    "--ids": () => ["--ids", idList()],
    "--max-new-tokens": () => ["--max-new-tokens", number()],
    "--max-length": () => ["--max-length", number()],
    "--sampler": () => ["--sampler", rng.pick(["greedy", "top-k", "top-p", "temperature", "random", "topK", "bogus", ""])],
    "--k": () => ["--k", number()],
    "--p": () => ["--p", rng.pick(["0", "1", "0.5", "1e-300", "2", "-1", "NaN", "0.9"])],
    "--temperature": () => ["--temperature", rng.pick(["0", "1", "1e-300", "1e300", "-1", "NaN", "0.7"])],
    "--seed": () => ["--seed", number()],
    "--stop-token-ids": () => ["--stop-token-ids", rng.pick(["none", "11", "-1", "", "50256"])],
    "--strip-prompt": () => ["--strip-prompt"],
    "--stream": () => ["--stream"],
    "--dtype": () => ["--dtype", rng.pick([...FALCON_DTYPES, "float64", "", "FLOAT32"])],
    "--threads": () => ["--threads", number()],
    "--verbose": () => ["--verbose"],
    "--batch": () => ["--batch", rng.pick(RUN_SIZES)],
    "--length": () => ["--length", rng.pick(RUN_SIZES)],
    "--json": () => ["--json"],
    "bogus": () => [rng.pick(["--bogus", "-x", "--", "--preset=", "--ids=1", "-"])],
  };
  const perCommand: Record<string, string[]> = {
    generate: ["--ids", "--max-new-tokens", "--max-length", "--sampler", "--k", "--p", "--temperature", "--seed", "--stop-token-ids", "--strip-prompt", "--stream", "--dtype", "--threads", "--verbose"],
    run: ["--dtype", "--batch", "--length", "--seed", "--threads"],
    inspect: ["--json", "--dtype"],
  };
  const command = rng.weighted<string>([[5, "generate"], [3, "run"], [3, "inspect"], [1, "other"]]);
  if (command === "other") return [rng.pick(["", "help", "-h", "bogus", "--preset", "GENERATE"]), ...(rng.chance(0.5) ? ["--help"] : [])];
  const argv = [command];
  if (command === "inspect") argv.push(...Array.from({ length: rng.weighted([[1, 0], [8, 1], [1, 2]]) }, preset));
  else if (rng.chance(command === "generate" ? 0.9 : 0.5)) argv.push(...options["--preset"]!());
  const count = rng.between(0, 5);
  for (let i = 0; i < count; i++) {
    const flag = rng.chance(0.1) ? rng.pick(Object.keys(options)) : rng.pick(perCommand[command]!);
    argv.push(...options[flag]!());
  }
  if (command === "generate" && rng.chance(0.5)) argv.push(...rng.pick([["The", "falcon"], ["a".repeat(2000)], ["🦅"], [""]]));
  return argv;
}

// ----------------------------------------------------------------------------------- harness probes

/**
 * Inputs that misbehave in each way the parent must catch, for the harness's own test: case i does
 * PROBES[i]. They touch no parser, so the verdicts they get come from the harness alone.
 */
export const PROBES = ["load", "refuse", "untyped-error", "empty-message", "hang", "memory-bomb", "abort", "escape"] as const;

export const HARNESS_PROBE: InProcessFamily = {
  name: "harness-probe",
  prepare({ index }) {
    const probe = PROBES[index];
    const run = async (): Promise<boolean> => {
      switch (probe) {
        case "refuse":
          throw new FalconError("refused on purpose");
        case "untyped-error":
          throw new TypeError("not a FalconError");
        case "empty-message":
          throw new FalconError("");
        case "hang":
          for (;;);
        case "memory-bomb": {
          const held: Buffer[] = [];
          for (;;) held.push(Buffer.alloc(64 * 2 ** 20, 1));
        }
        case "abort":
          process.abort();
        default:
          return true;
      }
    };
    return { run, mustFail: probe === "escape" ? "the escape probe loads what it must refuse" : undefined };
  },
};
