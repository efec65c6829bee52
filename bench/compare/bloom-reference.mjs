/**
 * A plain-JavaScript float32/float64 forward pass of llama.cpp's `bloom` graph (src/models/bloom.cpp)
 * over a falcon-native model's weights, read one at a time. Its last-position logits check the
 * `bloom` GGUF export (tensor names, fused-QKV row order, norms, biases) against llama.cpp itself,
 * since falcon-native's falcon-rw is not the same math (no embedding LayerNorm; ALiBi before the
 * 1/sqrt(d) scale).
 */
import { toFloat32 } from "../../dist/bench/gguf.js";

async function read(model, name) {
  const w = await model.getWeight(name);
  const dtype = w.data.byteLength === w.rows * w.cols * 4 ? "float32" : w.dtype;
  return { values: toFloat32(w.data, dtype), rows: w.rows, cols: w.cols };
}

function layerNorm(x, T, D, gamma, beta, eps) {
  const out = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[t * D + i];
    mean /= D;
    let variance = 0;
    for (let i = 0; i < D; i++) variance += (x[t * D + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(variance / D + eps);
    for (let i = 0; i < D; i++) {
      out[t * D + i] = (x[t * D + i] - mean) * inv * (gamma ? gamma[i] : 1) + (beta ? beta[i] : 0);
    }
  }
  return out;
}

/** y[T, rows] = x[T, cols] · Wᵀ + b, W row-major [rows, cols]. */
function linear(x, T, w, bias) {
  const { values, rows, cols } = w;
  const out = new Float32Array(T * rows);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let t = 0; t < T; t++) {
      let sum = 0;
      const xt = t * cols;
      for (let c = 0; c < cols; c++) sum += x[xt + c] * values[row + c];
      out[t * rows + r] = sum + (bias ? bias[r] : 0);
    }
  }
  return out;
}

/** ggml's ALiBi slopes for max_bias 8 (llama.cpp's bloom). */
function alibiSlopes(H, maxBias = 8) {
  const nHeadLog2 = 2 ** Math.floor(Math.log2(H));
  const m0 = 2 ** (-maxBias / nHeadLog2);
  const m1 = 2 ** (-(maxBias / 2) / nHeadLog2);
  return Array.from({ length: H }, (_, h) => (h < nHeadLog2 ? m0 ** (h + 1) : m1 ** (2 * (h - nHeadLog2) + 1)));
}

const gelu = (x) => 0.5 * x * (1 + Math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));

/** Last-position logits of llama.cpp's bloom graph on `tokens`, with the embedding LayerNorm at gamma 1 / beta 0. */
export async function bloomReferenceLogits(backbone, tokens) {
  const config = backbone.getConfig();
  const model = await backbone.nativeModel();
  const T = tokens.length;
  const D = config.hiddenDim;
  const H = config.numAttentionHeads;
  const d = D / H;
  const eps = config.layerNormEpsilon;
  const slopes = alibiSlopes(H);
  const scale = 1 / Math.sqrt(d);

  const embedding = await read(model, "token_embedding");
  let x = new Float32Array(T * D);
  tokens.forEach((id, t) => x.set(embedding.values.subarray(id * D, (id + 1) * D), t * D));
  x = layerNorm(x, T, D, null, null, eps);

  for (let l = 0; l < config.numLayers; l++) {
    const p = `layers.${l}.`;
    const h = layerNorm(x, T, D, (await read(model, `${p}attn_norm.gamma`)).values, (await read(model, `${p}attn_norm.beta`)).values, eps);
    const qkv = linear(h, T, await read(model, `${p}qkv.weight`), (await read(model, `${p}qkv.bias`)).values);
    const attention = new Float32Array(T * D);
    const scores = new Float64Array(T);
    for (let head = 0; head < H; head++) {
      for (let i = 0; i < T; i++) {
        const q = i * 3 * D + head * d;
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          const k = j * 3 * D + D + head * d;
          let dot = 0;
          for (let c = 0; c < d; c++) dot += qkv[q + c] * qkv[k + c];
          scores[j] = dot * scale - slopes[head] * (i - j);
          max = Math.max(max, scores[j]);
        }
        let total = 0;
        for (let j = 0; j <= i; j++) total += (scores[j] = Math.exp(scores[j] - max));
        for (let j = 0; j <= i; j++) {
          const v = j * 3 * D + 2 * D + head * d;
          const weight = scores[j] / total;
          for (let c = 0; c < d; c++) attention[i * D + head * d + c] += weight * qkv[v + c];
        }
      }
    }
    const attnOut = linear(attention, T, await read(model, `${p}attn_out.weight`), (await read(model, `${p}attn_out.bias`)).values);
    for (let i = 0; i < T * D; i++) x[i] += attnOut[i];
    const m = layerNorm(x, T, D, (await read(model, `${p}mlp_norm.gamma`)).values, (await read(model, `${p}mlp_norm.beta`)).values, eps);
    const up = linear(m, T, await read(model, `${p}ffn_up.weight`), (await read(model, `${p}ffn_up.bias`)).values);
    for (let i = 0; i < up.length; i++) up[i] = gelu(up[i]);
    const down = linear(up, T, await read(model, `${p}ffn_down.weight`), (await read(model, `${p}ffn_down.bias`)).values);
    for (let i = 0; i < T * D; i++) x[i] += down[i];
  }
  const last = layerNorm(x.subarray((T - 1) * D), 1, D,
    (await read(model, "final_norm.gamma")).values, (await read(model, "final_norm.beta")).values, eps);
  const head = config.tieWordEmbeddings ? embedding : await read(model, "lm_head");
  return linear(last, 1, head, null);
}
