/** fromPreset("hf://org/name") end to end, from a Hugging Face cache laid out as huggingface_hub does. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, it } from "node:test";

import { FalconCausalLM, FalconPresetError } from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";

const cache = mkdtempSync(path.join(os.tmpdir(), "falcon-hf-cache-"));
after(() => rmSync(cache, { recursive: true, force: true }));

it("loads hf://org/name from the local cache offline, and names the missing files otherwise", async () => {
  const source = path.join(FIXTURES, "hf", "f40b_newarch_gqa", "checkpoint_sharded");
  const commit = "0123456789abcdef0123456789abcdef01234567";
  const repo = path.join(cache, "models--tiny--falcon-40b-gqa");
  const snapshot = path.join(repo, "snapshots", commit);
  mkdirSync(snapshot, { recursive: true });
  mkdirSync(path.join(repo, "refs"));
  writeFileSync(path.join(repo, "refs", "main"), commit);
  for (const file of ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
    symlinkSync(path.join(source, file), path.join(snapshot, file));
  }
  const fromHandle = await FalconCausalLM.fromPreset("hf://tiny/falcon-40b-gqa", { cacheDir: cache, offline: true });
  const fromDirectory = await FalconCausalLM.fromPreset(source);
  const inputs = { tokenIds: [[5, 6, 7, 8]] };
  assert.deepEqual((await fromHandle.call(inputs)).data, (await fromDirectory.call(inputs)).data);
  fromHandle.dispose();
  fromDirectory.dispose();

  await assert.rejects(FalconCausalLM.fromPreset("hf://tiny/absent", { cacheDir: cache, offline: true }), (error: Error) => {
    assert.ok(error instanceof FalconPresetError, error.message);
    assert.match(error.message, /config\.json/);
    return true;
  });
});
