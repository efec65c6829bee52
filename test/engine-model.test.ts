/**
 * The engine over real models (the paged step runner and the native sampler): for every HF fixture,
 * concurrent requests with different prompt lengths, samplers and seeds, submitted at staggered
 * times, give exactly lm.generate()'s tokens, and a request's logits rows are bit-identical batched
 * or alone; dynamic NTK rotary models recompute exactly; the model can be disposed and the thread pool
 * resized while the engine runs.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, setNumThreads, type EngineGenerateOptions, type SamplerSpec } from "../src/index.js";
import { native } from "../src/native.js";
import { FIXTURES } from "./helpers/fixtures.js";

const HF = path.join(FIXTURES, "hf");
const CASES = readdirSync(HF).filter((name) => !name.startsWith("_")).sort();
const load = (name: string) => FalconCausalLM.fromPreset(path.join(HF, name, "checkpoint"));

function requests(vocabularySize: number): { prompt: number[]; options: EngineGenerateOptions }[] {
  const samplers: SamplerSpec[] = [
    "greedy",
    { type: "topK", k: 5, temperature: 0.8, seed: 11 },
    { type: "topP", p: 0.9, temperature: 0.7, seed: 12 },
    { type: "random", seed: 13 },
  ];
  return Array.from({ length: 16 }, (_, r) => ({
    prompt: Array.from({ length: 1 + ((r * 13) % 45) }, (_, i) => (r * 31 + i * 17) % vocabularySize),
    options: { maxNewTokens: 3 + (r % 7), stopTokenIds: null, sampler: samplers[r % samplers.length]! },
  }));
}

describe("engine over the fixture models", () => {
  const engines: { close(): Promise<void> }[] = [];
  after(async () => {
    for (const engine of engines) await engine.close();
  });

  for (const name of CASES) {
    it(`${name}: staggered concurrent requests give lm.generate's tokens, and bit-identical logits batched or alone`, async () => {
      const lm = await load(name);
      try {
        const engine = lm.engine({ kvCacheBytes: 32 << 20, maxBatchTokens: 32, maxSequences: 8 });
        engines.push(engine);
        const cases = requests(lm.backbone.getConfig().vocabularySize);
        const alone: number[][] = [];
        for (const { prompt, options } of cases) alone.push(Array.from(await lm.generate(prompt, options)));
        const together = await Promise.all(cases.map(async ({ prompt, options }, r) => {
          await new Promise((resolve) => setTimeout(resolve, r % 5));
          return Array.from(await engine.generate(prompt, options));
        }));
        together.forEach((tokens, r) => assert.deepEqual(tokens, alone[r], `request ${r}`));

        const probe = { maxNewTokens: 4, stopTokenIds: null, returnLogits: true } as const;
        const single = await engine.complete(cases[7]!.prompt, probe);
        const [batched] = await Promise.all([
          engine.complete(cases[7]!.prompt, probe),
          ...cases.slice(0, 8).map(({ prompt, options }) => engine.generate(prompt, options)),
        ]);
        assert.equal(batched.logits!.length, 4);
        batched.logits!.forEach((row, i) => {
          const reference = single.logits![i]!;
          assert.ok(row.every((value, j) => Object.is(value, reference[j])), `logits row ${i} differs when batched`);
        });
        assert.equal(engine.stats().kvBlocks.used, 0);
      } finally {
        lm.dispose();
      }
    });
  }

  it("keeps the model alive when it is disposed mid-request, and survives setNumThreads during steps", async () => {
    const lm = await load(CASES[0]!);
    const engine = lm.engine({ kvCacheBytes: 16 << 20 });
    engines.push(engine);
    const prompt = [1, 2, 3, 4, 5];
    const expected = Array.from(await lm.generate(prompt, { maxNewTokens: 40, stopTokenIds: null }));
    const running = engine.generate(prompt, { maxNewTokens: 40, stopTokenIds: null });
    lm.dispose();
    const threads = native().numThreads();
    setNumThreads(1);
    setNumThreads(threads);
    assert.deepEqual(Array.from(await running), expected);
    assert.deepEqual(Array.from(await engine.generate(prompt, { maxNewTokens: 40, stopTokenIds: null })), expected);
  });

  // A recompute after preemption runs prompt and generated tokens in one chunk (past the prompt, except
  // under dynamic NTK, which recomputes generated tokens one by one at their original lengths).
  for (const dynamic of [true, false]) {
    it(`${dynamic ? "dynamic NTK" : "plain"} rotary: chunked prompts and recomputes after preemption give lm.generate's tokens${dynamic ? "; no prefix caching" : ""}`, async () => {
      const backbone = new FalconBackbone({
        vocabularySize: 97, numLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, hiddenDim: 32, intermediateDim: 64,
        layerNormEpsilon: 1e-5, attentionDropoutRate: 0, feedforwardDropoutRate: 0, dtype: "float32", seed: 5,
        positionEncoding: "rotary", maxPositionEmbeddings: 16, ...(dynamic ? { ropeScaling: { type: "dynamic", factor: 2 } as const } : {}),
      });
      const lm = new FalconCausalLM(backbone);
      try {
        await backbone.nativeModel();
        // 8 blocks (128 slots) for requests of 39, 69 and 54 slots: the pool runs out.
        const engine = lm.engine({ kvCacheBytes: 8 * native().NativeEngine.kvBlockBytes(backbone.nativeHandle), maxBatchTokens: 16, maxSequences: 4 });
        engines.push(engine);
        const prompts = [10, 40, 25].map((length, r) => Array.from({ length }, (_, i) => (i * (7 + 4 * r) + r) % 97));
        const options = { maxNewTokens: 30, stopTokenIds: null };
        const alone: number[][] = [];
        for (const prompt of prompts) alone.push(Array.from(await lm.generate(prompt, options)));
        const together = await Promise.all(prompts.map((prompt) => engine.generate(prompt, options)));
        together.forEach((tokens, r) => assert.deepEqual(Array.from(tokens), alone[r], `request ${r}`));
        assert.ok(engine.stats().preemptions > 0, "the pool should have run out");
        assert.deepEqual(Array.from(await engine.generate(prompts[1]!, options)), alone[1]);
        if (dynamic) assert.equal(engine.stats().prefixHitTokens, 0);
      } finally {
        lm.dispose();
      }
    });
  }

  it("sizes the default pool from the model (at most maxSequences full contexts)", async () => {
    const lm = await load(CASES[0]!);
    try {
      const engine = lm.engine({ maxSequences: 4, maxBatchTokens: 64 });
      engines.push(engine);
      const context = Math.min(lm.backbone.getConfig().maxPositionEmbeddings, 1 << 20);
      const { total } = engine.stats().kvBlocks;
      assert.ok(total >= 1 && total <= 4 * Math.ceil(context / 16), `${total} blocks`);
    } finally {
      lm.dispose();
    }
  });
});
