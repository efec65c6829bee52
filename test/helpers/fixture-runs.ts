/** The token batches the fixture cases run, read from their manifests. */
import path from "node:path";

import { FIXTURES, readJson } from "./fixtures.js";
import { readNpy } from "./npy.js";

export interface FixtureRun {
  name: string;
  tokenIds: number[][];
  /** null: every position is real. */
  paddingMask: number[][] | null;
}

function npyRows(file: string): number[][] {
  const array = readNpy(file);
  const [B, L] = array.shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from(array.data.subarray(b * L, (b + 1) * L)));
}

/** Every token batch a keras fixture case runs: its backbone runs and its cached-decoding runs' full sequences. */
export function kerasRuns(name: string): FixtureRun[] {
  const dir = path.join(FIXTURES, "keras", name);
  const manifest = readJson<{ backbone_runs: { name: string; token_ids: string; padding_mask: string }[]; kv_cache_runs: { name: string; files: Record<string, { file: string }> }[] }>(
    path.join(dir, "manifest.json"));
  return [
    ...manifest.backbone_runs.map((run) => ({ name: run.name, tokenIds: npyRows(path.join(dir, run.token_ids)), paddingMask: npyRows(path.join(dir, run.padding_mask)) })),
    ...manifest.kv_cache_runs.map((run) => ({ name: run.name, tokenIds: npyRows(path.join(dir, run.files["full_token_ids"]!.file)), paddingMask: null })),
  ];
}

/** Every token batch an HF fixture case runs: its forward runs and its decode traces' full sequences. */
export function hfRuns(name: string): FixtureRun[] {
  const manifest = readJson<{ runs: { name: string; input_ids: number[][]; attention_mask: number[][] | null }[]; decode_traces: { name: string; full_forward: { input_ids: number[][]; attention_mask: number[][] } }[] }>(
    path.join(FIXTURES, "hf", name, "manifest.json"));
  return [
    ...manifest.runs.map((run) => ({ name: run.name, tokenIds: run.input_ids, paddingMask: run.attention_mask })),
    ...manifest.decode_traces.map((trace) => ({ name: trace.name, tokenIds: trace.full_forward.input_ids, paddingMask: trace.full_forward.attention_mask })),
  ];
}

/** Whether row b, position t of `run` holds a real token. */
export function isReal(run: FixtureRun, b: number, t: number): boolean {
  return run.paddingMask === null || run.paddingMask[b]![t] === 1;
}

/** The fixture models with float32 weights, as [label, preset or checkpoint directory, runs]. */
export function float32FixtureModels(): [string, string, FixtureRun[]][] {
  const keras = ["falcon_h2_d32_l2", "falcon_h3_d24_l2", "falcon_h4_d64_l2"];
  const hf = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln", "rotary_mha_sequential_bias"];
  return [
    ...keras.map((name): [string, string, FixtureRun[]] => [`keras/${name}`, path.join(FIXTURES, "keras", name, "preset"), kerasRuns(name)]),
    ...hf.map((name): [string, string, FixtureRun[]] => [`hf/${name}`, path.join(FIXTURES, "hf", name, "checkpoint"), hfRuns(name)]),
  ];
}
