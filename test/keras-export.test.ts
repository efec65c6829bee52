/**
 * Saving keras-hub presets: an exported preset reloads bit-identically in every dtype, and its files
 * match what keras itself wrote (the fixtures' model.weights.h5, config.json and metadata.json, and
 * the reference tree in keras-weights-h5-layout.txt).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import h5wasm from "h5wasm/node";

import { FalconBackbone, FalconPresetError, type BackboneInputs, type FalconDType } from "../src/index.js";
import type { NativeModel } from "../src/native.js";
import { Hdf5Reader } from "../src/presets/hdf5.js";
import { writeKerasPreset } from "../src/presets/keras-export.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";

interface KerasCase {
  case: string;
  dir: string;
  dtype_policy: string;
}

const KERAS = path.join(FIXTURES, "keras");
const LAYOUT = path.join(FIXTURES, "..", "docs", "keras-weights-h5-layout.txt");
// float64 variables have no counterpart here (float64 presets load as float32), so those files cannot match.
const cases = readJson<{ cases: KerasCase[] }>(path.join(KERAS, "manifest.json")).cases.filter((c) => c.dtype_policy !== "float64");
const presetOf = (fixture: KerasCase) => path.join(KERAS, fixture.dir, "preset");

const INPUTS: BackboneInputs[] = [
  { tokenIds: [[1, 7, 42, 99, 3, 100, 0, 55]] },
  { tokenIds: [[5, 6, 7, 8, 9], [10, 20, 30, 0, 0]], paddingMask: [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]] },
];

const root = mkdtempSync(path.join(os.tmpdir(), "falcon-keras-export-"));
after(() => rmSync(root, { recursive: true, force: true }));

async function exportPreset(backbone: FalconBackbone, name: string): Promise<string> {
  const directory = path.join(root, name);
  await writeKerasPreset(directory, backbone.getConfig(), await backbone.nativeModel());
  return directory;
}

function sameBytes(actual: ArrayBufferView, expected: ArrayBufferView): boolean {
  return Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(
    Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength),
  );
}

/** An HDF5 file's tree in the notation of keras-weights-h5-layout.txt, one sorted line per object. */
async function describeTree(file: string): Promise<string[]> {
  await h5wasm.ready;
  const h5 = new h5wasm.File(file, "r");
  try {
    const lines = ["/ (root group)"];
    for (const name of h5.paths()) {
      const entity = h5.get(name);
      const absolute = name.startsWith("/") ? name : `/${name}`;
      if (!(entity instanceof h5wasm.Group || entity instanceof h5wasm.Dataset)) throw new Error(`${file}: unexpected object ${absolute}`);
      const attrs = Object.entries(entity.attrs).map(([key, attr]) => `'${key}': '${String(attr.value)}'`);
      const attrText = attrs.length > 0 ? `  attrs={${attrs.join(", ")}}` : "";
      if (entity instanceof h5wasm.Group) {
        lines.push(`${absolute}/  GROUP${attrText}`);
      } else {
        const { shape, type, size } = entity.metadata;
        const dims = shape!.join(", ") + (shape!.length === 1 ? "," : "");
        const dtype = type === 1 ? `float${size * 8}` : type === 5 ? `|V${size}` : `class${type}`;
        lines.push(`${absolute}  DATASET shape=(${dims}) dtype=${dtype}${attrText}`);
      }
    }
    return lines.sort();
  } finally {
    h5.close();
  }
}

/** The reference trees of keras-weights-h5-layout.txt by case name. */
function referenceTrees(): Map<string, string[]> {
  const trees = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of readFileSync(LAYOUT, "utf8").split("\n")) {
    const start = /^# case (\S+)/.exec(line);
    if (start) trees.set(start[1], (current = []));
    // The "dataset -> keras variable" listing after each tree repeats dataset paths with arrows.
    else if (line.startsWith("/") && !line.includes("->")) current.push(line.trimEnd());
  }
  for (const lines of trees.values()) lines.sort();
  return trees;
}

describe("writeKerasPreset round trip", () => {
  for (const fixture of cases.filter((c) => c.dtype_policy === "float32")) {
    for (const dtype of ["float32", "bfloat16", "float16", "mixed_bfloat16"] as FalconDType[]) {
      it(`${fixture.case} as ${dtype} reloads with identical weights and outputs`, async () => {
        const original = await FalconBackbone.fromPreset(presetOf(fixture), { dtype });
        const reloaded = await FalconBackbone.fromPreset(await exportPreset(original, `${fixture.case}-${dtype}`), { dtype });
        try {
          const [before, afterReload] = [await original.nativeModel(), await reloaded.nativeModel()];
          for (const name of before.weightNames()) {
            assert.ok(sameBytes((await afterReload.getWeight(name)).data, (await before.getWeight(name)).data), `weight ${name}`);
          }
          for (const inputs of INPUTS) {
            const [expected, actual] = [await original.call(inputs), await reloaded.call(inputs)];
            assert.ok(sameBytes(actual.data, expected.data), `hidden states for ${JSON.stringify(inputs.tokenIds)}`);
            const [expectedLogits, actualLogits] = [await original.tokenEmbedding.reverse(expected), await reloaded.tokenEmbedding.reverse(actual)];
            assert.ok(sameBytes(actualLogits.data, expectedLogits.data), `logits for ${JSON.stringify(inputs.tokenIds)}`);
          }
        } finally {
          original.dispose();
          reloaded.dispose();
        }
      });
    }
  }
});

describe("writeKerasPreset writes what keras writes", () => {
  const references = referenceTrees();

  it("the layout reference describes the keras-written fixtures", async () => {
    assert.ok(references.size >= 2, "keras-weights-h5-layout.txt should hold several cases");
    for (const [name, tree] of references) {
      assert.deepEqual(await describeTree(path.join(KERAS, name, "preset", "model.weights.h5")), tree, name);
    }
  });

  for (const fixture of cases) {
    it(`${fixture.case}: HDF5 tree, values, config.json and metadata.json`, async () => {
      const source = presetOf(fixture);
      const backbone = await FalconBackbone.fromPreset(source, { dtype: fixture.dtype_policy as FalconDType });
      let directory: string;
      try {
        directory = await exportPreset(backbone, `keras-${fixture.case}`);
      } finally {
        backbone.dispose();
      }
      const written = path.join(directory, "model.weights.h5");
      const kerasWritten = path.join(source, "model.weights.h5");
      const tree = await describeTree(written);
      assert.deepEqual(tree, await describeTree(kerasWritten));
      const reference = references.get(fixture.case);
      if (reference) assert.deepEqual(tree, reference);

      // keras' mixed-policy variables are unrounded float32; ours hold the compute dtype's values.
      if (!fixture.dtype_policy.startsWith("mixed_")) {
        const [ours, theirs] = [await Hdf5Reader.open(written), await Hdf5Reader.open(kerasWritten)];
        try {
          for (const dataset of await theirs.datasetPaths()) {
            const [ourInfo, theirInfo] = [(await ours.dataset(dataset))!, (await theirs.dataset(dataset))!];
            assert.ok(sameBytes(await ours.readRaw(dataset, ourInfo), await theirs.readRaw(dataset, theirInfo)), `values of /${dataset}`);
          }
        } finally {
          ours.close();
          theirs.close();
        }
      }

      assert.equal(readFileSync(path.join(directory, "config.json"), "utf8"), readFileSync(path.join(source, "config.json"), "utf8"));
      const metadata = readJson(path.join(directory, "metadata.json"));
      const kerasMetadata = readJson(path.join(source, "metadata.json"));
      assert.deepEqual(Object.keys(metadata), Object.keys(kerasMetadata));
      assert.deepEqual({ ...metadata, date_saved: undefined }, { ...kerasMetadata, date_saved: undefined });
      assert.match(metadata.date_saved, /^\d{4}-\d{2}-\d{2}@\d{2}:\d{2}:\d{2}$/);
    });
  }
});

describe("writeKerasPreset refusals", () => {
  const float32Preset = presetOf(cases.find((c) => c.dtype_policy === "float32")!);

  it("refuses a non-empty directory unless overwrite is set", async () => {
    const backbone = await FalconBackbone.fromPreset(float32Preset);
    try {
      const directory = path.join(root, "non-empty");
      await exportPreset(backbone, "non-empty");
      writeFileSync(path.join(directory, "notes.txt"), "keep");
      await assert.rejects(
        writeKerasPreset(directory, backbone.getConfig(), await backbone.nativeModel()),
        (error: Error) => error instanceof FalconPresetError && /not empty/.test(error.message),
      );
      await writeKerasPreset(directory, backbone.getConfig(), await backbone.nativeModel(), { overwrite: true });
      (await FalconBackbone.fromPreset(directory)).dispose();
      assert.equal(readFileSync(path.join(directory, "notes.txt"), "utf8"), "keep");
    } finally {
      backbone.dispose();
    }
  });

  it("refuses rotary and grouped-query configs, naming what keras-hub cannot express", async () => {
    const backbone = new FalconBackbone({
      vocabularySize: 32, numLayers: 1, numAttentionHeads: 4, hiddenDim: 16, intermediateDim: 64,
      positionEncoding: "rotary", numKeyValueHeads: 1,
    });
    try {
      const directory = path.join(root, "rotary");
      await assert.rejects(
        writeKerasPreset(directory, backbone.getConfig(), await backbone.nativeModel()),
        (error: Error) =>
          error instanceof FalconPresetError && /rotary position encoding/.test(error.message) && /grouped or multi-query/.test(error.message),
      );
      assert.equal(existsSync(directory), false, "nothing is written for a refused config");
    } finally {
      backbone.dispose();
    }
  });

  it("leaves no model.weights.h5 (or temporary file) when writing fails part way", async () => {
    const backbone = await FalconBackbone.fromPreset(float32Preset);
    try {
      const model = await backbone.nativeModel();
      const failing = {
        getWeight: async (name: string) => {
          if (name === "layers.1.ffn_up.weight") throw new Error("simulated read failure");
          return model.getWeight(name);
        },
      } as unknown as NativeModel;
      const directory = path.join(root, "failed");
      await assert.rejects(writeKerasPreset(directory, backbone.getConfig(), failing), /simulated read failure/);
      assert.deepEqual(readdirSync(directory), []);
    } finally {
      backbone.dispose();
    }
  });
});
