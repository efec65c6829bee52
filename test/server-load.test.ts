/**
 * 64 streaming clients at once, with mixed prompt and output lengths and mixed samplers, on a KV pool
 * too small for all of them (sequences are preempted and recomputed): every response must equal the
 * same request sent alone, none may be lost or duplicated, and afterwards nothing runs and no KV block
 * is in use.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import OpenAI from "openai";

import { createServer, FalconCausalLM, type FalconServer } from "../src/index.js";
import { waitFor } from "./helpers/fake-engine.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { seededRandom } from "./helpers/seeded-random.js";
import { writeRandomTextCheckpoint } from "./helpers/text-model.js";

const MODEL = "tiny-falcon";
const CLIENTS = 64;
const WORDS = ["falcon", "the", "sky", "hunts", "over", "a", "river", "swift", "and", "silent", "wings", "of", "dawn", "🦅", "日本"];

interface Outcome {
  text: string;
  finishReason: string | null;
  completionTokens: number;
}

describe("server: 64 concurrent streaming clients", () => {
  const dir = makeTempDir("falcon-server-load-");
  let lm: FalconCausalLM;
  let server: FalconServer;
  let client: OpenAI;

  before(async () => {
    writeRandomTextCheckpoint(path.join(dir, "model"), 3);
    lm = await FalconCausalLM.fromPreset(path.join(dir, "model"));
    // 30 blocks of 16 tokens (2 KiB each for this model): room for about four of the longest (~110 tokens) at once.
    // With 60 blocks, a run whose clients arrived slowly once finished without a single preemption; with 30, idle
    // and with both cores busy elsewhere, runs preempt 18-21 times.
    server = createServer(lm, { modelName: MODEL, engine: { kvCacheBytes: 30 * 2048, maxBatchTokens: 128, maxSequences: 32 } });
    const { url } = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  });

  after(async () => {
    await server.close({ graceMs: 0 });
    lm.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it("every response equals its solo run; none lost or duplicated; nothing left running", async () => {
    const random = seededRandom(12);
    const requests = Array.from({ length: CLIENTS }, (_, i) => {
      const words = Array.from({ length: 1 + Math.floor(random() * 40) }, () => WORDS[Math.floor(random() * WORDS.length)]!);
      const sampling = i % 3 === 0 ? { temperature: 0 } : i % 3 === 1 ? { temperature: 0.8, seed: i } : { top_p: 0.9, top_k: 20, seed: 1000 + i };
      return { model: MODEL, prompt: words.join(" "), max_tokens: 1 + Math.floor(random() * 48), ...sampling };
    });
    const ids = new Set<string>();
    const streamed = await Promise.all(requests.map(async (request): Promise<Outcome> => {
      const stream = await client.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
      const outcome: Outcome = { text: "", finishReason: null, completionTokens: -1 };
      for await (const chunk of stream) {
        ids.add(chunk.id);
        for (const choice of chunk.choices) {
          outcome.text += choice.text;
          outcome.finishReason = choice.finish_reason ?? outcome.finishReason;
        }
        if (chunk.usage) outcome.completionTokens = chunk.usage.completion_tokens;
      }
      return outcome;
    }));
    assert.equal(ids.size, CLIENTS, "one response id per request");
    const stats = server.engine!.stats();
    assert.ok(stats.preemptions > 0, "the pool was too small for everyone at once (the test covers preemption)");
    for (const [i, request] of requests.entries()) {
      const alone = await client.completions.create(request);
      const expected: Outcome = {
        text: alone.choices[0]!.text, finishReason: alone.choices[0]!.finish_reason, completionTokens: alone.usage!.completion_tokens,
      };
      assert.deepEqual(streamed[i], expected, `request ${i}`);
    }
    const engine = server.engine!;
    await waitFor(() => engine.stats().running === 0 && engine.stats().waiting === 0, "the engine to go idle");
    assert.equal(engine.stats().kvBlocks.used, 0);
  });
});
