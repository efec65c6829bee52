/** Malformed, truncated, sharded and named keras-hub presets. */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, FalconInputError, FalconPresetError } from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { readFloat32Datasets, writePreset, type Datasets } from "./helpers/keras-preset.js";

const SOURCE = path.join(FIXTURES, "keras", "falcon_h2_d32_l2", "preset");
const QUERY = "layers/falcon_transformer_decoder_1/attention_layer/query_dense/vars/0";
const temporary: string[] = [];
after(() => temporary.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "falcon-bad-"));
  temporary.push(dir);
  return dir;
}

async function presetWith(edit: (datasets: Datasets) => void, shards = 0): Promise<string> {
  const datasets = await readFloat32Datasets(path.join(SOURCE, "model.weights.h5"));
  edit(datasets);
  const dir = await writePreset(SOURCE, datasets, shards);
  temporary.push(dir);
  return dir;
}

async function rejectsWith(dir: string, message: RegExp): Promise<void> {
  await assert.rejects(FalconBackbone.fromPreset(dir), (error: Error) => {
    assert.ok(error instanceof FalconPresetError, `${error.name}: ${error.message}`);
    assert.match(error.message, message);
    return true;
  });
}

async function hidden(dir: string): Promise<Float32Array> {
  const model = await FalconBackbone.fromPreset(dir);
  const out = await model.call({ tokenIds: [[1, 5, 9, 33, 70]] });
  model.dispose();
  return out.data;
}

describe("keras preset loading errors", () => {
  it("names a truncated model.weights.h5", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
    const bytes = readFileSync(path.join(SOURCE, "model.weights.h5"));
    writeFileSync(path.join(dir, "model.weights.h5"), bytes.subarray(0, Math.floor(bytes.length / 2)));
    await rejectsWith(dir, /model\.weights\.h5: truncated: the HDF5 superblock says \d+ bytes but the file has \d+/);
  });

  it("names a file that is not HDF5", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
    writeFileSync(path.join(dir, "model.weights.h5"), "not hdf5 at all");
    await rejectsWith(dir, /model\.weights\.h5: not an HDF5 file/);
  });

  it("names a missing weight with its file and path", async () => {
    const dir = await presetWith((d) => d.delete(QUERY));
    await rejectsWith(dir, new RegExp(`model\\.weights\\.h5: missing weight /${QUERY}`));
  });

  it("names an extra weight", async () => {
    const dir = await presetWith((d) => d.set("layers/surprise/vars/0", { shape: [2], data: new Float32Array(2) }));
    await rejectsWith(dir, /unexpected weight \/layers\/surprise\/vars\/0/);
  });

  it("names a mis-shaped weight", async () => {
    const dir = await presetWith((d) => {
      const q = d.get(QUERY)!;
      d.set(QUERY, { shape: [32, 16, 2], data: q.data });
    });
    await rejectsWith(dir, /query_dense\/vars\/0 has shape \[32, 16, 2\], expected \[32, 2, 16\]/);
  });

  const badConfigs: [string, string, RegExp][] = [
    ["malformed JSON", "{ not json", /config\.json: malformed JSON/],
    ["another class", JSON.stringify({ class_name: "GPT2Backbone", registered_name: "keras_hub>GPT2Backbone", config: {} }), /not a Falcon backbone/],
    ["a missing field", JSON.stringify({ registered_name: "keras_hub>FalconBackbone", config: { vocabulary_size: 101 } }), /missing "num_layers"/],
    ["an unknown argument", JSON.stringify({ registered_name: "keras_hub>FalconBackbone", config: { vocabulary_size: 101, rope: 1 } }), /unknown FalconBackbone argument "rope"/],
  ];
  for (const [label, text, message] of badConfigs) {
    it(`rejects a config.json with ${label}`, async () => {
      const dir = tempDir();
      copyFileSync(path.join(SOURCE, "model.weights.h5"), path.join(dir, "model.weights.h5"));
      writeFileSync(path.join(dir, "config.json"), text);
      await rejectsWith(dir, message);
    });
  }

  it("rejects a config whose sizes contradict the weights", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "model.weights.h5"), path.join(dir, "model.weights.h5"));
    const config = JSON.parse(readFileSync(path.join(SOURCE, "config.json"), "utf8"));
    config.config.intermediate_dim = 64;
    writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
    await rejectsWith(dir, /dense_h_to_4h\/vars\/0 has shape \[32, 128\], expected \[32, 64\]/);
  });

  it("says where a missing preset directory or weights file should be", async () => {
    await rejectsWith(path.join(os.tmpdir(), "no-such-preset-dir"), /neither a directory nor a built-in preset name/);
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "config.json"), path.join(dir, "config.json"));
    await rejectsWith(dir, /no model\.weights\.h5/);
  });
});

describe("keras preset variants", () => {
  it("loads a sharded preset to the same outputs", async () => {
    const sharded = await presetWith(() => undefined, 3);
    assert.deepEqual(await hidden(sharded), await hidden(SOURCE));
  });

  it("accepts the keras_nlp registered name", async () => {
    const dir = tempDir();
    copyFileSync(path.join(SOURCE, "model.weights.h5"), path.join(dir, "model.weights.h5"));
    const config = JSON.parse(readFileSync(path.join(SOURCE, "config.json"), "utf8"));
    config.registered_name = "keras_nlp>FalconBackbone";
    config.module = "keras_nlp.src.models.falcon.falcon_backbone";
    writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
    assert.deepEqual(await hidden(dir), await hidden(SOURCE));
  });

  it("resolves a built-in preset name through FALCON_NATIVE_PRESETS, and says where to put it when absent", async () => {
    const saved = process.env["FALCON_NATIVE_PRESETS"];
    const root = tempDir();
    try {
      process.env["FALCON_NATIVE_PRESETS"] = root;
      await assert.rejects(FalconBackbone.fromPreset("falcon_refinedweb_1b_en"), (error: Error) => {
        assert.ok(error instanceof FalconPresetError);
        assert.match(error.message, new RegExp(`${root}/falcon_refinedweb_1b_en`));
        assert.match(error.message, /FALCON_NATIVE_PRESETS/);
        return true;
      });
      mkdirSync(root, { recursive: true });
      symlinkSync(SOURCE, path.join(root, "falcon_refinedweb_1b_en"));
      assert.deepEqual(await hidden("falcon_refinedweb_1b_en"), await hidden(SOURCE));
      assert.equal(FalconBackbone.presets.falcon_refinedweb_1b_en.metadata.params, 1311625216);
    } finally {
      if (saved === undefined) delete process.env["FALCON_NATIVE_PRESETS"];
      else process.env["FALCON_NATIVE_PRESETS"] = saved;
    }
  });

  it("options that are not an object are a FalconInputError, not a TypeError", async () => {
    for (const load of [() => FalconBackbone.fromPreset(SOURCE, null as never), () => FalconCausalLM.fromPreset(SOURCE, null as never)]) {
      await assert.rejects(load(), (error: Error) => error instanceof FalconInputError && /fromPreset options must be an object/.test(error.message));
    }
  });

  it("builds a random model with loadWeights: false and casts with dtype", async () => {
    const random = await FalconBackbone.fromPreset(SOURCE, { loadWeights: false });
    assert.equal(random.getConfig().hiddenDim, 32);
    random.dispose();
    const half = await FalconBackbone.fromPreset(SOURCE, { dtype: "float16" });
    assert.equal(half.info().dtype, "float16");
    half.dispose();
  });
});
