// Times the CUDA kernels at falcon-rw-1b's shapes beside their floors, or drives each kernel once on
// small shapes (for compute-sanitizer). Run by bench/cuda-check.sh on a GPU machine:
//   node bench/cuda-kernels.mjs time ADDON       the real kernels (cudaDeviceForTest of a CUDA build)
//   node bench/cuda-kernels.mjs sanitize ADDON   every kernel once, small shapes, results checked
//   node bench/cuda-kernels.mjs time-emulated    the emulation on tiny shapes: proves this script without a GPU
// Prints one row per kernel: shape, time per launch, rate, and the floor it is measured against.
// Exits 1 when a kernel fails or a checked result is out of bounds.
import { createRequire } from "node:module";
import path from "node:path";

const [mode, addonArgument] = process.argv.slice(2);
const emulated = mode === "time-emulated";
if (!["time", "sanitize", "time-emulated"].includes(mode) || (!emulated && !addonArgument)) {
  console.error("usage: node bench/cuda-kernels.mjs time|sanitize ADDON | time-emulated");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const addon = require(emulated ? path.resolve("build/Release/falcon_native.node") : path.resolve(addonArgument));
const kernels = emulated ? addon.cudaEmulationForTest : addon.cudaDeviceForTest;
if (!kernels) {
  console.error(`${addonArgument} was built without CUDA (no cudaDeviceForTest): build with FALCON_CUDA=ON`);
  process.exit(1);
}
if (!emulated) {
  const info = kernels.realDevice(0);
  console.log(`GPU: ${info.name}, sm_${info.computeMajor}${info.computeMinor}, ${(info.totalBytes / 2 ** 30).toFixed(1)} GiB`);
}

// falcon-rw-1b: hidden 2048, 32 heads of 64 (MHA, ALiBi), FFN 8192, 24 layers.
const hidden = emulated ? 64 : 2048;
const ffn = 4 * hidden;
const heads = emulated ? 2 : 32;
const headDim = hidden / heads;
const BYTES = { float32: 4, bfloat16: 2, float16: 2, int8: 1 };

/** Seconds per launch: the warm-up launch sizes a run of about 0.2 s (at most 200 launches). */
function time(spec) {
  return kernels.timeKernel({ ...spec, iterations: emulated ? 1 : 200, budgetSeconds: emulated ? 0 : 0.2 });
}

const rows = [];
let failures = 0;
function row(name, shape, run, rate) {
  try {
    const seconds = run();
    rows.push([name, shape, `${(seconds * 1e6).toFixed(1)} µs`, rate(seconds)]);
  } catch (error) {
    failures++;
    rows.push([name, shape, "FAILED", `${error.code ?? ""} ${error.message}`]);
  }
}
const tflops = (flops) => (seconds) => `${(flops / seconds / 1e12).toFixed(1)} TFLOP/s`;
const gbps = (bytes, floor) => (seconds) => {
  const rate = bytes / seconds / 1e9;
  return `${rate.toFixed(0)} GB/s${floor ? ` (${((100 * rate) / floor).toFixed(0)} % of the copy probe)` : ""}`;
};

if (mode === "sanitize") {
  // Every kernel once on small shapes, for compute-sanitizer. The matmuls also compare with the CPU,
  // as a gross check only (a wrong kernel, not rounding): the cuda-* tests hold the derived bounds.
  const n = 64, k = 96, m = 5;
  const random = (count) => Float32Array.from({ length: count }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  for (const [kernel, dtype] of [["tiled", "float32"], ["wmma", "bfloat16"], ["wmma", "float16"], ["gemv", "bfloat16"], ["gemv", "float32"]]) {
    row(`matmul ${kernel}`, `${m}×${k}×${n} ${dtype}`, () => {
      const { gpu, cpu } = kernels.matmul({ x: random(m * k), m, k, w: random(n * k), n, dtype, kernel, bias: random(n), gelu: true });
      const worst = gpu.reduce((most, value, i) => Math.max(most, Math.abs(value - cpu[i])), 0);
      if (!(worst < 0.05)) throw new Error(`differs from the CPU by ${worst}`);
      return 0;
    }, () => "ran; matches the CPU");
  }
  for (const op of ["gemm_wmma", "gemv_int8", "paged_attention", "flash_prefill", "draw_tokens"]) {
    row(op, "small", () => kernels.timeKernel({
      op, iterations: 1, m: 4, k: 64, n: 48, dtype: "bfloat16", sequences: 2, context: 40, heads: 4, kvHeads: 2, headDim: 64, rows: 3, vocab: 2500,
    }), () => "ran");
  }
  // float16 runs split_f16 and the pair GEMM (cuda_test.cpp's TimeKernel); top-p runs draw_tokens' nucleus cut.
  row("gemm_wmma float16", "small", () => kernels.timeKernel({ op: "gemm_wmma", iterations: 1, m: 4, k: 64, n: 48, dtype: "float16" }), () => "ran");
  row("draw_tokens top-p", "small", () => kernels.timeKernel({ op: "draw_tokens", iterations: 1, rows: 3, vocab: 2500, topP: 0.9 }), () => "ran");
  row("addLayerNorm", "3×200", () => (kernels.addLayerNorm({ residual: random(600), add: random(600), rows: 3, dim: 200, gamma: random(200), beta: random(200), epsilon: 1e-5 }), 0), () => "ran");
  row("biasGelu", "3×100", () => (kernels.biasGelu({ x: random(300), rows: 3, cols: 100, bias: random(100) }), 0), () => "ran");
  row("embedding", "5 ids", () => (kernels.embedding({ table: random(10 * 32), dim: 32, dtype: "bfloat16", ids: Int32Array.from([0, 3, 9, 2, 2]) }), 0), () => "ran");
} else {
  const copyBytes = emulated ? 1 << 16 : 2 ** 30;
  let copyRate = 0;
  row("HBM probe (device copy)", `${copyBytes / 2 ** 20} MiB`, () => {
    const seconds = time({ op: "copy", bytes: copyBytes });
    copyRate = (2 * copyBytes) / seconds / 1e9;
    return seconds;
  }, gbps(2 * copyBytes));
  const square = emulated ? 64 : 4096;
  // float16's time includes split_f16 and two products per multiply-add (high and low parts of x): its
  // rate counts the model's multiply-adds, not the tensor cores' work.
  for (const dtype of ["bfloat16", "float16"]) {
    row(`wmma ${dtype} rate`, `${square}³`, () => time({ op: "gemm_wmma", m: square, k: square, n: square, dtype }), tflops(2 * square ** 3));
  }
  const matrices = [["QKV", 3 * hidden, hidden], ["dense", hidden, hidden], ["fc1", ffn, hidden], ["fc2", hidden, ffn]];
  for (const m of emulated ? [16] : [512, 2048]) {
    for (const [name, n, k] of matrices) {
      for (const dtype of ["bfloat16", "float16"]) {
        row(`GEMM ${name} pp${m}`, `${m}×${k}→${n} ${dtype}`, () => time({ op: "gemm_wmma", m, k, n, dtype }), tflops(2 * m * n * k));
      }
    }
    row(`GEMM fc1 pp${m} strict f32`, `${m}×${hidden}→${ffn}`, () => time({ op: "gemm_f32", m, k: hidden, n: ffn }), tflops(2 * m * ffn * hidden));
  }
  for (const [name, n, k] of matrices) {
    for (const dtype of ["bfloat16", "float16", "float32", "int8"]) {
      const op = dtype === "int8" ? "gemv_int8" : "gemv";
      const bytes = n * k * BYTES[dtype];
      row(`GEMV ${name} decode`, `1×${k}→${n} ${dtype}`, () => time({ op, m: 1, k, n, dtype }), (seconds) => gbps(bytes, copyRate)(seconds));
    }
  }
  for (const sequences of emulated ? [2] : [1, 16, 64]) {
    for (const context of emulated ? [40] : [512, 2048]) {
      const bytes = 2 * sequences * context * heads * headDim * 2;
      row(`attention decode ×${sequences}`, `context ${context}, bf16 KV`, () =>
        time({ op: "paged_attention", sequences, context, heads, kvHeads: heads, headDim, dtype: "bfloat16" }), gbps(bytes, copyRate));
    }
  }
  for (const context of emulated ? [40] : [512, 2048]) {
    const flops = 2 * 2 * heads * headDim * (context * (context + 1)) / 2;
    row("flash prefill", `${context} tokens, bf16 KV`, () => time({ op: "flash_prefill", sequences: 1, context, heads, kvHeads: heads, headDim, dtype: "bfloat16" }), tflops(flops));
  }
  // Sampling at temperature 1 over falcon-rw-1b's vocabulary: the host sampler takes 0.56 ms a row on one
  // CPU core (README), rows one after another.
  const vocabulary = emulated ? 300 : 50304;
  for (const count of emulated ? [2] : [1, 64, 256]) {
    row(`draw tokens ×${count}`, `vocabulary ${vocabulary}, temperature 1`, () => time({ op: "draw_tokens", rows: count, vocab: vocabulary }),
      (seconds) => `${((seconds / count) * 1e6).toFixed(1)} µs a row`);
    row(`draw tokens ×${count}`, `vocabulary ${vocabulary}, top-p 0.9`, () => time({ op: "draw_tokens", rows: count, vocab: vocabulary, topP: 0.9 }),
      (seconds) => `${((seconds / count) * 1e6).toFixed(1)} µs a row`);
  }
}

const widths = [0, 1, 2, 3].map((c) => Math.max(...rows.map((r) => r[c].length), 6));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c])).join("  "));
if (failures > 0) {
  console.error(`${failures} kernel run(s) failed`);
  process.exit(1);
}
