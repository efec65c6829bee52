/**
 * `falcon-native run --save DIR`: the tiny text-generation checkpoint. Its files are the same bytes on
 * every run; its tokenizer is a lossless byte-level BPE whose merges compress the corpus; its model's
 * next-token distribution is the corpus bigram model the file describes (recounted here from the
 * corpus, not read from the writer); and generate, chat and the engine run on it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import { FalconCausalLM, FalconTokenizer, renderChat } from "../src/index.js";
import { TINY_CORPUS } from "../src/tiny-checkpoint.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli.js");

interface Result { code: number; stdout: string; stderr: string }

function cli(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 60_000, env: { ...process.env, FALCON_NUM_THREADS: "2" } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

/** log P(next | previous): pair counts over the corpus (each paragraph followed by the end token) plus one unigram-weighted count. */
function expectedLogProbabilities(tokenizer: FalconTokenizer, tokens: number): number[][] {
  const end = tokens - 1;
  const pairs = Array.from({ length: tokens }, () => new Array<number>(tokens).fill(0));
  const unigram = new Array<number>(tokens).fill(1e-3);
  let previous = end;
  for (const paragraph of TINY_CORPUS) {
    for (const id of [...tokenizer.encode(paragraph), end]) {
      pairs[previous]![id]!++;
      unigram[id]!++;
      previous = id;
    }
  }
  const unigramTotal = unigram.reduce((a, b) => a + b);
  return pairs.map((row) => {
    const total = row.reduce((a, b) => a + b);
    return row.map((count, id) => Math.log((count + unigram[id]! / unigramTotal) / (total + 1)));
  });
}

describe("falcon-native run --save: the tiny checkpoint", () => {
  const dir = makeTempDir("falcon-tiny-");
  const preset = path.join(dir, "tiny-falcon");
  let saved: Result;
  before(async () => {
    saved = await cli("run", "--save", preset, "--batch", "1", "--length", "8");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("writes a Hugging Face checkpoint with a tokenizer and a chat template, then runs it", () => {
    assert.equal(saved.code, 0, saved.stderr);
    assert.deepEqual(readdirSync(preset).sort(), ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
    assert.match(saved.stdout, new RegExp(`^saved +${preset.replaceAll("/", "\\/")}: `, "m"));
    assert.match(saved.stdout, new RegExp(`^model +${preset.replaceAll("/", "\\/")}: 1 layers`, "m"));
    assert.match(saved.stdout, /^output +hidden \[1, 8, \d+\], logits \[1, 8, \d+\]$/m);
    const config = JSON.parse(readFileSync(path.join(preset, "tokenizer_config.json"), "utf8")) as { chat_template: string };
    assert.match(config.chat_template, /add_generation_prompt/);
  });

  it("is the same bytes on every run", async () => {
    const again = path.join(dir, "again");
    const result = await cli("run", "--save", again, "--length", "1", "--batch", "1");
    assert.equal(result.code, 0, result.stderr);
    for (const file of readdirSync(preset)) assert.ok(readFileSync(path.join(preset, file)).equals(readFileSync(path.join(again, file))), file);
  });

  it("never writes into a directory that has files, says why it cannot write, and takes no --preset", async () => {
    const occupied = path.join(dir, "occupied");
    mkdirSync(occupied);
    writeFileSync(path.join(occupied, "notes.txt"), "mine");
    const refused = await cli("run", "--save", occupied);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /occupied: directory is not empty; give a new or empty directory/);
    assert.deepEqual(readdirSync(occupied), ["notes.txt"]);
    const underFile = await cli("run", "--save", path.join(occupied, "notes.txt", "tiny"));
    assert.equal(underFile.code, 1);
    assert.match(underFile.stderr, /notes\.txt\/tiny: cannot write the checkpoint: ENOTDIR/);
    const both = await cli("run", "--save", path.join(dir, "other"), "--preset", preset);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--save writes a new checkpoint and runs it; drop --preset/);
  });

  it("has a lossless byte-level BPE tokenizer whose merges shorten the corpus", () => {
    const tokenizer = FalconTokenizer.fromPreset(preset);
    for (const text of ["The falcon dives.", "Ünïcödé 🦅 日本\n\ttabs  and  spaces", "\u0000\u00ff bytes"]) {
      assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
    }
    const corpus = TINY_CORPUS.join("\n");
    const ids = tokenizer.encode(corpus);
    assert.ok(ids.length < Buffer.byteLength(corpus) / 2.5, `${ids.length} tokens for ${Buffer.byteLength(corpus)} bytes`);
    assert.equal(tokenizer.encode(" falcon").length, 1, "a frequent word is one token");
    assert.deepEqual(Array.from(tokenizer.encode("<|endoftext|>")), [tokenizer.vocabularySize - 1]);
  });

  it("predicts each next token with the corpus bigram probabilities", async () => {
    await using lm = await FalconCausalLM.fromPreset(preset);
    const tokens = lm.tokenizer!.vocabularySize;
    assert.equal(lm.backbone.getConfig().vocabularySize, tokens);
    const expected = expectedLogProbabilities(lm.tokenizer!, tokens);
    // Every token as a one-token prompt: row k of the logits is the distribution after k.
    const { data } = await lm.call({ tokenIds: Array.from({ length: tokens }, (_, id) => [id]) });
    let worst = 0;
    for (let previous = 0; previous < tokens; previous++) {
      const row = data.subarray(previous * tokens, (previous + 1) * tokens);
      const max = Math.max(...row);
      const logSum = max + Math.log(row.reduce((sum, logit) => sum + Math.exp(logit - max), 0));
      for (let next = 0; next < tokens; next++) worst = Math.max(worst, Math.abs(row[next]! - logSum - expected[previous]![next]!));
    }
    assert.ok(worst < 1e-3, `largest log-probability error ${worst}`);
  });

  it("generates greedily along the likeliest bigrams, and chats with its template on the engine", async () => {
    await using lm = await FalconCausalLM.fromPreset(preset);
    const tokenizer = lm.tokenizer!;
    const expected = expectedLogProbabilities(tokenizer, tokenizer.vocabularySize);
    const prompt = Array.from(tokenizer.encode("The falcon"));
    const [generated] = await lm.generate([prompt], { maxNewTokens: 12, stopTokenIds: null });
    let previous = prompt.at(-1)!;
    for (const id of Array.from(generated!).slice(prompt.length)) {
      const row = expected[previous]!;
      assert.equal(row[id], Math.max(...row), `after ${previous}: ${id} is the likeliest`);
      previous = id;
    }
    const engine = lm.engine({ maxSequences: 2 });
    try {
      const prompt = renderChat(lm.chatTemplate, [{ role: "user", content: "Where do falcons nest?" }]);
      assert.equal(prompt, "User: Where do falcons nest?\nFalcon:");
      const answer = await engine.complete(prompt, { maxNewTokens: 8, stopTokenIds: null });
      assert.equal(answer.usage.completionTokens, 8);
      // The text leaves the end token out (the model may end a paragraph and start another).
      assert.equal(answer.text, tokenizer.decode(answer.tokenIds.filter((id) => id !== tokenizer.vocabularySize - 1)));
    } finally {
      await engine.close();
    }
  });
});
