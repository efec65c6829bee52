/**
 * ggml's block quantisations written again in JavaScript from the format (ggml-common.h's block
 * structs and ggml-quants.c's dequantize_row_* formulas), independently of native/core/gguf_dequant.cpp:
 * the tests compare the native dequantisation against dequantize() here value for value.
 *
 * The 32-value types quantise as ggml's quantize_row_*_ref do. The K-quants quantise with a plain
 * min/max search per sub-block (not ggml's iterative make_qkx2_quants): any valid block is a valid
 * GGUF tensor, and the loader only dequantises.
 */
import { float16BitsToFloat32, float32ToFloat16Bits, quantizeQ4_0, quantizeQ8_0 } from "../../bench/gguf.js";

export const QUANT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"] as const;
export type QuantType = (typeof QUANT_TYPES)[number];

export const GGML_TYPE_ID: Record<QuantType | "F32" | "F16" | "BF16", number> = {
  F32: 0, F16: 1, BF16: 30, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14,
};
export const BLOCK: Record<QuantType, { values: number; bytes: number }> = {
  Q4_0: { values: 32, bytes: 18 }, Q4_1: { values: 32, bytes: 20 }, Q5_0: { values: 32, bytes: 22 }, Q5_1: { values: 32, bytes: 24 },
  Q8_0: { values: 32, bytes: 34 }, Q4_K: { values: 256, bytes: 144 }, Q5_K: { values: 256, bytes: 176 }, Q6_K: { values: 256, bytes: 210 },
};

const f = Math.fround;
const half = (bytes: Uint8Array, at: number) => float16BitsToFloat32(bytes[at]! | (bytes[at + 1]! << 8));
function putHalf(bytes: Uint8Array, at: number, value: number): number {
  const bits = float32ToFloat16Bits(value);
  bytes[at] = bits & 0xff;
  bytes[at + 1] = bits >>> 8;
  return float16BitsToFloat32(bits);
}
const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/** The 6-bit scale and min of sub-block j from a K-quant's 12 packed bytes (ggml's get_scale_min_k4). */
function scaleMin(scales: Uint8Array, j: number): [number, number] {
  if (j < 4) return [scales[j]! & 63, scales[j + 4]! & 63];
  return [(scales[j + 4]! & 0xf) | ((scales[j - 4]! >> 6) << 4), (scales[j + 4]! >> 4) | ((scales[j]! >> 6) << 4)];
}

function packScaleMin(sc: number[], mn: number[]): Uint8Array {
  const out = new Uint8Array(12);
  for (let j = 0; j < 4; j++) {
    out[j] = (sc[j]! & 63) | ((sc[j + 4]! >> 4) << 6);
    out[j + 4] = (mn[j]! & 63) | ((mn[j + 4]! >> 4) << 6);
    out[j + 8] = (sc[j + 4]! & 0xf) | ((mn[j + 4]! & 0xf) << 4);
  }
  return out;
}

/** Dequantises `count` values of `type` blocks, with float32 rounding after every operation as C does. */
export function dequantize(type: QuantType, bytes: Uint8Array, count: number): Float32Array {
  const { values: per, bytes: size } = BLOCK[type];
  const out = new Float32Array(count);
  for (let b = 0; b < count / per; b++) {
    const x = bytes.subarray(b * size, (b + 1) * size);
    const y = out.subarray(b * per, (b + 1) * per);
    switch (type) {
      case "Q4_0": case "Q4_1": {
        const d = half(x, 0);
        const m = type === "Q4_1" ? half(x, 2) : 0;
        const qs = x.subarray(type === "Q4_1" ? 4 : 2);
        for (let j = 0; j < 32; j++) {
          const q = j < 16 ? qs[j]! & 0xf : qs[j - 16]! >> 4;
          y[j] = type === "Q4_0" ? f((q - 8) * d) : f(f(q * d) + m);
        }
        break;
      }
      case "Q5_0": case "Q5_1": {
        const d = half(x, 0);
        const m = type === "Q5_1" ? half(x, 2) : 0;
        const at = type === "Q5_1" ? 4 : 2;
        const qh = (x[at]! | (x[at + 1]! << 8) | (x[at + 2]! << 16) | (x[at + 3]! << 24)) >>> 0;
        const qs = x.subarray(at + 4);
        for (let j = 0; j < 32; j++) {
          const low = j < 16 ? qs[j]! & 0xf : qs[j - 16]! >> 4;
          const q = low | (((qh >>> j) & 1) << 4);
          y[j] = type === "Q5_0" ? f((q - 16) * d) : f(f(q * d) + m);
        }
        break;
      }
      case "Q8_0": {
        const d = half(x, 0);
        for (let j = 0; j < 32; j++) y[j] = f(((x[2 + j]! << 24) >> 24) * d);
        break;
      }
      case "Q4_K": case "Q5_K": {
        const d = half(x, 0);
        const dmin = half(x, 2);
        const scales = x.subarray(4, 16);
        const qh = x.subarray(16, 48);
        const ql = x.subarray(type === "Q5_K" ? 48 : 16);
        for (let e = 0; e < 256; e++) {
          const sub = e >> 5; // 8 sub-blocks of 32
          const chunk = e >> 6;
          const l = e & 31;
          const low = sub & 1 ? ql[32 * chunk + l]! >> 4 : ql[32 * chunk + l]! & 0xf;
          const q = low + (type === "Q5_K" && (qh[l]! >> sub) & 1 ? 16 : 0);
          const [sc, mn] = scaleMin(scales, sub);
          y[e] = f(f(f(d * sc) * q) - f(dmin * mn));
        }
        break;
      }
      case "Q6_K": {
        const ql = x.subarray(0, 128);
        const qh = x.subarray(128, 192);
        const sc = new Int8Array(x.buffer, x.byteOffset + 192, 16);
        const d = half(x, 208);
        for (let e = 0; e < 256; e++) {
          const half128 = e >> 7;
          const r = e & 127;
          const k = r >> 5; // which quarter: low/high nibble of ql[l] or ql[l + 32]
          const l = r & 31;
          const qlByte = ql[64 * half128 + l + (k & 1 ? 32 : 0)]!;
          const low = k < 2 ? qlByte & 0xf : qlByte >> 4;
          const high = (qh[32 * half128 + l]! >> (2 * k)) & 3;
          y[e] = f(f(d * sc[e >> 4]!) * ((low | (high << 4)) - 32));
        }
        break;
      }
    }
  }
  return out;
}

/** Quantises `values` (a multiple of the block) into `type` blocks. */
export function quantize(type: QuantType, values: Float32Array): Uint8Array {
  if (type === "Q8_0") return quantizeQ8_0(values);
  if (type === "Q4_0") return quantizeQ4_0(values);
  const { values: per, bytes: size } = BLOCK[type];
  const out = new Uint8Array((values.length / per) * size);
  for (let b = 0; b < values.length / per; b++) {
    const x = values.subarray(b * per, (b + 1) * per);
    const y = out.subarray(b * size, (b + 1) * size);
    switch (type) {
      case "Q5_0": {
        // quantize_row_q5_0_ref: d = max / -16 with max the value of largest magnitude.
        const levels = 16;
        let amax = 0, max = 0;
        for (const v of x) if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
        const d = f(max / -levels);
        const id = d ? f(1 / d) : 0;
        putHalf(y, 0, d);
        const q = Array.from(x, (v) => Math.min(2 * levels - 1, Math.trunc(f(f(v * id) + levels + 0.5))));
        const qs = y.subarray(6);
        let qh = 0;
        for (let j = 0; j < 16; j++) {
          qs[j] = (q[j]! & 0xf) | ((q[j + 16]! & 0xf) << 4);
          qh |= ((q[j]! >> 4) << j) | ((q[j + 16]! >> 4) << (j + 16));
        }
        y.set([qh & 0xff, (qh >>> 8) & 0xff, (qh >>> 16) & 0xff, qh >>> 24], 2);
        break;
      }
      case "Q4_1": case "Q5_1": {
        const top = type === "Q4_1" ? 15 : 31;
        let min = Infinity, max = -Infinity;
        for (const v of x) [min, max] = [Math.min(min, v), Math.max(max, v)];
        const d = f((max - min) / top);
        const id = d ? f(1 / d) : 0;
        putHalf(y, 0, d);
        putHalf(y, 2, min);
        const q = Array.from(x, (v) => Math.min(top, Math.trunc(f(f(f(v - min) * id) + 0.5))));
        const qs = y.subarray(type === "Q4_1" ? 4 : 8);
        let qh = 0;
        for (let j = 0; j < 16; j++) {
          qs[j] = (q[j]! & 0xf) | ((q[j + 16]! & 0xf) << 4);
          qh |= ((q[j]! >> 4) << j) | ((q[j + 16]! >> 4) << (j + 16));
        }
        if (type === "Q5_1") y.set([qh & 0xff, (qh >>> 8) & 0xff, (qh >>> 16) & 0xff, qh >>> 24], 4);
        break;
      }
      case "Q4_K": case "Q5_K": {
        const top = type === "Q4_K" ? 15 : 31;
        const scales: number[] = [], mins: number[] = [];
        for (let s = 0; s < 8; s++) {
          const sub = x.subarray(32 * s, 32 * s + 32);
          const lo = Math.min(0, ...sub);
          scales.push((Math.max(...sub) - lo) / top);
          mins.push(-lo);
        }
        const d = putHalf(y, 0, Math.max(...scales) / 63);
        const dmin = putHalf(y, 2, Math.max(...mins) / 63);
        const sc = scales.map((s) => (d ? clamp(Math.round(s / d), 0, 63) : 0));
        const mn = mins.map((m) => (dmin ? clamp(Math.round(m / dmin), 0, 63) : 0));
        y.set(packScaleMin(sc, mn), 4);
        const qh = y.subarray(16, 48);
        const ql = y.subarray(type === "Q5_K" ? 48 : 16);
        for (let e = 0; e < 256; e++) {
          const sub = e >> 5;
          const step = f(d * sc[sub]!);
          const q = step ? clamp(Math.round((x[e]! + f(dmin * mn[sub]!)) / step), 0, top) : 0;
          const at = 32 * (e >> 6) + (e & 31);
          ql[at] = sub & 1 ? (ql[at]! & 0x0f) | ((q & 0xf) << 4) : (ql[at]! & 0xf0) | (q & 0xf);
          if (type === "Q5_K" && q & 16) qh[e & 31] = qh[e & 31]! | (1 << sub);
        }
        break;
      }
      case "Q6_K": {
        const subScales: number[] = [];
        for (let s = 0; s < 16; s++) {
          let amax = 0, max = 0;
          for (const v of x.subarray(16 * s, 16 * s + 16)) if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
          subScales.push(max / -32);
        }
        const d = putHalf(y, 208, Math.max(...subScales.map(Math.abs)) / 127);
        const sc = new Int8Array(y.buffer, y.byteOffset + 192, 16);
        for (let s = 0; s < 16; s++) sc[s] = d ? clamp(Math.round(subScales[s]! / d), -128, 127) : 0;
        const ql = y.subarray(0, 128);
        const qh = y.subarray(128, 192);
        for (let e = 0; e < 256; e++) {
          const step = f(d * sc[e >> 4]!);
          const q = (step ? clamp(Math.round(x[e]! / step), -32, 31) : 0) + 32;
          const half128 = e >> 7, r = e & 127, k = r >> 5, l = r & 31;
          const at = 64 * half128 + l + (k & 1 ? 32 : 0);
          ql[at] = k < 2 ? (ql[at]! & 0xf0) | (q & 0xf) : (ql[at]! & 0x0f) | ((q & 0xf) << 4);
          qh[32 * half128 + l] = qh[32 * half128 + l]! | ((q >> 4) << (2 * k));
        }
        break;
      }
    }
  }
  return out;
}

/**
 * A [rows, cols] matrix as the int4 dtype stores it: each row quantised in Q4_0 blocks, the last padded
 * with zeros, and dequantised (the pad dropped).
 */
export function q4_0Matrix(values: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const per = BLOCK.Q4_0.values;
  const out = new Float32Array(rows * cols);
  const block = new Float32Array(per);
  for (let r = 0; r < rows; r++) {
    for (let from = 0; from < cols; from += per) {
      const count = Math.min(per, cols - from);
      block.fill(0);
      for (let j = 0; j < count; j++) block[j] = values[r * cols + from + j]!;
      out.set(dequantize("Q4_0", quantize("Q4_0", block), per).subarray(0, count), r * cols + from);
    }
  }
  return out;
}
