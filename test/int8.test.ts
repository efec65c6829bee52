/**
 * int8 (README "dtype": symmetric int8 weights with one float32 scale per output row, each matmul's input
 * rows quantised in blocks of 256) at every valid position of every run the fixtures hold, on every float32
 * fixture model:
 *
 * - against the int8 scheme itself, computed in float64 by test/helpers/reference-forward.ts on the models
 *   it covers (keras-hub FalconBackbone's architecture: the keras models and hf/rw_alibi_mha_sequential):
 *   the stored weights bit for bit, the logits to float32 accumulation error.
 * - against the float32 model, within the error the scheme itself has on these models (INT8_ERROR below).
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, type Tensor } from "../src/index.js";
import { float32FixtureModels, isReal, type FixtureRun } from "./helpers/fixture-runs.js";
import {
  INT8_EVERYWHERE, int8Weight, referenceCovers, referenceForward, referenceLogits, referenceModel, type NearTies, type ReferenceModel,
} from "./helpers/reference-forward.js";

/**
 * The int8 implementation against the float64 int8 scheme, relative to the run's largest |logit|: float32
 * accumulation (float32 against float64 logits differ by ~1e-6 of it here; int8 against the scheme by ≤ 3e-7).
 */
const SCHEME_TOLERANCE = 1e-5;

/**
 * Activations within this many quantisation steps of a rounding boundary may round either way in float32:
 * 1e-3 steps is 8e-6 of the block's largest magnitude, above float32's error on the activations. Which way
 * can move the logits by 1.6 % of the largest: input 201 of layer 0's ffn_down at keras h4_d64 b3_s17_right
 * row 2 sits 7.6e-6 steps from its boundary, and the AVX2 and scalar kernels put it on the other side.
 */
const NEAR_TIE_STEPS = 1e-3;

/**
 * int8 against float32, relative to the run's largest |float32 logit| (at least 1). The scheme's own error,
 * computed by the float64 reference (INT8_EVERYWHERE against float64; `npm run bench:int8-error` breaks it
 * down by matmul), peaks at 4.52 % on keras h2_d32 (run b1_s8), 4.01 % on h3_d24, 3.29 % on h4_d64 and
 * 2.27 % on hf rw_alibi_mha_sequential; the implementation adds at most SCHEME_TOLERANCE and float32's
 * ~1e-6, and measures ≤ 2.43 % on the other HF fixture models. These models are 24–64 wide, so a logit
 * averages few rounding errors. Activation blocks of 64, 32 or 16 inputs, or q8_0's per-32 weight scales
 * with 32-input activation blocks, leave each keras model measured above 3 % too (3.2–5.0 %): no standard
 * int8 scheme holds 3 % here. 5 % is the bound the scheme holds on every fixture model, with about 0.5 % to spare.
 */
const INT8_ERROR = 0.05;

const argmax = (values: ArrayLike<number>, from: number, count: number) => {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[from + i]! > values[from + best]!) best = i;
  return best;
};

/** The run's valid rows (b · L + t, ascending) and the largest |logit| over them. */
function validRows(run: FixtureRun, logits: ArrayLike<number>, V: number): { rows: number[]; largest: number } {
  const L = run.tokenIds[0]!.length;
  const rows = run.tokenIds.flatMap((_, b) => Array.from({ length: L }, (_, t) => b * L + t).filter((row) => isReal(run, b, row % L)));
  let largest = 0;
  for (const row of rows) for (let v = 0; v < V; v++) largest = Math.max(largest, Math.abs(logits[row * V + v]!));
  return { rows, largest };
}

/**
 * The first row where `actual` leaves `expected` by more than `tolerance`, or picks an id whose expected
 * logit is more than `tolerance` below the expected maximum (within it, either id is the argmax).
 */
function firstMismatch(actual: ArrayLike<number>, expected: ArrayLike<number>, V: number, rows: number[], tolerance: number) {
  for (const row of rows) {
    const from = row * V;
    let worst = 0;
    for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(actual[from + v]! - expected[from + v]!));
    const [chosen, best] = [argmax(actual, from, V), argmax(expected, from, V)];
    if (worst > tolerance || expected[from + chosen]! < expected[from + best]! - tolerance) {
      return { row, message: `row ${row}: off by ${worst} (tolerance ${tolerance}), argmax ${chosen} where the scheme's is ${best}` };
    }
  }
  return undefined;
}

/** The scheme's logits over `run`, with the near-ties in `roundedOtherWay` rounded the other way. */
function schemeLogits(reference: ReferenceModel, run: FixtureRun, roundedOtherWay: ReadonlySet<string>) {
  const nearTies: NearTies = { within: NEAR_TIE_STEPS, roundedOtherWay, found: new Map() };
  const int8 = { ...INT8_EVERYWHERE, nearTies };
  return { logits: referenceLogits(reference, referenceForward(reference, run.tokenIds, run.paddingMask, int8), int8), nearTies };
}

/**
 * Checks `actual` against the scheme, rounding near-ties the other way where that explains a mismatch:
 * at the first mismatching row, the near-ties that reach it (its batch row, up to its position; the
 * closest to its boundary first) are tried one at a time, and one that makes that row and all before
 * it agree is kept. Fails at a mismatch no single near-tie explains.
 */
function assertComputesScheme(actual: ArrayLike<number>, reference: ReferenceModel, run: FixtureRun) {
  const V = reference.vocabularySize;
  const L = run.tokenIds[0]!.length;
  let scheme = schemeLogits(reference, run, new Set());
  const { rows, largest } = validRows(run, scheme.logits, V);
  const tolerance = SCHEME_TOLERANCE * largest;
  let mismatch = firstMismatch(actual, scheme.logits, V, rows, tolerance);
  while (mismatch) {
    const { row: at, message } = mismatch;
    const candidates = [...scheme.nearTies.found]
      .filter(([key, tie]) => !scheme.nearTies.roundedOtherWay.has(key) && Math.floor(tie.row / L) === Math.floor(at / L) && tie.row <= at)
      .sort(([, a], [, b]) => a.distance - b.distance);
    let explained = false;
    for (const [key] of candidates) {
      const trial = schemeLogits(reference, run, new Set([...scheme.nearTies.roundedOtherWay, key]));
      const next = firstMismatch(actual, trial.logits, V, rows, tolerance);
      if (next === undefined || next.row > at) {
        [scheme, mismatch, explained] = [trial, next, true];
        break;
      }
    }
    assert.ok(explained, `${message}; no single one of the ${candidates.length} near-ties reaching it, rounded the other way, explains it`);
  }
}

/** The int8 backbone stores every matrix as the scheme quantises the float32 model's. */
async function assertStoresScheme(quantised: FalconBackbone, reference: ReferenceModel) {
  assert.equal(quantised.info().dtype, "int8");
  const native = await quantised.nativeModel();
  const matrices = native.weightNames().filter((name) => name === "token_embedding" || name.endsWith(".weight"));
  assert.equal(matrices.length, 1 + 4 * reference.numLayers);
  for (const name of matrices) {
    const { data } = await native.getWeight(name);
    const stored = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    assert.deepEqual(stored, Float32Array.from(int8Weight(reference, name)), name);
  }
}

describe("a random model whose widths cross quantisation blocks and are not multiples of 4: int8", async () => {
  // hidden 66 (6 heads of 11) and intermediate 602 (blocks of 256, 256 and 90 inputs); the fixture models
  // are 24–256 wide, one block each.
  const config = {
    vocabularySize: 40, numLayers: 2, numAttentionHeads: 6, hiddenDim: 66, intermediateDim: 602, layerNormEpsilon: 1e-5,
    attentionDropoutRate: 0, feedforwardDropoutRate: 0, seed: 7,
  };
  const full = new FalconBackbone({ ...config, dtype: "float32" });
  const quantised = new FalconBackbone({ ...config, dtype: "int8" });
  after(() => [full, quantised].forEach((model) => model.dispose()));
  const reference = await referenceModel(full);
  const ids = (length: number, offset: number) => Array.from({ length }, (_, t) => (7 * t + offset) % config.vocabularySize);
  const runs: FixtureRun[] = [
    { name: "b1_s20", tokenIds: [ids(20, 3)], paddingMask: null },
    { name: "b2_s9_padded", tokenIds: [ids(9, 1), ids(9, 5)], paddingMask: [[1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1, 1]] },
  ];

  it("stores every matrix as the scheme quantises it, bit for bit", () => assertStoresScheme(quantised, reference));
  for (const run of runs) {
    it(`run ${run.name}: the int8 scheme's logits at every valid position`, async () => {
      const hidden = await quantised.call({ tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined });
      assertComputesScheme((await quantised.tokenEmbedding.reverse(hidden)).data, reference, run);
    });
  }
});

const fixtureModels = await Promise.all(float32FixtureModels().map(async ([label, dir, runs]) => {
  const [full, quantised] = await Promise.all([FalconCausalLM.fromPreset(dir), FalconCausalLM.fromPreset(dir, { dtype: "int8" })]);
  const reference = referenceCovers(full.backbone.getConfig()) ? await referenceModel(full.backbone) : undefined;
  return { label, runs, full, quantised, reference };
}));
after(() => fixtureModels.forEach(({ full, quantised }) => [full, quantised].forEach((model) => model.dispose())));

for (const { label, runs, full, quantised, reference } of fixtureModels) {
  describe(`${label}: int8`, () => {
    if (reference) {
      it("stores every matrix as the scheme quantises it, bit for bit", () => assertStoresScheme(quantised.backbone, reference));
    }

    for (const run of runs) {
      const inputs = { tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined };

      if (reference) {
        it(`run ${run.name}: the int8 scheme's logits at every valid position`, async () => {
          assertComputesScheme((await quantised.call(inputs)).data, reference, run);
        });
      }

      it(`run ${run.name}: logits within ${100 * INT8_ERROR} % of float32; its argmax kept wherever float32's top-2 gap exceeds twice that`, async () => {
        const [a, b]: Tensor[] = await Promise.all([full.call(inputs), quantised.call(inputs)]);
        const V = a.shape[2]!;
        const { rows, largest } = validRows(run, a.data, V);
        const scale = Math.max(1, largest);
        let worst = 0;
        let guarded = 0;
        const flipped: string[] = [];
        for (const row of rows) {
          const from = row * V;
          for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(a.data[from + v]! - b.data[from + v]!));
          const best = argmax(a.data, from, V);
          let second = -Infinity;
          for (let v = 0; v < V; v++) if (v !== best) second = Math.max(second, a.data[from + v]!);
          if (a.data[from + best]! - second <= 2 * INT8_ERROR * scale) continue;
          guarded++;
          const chosen = argmax(b.data, from, V);
          if (chosen !== best) flipped.push(`row ${row}: float32 ${best} (gap ${a.data[from + best]! - second}), int8 ${chosen}`);
        }
        assert.ok(rows.length > 0);
        const problems = [
          ...(worst / scale < INT8_ERROR ? [] : [`relative error ${worst / scale} ≥ ${INT8_ERROR}`]),
          ...(flipped.length === 0 ? [] : [`argmax changed at ${flipped.length} of the ${guarded} positions the bound guards`, ...flipped]),
        ];
        assert.deepEqual(problems, []);
      });
    }
  });
}
