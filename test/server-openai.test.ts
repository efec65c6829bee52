/**
 * The server through the official `openai` client: completions and chat, JSON and streamed, n > 1,
 * stop strings, logprobs, echo, usage, aborts. Greedy results must equal lm.generate() on the same
 * prompt (the TypeScript loop), and a choice with seed s + i must equal a lone request with seed s + i.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import OpenAI from "openai";

import { renderChat } from "../src/chat-template.js";
import { createServer, FalconCausalLM, type FalconServer } from "../src/index.js";
import { sleep, waitFor } from "./helpers/fake-engine.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { writeRandomTextCheckpoint } from "./helpers/text-model.js";

const MODEL = "tiny-falcon";
const API_KEY = "sk-test-key";

describe("server: the official openai client", () => {
  const dir = makeTempDir("falcon-server-openai-");
  let lm: FalconCausalLM;
  let server: FalconServer;
  let client: OpenAI;
  let baseUrl: string;

  before(async () => {
    writeRandomTextCheckpoint(path.join(dir, "model"));
    lm = await FalconCausalLM.fromPreset(path.join(dir, "model"));
    server = createServer(lm, { modelName: MODEL, apiKey: API_KEY, engine: { maxBatchTokens: 64 } });
    const { url } = await server.listen({ port: 0 });
    baseUrl = url;
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: API_KEY, maxRetries: 0 });
  });

  after(async () => {
    await server.close({ graceMs: 0 });
    lm.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** lm.generate()'s greedy completion text (the TypeScript loop, not the engine). */
  const greedy = (prompt: string, maxNewTokens: number) =>
    lm.generate(prompt, { maxNewTokens, sampler: "greedy", stripPrompt: true });

  it("lists the model", async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((model) => model.id), [MODEL]);
  });

  it("greedy completions equal lm.generate, with usage and the finish reason", async () => {
    for (const prompt of ["The falcon", "Once upon a time, in a land far away,", "1 2 3"]) {
      const response = await client.completions.create({ model: MODEL, prompt, max_tokens: 12, temperature: 0 });
      assert.equal(response.object, "text_completion");
      assert.equal(response.choices.length, 1);
      assert.equal(response.choices[0]!.text, await greedy(prompt, 12));
      assert.equal(response.choices[0]!.finish_reason, "length");
      const promptTokens = lm.tokenizer!.encode(prompt).length;
      assert.deepEqual(response.usage, { prompt_tokens: promptTokens, completion_tokens: 12, total_tokens: promptTokens + 12 });
    }
  });

  it("a token-id prompt gives what its text gives; a prompt list gives a choice per prompt, in order", async () => {
    const texts = ["The falcon", "A kestrel hovers"];
    const ids = texts.map((text) => Array.from(lm.tokenizer!.encode(text)));
    const byText = await client.completions.create({ model: MODEL, prompt: texts, max_tokens: 6, temperature: 0 });
    const byIds = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 6, temperature: 0 });
    const single = await client.completions.create({ model: MODEL, prompt: ids[1]!, max_tokens: 6, temperature: 0 });
    assert.deepEqual(byText.choices.map((choice) => choice.index), [0, 1]);
    assert.deepEqual(byIds.choices.map((choice) => choice.text), byText.choices.map((choice) => choice.text));
    assert.equal(single.choices[0]!.text, byText.choices[1]!.text);
    assert.equal(byText.choices[0]!.text, await greedy(texts[0]!, 6));
    assert.equal(byText.usage!.prompt_tokens, ids[0]!.length + ids[1]!.length);
  });

  it("streams completions: the pieces join to the JSON answer; include_usage adds a usage chunk", async () => {
    const prompt = "The falcon";
    const whole = await client.completions.create({ model: MODEL, prompt, max_tokens: 10, temperature: 0 });
    const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    const finishReasons: (string | null)[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        finishReasons.push(choice.finish_reason);
      }
    }
    assert.equal(text, whole.choices[0]!.text);
    assert.equal(finishReasons.at(-1), "length");
    assert.ok(finishReasons.slice(0, -1).every((reason) => reason === null));
    assert.deepEqual(usage, whole.usage);
  });

  it("greedy chat equals lm.generate on the rendered template; streamed deltas join to the message", async () => {
    const messages = [
      { role: "system" as const, content: "You are a falcon." },
      { role: "user" as const, content: "What do you hunt?" },
    ];
    const response = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 9, temperature: 0 });
    const expected = await greedy(renderChat(lm.chatTemplate, messages), 9);
    assert.equal(response.object, "chat.completion");
    assert.equal(response.choices[0]!.message.role, "assistant");
    assert.equal(response.choices[0]!.message.content, expected);
    assert.equal(response.choices[0]!.finish_reason, "length");

    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 9, temperature: 0, stream: true });
    const deltas: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      for (const choice of chunk.choices) {
        deltas.push(choice.delta);
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(deltas[0]!.role, "assistant");
    assert.equal(deltas.map((delta) => delta.content ?? "").join(""), expected);
    assert.equal(finish, "length");
  });

  it("n > 1 with a seed: choice i equals a lone request with seed + i", async () => {
    const prompt = "The falcon";
    const sampling = { temperature: 0.9, top_p: 0.95, top_k: 50 };
    const many = await client.completions.create({ model: MODEL, prompt, max_tokens: 8, n: 3, seed: 40, ...sampling });
    assert.deepEqual(many.choices.map((choice) => choice.index), [0, 1, 2]);
    for (let i = 0; i < 3; i++) {
      const alone = await client.completions.create({ model: MODEL, prompt, max_tokens: 8, seed: 40 + i, ...sampling });
      assert.equal(many.choices[i]!.text, alone.choices[0]!.text, `choice ${i}`);
    }
    assert.notEqual(many.choices[0]!.text, many.choices[1]!.text, "different seeds sample differently");
    // n choices share the prompt: usage counts it once.
    assert.equal(many.usage!.prompt_tokens, lm.tokenizer!.encode(prompt).length);
    assert.equal(many.usage!.completion_tokens, 24);

    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 5, n: 2, seed: 7 });
    assert.deepEqual(chat.choices.map((choice) => choice.index), [0, 1]);
  });

  it("stop strings cut the text before them (across token boundaries) and are never streamed", async () => {
    const prompt = "Once upon a time";
    const full = await greedy(prompt, 16);
    // A stop string that starts inside one token and ends inside a later one.
    const at = Math.floor(full.length / 2);
    const stop = full.slice(at - 2, at + 3);
    assert.ok(stop.length === 5 && full.indexOf(stop) >= 0);
    const cut = full.slice(0, full.indexOf(stop));
    const response = await client.completions.create({ model: MODEL, prompt, max_tokens: 16, temperature: 0, stop: [stop, "never-there"] });
    assert.equal(response.choices[0]!.text, cut);
    assert.equal(response.choices[0]!.finish_reason, "stop");
    const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: 16, temperature: 0, stop, stream: true });
    let streamed = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(streamed, cut);
    assert.equal(finish, "stop");
  });

  it("stop_token_ids stop at a token; ignore_eos never stops at the end token", async () => {
    const prompt = "The falcon";
    const ids = (await lm.generate(Int32Array.from(lm.tokenizer!.encode(prompt)), { maxNewTokens: 8, sampler: "greedy", stripPrompt: true, stopTokenIds: null })) as Int32Array;
    const response = await client.completions.create({ model: MODEL, prompt, max_tokens: 8, temperature: 0, stop_token_ids: [ids[2]!] } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(response.choices[0]!.finish_reason, "stop");
    assert.equal(response.usage!.completion_tokens, ids.indexOf(ids[2]!) + 1);
  });

  it("completion logprobs: the sampled token and its top alternatives, in OpenAI's legacy shape", async () => {
    const response = await client.completions.create({ model: MODEL, prompt: "The falcon", max_tokens: 5, temperature: 0, logprobs: 3 });
    const logprobs = response.choices[0]!.logprobs!;
    assert.equal(logprobs.tokens!.length, 5);
    assert.equal(logprobs.tokens!.join(""), response.choices[0]!.text);
    assert.deepEqual(logprobs.text_offset, logprobs.tokens!.map((_, i) => logprobs.tokens!.slice(0, i).join("").length));
    logprobs.top_logprobs!.forEach((top, i) => {
      const values = Object.values(top);
      assert.ok(values.length >= 1 && values.length <= 3);
      // Greedy: the sampled token is the most likely one.
      assert.equal(logprobs.token_logprobs![i], Math.max(...values));
      assert.ok(logprobs.token_logprobs![i]! <= 0);
    });
  });

  it("chat logprobs: content entries with bytes and top_logprobs", async () => {
    const response = await client.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: "Hello" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
    });
    const content = response.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 4);
    assert.equal(content.map((entry) => entry.token).join(""), response.choices[0]!.message.content);
    for (const entry of content) {
      assert.equal(entry.top_logprobs.length, 2);
      assert.equal(entry.logprob, entry.top_logprobs[0]!.logprob);
      assert.equal(Buffer.from(entry.bytes!).toString("utf8"), entry.token);
    }
  });

  it("echo puts the prompt before the completion", async () => {
    const prompt = "The falcon";
    const response = await client.completions.create({ model: MODEL, prompt, max_tokens: 4, temperature: 0, echo: true });
    assert.equal(response.choices[0]!.text, prompt + await greedy(prompt, 4));
    const scoring = await client.completions.create({ model: MODEL, prompt, max_tokens: 0, echo: true });
    assert.equal(scoring.choices[0]!.text, prompt);
    assert.equal(scoring.usage!.completion_tokens, 0);
  });

  it("a client that aborts mid-stream cancels its sequence: no sequence runs and no KV block stays in use", async () => {
    const before = server.engine!.stats().generatedTokens;
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: MODEL, prompt: "The falcon", max_tokens: 400, temperature: 0, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _chunk of stream) {
        if (++chunks === 3) {
          controller.abort();
          break;
        }
      }
    } catch (error) {
      // Some versions of the client throw their abort error rather than end the loop.
      assert.ok(["APIUserAbortError", "AbortError"].includes((error as Error).name), String(error));
    }
    assert.equal(chunks, 3);
    const engine = server.engine!;
    await waitFor(() => engine.stats().running === 0 && engine.stats().kvBlocks.used === 0, "the aborted sequence to be cancelled");
    const generated = engine.stats().generatedTokens;
    assert.ok(generated - before < 400, `cancelled before its 400 tokens (${generated - before} generated)`);
    await sleep(100);
    assert.equal(engine.stats().generatedTokens, generated, "nothing generates after the abort");
  });

  it("/metrics reports requests, tokens, latencies and the engine's state in Prometheus text", async () => {
    const engine = server.engine!;
    await waitFor(() => engine.stats().running === 0 && engine.stats().kvBlocks.used === 0, "the engine to go idle");
    const text = await (await fetch(`${baseUrl}/metrics`)).text();
    for (const name of [
      "falcon_requests_total", "falcon_prompt_tokens_total", "falcon_generation_tokens_total", "falcon_time_to_first_token_seconds_bucket",
      "falcon_inter_token_latency_seconds_bucket", "falcon_queue_depth", "falcon_running_sequences", "falcon_kv_blocks",
      "falcon_prefix_cache_hit_rate", "falcon_process_resident_memory_bytes",
    ]) assert.match(text, new RegExp(`^${name}`, "m"), name);
    assert.match(text, /^falcon_requests_total\{endpoint="\/v1\/completions",status="200"\} [1-9]/m);
    assert.ok(Number(/^falcon_generation_tokens_total (\d+)/m.exec(text)![1]) > 0);
    assert.match(text, /^falcon_kv_blocks\{state="used"\} 0$/m);
  });
});
