/**
 * Where int8's and int4's error against float comes from, on the fixture models the float64 reference
 * covers: the int8 scheme switched on for the weights, the activations or both, all at once or one matmul
 * at a time, and the int4 scheme's weights (Q4_0) likewise (test/helpers/reference-forward.ts), against
 * the float64 forward pass. Each figure is the worst over the
 * fixture's runs of test/int8.test.ts's measure: the largest |Δ logit| over a run's valid positions, over
 * the run's largest |logit| (at least 1), in %.
 *
 *   npm run bench:int8-error
 */
import { FalconBackbone } from "../src/index.js";
import { float32FixtureModels, isReal } from "../test/helpers/fixture-runs.js";
import {
  INT4_EVERYWHERE, INT8_EVERYWHERE, MATMULS, referenceCovers, referenceForward, referenceLogits, referenceModel, type Int8Options,
} from "../test/helpers/reference-forward.js";

const settings: [string, Int8Options][] = [
  ["everything (the int8 dtype)", INT8_EVERYWHERE],
  ["all weights", { weights: INT8_EVERYWHERE.weights, activations: [] }],
  ["all activations", { weights: [], activations: MATMULS }],
  ...MATMULS.map((site): [string, Int8Options] => [`${site}: weights + activations`, { weights: [site], activations: [site] }]),
  ...MATMULS.map((site): [string, Int8Options] => [`${site}: weights`, { weights: [site], activations: [] }]),
  ...MATMULS.map((site): [string, Int8Options] => [`${site}: activations`, { weights: [], activations: [site] }]),
  ["embedding lookup: weights", { weights: ["embedding"], activations: [] }],
  ["everything (the int4 dtype)", INT4_EVERYWHERE],
  ["all weights int4", { weights: INT4_EVERYWHERE.weights, activations: [], int4Weights: true }],
  ...MATMULS.map((site): [string, Int8Options] => [`${site}: weights int4`, { weights: [site], activations: [], int4Weights: true }]),
  ["embedding lookup: weights int4", { weights: ["embedding"], activations: [], int4Weights: true }],
];

const columns: string[] = [];
const worst = settings.map(() => [] as number[]);
for (const [label, dir, runs] of float32FixtureModels()) {
  await using backbone = await FalconBackbone.fromPreset(dir);
  if (!referenceCovers(backbone.getConfig())) continue;
  const model = await referenceModel(backbone);
  const V = model.vocabularySize;
  columns.push(label);
  const column = settings.map(() => 0);
  for (const run of runs) {
    const L = run.tokenIds[0]!.length;
    const rows = run.tokenIds.flatMap((_, b) => Array.from({ length: L }, (_, t) => b * L + t).filter((row) => isReal(run, b, row % L)));
    const exact = referenceLogits(model, referenceForward(model, run.tokenIds, run.paddingMask));
    let largest = 1;
    for (const row of rows) for (let v = 0; v < V; v++) largest = Math.max(largest, Math.abs(exact[row * V + v]!));
    settings.forEach(([, int8], i) => {
      const logits = referenceLogits(model, referenceForward(model, run.tokenIds, run.paddingMask, int8), int8);
      let error = 0;
      for (const row of rows) for (let v = 0; v < V; v++) error = Math.max(error, Math.abs(logits[row * V + v]! - exact[row * V + v]!));
      column[i] = Math.max(column[i]!, error / largest);
    });
  }
  column.forEach((value, i) => worst[i]!.push(value));
}

console.log(`| int8 (int4 where said) on | ${columns.join(" | ")} |`);
console.log(`|---|${columns.map(() => "---:").join("|")}|`);
settings.forEach(([name], i) => console.log(`| ${name} | ${worst[i]!.map((value) => `${(100 * value).toFixed(2)} %`).join(" | ")} |`));
