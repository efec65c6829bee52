/**
 * Every Hugging Face fixture case: forward runs (right/left padding, attention_mask null, explicit
 * position_ids) against float32 and exact-table float64 references, decode traces step by step,
 * greedy generate records, and the base-model, sharded, bf16 and f16 checkpoints.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconCausalLM, type FalconDType, type Tensor } from "../src/index.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";

interface Reference { file: string; dtype: "float32" | "float64"; shape: number[] }
interface Run {
  name: string;
  input_ids: number[][];
  attention_mask: number[][] | null;
  position_ids: number[][] | null;
  outputs: { logits: Record<string, Reference>; last_hidden_state?: Record<string, Reference> };
}
interface Step { input_ids: number[][]; attention_mask: number[][]; position_ids: number[][] | null; past_length: number; logits: Record<string, Reference> }
interface Trace {
  name: string;
  prompt_attention_mask: number[][];
  steps: Step[];
  full_forward: Record<string, Reference> & { input_ids: number[][]; attention_mask: number[][] };
}
interface Generate { prompt_ids: number[][]; attention_mask: number[][]; max_new_tokens: number; pad_token_id: number; eos_token_id: number; output_ids_f32: number[][] }
interface Manifest {
  checkpoints: Record<string, unknown>;
  runs: Run[];
  runs_bf16?: Run[];
  runs_f16?: Run[];
  decode_traces: Trace[];
  generate: Generate[];
  tolerance_hint: { f32: { rel: number }; bf16_native: { rel: number } };
}

const HF = path.join(FIXTURES, "hf");
const CASES = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln", "rotary_mha_sequential_bias"];

function reference(dir: string, ref: Reference): Float64Array {
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

for (const name of CASES) {
  describe(`hf ${name}`, () => {
    const dir = path.join(HF, name);
    const manifest = readJson<Manifest>(path.join(dir, "manifest.json"));
    const tolerance = manifest.tolerance_hint.f32.rel;
    const models = new Map<string, Promise<FalconCausalLM>>();
    const model = (checkpoint = "checkpoint") => {
      if (!models.has(checkpoint)) models.set(checkpoint, FalconCausalLM.fromPreset(path.join(dir, checkpoint)));
      return models.get(checkpoint)!;
    };
    after(async () => {
      for (const loading of models.values()) (await loading).dispose();
    });

    const forward = (lm: FalconCausalLM, run: Run) =>
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
    const variants: [string, Run[] | undefined, FalconDType, string, number][] = [
      ["checkpoint_bf16", manifest.runs_bf16, "bfloat16", "bf16_native", manifest.tolerance_hint.bf16_native.rel],
      ["checkpoint_bf16", manifest.runs_bf16, "float32", "f32", tolerance],
      ["checkpoint_f16", manifest.runs_f16, "float16", "f32", tolerance],
    ];
    for (const [checkpoint, runs, dtype, referenceKind, limit] of variants) {
      for (const run of runs ?? []) {
        it(`${checkpoint} as ${dtype}, run ${run.name}: matches the ${referenceKind} reference`, async () => {
          const key = `${checkpoint}:${dtype}`;
          if (!models.has(key)) models.set(key, FalconCausalLM.fromPreset(path.join(dir, checkpoint), { dtype }));
          const lm = await models.get(key)!;
          assert.equal(lm.backbone.info().dtype, dtype);
          const error = relativeError(await forward(lm, run), reference(dir, run.outputs.logits[referenceKind]), run.attention_mask);
          assert.ok(error <= limit, `error ${error} > ${limit}`);
        });
      }
    }

    for (const checkpoint of ["checkpoint_sharded", "checkpoint_basemodel"].filter((c) => c in manifest.checkpoints)) {
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
  });
}
