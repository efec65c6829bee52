/**
 * The engine's promise: a request's tokens and logits are bit-identical whatever it is batched with and
 * however its prompt is chunked. For every fixture model, HF and keras-hub (and int8 / bfloat16 casts and
 * 16-bit KV pools of some), 32 requests of different prompt lengths (half of them sharing a prefix longer
 * than a KV block), samplers and seeds go through one engine concurrently, submitted at staggered times with a small token budget so prompts
 * are split across steps; each must equal the same request run alone (one sequence per step, its whole
 * prompt in one chunk, no prefix cache), and the TypeScript generate loop's tokens. Greedy requests on
 * the HF fixtures' prompts reproduce the fixtures' generate records.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { after, describe, it } from "node:test";

import { FalconCausalLM, type Completion, type FalconDType, type KvCacheDType, type SamplerSpec } from "../src/index.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";
import { seededRandom } from "./helpers/seeded-random.js";

interface GenerateRecord {
  prompt_ids: number[][];
  attention_mask: number[][];
  max_new_tokens: number;
  eos_token_id: number;
  output_ids_f32: number[][];
}

const HF_CASES = ["rw_alibi_mha_sequential", "rotary_mha_sequential_bias", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln"];
/** The keras-hub fixture presets (every dtype policy the fixtures were made with). */
const KERAS_CASES = readdirSync(path.join(FIXTURES, "keras"), { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
/** [fixture, model dtype (default: the checkpoint's), KV pool dtype (default float32)] */
const MODELS: [string, FalconDType | undefined, KvCacheDType | undefined][] = [
  ...HF_CASES.map((name): [string, undefined, undefined] => [name, undefined, undefined]),
  ...KERAS_CASES.map((name): [string, undefined, undefined] => [name, undefined, undefined]),
  ["rw_alibi_mha_sequential", "int8", undefined],
  ["f40b_newarch_gqa", "bfloat16", undefined],
  ["f7b_rotary_mqa_parallel", "int8", undefined],
  ["f7b_rotary_mqa_parallel", undefined, "bfloat16"],
  ["f40b_newarch_gqa", undefined, "float16"],
];
const checkpoint = (name: string) =>
  KERAS_CASES.includes(name) ? path.join(FIXTURES, "keras", name, "preset") : path.join(FIXTURES, "hf", name, "checkpoint");

const loaded: FalconCausalLM[] = [];
after(() => {
  for (const lm of loaded) lm.dispose();
});

async function load(name: string, dtype?: FalconDType): Promise<FalconCausalLM> {
  const lm = await FalconCausalLM.fromPreset(checkpoint(name), dtype === undefined ? {} : { dtype });
  loaded.push(lm);
  return lm;
}

function samplerFor(i: number): SamplerSpec {
  switch (i % 5) {
    case 0: return "greedy";
    case 1: return { type: "topK", k: 3, seed: 1000 + i };
    case 2: return { type: "topP", p: 0.9, seed: 2000 + i };
    case 3: return { type: "temperature", temperature: 0.7, seed: 3000 + i };
    default: return { type: "random", seed: 4000 + i };
  }
}

interface Request {
  prompt: Int32Array;
  maxNewTokens: number;
  sampler: SamplerSpec;
}

function requestsFor(vocabularySize: number): Request[] {
  const next = seededRandom(vocabularySize);
  const id = () => Math.floor(next() * vocabularySize);
  const sharedPrefix = Int32Array.from({ length: 21 }, id);
  return Array.from({ length: 32 }, (_, i) => {
    const length = 1 + ((i * 7) % 37);
    const own = Int32Array.from({ length }, id);
    const prompt = i % 2 === 0 ? Int32Array.from([...sharedPrefix, ...own]) : own;
    return { prompt, maxNewTokens: 2 + (i % 6), sampler: samplerFor(i) };
  });
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

describe("engine batch invariance: concurrent, chunked, prefix-shared requests equal the same requests alone, bit for bit", () => {
  for (const [name, dtype, kvCacheDtype] of MODELS) {
    it(`${name}${dtype ? ` as ${dtype}` : ""}${kvCacheDtype ? `, ${kvCacheDtype} KV pool` : ""}`, async () => {
      const lm = await load(name, dtype);
      const requests = requestsFor(lm.backbone.getConfig().vocabularySize);
      const options = (request: Request) => ({ maxNewTokens: request.maxNewTokens, sampler: request.sampler, stopTokenIds: null, returnLogits: true });

      const alone = lm.engine({ maxSequences: 1, prefixCaching: false, kvCacheDtype });
      const solo: Completion[] = [];
      try {
        for (const request of requests) solo.push(await alone.complete(request.prompt, options(request)));
      } finally {
        await alone.close();
      }

      const together = lm.engine({ maxBatchTokens: 32, maxSequences: 24, kvCacheDtype });
      let results: Completion[];
      try {
        results = await Promise.all(requests.map(async (request, i) => {
          await delay(i % 4);
          return together.complete(request.prompt, options(request));
        }));
        assert.ok(together.stats().prefixHitTokens > 0, "the shared prefix was reused");
      } finally {
        await together.close();
      }

      for (const [i, request] of requests.entries()) {
        const expected = solo[i]!;
        const actual = results![i]!;
        assert.equal(actual.tokenIds.length, request.maxNewTokens, `request ${i}: its whole budget`);
        assert.deepEqual(Array.from(actual.tokenIds), Array.from(expected.tokenIds), `request ${i}: tokens`);
        assert.equal(actual.logits!.length, expected.logits!.length);
        for (const [step, row] of actual.logits!.entries()) {
          assert.ok(sameBits(row, expected.logits![step]!), `request ${i} step ${step}: logits differ in some bit`);
        }
        // The TypeScript decoding loop (separate float32 caches, TypeScript samplers) picks the same tokens.
        if (i < 10 && kvCacheDtype === undefined) {
          const generated = await lm.generate(request.prompt, { maxNewTokens: request.maxNewTokens, sampler: request.sampler, stopTokenIds: null, stripPrompt: true });
          assert.deepEqual(Array.from(actual.tokenIds), Array.from(generated), `request ${i}: lm.generate's tokens`);
        }
      }
    });
  }
});

describe("engine greedy decoding reproduces the HF fixtures' generate records", () => {
  for (const name of HF_CASES) {
    it(name, async () => {
      const lm = await load(name);
      const engine = lm.engine({ maxBatchTokens: 8 });
      try {
        const records = readJson<{ generate: GenerateRecord[] }>(path.join(FIXTURES, "hf", name, "manifest.json")).generate;
        assert.ok(records.length > 0);
        for (const record of records) {
          const rows = await Promise.all(record.prompt_ids.map((row, b) => {
            const prompt = row.filter((_, c) => record.attention_mask[b]![c] === 1);
            return engine.complete(prompt, { maxNewTokens: record.max_new_tokens, stopTokenIds: [record.eos_token_id], sampler: "greedy" });
          }));
          for (const [b, row] of rows.entries()) {
            const full = record.output_ids_f32[b]!.slice(record.prompt_ids[b]!.length);
            const end = full.indexOf(record.eos_token_id);
            const expected = end === -1 ? full : full.slice(0, end + 1);
            assert.deepEqual(Array.from(row.tokenIds), expected, `record row ${b}`);
          }
        }
      } finally {
        await engine.close();
      }
    });
  }
});
