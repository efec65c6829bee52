/**
 * generate() and stream(): the HF fixtures' greedy records and the argmax of every reference logits row
 * of the HF and keras fixtures, cached decoding against full forward passes, budgets and stop tokens, samplers through the model, abort, concurrency, and text in/out
 * with the GPT-2 tokenizer (UTF-8-safe streaming, padded vocabulary rows never sampled).
 */
import assert from "node:assert/strict";
import path from "node:path";
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";

import {
  FalconBackbone,
  FalconCausalLM,
  FalconConfigError,
  FalconDisposedError,
  FalconInputError,
  FalconPresetError,
  type FalconKvCache,
  type GenerateOptions,
} from "../src/index.js";
import { FIXTURES, readJson, type Tolerance } from "./helpers/fixtures.js";
import { byPromptLength, greedySteps, readReferenceBin, type GreedyStep, type ReferenceLogits } from "./helpers/greedy-reference.js";
import { END_OF_TEXT_ID, makeTempDir } from "./helpers/gpt2-vocab.js";
import { readNpy } from "./helpers/npy.js";
import { referenceDoubles } from "./helpers/xoshiro-reference.js";
import { CYCLE_TEXT, MODEL_VOCABULARY, TOKENIZER_VOCABULARY, writeCycleCheckpoint, writeKerasTokenizer } from "./helpers/text-model.js";

interface GenerateRecord {
  prompt_ids: number[][];
  attention_mask: number[][];
  max_new_tokens: number;
  pad_token_id: number;
  eos_token_id: number;
  output_ids_f32: number[][];
}

interface HfReference { file: string; dtype: "float32" | "float64"; shape: number[] }
interface HfManifest {
  runs: { name: string; input_ids: number[][]; attention_mask: number[][] | null; position_ids: number[][] | null; outputs: { logits: Record<string, HfReference> } }[];
  decode_traces: { name: string; full_forward: Record<string, HfReference> & { input_ids: number[][]; attention_mask: number[][] } }[];
  generate: GenerateRecord[];
  tolerance_hint: { f32: { rel: number } };
}

const HF = path.join(FIXTURES, "hf");
/** Every HF fixture case (`_primitives` holds tables, not a model). */
const CASES = readdirSync(HF).filter((name) => !name.startsWith("_")).sort();
const hfManifest = (name: string) => readJson<HfManifest>(path.join(HF, name, "manifest.json"));
const records = (name: string) => hfManifest(name).generate;

const models = new Map<string, Promise<FalconCausalLM>>();
const fixtureModel = (name: string) => {
  if (!models.has(name)) models.set(name, FalconCausalLM.fromPreset(path.join(HF, name, "checkpoint")));
  return models.get(name)!;
};
after(async () => {
  for (const loading of models.values()) (await loading).dispose();
});

/** Our ragged rows written the way HF returns them: left pads, then pad_token_id after a row's eos. */
function hfLayout(record: GenerateRecord, rows: Int32Array[]): number[][] {
  return rows.map((row, b) => {
    const pads = record.attention_mask[b]!.filter((flag) => flag === 0).length;
    const out = [...new Array<number>(pads).fill(record.pad_token_id), ...row];
    while (out.length < record.output_ids_f32[b]!.length) out.push(record.pad_token_id);
    return out;
  });
}

/** Records the caches a model creates, to check their size and that they are freed. */
function spyOnCaches(lm: FalconCausalLM): FalconKvCache[] {
  const caches: FalconKvCache[] = [];
  const create = lm.createCache.bind(lm);
  lm.createCache = (options) => {
    const cache = create(options);
    caches.push(cache);
    return cache;
  };
  return caches;
}

function isAbortError(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

describe("greedy generate reproduces the HF fixtures' generate records", () => {
  for (const name of CASES) {
    it(`${name}: left-padded prompts with their mask, and the same prompts unpadded`, async () => {
      const lm = await fixtureModel(name);
      assert.equal(lm.preprocessor.endTokenId, 11, "eos from generation_config.json");
      for (const record of records(name)) {
        const options = { maxNewTokens: record.max_new_tokens };
        const leftPadded = await lm.generate({ tokenIds: record.prompt_ids, paddingMask: record.attention_mask }, options);
        assert.deepEqual(hfLayout(record, leftPadded), record.output_ids_f32);
        // Right-padded by the preprocessor instead: each row keeps its own positions.
        const ragged = record.prompt_ids.map((row, b) => row.filter((_, c) => record.attention_mask[b]![c] === 1));
        const fromRagged = await lm.generate(ragged, { ...options, stopTokenIds: [record.eos_token_id], sampler: "greedy" });
        assert.deepEqual(fromRagged.map((row) => Array.from(row)), leftPadded.map((row) => Array.from(row)));
        // One row at a time gives the same tokens as the batch.
        for (const [b, prompt] of ragged.entries()) {
          assert.deepEqual(Array.from(await lm.generate(prompt, options)), Array.from(leftPadded[b]!));
        }
      }
    });
  }
});

/**
 * Each reference logits row of a fixture fixes greedy's next token after that row's prefix. One generate
 * call per prompt length, one new token; at least 90 % of the steps must be decided by the reference
 * (best logit ahead of every other by more than the tolerance), so the check cannot pass by ambiguity.
 */
async function assertGreedyFollows(lm: FalconCausalLM, steps: GreedyStep[]): Promise<void> {
  let decided = 0;
  for (const group of byPromptLength(steps)) {
    const out = await lm.generate({ tokenIds: group.map((step) => step.tokenIds), paddingMask: group.map((step) => step.paddingMask) },
      { maxNewTokens: 1, stopTokenIds: null });
    for (const [i, step] of group.entries()) {
      const picked = out[i]![out[i]!.length - 1]!;
      assert.ok(step.candidates.includes(picked), `${step.where}: greedy picked ${picked}, the reference's argmax is ${step.next} (within tolerance: ${step.candidates})`);
      if (step.candidates.length === 1) decided++;
    }
  }
  assert.ok(steps.length > 0 && decided >= 0.9 * steps.length, `the reference decides ${decided} of ${steps.length} steps`);
}

interface KerasManifest {
  config: { vocabulary_size: number };
  backbone_runs: { name: string; token_ids: string; padding_mask: string; lm_logits: string }[];
  kv_cache_runs: { name: string; files: Record<string, { file: string }> }[];
  tolerance_hint: { lm_logits: Tolerance };
}
const KERAS = path.join(FIXTURES, "keras");
/** The float32 keras cases, and the float64 ones (float64 references, float32 inference). Lower-precision policies' logits cannot decide an argmax. */
const KERAS_CASES = readJson<{ cases: { dir: string; dtype_policy: string }[] }>(path.join(KERAS, "manifest.json")).cases
  .filter((fixture) => fixture.dtype_policy === "float32" || fixture.dtype_policy === "float64").map((fixture) => fixture.dir);

describe("greedy generate picks the argmax of every reference logits row of the fixtures", () => {
  it("covers every HF fixture and the float32/float64 keras fixtures", () => {
    assert.ok(CASES.length >= 5 && KERAS_CASES.length >= 5, `${CASES} / ${KERAS_CASES}`);
    for (const name of CASES) assert.ok(records(name).length > 0, `${name} has generate records`);
  });

  for (const name of CASES) {
    it(`hf ${name}: runs and decode traces, every prefix without padding`, async () => {
      const manifest = hfManifest(name);
      const dir = path.join(HF, name);
      const rel = manifest.tolerance_hint.f32.rel;
      const references: ReferenceLogits[] = [
        // Explicit position_ids are not something generate takes.
        ...manifest.runs.filter((run) => run.position_ids === null).map((run) => ({
          name: run.name, tokenIds: run.input_ids, paddingMask: run.attention_mask, logits: readReferenceBin(path.join(dir, run.outputs.logits["f32"]!.file), "float32"),
        })),
        ...manifest.decode_traces.map((trace) => ({
          name: trace.name, tokenIds: trace.full_forward.input_ids, paddingMask: trace.full_forward.attention_mask,
          logits: readReferenceBin(path.join(dir, trace.full_forward["f32"]!.file), "float32"),
        })),
      ].map((reference) => ({ ...reference, vocabulary: 101 }));
      const steps = references.flatMap((reference) => {
        // The manifests' metric allows rel · max(1, max |ref|) per value, so two logits can swap within twice that.
        let scale = 1;
        for (let i = 0; i < reference.logits.length; i++) scale = Math.max(scale, Math.abs(reference.logits[i]!));
        // HF's forward places a left-padded row at absolute positions, generate at cumsum(mask) − 1: only unpadded prefixes agree.
        return greedySteps(reference, () => 2 * rel * scale, (mask) => mask.every((flag) => flag === 1));
      });
      await assertGreedyFollows(await fixtureModel(name), steps);
    });
  }

  for (const name of KERAS_CASES) {
    it(`keras ${name}: backbone runs and full_logits of the kv runs, every valid prefix`, async () => {
      const dir = path.join(KERAS, name);
      const manifest = readJson<KerasManifest>(path.join(dir, "manifest.json"));
      const rows = (file: string) => {
        const array = readNpy(path.join(dir, file));
        const [B, L] = array.shape as [number, number];
        return Array.from({ length: B }, (_, b) => Array.from(array.data.subarray(b * L, (b + 1) * L)));
      };
      const references: ReferenceLogits[] = [
        ...manifest.backbone_runs.map((run) => ({
          name: run.name, tokenIds: rows(run.token_ids), paddingMask: rows(run.padding_mask), logits: readNpy(path.join(dir, run.lm_logits)).data,
        })),
        // keras-hub's own step_logits and generate tokens drop ALiBi (fixtures README): full_logits is the target.
        ...manifest.kv_cache_runs.map((run) => ({
          name: run.name, tokenIds: rows(run.files["full_token_ids"]!.file), paddingMask: null, logits: readNpy(path.join(dir, run.files["full_logits"]!.file)).data,
        })),
      ].map((reference) => ({ ...reference, vocabulary: manifest.config.vocabulary_size }));
      const { atol, rtol } = manifest.tolerance_hint.lm_logits;
      const steps = references.flatMap((reference) =>
        greedySteps(reference, (best, other) => 2 * (atol + rtol * Math.max(Math.abs(best), Math.abs(other)))));
      await using lm = await FalconCausalLM.fromPreset(path.join(dir, "preset"));
      await assertGreedyFollows(lm, steps);
    });
  }
});

describe("cached generate equals the argmax of full-forward logits, step by step", () => {
  for (const name of CASES) {
    it(`${name}: ragged batch of 3, 12 new tokens, no stop tokens`, async () => {
      const lm = await fixtureModel(name);
      const prompts = [[5, 17], [40, 2, 99, 63, 8, 21], [77, 13, 50, 4]];
      const out = await lm.generate(prompts, { maxNewTokens: 12, stopTokenIds: null });
      for (const [b, row] of out.entries()) {
        assert.equal(row.length, prompts[b]!.length + 12);
        const logits = await lm.call({ tokenIds: [Array.from(row)] });
        const V = logits.shape[2]!;
        for (let t = prompts[b]!.length - 1; t < row.length - 1; t++) {
          const at = logits.data.subarray(t * V, (t + 1) * V);
          let best = 0;
          for (let v = 1; v < V; v++) if (at[v]! > at[best]!) best = v;
          const next = row[t + 1]!;
          // Equal, or a tie within float32 rounding between the cached and the full computation.
          assert.ok(next === best || at[best]! - at[next]! <= 1e-5 * Math.max(1, Math.abs(at[best]!)),
            `row ${b} position ${t}: generated ${next}, full-forward argmax ${best}`);
        }
      }
    });
  }
});

describe("generate options", () => {
  it("maxNewTokens and maxLength bound every row on its own; maxLength truncates prompts", async () => {
    const lm = await fixtureModel("rw_alibi_mha_sequential");
    const prompts = [[35, 92, 67, 92, 46], [30, 65, 71]];
    const byNew = await lm.generate(prompts, { maxNewTokens: 4, stopTokenIds: null });
    assert.deepEqual(byNew.map((row) => row.length), [9, 7]);
    // The prompts are the HF record's: its greedy continuation is the reference for the new tokens.
    const [record] = records("rw_alibi_mha_sequential");
    assert.deepEqual(byNew.map((row) => Array.from(row)),
      prompts.map((prompt, b) => [...prompt, ...record!.output_ids_f32[b]!.slice(record!.prompt_ids[b]!.length, record!.prompt_ids[b]!.length + 4)]));
    const byLength = await lm.generate(prompts, { maxLength: 7, stopTokenIds: null });
    assert.deepEqual(byLength.map((row) => row.length), [7, 7]);
    assert.deepEqual(Array.from(byLength[1]!), Array.from(byNew[1]!), "same greedy tokens");
    const both = await lm.generate(prompts, { maxLength: 7, maxNewTokens: 3, stopTokenIds: null });
    assert.deepEqual(both.map((row) => row.length), [7, 6]);
    const truncated = await lm.generate(prompts, { maxLength: 4, stopTokenIds: null });
    assert.deepEqual(Array.from(truncated[0]!), [35, 92, 67, 92], "prompt cut to maxLength, nothing generated");
    assert.equal(truncated[1]!.length, 4);
    assert.deepEqual(Array.from(await lm.generate([1, 2], { maxNewTokens: 0 })), [1, 2]);
    // Neither given: the preprocessor's sequenceLength is the maxLength, as keras-hub.
    const short = new FalconCausalLM(lm.backbone, undefined, { preprocessor: { sequenceLength: 9 } });
    assert.equal((await short.generate([1, 2, 3], { stopTokenIds: null })).length, 9);
  });

  it("stopTokenIds stop each row on its own, the stop token included; null never stops", async () => {
    // Expected tokens come from the HF greedy records: rw's rows continue [35, 92, 67, 92, 46] and
    // [30, 65, 71]; f11b's left-padded row [76, 36, 37] produces eos 11 within 8 tokens.
    const [rw] = records("rw_alibi_mha_sequential");
    const hfContinuation = (record: GenerateRecord, b: number) => record.output_ids_f32[b]!.slice(record.prompt_ids[b]!.length);
    const realPrompt = (record: GenerateRecord, b: number) => record.prompt_ids[b]!.filter((_, c) => record.attention_mask[b]![c] === 1);
    const stop = hfContinuation(rw!, 0)[0]!;
    const upToStop = (tokens: number[]) => tokens.slice(0, tokens.indexOf(stop) + 1 || tokens.length);
    const lm = await fixtureModel("rw_alibi_mha_sequential");
    const out = await lm.generate([realPrompt(rw!, 0), realPrompt(rw!, 1)], { maxNewTokens: 6, stopTokenIds: [stop] });
    assert.deepEqual(out.map((row) => Array.from(row)), [0, 1].map((b) => [...realPrompt(rw!, b), ...upToStop(hfContinuation(rw!, b).slice(0, 6))]));
    assert.ok(out[1]!.length === realPrompt(rw!, 1).length + 6 && !out[1]!.includes(stop), "row 1 never meets the stop token");

    const [f11b] = records("f11b_newarch_1ln");
    const continuation = hfContinuation(f11b!, 1);
    const eosAt = continuation.indexOf(f11b!.eos_token_id);
    assert.ok(eosAt >= 0 && eosAt < f11b!.max_new_tokens - 1, "the record stops on eos before max_new_tokens");
    const f11bModel = await fixtureModel("f11b_newarch_1ln");
    const withEos = await f11bModel.generate(realPrompt(f11b!, 1), { maxNewTokens: f11b!.max_new_tokens });
    assert.deepEqual(Array.from(withEos), [...realPrompt(f11b!, 1), ...continuation.slice(0, eosAt + 1)], "default stop: eos from generation_config.json");
    const noStop = await f11bModel.generate(realPrompt(f11b!, 1), { maxNewTokens: f11b!.max_new_tokens, stopTokenIds: null });
    assert.equal(noStop.length, realPrompt(f11b!, 1).length + f11b!.max_new_tokens);
    assert.deepEqual(Array.from(noStop.subarray(0, withEos.length)), Array.from(withEos));
  });

  it("stripPrompt returns only the new ids; onToken sees every token with its row", async () => {
    const lm = await fixtureModel("rw_alibi_mha_sequential");
    const seen: [number, number][] = [];
    const out = await lm.generate([[35, 92, 67], [30]], { maxNewTokens: 3, stripPrompt: true, stopTokenIds: null, onToken: (id, row) => seen.push([id, row]) });
    assert.deepEqual(out.map((row) => row.length), [3, 3]);
    assert.deepEqual(seen.filter(([, row]) => row === 0).map(([id]) => id), Array.from(out[0]!));
    assert.deepEqual(seen.filter(([, row]) => row === 1).map(([id]) => id), Array.from(out[1]!));
  });

  it("stochastic samplers through the model: a seed reproduces the tokens", async () => {
    const lm = await fixtureModel("f40b_newarch_gqa");
    const prompts = [[90, 58, 61], [22, 74, 61, 5, 9]];
    for (const sampler of [
      { type: "topK", k: 10, temperature: 5, seed: 3 },
      { type: "topP", p: 0.95, temperature: 5, seed: 3 },
      { type: "random", temperature: 5, seed: 3 },
      { type: "temperature", temperature: 5, seed: 3 },
    ] as const) {
      const options: GenerateOptions = { maxNewTokens: 16, stopTokenIds: null, sampler };
      const first = (await lm.generate(prompts, options)).map((row) => Array.from(row));
      assert.deepEqual((await lm.generate(prompts, options)).map((row) => Array.from(row)), first, sampler.type);
      const other = (await lm.generate(prompts, { ...options, sampler: { ...sampler, seed: 4 } })).map((row) => Array.from(row));
      assert.notDeepEqual(other, first, `${sampler.type}: another seed`);
    }
  });

  it("stochastic samplers through the model draw what the reference sampler draws from full-forward logits", async () => {
    // Reference: softmax(logits / temperature) in float64 over the full forward pass of each generated row,
    // inverted at the reference xoshiro128** uniforms of the row's stream (ids ascending; for top-k the k
    // best, best first). A uniform within 1e-6 of a boundary may land on either side.
    const lm = await fixtureModel("f40b_newarch_gqa");
    const prompts = [[90, 58, 61], [22, 74, 61, 5, 9]];
    const temperature = 5;
    const cases = [{ type: "random", temperature, seed: 3 } as const, { type: "topK", k: 10, temperature, seed: 4 } as const];
    for (const sampler of cases) {
      const out = await lm.generate(prompts, { maxNewTokens: 16, stopTokenIds: null, sampler });
      for (const [b, row] of out.entries()) {
        const logits = await lm.call({ tokenIds: [Array.from(row)] });
        const V = logits.shape[2]!;
        const uniforms = referenceDoubles(sampler.seed, b);
        for (let n = 0; n < 16; n++) {
          const t = prompts[b]!.length - 1 + n;
          const at = Array.from(logits.data.subarray(t * V, (t + 1) * V));
          const ranked = at.map((_, id) => id).sort((x, y) => at[y]! - at[x]! || x - y);
          const order = sampler.type === "topK" ? ranked.slice(0, sampler.k) : ranked.slice().sort((x, y) => x - y);
          const max = Math.max(...order.map((id) => at[id]!));
          const weights = order.map((id) => Math.exp((at[id]! - max) / temperature));
          const total = weights.reduce((sum, weight) => sum + weight, 0);
          const inverse = (u: number) => {
            let running = 0;
            for (const [i, weight] of weights.entries()) if (u * total < (running += weight)) return order[i]!;
            return order[order.length - 1]!;
          };
          const allowed = new Set([inverse(uniforms[n]!), inverse(Math.max(0, uniforms[n]! - 1e-6)), inverse(Math.min(1 - 1e-12, uniforms[n]! + 1e-6))]);
          assert.ok(allowed.has(row[t + 1]!), `${sampler.type} row ${b} token ${n}: generated ${row[t + 1]}, the reference draws ${[...allowed]}`);
        }
      }
    }
  });

  it("rejects bad options and out-of-range ids with FalconInputError", async () => {
    const lm = await fixtureModel("rw_alibi_mha_sequential");
    const bad: [unknown, object, RegExp][] = [
      [[1, 2], { maxNewTokens: -1 }, /maxNewTokens must be a non-negative integer/],
      [[1, 2], { maxLength: 0 }, /maxLength must be a positive integer/],
      [[1, 2], { stopTokenIds: [1.5] }, /stopTokenIds must be an array/],
      [[1, 2], { sampler: "beam" }, /sampler must be one of/],
      [[1, 2], { maxTokens: 3 }, /unknown generate option "maxTokens"/],
      [[1, 101], {}, /prompt 0 token 1 = 101 is out of range \[0, 101\)/],
      ["text", {}, /need a tokenizer/],
    ];
    for (const [prompts, options, message] of bad) {
      await assert.rejects(lm.generate(prompts as never, options), (error: unknown) => error instanceof FalconInputError && message.test(error.message));
    }
    assert.throws(() => lm.stream([1, 2]), (error: unknown) => error instanceof FalconInputError && /stream\(\) need a tokenizer/.test((error as Error).message));
  });
});

describe("concurrency", () => {
  it("concurrent generate calls on one model give the sequential results", async () => {
    const lm = await fixtureModel("f7b_rotary_mqa_parallel");
    const calls: [number[][], GenerateOptions][] = [
      [[[85, 50, 39, 68, 62], [83, 11, 90]], { maxNewTokens: 10 }],
      [[[1, 2, 3]], { maxNewTokens: 20, stopTokenIds: null, sampler: { type: "random", temperature: 4, seed: 1 } }],
      [[[7], [8, 9], [10, 11, 12]], { maxNewTokens: 15, stopTokenIds: null, sampler: { type: "topP", p: 0.9, temperature: 3, seed: 2 } }],
      [[[40, 41, 42, 43]], { maxNewTokens: 5, sampler: { type: "topK", k: 4, temperature: 3, seed: 9 } }],
    ];
    const sequential: number[][][] = [];
    for (const [prompts, options] of calls) sequential.push((await lm.generate(prompts, options)).map((row) => Array.from(row)));
    const concurrent = await Promise.all(calls.map(([prompts, options]) => lm.generate(prompts, options)));
    assert.deepEqual(concurrent.map((rows) => rows.map((row) => Array.from(row))), sequential);
  });
});

describe("abort", () => {
  it("an aborted signal rejects with AbortError before any cache is made", async () => {
    const lm = await FalconCausalLM.fromPreset(path.join(HF, "rw_alibi_mha_sequential", "checkpoint"));
    const caches = spyOnCaches(lm);
    await assert.rejects(lm.generate([1, 2], { signal: AbortSignal.abort() }), isAbortError);
    assert.equal(caches.length, 0);
    lm.dispose();
  });

  it("aborting from onToken stops within the step and frees the cache", async () => {
    const lm = await FalconCausalLM.fromPreset(path.join(HF, "rw_alibi_mha_sequential", "checkpoint"));
    const caches = spyOnCaches(lm);
    const controller = new AbortController();
    const tokens: number[] = [];
    let bytesWhileRunning = 0;
    await assert.rejects(
      lm.generate([[35, 92, 67]], {
        maxNewTokens: 50, stopTokenIds: null, signal: controller.signal,
        onToken: (id) => {
          tokens.push(id);
          bytesWhileRunning = caches[0]!.byteSize;
          if (tokens.length === 3) controller.abort();
        },
      }),
      isAbortError,
    );
    assert.equal(tokens.length, 3, "no token after the abort");
    assert.equal(caches.length, 1);
    assert.ok(bytesWhileRunning > 0, "the cache held key/value storage while generating");
    assert.equal(caches[0]!.disposed, true, "the cache is freed");
    assert.throws(() => caches[0]!.byteSize, FalconDisposedError);
    lm.dispose();
  });

  it("an abort from a timer stops a long generation within one step", async () => {
    const lm = await FalconCausalLM.fromPreset(path.join(HF, "f40b_newarch_gqa", "checkpoint"));
    const caches = spyOnCaches(lm);
    const controller = new AbortController();
    const reason = new Error("user pressed stop");
    let produced = 0;
    let producedAtAbort = -1;
    const batch = 2;
    const running = lm.generate([[1, 2, 3], [4, 5]], { maxNewTokens: 1500, stopTokenIds: null, signal: controller.signal, onToken: () => void produced++ });
    const timer = setInterval(() => {
      if (produced >= 20) {
        producedAtAbort = produced;
        controller.abort(reason);
        clearInterval(timer);
      }
    }, 1);
    await assert.rejects(running, (error: unknown) => isAbortError(error) && (error as { cause?: unknown }).cause === reason);
    clearInterval(timer);
    assert.ok(producedAtAbort >= 20 && produced - producedAtAbort <= batch, `produced ${produced}, ${producedAtAbort} at the abort`);
    assert.ok(produced < 2 * 1500);
    assert.equal(caches[0]!.disposed, true);
    lm.dispose();
  });

  it("disposing the model while it generates rejects with FalconDisposedError and frees the cache", async () => {
    const lm = await FalconCausalLM.fromPreset(path.join(HF, "rw_alibi_mha_sequential", "checkpoint"));
    const caches = spyOnCaches(lm);
    const running = lm.generate([1, 2], { maxNewTokens: 100, stopTokenIds: null, onToken: () => lm.dispose() });
    await assert.rejects(running, FalconDisposedError);
    assert.equal(caches[0]!.disposed, true);
  });
});

describe("text in, text out (GPT-2 tokenizer, vocabulary 50304 > 50257)", () => {
  const dir = makeTempDir("falcon-generate-test-");
  let lm: FalconCausalLM;
  let cycle: Int32Array;
  before(async () => {
    ({ cycle } = writeCycleCheckpoint(path.join(dir, "cycle")));
    lm = await FalconCausalLM.fromPreset(path.join(dir, "cycle"));
  });
  after(() => {
    lm.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it("fromPreset loads the HF tokenizer.json and the checkpoint's conventions", () => {
    assert.equal(lm.tokenizer?.vocabularySize, TOKENIZER_VOCABULARY);
    assert.equal(lm.backbone.getConfig().vocabularySize, MODEL_VOCABULARY);
    assert.equal(lm.preprocessor.addStartToken, false, "HF: no BOS");
    assert.equal(lm.preprocessor.endTokenId, END_OF_TEXT_ID);
  });

  it("generate: string → string, string[] → string[], prompt kept unless stripPrompt", async () => {
    assert.equal(await lm.generate("The falcon", { maxNewTokens: 16 }), `The falcon${CYCLE_TEXT}${CYCLE_TEXT}`);
    assert.deepEqual(await lm.generate(["The falcon", "Hi"], { maxNewTokens: 3, stripPrompt: true }), ["🦅", "🦅"]);
    assert.deepEqual(await lm.generate(["Hello", "Once upon a time"], { maxNewTokens: 8 }), [`Hello${CYCLE_TEXT}`, `Once upon a time${CYCLE_TEXT}`]);
    const ids = await lm.generate(lm.tokenizer!.encode("The falcon"), { maxNewTokens: 8, stripPrompt: true });
    assert.ok(ids instanceof Int32Array);
    assert.deepEqual(Array.from(ids), Array.from(cycle));
    assert.equal(await lm.generate("The falcon", { maxNewTokens: 8, stopTokenIds: [cycle[2]!], stripPrompt: true }), "🦅");
  });

  it("the padded vocabulary rows, the model's best logits, are never sampled", async () => {
    const logits = await lm.call({ tokenIds: [[Number(cycle[0])]] });
    let best = 0;
    for (let v = 1; v < MODEL_VOCABULARY; v++) if (logits.data[v]! > logits.data[best]!) best = v;
    assert.ok(best >= TOKENIZER_VOCABULARY, "without the mask greedy would pick a padded row");
    for (const sampler of ["greedy", { type: "topK", k: 3, seed: 1 }, { type: "topP", p: 0.99, seed: 1 }, { type: "random", temperature: 200, seed: 1 }] as const) {
      const tokens: number[] = [];
      await lm.generate(["The falcon", "x"], { maxNewTokens: 40, stopTokenIds: null, sampler, onToken: (id) => tokens.push(id) });
      assert.equal(tokens.length, 80);
      assert.ok(tokens.every((id) => id < TOKENIZER_VOCABULARY), `${JSON.stringify(sampler)}: ${tokens.filter((id) => id >= TOKENIZER_VOCABULARY)}`);
    }
  });

  it("stream yields the completion in whole characters; pieces add up to generate's text", async () => {
    const pieces: string[] = [];
    for await (const piece of lm.stream("The falcon", { maxNewTokens: 11 })) pieces.push(piece);
    assert.deepEqual(pieces, ["🦅", " ", "日", "本", "🦅"]);
    // Stopping inside a character: the tail is flushed as U+FFFD, exactly as the full decode.
    const cut: string[] = [];
    for await (const piece of lm.stream("The falcon", { maxNewTokens: 10 })) cut.push(piece);
    assert.equal(cut.join(""), await lm.generate("The falcon", { maxNewTokens: 10, stripPrompt: true }));
    assert.ok(cut.slice(0, -1).every((piece) => !piece.includes("\uFFFD")));
  });

  it("stream over a batch yields { row, text } pieces that add up per row", async () => {
    const byRow = ["", ""];
    for await (const { row, text } of lm.stream(["The falcon", "Hi"], { maxNewTokens: 8, stopTokenIds: [cycle[5]!] })) byRow[row] += text;
    assert.deepEqual(byRow, await lm.generate(["The falcon", "Hi"], { maxNewTokens: 8, stopTokenIds: [cycle[5]!], stripPrompt: true }));
  });

  it("breaking out of a stream or aborting it frees the cache", async () => {
    const caches = spyOnCaches(lm);
    for await (const piece of lm.stream("The falcon", { maxNewTokens: 100 })) {
      assert.equal(piece, "🦅");
      assert.ok(caches[0]!.byteSize > 0);
      break;
    }
    assert.equal(caches[0]!.disposed, true);
    const controller = new AbortController();
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const piece of lm.stream("The falcon", { maxNewTokens: 100, signal: controller.signal })) {
        seen.push(piece);
        controller.abort();
      }
    }, isAbortError);
    assert.deepEqual(seen, ["🦅"]);
    assert.equal(caches[1]!.disposed, true);
  });

  it("a random model with a keras-hub tokenizer: start token added and removed, streams match generate", async () => {
    const tokenizer = writeKerasTokenizer(path.join(dir, "keras-tokenizer"));
    const backbone = new FalconBackbone({ vocabularySize: MODEL_VOCABULARY, numLayers: 1, numAttentionHeads: 2, hiddenDim: 32, intermediateDim: 64, seed: 7 });
    await using random = new FalconCausalLM(backbone, tokenizer);
    assert.equal(random.preprocessor.addStartToken, true);
    const options: GenerateOptions = { maxNewTokens: 24, stopTokenIds: null, sampler: { type: "random", seed: 11 } };
    const full = await random.generate(["The falcon", "Ünïcödé 🦅"], options);
    assert.ok(full[0]!.startsWith("The falcon") && full[1]!.startsWith("Ünïcödé 🦅"), JSON.stringify(full));
    const completions = await random.generate(["The falcon", "Ünïcödé 🦅"], { ...options, stripPrompt: true });
    const streamed = ["", ""];
    const ids: number[] = [];
    for await (const { row, text } of random.stream(["The falcon", "Ünïcödé 🦅"], { ...options, onToken: (id) => ids.push(id) })) {
      assert.ok(!/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(text), "no split surrogate pair");
      if (!completions[row]!.includes("\uFFFD")) assert.ok(!text.includes("\uFFFD"));
      streamed[row] += text;
    }
    assert.deepEqual(streamed, completions);
    assert.equal(ids.length, 48);
    assert.ok(ids.every((id) => id < TOKENIZER_VOCABULARY));
    assert.throws(() => new FalconCausalLM(new FalconBackbone({ vocabularySize: 1000, numLayers: 1, numAttentionHeads: 1, hiddenDim: 8, intermediateDim: 8 }), tokenizer),
      (error: unknown) => error instanceof FalconConfigError && /50257 tokens but the model's vocabulary has only 1000/.test((error as Error).message));

    // Saved as a keras-hub preset with its tokenizer assets and a preprocessor.json, it loads back whole.
    const presetDir = path.join(dir, "keras-preset");
    await random.saveToPreset(presetDir);
    writeKerasTokenizer(presetDir);
    writeFileSync(path.join(presetDir, "preprocessor.json"), JSON.stringify({
      module: "keras_hub.src.models.falcon.falcon_causal_lm_preprocessor", class_name: "FalconCausalLMPreprocessor",
      config: { name: "falcon_causal_lm_preprocessor", trainable: true, sequence_length: 12, add_start_token: true, add_end_token: true },
      registered_name: "keras_hub>FalconCausalLMPreprocessor",
    }));
    await using loaded = await FalconCausalLM.fromPreset(presetDir);
    assert.equal(loaded.tokenizer?.vocabularySize, TOKENIZER_VOCABULARY);
    assert.deepEqual([loaded.preprocessor.sequenceLength, loaded.preprocessor.addStartToken], [12, true]);
    assert.deepEqual(await loaded.generate(["The falcon", "Ünïcödé 🦅"], options), full);
    // Neither maxNewTokens nor maxLength: preprocessor.json's sequence_length bounds prompt + completion.
    const bounded = await loaded.generate([Number(END_OF_TEXT_ID), 464], { stopTokenIds: null });
    assert.equal(bounded.length, 12);
  });

  it("a preset whose tokenizer does not fit the model's vocabulary is a FalconPresetError", async () => {
    const presetDir = path.join(dir, "mismatch");
    mkdirSync(presetDir);
    for (const file of ["config.json", "metadata.json", "model.weights.h5"]) {
      copyFileSync(path.join(FIXTURES, "keras", "falcon_h2_d32_l2", "preset", file), path.join(presetDir, file));
    }
    writeKerasTokenizer(presetDir);
    await assert.rejects(FalconCausalLM.fromPreset(presetDir), (error: unknown) =>
      error instanceof FalconPresetError && /the tokenizer has 50257 tokens but the model's vocabulary has only 101 rows/.test((error as Error).message));
    const withoutTokenizer = await FalconCausalLM.fromPreset(presetDir, { tokenizer: null });
    assert.equal(withoutTokenizer.tokenizer, undefined);
    withoutTokenizer.dispose();
  });
});
