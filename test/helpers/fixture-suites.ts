/**
 * The keras-hub and Hugging Face fixture suites, registered for one set of load options so the same
 * cases, at the same tolerances, run on every backend: test/keras-fixtures.test.ts and
 * test/hf-fixtures.test.ts call them with the defaults (CPU), test/cuda-fixtures.test.ts on the CUDA backend.
 *
 * keras: every case, every run, every dtype variant: backbone outputs and tied-head logits at valid
 * positions, and incremental decoding through the KV cache against full_logits.
 * HF: forward runs (right/left padding, attention_mask null, explicit position_ids) against float32 and
 * exact-table float64 references, decode traces step by step, greedy generate records, and the
 * base-model, sharded, bf16 and f16 checkpoints.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, type FalconDType, type FromPresetOptions, type Tensor } from "../../src/index.js";
import { FIXTURES, compareRows, readJson, type Tolerance } from "./fixtures.js";
import { readNpy } from "./npy.js";

/** What a suite varies: the cases prescribe each model's dtype, so that is not among them. */
export type SuiteLoadOptions = Omit<FromPresetOptions, "dtype" | "loadWeights">;

export interface FixtureSuiteOptions {
  /** Options every model of the suite is loaded with (none: the defaults, as users get them). */
  load?: SuiteLoadOptions;
  /** Prefixed to each case's describe name, so runs on different backends are told apart in a report. */
  label?: string;
  /**
   * A test added to each case, run on every model that case loads (e.g. which backend runs it);
   * `model` names the checkpoint and dtype in assertion messages.
   */
  modelCheck?: { name: string; check(backbone: FalconBackbone, model: string): void };
}

const suiteName = (options: FixtureSuiteOptions, name: string) => (options.label ? `${options.label} ${name}` : name);

interface KerasCase {
  case: string;
  dir: string;
  dtype_policy: string;
}
interface KerasBackboneRun {
  name: string;
  token_ids: string;
  padding_mask: string;
  sequence_output: string;
  lm_logits: string;
}
interface KerasKvRun {
  name: string;
  batch: number;
  max_length: number;
  prompt_len: number;
  files: Record<string, { file: string; shape: number[] }>;
}
interface KerasCaseManifest {
  config: { hidden_dim: number; vocabulary_size: number; num_layers: number; num_attention_heads: number; intermediate_dim: number; layer_norm_epsilon: number };
  backbone_runs: KerasBackboneRun[];
  kv_cache_runs: KerasKvRun[];
  compute_dtype: string;
  tolerance_hint: { sequence_output: Tolerance; lm_logits: Tolerance };
}

const KERAS = path.join(FIXTURES, "keras");

function ids(file: string): { data: Int32Array; shape: [number, number] } {
  const array = readNpy(file);
  return { data: Int32Array.from(array.data), shape: array.shape as [number, number] };
}

/** float64 is not a compute dtype here: those references are checked against float32 inference. */
function dtypeFor(policy: string): FalconDType {
  return (policy === "float64" ? "float32" : policy) as FalconDType;
}

/** Every keras-hub fixture case, each in its own describe, its model loaded with `options.load`. */
export function kerasFixtureSuite(options: FixtureSuiteOptions = {}): void {
  const cases = readJson<{ cases: KerasCase[] }>(path.join(KERAS, "manifest.json")).cases;
  for (const fixture of cases) {
    describe(suiteName(options, `keras ${fixture.case}`), () => {
      const dir = path.join(KERAS, fixture.dir);
      const manifest = readJson<KerasCaseManifest>(path.join(dir, "manifest.json"));
      const D = manifest.config.hidden_dim;
      const V = manifest.config.vocabulary_size;
      const dtype = dtypeFor(fixture.dtype_policy);
      const loading = FalconBackbone.fromPreset(path.join(dir, "preset"), { ...options.load, dtype });
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

      if (options.modelCheck) {
        const { name, check } = options.modelCheck;
        it(name, async () => check(await loading, `preset as ${dtype}`));
      }

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
            const slice = (from: number, to: number) =>
              Array.from({ length: B }, (_, b) => Array.from(full.data.subarray(b * L + from, b * L + to)));
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
}

interface HfReference { file: string; dtype: "float32" | "float64"; shape: number[] }
interface HfRun {
  name: string;
  input_ids: number[][];
  attention_mask: number[][] | null;
  position_ids: number[][] | null;
  outputs: { logits: Record<string, HfReference>; last_hidden_state?: Record<string, HfReference> };
}
interface HfStep { input_ids: number[][]; attention_mask: number[][]; position_ids: number[][] | null; past_length: number; logits: Record<string, HfReference> }
interface HfTrace {
  name: string;
  prompt_attention_mask: number[][];
  steps: HfStep[];
  full_forward: Record<string, HfReference> & { input_ids: number[][]; attention_mask: number[][] };
}
interface HfGenerate { prompt_ids: number[][]; attention_mask: number[][]; max_new_tokens: number; pad_token_id: number; eos_token_id: number; output_ids_f32: number[][] }
interface HfManifest {
  checkpoints: Record<string, unknown>;
  runs: HfRun[];
  runs_bf16?: HfRun[];
  runs_f16?: HfRun[];
  decode_traces: HfTrace[];
  generate: HfGenerate[];
  tolerance_hint: { f32: { rel: number }; bf16_native: { rel: number } };
}

const HF = path.join(FIXTURES, "hf");
export const HF_CASES = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln", "rotary_mha_sequential_bias"];

function reference(dir: string, ref: HfReference): Float64Array {
  const bytes = readFileSync(path.join(dir, ref.file));
  const view = ref.dtype === "float64"
    ? new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)
    : new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return Float64Array.from(view);
}

/** The manifests' metric: max |ours − ref| / max(1, max |ref|) over positions whose mask is 1. */
function relativeError(actual: Tensor, expected: Float64Array, mask: number[][] | null): number {
  const [, length, width] = actual.shape;
  let worst = 0;
  let scale = 1;
  for (let i = 0; i < expected.length; i++) {
    const row = Math.floor(i / width);
    if (mask && mask[Math.floor(row / length)][row % length] !== 1) continue;
    worst = Math.max(worst, Math.abs(actual.data[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return worst / scale;
}

function argmax(values: Float32Array, from: number, count: number): number {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[from + i] > values[from + best]) best = i;
  return best;
}

/** Every Hugging Face fixture case, each in its own describe, its checkpoints loaded with `options.load`. */
export function hfFixtureSuite(options: FixtureSuiteOptions = {}): void {
  for (const name of HF_CASES) {
    describe(suiteName(options, `hf ${name}`), () => {
      const dir = path.join(HF, name);
      const manifest = readJson<HfManifest>(path.join(dir, "manifest.json"));
      const tolerance = manifest.tolerance_hint.f32.rel;
      const models = new Map<string, Promise<FalconCausalLM>>();
      /** The checkpoint's model in `dtype` (undefined: the checkpoint's own), loaded once per case. */
      const model = (checkpoint = "checkpoint", dtype?: FalconDType) => {
        const key = dtype === undefined ? checkpoint : `${checkpoint}:${dtype}`;
        if (!models.has(key)) models.set(key, FalconCausalLM.fromPreset(path.join(dir, checkpoint), { ...options.load, ...(dtype && { dtype }) }));
        return models.get(key)!;
      };
      after(async () => {
        for (const loading of models.values()) (await loading).dispose();
      });

      const forward = (lm: FalconCausalLM, run: HfRun) =>
        lm.call({ tokenIds: run.input_ids, paddingMask: run.attention_mask ?? undefined, positionIds: run.position_ids ?? undefined });

      for (const run of manifest.runs) {
        it(`run ${run.name}: logits against float32 and exact-table float64 references`, async () => {
          const lm = await model();
          const logits = await forward(lm, run);
          for (const kind of ["f32", "f64_exact_tables"]) {
            const error = relativeError(logits, reference(dir, run.outputs.logits[kind]), run.attention_mask);
            assert.ok(error <= tolerance, `${kind}: error ${error} > ${tolerance}`);
          }
          const hidden = await lm.backbone.call({ tokenIds: run.input_ids, paddingMask: run.attention_mask ?? undefined, positionIds: run.position_ids ?? undefined });
          const hiddenError = relativeError(hidden, reference(dir, run.outputs.last_hidden_state!["f32"]), run.attention_mask);
          assert.ok(hiddenError <= tolerance, `last_hidden_state: error ${hiddenError}`);
        });
      }

      for (const trace of manifest.decode_traces) {
        it(`decode trace ${trace.name}: every cached step equals the reference and the full forward pass`, async () => {
          const lm = await model();
          const full = trace.full_forward;
          const [B, L] = [full.input_ids.length, full.input_ids[0].length];
          const fullLogits = reference(dir, full["f32"]);
          const V = full["f32"].shape[2];
          const cache = lm.createCache({ batchSize: B, maxLength: L });
          try {
            for (const [s, step] of trace.steps.entries()) {
              // Step 0 is the prompt with its padding mask; later steps are one real token per row.
              const mask = s === 0 ? step.attention_mask : undefined;
              const logits = await lm.callWithCache({ tokenIds: step.input_ids, paddingMask: mask }, cache, step.past_length);
              const stepMask = s === 0 ? step.attention_mask : null;
              const error = relativeError(logits, reference(dir, step.logits["f32"]), stepMask);
              assert.ok(error <= tolerance, `step ${s}: error ${error}`);
              const T = step.input_ids[0].length;
              const want = new Float64Array(B * T * V);
              for (let b = 0; b < B; b++) want.set(fullLogits.subarray((b * L + step.past_length) * V, (b * L + step.past_length + T) * V), b * T * V);
              const fullError = relativeError(logits, want, stepMask);
              assert.ok(fullError <= tolerance, `step ${s} against full_forward: error ${fullError}`);
            }
          } finally {
            cache.dispose();
          }
        });
      }

      for (const [g, record] of manifest.generate.entries()) {
        it(`greedy generate record ${g}: argmax of our logits reproduces the tokens`, async () => {
          const lm = await model();
          const B = record.prompt_ids.length;
          const P = record.prompt_ids[0].length;
          const cache = lm.createCache({ batchSize: B, maxLength: P + record.max_new_tokens });
          const output = record.prompt_ids.map((row) => [...row]);
          const finished = new Array<boolean>(B).fill(false);
          try {
            let logits = await lm.callWithCache({ tokenIds: record.prompt_ids, paddingMask: record.attention_mask }, cache, 0);
            for (let step = 0; step < record.max_new_tokens; step++) {
              // The next token comes from the last position of whatever the model just processed.
              const [, length, V] = logits.shape;
              const next = output.map((_, b) => {
                const token = finished[b] ? record.pad_token_id : argmax(logits.data, (b * length + length - 1) * V, V);
                if (token === record.eos_token_id) finished[b] = true;
                return token;
              });
              next.forEach((token, b) => output[b].push(token));
              if (step + 1 < record.max_new_tokens) logits = await lm.callWithCache(next.map((token) => [token]), cache, P + step);
            }
          } finally {
            cache.dispose();
          }
          assert.deepEqual(output, record.output_ids_f32);
        });
      }

      // bf16 models multiply in bf16 (activations rounded, float32 accumulation), like transformers' own bf16 run;
      // widened to float32 they must match the float32 computation on the same rounded weights.
      const variants: [string, HfRun[] | undefined, FalconDType, string, number][] = [
        ["checkpoint_bf16", manifest.runs_bf16, "bfloat16", "bf16_native", manifest.tolerance_hint.bf16_native.rel],
        ["checkpoint_bf16", manifest.runs_bf16, "float32", "f32", tolerance],
        ["checkpoint_f16", manifest.runs_f16, "float16", "f32", tolerance],
      ];
      for (const [checkpoint, runs, dtype, referenceKind, limit] of variants) {
        for (const run of runs ?? []) {
          it(`${checkpoint} as ${dtype}, run ${run.name}: matches the ${referenceKind} reference`, async () => {
            const lm = await model(checkpoint, dtype);
            assert.equal(lm.backbone.info().dtype, dtype);
            const error = relativeError(await forward(lm, run), reference(dir, run.outputs.logits[referenceKind]), run.attention_mask);
            assert.ok(error <= limit, `error ${error} > ${limit}`);
          });
        }
      }

      const otherCheckpoints = ["checkpoint_sharded", "checkpoint_basemodel"].filter((c) => c in manifest.checkpoints);
      for (const checkpoint of otherCheckpoints) {
        it(`${checkpoint}: every run's hidden states match the reference, bit for bit those of the single-file checkpoint`, async () => {
          const [single, other] = await Promise.all([model(), model(checkpoint)]);
          for (const run of manifest.runs) {
            const inputs = { tokenIds: run.input_ids, paddingMask: run.attention_mask ?? undefined, positionIds: run.position_ids ?? undefined };
            const hidden = await other.backbone.call(inputs);
            const error = relativeError(hidden, reference(dir, run.outputs.last_hidden_state!["f32"]), run.attention_mask);
            assert.ok(error <= tolerance, `run ${run.name}: last_hidden_state error ${error}`);
            assert.deepEqual(hidden.data, (await single.backbone.call(inputs)).data, `run ${run.name}: same weights, same bits`);
          }
        });
      }

      if (options.modelCheck) {
        const { name: checkName, check } = options.modelCheck;
        // Every model the cases above load: the checkpoint itself, the dtype variants that have runs, the other layouts.
        const loaded: [string, FalconDType | undefined][] = [
          ["checkpoint", undefined],
          ...variants.filter(([, runs]) => runs?.length).map(([checkpoint, , dtype]): [string, FalconDType] => [checkpoint, dtype]),
          ...otherCheckpoints.map((checkpoint): [string, undefined] => [checkpoint, undefined]),
        ];
        it(checkName, async () => {
          for (const [checkpoint, dtype] of loaded) check((await model(checkpoint, dtype)).backbone, dtype ? `${checkpoint} as ${dtype}` : checkpoint);
        });
      }
    });
  }
}
