/**
 * The KV write kernel (native/cuda/kernels/kv_write.cu) against cpu::write_cache, byte for byte; and
 * the attention kernels (native/cuda/kernels/attention.cu: split-K paged attention and the tiled
 * flash-attention prefill), through the host emulation, against cpu::attention over the same KV pool
 * blocks: decode rows over long contexts (several splits, many blocks), prompts longer than one tile
 * and chunked prompts, padding slots, fully padded queries, MHA / GQA / MQA, ALiBi, and float32,
 * bfloat16 and float16 pools.
 * Every case runs on the emulation, and again on the real kernels when FALCON_TEST_CUDA_ADDON names
 * a CUDA build and a GPU answers (helpers/cuda-emulation.ts); a skipped test says when it did not.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { describeOnEach, reportRealKernels, gamma, U32, type CudaAttentionSpec, type CudaWriteKvSpec } from "./helpers/cuda-emulation.js";
import { seededRandom } from "./helpers/seeded-random.js";

reportRealKernels(it, "cuda attention");
const BLOCK = 16;

interface Shape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** A pool whose blocks the sequences use in shuffled order, with padding, and the queries of their new tokens. */
function buildSpec(shape: Shape, kvDtype: CudaAttentionSpec["kvDtype"], alibi: boolean, seed: number, kernel: CudaAttentionSpec["kernel"]): CudaAttentionSpec {
  const random = seededRandom(seed);
  const layout = [
    { start: 300, count: 1, padding: 0 }, // decode over two splits of 256 keys
    { start: 0, count: 20, padding: 3 }, // a left-padded prompt
    { start: 5, count: 12, padding: 0 }, // a prompt chunk after 5 cached tokens
    { start: 0, count: 3, padding: 2 }, // its first two queries see no valid key
  ];
  const needed = layout.map((s) => Math.ceil((s.start + s.count) / BLOCK));
  const numBlocks = needed.reduce((a, b) => a + b, 0) + 2;
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const slots = numBlocks * BLOCK;
  const valid = new Uint8Array(slots);
  const positions = new Int32Array(slots);
  let next = 0;
  const sequences = layout.map((s, index) => {
    const blockTable = Int32Array.from(ids.slice(next, next + needed[index]!));
    next += needed[index]!;
    for (let j = 0; j < s.start + s.count; j++) {
      const slot = blockTable[Math.floor(j / BLOCK)]! * BLOCK + (j % BLOCK);
      valid[slot] = j >= s.padding ? 1 : 0;
      positions[slot] = Math.max(0, j - s.padding);
    }
    return { blockTable, start: s.start, count: s.count };
  });
  const rows = layout.reduce((a, s) => a + s.count, 0);
  const values = (count: number) => Float32Array.from({ length: count }, () => random() * 2 - 1);
  const kvSize = shape.kvHeads * slots * shape.headDim;
  return {
    ...shape,
    kvDtype,
    numBlocks,
    keys: values(kvSize),
    values: values(kvSize),
    valid,
    positions,
    sequences,
    q: values(rows * shape.heads * shape.headDim).map((v) => v * 2),
    slopes: alibi ? Float32Array.from({ length: shape.heads }, (_, h) => 2 ** (-(8 * (h + 1)) / shape.heads)) : undefined,
    kernel,
  };
}

/**
 * Per output (row, head, c): both sides compute the same scores s_j = (q·k_j + slope·position_j)/√d
 * (dot products within γ_d·Σ|q k| plus 2u of the terms, scaled), the same exp (within 4u each, and u
 * of |s_j − m| from the shift), and sum in different orders (γ_n each for the totals and the weighted
 * values). With δ the largest score error plus the exp's, each side's probabilities are within
 * 2.1δ + γ_n of the exact ones, so each side's output is within (2.1δ + 2γ_n + R)·W_c of the exact one,
 * W_c = Σ_j p_j |v_jc|, and the two sides within twice that. R is what the kernel's rescaling adds:
 * merging splits, exp(m_s − m) with 4u and two products, 12u; the flash prefill's online softmax
 * rescales once per key block (B blocks): each rescale factor is off by 4u (exp) + u·|its shift| and
 * two products round, so old weights drift by at most 6u·B + u·(score range), both in the output and
 * in the total: R = 2·(6u·B + u·range) + 4u, and its sums take B more additions (γ_{n+B}).
 * A query without a valid key gives 0 on both: bound 0.
 */
function attentionBound(spec: CudaAttentionSpec, keys: Float32Array, values: Float32Array): Float64Array {
  const { heads: H, kvHeads: Hkv, headDim: d } = spec;
  const scale = 1 / Math.sqrt(d);
  const rows = spec.q.length / (H * d);
  const bound = new Float64Array(rows * H * d);
  let row = 0;
  for (const sequence of spec.sequences) {
    for (let t = 0; t < sequence.count; t++, row++) {
      const visible = sequence.start + t + 1;
      for (let h = 0; h < H; h++) {
        const kvHead = Math.floor(h / (H / Hkv));
        const slope = spec.slopes ? spec.slopes[h]! : 0;
        const scores: number[] = [], errors: number[] = [], slotsOf: number[] = [];
        for (let j = 0; j < visible; j++) {
          const slot = sequence.blockTable[Math.floor(j / BLOCK)]! * BLOCK + (j % BLOCK);
          if (!spec.valid[slot]) continue;
          let dot = 0, magnitude = 0;
          for (let c = 0; c < d; c++) {
            const product = spec.q[(row * H + h) * d + c]! * keys[(kvHead * spec.numBlocks * BLOCK + slot) * d + c]!;
            dot += product;
            magnitude += Math.abs(product);
          }
          const alibi = slope * spec.positions[slot]!;
          scores.push((dot + alibi) * scale);
          errors.push(scale * (gamma(d) * magnitude + 2 * U32 * (Math.abs(dot) + Math.abs(alibi))));
          slotsOf.push(slot);
        }
        if (scores.length === 0) continue;
        const largest = Math.max(...scores);
        const range = largest - Math.min(...scores);
        const delta = Math.max(...scores.map((s, i) => errors[i]! + U32 * Math.abs(s - largest))) + 4 * U32;
        const exps = scores.map((s) => Math.exp(s - largest));
        const total = exps.reduce((a, b) => a + b, 0);
        const keyBlocks = Math.ceil(visible / BLOCK);
        const rescaling = spec.kernel === "split" ? 12 * U32 + 2 * gamma(visible) : 2 * (6 * U32 * keyBlocks + U32 * range) + 4 * U32 + 2 * gamma(visible + keyBlocks);
        const relative = 2 * (2.1 * delta + rescaling);
        for (let c = 0; c < d; c++) {
          let weighted = 0;
          for (let i = 0; i < exps.length; i++) weighted += (exps[i]! / total) * Math.abs(values[(kvHead * spec.numBlocks * BLOCK + slotsOf[i]!) * d + c]!);
          bound[(row * H + h) * d + c] = relative * weighted;
        }
      }
    }
  }
  return bound;
}

for (const kernel of ["split", "flash"] as const) {
  describeOnEach(describe, `cuda ops: ${kernel === "split" ? "split-K paged attention" : "flash-attention prefill"} against cpu::attention`, (cuda) => {
    const shapes: Shape[] = [
      { heads: 4, kvHeads: 4, headDim: 16 },
      { heads: 6, kvHeads: 2, headDim: 32 },
      { heads: 4, kvHeads: 1, headDim: 64 },
    ];
    let seed = 1;
    for (const shape of shapes) {
      for (const kvDtype of ["float32", "bfloat16", "float16"] as const) {
        // Every shape and every pool dtype runs with and without ALiBi, in alternation.
        const caseSeed = seed++;
        const alibi = caseSeed % 2 === 0;
        it(`${shape.heads} heads over ${shape.kvHeads} KV heads of ${shape.headDim}, ${kvDtype} pool${alibi ? ", ALiBi" : ""}`, () => {
          const spec = buildSpec(shape, kvDtype, alibi, caseSeed, kernel);
          const { gpu, cpu, keys, values } = cuda.attention(spec);
          const bound = attentionBound(spec, keys, values);
          for (let i = 0; i < gpu.length; i++) {
            const difference = Math.abs(gpu[i]! - cpu[i]!);
            if (!(difference <= bound[i]!)) assert.fail(`element ${i}: ${gpu[i]} vs the CPU's ${cpu[i]} (difference ${difference} > bound ${bound[i]})`);
          }
          // The padded queries (the last sequence's first two tokens) are exactly zero on both sides.
          const rows = gpu.length / (shape.heads * shape.headDim);
          const padded = gpu.subarray((rows - 3) * shape.heads * shape.headDim, (rows - 1) * shape.heads * shape.headDim);
          assert.ok(padded.every((v) => v === 0));
        });
      }
    }

    it("refuses a head size past the kernel's and KV heads that do not divide the heads", () => {
      const spec = buildSpec({ heads: 4, kvHeads: 4, headDim: 16 }, "float32", false, 99, kernel);
      assert.throws(() => cuda.attention({ ...spec, kvHeads: 3 }), { code: "FALCON_INPUT" });
      assert.throws(() => cuda.attention({ ...spec, headDim: kernel === "split" ? 300 : 129 }), { code: "FALCON_INPUT" });
    });
  });
}

/**
 * A step's rows writing into shuffled slots of a pool, some of them padding, their key and value
 * heads holding values whose rounding is a corner case: ties to even for bfloat16 (1 + 2⁻⁸ rounds
 * down, 1 + 3·2⁻⁸ up) and float16 (1 + 2⁻¹¹, 1 + 3·2⁻¹¹), float16 subnormals and underflow, magnitudes
 * past float16's largest (to ±inf) and infinities; the query heads and the stride's padding hold
 * values the write must not read.
 */
function writeKvSpec(shape: Shape, kvDtype: CudaWriteKvSpec["kvDtype"], seed: number): CudaWriteKvSpec {
  const random = seededRandom(seed);
  const { heads, kvHeads, headDim } = shape;
  const numBlocks = 4, rows = 11;
  const qkvStride = (heads + 2 * kvHeads) * headDim + 5;
  const slots = Array.from({ length: numBlocks * BLOCK }, (_, i) => i);
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [slots[i], slots[j]] = [slots[j]!, slots[i]!];
  }
  const chosen = slots.slice(0, rows);
  const corners = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -11, -(1 + 3 * 2 ** -11), 3e-6, -1e-7, 2e-8, 70000, -65520, Infinity, -Infinity, 0, -0];
  const qkv = Float32Array.from({ length: rows * qkvStride }, () => (random() * 2 - 1) * 8);
  for (let i = 0; i < corners.length * 3; i++) {
    const row = Math.floor(random() * rows), column = heads * headDim + Math.floor(random() * 2 * kvHeads * headDim);
    qkv[row * qkvStride + column] = corners[i % corners.length]!;
  }
  return {
    ...shape,
    kvDtype,
    numBlocks,
    qkvStride,
    qkv,
    rowBlock: Int32Array.from(chosen, (slot) => Math.floor(slot / BLOCK)),
    rowSlot: Int32Array.from(chosen, (slot) => slot % BLOCK),
    rowValid: Uint8Array.from(chosen, (_, r) => (r % 4 === 3 ? 0 : 1)),
    rowPosition: Int32Array.from(chosen, () => Math.floor(random() * 5000)),
  };
}

describeOnEach(describe, "cuda ops: KV write against cpu::write_cache", (cuda) => {
  const shapes: Array<Shape & { name: string }> = [
    { name: "MHA", heads: 4, kvHeads: 4, headDim: 8 },
    { name: "GQA", heads: 6, kvHeads: 2, headDim: 24 },
    { name: "MQA", heads: 4, kvHeads: 1, headDim: 130 },
  ];
  let seed = 500;
  for (const shape of shapes) {
    for (const kvDtype of ["float32", "bfloat16", "float16"] as const) {
      const caseSeed = seed++;
      it(`${shape.name} (${shape.heads} heads over ${shape.kvHeads} KV heads of ${shape.headDim}), ${kvDtype} pool: the same bytes, flags and positions`, () => {
        const spec = writeKvSpec(shape, kvDtype, caseSeed);
        const result = cuda.writeKv(spec);
        // Both sides round each float32 once to nearest even: bit-identical pools, untouched slots included.
        assert.ok(result.cpuKv.some((byte) => byte !== 0xa5), "the CPU wrote nothing");
        assert.deepEqual(result.gpuKv, result.cpuKv);
        assert.deepEqual(result.gpuValid, result.cpuValid);
        assert.deepEqual(result.gpuPositions, result.cpuPositions);
        assert.equal(
          result.cpuValid.reduce((a, b) => a + b, 0),
          spec.rowValid.reduce((a, b) => a + b, 0),
        );
      });
    }
  }

  it("refuses rows that name slots outside the pool or the same slot twice", () => {
    const spec = writeKvSpec({ heads: 4, kvHeads: 4, headDim: 8 }, "float32", 1);
    assert.throws(() => cuda.writeKv({ ...spec, rowSlot: spec.rowSlot.map((slot, r) => (r === 0 ? BLOCK : slot)) }), { code: "FALCON_INPUT" });
    assert.throws(() => cuda.writeKv({ ...spec, rowBlock: spec.rowBlock.map(() => 0), rowSlot: spec.rowSlot.map(() => 3) }), { code: "FALCON_INPUT" });
  });
});
