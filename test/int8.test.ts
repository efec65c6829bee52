/** int8 weights (per-output-row scales, float32 compute) against the float32 model on the fixtures. */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "node:test";

import { FalconCausalLM } from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";

const PRESETS = ["keras/falcon_h4_d64_l2/preset", "hf/rw_alibi_mha_sequential/checkpoint", "hf/f7b_rotary_mqa_parallel/checkpoint",
  "hf/f40b_newarch_gqa/checkpoint"];

for (const preset of PRESETS) {
  it(`${preset}: int8 logits stay within 3% of float32 and keep the argmax`, async () => {
    const dir = path.join(FIXTURES, preset);
    const [full, quantised] = await Promise.all([FalconCausalLM.fromPreset(dir), FalconCausalLM.fromPreset(dir, { dtype: "int8" })]);
    assert.equal(quantised.backbone.info().dtype, "int8");
    const tokens = [5, 17, 33, 2, 91, 64, 7, 12, 40, 3, 88, 19];
    const [a, b] = await Promise.all([full.call({ tokenIds: [tokens] }), quantised.call({ tokenIds: [tokens] })]);
    const V = a.shape[2];
    let worst = 0;
    let scale = 1;
    let agree = 0;
    for (let i = 0; i < a.data.length; i++) {
      worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
      scale = Math.max(scale, Math.abs(a.data[i]));
    }
    for (let t = 0; t < tokens.length; t++) {
      let bestA = 0;
      let bestB = 0;
      for (let v = 1; v < V; v++) {
        if (a.data[t * V + v] > a.data[t * V + bestA]) bestA = v;
        if (b.data[t * V + v] > b.data[t * V + bestB]) bestB = v;
      }
      if (bestA === bestB) agree++;
    }
    assert.ok(worst / scale < 0.03, `relative error ${worst / scale}`);
    assert.ok(agree >= tokens.length - 1, `argmax agreed at ${agree} of ${tokens.length} positions`);
    full.dispose();
    quantised.dispose();
  });
}
