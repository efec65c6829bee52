/**
 * The CUDA emulation itself (native/cuda/emu) and the emulated DeviceRuntime: that barriers, warp
 * shuffles and votes, atomics and wmma keep their CUDA meaning when kernels run as host C++, that
 * misuse a GPU would hang on or leave undefined is reported as a typed error instead of a crash, and
 * that CUDA runtime failures become typed errors that say what to do.
 */
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { describe, it } from "node:test";

import { cudaEmulation, describeOnEach, gamma, reportRealKernels, type CudaDevice } from "./helpers/cuda-emulation.js";
import { seededRandom } from "./helpers/seeded-random.js";

const cuda = cudaEmulation();

reportRealKernels(it, "cuda semantics and graphs");

// The same semantics on a GPU, when one answers: the emulation must mean what CUDA means.
describeOnEach(describe, "cuda emulation: semantics", (cuda, label) => {
  for (const threads of [64, 100, 256]) {
    it(`__syncthreads orders shared-memory writes before other threads' reads (${threads} threads, 3 blocks)`, () => {
      const values = Int32Array.from({ length: 3 * threads }, (_, i) => i * 5 - 7);
      const out = cuda.barrierExchange({ values, threads });
      // Thread t reads what thread t + 1 wrote: without a real barrier it would read a stale slot.
      const expected = Int32Array.from(values, (_, i) => {
        const block = Math.floor(i / threads), t = i % threads;
        return values[block * threads + ((t + 1) % threads)]! * 2;
      });
      assert.deepEqual(out, expected);
    });
  }

  it("warp shuffles, votes and a shuffle reduction exchange values among the 32 lanes at the call", () => {
    const random = seededRandom(5);
    const threads = 96;
    // Warp 0 all non-negative (all = 1, any > 1000 = 0 unless drawn), warps 1–2 mixed.
    const values = Int32Array.from({ length: threads }, (_, t) => (t < 32 ? Math.floor(random() * 900) : Math.floor(random() * 4001) - 2000));
    const out = cuda.warpOps({ values });
    const row = (r: number) => Array.from(out.subarray(r * threads, (r + 1) * threads));
    const expected: number[][] = Array.from({ length: 9 }, () => []);
    for (let t = 0; t < threads; t++) {
      const lane = t % 32, base = t - lane;
      const warp = Array.from(values.subarray(base, base + 32));
      expected[0]!.push(warp[(lane * 7 + 3) % 32]!);
      expected[1]!.push(warp[lane ^ 5]!);
      expected[2]!.push(lane + 3 < 32 ? warp[lane + 3]! : warp[lane]!);
      expected[3]!.push(lane - 2 >= 0 ? warp[lane - 2]! : warp[lane]!);
      expected[4]!.push(warp[(lane & ~7) + ((lane + 1) & 7)]!);
      expected[5]!.push(warp.reduce((bits, v, l) => (v % 2 !== 0 ? bits | (1 << l) : bits), 0) | 0);
      expected[6]!.push(warp.some((v) => v > 1000) ? 1 : 0);
      expected[7]!.push(warp.every((v) => v >= 0) ? 1 : 0);
      expected[8]!.push(warp.reduce((s, v) => (s + v) | 0, 0));
    }
    const names = ["__shfl_sync", "__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync", "__shfl_sync width 8", "__ballot_sync", "__any_sync", "__all_sync", "xor reduction"];
    for (let r = 0; r < 9; r++) assert.deepEqual(row(r), expected[r], names[r]);
    assert.ok(expected[7]!.includes(1) && expected[7]!.includes(0), "the vote inputs exercise both outcomes");
  });

  it("atomics count every thread of the grid, a partial last warp included", () => {
    assert.deepEqual(cuda.atomics({ blocks: 3, threads: 100 }), { count: 300, sum: 150 });
  });

  for (const dtype of ["bfloat16", "float16"] as const) {
    it(`wmma mma_sync is c + Σ_k a·b, products exact, summed in k order in float32 (${dtype})`, () => {
      const random = seededRandom(dtype === "bfloat16" ? 1 : 2);
      const tile = () => Float32Array.from({ length: 256 }, () => random() * 4 - 2);
      const c = tile();
      const { d, a, b } = cuda.wmmaTile({ a: tile(), b: tile(), c, dtype });
      const expected = new Float32Array(256);
      for (let m = 0; m < 16; m++) {
        for (let n = 0; n < 16; n++) {
          let sum = c[m * 16 + n]!;
          for (let k = 0; k < 16; k++) sum = Math.fround(sum + a[m * 16 + k]! * b[k * 16 + n]!);
          expected[m * 16 + n] = sum;
        }
      }
      if (label === "emulation") {
        // The emulation's model of the tensor core, exactly.
        assert.deepEqual(d, expected);
      } else {
        // A GPU's tensor core may add in another order and truncate rather than round: each of its 16
        // float32 additions errs by at most 2u relative, so γ_32 of the sum of magnitudes bounds its
        // distance from the exact sum, and γ_16 the emulation's model's: 2·γ_32 covers both.
        for (let i = 0; i < 256; i++) {
          const m = Math.floor(i / 16), n = i % 16;
          let magnitude = Math.abs(c[i]!);
          for (let k = 0; k < 16; k++) magnitude += Math.abs(a[m * 16 + k]! * b[k * 16 + n]!);
          assert.ok(Math.abs(d[i]! - expected[i]!) <= 2 * gamma(32) * magnitude, `element ${i}: ${d[i]} vs ${expected[i]}`);
        }
      }
    });
  }
});

describe("cuda emulation: misuse is a typed error, not a crash or a hang", () => {
  it("indexing a shared array past either end", () => {
    cuda.misuse("sharedIndex", 31);
    assert.throws(() => cuda.misuse("sharedIndex", 32), { code: "FALCON_STATE", message: /probe_shared_index block \(0,0,0\) thread \(0,0,0\): shared memory index 32 is outside \[0, 32\)/ });
    assert.throws(() => cuda.misuse("sharedIndex", -1), { code: "FALCON_STATE", message: /shared memory index -1/ });
  });

  it("a __syncthreads() that half the block never reaches", () => {
    assert.throws(() => cuda.misuse("divergentBarrier"), { code: "FALCON_STATE", message: /exited while 32 others wait at __syncthreads\(\)/ });
  });

  it("a shuffle reading a lane outside its mask", () => {
    assert.throws(() => cuda.misuse("shuffleOutsideMask"), { code: "FALCON_STATE", message: /shuffles from lane 20, which is not in the mask/ });
  });

  it("a full-mask shuffle after half the warp exited", () => {
    assert.throws(() => cuda.misuse("shuffleAfterExit"), { code: "FALCON_STATE", message: /exited while its warp waits for it in __shfl_xor_sync/ });
  });

  it("different warp collectives reached by lanes of one warp", () => {
    assert.throws(() => cuda.misuse("mixedCollectives"), { code: "FALCON_STATE", message: /__ballot_sync reached while other lanes of the warp wait in __shfl_xor_sync/ });
  });

  it("a deadlock between a warp collective and a barrier", () => {
    assert.throws(() => cuda.misuse("warpBarrierDeadlock"), {
      code: "FALCON_STATE",
      message: /deadlock: 48 threads wait at __syncthreads\(\); warp 0 waits in __syncwarp/,
    });
  });

  it("the runtime refuses a copy past a device allocation and reports running out of device memory with the fix", () => {
    assert.throws(() => cuda.misuse("copyOutsideAllocation"), { code: "FALCON_STATE", message: /not inside one device allocation/ });
    assert.throws(() => cuda.misuse("outOfMemory"), { code: "FALCON_STATE", message: /out of memory.*smaller model or dtype/ });
    assert.throws(() => cuda.misuse("noSuchProbe"), { code: "FALCON_INPUT" });
  });
});

describeOnEach(describe, "cuda runtime seam: graphs", (cuda) => {
  it("graph capture records work without running it; each replay runs it again, in order", () => {
    const { afterCapture, afterReplays } = cuda.graphReplay({ x: new Float32Array([1, 2, 3]), replays: 2 });
    assert.deepEqual(afterCapture, new Float32Array([1, 2, 3]));
    // Each replay adds 1, then copies the values to the snapshot: two replays leave x + 2 there.
    assert.deepEqual(afterReplays, new Float32Array([3, 4, 5]));
  });
});

describe("cuda runtime seam", () => {

  it("CUDA runtime errors become typed errors that say what to do", () => {
    const cases: Array<[number, string, RegExp]> = [
      [2, "FALCON_STATE", /out of memory/],
      [3, "FALCON_CONFIG", /driver could not start/],
      [35, "FALCON_CONFIG", /driver is missing, or older than this build's CUDA runtime; install or update the driver/],
      [100, "FALCON_CONFIG", /no CUDA GPU is visible.*device: "cpu"/],
      [101, "FALCON_CONFIG", /no such GPU/],
      [209, "FALCON_CONFIG", /no code this GPU or driver can run/],
      [222, "FALCON_CONFIG", /no code this GPU or driver can run/],
      [719, "FALCON_STATE", /cudaTestCall failed \(CUDA error 719/],
    ];
    for (const [code, kind, message] of cases) assert.throws(() => cuda.cudaError(code), { code: kind, message }, `cudaError ${code}`);
  });
});

describe("cuda kernel timing (bench/cuda-kernels.mjs's entry point)", () => {
  it("times every op on tiny shapes and refuses unknown ops and sizes as input errors", () => {
    const shapes = { m: 3, k: 32, n: 20, dtype: "bfloat16", sequences: 2, context: 20, heads: 4, kvHeads: 2, headDim: 16, rows: 2, vocab: 1500 };
    for (const op of ["copy", "gemm_wmma", "gemm_f32", "gemv", "gemv_int8", "paged_attention", "flash_prefill", "draw_tokens"]) {
      const seconds = cuda.timeKernel({ op, iterations: 2, bytes: 4096, ...shapes });
      assert.ok(Number.isFinite(seconds) && seconds > 0, `${op}: ${seconds}`);
    }
    assert.throws(() => cuda.timeKernel({ op: "nope", iterations: 1 }), { code: "FALCON_INPUT", message: /no op nope/ });
    assert.throws(() => cuda.timeKernel({ op: "gemv", iterations: 1, ...shapes, m: 9 }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.timeKernel({ op: "gemm_wmma", iterations: 1, ...shapes, dtype: "float32" }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.timeKernel({ op: "paged_attention", iterations: 1, ...shapes, kvHeads: 3 }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.timeKernel({ op: "draw_tokens", iterations: 1, ...shapes, vocab: 2 ** 19 + 1 }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.timeKernel({ op: "copy", iterations: 0, bytes: 16 }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.timeKernel({ op: "copy", iterations: 1, bytes: 16, budgetSeconds: -1 }), { code: "FALCON_INPUT" });
    assert.ok(cuda.timeKernel({ op: "copy", iterations: 3, bytes: 16, budgetSeconds: 0.001 }) > 0);
  });
});

describe("cuda real kernels without a GPU", () => {
  // FALCON_TEST_CUDA_ADDON names a CMake build with CUDA (npm run build:cmake where nvcc is found).
  const addonFile = process.env["FALCON_TEST_CUDA_ADDON"];
  const addon = addonFile ? (createRequire(import.meta.url)(path.resolve(addonFile)) as { cudaDeviceForTest?: CudaDevice }) : undefined;
  const device = addon?.cudaDeviceForTest;
  let gpu: string | undefined;
  try {
    gpu = device?.realDevice(0).name;
  } catch {
    gpu = undefined;
  }
  const skip = !device ? "FALCON_TEST_CUDA_ADDON does not name a CUDA build" : gpu ? `a GPU answers (${gpu})` : undefined;
  it("every entry point throws the typed no-device error with its fix, not a crash", { skip }, () => {
    const noDevice = { code: "FALCON_CONFIG", message: /driver|GPU/ };
    assert.throws(() => device!.realDevice(0), noDevice);
    assert.throws(() => device!.embedding({ table: new Float32Array(8), dim: 4, dtype: "float32", ids: Int32Array.from([1]) }), noDevice);
    assert.throws(() => device!.timeKernel({ op: "copy", iterations: 1, bytes: 16 }), noDevice);
    assert.equal((device as unknown as { misuse?: unknown }).misuse, undefined, "the emulation's misuse probes are not on the real binding");
  });
});
