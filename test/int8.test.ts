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
import { float32FixtureModels, type FixtureRun } from "./helpers/fixture-runs.js";
import { assertComputesScheme, assertStoresScheme, float32BoundProblems } from "./helpers/quantised-scheme.js";
import { INT8_EVERYWHERE, int8Weight, referenceCovers, referenceModel } from "./helpers/reference-forward.js";

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

  it("stores every matrix as the scheme quantises it, bit for bit", () => assertStoresScheme(quantised, reference, "int8", int8Weight));
  for (const run of runs) {
    it(`run ${run.name}: the int8 scheme's logits at every valid position`, async () => {
      const hidden = await quantised.call({ tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined });
      assertComputesScheme((await quantised.tokenEmbedding.reverse(hidden)).data, reference, run, INT8_EVERYWHERE);
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
      it("stores every matrix as the scheme quantises it, bit for bit", () => assertStoresScheme(quantised.backbone, reference, "int8", int8Weight));
    }

    for (const run of runs) {
      const inputs = { tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined };

      if (reference) {
        it(`run ${run.name}: the int8 scheme's logits at every valid position`, async () => {
          assertComputesScheme((await quantised.call(inputs)).data, reference, run, INT8_EVERYWHERE);
        });
      }

      it(`run ${run.name}: logits within ${100 * INT8_ERROR} % of float32; its argmax kept wherever float32's top-2 gap exceeds twice that`, async () => {
        const [a, b]: Tensor[] = await Promise.all([full.call(inputs), quantised.call(inputs)]);
        assert.deepEqual(float32BoundProblems(a, b, run, INT8_ERROR, "int8"), []);
      });
    }
  });
}
