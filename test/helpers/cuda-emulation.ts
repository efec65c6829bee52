/**
 * The test-only native binding of the CUDA kernels as the host emulation runs them
 * (native/binding/cuda_test.cpp), typed for the cuda-*.test.ts files, and the same entry points over
 * the real kernels on a GPU when FALCON_TEST_CUDA_ADDON names a CMake build with CUDA.
 */
import { createRequire } from "node:module";
import path from "node:path";

import { native } from "../../src/native.js";
import type { ResolvedSamplerConfig } from "../../src/samplers.js";

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

export interface CudaWriteKvSpec {
  heads: number;
  kvHeads: number;
  headDim: number;
  kvDtype: "float32" | "bfloat16" | "float16";
  numBlocks: number;
  /** ≥ (heads + 2 · kvHeads) · headDim */
  qkvStride: number;
  /** [rows][qkvStride]: query heads, then key heads, then value heads */
  qkv: Float32Array;
  /** Per row: its pool block and slot (distinct), valid flag and position. */
  rowBlock: Int32Array;
  rowSlot: Int32Array;
  rowValid: Uint8Array;
  rowPosition: Int32Array;
}

export interface CudaEmulation {
  /** int8: table holds the integers q (in [-127, 127]) and scales one float32 per row. */
  embedding(spec: { table: Float32Array; dim: number; dtype: CudaWeightDType; ids: Int32Array; scales?: Float32Array }): { gpu: Float32Array; cpu: Float32Array };
  /** out[i] = x[rows[i]], rows of dim floats. */
  gatherRows(spec: { x: Float32Array; dim: number; rows: Int32Array }): Float32Array;
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
  /** Launchers called with sizes or types they must refuse, and the error code each threw ("none" if it did not). */
  kernelRefusals(): Array<{ call: string; code: string; message: string }>;
  attention(spec: CudaAttentionSpec): { gpu: Float32Array; cpu: Float32Array; keys: Float32Array; values: Float32Array };
  /** top_k over logits rows[i] (of vocab values) for counts[i] candidates among [0, allowed[i]), and core's rank_top_k on the same rows; each row's candidates one after another. */
  topK(spec: { logits: Float32Array; vocab: number; rows: Int32Array; counts: Int32Array; allowed: Int32Array }): {
    gpuIds: Int32Array;
    gpuValues: Float32Array;
    cpuIds: Int32Array;
    cpuValues: Float32Array;
  };
  /** One native sampler over whole rows, and one (same config and stream) over top_k's candidates of each row (candidates 0: whole rows). */
  sampleRanked(spec: { logits: Float32Array; vocab: number; allowed: number; sampler: ResolvedSamplerConfig; stream: number }): {
    whole: Int32Array;
    ranked: Int32Array;
    candidates: Int32Array;
  };
  /**
   * draw_tokens on logits rows[i] (of vocab values) over [0, allowed[i]) at temperatures[i] (with topPs[i] > 0, over the nucleus of
   * that mass; -1 where the kernel leaves the cut to the host) with draws[i], and the native sampler's sample_drawn on the same rows and draws.
   */
  drawTokens(spec: { logits: Float32Array; vocab: number; rows: Int32Array; allowed: Int32Array; temperatures: Float64Array; topPs?: Float64Array; draws: Float64Array }): {
    gpu: Int32Array;
    cpu: Int32Array;
  };
  /** The pool's key and value bytes and its slots' flags and positions after write_kv and after cpu::write_cache. */
  writeKv(spec: CudaWriteKvSpec): {
    gpuKv: Uint8Array;
    cpuKv: Uint8Array;
    gpuValid: Uint8Array;
    cpuValid: Uint8Array;
    gpuPositions: Int32Array;
    cpuPositions: Int32Array;
  };
  barrierExchange(spec: { values: Int32Array; threads: number }): Int32Array;
  warpOps(spec: { values: Int32Array }): Int32Array;
  atomics(spec: { blocks: number; threads: number }): { count: number; sum: number };
  /** split_f16's float16 parts (widened) and row scales, and the host's float16 rounding of each x scaled by its row's 1 / rowUnscale. */
  splitF16(spec: { x: Float32Array; rows: number; k: number }): { high: Float32Array; low: Float32Array; rowUnscale: Float32Array; hostHigh: Float32Array };
  wmmaTile(spec: { a: Float32Array; b: Float32Array; c: Float32Array; dtype: "bfloat16" | "float16" }): { d: Float32Array; a: Float32Array; b: Float32Array };
  misuse(probe: string, index?: number): void;
  graphReplay(spec: { x: Float32Array; replays: number }): { afterCapture: Float32Array; afterReplays: Float32Array };
  cudaError(code: number): void;
  /** Seconds per launch of one kernel on pseudo-random inputs (cuda_test.cpp's TimeKernel; bench/cuda-kernels.mjs). */
  timeKernel(spec: { op: string; iterations: number; budgetSeconds?: number; [key: string]: number | string | undefined }): number;
}

/** The real kernels' binding (cudaDeviceForTest): the emulation's entry points less its misuse probes. */
export interface CudaDevice extends Omit<CudaEmulation, "misuse"> {
  realDevice(ordinal: number): { name: string; computeMajor: number; computeMinor: number; totalBytes: number };
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

/** A set of kernels the op tests run every case on. */
export interface CudaKernelSet {
  /** "emulation" or "GPU <name>", put in each test's name. */
  label: string;
  kernels: Omit<CudaEmulation, "misuse">;
}

export interface CudaKernelSets {
  sets: CudaKernelSet[];
  /** Why the real kernels are not among the sets (undefined when they are). */
  realUnavailable?: string;
}

let kernelSets: CudaKernelSets | undefined;

/**
 * The emulation, plus the real kernels when FALCON_TEST_CUDA_ADDON names an addon built with CUDA
 * (npm run build:cmake with nvcc; see bench/cuda-check.sh) and its GPU 0 answers.
 */
export function cudaKernelSets(): CudaKernelSets {
  if (kernelSets) return kernelSets;
  const sets: CudaKernelSet[] = [{ label: "emulation", kernels: cudaEmulation() }];
  const addonFile = process.env["FALCON_TEST_CUDA_ADDON"];
  let realUnavailable: string | undefined;
  if (!addonFile) {
    realUnavailable = "FALCON_TEST_CUDA_ADDON is unset (set it to a CUDA build's falcon_native.node to run the real kernels too)";
  } else {
    const addon = createRequire(import.meta.url)(path.resolve(addonFile)) as { cudaDeviceForTest?: CudaDevice };
    const device = addon.cudaDeviceForTest;
    if (!device) {
      realUnavailable = `${addonFile} was built without CUDA (no cudaDeviceForTest)`;
    } else {
      try {
        const info = device.realDevice(0);
        sets.push({ label: `GPU ${info.name} sm_${info.computeMajor}${info.computeMinor}`, kernels: device });
      } catch (error) {
        realUnavailable = `${addonFile} has the CUDA kernels but no GPU answered: ${(error as Error).message}`;
      }
    }
  }
  kernelSets = { sets, realUnavailable };
  return kernelSets;
}

/** describe(`${name} [${set label}]`, …) once for each kernel set, the body given that set's kernels. */
export function describeOnEach(
  describe: (name: string, body: () => void) => unknown,
  name: string,
  body: (cuda: CudaKernelSet["kernels"], label: string) => void,
): void {
  for (const { label, kernels } of cudaKernelSets().sets) describe(`${name} [${label}]`, () => body(kernels, label));
}

/**
 * Registers the test that says whether the real kernels ran: skipped, with the reason, when only the
 * emulation ran; failed instead when FALCON_TEST_CUDA_REQUIRE=1 (the GPU check script sets it).
 */
export function reportRealKernels(it: (name: string, options: { skip?: string }, body: () => void) => unknown, suite: string): void {
  const { sets, realUnavailable } = cudaKernelSets();
  const name = `${suite}: real CUDA kernels`;
  if (realUnavailable === undefined) {
    it(`${name} ran (${sets.map((set) => set.label).join(" and ")})`, {}, () => {});
  } else if (process.env["FALCON_TEST_CUDA_REQUIRE"] === "1") {
    it(name, {}, () => {
      throw new Error(`FALCON_TEST_CUDA_REQUIRE=1 but the real kernels did not run: ${realUnavailable}`);
    });
  } else {
    it(name, { skip: `emulation only: ${realUnavailable}` }, () => {});
  }
}

/**
 * For the suites that run whole models on device "cuda": true on a GPU run (bench/cuda-check.sh names a
 * CMake build with CUDA in FALCON_TEST_CUDA_ADDON and loads it as the library's addon through
 * FALCON_NATIVE_ADDON), where "cuda" is the real GPU; anywhere else this switches device "cuda" to the
 * host emulation (FALCON_CUDA_EMULATE=1, read by the native code whenever a model's device is chosen).
 */
export function onRealGpu(): boolean {
  const real = process.env["FALCON_TEST_CUDA_ADDON"] !== undefined && native().cudaKernelsBuilt();
  if (!real) process.env["FALCON_CUDA_EMULATE"] = "1";
  return real;
}
