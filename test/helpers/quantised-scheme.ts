/**
 * Checks shared by the quantised dtypes' tests (test/int8.test.ts, test/int4.test.ts, test/cuda-int8.test.ts): a model's logits
 * against its scheme computed in float64 by test/helpers/reference-forward.ts, its stored matrices against
 * the scheme's, and its logits against float32's within a bound.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, type FalconDevice, type Tensor } from "../../src/index.js";
import { float32FixtureModels, isReal, type FixtureRun } from "./fixture-runs.js";
import {
  referenceCovers, referenceForward, referenceLogits, referenceModel, type Int8Options, type NearTies, type ReferenceModel,
} from "./reference-forward.js";

/**
 * The implementation against the float64 scheme, relative to the run's largest |logit|: float32
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

const argmax = (values: ArrayLike<number>, from: number, count: number) => {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[from + i]! > values[from + best]!) best = i;
  return best;
};

/** The run's valid rows (b · L + t, ascending) and the largest |logit| over them. */
export function validRows(run: FixtureRun, logits: ArrayLike<number>, V: number): { rows: number[]; largest: number } {
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
function schemeLogits(reference: ReferenceModel, run: FixtureRun, scheme: Int8Options, roundedOtherWay: ReadonlySet<string>) {
  const nearTies: NearTies = { within: NEAR_TIE_STEPS, roundedOtherWay, found: new Map() };
  const options = { ...scheme, nearTies };
  return { logits: referenceLogits(reference, referenceForward(reference, run.tokenIds, run.paddingMask, options), options), nearTies };
}

/**
 * Checks `actual` against `scheme`, rounding near-ties the other way where that explains a mismatch:
 * at the first mismatching row, the near-ties that reach it (its batch row, up to its position; the
 * closest to its boundary first) are tried one at a time, and one that makes that row and all before
 * it agree is kept. Fails at a mismatch no single near-tie explains.
 */
export function assertComputesScheme(actual: ArrayLike<number>, reference: ReferenceModel, run: FixtureRun, scheme: Int8Options) {
  const V = reference.vocabularySize;
  const L = run.tokenIds[0]!.length;
  let expected = schemeLogits(reference, run, scheme, new Set());
  const { rows, largest } = validRows(run, expected.logits, V);
  const tolerance = SCHEME_TOLERANCE * largest;
  let mismatch = firstMismatch(actual, expected.logits, V, rows, tolerance);
  while (mismatch) {
    const { row: at, message } = mismatch;
    const candidates = [...expected.nearTies.found]
      .filter(([key, tie]) => !expected.nearTies.roundedOtherWay.has(key) && Math.floor(tie.row / L) === Math.floor(at / L) && tie.row <= at)
      .sort(([, a], [, b]) => a.distance - b.distance);
    let explained = false;
    for (const [key] of candidates) {
      const trial = schemeLogits(reference, run, scheme, new Set([...expected.nearTies.roundedOtherWay, key]));
      const next = firstMismatch(actual, trial.logits, V, rows, tolerance);
      if (next === undefined || next.row > at) {
        [expected, mismatch, explained] = [trial, next, true];
        break;
      }
    }
    assert.ok(explained, `${message}; no single one of the ${candidates.length} near-ties reaching it, rounded the other way, explains it`);
  }
}

/** The quantised backbone stores every matrix as `weightOf` (the scheme's quantisation of the float model's) says, bit for bit. */
export async function assertStoresScheme(quantised: FalconBackbone, reference: ReferenceModel, dtype: string,
                                         weightOf: (model: ReferenceModel, name: string) => Float64Array) {
  assert.equal(quantised.info().dtype, dtype);
  const native = await quantised.nativeModel();
  const matrices = native.weightNames().filter((name) => name === "token_embedding" || name.endsWith(".weight"));
  assert.equal(matrices.length, 1 + 4 * reference.numLayers);
  for (const name of matrices) {
    const { data } = await native.getWeight(name);
    const stored = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    assert.deepEqual(stored, Float32Array.from(weightOf(reference, name)), name);
  }
}

/**
 * The quantised logits `b` against float32's `a` over a run's valid positions: the largest |Δ| relative to
 * the largest |float32 logit| (at least 1) below `bound`, and float32's argmax kept wherever its top-2 gap
 * exceeds twice the bound. Returns the problems found (none: passes).
 */
export function float32BoundProblems(a: Tensor, b: Tensor, run: FixtureRun, bound: number, dtype: string): string[] {
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
    if (a.data[from + best]! - second <= 2 * bound * scale) continue;
    guarded++;
    const chosen = argmax(b.data, from, V);
    if (chosen !== best) flipped.push(`row ${row}: float32 ${best} (gap ${a.data[from + best]! - second}), ${dtype} ${chosen}`);
  }
  assert.ok(rows.length > 0);
  return [
    ...(worst / scale < bound ? [] : [`relative error ${worst / scale} ≥ ${bound}`]),
    ...(flipped.length === 0 ? [] : [`argmax changed at ${flipped.length} of the ${guarded} positions the bound guards`, ...flipped]),
  ];
}

/** A quantised dtype as its tests (test/int8.test.ts, test/int4.test.ts) check it. */
export interface QuantisedDtype {
  dtype: "int8" | "int4";
  /** The scheme's options for test/helpers/reference-forward.ts. */
  scheme: Int8Options;
  /** The scheme's quantisation of the float model's matrix `name`. */
  weightOf: (model: ReferenceModel, name: string) => Float64Array;
  /** What quantises the stored matrices, as the tests name it. */
  quantisedBy: string;
  /** The dtype's logits against float32's, relative to the run's largest |float32 logit| (at least 1). */
  float32Error: number;
  /**
   * Where the quantised models run (float32's stay on the CPU); default "cpu". On "cuda" the stored
   * matrices are not checked: they live in device memory, where getWeight cannot read them.
   */
  device?: FalconDevice;
}

/**
 * A random model, float32 and `quantised.dtype`, over two runs, one padded: its stored matrices and its
 * logits against the scheme's. Its widths, hidden 66 (6 heads of 11) and intermediate 602, cross the
 * quantisation groups and blocks, which the fixture models' (24–256) do not.
 */
export function describeRandomQuantisedModel(title: string, quantised: QuantisedDtype) {
  const { dtype, scheme, weightOf, quantisedBy, device = "cpu" } = quantised;
  const config = {
    vocabularySize: 40, numLayers: 2, numAttentionHeads: 6, hiddenDim: 66, intermediateDim: 602, layerNormEpsilon: 1e-5,
    attentionDropoutRate: 0, feedforwardDropoutRate: 0, seed: 7,
  };
  describe(title, async () => {
    const full = new FalconBackbone({ ...config, dtype: "float32" });
    const model = new FalconBackbone({ ...config, dtype }, { device });
    after(() => [full, model].forEach((backbone) => backbone.dispose()));
    const reference = await referenceModel(full);
    const ids = (length: number, offset: number) => Array.from({ length }, (_, t) => (7 * t + offset) % config.vocabularySize);
    const runs: FixtureRun[] = [
      { name: "b1_s20", tokenIds: [ids(20, 3)], paddingMask: null },
      { name: "b2_s9_padded", tokenIds: [ids(9, 1), ids(9, 5)], paddingMask: [[1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1, 1]] },
    ];

    if (device === "cpu") it(`stores every matrix as ${quantisedBy} quantises it, bit for bit`, () => assertStoresScheme(model, reference, dtype, weightOf));
    for (const run of runs) {
      it(`run ${run.name}: the ${dtype} scheme's logits at every valid position`, async () => {
        const hidden = await model.call({ tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined });
        assertComputesScheme((await model.tokenEmbedding.reverse(hidden)).data, reference, run, scheme);
      });
    }
  });
}

/**
 * Every float32 fixture model loaded as float32 and as `quantised.dtype`, at every run the fixtures hold:
 * the stored matrices and logits against the scheme's where the reference covers the model, and the
 * logits against float32's within `quantised.float32Error` everywhere.
 */
export async function describeQuantisedFixtureModels(quantised: QuantisedDtype) {
  const { dtype, scheme, weightOf, quantisedBy, float32Error, device = "cpu" } = quantised;
  const fixtureModels = await Promise.all(float32FixtureModels().map(async ([label, dir, runs]) => {
    const [full, model] = await Promise.all([FalconCausalLM.fromPreset(dir), FalconCausalLM.fromPreset(dir, { dtype, device })]);
    const reference = referenceCovers(full.backbone.getConfig()) ? await referenceModel(full.backbone) : undefined;
    return { label, runs, full, model, reference };
  }));
  after(() => fixtureModels.forEach(({ full, model }) => [full, model].forEach((lm) => lm.dispose())));

  for (const { label, runs, full, model, reference } of fixtureModels) {
    describe(`${label}: ${dtype}${device === "cpu" ? "" : ` on ${device}`}`, () => {
      if (reference && device === "cpu") {
        it(`stores every matrix as ${quantisedBy} quantises it, bit for bit`, () => assertStoresScheme(model.backbone, reference, dtype, weightOf));
      }

      for (const run of runs) {
        const inputs = { tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined };

        if (reference) {
          it(`run ${run.name}: the ${dtype} scheme's logits at every valid position`, async () => {
            assertComputesScheme((await model.call(inputs)).data, reference, run, scheme);
          });
        }

        it(`run ${run.name}: logits within ${100 * float32Error} % of float32; its argmax kept wherever float32's top-2 gap exceeds twice that`, async () => {
          const [a, b]: Tensor[] = await Promise.all([full.call(inputs), model.call(inputs)]);
          assert.deepEqual(float32BoundProblems(a, b, run, float32Error, dtype), []);
        });
      }
    });
  }
}
