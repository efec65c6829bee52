/**
 * Writes a float32 FalconBackbone's weights as a llama.cpp `falcon` GGUF (bench/gguf.ts's writer), with
 * its matrices in any ggml type falcon-native reads, and returns the float32 values each matrix holds
 * after that type's round trip (dequantised by test/helpers/ggml-quants.ts, not by the code under test).
 */
import { addGpt2Vocabulary, convertTensor, GGML_TYPE, GgufWriter, toFloat32, type GgufVocabulary } from "../../bench/gguf.js";
import { resolveBackboneConfig, toNativeConfig, type FalconDType } from "../../src/config.js";
import type { FalconBackbone } from "../../src/index.js";
import { callNativeSync, native, type NativeModel } from "../../src/native.js";
import { dequantize, GGML_TYPE_ID, quantize, QUANT_TYPES, type QuantType } from "./ggml-quants.js";

export type TensorTypeName = keyof typeof GGML_TYPE_ID;

export interface GgufModelOptions {
  /** Type of the matrices; `typeOf` overrides it per GGUF tensor name. */
  matrixType: TensorTypeName;
  typeOf?: (ggufName: string) => TensorTypeName | undefined;
  vocabulary?: GgufVocabulary;
  /** Extra metadata, written after the usual keys (a key written twice is the writer's error). */
  extra?: (writer: GgufWriter) => void;
  /** Usual keys to leave out (so `extra` can write them differently). */
  omit?: string[];
}

export interface WrittenGguf {
  /** Our weight name → [rows, cols] and the float32 values the file holds for it. */
  weights: Map<string, { rows: number; cols: number; data: Float32Array }>;
  /** GGUF tensor name → our weight name. */
  names: Map<string, string>;
}

const isQuant = (type: TensorTypeName): type is QuantType => (QUANT_TYPES as readonly string[]).includes(type);

/** What a float32 value array becomes in `type`: the bytes to write and the float32 values they hold. */
function encode(values: Float32Array, type: TensorTypeName): { bytes: Uint8Array; held: Float32Array } {
  if (isQuant(type)) {
    const bytes = quantize(type, values);
    return { bytes, held: dequantize(type, bytes, values.length) };
  }
  const bytes = convertTensor(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), "float32", GGML_TYPE[type]);
  return { bytes, held: type === "F32" ? values : toFloat32(bytes, type === "F16" ? "float16" : "bfloat16") };
}

export async function writeGgufModel(backbone: FalconBackbone, file: string, options: GgufModelOptions): Promise<WrittenGguf> {
  const config = backbone.getConfig();
  if (config.dtype !== "float32") throw new Error("write the GGUF from a float32 model");
  const model = await backbone.nativeModel();
  const D = config.hiddenDim;
  const twoNorms = config.blockLayout === "parallel_two_norms";
  const names = new Map<string, string>([
    ["token_embd.weight", "token_embedding"],
    ["output_norm.weight", "final_norm.gamma"],
    ["output_norm.bias", "final_norm.beta"],
  ]);
  if (!config.tieWordEmbeddings) names.set("output.weight", "lm_head");
  for (let i = 0; i < config.numLayers; i++) {
    const b = `blk.${i}.`;
    const l = `layers.${i}.`;
    if (twoNorms) {
      names.set(`${b}attn_norm_2.weight`, `${l}attn_norm.gamma`).set(`${b}attn_norm_2.bias`, `${l}attn_norm.beta`);
      names.set(`${b}attn_norm.weight`, `${l}mlp_norm.gamma`).set(`${b}attn_norm.bias`, `${l}mlp_norm.beta`);
    } else {
      names.set(`${b}attn_norm.weight`, `${l}attn_norm.gamma`).set(`${b}attn_norm.bias`, `${l}attn_norm.beta`);
    }
    names.set(`${b}attn_qkv.weight`, `${l}qkv.weight`).set(`${b}attn_output.weight`, `${l}attn_out.weight`);
    names.set(`${b}ffn_up.weight`, `${l}ffn_up.weight`).set(`${b}ffn_down.weight`, `${l}ffn_down.weight`);
  }

  const writer = new GgufWriter();
  const weights = new Map<string, { rows: number; cols: number; data: Float32Array }>();
  const encoded = new Map<string, Uint8Array>();
  for (const [gguf, ours] of names) {
    const weight = await model.getWeight(ours);
    const values = new Float32Array(weight.data.slice().buffer);
    const vector = weight.cols === 1;
    const type: TensorTypeName = vector ? "F32" : (options.typeOf?.(gguf) ?? options.matrixType);
    const { bytes, held } = encode(values, type);
    writer.addTensor(gguf, vector ? [weight.rows] : [weight.cols, weight.rows], GGML_TYPE_ID[type]);
    encoded.set(gguf, bytes);
    weights.set(ours, { rows: weight.rows, cols: weight.cols, data: held });
  }

  const arch = "falcon";
  const omitted = new Set(options.omit ?? []);
  const keep = <T>(key: string, add: (key: string) => T) => (omitted.has(key) ? undefined : add(key));
  writer.addString("general.architecture", arch);
  writer.addString("general.name", "falcon-native test model");
  writer.addUint32(`${arch}.context_length`, config.maxPositionEmbeddings);
  writer.addUint32(`${arch}.embedding_length`, D);
  writer.addUint32(`${arch}.feed_forward_length`, config.intermediateDim);
  writer.addUint32(`${arch}.block_count`, config.numLayers);
  writer.addUint32(`${arch}.attention.head_count`, config.numAttentionHeads);
  keep(`${arch}.attention.head_count_kv`, (key) => writer.addUint32(key, config.numKeyValueHeads));
  writer.addFloat32(`${arch}.attention.layer_norm_epsilon`, config.layerNormEpsilon);
  writer.addFloat32(`${arch}.rope.freq_base`, config.ropeTheta);
  writer.addString(`${arch}.tensor_data_layout`, "jploski");
  if (options.vocabulary) addGpt2Vocabulary(writer, options.vocabulary);
  options.extra?.(writer);
  // Tensors added by `extra` are written as zeros.
  await writer.write(file, async (tensor) => encoded.get(tensor.name) ?? new Uint8Array(tensor.byteSize));
  return { weights, names };
}

/**
 * A native model of `backbone`'s config in `dtype` holding exactly `weights`, each set through the plain
 * float32 path (no initialisation first: every weight is set once). The caller disposes it.
 */
export async function modelWithWeights(
  backbone: FalconBackbone,
  weights: WrittenGguf["weights"],
  dtype: FalconDType = "float32",
): Promise<NativeModel> {
  const model = callNativeSync(() => new (native().NativeModel)(toNativeConfig(resolveBackboneConfig({ ...backbone.getConfig(), dtype }))));
  for (const [name, { rows, cols, data }] of weights) await model.setWeight(name, 0, data, "float32", rows, cols, false);
  model.requireComplete();
  return model;
}

/** Logits [batch × length, vocabulary] of a native model for a rectangle of ids, without a mask. */
export async function nativeLogits(model: NativeModel, tokenIds: Int32Array, batch: number, length: number): Promise<Float32Array> {
  const hidden = await model.forward(tokenIds, null, null, batch, length, null, null);
  return model.projectLogits(hidden, batch * length);
}
