/**
 * Every keras-hub and Hugging Face fixture case again on `device: "cuda"`, through the host emulation of
 * the CUDA kernels (FALCON_CUDA_EMULATE=1; a build without real CUDA has no other), or on the GPU in a GPU
 * run (bench/cuda-check.sh; helpers/cuda-emulation.ts onRealGpu), at the manifests' tolerances: the same cases as keras-fixtures and hf-fixtures (test/helpers/fixture-suites.ts), plus a
 * check in each case that every model it loads really runs on the CUDA backend. int4 is CPU-only: asking
 * CUDA for it is a typed error.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, FalconConfigError } from "../src/index.js";
import { onRealGpu } from "./helpers/cuda-emulation.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { hfFixtureSuite, kerasFixtureSuite, type FixtureSuiteOptions } from "./helpers/fixture-suites.js";

onRealGpu();

const onCuda: FixtureSuiteOptions = {
  load: { device: "cuda" },
  label: "cuda",
  modelCheck: {
    name: "every model of the case runs on the CUDA backend, on device cuda:0",
    check(backbone, model) {
      const { backend, device } = backbone.info();
      assert.equal(backend, "cuda", model);
      // "cuda:0 (emulated on the host)" here; a GPU's name on a real one.
      assert.match(device, /^cuda:0( |$)/, model);
    },
  },
};

kerasFixtureSuite(onCuda);
hfFixtureSuite(onCuda);

describe("cuda int4", () => {
  const int4Refused = (error: unknown) =>
    error instanceof FalconConfigError && /int4/.test(error.message) && /cuda/i.test(error.message);

  it("a keras preset loaded as int4 on device cuda is a FalconConfigError naming int4", async () => {
    await assert.rejects(
      FalconBackbone.fromPreset(path.join(FIXTURES, "keras", "falcon_h2_d32_l2", "preset"), { device: "cuda", dtype: "int4" }),
      int4Refused);
  });

  it("a Hugging Face checkpoint loaded as int4 on device cuda is a FalconConfigError naming int4", async () => {
    await assert.rejects(
      FalconCausalLM.fromPreset(path.join(FIXTURES, "hf", "rw_alibi_mha_sequential", "checkpoint"), { device: "cuda", dtype: "int4" }),
      int4Refused);
  });
});
