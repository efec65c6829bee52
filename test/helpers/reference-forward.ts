/**
 * A plain float64 forward pass of keras-hub's FalconBackbone (falcon-rw: ALiBi, multi-head, sequential
 * pre-LN blocks, biases, tied head), written from ../shared/docs/falcon-spec.md §2.3–2.9 with no native
 * code: a reference for outputs the fixtures do not hold (other token ids, random models). Tests check
 * it against the fixtures' sequence_output before they lean on it.
 */
import type { FalconBackbone } from "../../src/index.js";

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

/** Reads every weight of a float32 keras-architecture backbone (getWeight gives matrices [outputs, inputs]). */
export async function referenceModel(backbone: FalconBackbone): Promise<ReferenceModel> {
  const config = backbone.getConfig();
  if (config.positionEncoding !== "alibi" || config.blockLayout !== "sequential" || !config.useBias || !config.tieWordEmbeddings ||
      config.numKeyValueHeads !== config.numAttentionHeads || config.dtype !== "float32") {
    throw new Error("the reference forward pass covers float32 keras-hub FalconBackbone models only");
  }
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
function dense(weight: Float64Array, bias: Float64Array, x: Float64Array): Float64Array {
  const out = new Float64Array(bias.length);
  for (let r = 0; r < out.length; r++) {
    let sum = bias[r]!;
    for (let c = 0; c < x.length; c++) sum += weight[r * x.length + c]! * x[c]!;
    out[r] = sum;
  }
  return out;
}

/**
 * The backbone's output [batch, length, hidden] for token rows and their padding masks (all ones when
 * null). Rows at padded query positions are meaningless, as in keras-hub.
 */
export function referenceForward(model: ReferenceModel, tokenIds: number[][], paddingMask: number[][] | null): Float64Array {
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
    let x = row.map((id) => w("token_embedding").slice(id * D, (id + 1) * D));
    for (let l = 0; l < model.numLayers; l++) {
      const p = `layers.${l}.`;
      const qkv = x.map((h) => dense(w(`${p}qkv.weight`), w(`${p}qkv.bias`), layerNorm(h, w(`${p}attn_norm.gamma`), w(`${p}attn_norm.beta`), epsilon)));
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
        const afterAttention = dense(w(`${p}attn_out.weight`), w(`${p}attn_out.bias`), attended).map((v, i) => v + h[i]!);
        const normed = layerNorm(afterAttention, w(`${p}mlp_norm.gamma`), w(`${p}mlp_norm.beta`), epsilon);
        const up = dense(w(`${p}ffn_up.weight`), w(`${p}ffn_up.bias`), normed).map(gelu);
        return dense(w(`${p}ffn_down.weight`), w(`${p}ffn_down.bias`), up).map((v, i) => v + afterAttention[i]!);
      });
    }
    x.forEach((h, t) => out.set(layerNorm(h, w("final_norm.gamma"), w("final_norm.beta"), epsilon), (b * L + t) * D));
  }
  return out;
}

/** logits = hidden · Eᵀ for rows of `hidden` (tied head, spec §2.9). */
export function referenceLogits(model: ReferenceModel, hidden: ArrayLike<number>): Float64Array {
  const { hiddenDim: D, vocabularySize: V } = model;
  const embedding = model.weights.get("token_embedding")!;
  const rows = hidden.length / D;
  const out = new Float64Array(rows * V);
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < V; v++) {
      let sum = 0;
      for (let i = 0; i < D; i++) sum += hidden[r * D + i]! * embedding[v * D + i]!;
      out[r * V + v] = sum;
    }
  }
  return out;
}
