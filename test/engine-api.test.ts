/**
 * The Engine's TypeScript API over the fake step runner: generate() / stream() / complete() give what
 * lm.generate() / lm.stream() give for one prompt (ids and text, budgets, stop ids, stripPrompt,
 * onToken), stop strings cut text as OpenAI does, logprobs and logits rows are the model's, and
 * lm.engine() checks its options. Expected tokens come from the fake model written again in
 * test/helpers/fake-engine.ts, and text from the GPT-2 tokenizer.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, FalconInputError, FalconTokenizer } from "../src/index.js";
import { fakeEngine, fakeGreedy, fakeLogits, fakeNextToken, promptOf, waitFor } from "./helpers/fake-engine.js";
import { END_OF_TEXT_ID, gpt2Vocabulary, hfTokenizerJson, makeTempDir } from "./helpers/gpt2-vocab.js";

const VOCAB = 1000;
const TEXT_VOCAB = 50304;
const TOKENIZER_VOCAB = 50257;

function gpt2Tokenizer(): FalconTokenizer {
  const dir = makeTempDir("falcon-engine-api-");
  writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(hfTokenizerJson(gpt2Vocabulary(), "pair")));
  return FalconTokenizer.fromPreset(dir);
}

describe("engine.generate with token ids", () => {
  const engine = fakeEngine();
  after(() => engine.close());

  it("returns the prompt and the generated ids, or only the generated ids with stripPrompt", async () => {
    const prompt = promptOf(12, 1);
    const expected = fakeGreedy(prompt, 6, VOCAB);
    assert.deepEqual(Array.from(await engine.generate(prompt, { maxNewTokens: 6 })), [...prompt, ...expected]);
    assert.deepEqual(Array.from(await engine.generate(Int32Array.from(prompt), { maxNewTokens: 6, stripPrompt: true })), expected);
  });

  it("stops after a stop id (included) and reports each token to onToken with row 0", async () => {
    const prompt = promptOf(7, 2);
    const free = fakeGreedy(prompt, 10, VOCAB);
    const stop = free[3]!;
    const expected = fakeGreedy(prompt, 10, VOCAB, { stopTokenIds: [stop] });
    const seen: [number, number][] = [];
    const tokens = await engine.generate(prompt, { maxNewTokens: 10, stripPrompt: true, stopTokenIds: [stop], onToken: (id, row) => seen.push([id, row]) });
    assert.deepEqual(Array.from(tokens), expected);
    assert.equal(expected.at(-1), stop);
    assert.deepEqual(seen, expected.map((id) => [id, 0]));
    const completion = await engine.complete(prompt, { maxNewTokens: 10, stopTokenIds: [stop] });
    assert.equal(completion.finishReason, "stop");
    assert.equal((await engine.complete(prompt, { maxNewTokens: 2 })).finishReason, "length");
  });

  it("follows maxLength as lm.generate does: the prompt is truncated to it and it bounds prompt + completion", async () => {
    const prompt = promptOf(10, 3);
    assert.deepEqual(Array.from(await engine.generate(prompt, { maxLength: 14 })), [...prompt, ...fakeGreedy(prompt, 4, VOCAB)]);
    assert.deepEqual(Array.from(await engine.generate(prompt, { maxLength: 6 })), prompt.slice(0, 6));
    const none = await engine.complete(prompt, { maxLength: 10 });
    assert.deepEqual(none.usage, { promptTokens: 10, completionTokens: 0, totalTokens: 10 });
    assert.equal(none.finishReason, "length");
  });

  it("complete() returns usage, logprobs (top n) and the logits rows of the generated tokens", async () => {
    const prompt = promptOf(9, 4);
    const expected = fakeGreedy(prompt, 5, VOCAB);
    const completion = await engine.complete(prompt, { maxNewTokens: 5, logprobs: 3, returnLogits: true });
    assert.deepEqual(Array.from(completion.tokenIds), expected);
    assert.equal(completion.text, undefined, "no tokenizer, no text");
    assert.deepEqual(completion.usage, { promptTokens: 9, completionTokens: 5, totalTokens: 14 });
    assert.equal(completion.logprobs!.length, 5);
    assert.equal(completion.logits!.length, 5);
    expected.forEach((token, i) => {
      const history = [...prompt, ...expected.slice(0, i)];
      const logits = fakeLogits(history, VOCAB);
      assert.deepEqual(completion.logits![i], logits);
      const max = Math.max(...logits);
      const logSum = max + Math.log(logits.reduce((sum, value) => sum + Math.exp(value - max), 0));
      const entry = completion.logprobs![i]!;
      assert.equal(entry.token, token);
      assert.ok(Math.abs(entry.logprob - (logits[token]! - logSum)) < 1e-5, `logprob ${entry.logprob}`);
      const next = fakeNextToken(history, VOCAB);
      assert.deepEqual(entry.top.map((t) => t.token), [next, (next + 1) % VOCAB, (next + 2) % VOCAB]);
      entry.top.forEach((t) => assert.ok(Math.abs(t.logprob - (logits[t.token]! - logSum)) < 1e-5));
    });
    assert.equal((await engine.complete(prompt, { maxNewTokens: 2 })).logprobs, undefined);
  });

  it("stats() reports the queue, the KV blocks, prefix hits and generated tokens", () => {
    const stats = engine.stats();
    assert.deepEqual(Object.keys(stats).sort(), ["generatedTokens", "kvBlocks", "preemptions", "prefixHitTokens", "running", "tokensPerSecond", "waiting"]);
    assert.deepEqual(Object.keys(stats.kvBlocks).sort(), ["cached", "free", "total", "used"]);
    assert.equal(stats.kvBlocks.total, 256);
    assert.ok(stats.generatedTokens > 0);
    assert.ok(stats.tokensPerSecond >= 0);
  });
});

describe("engine with text", () => {
  const tokenizer = gpt2Tokenizer();
  const engine = fakeEngine({ vocabSize: TEXT_VOCAB, samplingVocabularySize: TOKENIZER_VOCAB, tokenizer });
  after(() => engine.close());
  const prompt = "The eagle flies over Japan";
  const promptIds = tokenizer.encode(prompt);
  const expectedIds = (count: number) => fakeGreedy(promptIds, count, TEXT_VOCAB, { allowed: TOKENIZER_VOCAB, stopTokenIds: [END_OF_TEXT_ID] });
  const detokenize = (ids: number[]) => tokenizer.decode(Int32Array.from(ids.filter((id) => id !== END_OF_TEXT_ID)));

  it("generate(text) returns the prompt and completion text, or the completion with stripPrompt, never sampling padded rows", async () => {
    const ids = expectedIds(24);
    assert.ok(ids.every((id) => id < TOKENIZER_VOCAB));
    assert.equal(await engine.generate(prompt, { maxNewTokens: 24 }), detokenize([...promptIds, ...ids]));
    assert.equal(await engine.generate(prompt, { maxNewTokens: 24, stripPrompt: true }), detokenize(ids));
  });

  it("stream(text) yields the completion's text, piece by piece", async () => {
    let text = "";
    let pieces = 0;
    for await (const piece of engine.stream(prompt, { maxNewTokens: 24 })) {
      text += piece;
      pieces++;
    }
    assert.equal(text, detokenize(expectedIds(24)));
    assert.ok(pieces > 1);
  });

  it("stop strings end the completion before the stop string, in generate, stream and complete", async () => {
    const ids = expectedIds(40);
    const full = detokenize(ids);
    const stop = full.slice(20, 23);
    const cut = full.indexOf(stop);
    assert.ok(cut > 0 && cut <= 20);
    const completion = await engine.complete(prompt, { maxNewTokens: 40, stop: [stop, "never appears \u{1F985}"] });
    assert.equal(completion.text, full.slice(0, cut));
    assert.equal(completion.finishReason, "stop");
    // The ids run to the token that completed the stop string.
    const through = completion.tokenIds.length;
    assert.ok(through < 40);
    assert.deepEqual(Array.from(completion.tokenIds), ids.slice(0, through));
    assert.ok(detokenize(ids.slice(0, through)).includes(stop));
    assert.ok(!detokenize(ids.slice(0, through - 1)).includes(stop));

    assert.equal(await engine.generate(prompt, { maxNewTokens: 40, stop, stripPrompt: true }), full.slice(0, cut));
    assert.equal(await engine.generate(prompt, { maxNewTokens: 40, stop }), detokenize(Array.from(promptIds)) + full.slice(0, cut));
    let streamed = "";
    for await (const piece of engine.stream(prompt, { maxNewTokens: 40, stop })) streamed += piece;
    assert.equal(streamed, full.slice(0, cut));
    // Token-id prompts return every generated id.
    assert.deepEqual(Array.from(await engine.generate(promptIds, { maxNewTokens: 40, stop, stripPrompt: true })), ids.slice(0, through));
  });

  it("completeStream yields each step's ids, logprobs and released text; the chunks join to complete()'s result", async () => {
    const ids = expectedIds(40);
    const full = detokenize(ids);
    const stop = full.slice(20, 23);
    for (const options of [{ maxNewTokens: 12, logprobs: 2 }, { maxNewTokens: 40, stop, logprobs: 0 }]) {
      const whole = await engine.complete(prompt, options);
      const chunks = [];
      for await (const chunk of engine.completeStream(prompt, options)) chunks.push(chunk);
      const last = chunks.at(-1)!;
      assert.equal(last.finishReason, whole.finishReason);
      assert.deepEqual(last.usage, whole.usage);
      assert.ok(chunks.slice(0, -1).every((chunk) => chunk.finishReason === undefined && chunk.usage === undefined));
      assert.ok(chunks.slice(0, -1).every((chunk) => chunk.tokenIds.length >= 1), "a chunk per step that generated");
      assert.deepEqual(chunks.flatMap((chunk) => chunk.tokenIds), Array.from(whole.tokenIds));
      assert.deepEqual(chunks.flatMap((chunk) => chunk.logprobs!), whole.logprobs);
      assert.equal(chunks.map((chunk) => chunk.text).join(""), whole.text);
    }
  });

  it("breaking out of completeStream cancels the request", async () => {
    const before = engine.stats().generatedTokens;
    for await (const chunk of engine.completeStream(prompt, { maxNewTokens: 4000, stopTokenIds: null })) {
      assert.ok(chunk.tokenIds.length > 0);
      break;
    }
    await waitFor(() => engine.stats().running === 0 && engine.stats().kvBlocks.used === 0, "the request to be cancelled");
    const generated = engine.stats().generatedTokens - before;
    assert.ok(generated < 4000, `cancelled after ${generated} of 4000 tokens`);
  });
});

describe("lm.engine()", () => {
  it("checks its options before allocating anything", () => {
    const backbone = new FalconBackbone({
      vocabularySize: 64, numLayers: 1, numAttentionHeads: 2, hiddenDim: 16, intermediateDim: 32,
      layerNormEpsilon: 1e-5, attentionDropoutRate: 0, feedforwardDropoutRate: 0, dtype: "float32", seed: 1,
    });
    const lm = new FalconCausalLM(backbone);
    try {
      assert.throws(() => lm.engine({ maxSequences: 100, maxBatchTokens: 10 }), /maxSequences \(100\) must be at most maxBatchTokens/);
      assert.throws(() => lm.engine({ maxSequences: 0 }), FalconInputError);
      assert.throws(() => lm.engine({ kvCacheBytes: -1 }), FalconInputError);
      assert.throws(() => lm.engine({ prefixCaching: "yes" } as never), FalconInputError);
      assert.throws(() => lm.engine({ blocks: 3 } as never), /unknown engine option "blocks"/);
      assert.throws(() => lm.engine({ kvCacheDtype: "int8" } as never), /kvCacheDtype must be one of float32, bfloat16, float16, got string "int8"/);
    } finally {
      lm.dispose();
    }
  });
});

describe("lm.engine({ kvCacheDtype })", () => {
  it("a 16-bit pool holds twice the blocks of a float32 pool in the same bytes", async () => {
    const backbone = new FalconBackbone({
      vocabularySize: 64, numLayers: 2, numAttentionHeads: 2, hiddenDim: 32, intermediateDim: 64,
      layerNormEpsilon: 1e-5, attentionDropoutRate: 0, feedforwardDropoutRate: 0, dtype: "float32", seed: 1,
    });
    const lm = new FalconCausalLM(backbone);
    try {
      await backbone.nativeModel();
      // Per block: 2 layers × 2 KV heads × (keys + values) × 16 tokens × head size 16, plus 16 valid flags and 16 positions.
      const blockBytes = (element: number) => 2 * 2 * 2 * 16 * 16 * element + 16 * (1 + 4);
      const kvCacheBytes = 10 * blockBytes(4);
      const totals: Record<string, number> = {};
      for (const kvCacheDtype of ["float32", "bfloat16", "float16"] as const) {
        await using engine = lm.engine({ kvCacheBytes, kvCacheDtype });
        totals[kvCacheDtype] = engine.stats().kvBlocks.total;
        assert.equal((await engine.generate([1, 2, 3], { maxNewTokens: 4, stopTokenIds: null })).length, 7);
      }
      assert.deepEqual(totals, { float32: 10, bfloat16: Math.floor(kvCacheBytes / blockBytes(2)), float16: Math.floor(kvCacheBytes / blockBytes(2)) });
    } finally {
      lm.dispose();
    }
  });
});
