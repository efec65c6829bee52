/**
 * Every kernel family this CPU supports against the scalar reference, and the fixture suites run
 * through each non-default family in a child process (FALCON_ISA selects it at startup).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";

import { FalconBackbone, runtimeInfo, setIsa, type FalconBackboneConfig, type FalconDType } from "../src/index.js";

const { isa: defaultIsa, supportedIsas } = runtimeInfo();
after(() => setIsa(defaultIsa));

/** Odd sizes so every k tail, output tail and row-group remainder of the tiles is exercised. */
const ODD_SHAPES: FalconBackboneConfig[] = [
  { vocabularySize: 67, numLayers: 2, numAttentionHeads: 5, hiddenDim: 40, intermediateDim: 70, seed: 4 },
  { vocabularySize: 97, numLayers: 1, numAttentionHeads: 6, numKeyValueHeads: 2, hiddenDim: 108, intermediateDim: 136,
    positionEncoding: "rotary", blockLayout: "parallel_two_norms", useBias: false, tieWordEmbeddings: false, seed: 5 },
];

async function logitsWith(isa: typeof defaultIsa, config: FalconBackboneConfig, dtype: FalconDType): Promise<Float32Array> {
  setIsa(isa);
  const model = new FalconBackbone({ ...config, dtype });
  const tokens = Array.from({ length: 5 }, (_, row) => Array.from({ length: 7 }, (_, t) => (row * 13 + t * 7) % config.vocabularySize));
  const logits = await model.tokenEmbedding.reverse(await model.call({ tokenIds: tokens }));
  model.dispose();
  return logits.data;
}

describe("kernel families against the scalar reference", () => {
  for (const isa of supportedIsas.filter((name) => name !== "scalar")) {
    for (const dtype of ["float32", "bfloat16", "float16", "int8"] as FalconDType[]) {
      ODD_SHAPES.forEach((config, index) => {
        it(`${isa} ${dtype} shape ${index}`, async () => {
          const reference = await logitsWith("scalar", config, dtype);
          const fast = await logitsWith(isa, config, dtype);
          let worst = 0;
          let scale = 1;
          for (let i = 0; i < reference.length; i++) {
            worst = Math.max(worst, Math.abs(fast[i] - reference[i]));
            scale = Math.max(scale, Math.abs(reference[i]));
          }
          // bf16 models round activations to bf16 before every matmul, so a different summation order can
          // move an activation by one bf16 step (2^-8); float32, float16 and int8 (float32 compute) agree to rounding.
          const limit = dtype === "bfloat16" ? 1e-2 : 2e-5;
          assert.ok(worst / scale < limit, `relative error ${worst / scale}`);
        });
      });
    }
  }
});

describe("fixture suites through every other kernel family", () => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const isa of supportedIsas.filter((name) => name !== defaultIsa)) {
    it(`FALCON_ISA=${isa}`, () => {
      const result = spawnSync(process.execPath, ["--test", path.join(here, "keras-fixtures.test.js"), path.join(here, "hf-fixtures.test.js")], {
        // Without NODE_TEST_CONTEXT the child reports as a standalone run, with its own summary lines.
        env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "NODE_TEST_CONTEXT")), FALCON_ISA: isa },
        encoding: "utf8",
        timeout: 300_000,
      });
      const summary = result.stdout.split("\n").filter((line) => /^# (pass|fail)/.test(line)).join(", ");
      assert.equal(result.status, 0, `${summary}\n${result.stdout.slice(-3000)}`);
      assert.match(summary, /# pass [1-9]\d*, # fail 0/);
    });
  }
});
