/**
 * generate() refuses budgets no KV cache can hold before anything is allocated (typed errors, never
 * an int32 wrap or a silent truncation), and padding costs nothing: a prompt 200,000 columns wide
 * with one real token runs like the single token.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { FalconCausalLM, FalconCausalLMPreprocessor, FalconInputError, topKIndices, type FalconKvCache, type GenerateOptions } from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";

const CHECKPOINT = path.join(FIXTURES, "hf", "rw_alibi_mha_sequential", "checkpoint");

let lm: FalconCausalLM;
before(async () => {
  lm = await FalconCausalLM.fromPreset(CHECKPOINT);
});
after(() => lm.dispose());

/** Records the maxLength of every cache generate asks for; refuses any longer than `limit`. */
function recordCaches(model: FalconCausalLM, limit = Infinity): number[] {
  const lengths: number[] = [];
  const create = model.createCache.bind(model);
  model.createCache = (options) => {
    lengths.push(options.maxLength);
    if (options.maxLength > limit) throw new Error(`a cache of ${options.maxLength} slots was requested`);
    return create(options) as FalconKvCache;
  };
  return lengths;
}

/** Bytes per cache slot from the native layout: float32 K and V per layer and kv head, a flag and a position. */
function slotBytes(model: FalconCausalLM): number {
  const config = model.backbone.getConfig();
  return config.numLayers * 2 * config.numKeyValueHeads * (config.hiddenDim / config.numAttentionHeads) * 4 + 5;
}

async function assertRefused(prompt: number[], options: GenerateOptions, message: RegExp): Promise<void> {
  await assert.rejects(lm.generate(prompt, { ...options, stopTokenIds: null }), (error: unknown) => {
    assert.ok(error instanceof FalconInputError, `expected FalconInputError, got ${String(error)}`);
    assert.match(error.message, message);
    return true;
  });
}

describe("generate budgets beyond any cache", () => {
  it("maxNewTokens and maxLength at or above 2^31 are refused with the cache size, never wrapped", async () => {
    const caches = recordCaches(lm);
    const prompt = [35, 92, 67];
    for (const huge of [2 ** 31, 2 ** 32, 2 ** 32 + 5, 2 ** 53, 1e300]) {
      const tokens = prompt.length + huge;
      const sizeMessage = new RegExp(`KV cache of 1 × ${String(tokens).replace("+", "\\+")} tokens .*bytes: more than the 2147483647 tokens per sequence`);
      await assertRefused(prompt, { maxNewTokens: huge }, sizeMessage);
      // maxLength counts the prompt: the cache would hold exactly maxLength slots.
      await assertRefused(prompt, { maxLength: huge }, new RegExp(`KV cache of 1 × ${String(huge).replace("+", "\\+")} tokens .*bytes`));
    }
    assert.deepEqual(caches, [], "nothing was allocated");
    // Just below the slot limit the refusal is the memory it would take.
    await assertRefused(prompt, { maxNewTokens: 2 ** 31 - 1 - prompt.length }, /bytes, more than the \d+ bytes of memory this machine has/);
  });

  it("option values no JSON can describe (bigint, cyclic, deeply nested) are FalconInputErrors", async () => {
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    const nested = JSON.parse(`${"[".repeat(100_000)}${"]".repeat(100_000)}`) as unknown;
    for (const [options, message] of [
      [{ maxNewTokens: 5n }, /maxNewTokens must be a non-negative integer, got bigint 5/],
      [{ maxLength: cyclic }, /maxLength must be a positive integer, got an object/],
      [{ stopTokenIds: 7n }, /stopTokenIds must be an array of token ids or null, got bigint 7/],
      [{ sampler: { type: "topK", k: nested } }, /sampler k must be a positive integer, got an array of 1/],
      [{ sampler: { type: cyclic } }, /sampler must be one of .*got an object/],
    ] as [GenerateOptions, RegExp][]) {
      await assert.rejects(lm.generate([35, 92, 67], { maxNewTokens: 2, ...options }), (error: unknown) => {
        assert.ok(error instanceof FalconInputError, `expected FalconInputError, got ${String(error)}`);
        assert.match(error.message, message);
        return true;
      });
    }
  });

  it("maxNewTokens: 1e9 is refused up front, stating the tokens and bytes needed", async () => {
    const caches = recordCaches(lm);
    const prompts = [[35, 92, 67, 92, 46], [30, 65, 71]];
    const tokens = 5 + 1e9;
    const bytes = 2 * tokens * slotBytes(lm);
    await assert.rejects(lm.generate(prompts, { maxNewTokens: 1e9, stopTokenIds: null }), (error: unknown) => {
      assert.ok(error instanceof FalconInputError, String(error));
      assert.match(error.message, new RegExp(`KV cache of 2 × ${tokens} tokens \\(prompt 5 \\+ up to 1000000000 new\\), ${bytes} bytes`));
      return true;
    });
    assert.deepEqual(caches, []);
  });

  it("a budget that fits still sizes the cache as keras-hub: prompt + maxNewTokens, or maxLength", async () => {
    const caches = recordCaches(lm);
    const out = await lm.generate([[35, 92, 67, 92, 46], [30, 65, 71]], { maxNewTokens: 4, stopTokenIds: null });
    assert.deepEqual(out.map((row) => row.length), [9, 7]);
    await lm.generate([35, 92], { maxLength: 6, stopTokenIds: null });
    assert.deepEqual(caches, [9, 6]);
  });
});

describe("preprocessor sizes beyond any batch", () => {
  it("padding to a sequenceLength of 2^31 or beyond memory is a FalconInputError, not a RangeError or an allocation", () => {
    const preprocessor = new FalconCausalLMPreprocessor(undefined, { sequenceLength: 8 });
    const rows = Array.from({ length: 64 }, (_, row) => [row + 1]);
    for (const [sequenceLength, message] of [
      [2 ** 31, /generatePreprocess: a \[64, 2147483648\] batch needs \d+ bytes: more than the 2147483647 tokens per sequence/],
      [2 ** 31 - 1, /generatePreprocess: a \[64, 2147483647\] batch needs 687194767040 bytes, more than the \d+ bytes of memory/],
      [1e300, /more than the 2147483647 tokens per sequence/],
    ] as const) {
      assert.throws(() => preprocessor.generatePreprocess(rows, { sequenceLength, padTo: "sequenceLength" }), (error: unknown) =>
        error instanceof FalconInputError && message.test(error.message));
    }
    assert.deepEqual(preprocessor.generatePreprocess([[1, 2], [3]], { padTo: "sequenceLength" }).shape, [2, 8]);
  });
});

describe("padding costs nothing", () => {
  it("a prompt 200,000 columns wide with one real token generates like the token alone, with a cache of its size", async () => {
    const width = 200_000;
    const alone = await lm.generate([[46]], { maxNewTokens: 3, stopTokenIds: null });
    const caches = recordCaches(lm, 64);
    const tokenIds = new Int32Array(width);
    const paddingMask = new Uint8Array(width);
    tokenIds[width - 1] = 46;
    paddingMask[width - 1] = 1;
    const started = performance.now();
    const padded = await lm.generate({ tokenIds, paddingMask, shape: [1, width] }, { maxNewTokens: 3, stopTokenIds: null });
    const elapsed = performance.now() - started;
    assert.deepEqual(padded.map((row) => Array.from(row)), alone.map((row) => Array.from(row)));
    assert.deepEqual(caches, [4], "the cache holds the real token and the new ones, not the padding");
    assert.ok(elapsed < 5_000, `took ${elapsed.toFixed(0)} ms`);
  });

  it("left and interior padding give the tokens of the unpadded rows", async () => {
    const rows = [[35, 92, 67, 92, 46], [30, 65, 71]];
    const expected = await lm.generate(rows, { maxNewTokens: 5, stopTokenIds: null });
    const tokenIds = [[0, 0, 35, 92, 0, 67, 92, 46, 0], [30, 0, 0, 65, 0, 0, 71, 0, 0]];
    const paddingMask = [[0, 0, 1, 1, 0, 1, 1, 1, 0], [1, 0, 0, 1, 0, 0, 1, 0, 0]];
    const padded = await lm.generate({ tokenIds, paddingMask }, { maxNewTokens: 5, stopTokenIds: null });
    assert.deepEqual(padded.map((row) => Array.from(row)), expected.map((row) => Array.from(row)));
  });
});

describe("sampler options as large as the vocabulary", () => {
  it("topK with k up to the vocabulary size picks the reference order in linearithmic time", () => {
    const vocabulary = 50_304;
    const logits = new Float32Array(vocabulary);
    let state = 7;
    for (let id = 0; id < vocabulary; id++) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      // Coarse values make many ties; a few NaNs and -Infinity go last.
      logits[id] = id % 997 === 0 ? Number.NaN : id % 991 === 0 ? -Infinity : Math.floor((state / 2 ** 32) * 512) / 8;
    }
    // Reference: larger logit first, ties by lower id, NaN after every number (ids in order).
    const reference = Array.from({ length: vocabulary }, (_, id) => id).sort((a, b) => {
      const [va, vb] = [logits[a]!, logits[b]!];
      if (Number.isNaN(va) !== Number.isNaN(vb)) return Number.isNaN(va) ? 1 : -1;
      return va === vb || (Number.isNaN(va) && Number.isNaN(vb)) ? a - b : vb - va;
    });
    for (const k of [1, 5, 128, 129, 1000, vocabulary]) {
      assert.deepEqual(Array.from(topKIndices(logits, 0, vocabulary, k)), reference.slice(0, k), `k = ${k}`);
    }
    const started = performance.now();
    topKIndices(logits, 0, vocabulary, vocabulary);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 400, `k = ${vocabulary} took ${elapsed.toFixed(0)} ms`);
  });
});
