/**
 * ggml's Q4_0 quantisation (ggml-quants.c quantize_row_q4_0_ref and dequantize_row_q4_0), written out in
 * float32 arithmetic from the C source, independently of the native code: the reference the int4 dtype is
 * tested against.
 */

/** Inputs per Q4_0 block (QK4_0). */
export const Q4_0_BLOCK = 32;

/** float16 bits of a float32 value, rounded to nearest even (ggml's GGML_FP32_TO_FP16), by arithmetic on the value. */
export function float16Bits(value: number): number {
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  if (Number.isNaN(value)) return 0x7e00;
  if (magnitude >= 65520) return sign | 0x7c00; // rounds past the largest half, 65504
  let exponent = -14; // subnormals and the lowest binade share its spacing, 2^-24
  if (magnitude >= 2 ** -14) {
    exponent = Math.floor(Math.log2(magnitude));
    if (2 ** exponent > magnitude) exponent--;
    if (2 ** (exponent + 1) <= magnitude) exponent++;
  }
  const step = 2 ** (exponent - 10); // the spacing of halves in [2^e, 2^(e+1))
  const scaled = magnitude / step; // exact: a power-of-two division of a float32
  let units = Math.floor(scaled);
  const remainder = scaled - units;
  if (remainder > 0.5 || (remainder === 0.5 && units % 2 === 1)) units++;
  // Normal halves count 1024 units from 2^e: bits (e + 15) << 10 | (units − 1024); a carry to 2048 lands on the next exponent.
  if (exponent === -14 && units < 1024) return sign | units;
  return sign | (((exponent + 15) << 10) + (units - 1024));
}

export function float16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (exponent === 0 ? mantissa * 2 ** -24 : (1024 + mantissa) * 2 ** (exponent - 25));
}

export interface Q4_0Block {
  /** The scale d as float16 bits. */
  scaleBits: number;
  /** q[j] in [0, 15] for inputs j = 0 .. 31 (ggml packs q[j] | q[j + 16] << 4 into byte j). */
  q: Uint8Array;
}

/** quantize_row_q4_0_ref on one block of 32 float32 values. */
export function quantiseQ4_0(values: ArrayLike<number>): Q4_0Block {
  let largestMagnitude = 0;
  let largest = 0;
  for (let j = 0; j < Q4_0_BLOCK; j++) {
    const v = Math.fround(values[j]!);
    if (largestMagnitude < Math.abs(v)) {
      largestMagnitude = Math.abs(v);
      largest = v;
    }
  }
  const d = Math.fround(largest / -8);
  const inverse = d !== 0 ? Math.fround(1 / d) : 0;
  const q = new Uint8Array(Q4_0_BLOCK);
  for (let j = 0; j < Q4_0_BLOCK; j++) {
    // (int8_t)(x·id + 8.5f): float32 products and sums, truncated toward zero.
    q[j] = Math.min(15, Math.trunc(Math.fround(Math.fround(Math.fround(values[j]!) * inverse) + 8.5)));
  }
  return { scaleBits: float16Bits(d), q };
}

/** dequantize_row_q4_0 on one block: (q − 8) · d, exact in float32. */
export function dequantiseQ4_0(block: Q4_0Block): Float32Array {
  const d = float16Value(block.scaleBits);
  return Float32Array.from(block.q, (q) => (q - 8) * d);
}

/**
 * A [rows, cols] matrix as the int4 dtype stores it: each row quantised in Q4_0 blocks, the last padded
 * with zeros, and dequantised (the pad dropped).
 */
export function q4_0Matrix(values: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const block = new Float32Array(Q4_0_BLOCK);
  for (let r = 0; r < rows; r++) {
    for (let from = 0; from < cols; from += Q4_0_BLOCK) {
      const count = Math.min(Q4_0_BLOCK, cols - from);
      block.fill(0);
      for (let j = 0; j < count; j++) block[j] = values[r * cols + from + j]!;
      out.set(dequantiseQ4_0(quantiseQ4_0(block)).subarray(0, count), r * cols + from);
    }
  }
  return out;
}
