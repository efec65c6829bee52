/**
 * The CUDA kernels (native/cuda/kernels), run through the host emulation, against the CPU operators
 * they stand in for, op by op on small random shapes (as ggml's test-backend-ops). Every tolerance is
 * derived from the rounding the two sides may do differently (stated at each check); the emulation
 * runs without FMA contraction, so most of them are met with room, but they are the bounds a GPU
 * build must meet too. Every case runs on the emulation, and again on the real kernels when
 * FALCON_TEST_CUDA_ADDON names a CUDA build and a GPU answers (helpers/cuda-emulation.ts); a skipped
 * test says when it did not.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { describeOnEach, reportRealKernels, gamma, GELU_SLOPE, U32, type CudaKernelSet, type CudaMatmulKernel, type CudaWeightDType } from "./helpers/cuda-emulation.js";
import { seededRandom } from "./helpers/seeded-random.js";
import { resolveSamplerConfig, type SamplerSpec } from "../src/index.js";

reportRealKernels(it, "cuda ops");

function randomArray(random: () => number, count: number, scale = 1, offset = 0): Float32Array {
  return Float32Array.from({ length: count }, () => offset + (random() * 2 - 1) * scale);
}

/** Asserts |actual − expected| ≤ bound(i) for every element, naming the first that is not. */
function assertWithin(actual: Float32Array, expected: Float32Array, bound: (i: number) => number, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const difference = Math.abs(actual[i]! - expected[i]!);
    if (!(difference <= bound(i))) {
      assert.fail(`${what}: element ${i} is ${actual[i]}, the CPU's ${expected[i]} (difference ${difference} > bound ${bound(i)})`);
    }
  }
}

describeOnEach(describe, "cuda ops: embedding gather", (cuda) => {
  for (const dtype of ["float32", "bfloat16", "float16"] as const) {
    it(`widens ${dtype} rows exactly as the CPU does`, () => {
      const random = seededRandom(11);
      const vocab = 37, dim = 300;
      const table = randomArray(random, vocab * dim, 3);
      const ids = Int32Array.from({ length: 9 }, () => Math.floor(random() * vocab));
      ids[0] = vocab - 1;
      const { gpu, cpu } = cuda.embedding({ table, dim, dtype, ids });
      // Widening a stored element to float32 is exact on both sides.
      assert.deepEqual(gpu, cpu);
    });
  }

  it("dequantises int8 rows as the CPU does, q · scale bit for bit", () => {
    const random = seededRandom(12);
    const vocab = 29, dim = 130;
    const table = Float32Array.from({ length: vocab * dim }, () => Math.round((random() * 2 - 1) * 127));
    table[0] = 127;
    table[1] = -127;
    const scales = Float32Array.from({ length: vocab }, () => (0.001 + random() * 0.02) * (random() < 0.5 ? 1 : 3.3));
    const ids = Int32Array.from({ length: 11 }, () => Math.floor(random() * vocab));
    ids[0] = 0;
    ids[1] = vocab - 1;
    const { gpu, cpu } = cuda.embedding({ table, dim, dtype: "int8", ids, scales });
    // One float32 product of the same integer and scale on both sides.
    assert.deepEqual(gpu, cpu);
    assert.equal(gpu[0], Math.fround(127 * scales[0]!));
  });
});

describeOnEach(describe, "cuda ops: row gather", (cuda) => {
  it("copies the named rows, in order, repeats included", () => {
    const random = seededRandom(13);
    const sourceRows = 23, dim = 301;
    const x = randomArray(random, sourceRows * dim, 5);
    const rows = Int32Array.from([sourceRows - 1, 0, 7, 7, 12, 3]);
    const out = cuda.gatherRows({ x, dim, rows });
    assert.equal(out.length, rows.length * dim);
    rows.forEach((row, i) => assert.deepEqual(out.subarray(i * dim, (i + 1) * dim), x.subarray(row * dim, (row + 1) * dim), `row ${i}`));
  });

  it("gathers nothing for no rows, and refuses rows outside x", () => {
    assert.equal(cuda.gatherRows({ x: new Float32Array(8), dim: 4, rows: new Int32Array(0) }).length, 0);
    assert.throws(() => cuda.gatherRows({ x: new Float32Array(8), dim: 4, rows: Int32Array.from([2]) }), { code: "FALCON_INPUT" });
  });
});

describeOnEach(describe, "cuda ops: residual add + layer norm", (cuda) => {
  for (const [rows, dim, withAdd, offset] of [
    [1, 1, true, 0],
    [3, 7, false, 0],
    [4, 256, true, 0],
    [2, 1000, true, 100],
    [2, 4544, false, -3],
  ] as const) {
    it(`${rows}×${dim}${withAdd ? " with the residual add" : ""}, mean ${offset}`, () => {
      const random = seededRandom(rows * 7919 + dim);
      const residual = randomArray(random, rows * dim, 2, offset);
      const add = withAdd ? randomArray(random, rows * dim, 1) : undefined;
      const gammaValues = randomArray(random, dim, 1, 1);
      const beta = randomArray(random, dim, 0.5);
      const epsilon = 1e-5;
      const { gpu, gpuResidual, cpu } = cuda.addLayerNorm({ residual, add, rows, dim, gamma: gammaValues, beta, epsilon });
      // The residual add is one float32 addition per element on both sides: exact agreement.
      const summed = Float32Array.from(residual, (value, i) => (add ? value + add[i]! : value));
      assert.deepEqual(gpuResidual, summed);
      // Statistics are accumulated in double on both sides, so mean and 1/σ round to the same float32
      // (or, at a rounding boundary, one ulp apart). y = (h − mean)·inv·γ + β then takes 4 roundings,
      // which a GPU may fuse into FMAs: within 4u of the magnitudes they combine, plus one ulp of mean
      // and of inv carried through.
      const bound = new Float64Array(rows * dim);
      for (let r = 0; r < rows; r++) {
        const row = summed.subarray(r * dim, (r + 1) * dim);
        const mean = row.reduce((s, v) => s + v, 0) / dim;
        const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / dim;
        const inverse = 1 / Math.sqrt(variance + epsilon);
        for (let c = 0; c < dim; c++) {
          bound[r * dim + c] = 4 * U32 * ((Math.abs(row[c]! - mean) + Math.abs(mean)) * inverse * Math.abs(gammaValues[c]!) + Math.abs(beta[c]!));
        }
      }
      assertWithin(gpu, cpu, (i) => bound[i]!, "layer norm");
    });
  }
});

describeOnEach(describe, "cuda ops: bias + exact GELU", (cuda) => {
  for (const [rows, cols, withBias] of [
    [1, 1, true],
    [3, 50, true],
    [5, 64, false],
  ] as const) {
    it(`${rows}×${cols}${withBias ? " with bias" : ""}`, () => {
      const random = seededRandom(rows * 31 + cols);
      const x = randomArray(random, rows * cols, 4);
      const bias = withBias ? randomArray(random, cols, 1) : undefined;
      const { gpu, cpu } = cuda.biasGelu({ x, rows, cols, bias });
      // Both compute 0.5·v·(1 + erf(v/√2)) in float32 from the same v = x + b; erff may differ by
      // 2 ulp between libraries (CUDA's documented bound) and the 4 other roundings may fuse: 8u·|v|.
      assertWithin(gpu, cpu, (i) => 8 * U32 * Math.abs(x[i]! + (bias ? bias[i % cols]! : 0)), "bias + GELU");
    });
  }
});

describeOnEach(describe, "cuda ops: rotary", (cuda) => {
  const cases = [
    { ropeScaling: "none", factor: 1, maxPositions: 2048, sequenceLength: 300, headDim: 64 },
    { ropeScaling: "linear", factor: 4, maxPositions: 2048, sequenceLength: 300, headDim: 8 },
    { ropeScaling: "dynamic", factor: 2, maxPositions: 64, sequenceLength: 300, headDim: 16 },
    { ropeScaling: "dynamic", factor: 2, maxPositions: 512, sequenceLength: 300, headDim: 16 },
  ] as const;
  for (const spec of cases) {
    it(`${spec.ropeScaling} scaling (factor ${spec.factor}, ${spec.sequenceLength} of ${spec.maxPositions} positions), head_dim ${spec.headDim}`, () => {
      const random = seededRandom(spec.headDim * 13 + spec.maxPositions);
      const heads = 3;
      const positions = Int32Array.from({ length: 11 }, () => Math.floor(random() * spec.sequenceLength));
      positions[0] = 0;
      positions[1] = spec.sequenceLength - 1;
      const x = randomArray(random, positions.length * heads * spec.headDim, 2);
      const result = cuda.rotary({ ...spec, heads, ropeTheta: 10000, positions, x });
      // Angles, cos and sin in double on both sides, rounded once to float32: equal but at a rounding
      // boundary (one ulp: 2u relative), or near zero, where a double angle error of position·2⁻⁵² shows.
      const tableBound = (table: Float32Array) => (i: number) => 2 * U32 * Math.abs(table[i]!) + 2 ** -36;
      assertWithin(result.gpuCos, result.cpuCos, tableBound(result.cpuCos), "cos table");
      assertWithin(result.gpuSin, result.cpuSin, tableBound(result.cpuSin), "sin table");
      // v' = a·cos − b·sin (or b·cos + a·sin): three roundings, which a GPU may fuse (4u of the terms),
      // from tables that may differ by the bound above (each of |a|, |b| times its table's difference).
      const half = spec.headDim / 2;
      const rotationBound = (i: number) => {
        const row = Math.floor(i / (heads * spec.headDim)), c = i % spec.headDim, j = c % half;
        const head = i - c;
        const a = Math.abs(x[head + j]!), b = Math.abs(x[head + j + half]!);
        const cos = Math.abs(result.cpuCos[row * half + j]!), sin = Math.abs(result.cpuSin[row * half + j]!);
        return 4 * U32 * (a * cos + b * sin) + (a + b) * (2 * U32 * Math.max(cos, sin) + 2 ** -36);
      };
      assertWithin(result.gpuX, result.cpuX, rotationBound, "rotated heads");
    });
  }
});

/** Float32 → bfloat16 → float32, rounding to nearest even (as the CPU and the kernels do). */
function roundBf16(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0]!;
  const rounded = (bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000;
  return new Float32Array(new Uint32Array([rounded >>> 0]).buffer)[0]!;
}

interface MatmulCase {
  dtype: CudaWeightDType;
  kernel: CudaMatmulKernel;
  m: number;
  k: number;
  n: number;
}

/** The strict tiled GEMM with every weight type: one and several 64-row tiles, k off the 16-deep tiles, n off the 64-wide ones. */
const TILED_SHAPES = [
  [1, 37, 65],
  [5, 100, 90],
  [9, 300, 33],
  [70, 100, 130],
];

const MATMUL_CASES: MatmulCase[] = [
  ...[[1, 1, 1], [5, 17, 33], [70, 100, 90], [64, 64, 64], [3, 300, 130]].map(([m, k, n]) => ({ dtype: "float32" as const, kernel: "tiled" as const, m: m!, k: k!, n: n! })),
  ...(["float32", "bfloat16", "float16", "int8"] as const).flatMap((dtype) =>
    TILED_SHAPES.map(([m, k, n]) => ({ dtype, kernel: "tiled" as const, m: m!, k: k!, n: n! })),
  ),
  ...[[1, 1, 1], [3, 100, 90], [8, 257, 33]].map(([m, k, n]) => ({ dtype: "float32" as const, kernel: "gemv" as const, m: m!, k: k!, n: n! })),
  ...(["bfloat16", "float16"] as const).flatMap((dtype) => [
    ...[[1, 16, 1], [17, 40, 70], [70, 100, 65], [64, 64, 64]].map(([m, k, n]) => ({ dtype, kernel: "wmma" as const, m: m!, k: k!, n: n! })),
    ...[[2, 100, 90], [8, 33, 5]].map(([m, k, n]) => ({ dtype, kernel: "gemv" as const, m: m!, k: k!, n: n! })),
  ]),
  ...[[1, 300, 40], [4, 600, 33]].map(([m, k, n]) => ({ dtype: "int8" as const, kernel: "gemv" as const, m: m!, k: k!, n: n! })),
];

/** The CPU's int8 activation blocks: 256 inputs, each quantised with its block's largest magnitude / 127. */
const QUANT_BLOCK = 256;

/**
 * How far the kernel's y may be from the CPU's, per output. Both sides sum the same products (the
 * CPU's bf16 path also multiplies x rounded to bfloat16; products of 16-bit values are exact in
 * float32) in different orders, each within γ_k·A of the exact sum (A = Σ|x·w|): 2γ_k·A apart.
 * float16 through wmma splits x (the CPU keeps it float32) into two float16 parts scaled by 2^e
 * (split_f16), each within 2⁻²²|x| + 2⁻²⁵·2⁻ᵉ of it, and 2⁻ᵉ ≤ 2⁻¹⁴·M for the row's largest finite
 * magnitude M: + Σ(2⁻²²|x| + 2⁻³⁹M)|w|; its sum runs over 2k products (each part times w), whose
 * magnitudes add up to at most (1 + 2⁻¹⁰)·(A + that), so γ_2k on that side.
 * int8 through gemv: the CPU quantises x per block (|x − x̃| ≤ s_b(½ + 256u)), the kernel does not;
 * × the row scale. int8 through the tiled kernel is compared with float32 math over the dequantised
 * weights q·s instead (x float32 on both sides): each side sums within γ_k of its own terms, the
 * reference's terms carry the rounding of q·s (u each) and the kernel's sum one more for × s, so
 * 2γ_{k+1}·sA + 2u·sA with A = Σ|x·q|.
 * Then the epilogue: the bias add rounds once per side (2u|v|); GELU moves an input error by at most
 * GELU_SLOPE and adds 8u|v| of its own; the accumulate add rounds once per side.
 */
function matmulBound(c: MatmulCase, x: Float32Array, weights: Float32Array, scales: Float32Array | undefined, bias: Float32Array, y0: Float32Array, gelu: boolean, accumulate: boolean) {
  const { m, k, n } = c;
  const bound = new Float64Array(m * n);
  const blockScales = new Float64Array(m * Math.ceil(k / QUANT_BLOCK));
  for (let r = 0; r < m; r++) {
    for (let b = 0; b * QUANT_BLOCK < k; b++) {
      let largest = 0;
      for (let i = b * QUANT_BLOCK; i < Math.min(k, (b + 1) * QUANT_BLOCK); i++) largest = Math.max(largest, Math.abs(x[r * k + i]!));
      blockScales[r * Math.ceil(k / QUANT_BLOCK) + b] = largest / 127;
    }
  }
  const splitPairs = c.dtype === "float16" && c.kernel === "wmma";
  for (let r = 0; r < m; r++) {
    let rowLargest = 0;
    for (let i = 0; i < k; i++) {
      const magnitude = Math.abs(x[r * k + i]!);
      if (magnitude < Infinity) rowLargest = Math.max(rowLargest, magnitude);
    }
    for (let o = 0; o < n; o++) {
      let a = 0, extra = 0;
      for (let i = 0; i < k; i++) {
        const xi = c.dtype === "bfloat16" ? roundBf16(x[r * k + i]!) : x[r * k + i]!;
        const wi = Math.abs(weights[o * k + i]!);
        a += Math.abs(xi) * wi;
        if (splitPairs) extra += (2 ** -22 * Math.abs(xi) + 2 ** -39 * rowLargest) * wi;
        if (c.dtype === "int8" && c.kernel === "gemv") extra += blockScales[r * Math.ceil(k / QUANT_BLOCK) + Math.floor(i / QUANT_BLOCK)]! * (0.5 + 256 * U32) * wi;
      }
      const rowScale = c.dtype === "int8" ? scales![o]! : 1;
      const v = rowScale * (a + extra) + Math.abs(bias[o]!);
      const sum = c.dtype === "int8" && c.kernel === "tiled"
        ? rowScale * (2 * gamma(k + 1) + 2 * U32) * a
        : splitPairs
          ? (gamma(k) + gamma(2 * k) * (1 + 2 ** -10)) * (a + extra) + extra
          : rowScale * (2 * gamma(k) * (a + extra) + extra);
      let t = sum + 2 * U32 * v;
      if (gelu) t = GELU_SLOPE * t + 8 * U32 * v;
      if (accumulate) t += 2 * U32 * (Math.abs(y0[r * n + o]!) + v);
      bound[r * n + o] = t;
    }
  }
  return bound;
}

describeOnEach(describe, "cuda ops: split_f16, float16 models' GEMM inputs as scaled float16 pairs", (cuda) => {
  it("scales each row by a power of two into [2^14, 2^15), high is the host's float16 rounding, high + low within 2⁻²² of it", () => {
    const random = seededRandom(31);
    const k = 300;
    const rows: Float32Array[] = [
      randomArray(random, k, 1.5),
      randomArray(random, k, 1e5), // past float16's largest finite value, 65504
      randomArray(random, k, 1e-7), // float16 subnormals and below
      randomArray(random, k, 3e38), // near float32's largest
      randomArray(random, k, 1e-40), // float32 subnormals: the scale is clamped at 2^126
      new Float32Array(k), // zeros: scale 1
      Float32Array.from(randomArray(random, k, 2), (v, i) => (i === 3 ? Infinity : i === 4 ? -Infinity : i === 5 ? NaN : v)),
    ];
    rows[0]![7] = 32768; // a row whose largest is exactly 2^15
    const x = new Float32Array(rows.length * k);
    rows.forEach((row, r) => x.set(row, r * k));
    const { high, low, rowUnscale, hostHigh } = cuda.splitF16({ x, rows: rows.length, k });
    rows.forEach((row, r) => {
      const unscale = rowUnscale[r]!;
      const e = -Math.log2(unscale);
      assert.ok(Number.isInteger(e) && e <= 126, `row ${r}: the unscale ${unscale} is not 2^-e with e ≤ 126`);
      const largest = row.reduce((most, v) => (Math.abs(v) < Infinity ? Math.max(most, Math.abs(v)) : most), 0);
      if (largest === 0) assert.equal(unscale, 1, `row ${r}: a row of zeros keeps scale 1`);
      else if (e < 126) assert.ok(largest / unscale >= 2 ** 14 && largest / unscale < 2 ** 15, `row ${r}: the largest, scaled, is ${largest / unscale}`);
      else assert.ok(largest / unscale < 2 ** 15, `row ${r}: clamped scale`);
      for (let c = 0; c < k; c++) {
        const i = r * k + c, value = row[c]!, scaled = value / unscale;
        assert.ok(Object.is(high[i], hostHigh[i]), `row ${r} column ${c}: high ${high[i]} is not the host's rounding ${hostHigh[i]}`);
        if (!Number.isFinite(value)) {
          assert.ok(Object.is(high[i], value) && low[i] === 0, `row ${r} column ${c}: ${value} splits as ${high[i]} + ${low[i]}`);
          continue;
        }
        assert.ok(Number.isFinite(high[i]!), `row ${r} column ${c}: ${value} overflowed`);
        const error = Math.abs(scaled - (high[i]! + low[i]!));
        assert.ok(error <= 2 ** -22 * Math.abs(scaled) + 2 ** -25, `row ${r} column ${c}: ${value} scaled is ${scaled}, split ${high[i]} + ${low[i]} (error ${error})`);
      }
    });
  });
});

describeOnEach(describe, "cuda ops: GEMM and GEMV against cpu::matmul", (cuda) => {
  for (const c of MATMUL_CASES) {
    for (const epilogue of ["plain", "bias + GELU + accumulate"] as const) {
      it(`${c.kernel} ${c.dtype} m=${c.m} k=${c.k} n=${c.n}, ${epilogue}`, () => {
        const random = seededRandom(c.m * 1_000_003 + c.k * 1009 + c.n);
        const x = randomArray(random, c.m * c.k, 1.5);
        const w = c.dtype === "int8" ? Float32Array.from({ length: c.n * c.k }, () => Math.round((random() * 2 - 1) * 127)) : randomArray(random, c.n * c.k, 0.5);
        const scales = c.dtype === "int8" ? Float32Array.from({ length: c.n }, () => 0.001 + random() * 0.01) : undefined;
        const full = epilogue !== "plain";
        const bias = full ? randomArray(random, c.n, 1) : new Float32Array(c.n);
        const y0 = full ? randomArray(random, c.m * c.n, 2) : new Float32Array(c.m * c.n);
        const result = cuda.matmul({ ...c, x, w, scales, bias: full ? bias : undefined, gelu: full, accumulate: full, y0: full ? y0 : undefined });
        const bound = matmulBound(c, x, result.weights, scales, bias, y0, full, full);
        assertWithin(result.gpu, result.cpu, (i) => bound[i]!, `${c.kernel} ${c.dtype}`);
      });
    }
  }

  it("wmma float16 keeps inputs float16 cannot hold: above 65504, below its normal range, and ±Infinity", () => {
    const random = seededRandom(77);
    const m = 12, k = 80, n = 70;
    // Row r's inputs at scale 10^(r − 6): from 1e-6 (float16 subnormals) to 1e5 (past float16's range).
    const x = Float32Array.from({ length: m * k }, (_, i) => (random() * 2 - 1) * 10 ** (Math.floor(i / k) - 6));
    x[3 * k + 5] = 4e4;  // one large input in a row of small ones
    const w = randomArray(random, n * k, 0.5);
    const bias = randomArray(random, n, 1);
    const c: MatmulCase = { dtype: "float16", kernel: "wmma", m, k, n };
    const result = cuda.matmul({ ...c, x, w, bias });
    const bound = matmulBound(c, x, result.weights, undefined, bias, new Float32Array(m * n), false, false);
    assertWithin(result.gpu, result.cpu, (i) => bound[i]!, "wmma float16 over input scales 1e-6 to 1e5");
    // An infinite input makes each output of its row that infinity times the weight's sign, as in float32
    // arithmetic (split_f16 keeps it in the high part, with a zero low part); the other rows do not change.
    const withInfinity = x.slice();
    withInfinity[2 * k + 7] = Infinity;
    const { gpu, cpu } = cuda.matmul({ ...c, x: withInfinity, w, bias });
    for (let i = 0; i < m * n; i++) {
      if (Math.floor(i / n) === 2) {
        assert.ok(!Number.isFinite(cpu[i]!) && gpu[i] === cpu[i], `output ${i}: ${gpu[i]}, the CPU's ${cpu[i]}`);
      } else {
        assert.equal(gpu[i], result.gpu[i], `output ${i}`);
      }
    }
  });

  it("int8 weight-only GEMV is within γ_k of the exact weight-only product (no activation quantisation)", () => {
    const random = seededRandom(99);
    const m = 3, k = 700, n = 21;
    const x = randomArray(random, m * k, 2);
    const w = Float32Array.from({ length: n * k }, () => Math.round((random() * 2 - 1) * 127));
    const scales = Float32Array.from({ length: n }, () => 0.001 + random() * 0.01);
    const bias = randomArray(random, n, 1);
    const { gpu } = cuda.matmul({ x, m, k, w, n, dtype: "int8", kernel: "gemv", scales, bias });
    for (let r = 0; r < m; r++) {
      for (let o = 0; o < n; o++) {
        let exact = 0, a = 0;
        for (let i = 0; i < k; i++) {
          exact += x[r * k + i]! * w[o * k + i]!;
          a += Math.abs(x[r * k + i]! * w[o * k + i]!);
        }
        const expected = scales[o]! * exact + bias[o]!;
        // γ_k·A for the sum, then one rounding each for the scale and the bias.
        const bound = scales[o]! * gamma(k) * a + 2 * U32 * (scales[o]! * a + Math.abs(bias[o]!));
        const difference = Math.abs(gpu[r * n + o]! - expected);
        assert.ok(difference <= bound, `row ${r} output ${o}: ${gpu[r * n + o]} vs exact ${expected} (difference ${difference} > ${bound})`);
      }
    }
  });

  it("every launcher refuses sizes and types it cannot run, as typed input errors naming it", () => {
    const refusals = cuda.kernelRefusals();
    const launchers = [...new Set(refusals.map(({ call }) => call.split(" ")[0]!))].sort();
    assert.deepEqual(launchers, ["draw_tokens", "embedding", "embedding_int8", "gather_rows", "gemm_f32", "gemm_wmma", "gemv", "gemv_int8", "paged_attention", "round_to", "split_f16", "stage_wmma_input", "top_k", "write_kv"]);
    for (const { call, code, message } of refusals) {
      assert.equal(code, "FALCON_INPUT", `${call}: ${code} ${message}`);
      assert.ok(message.startsWith(`${call.split(" ")[0]}: `), `${call}: the message "${message}" does not name the kernel`);
    }
  });

  it("refuses shapes and kernels that do not fit, as typed input errors", () => {
    const x = new Float32Array(4), w = new Float32Array(4);
    assert.throws(() => cuda.matmul({ x, m: 1, k: 4, w, n: 1, dtype: "float32", kernel: "wmma" }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.matmul({ x, m: 1, k: 4, w, n: 1, dtype: "int8", kernel: "wmma", scales: new Float32Array(1) }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.matmul({ x: new Float32Array(36), m: 9, k: 4, w, n: 1, dtype: "bfloat16", kernel: "gemv" }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.matmul({ x, m: 1, k: 4, w: new Float32Array([1, 2, 300, 4]), n: 1, dtype: "int8", kernel: "gemv", scales: new Float32Array(1) }), {
      code: "FALCON_INPUT",
    });
    assert.throws(() => cuda.matmul({ x, m: 2, k: 4, w, n: 1, dtype: "float32", kernel: "tiled" }), { code: "FALCON_INPUT" });
  });
});

/**
 * Logits rows for ranking: plain values, many ties, NaN and ±Infinity mixed in, all NaN, -Infinity
 * with NaN, signed zeros with +Infinity, one flat row, and a row with fewer numbers than 64 (the
 * candidates run into its NaN).
 */
function rankingRows(vocab: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  const rows = 8;
  const logits = new Float32Array(rows * vocab);
  for (let i = 0; i < vocab; i++) {
    const r = random();
    const value = (random() * 2 - 1) * 6;
    logits[0 * vocab + i] = value;
    logits[1 * vocab + i] = Math.round(value / 2);
    logits[2 * vocab + i] = r < 0.1 ? NaN : r < 0.2 ? -Infinity : r < 0.25 ? Infinity : value;
    logits[3 * vocab + i] = NaN;
    logits[4 * vocab + i] = r < 0.3 ? NaN : -Infinity;
    logits[5 * vocab + i] = r < 0.02 ? Infinity : r < 0.5 ? -0 : 0;
    logits[6 * vocab + i] = 0.25;
    logits[7 * vocab + i] = i % 37 === 5 ? value : NaN;
  }
  // Where argmax keeps id 0 (nothing beats -Infinity) while the ranking puts a -Infinity id first.
  logits[4 * vocab] = NaN;
  return logits;
}

/** The first `count` ids of [0, allowed) in the sampler's order, by a plain sort: larger first, ties to the lower id, NaN last by id. */
function sortedTopK(row: Float32Array, allowed: number, count: number): number[] {
  const ids = Array.from({ length: allowed }, (_, id) => id);
  ids.sort((a, b) => {
    const [va, vb] = [row[a]!, row[b]!];
    if (Number.isNaN(va) !== Number.isNaN(vb)) return Number.isNaN(va) ? 1 : -1;
    if (!Number.isNaN(va) && va !== vb) return vb - va > 0 ? 1 : -1;
    return a - b;
  });
  return ids.slice(0, count);
}

describeOnEach(describe, "cuda ops: top-k candidates", (cuda) => {
  const vocab = 300;  // more ids than the block has threads
  const logits = rankingRows(vocab, 31);
  const rowCount = logits.length / vocab;

  for (const [count, allowed] of [[1, vocab], [64, vocab], [64, 100], [7, 40], [64, 64], [1, 1], [13, 299]] as const) {
    it(`k = ${count} of the first ${allowed} ids: the sampler's ranking exactly, on rows with ties, NaN, ±Infinity and signed zeros`, () => {
      const rows = Int32Array.from({ length: rowCount }, (_, r) => r);
      const { gpuIds, gpuValues, cpuIds, cpuValues } = cuda.topK({
        logits, vocab, rows, counts: new Int32Array(rowCount).fill(count), allowed: new Int32Array(rowCount).fill(allowed),
      });
      assert.deepEqual(Array.from(cpuIds), Array.from(rows).flatMap((r) => sortedTopK(logits.subarray(r * vocab, (r + 1) * vocab), allowed, count)),
        "core's rank_top_k is the sorted order");
      assert.deepEqual(Array.from(gpuIds), Array.from(cpuIds));
      // Object.is per element: NaN equals NaN, -0 differs from 0.
      assert.deepEqual(Array.from(gpuValues), Array.from(cpuValues));
      assert.deepEqual(Array.from(gpuValues), Array.from(gpuIds).map((id, i) => logits[rows[Math.floor(i / count)]! * vocab + id]!));
    });
  }

  it("ranks each row of one launch with its own k and allowed vocabulary, rows in any order and repeated", () => {
    const rows = Int32Array.from([7, 2, 2, 0, 5, 1, 3, 4, 6]);
    const counts = Int32Array.from([64, 1, 64, 10, 3, 64, 2, 5, 64]);
    const allowed = Int32Array.from([300, 7, 250, 10, 300, 128, 9, 300, 64]);
    const { gpuIds, gpuValues, cpuIds, cpuValues } = cuda.topK({ logits, vocab, rows, counts, allowed });
    const expected = Array.from(rows).flatMap((r, i) => sortedTopK(logits.subarray(r * vocab, (r + 1) * vocab), allowed[i]!, counts[i]!));
    assert.deepEqual(Array.from(cpuIds), expected);
    assert.deepEqual(Array.from(gpuIds), expected);
    assert.deepEqual(Array.from(gpuValues), Array.from(cpuValues));
  });

  it("refuses counts and allowed vocabularies outside the row and the kernel's 64", () => {
    const base = { logits, vocab, rows: Int32Array.from([0]) };
    assert.throws(() => cuda.topK({ ...base, counts: Int32Array.from([65]), allowed: Int32Array.from([vocab]) }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.topK({ ...base, counts: Int32Array.from([5]), allowed: Int32Array.from([4]) }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.topK({ ...base, counts: Int32Array.from([1]), allowed: Int32Array.from([vocab + 1]) }), { code: "FALCON_INPUT" });
  });
});

describeOnEach(describe, "cuda ops: sampling from device-ranked candidates", (cuda) => {
  const vocab = 300;
  const logits = rankingRows(vocab, 32);
  const specs: { spec: SamplerSpec; candidates: number; allowed?: number }[] = [
    { spec: "greedy", candidates: 1 },
    { spec: { type: "topK", k: 1 }, candidates: 1 },
    { spec: { type: "topK", k: 5, temperature: 0.7 }, candidates: 5 },
    { spec: { type: "topK", k: 64, temperature: 1.3 }, candidates: 64 },
    { spec: { type: "topK", k: 64 }, candidates: 40, allowed: 40 },
    { spec: { type: "topK", k: 20, temperature: 0 }, candidates: 1 },
    { spec: { type: "topP", p: 0.9, k: 10 }, candidates: 10 },
    { spec: { type: "topP", p: 0.5, k: 64, temperature: 2 }, candidates: 64 },
    { spec: { type: "topP", p: 0.999, k: 3, temperature: 0.5 }, candidates: 3, allowed: 100 },
    { spec: { type: "temperature", temperature: 0 }, candidates: 1 },
    // Whole rows: more candidates than the kernel ranks, a cap the vocabulary is within, every id.
    { spec: { type: "topK", k: 65 }, candidates: 0 },
    { spec: { type: "topP", p: 0.9, k: 50 }, candidates: 0, allowed: 50 },
    { spec: { type: "topP", p: 0.9 }, candidates: 0 },
    { spec: { type: "temperature", temperature: 0.8 }, candidates: 0 },
    { spec: "random", candidates: 0 },
  ];
  for (const { spec, candidates, allowed = vocab } of specs) {
    it(`${JSON.stringify(spec)} over ${allowed} ids: ${candidates === 0 ? "needs whole rows" : `${candidates} candidates give the whole rows' tokens`}`, () => {
      for (const [seed, stream] of [[0, 0], [42, 1], [2 ** 40 + 7, 3]] as const) {
        const config = resolveSamplerConfig(typeof spec === "string" ? (spec === "greedy" ? spec : { type: spec, seed }) : { ...spec, seed } as SamplerSpec);
        const { whole, ranked, candidates: counts } = cuda.sampleRanked({ logits, vocab, allowed, sampler: config, stream });
        assert.deepEqual(Array.from(counts), new Array(logits.length / vocab).fill(candidates), `seed ${seed}`);
        assert.deepEqual(Array.from(ranked), Array.from(whole), `seed ${seed} stream ${stream}`);
      }
    });
  }
});

/** One row's draw: over logits row `row`'s first `allowed` ids at `temperature`, from its nucleus of mass p when p is given. */
type DrawCase = { row: number; allowed: number; temperature: number; p?: number; draw: number };

/** Every case in one launch of draw_tokens: the kernel's tokens (-1: a nucleus it leaves to the host) and the host sampler's. */
function drawCases(cuda: CudaKernelSet["kernels"], logits: Float32Array, vocab: number, cases: DrawCase[]) {
  const { gpu, cpu } = cuda.drawTokens({
    logits, vocab,
    rows: Int32Array.from(cases, ({ row }) => row),
    allowed: Int32Array.from(cases, ({ allowed }) => allowed),
    temperatures: Float64Array.from(cases, ({ temperature }) => temperature),
    topPs: Float64Array.from(cases, ({ p }) => p ?? 0),
    draws: Float64Array.from(cases, ({ draw }) => draw),
  });
  return { gpu: Array.from(gpu), cpu: Array.from(cpu) };
}

describeOnEach(describe, "cuda ops: tokens drawn on the device", (cuda) => {
  const temperatures = [1, 0.7, 0.05, 2];
  /** Seeded draws in [0, 1), and the extremes: 0, ½ and the largest double below 1. */
  const drawsOf = (seed: number, count: number) => {
    const random = seededRandom(seed);
    return [0, 0.5, 1 - 2 ** -53, ...Array.from({ length: count }, () => random())];
  };
  /** Every row with every temperature and draw, in one launch; the kernel's and the host sampler's tokens. */
  const drawEach = (logits: Float32Array, vocab: number, rowAllowed: [row: number, allowed: number][], draws: number[]) => {
    const cases = rowAllowed.flatMap(([row, allowed]) => temperatures.flatMap((temperature) => draws.map((draw) => ({ row, allowed, temperature, draw }))));
    return { cases, ...drawCases(cuda, logits, vocab, cases) };
  };

  it("draws the host sampler's token for every draw and temperature, on rows with ties, NaN, ±Infinity and signed zeros", () => {
    const vocab = 300;
    const logits = rankingRows(vocab, 47);
    const rows = Array.from({ length: logits.length / vocab }, (_, r): [number, number] => [r, r === 1 ? 77 : vocab]);
    const { cases, gpu, cpu } = drawEach(logits, vocab, rows, drawsOf(5, 24));
    assert.deepEqual(gpu, cpu);
    cases.forEach(({ row, allowed, draw }, i) => {
      const row0 = row * vocab;
      // Expectations of their own: no number above -Infinity gives id 0 everything; +Infinity logits share
      // all the mass; a flat row's running sums are the integers, so the draw lands at ⌊u · allowed⌋.
      if (row === 3 || row === 4) assert.equal(gpu[i], 0, `row ${row}`);
      if (row === 5) assert.equal(logits[row0 + gpu[i]!], Infinity, `row 5, draw ${draw}`);
      if (row === 6) assert.equal(gpu[i], Math.floor(draw * allowed), `flat row, draw ${draw}`);
      assert.ok(gpu[i]! >= 0 && gpu[i]! < allowed);
    });
  });

  it("rows of several 1024-id chunks: draws land in every chunk and at the chunk edges", () => {
    const vocab = 2600;
    const random = seededRandom(8);
    const logits = new Float32Array(2 * vocab);
    for (let i = 0; i < vocab; i++) {
      logits[i] = (random() * 2 - 1) * 2;
      logits[vocab + i] = 1.5;
    }
    const rows: [number, number][] = [[0, vocab], [0, 1024], [0, 1025], [0, 2048], [0, 2049], [1, vocab], [1, 2049]];
    const draws = drawsOf(9, 40);
    // The flat row's chunk edges exactly: the draws that land on the last id of a chunk and the first of the next.
    for (const edge of [1023, 1024, 2047, 2048]) draws.push(edge / vocab, (edge + 0.5) / vocab);
    const { cases, gpu, cpu } = drawEach(logits, vocab, rows, draws);
    assert.deepEqual(gpu, cpu);
    cases.forEach(({ row, allowed, draw }, i) => {
      if (row === 1) assert.equal(gpu[i], Math.floor(draw * allowed), `flat row over ${allowed} ids, draw ${draw}`);
    });
    const landed = new Set(cases.flatMap(({ row, allowed }, i) => (row === 0 && allowed === vocab ? [Math.floor(gpu[i]! / 1024)] : [])));
    assert.deepEqual([...landed].sort(), [0, 1, 2], "the draws land in each chunk of the random row");
  });

  it("a peaked row whose tail weighs almost nothing next to its head: draws near 1 land where the host's do", () => {
    const vocab = 1500;
    const logits = Float32Array.from({ length: vocab }, (_, i) => (i === 700 ? 30 : i % 2 ? -30 : -Infinity));
    const { gpu, cpu } = drawEach(logits, vocab, [[0, vocab]], [1 - 2 ** -53, 0.999999, 0.5, 0]);
    assert.deepEqual(gpu, cpu);
  });

  it("refuses rows, vocabularies, temperatures and draws outside what the kernel takes", () => {
    const base = { logits: new Float32Array(8), vocab: 4, rows: Int32Array.from([0]), allowed: Int32Array.from([4]), temperatures: Float64Array.from([1]), draws: Float64Array.from([0.5]) };
    assert.deepEqual(Array.from(cuda.drawTokens(base).gpu), Array.from(cuda.drawTokens(base).cpu));
    for (const bad of [{ rows: Int32Array.from([2]) }, { allowed: Int32Array.from([5]) }, { allowed: Int32Array.from([0]) }, { temperatures: Float64Array.from([0]) },
      { temperatures: Float64Array.from([NaN]) }, { draws: Float64Array.from([1]) }, { draws: Float64Array.from([-0.1]) }]) {
      assert.throws(() => cuda.drawTokens({ ...base, ...bad }), { code: "FALCON_INPUT" }, JSON.stringify(bad));
    }
  });
});

/**
 * How near p the mass of a run of the most probable ids of logits[0, allowed) comes at `temperature`
 * (probabilities exp((logit − max) / temperature) over their sum, ranked larger first with ties to the
 * lower id, summed in that order): where it is within rounding of p, only the host's own order of
 * summation decides the nucleus.
 */
function nucleusMarginFromP(row: Float32Array, allowed: number, temperature: number, p: number): number {
  const values = Array.from(row.subarray(0, allowed));
  const max = values.reduce((most, value) => (value > most ? value : most), -Infinity);
  if (max === -Infinity) return Infinity;
  const weights = values.map((value) => (!(value > -Infinity) ? 0 : max === Infinity ? (value === Infinity ? 1 : 0) : Math.exp((value - max) / temperature)));
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  const ranked = weights.map((weight, id) => ({ id, probability: weight / total })).filter(({ probability }) => probability > 0);
  ranked.sort((a, b) => b.probability - a.probability || a.id - b.id);
  let mass = 0;
  let nearest = Infinity;
  for (const { probability } of ranked) {
    mass += probability;
    nearest = Math.min(nearest, Math.abs(mass - p));
  }
  return nearest;
}

describeOnEach(describe, "cuda ops: top-p tokens drawn on the device", (cuda) => {
  type Case = Required<DrawCase>;
  const drawNuclei = (logits: Float32Array, vocab: number, cases: Case[]) => drawCases(cuda, logits, vocab, cases);
  /**
   * The kernel's token is the host's wherever it decides, and it leaves a row to the host only where a
   * run of the most probable ids has a mass within rounding of p (1e-9 is ~10^4 times the kernel's
   * margin for these vocabularies, and far below any other run's distance here).
   */
  const assertHostTokens = (logits: Float32Array, vocab: number, cases: Case[], gpu: number[], cpu: number[]) => {
    cases.forEach(({ row, allowed, temperature, p, draw }, i) => {
      const what = `row ${row} over ${allowed} ids, temperature ${temperature}, p ${p}, draw ${draw}`;
      const margin = nucleusMarginFromP(logits.subarray(row * vocab, (row + 1) * vocab), allowed, temperature, p);
      if (gpu[i] === -1) assert.ok(margin < 1e-9, `${what}: left to the host, yet every run's mass is ${margin} from p`);
      else assert.equal(gpu[i], cpu[i], what);
    });
  };
  const draws = [0, 0.5, 1 - 2 ** -53, ...Array.from({ length: 3 }, seededRandom(15))];

  it("draws the host sampler's token on rows with ties, NaN, ±Infinity and signed zeros, for every mass, temperature and draw", () => {
    const vocab = 300;
    const logits = rankingRows(vocab, 47);
    const cases = Array.from({ length: logits.length / vocab }, (_, row) => row).flatMap((row) =>
      [1, 0.7, 0.05].flatMap((temperature) => [0.05, 0.5, 0.9, 0.993].flatMap((p) =>
        draws.map((draw) => ({ row, allowed: row === 1 ? 77 : vocab, temperature, p, draw })))));
    const { gpu, cpu } = drawNuclei(logits, vocab, cases);
    assertHostTokens(logits, vocab, cases, gpu, cpu);
    cases.forEach(({ row, allowed, p }, i) => {
      if (gpu[i] === -1) return;
      // Expectations of their own: no number above -Infinity gives id 0 everything; +Infinity logits
      // share all the mass; a flat row's nucleus is its lowest ids.
      if (row === 3 || row === 4) assert.equal(gpu[i], 0, `row ${row}`);
      if (row === 5) assert.equal(logits[row * vocab + gpu[i]!], Infinity, `row 5, p ${p}`);
      if (row === 6) assert.ok(gpu[i]! < Math.ceil(p * allowed), `flat row, p ${p}: ${gpu[i]}`);
    });
    // Random rows decide (their runs' masses are nowhere near these p); flat rows at p = ½ may not.
    const decided = cases.filter(({ row }, i) => row === 0 && gpu[i] !== -1).length;
    assert.equal(decided, cases.filter(({ row }) => row === 0).length);
  });

  it("rows of several 1024-id chunks and a peaked row: the host's tokens, and a nucleus of one id draws only it", () => {
    const vocab = 2600;
    const random = seededRandom(16);
    const logits = new Float32Array(2 * vocab);
    for (let i = 0; i < vocab; i++) {
      logits[i] = (random() * 2 - 1) * 3;
      logits[vocab + i] = i === 1700 ? 30 : i % 2 ? -30 : -Infinity;
    }
    const cases = [0, 1].flatMap((row) => [vocab, 1025, 2049].flatMap((allowed) => [0.1, 0.6, 0.95].flatMap((p) =>
      draws.map((draw) => ({ row, allowed, temperature: 1, p, draw })))));
    const { gpu, cpu } = drawNuclei(logits, vocab, cases);
    assertHostTokens(logits, vocab, cases, gpu, cpu);
    assert.ok(!gpu.includes(-1), "every cut decided");
    cases.forEach(({ row, allowed }, i) => {
      if (row === 1 && allowed > 1700) assert.equal(gpu[i], 1700, "the peaked row's nucleus is its one likely id");
    });
    const landed = new Set(cases.flatMap(({ row, allowed, p }, i) => (row === 0 && allowed === vocab && p === 0.95 ? [Math.floor(gpu[i]! / 1024)] : [])));
    assert.ok(landed.size > 1, "draws land in more than one chunk of the random row");
  });

  it("a cut inside a run of tied ids takes the lowest of them, across the block's chunks of ids", () => {
    const vocab = 1000;
    const tied = Array.from({ length: 20 }, (_, t) => 13 + 49 * t);
    const random = seededRandom(17);
    const logits = Float32Array.from({ length: vocab }, () => -2 - random());
    for (const id of tied) logits[id] = 3;
    // One tied id's probability, as the samplers compute it; a mass of 6.5 of them keeps the first 7.
    const weights = Array.from(logits, (value) => Math.exp(value - 3));
    const q = 1 / weights.reduce((sum, weight) => sum + weight, 0);
    const cases = [6.5, 12.25, 19.5].flatMap((share) => [...draws, 0.3, 0.97].map((draw) => ({ row: 0, allowed: vocab, temperature: 1, p: share * q, draw })));
    const { gpu, cpu } = drawNuclei(logits, vocab, cases);
    assertHostTokens(logits, vocab, cases, gpu, cpu);
    assert.ok(!gpu.includes(-1), "every cut decided");
    cases.forEach(({ p, draw }, i) => {
      const kept = tied.slice(0, Math.ceil(p / q));
      assert.ok(kept.includes(gpu[i]!), `p = ${p / q} ties, draw ${draw}: ${gpu[i]} is not among ${kept}`);
    });
    assert.ok(new Set(gpu).has(tied[6]!), "the last tied id kept is drawn");
  });

  it("a cut exactly at p is left to the host; just above or below it, the kernel decides", () => {
    // Four equal probabilities of exactly ¼: the two best have mass exactly ½.
    const logits = new Float32Array([1, 1, 1, 1]);
    const cases = [0.5, 0.5 + 2 ** -20, 0.5 - 2 ** -20].flatMap((p) => [0, 0.4, 0.9].map((draw) => ({ row: 0, allowed: 4, temperature: 1, p, draw })));
    const { gpu, cpu } = drawNuclei(logits, 4, cases);
    assert.deepEqual(gpu.slice(0, 3), [-1, -1, -1]);
    assert.deepEqual(cpu.slice(0, 3), [0, 0, 1], "the host's nucleus at p = ½: ids 0 and 1");
    assert.deepEqual(gpu.slice(3), cpu.slice(3));
    assert.deepEqual(gpu.slice(3), [0, 1, 2, 0, 0, 1], "three ids above ½, two below");
  });

  it("refuses top-p masses outside (0, 1)", () => {
    const base = { logits: new Float32Array(8), vocab: 4, rows: Int32Array.from([0]), allowed: Int32Array.from([4]), temperatures: Float64Array.from([1]), draws: Float64Array.from([0.5]) };
    for (const topPs of [[1], [-0.1], [NaN], [1.5]]) {
      assert.throws(() => cuda.drawTokens({ ...base, topPs: Float64Array.from(topPs) }), { code: "FALCON_INPUT" }, JSON.stringify(topPs));
    }
  });
});
