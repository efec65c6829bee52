/**
 * Every keras-hub fixture case, every run, every dtype variant: backbone outputs and tied-head
 * logits at valid positions, and incremental decoding through the KV cache against full_logits.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, type FalconDType } from "../src/index.js";
import { FIXTURES, compareRows, readJson, type Tolerance } from "./helpers/fixtures.js";
import { readNpy } from "./helpers/npy.js";

interface KerasCase {
  case: string;
  dir: string;
  dtype_policy: string;
}
interface BackboneRun {
  name: string;
  token_ids: string;
  padding_mask: string;
  sequence_output: string;
  lm_logits: string;
}
interface KvRun {
  name: string;
  batch: number;
  max_length: number;
  prompt_len: number;
  files: Record<string, { file: string; shape: number[] }>;
}
interface CaseManifest {
  config: { hidden_dim: number; vocabulary_size: number; num_layers: number; num_attention_heads: number; intermediate_dim: number; layer_norm_epsilon: number };
  backbone_runs: BackboneRun[];
  kv_cache_runs: KvRun[];
  compute_dtype: string;
  tolerance_hint: { sequence_output: Tolerance; lm_logits: Tolerance };
}

const KERAS = path.join(FIXTURES, "keras");
const cases = readJson<{ cases: KerasCase[] }>(path.join(KERAS, "manifest.json")).cases;

function ids(file: string): { data: Int32Array; shape: [number, number] } {
  const array = readNpy(file);
  return { data: Int32Array.from(array.data), shape: array.shape as [number, number] };
}

/** float64 is not a compute dtype here: those references are checked against float32 inference. */
function dtypeFor(policy: string): FalconDType {
  return (policy === "float64" ? "float32" : policy) as FalconDType;
}

for (const fixture of cases) {
  describe(`keras ${fixture.case}`, () => {
    const dir = path.join(KERAS, fixture.dir);
    const manifest = readJson<CaseManifest>(path.join(dir, "manifest.json"));
    const D = manifest.config.hidden_dim;
    const V = manifest.config.vocabulary_size;
    const loading = FalconBackbone.fromPreset(path.join(dir, "preset"), { dtype: dtypeFor(fixture.dtype_policy) });
    after(async () => (await loading).dispose());

    it("reports the preset's configuration, as the manifest records it", async () => {
      const model = await loading;
      const config = model.getConfig();
      const expected = manifest.config;
      assert.deepEqual(
        [config.vocabularySize, config.numLayers, config.numAttentionHeads, config.hiddenDim, config.intermediateDim, config.layerNormEpsilon],
        [expected.vocabulary_size, expected.num_layers, expected.num_attention_heads, expected.hidden_dim, expected.intermediate_dim, expected.layer_norm_epsilon]);
      assert.deepEqual([config.positionEncoding, config.blockLayout, config.useBias, config.tieWordEmbeddings], ["alibi", "sequential", true, true],
        "a keras-hub FalconBackbone is falcon-rw: ALiBi, sequential blocks, biases, tied head");
      assert.equal(model.tokenEmbedding.vocabularySize, V);
      // Weights are held in the policy's compute dtype (float64 runs as float32).
      assert.equal(model.info().dtype, dtypeFor(manifest.compute_dtype));
    });

    for (const run of manifest.backbone_runs) {
      it(`backbone run ${run.name}`, async () => {
        const model = await loading;
        const tokenIds = ids(path.join(dir, run.token_ids));
        const mask = readNpy(path.join(dir, run.padding_mask));
        const hidden = await model.call({ tokenIds, paddingMask: { data: Uint8Array.from(mask.data), shape: tokenIds.shape } });
        assert.deepEqual(hidden.shape, [...tokenIds.shape, D]);
        const valid = (row: number) => mask.data[row] === 1;
        const outputError = compareRows(hidden.data, readNpy(path.join(dir, run.sequence_output)).data, D,
          manifest.tolerance_hint.sequence_output, valid);
        assert.equal(outputError, undefined, `sequence_output: ${outputError}`);
        const logits = await model.tokenEmbedding.reverse(hidden);
        assert.deepEqual(logits.shape, [...tokenIds.shape, V]);
        const logitsError = compareRows(logits.data, readNpy(path.join(dir, run.lm_logits)).data, V,
          manifest.tolerance_hint.lm_logits, valid);
        assert.equal(logitsError, undefined, `lm_logits: ${logitsError}`);
      });
    }

    for (const run of manifest.kv_cache_runs) {
      it(`incremental decode ${run.name} equals the full forward pass`, async () => {
        const model = await loading;
        const full = ids(path.join(dir, run.files["full_token_ids"].file));
        const expected = readNpy(path.join(dir, run.files["full_logits"].file)).data;
        const [B, L] = full.shape;
        const cache = model.createCache({ batchSize: B, maxLength: run.max_length });
        try {
          const slice = (from: number, to: number) => {
            const rows = Array.from({ length: B }, (_, b) => Array.from(full.data.subarray(b * L + from, b * L + to)));
            return rows;
          };
          const steps: { from: number; to: number }[] = [{ from: 0, to: run.prompt_len }];
          for (let t = run.prompt_len; t < L; t++) steps.push({ from: t, to: t + 1 });
          for (const { from, to } of steps) {
            const hidden = await model.callWithCache(slice(from, to), cache, from);
            const logits = await model.tokenEmbedding.reverse(hidden);
            const want = new Float64Array(B * (to - from) * V);
            for (let b = 0; b < B; b++) {
              want.set(expected.subarray((b * L + from) * V, (b * L + to) * V), b * (to - from) * V);
            }
            const error = compareRows(logits.data, want, V, manifest.tolerance_hint.lm_logits);
            assert.equal(error, undefined, `positions [${from}, ${to}): ${error}`);
          }
        } finally {
          cache.dispose();
        }
      });
    }
  });
}
