/**
 * The test-only native binding of the CUDA kernels as the host emulation runs them
 * (native/binding/cuda_test.cpp), typed for the cuda-*.test.ts files.
 */
import { native } from "../../src/native.js";

export type CudaMatmulKernel = "tiled" | "wmma" | "gemv";
export type CudaWeightDType = "float32" | "bfloat16" | "float16" | "int8";

export interface CudaMatmulSpec {
  x: Float32Array;
  m: number;
  k: number;
  w: Float32Array;
  n: number;
  dtype: CudaWeightDType;
  kernel: CudaMatmulKernel;
  bias?: Float32Array;
  gelu?: boolean;
  accumulate?: boolean;
  y0?: Float32Array;
  scales?: Float32Array;
}

export interface CudaRotarySpec {
  headDim: number;
  heads: number;
  ropeTheta: number;
  ropeScaling: "none" | "linear" | "dynamic";
  factor: number;
  maxPositions: number;
  sequenceLength: number;
  positions: Int32Array;
  x: Float32Array;
}

export interface CudaAttentionSpec {
  heads: number;
  kvHeads: number;
  headDim: number;
  kvDtype: "float32" | "bfloat16" | "float16";
  numBlocks: number;
  /** [kvHeads][numBlocks][16 slots][headDim] */
  keys: Float32Array;
  values: Float32Array;
  /** [numBlocks · 16] */
  valid: Uint8Array;
  positions: Int32Array;
  sequences: Array<{ blockTable: Int32Array; start: number; count: number }>;
  /** [rows][heads · headDim], rows the sequences' new tokens in order */
  q: Float32Array;
  slopes?: Float32Array;
  kernel: "split" | "flash";
}

export interface CudaEmulation {
  embedding(spec: { table: Float32Array; dim: number; dtype: "float32" | "bfloat16" | "float16"; ids: Int32Array }): { gpu: Float32Array; cpu: Float32Array };
  addLayerNorm(spec: {
    residual: Float32Array;
    add?: Float32Array;
    rows: number;
    dim: number;
    gamma: Float32Array;
    beta: Float32Array;
    epsilon: number;
  }): { gpu: Float32Array; gpuResidual: Float32Array; cpu: Float32Array };
  biasGelu(spec: { x: Float32Array; rows: number; cols: number; bias?: Float32Array }): { gpu: Float32Array; cpu: Float32Array };
  rotary(spec: CudaRotarySpec): { gpuCos: Float32Array; gpuSin: Float32Array; cpuCos: Float32Array; cpuSin: Float32Array; gpuX: Float32Array; cpuX: Float32Array };
  matmul(spec: CudaMatmulSpec): { gpu: Float32Array; cpu: Float32Array; weights: Float32Array };
  attention(spec: CudaAttentionSpec): { gpu: Float32Array; cpu: Float32Array; keys: Float32Array; values: Float32Array };
  barrierExchange(spec: { values: Int32Array; threads: number }): Int32Array;
  warpOps(spec: { values: Int32Array }): Int32Array;
  atomics(spec: { blocks: number; threads: number }): { count: number; sum: number };
  wmmaTile(spec: { a: Float32Array; b: Float32Array; c: Float32Array; dtype: "bfloat16" | "float16" }): { d: Float32Array; a: Float32Array; b: Float32Array };
  misuse(probe: string, index?: number): void;
  graphReplay(spec: { x: Float32Array; replays: number }): { afterCapture: Float32Array; afterReplays: Float32Array };
  cudaError(code: number): void;
}

export function cudaEmulation(): CudaEmulation {
  return (native() as unknown as { cudaEmulationForTest: CudaEmulation }).cudaEmulationForTest;
}

/** Unit roundoff of float32: the largest relative error of one rounding to nearest. */
export const U32 = 2 ** -24;

/** γ_n = n·u / (1 − n·u): the relative error bound of a sum of n float32 terms, in any order. */
export const gamma = (n: number) => (n * U32) / (1 - n * U32);

/**
 * The largest slope of the exact GELU x·Φ(x) (at x = √2): an error e in its input moves its output by
 * at most this times e.
 */
export const GELU_SLOPE = 1.13;
