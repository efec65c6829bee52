/** Process-wide native settings: the kernel family (ISA) and the size of the thread pool. */
import { FalconInputError } from "./errors.js";
import { callNativeSync, native, type CpuIsa } from "./native.js";

export type { CpuIsa } from "./native.js";

export interface RuntimeInfo {
  /** The backend models loaded with device "auto" (the default) run on: "cuda" or "cpu". */
  backend: string;
  /** Whether this binary has the CUDA kernels (device "cuda" needs them, or FALCON_CUDA_EMULATE=1). */
  cudaKernels: boolean;
  /** The kernel family in use. */
  isa: CpuIsa;
  /** Families this CPU and OS can run (FALCON_ISA picks one at startup). */
  supportedIsas: CpuIsa[];
  /** Native worker threads (FALCON_NUM_THREADS sets it at startup). */
  threads: number;
  features: Record<string, boolean>;
}

export function runtimeInfo(): RuntimeInfo {
  const { isa, supportedIsas, features } = native().cpuInfo();
  return {
    backend: native().defaultBackend(), cudaKernels: native().cudaKernelsBuilt(), isa, supportedIsas, threads: native().numThreads(), features,
  };
}

/**
 * Resizes the native thread pool. Calls already running finish on the pool they started with.
 * Throws FalconError, keeping the current pool, when the system refuses the threads.
 */
export function setNumThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1) throw new FalconInputError(`threads must be a positive integer, got ${threads}`);
  callNativeSync(() => native().setNumThreads(threads));
}

/** Selects the kernel family process-wide; throws FalconInputError when this CPU cannot run it. */
export function setIsa(isa: CpuIsa): void {
  callNativeSync(() => native().setIsa(isa));
}

/** What the native core holds now (see memoryStats in native.ts): for leak checks and server metrics. */
export interface NativeMemoryStats {
  /** Bytes of weights, KV caches, workspaces, per-call copies and result arrays not yet collected. */
  liveBytes: number;
  liveAllocations: number;
  /** Per-thread buffers hot paths keep between calls, each at most 1 MiB. */
  threadScratchBytes: number;
  threadScratchAllocations: number;
}

export function nativeMemoryStats(): NativeMemoryStats {
  return native().memoryStats();
}
