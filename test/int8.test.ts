/**
 * int8 weights (per-output-row scales, float32 compute) against the float32 model on the fixtures: on
 * every run the fixture holds, the logits stay within 3 % of float32 and every valid position keeps its argmax.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconCausalLM, type Tensor } from "../src/index.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";
import { readNpy } from "./helpers/npy.js";

interface Run {
  name: string;
  tokenIds: number[][];
  paddingMask: number[][] | null;
}

const KERAS_PRESETS = ["falcon_h2_d32_l2", "falcon_h3_d24_l2", "falcon_h4_d64_l2"];
const HF_CHECKPOINTS = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln", "rotary_mha_sequential_bias"];

function npyRows(file: string): number[][] {
  const array = readNpy(file);
  const [B, L] = array.shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from(array.data.subarray(b * L, (b + 1) * L)));
}

/** Every token batch a keras fixture case runs: its backbone runs and its cached-decoding runs' full sequences. */
function kerasRuns(name: string): Run[] {
  const dir = path.join(FIXTURES, "keras", name);
  const manifest = readJson<{ backbone_runs: { name: string; token_ids: string; padding_mask: string }[]; kv_cache_runs: { name: string; files: Record<string, { file: string }> }[] }>(
    path.join(dir, "manifest.json"));
  return [
    ...manifest.backbone_runs.map((run) => ({ name: run.name, tokenIds: npyRows(path.join(dir, run.token_ids)), paddingMask: npyRows(path.join(dir, run.padding_mask)) })),
    ...manifest.kv_cache_runs.map((run) => ({ name: run.name, tokenIds: npyRows(path.join(dir, run.files["full_token_ids"]!.file)), paddingMask: null })),
  ];
}

/** Every token batch an HF fixture case runs: its forward runs and its decode traces' full sequences. */
function hfRuns(name: string): Run[] {
  const manifest = readJson<{ runs: { name: string; input_ids: number[][]; attention_mask: number[][] | null }[]; decode_traces: { name: string; full_forward: { input_ids: number[][]; attention_mask: number[][] } }[] }>(
    path.join(FIXTURES, "hf", name, "manifest.json"));
  return [
    ...manifest.runs.map((run) => ({ name: run.name, tokenIds: run.input_ids, paddingMask: run.attention_mask })),
    ...manifest.decode_traces.map((trace) => ({ name: trace.name, tokenIds: trace.full_forward.input_ids, paddingMask: trace.full_forward.attention_mask })),
  ];
}

function argmax(values: Float32Array, from: number, count: number): number {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[from + i]! > values[from + best]!) best = i;
  return best;
}

const presets: [string, string, Run[]][] = [
  ...KERAS_PRESETS.map((name): [string, string, Run[]] => [`keras/${name}`, path.join(FIXTURES, "keras", name, "preset"), kerasRuns(name)]),
  ...HF_CHECKPOINTS.map((name): [string, string, Run[]] => [`hf/${name}`, path.join(FIXTURES, "hf", name, "checkpoint"), hfRuns(name)]),
];

for (const [label, dir, runs] of presets) {
  describe(`${label}: int8 against float32`, () => {
    const models = Promise.all([FalconCausalLM.fromPreset(dir), FalconCausalLM.fromPreset(dir, { dtype: "int8" })]);
    after(async () => (await models).forEach((model) => model.dispose()));

    for (const run of runs) {
      it(`run ${run.name}: logits within 3 % of float32, the argmax kept at every valid position`, async () => {
        const [full, quantised] = await models;
        assert.equal(quantised.backbone.info().dtype, "int8");
        const inputs = { tokenIds: run.tokenIds, paddingMask: run.paddingMask ?? undefined };
        const [a, b]: Tensor[] = await Promise.all([full.call(inputs), quantised.call(inputs)]);
        const [B, L, V] = a.shape as [number, number, number];
        let worst = 0;
        let scale = 1;
        const flipped: string[] = [];
        let positions = 0;
        for (let row = 0; row < B; row++) {
          for (let t = 0; t < L; t++) {
            if (run.paddingMask && run.paddingMask[row]![t] !== 1) continue;
            positions++;
            const from = (row * L + t) * V;
            for (let v = 0; v < V; v++) {
              worst = Math.max(worst, Math.abs(a.data[from + v]! - b.data[from + v]!));
              scale = Math.max(scale, Math.abs(a.data[from + v]!));
            }
            const [bestA, bestB] = [argmax(a.data, from, V), argmax(b.data, from, V)];
            if (bestA !== bestB) {
              flipped.push(`row ${row} position ${t}: float32 ${bestA} (${a.data[from + bestA]}, int8 gives it ${b.data[from + bestA]}), ` +
                `int8 ${bestB} (${b.data[from + bestB]}, float32 gives it ${a.data[from + bestB]})`);
            }
          }
        }
        assert.ok(positions > 0);
        const problems = [
          ...(worst / scale < 0.03 ? [] : [`relative error ${worst / scale} ≥ 0.03`]),
          ...(flipped.length === 0 ? [] : [`argmax changed at ${flipped.length} of ${positions} positions`, ...flipped]),
        ];
        assert.deepEqual(problems, []);
      });
    }
  });
}
