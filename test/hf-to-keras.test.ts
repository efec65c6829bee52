/** An HF falcon-rw checkpoint becomes a keras-hub preset: export, reload, identical outputs. */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, it } from "node:test";

import { FalconBackbone, FalconCausalLM, FalconPresetError } from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";

const temporary = mkdtempSync(path.join(os.tmpdir(), "falcon-hf-keras-"));
after(() => rmSync(temporary, { recursive: true, force: true }));

it("saves an HF falcon-rw checkpoint as a keras-hub preset that reloads to identical logits", async () => {
  const hf = await FalconCausalLM.fromPreset(path.join(FIXTURES, "hf", "rw_alibi_mha_sequential", "checkpoint"));
  const target = path.join(temporary, "rw");
  await hf.saveToPreset(target);
  assert.deepEqual(readdirSync(target).sort(), ["config.json", "metadata.json", "model.weights.h5"]);
  const keras = await FalconCausalLM.fromPreset(target);
  const inputs = { tokenIds: [[3, 14, 15, 92, 65, 35], [0, 0, 89, 79, 32, 38]], paddingMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]] };
  assert.deepEqual((await keras.call(inputs)).data, (await hf.call(inputs)).data);
  assert.deepEqual(keras.backbone.getConfig(), hf.backbone.getConfig());
  hf.dispose();
  keras.dispose();
});

it("refuses to save a variant keras-hub cannot express", async () => {
  const rotary = await FalconBackbone.fromPreset(path.join(FIXTURES, "hf", "f7b_rotary_mqa_parallel", "checkpoint"));
  await assert.rejects(rotary.saveToPreset(path.join(temporary, "f7b")), (error: Error) => {
    assert.ok(error instanceof FalconPresetError);
    assert.match(error.message, /rotary position encoding/);
    return true;
  });
  rotary.dispose();
});
