/**
 * The whole contract between TypeScript and the native addon, and the one place that loads it.
 * Every native call returns or rejects with errors whose `code` is one of NativeErrorCode.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

import type { EngineStats } from "./engine/engine.js";
import {
  FalconConfigError,
  FalconDisposedError,
  FalconError,
  FalconInputError,
  FalconNativeLoadError,
  FalconPresetError,
} from "./errors.js";
import { gatherLoaderFacts, loadAddon } from "./native-loader.js";

export type NativeDType = "float32" | "bfloat16" | "float16" | "int8" | "int4";
/** The floating-point formats weights arrive in and are read back as. */
export type NativeFloatDType = "float32" | "bfloat16" | "float16";
export type NativeSourceDType = NativeFloatDType | "float64";

/** The architecture superset every Falcon variant maps onto (native/core/model_config.h). */
export interface NativeModelConfig {
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  hiddenDim: number;
  ffnDim: number;
  layerNormEpsilon: number;
  positionEncoding: "alibi" | "rotary";
  ropeTheta: number;
  ropeScaling: "none" | "linear" | "dynamic";
  ropeScalingFactor: number;
  maxPositionEmbeddings: number;
  blockLayout: "sequential" | "parallel_one_norm" | "parallel_two_norms";
  useBias: boolean;
  tiedHead: boolean;
  dtype: NativeDType;
}

export interface NativeModelInfo {
  parameterCount: number;
  weightBytes: number;
  dtype: NativeDType;
  /** "cpu" or "cuda". */
  backend: string;
  /** The device, for people: "cpu", "cuda:0 (NVIDIA H200, sm_90, 139 GiB)", "cuda:0 (emulated on the host)". */
  device: string;
  /** Bytes of the device's memory (host memory for the CPU) not in use: what an engine sizes its KV pool from. */
  memoryAvailable: number;
}

export interface NativeModel {
  /**
   * Copies a [rows, cols] source (stored [cols, rows] when inputMajor) into rows
   * [rowOffset, rowOffset + rows) of a canonical weight, casting to the model dtype.
   */
  setWeight(
    name: string,
    rowOffset: number,
    data: ArrayBufferView,
    dtype: NativeSourceDType,
    rows: number,
    cols: number,
    inputMajor: boolean,
  ): Promise<void>;
  /**
   * Like setWeight, reading `rows × cols` values at `byteOffset` of an open weight file (bounds-checked
   * natively), a block of rows at a time; a file that shrank since it was opened rejects (FALCON_WEIGHTS).
   */
  setWeightFromFile(
    name: string,
    rowOffset: number,
    file: NativeWeightFile,
    byteOffset: number,
    dtype: NativeSourceDType,
    rows: number,
    cols: number,
    inputMajor: boolean,
  ): Promise<void>;
  /**
   * Like setWeightFromFile for a block-quantised ggml tensor (GGUF type id `ggmlType`: Q4_0 … Q6_K),
   * dequantised to float32 with ggml's reference formulas, then stored in the model dtype.
   */
  setWeightFromGgml(
    name: string,
    rowOffset: number,
    file: NativeWeightFile,
    byteOffset: number,
    ggmlType: number,
    rows: number,
    cols: number,
  ): Promise<void>;
  /** A whole weight: matrices [rows, cols] in the model dtype (int8 and int4 dequantised to float32), vectors (cols = 1) as float32. */
  getWeight(name: string): Promise<{ data: Uint8Array; dtype: NativeFloatDType; rows: number; cols: number }>;
  initializeRandom(seed: number): Promise<void>;
  /** Throws (code FALCON_WEIGHTS) listing every weight never set. */
  requireComplete(): void;
  /**
   * Once every weight is set: puts them where the backend's kernels read them (CUDA: uploads them and
   * frees the host copy, so getWeight then refuses). Every load and initialisation ends with it.
   */
  prepareWeights(): Promise<void>;
  forward(
    tokenIds: Int32Array,
    paddingMask: Uint8Array | null,
    positionIds: Int32Array | null,
    batch: number,
    length: number,
    cache: NativeKvCache | null,
    cacheUpdateIndex: Int32Array | null,
  ): Promise<Float32Array>;
  projectLogits(hidden: Float32Array, rows: number): Promise<Float32Array>;
  embed(tokenIds: Int32Array): Promise<Float32Array>;
  info(): NativeModelInfo;
  weightNames(): string[];
  dispose(): void;
}

export interface NativeKvCache {
  byteSize(): number;
  dispose(): void;
}

/** A weight file open for setWeightFromFile (read with pread in bounded blocks). */
export interface NativeWeightFile {
  size(): number;
  dispose(): void;
}

/** Engine options as the native constructor reads them (checked again natively). */
export interface NativeEngineOptions {
  /** KV blocks of the pool (a real model's engine; the fake runner takes numBlocks too). */
  numBlocks: number;
  /** What the pool stores keys and values as (default float32). */
  kvDtype?: NativeKvDType;
  maxBatchTokens?: number;
  maxSequences?: number;
  prefixCaching?: boolean;
  /** Keep a log of every step's chunks for stepLog() (tests). */
  recordSteps?: boolean;
}

/** The test-only fake step runner (native/core/fake_step_runner.h). */
export interface NativeFakeRunnerOptions extends NativeEngineOptions {
  vocabSize: number;
  /** Each step sleeps this long (deterministic timing in tests). */
  stepDelayMs?: number;
  /** A step that feeds this token fails as out of memory. */
  failToken?: number;
}

export interface NativeEngineRequest {
  promptIds: Int32Array | readonly number[];
  /** At least 1. */
  maxNewTokens: number;
  stopTokenIds?: Int32Array | readonly number[];
  /** Ids at or above it are never sampled; 0 or omitted = the whole vocabulary. */
  allowedVocabulary?: number;
  /** A resolved sampler config (src/samplers.ts). */
  sampler: { type: string; k: number | null; p: number | null; temperature: number; seed: number };
  /** -1 or omitted: none; n in [0, 20]: the chosen token's logprob and the n most likely. */
  logprobs?: number;
  returnLogits?: boolean;
}

/** One event of a step: a token (token ≥ 0), and with `finish` set, the request's last event. */
export interface NativeEngineEvent {
  id: number;
  /** -1 when the event carries no token (cancelled, error). */
  token: number;
  finish: "" | "stop" | "length" | "cancelled" | "error";
  logprob?: number;
  top?: { token: number; logprob: number }[];
  logits?: Float32Array;
  error?: { code: NativeErrorCode; message: string };
}

/** The public EngineStats (src/engine/engine.ts), plus the steps run. */
export interface NativeEngineStats extends EngineStats {
  steps: number;
  /** Output rows the step runner returned as whole logits rows (on CUDA: copied back from the device). */
  wholeLogitsRows: number;
  /** Output rows it returned as their sampler's best candidates only, ranked on the device (never on the CPU). */
  rankedLogitsRows: number;
  /** Output rows it returned as their token only, drawn on the device from the sampler's draw (never on the CPU). */
  drawnTokenRows: number;
}

export interface NativeEngine {
  /** Validates and queues a request (throws FALCON_INPUT for one that could never fit); returns its id. */
  submit(request: NativeEngineRequest): number;
  /** Before the next step: blocks released, a "cancelled" event sent. Unknown ids are ignored. */
  cancel(id: number): void;
  /** Holds the engine between steps (requests and cancellations are still taken in; cancelled blocks freed at once). */
  pause(): void;
  /** Runs `steps` more steps then holds again, or runs freely without an argument. */
  resume(steps?: number): void;
  stats(): NativeEngineStats;
  /** The steps run since the last call (recordSteps only): each step's chunks and preempted ids. */
  stepLog(): { chunks: { id: number; start: number; count: number }[]; preempted: number[] }[];
  /** Stops the engine thread; pending requests get no more events. Idempotent. */
  close(): void;
}

export interface NativeEngineConstructor {
  new (model: NativeModel, options: NativeEngineOptions, onEvents: (events: NativeEngineEvent[]) => void): NativeEngine;
  /** An engine over the fake step runner, for tests of the policy without a model. */
  withFakeRunner(options: NativeFakeRunnerOptions, onEvents: (events: NativeEngineEvent[]) => void): NativeEngine;
  /** Bytes of one KV block (16 tokens, every layer, distinct KV heads, keys and values) of this model. */
  kvBlockBytes(model: NativeModel, kvDtype?: NativeKvDType): number;
}

export interface NativeAddon {
  NativeEngine: NativeEngineConstructor;
  /** `device`: "cpu" (default), "auto", "cuda" or "cuda:N" (backend_for_device in native/binding/device_choice.h). */
  NativeModel: new (config: NativeModelConfig, device?: string) => NativeModel;
  NativeKvCache: new (model: NativeModel, batchSize: number, maxLength: number) => NativeKvCache;
  NativeWeightFile: new (path: string) => NativeWeightFile;
  numThreads(): number;
  setNumThreads(threads: number): void;
  /** The kernel family in use, the families this CPU supports, and the raw feature flags. */
  cpuInfo(): { isa: CpuIsa; supportedIsas: CpuIsa[]; features: Record<string, boolean> };
  /** The backend new models run on ("cpu"; a CUDA build reports its own). */
  /** The backend device "auto" picks: "cuda" when this binary has CUDA kernels and GPU 0 answers, else "cpu". */
  defaultBackend(): string;
  /** Whether this binary has the real CUDA kernels (without them, device "cuda" needs FALCON_CUDA_EMULATE=1). */
  cudaKernelsBuilt(): boolean;
  /** Switches the kernel family process-wide (must be supported; FALCON_ISA sets the initial one). */
  setIsa(isa: CpuIsa): void;
  /** Measures read bandwidth over a buffer of `bytes` and the f32 FMA / bf16 dot / int8 dot peaks, on all pool threads. */
  probeMachine(bytes?: number): Promise<{
    readBytesPerSecond: number;
    f32FlopsPerSecond: number;
    bf16FlopsPerSecond: number;
    int8OpsPerSecond: number;
  }>;
  /** The CPU reference's positional-encoding primitives, exposed for tests against reference tables. */
  alibiSlopes(numHeads: number): Float32Array;
  rotaryTables(
    headDim: number,
    theta: number,
    scaling: "none" | "linear" | "dynamic",
    factor: number,
    maxPositionEmbeddings: number,
    positions: Int32Array,
    sequenceLength: number,
  ): { cos: Float32Array; sin: Float32Array };
  /**
   * The core's counted allocations. live*: weights, caches, workspaces, per-call scratch and result
   * arrays (until JavaScript collects them); a process with no models, caches or calls is back at its
   * baseline. threadScratch*: per-thread buffers hot paths keep between calls, each at most 1 MiB.
   */
  memoryStats(): { liveBytes: number; liveAllocations: number; threadScratchBytes: number; threadScratchAllocations: number };
  /** Bytes this process can still allocate: MemAvailable, within its cgroup's memory limit. */
  memoryAvailable(): number;
  /** Bytes `new NativeModel(config)` allocates; NativeModel refuses (FALCON_CONFIG) more than memoryAvailable(). */
  modelMemoryBytes(config: NativeModelConfig): number;
  /** Bytes `new NativeKvCache(model, batchSize, maxLength)` allocates; it refuses (FALCON_INPUT) more than memoryAvailable(). */
  cacheMemoryBytes(config: NativeModelConfig, batchSize: number, maxLength: number): number;
  /**
   * @internal Test-only: one ragged step over the KV pool of `cache` (block ids [0, batchSize · ceil(maxLength / 16))),
   * run synchronously; the final hidden states of spec.outputRows, [outputs, hidden].
   */
  runStepForTest(model: NativeModel, cache: NativeKvCache, spec: NativeStepSpec): Float32Array;
  /**
   * @internal Test-only: y [rows, outputs] (+)= epilogue(x · wᵀ) through the active ISA's kernels, with w
   * [outputs, cols] stored as a model of `dtype` stores it; `y`, when given, is accumulated into.
   */
  matmulForTest(
    dtype: NativeDType,
    weights: Float32Array,
    outputs: number,
    cols: number,
    x: Float32Array,
    rows: number,
    bias: Float32Array | null,
    gelu: boolean,
    y: Float32Array | null,
  ): Float32Array;
  /**
   * @internal Test-only: a step runner (make_model_step_runner) owning a pool of `numBlocks` KV blocks that stores
   * keys and values as `kvDtype` (float32 by default; bfloat16 and float16 round them once when written).
   */
  stepRunnerForTest(model: NativeModel, numBlocks: number, kvDtype?: NativeKvDType): NativeStepRunnerForTest;
  /**
   * @internal The engine's native sampler (native/core/sampler.h), for tests against src/samplers.ts:
   * one SequenceSampler on batch row `stream` samples each of `rows` consecutive rows of `logits` from
   * its first `allowed` ids (one count for every row, or one per row).
   */
  sampleForTest(
    logits: Float32Array,
    allowed: number | Int32Array,
    rows: number,
    config: { type: string; k: number | null; p: number | null; temperature: number; seed: number },
    stream: number,
  ): Int32Array;
  /** @internal The native token_logprobs over logits[0 .. allowed): `chosen`'s logprob and the `top` best. */
  tokenLogprobsForTest(
    logits: Float32Array,
    allowed: number,
    chosen: number,
    top: number,
  ): { logprob: number; tokens: Int32Array; logprobs: Float32Array };
}

/** What a KV pool stores keys and values as (native/core/kv_pool.h). */
export type NativeKvDType = "float32" | "bfloat16" | "float16";

/** One ragged step (native/core/step.h): sequence i's tokens are the `count` flat entries after those of sequences < i. */
export interface NativeStepSpec {
  sequences: { blockTable: Int32Array; start: number; count: number; ropeLength: number }[];
  tokenIds: Int32Array;
  positions: Int32Array;
  valid: Uint8Array;
  outputRows: Int32Array;
}

export interface NativeStepRunnerForTest {
  numBlocks(): number;
  vocabSize(): number;
  /** Logits of spec.outputRows, [outputs, vocab]. */
  run(spec: NativeStepSpec): Float32Array;
}

export type CpuIsa = "scalar" | "avx2" | "avx512";

export type NativeErrorCode = "FALCON_INPUT" | "FALCON_CONFIG" | "FALCON_WEIGHTS" | "FALCON_STATE";

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
let loaded: NativeAddon | undefined;

/**
 * Loads the addon once, from the first candidate that loads (src/native-loader.ts: FALCON_NATIVE_ADDON,
 * the CUDA package when its driver answers, a local build, the CPU prebuild); the error lists each
 * candidate, why it failed and how to fix it.
 */
export function native(): NativeAddon {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const facts = gatherLoaderFacts(packageRoot, require);
  loaded = loadAddon(facts, (file) => require(file) as NativeAddon, (message, cause) => new FalconNativeLoadError(message, { cause }));
  // Whoever installed the CUDA package expects the GPU: say why it is not used.
  if (facts.cudaProbe?.usable === false && loaded.defaultBackend() !== "cuda") {
    process.emitWarning(`${facts.cudaPackage} is installed but no GPU is usable (${facts.cudaProbe.reason}): running on the CPU`, { code: "FALCON_NO_GPU" });
  }
  return loaded;
}

/** Turns a native error into the matching typed FalconError; other errors pass through. */
export function toFalconError(error: unknown, context?: string): unknown {
  if (!(error instanceof Error) || error instanceof FalconError) return error;
  const code = (error as Error & { code?: string }).code as NativeErrorCode | undefined;
  const message = context ? `${context}: ${error.message}` : error.message;
  switch (code) {
    case "FALCON_INPUT":
      return new FalconInputError(message);
    case "FALCON_CONFIG":
      return new FalconConfigError(message);
    case "FALCON_WEIGHTS":
      return new FalconPresetError(message);
    case "FALCON_STATE":
      return /disposed/.test(error.message) ? new FalconDisposedError(message) : new FalconError(message);
    default:
      return error;
  }
}

/** Runs a native call and rethrows its failure as a typed FalconError. */
export async function callNative<T>(run: () => Promise<T> | T, context?: string): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw toFalconError(error, context);
  }
}

export function callNativeSync<T>(run: () => T, context?: string): T {
  try {
    return run();
  } catch (error) {
    throw toFalconError(error, context);
  }
}
