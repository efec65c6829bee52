/**
 * A plain float64 forward pass of keras-hub's FalconBackbone (falcon-rw: ALiBi, multi-head, sequential
 * pre-LN blocks, biases, tied head), written from ../shared/docs/falcon-spec.md §2.3–2.9 with no native
 * code: a reference for outputs the fixtures do not hold (other token ids, random models). Tests check
 * it against the fixtures' sequence_output before they lean on it.
 */
import type { FalconBackbone, ResolvedBackboneConfig } from "../../src/index.js";
import { q4_0Matrix } from "./ggml-quants.js";

export interface ReferenceModel {
  numHeads: number;
  hiddenDim: number;
  intermediateDim: number;
  epsilon: number;
  numLayers: number;
  vocabularySize: number;
  /** Row-major [rows, cols] float64 copies of the model's weights, by the native names. */
  weights: Map<string, Float64Array>;
}

/** Whether the reference forward pass covers a backbone: float32, with keras-hub FalconBackbone's architecture. */
export function referenceCovers(config: ResolvedBackboneConfig): boolean {
  return config.positionEncoding === "alibi" && config.blockLayout === "sequential" && config.useBias && config.tieWordEmbeddings &&
    config.numKeyValueHeads === config.numAttentionHeads && config.dtype === "float32";
}

/** Reads every weight of a backbone the reference covers (getWeight gives matrices [outputs, inputs]). */
export async function referenceModel(backbone: FalconBackbone): Promise<ReferenceModel> {
  const config = backbone.getConfig();
  if (!referenceCovers(config)) throw new Error("the reference forward pass covers float32 keras-hub FalconBackbone models only");
  const native = await backbone.nativeModel();
  const weights = new Map<string, Float64Array>();
  for (const name of native.weightNames()) {
    const { data } = await native.getWeight(name);
    const copy = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    weights.set(name, Float64Array.from(new Float32Array(copy)));
  }
  return {
    numHeads: config.numAttentionHeads, hiddenDim: config.hiddenDim, intermediateDim: config.intermediateDim,
    epsilon: config.layerNormEpsilon, numLayers: config.numLayers, vocabularySize: config.vocabularySize, weights,
  };
}

/** keras-hub's ALiBi slopes (spec §2.4): 2^(−8(i+1)/H) for a power of two, else the even extras of 2c. */
export function alibiSlopes(heads: number): number[] {
  const powerOfTwo = (n: number) => Array.from({ length: n }, (_, i) => 2 ** ((-8 * (i + 1)) / n));
  const closest = 2 ** Math.floor(Math.log2(heads));
  if (closest === heads) return powerOfTwo(heads);
  return [...powerOfTwo(closest), ...powerOfTwo(2 * closest).filter((_, i) => i % 2 === 0).slice(0, heads - closest)];
}

/** erf by its Maclaurin series (|x| ≤ 4, error far below float32's) and ±1 beyond (erfc(4) ≈ 1.5e-8). */
function erf(x: number): number {
  if (Math.abs(x) > 4) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; n < 100; n++) {
    term *= (-x * x) / n;
    const next = term / (2 * n + 1);
    sum += next;
    if (Math.abs(next) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

function layerNorm(x: Float64Array, gamma: Float64Array, beta: Float64Array, epsilon: number): Float64Array {
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length;
  const scale = 1 / Math.sqrt(variance + epsilon);
  return x.map((value, i) => (value - mean) * scale * gamma[i]! + beta[i]!);
}

/** y = W x + b with W row-major [outputs, inputs]. */
function dense(weight: Float64Array, bias: ArrayLike<number>, x: Float64Array): Float64Array {
  const out = new Float64Array(bias.length);
  for (let r = 0; r < out.length; r++) {
    let sum = bias[r]!;
    for (let c = 0; c < x.length; c++) sum += weight[r * x.length + c]! * x[c]!;
    out[r] = sum;
  }
  return out;
}

/** The model's matmuls, by the names the int8 options use (`head` is the tied embedding as the LM head). */
export const MATMULS = ["qkv", "attn_out", "ffn_up", "ffn_down", "head"] as const;
export type Matmul = (typeof MATMULS)[number];

/**
 * Where the forward pass computes the int8 scheme of the README's `dtype` bullet instead of float64:
 * `weights` quantised as native/core/model.cpp store_row does (symmetric, one float32 scale per output
 * row; "embedding" is the token lookup, which reads the same int8 table as the tied head), `activations`
 * (each matmul's input rows) quantised as native/cpu/kernels/scalar.cpp quantise_row does (symmetric, in
 * blocks of 256 inputs, one float32 scale per block). Quantised values are dequantised (q · scale, exact
 * in float64) and the pass goes on in float64: Σ (q_x · s_block)(q_w · s_row) is the kernels' exact
 * integer block sums, scaled, without their float32 rounding.
 */
export interface Int8Options {
  weights: readonly (Matmul | "embedding")[];
  activations: readonly Matmul[];
  nearTies?: NearTies;
  /** The int4 dtype's weights instead: each row in ggml Q4_0 blocks of 32 (int4Weight). */
  int4Weights?: boolean;
}

/**
 * Activations a float32 implementation of the scheme may round either way: its inputs carry float32
 * rounding error, so a value x · 127 / m within `within` (in quantisation steps) of a rounding boundary
 * k + ½ in float64 can land on either side of it there. The pass records each one it meets and rounds
 * those in `roundedOtherWay` to the other side. Keys are `row site.layer index` (`row head index` for the
 * head), row = b · length + t.
 */
export interface NearTies {
  within: number;
  roundedOtherWay: ReadonlySet<string>;
  found: Map<string, { row: number; distance: number }>;
}

/** The whole int8 scheme, as an int8 model computes it. */
export const INT8_EVERYWHERE: Int8Options = { weights: [...MATMULS, "embedding"], activations: MATMULS };

/** The whole int4 scheme, as an int4 model computes it: Q4_0 weights, the int8 scheme's activations. */
export const INT4_EVERYWHERE: Int8Options = { ...INT8_EVERYWHERE, int4Weights: true };

/** Inputs per activation quantisation block (kQuantSteps · 4 in native/cpu/kernels/kernels.h). */
const ACTIVATION_BLOCK = 256;

/** rint in the default rounding mode (ties to even), as std::nearbyint, lrintf and vcvtps2dq round; 0, not −0, as int8 holds. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  if (value - floor !== 0.5) return Math.round(value) + 0;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** store_row: the row's largest magnitude m maps to ±127, q = rint(float32(v / s)) with s = float32(m / 127). */
function quantiseWeightRows(weight: Float64Array, cols: number): Float64Array {
  const out = new Float64Array(weight.length);
  for (let from = 0; from < weight.length; from += cols) {
    let largest = 0;
    for (let c = 0; c < cols; c++) largest = Math.max(largest, Math.abs(weight[from + c]!));
    const scale = largest > 0 ? Math.fround(largest / 127) : 1;
    for (let c = 0; c < cols; c++) out[from + c] = roundHalfEven(Math.fround(weight[from + c]! / scale)) * scale;
  }
  return out;
}

/**
 * quantise_row on the float32 value of each input (the kernels read float32 rows): per block of
 * ACTIVATION_BLOCK inputs (the last block holds the rest; pad columns past the width are 0 and do not
 * count), largest magnitude m, q = rint(clamp(float32(x · float32(127 / m)), ±127)), scale float32(m / 127).
 * `tieKey` names the row's near-ties for `nearTies`.
 */
function quantiseActivations(x: Float64Array, nearTies: NearTies | undefined, tieKey: string, row: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let begin = 0; begin < x.length; begin += ACTIVATION_BLOCK) {
    const end = Math.min(x.length, begin + ACTIVATION_BLOCK);
    let largest = 0;
    for (let k = begin; k < end; k++) largest = Math.max(largest, Math.abs(Math.fround(x[k]!)));
    const inverse = largest > 0 ? Math.fround(127 / largest) : 0;
    const scale = Math.fround(largest / 127);
    for (let k = begin; k < end; k++) {
      const scaled = Math.min(127, Math.max(-127, Math.fround(Math.fround(x[k]!) * inverse)));
      let q = roundHalfEven(scaled);
      const distance = Math.abs(scaled - Math.floor(scaled) - 0.5);
      if (nearTies && distance < nearTies.within) {
        const key = `${tieKey} ${k}`;
        nearTies.found.set(key, { row, distance });
        if (nearTies.roundedOtherWay.has(key)) q = q === Math.floor(scaled) ? q + 1 : q - 1;
      }
      out[k] = q * scale;
    }
  }
  return out;
}

const quantisedWeights = new WeakMap<ReferenceModel, Map<string, Float64Array>>();

/** The matrix `name` as an int8 model stores it (q · s per element), quantised once per model. */
export function int8Weight(model: ReferenceModel, name: string): Float64Array {
  let cache = quantisedWeights.get(model);
  if (!cache) quantisedWeights.set(model, (cache = new Map()));
  let weight = cache.get(name);
  if (!weight) {
    const cols = name.endsWith("ffn_down.weight") ? model.intermediateDim : model.hiddenDim;
    cache.set(name, (weight = quantiseWeightRows(model.weights.get(name)!, cols)));
  }
  return weight;
}

const int4Weights = new WeakMap<ReferenceModel, Map<string, Float64Array>>();

/** The matrix `name` as an int4 model stores it ((q − 8) · d per element, test/helpers/ggml-quants.ts), quantised once per model. */
export function int4Weight(model: ReferenceModel, name: string): Float64Array {
  let cache = int4Weights.get(model);
  if (!cache) int4Weights.set(model, (cache = new Map()));
  let weight = cache.get(name);
  if (!weight) {
    const cols = name.endsWith("ffn_down.weight") ? model.intermediateDim : model.hiddenDim;
    const values = model.weights.get(name)!;
    cache.set(name, (weight = Float64Array.from(q4_0Matrix(values, values.length / cols, cols))));
  }
  return weight;
}

/** The weight a site reads: float64, or int8 (int4) where `int8` says. */
function siteWeight(model: ReferenceModel, name: string, site: Matmul | "embedding", int8: Int8Options | undefined): Float64Array {
  if (!int8?.weights.includes(site)) return model.weights.get(name)!;
  return int8.int4Weights ? int4Weight(model, name) : int8Weight(model, name);
}

/** Input row `row` (b · length + t) of matmul `site` (of layer `layer`, but the head): float64, or quantised where `int8` says. */
function siteInput(x: Float64Array, site: Matmul, layer: number | undefined, row: number, int8: Int8Options | undefined): Float64Array {
  if (!int8?.activations.includes(site)) return x;
  return quantiseActivations(x, int8.nearTies, `${row} ${site}${layer === undefined ? "" : `.${layer}`}`, row);
}

/**
 * The backbone's output [batch, length, hidden] for token rows and their padding masks (all ones when
 * null). Rows at padded query positions are meaningless, as in keras-hub. `int8` quantises the sites it
 * names; float64 throughout without it.
 */
export function referenceForward(model: ReferenceModel, tokenIds: number[][], paddingMask: number[][] | null, int8?: Int8Options): Float64Array {
  const { numHeads: H, hiddenDim: D, epsilon, weights } = model;
  const d = D / H;
  const w = (name: string) => weights.get(name)!;
  const slopes = alibiSlopes(H);
  const L = tokenIds[0]!.length;
  const out = new Float64Array(tokenIds.length * L * D);
  for (const [b, row] of tokenIds.entries()) {
    const mask = paddingMask?.[b] ?? new Array<number>(L).fill(1);
    // Positions count real tokens only (spec §2.4); pads sit at 0.
    let seen = 0;
    const position = mask.map((flag) => (flag === 1 ? seen++ : 0));
    const embedding = siteWeight(model, "token_embedding", "embedding", int8);
    let x = row.map((id) => embedding.slice(id * D, (id + 1) * D));
    for (let l = 0; l < model.numLayers; l++) {
      const p = `layers.${l}.`;
      const matmul = (site: Matmul, input: Float64Array, t: number) =>
        dense(siteWeight(model, `${p}${site}.weight`, site, int8), w(`${p}${site}.bias`), siteInput(input, site, l, b * L + t, int8));
      const qkv = x.map((h, t) => matmul("qkv", layerNorm(h, w(`${p}attn_norm.gamma`), w(`${p}attn_norm.beta`), epsilon), t));
      x = x.map((h, q) => {
        const attended = new Float64Array(D);
        for (let head = 0; head < H; head++) {
          const keys = Array.from({ length: q + 1 }, (_, k) => k).filter((k) => mask[k] === 1);
          const scores = keys.map((k) => {
            let dot = 0;
            for (let i = 0; i < d; i++) dot += qkv[q]![head * d + i]! * qkv[k]![D + head * d + i]!;
            return (dot + slopes[head]! * position[k]!) / Math.sqrt(d);
          });
          const max = Math.max(...scores);
          const exps = scores.map((s) => Math.exp(s - max));
          const total = exps.reduce((a, e) => a + e, 0);
          keys.forEach((k, n) => {
            for (let i = 0; i < d; i++) attended[head * d + i]! += (exps[n]! / total) * qkv[k]![2 * D + head * d + i]!;
          });
        }
        const afterAttention = matmul("attn_out", attended, q).map((v, i) => v + h[i]!);
        const normed = layerNorm(afterAttention, w(`${p}mlp_norm.gamma`), w(`${p}mlp_norm.beta`), epsilon);
        const up = matmul("ffn_up", normed, q).map(gelu);
        return matmul("ffn_down", up, q).map((v, i) => v + afterAttention[i]!);
      });
    }
    x.forEach((h, t) => out.set(layerNorm(h, w("final_norm.gamma"), w("final_norm.beta"), epsilon), (b * L + t) * D));
  }
  return out;
}

/** logits = hidden · Eᵀ for rows of `hidden` (tied head, spec §2.9), the head int8 where `int8` says. */
export function referenceLogits(model: ReferenceModel, hidden: ArrayLike<number>, int8?: Int8Options): Float64Array {
  const { hiddenDim: D, vocabularySize: V } = model;
  const embedding = siteWeight(model, "token_embedding", "head", int8);
  const rows = hidden.length / D;
  const out = new Float64Array(rows * V);
  const noBias = new Float64Array(V);
  for (let r = 0; r < rows; r++) {
    const row = Float64Array.from({ length: D }, (_, i) => hidden[r * D + i]!);
    out.set(dense(embedding, noBias, siteInput(row, "head", undefined, r, int8)), r * V);
  }
  return out;
}
