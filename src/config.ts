/**
 * FalconBackbone configuration: keras-hub's arguments (camelCase) plus the Hugging Face
 * architecture superset, validated once and resolved to explicit values.
 */
import { describeValue, FalconConfigError } from "./errors.js";
import type { NativeDType, NativeModelConfig } from "./native.js";

export const FALCON_DTYPES = ["float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16", "int8", "int4"] as const;
export type FalconDType = (typeof FALCON_DTYPES)[number];

export type PositionEncoding = "alibi" | "rotary";
export type BlockLayout = "sequential" | "parallel_one_norm" | "parallel_two_norms";
export interface RopeScaling {
  type: "linear" | "dynamic";
  factor: number;
}

export interface FalconBackboneConfig {
  vocabularySize: number;
  numLayers: number;
  numAttentionHeads: number;
  hiddenDim: number;
  intermediateDim: number;
  /** Applied to every layer norm (keras-hub applies it only to the final one; see README). Default 1e-5. */
  layerNormEpsilon?: number;
  /** Accepted and validated as in keras-hub; dropout is a no-op at inference. */
  attentionDropoutRate?: number;
  feedforwardDropoutRate?: number;
  /** Weight storage and compute dtype. Mixed policies store weights in their compute dtype. Default float32. */
  dtype?: FalconDType;
  /** Seed of the random initialisation used when no weights are loaded. Default 0. */
  seed?: number;

  // The Hugging Face superset. Defaults describe falcon-rw, the architecture keras-hub implements.
  /** Distinct key/value heads (1 = multi-query). Default numAttentionHeads. */
  numKeyValueHeads?: number;
  positionEncoding?: PositionEncoding;
  ropeTheta?: number;
  ropeScaling?: RopeScaling | null;
  maxPositionEmbeddings?: number;
  blockLayout?: BlockLayout;
  /** Biases on the QKV, output and MLP projections (layer norms always have one). */
  useBias?: boolean;
  /** The LM head is the transposed token embedding. */
  tieWordEmbeddings?: boolean;
}

export type ResolvedBackboneConfig = Required<FalconBackboneConfig>;

const CONFIG_KEYS: ReadonlySet<string> = new Set<keyof FalconBackboneConfig>([
  "vocabularySize", "numLayers", "numAttentionHeads", "hiddenDim", "intermediateDim", "layerNormEpsilon",
  "attentionDropoutRate", "feedforwardDropoutRate", "dtype", "seed", "numKeyValueHeads", "positionEncoding",
  "ropeTheta", "ropeScaling", "maxPositionEmbeddings", "blockLayout", "useBias", "tieWordEmbeddings",
]);

/**
 * The largest value each size may take: far beyond any Falcon (falcon-180b: 80 layers, hidden 14848,
 * vocabulary 65024), and small enough that every product of sizes stays an exact integer in a
 * double and in the native core's 64-bit arithmetic.
 */
const CONFIG_SIZE_LIMITS = {
  vocabularySize: 1 << 24,
  numLayers: 1 << 12,
  numAttentionHeads: 1 << 12,
  numKeyValueHeads: 1 << 12,
  hiddenDim: 1 << 17,
  intermediateDim: 1 << 19,
  maxPositionEmbeddings: 1 << 24,
} as const;

type SizeKey = keyof typeof CONFIG_SIZE_LIMITS;

function positiveInteger(config: FalconBackboneConfig, key: SizeKey): number {
  const value = config[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new FalconConfigError(`${key} must be a positive integer, got ${describeValue(value)}`);
  }
  if (value > CONFIG_SIZE_LIMITS[key]) {
    throw new FalconConfigError(`${key} must be at most ${CONFIG_SIZE_LIMITS[key]}, got ${value}`);
  }
  return value;
}

function rate(value: unknown, key: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value >= 1) {
    throw new FalconConfigError(`${key} must be a number in [0, 1), got ${describeValue(value)}`);
  }
  return value;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], key: string): T {
  if (!allowed.includes(value as T)) {
    throw new FalconConfigError(`${key} must be one of ${allowed.map((v) => `"${v}"`).join(", ")}, got ${describeValue(value)}`);
  }
  return value as T;
}

function flag(value: unknown, key: string): boolean {
  if (typeof value !== "boolean") throw new FalconConfigError(`${key} must be a boolean, got ${describeValue(value)}`);
  return value;
}

/** Validates every field and fills the defaults; throws FalconConfigError naming the field. */
export function resolveBackboneConfig(config: FalconBackboneConfig): ResolvedBackboneConfig {
  if (typeof config !== "object" || config === null) throw new FalconConfigError("the config must be an object");
  for (const key of Object.keys(config)) {
    if (!CONFIG_KEYS.has(key)) throw new FalconConfigError(`unknown config field "${key}"`);
  }
  const vocabularySize = positiveInteger(config, "vocabularySize");
  const numLayers = positiveInteger(config, "numLayers");
  const numAttentionHeads = positiveInteger(config, "numAttentionHeads");
  const hiddenDim = positiveInteger(config, "hiddenDim");
  const intermediateDim = positiveInteger(config, "intermediateDim");
  if (hiddenDim % numAttentionHeads !== 0) {
    throw new FalconConfigError(`hiddenDim (${hiddenDim}) must be divisible by numAttentionHeads (${numAttentionHeads})`);
  }
  const numKeyValueHeads = config.numKeyValueHeads === undefined ? numAttentionHeads : positiveInteger(config, "numKeyValueHeads");
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new FalconConfigError(
      `numAttentionHeads (${numAttentionHeads}) must be a multiple of numKeyValueHeads (${numKeyValueHeads})`,
    );
  }
  const layerNormEpsilon = config.layerNormEpsilon ?? 1e-5;
  if (typeof layerNormEpsilon !== "number" || !(layerNormEpsilon > 0) || !Number.isFinite(layerNormEpsilon)) {
    throw new FalconConfigError(`layerNormEpsilon must be a positive number, got ${describeValue(layerNormEpsilon)}`);
  }
  const seed = config.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new FalconConfigError(`seed must be a non-negative integer, got ${describeValue(seed)}`);

  const positionEncoding = oneOf(config.positionEncoding ?? "alibi", ["alibi", "rotary"] as const, "positionEncoding");
  const ropeTheta = config.ropeTheta ?? 10000;
  if (typeof ropeTheta !== "number" || !(ropeTheta > 0) || !Number.isFinite(ropeTheta)) {
    throw new FalconConfigError(`ropeTheta must be a positive number, got ${describeValue(ropeTheta)}`);
  }
  const ropeScaling = config.ropeScaling ?? null;
  if (ropeScaling !== null) {
    if (typeof ropeScaling !== "object") throw new FalconConfigError(`ropeScaling must be an object or null, got ${describeValue(ropeScaling)}`);
    if (positionEncoding !== "rotary") throw new FalconConfigError("ropeScaling needs positionEncoding \"rotary\"");
    oneOf(ropeScaling.type, ["linear", "dynamic"] as const, "ropeScaling.type");
    if (typeof ropeScaling.factor !== "number" || !(ropeScaling.factor > 1) || !Number.isFinite(ropeScaling.factor)) {
      throw new FalconConfigError(`ropeScaling.factor must be a number greater than 1, got ${describeValue(ropeScaling.factor)}`);
    }
  }
  if (positionEncoding === "rotary" && (hiddenDim / numAttentionHeads) % 2 !== 0) {
    throw new FalconConfigError("rotary position encoding needs an even head dimension (hiddenDim / numAttentionHeads)");
  }
  const maxPositionEmbeddings = config.maxPositionEmbeddings === undefined ? 2048 : positiveInteger(config, "maxPositionEmbeddings");
  return {
    vocabularySize,
    numLayers,
    numAttentionHeads,
    hiddenDim,
    intermediateDim,
    layerNormEpsilon,
    attentionDropoutRate: rate(config.attentionDropoutRate ?? 0, "attentionDropoutRate"),
    feedforwardDropoutRate: rate(config.feedforwardDropoutRate ?? 0, "feedforwardDropoutRate"),
    dtype: oneOf(config.dtype ?? "float32", FALCON_DTYPES, "dtype"),
    seed,
    numKeyValueHeads,
    positionEncoding,
    ropeTheta,
    ropeScaling: ropeScaling === null ? null : { type: ropeScaling.type, factor: ropeScaling.factor },
    maxPositionEmbeddings,
    blockLayout: oneOf(config.blockLayout ?? "sequential", ["sequential", "parallel_one_norm", "parallel_two_norms"] as const, "blockLayout"),
    useBias: flag(config.useBias ?? true, "useBias"),
    tieWordEmbeddings: flag(config.tieWordEmbeddings ?? true, "tieWordEmbeddings"),
  };
}

/** The dtype weights are stored and multiplied in: a mixed policy's compute dtype. */
export function storageDType(dtype: FalconDType): NativeDType {
  switch (dtype) {
    case "float32":
      return "float32";
    case "bfloat16":
    case "mixed_bfloat16":
      return "bfloat16";
    case "float16":
    case "mixed_float16":
      return "float16";
    case "int8":
      return "int8";
    case "int4":
      return "int4";
  }
}

export function toNativeConfig(config: ResolvedBackboneConfig): NativeModelConfig {
  return {
    vocabSize: config.vocabularySize,
    numLayers: config.numLayers,
    numHeads: config.numAttentionHeads,
    numKvHeads: config.numKeyValueHeads,
    hiddenDim: config.hiddenDim,
    ffnDim: config.intermediateDim,
    layerNormEpsilon: config.layerNormEpsilon,
    positionEncoding: config.positionEncoding,
    ropeTheta: config.ropeTheta,
    ropeScaling: config.ropeScaling?.type ?? "none",
    ropeScalingFactor: config.ropeScaling?.factor ?? 1,
    maxPositionEmbeddings: config.maxPositionEmbeddings,
    blockLayout: config.blockLayout,
    useBias: config.useBias,
    tiedHead: config.tieWordEmbeddings,
    dtype: storageDType(config.dtype),
  };
}

/** Bytes per stored element of a weight matrix: int4 holds 32 nibbles and a float16 scale in 18 bytes (Q4_0's block). */
function storageBytes(dtype: FalconDType): number {
  return { float32: 4, bfloat16: 2, float16: 2, int8: 1, int4: 18 / 32 }[storageDType(dtype)];
}

/** Matrix and vector (norm and bias) element counts of a configuration, as the native core allocates them. */
function weightElementCounts(config: FalconBackboneConfig): { matrices: number; vectors: number } {
  const c = resolveBackboneConfig(config);
  const D = c.hiddenDim;
  const F = c.intermediateDim;
  const qkvRows = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * (D / c.numAttentionHeads);
  const norms = c.blockLayout === "parallel_one_norm" ? 1 : 2;
  const perLayerMatrices = qkvRows * D + D * D + F * D + D * F;
  const perLayerVectors = norms * 2 * D + (c.useBias ? qkvRows + D + F + D : 0);
  return {
    matrices: c.vocabularySize * D * (c.tieWordEmbeddings ? 1 : 2) + c.numLayers * perLayerMatrices,
    vectors: 2 * D + c.numLayers * perLayerVectors,
  };
}

/**
 * Parameter count of a configuration, computed from the config alone (no model is built): the
 * embedding, the untied head if any, every layer's norms, projections and biases, the final norm.
 * Equals `FalconBackbone.info().parameterCount` of a model built from it.
 */
export function parameterCount(config: FalconBackboneConfig): number {
  const { matrices, vectors } = weightElementCounts(config);
  return matrices + vectors;
}

/**
 * Logical bytes of a configuration's weights: matrices in the storage dtype, norms and biases in
 * float32. The native core may hold somewhat more (`info().weightBytes`) when its kernels pad or
 * repack matrices.
 */
export function weightBytes(config: FalconBackboneConfig): number {
  const { matrices, vectors } = weightElementCounts(config);
  return Math.ceil(matrices * storageBytes(config.dtype ?? "float32")) + vectors * 4;
}

export type FalconVariant = "falcon-rw" | "falcon-7b" | "falcon-40b-style" | "falcon2-11b-style" | "custom";

/** Which Falcon family a configuration's architecture fields describe. */
export function describeVariant(config: FalconBackboneConfig): { variant: FalconVariant; description: string } {
  const c = resolveBackboneConfig(config);
  const heads = `${c.numAttentionHeads} query / ${c.numKeyValueHeads} key-value heads`;
  if (c.positionEncoding === "alibi" && c.blockLayout === "sequential") {
    return { variant: "falcon-rw", description: `falcon-rw (ALiBi, sequential blocks, ${heads}; keras-hub's FalconBackbone)` };
  }
  if (c.positionEncoding === "rotary" && c.blockLayout === "parallel_one_norm" && c.numKeyValueHeads === 1) {
    return { variant: "falcon-7b", description: `falcon-7b (rotary, multi-query, parallel attention and MLP on one layer norm, ${heads})` };
  }
  if (c.positionEncoding === "rotary" && c.blockLayout === "parallel_two_norms") {
    return { variant: "falcon-40b-style", description: `falcon-40b/180b-style (new decoder architecture, two layer norms, rotary, ${heads})` };
  }
  if (c.positionEncoding === "rotary" && c.blockLayout === "parallel_one_norm") {
    return { variant: "falcon2-11b-style", description: `falcon2-11b-style (new decoder architecture, one layer norm, rotary, ${heads})` };
  }
  return {
    variant: "custom",
    description: `custom Falcon (${c.positionEncoding}, ${c.blockLayout.replaceAll("_", " ")} blocks, ${heads}${c.useBias ? ", biases" : ""})`,
  };
}
