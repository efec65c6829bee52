/** FalconCausalLMPreprocessor: keras-hub's packing (start token, right padding, truncation) and id inputs. */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, describe, it } from "node:test";

import { FalconCausalLMPreprocessor, FalconInputError, TokenStreamDecoder } from "../src/index.js";
import { END_OF_TEXT_ID, makeTempDir } from "./helpers/gpt2-vocab.js";
import { writeKerasTokenizer } from "./helpers/text-model.js";

const dir = makeTempDir("falcon-preprocessor-test-");
after(() => rmSync(dir, { recursive: true, force: true }));
const tokenizer = writeKerasTokenizer(dir);
const preprocessor = new FalconCausalLMPreprocessor(tokenizer);

const rows = (flat: ArrayLike<number>, width: number) =>
  Array.from({ length: flat.length / width }, (_, r) => Array.from(flat).slice(r * width, (r + 1) * width));

describe("FalconCausalLMPreprocessor", () => {
  it("has keras-hub's defaults and the tokenizer's special ids", () => {
    assert.equal(preprocessor.sequenceLength, 1024);
    assert.equal(preprocessor.addStartToken, true);
    assert.equal(preprocessor.addEndToken, true);
    assert.equal(preprocessor.startTokenId, END_OF_TEXT_ID);
    assert.equal(preprocessor.endTokenId, END_OF_TEXT_ID);
    assert.equal(preprocessor.padTokenId, 0);
  });

  it("generatePreprocess: start token, right padding with 0, padding mask and lengths", () => {
    const hello = Array.from(tokenizer.encode("Hello"));
    const long = Array.from(tokenizer.encode("Once upon a time there was"));
    const packed = preprocessor.generatePreprocess(["Hello", "Once upon a time there was"]);
    const width = long.length + 1;
    assert.deepEqual(packed.shape, [2, width]);
    assert.deepEqual(rows(packed.tokenIds, width), [
      [END_OF_TEXT_ID, ...hello, ...new Array(width - hello.length - 1).fill(0)],
      [END_OF_TEXT_ID, ...long],
    ]);
    assert.deepEqual(rows(packed.paddingMask, width), [
      [...new Array(hello.length + 1).fill(1), ...new Array(width - hello.length - 1).fill(0)],
      new Array(width).fill(1),
    ]);
    assert.deepEqual(Array.from(packed.lengths), [hello.length + 1, width]);
    assert.equal(packed.kind, "text");
    assert.equal(packed.single, false);
    const single = preprocessor.generatePreprocess("Hello");
    assert.equal(single.single, true);
    assert.deepEqual(Array.from(single.tokenIds), [END_OF_TEXT_ID, ...hello]);
  });

  it("truncates from the right at sequenceLength, and can pad to it as keras-hub's packer", () => {
    const short = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength: 4 });
    const ids = Array.from(tokenizer.encode("one two three four five"));
    const packed = short.generatePreprocess(["one two three four five", "one"]);
    assert.deepEqual(rows(packed.tokenIds, 4), [[END_OF_TEXT_ID, ...ids.slice(0, 3)], [END_OF_TEXT_ID, ids[0]!, 0, 0]]);
    assert.deepEqual(Array.from(packed.lengths), [4, 2]);
    const padded = preprocessor.generatePreprocess("one", { padTo: "sequenceLength", sequenceLength: 6 });
    assert.deepEqual(Array.from(padded.tokenIds), [END_OF_TEXT_ID, ids[0]!, 0, 0, 0, 0]);
    assert.deepEqual(Array.from(padded.paddingMask), [1, 1, 0, 0, 0, 0]);
  });

  it("addStartToken false leaves text as the tokenizer encodes it", () => {
    const bare = new FalconCausalLMPreprocessor(tokenizer, { addStartToken: false });
    assert.deepEqual(Array.from(bare.generatePreprocess("Hello").tokenIds), Array.from(tokenizer.encode("Hello")));
    assert.throws(() => bare.generatePreprocess(""), /prompt 0 is empty/);
    assert.deepEqual(Array.from(preprocessor.generatePreprocess("").tokenIds), [END_OF_TEXT_ID]);
  });

  it("takes token ids verbatim: a row, an Int32Array, a ragged batch", () => {
    const one = preprocessor.generatePreprocess([5, 6, 7]);
    assert.deepEqual([Array.from(one.tokenIds), one.kind, one.single], [[5, 6, 7], "ids", true]);
    const typed = preprocessor.generatePreprocess(Int32Array.of(9, 8));
    assert.deepEqual([Array.from(typed.tokenIds), typed.single], [[9, 8], true]);
    const ragged = preprocessor.generatePreprocess([[1, 2, 3], Int32Array.of(4), [5, 6]]);
    assert.deepEqual(rows(ragged.tokenIds, 3), [[1, 2, 3], [4, 0, 0], [5, 6, 0]]);
    assert.deepEqual(rows(ragged.paddingMask, 3), [[1, 1, 1], [1, 0, 0], [1, 1, 0]]);
    assert.deepEqual(Array.from(ragged.lengths), [3, 1, 2]);
    assert.equal(ragged.single, false);
  });

  it("takes a padded batch with its mask as given (left padding: a row ends at its last real token)", () => {
    const packed = preprocessor.generatePreprocess({ tokenIds: [[0, 0, 30, 65], [35, 92, 67, 92], [7, 8, 0, 0]], paddingMask: [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]] });
    assert.deepEqual(Array.from(packed.lengths), [4, 4, 2]);
    assert.deepEqual(rows(packed.tokenIds, 4)[0], [0, 0, 30, 65]);
    assert.equal(packed.kind, "ids");
    assert.throws(() => preprocessor.generatePreprocess({ tokenIds: [[1, 2]], paddingMask: [[0, 0]] }), /no real token/);
  });

  it("rejects malformed prompts with FalconInputError", () => {
    const bad: [unknown, RegExp][] = [
      [[], /empty array/],
      [["a", 1], /not a string/],
      [[[1], "a"], /not an array of token ids/],
      [[-1], /non-negative integer token id/],
      [[1.5], /non-negative integer token id/],
      [[[1], []], /prompt 1 is empty/],
      [42, /prompts must be a string/],
      [[{}], /prompts\[0\] must be/],
    ];
    for (const [prompts, message] of bad) {
      assert.throws(() => preprocessor.generatePreprocess(prompts as never), (error: unknown) => error instanceof FalconInputError && message.test(error.message), String(prompts));
    }
  });

  it("rejects arguments of the wrong type with FalconInputError, not TypeError", () => {
    const cases: [() => unknown, RegExp][] = [
      [() => preprocessor.call(5 as never), /call\(\) takes a text or an array of texts, got number 5/],
      [() => preprocessor.call(null as never), /call\(\) takes a text or an array of texts, got null/],
      [() => preprocessor.call(["a", 7] as never), /call\(\) takes a text or an array of texts, got an array of 2/],
      [() => preprocessor.tokenize("a", 1n as never), /maxLength must be a positive integer, got bigint 1/],
      [() => preprocessor.tokenize("a", 0), /maxLength must be a positive integer, got number 0/],
      [() => tokenizer.encodePrefix("a", 1n as never), /maxTokens must be a non-negative number, got bigint 1/],
      [() => preprocessor.detokenize(null as never), /withoutSpecialTokens takes an array of token ids, got null/],
      [() => preprocessor.detokenize({ length: 1e12 } as never), /withoutSpecialTokens takes an array of token ids, got an object/],
      [() => tokenizer.decode(null as never), /decode takes an array of token ids, got null/],
      [() => tokenizer.decode("12" as never), /decode takes an array of token ids, got string "12"/],
    ];
    for (const [call, message] of cases) {
      assert.throws(call, (error: unknown) => {
        assert.ok(error instanceof FalconInputError, `${String(call)}: ${String(error)}`);
        assert.match(error.message, message);
        return true;
      });
    }
    // null options are no options, as undefined is.
    assert.deepEqual(preprocessor.generatePreprocess("Hi", null as never), preprocessor.generatePreprocess("Hi"));
  });

  it("without a tokenizer, ids work and text names the fix", () => {
    const idsOnly = new FalconCausalLMPreprocessor(undefined, { endTokenId: 11 });
    assert.deepEqual(Array.from(idsOnly.generatePreprocess([[3, 4]]).tokenIds), [3, 4]);
    assert.equal(idsOnly.endTokenId, 11);
    assert.equal(idsOnly.padTokenId, 0);
    assert.throws(() => idsOnly.generatePreprocess("text"), (error: unknown) =>
      error instanceof FalconInputError && /need a tokenizer/.test(error.message) && /token ids instead/.test(error.message));
  });

  it("call() packs for training as keras-hub: x = ids[:-1], y = ids[1:], sampleWeight = mask[1:]", () => {
    const training = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength: 6 });
    const ids = Array.from(tokenizer.encode("Hi there"));
    const { x, y, sampleWeight } = training.call(["Hi there"]);
    const packed = [END_OF_TEXT_ID, ...ids, END_OF_TEXT_ID];
    const full = [...packed, ...new Array(7 - packed.length).fill(0)];
    assert.deepEqual(Array.from(x.tokenIds), full.slice(0, 6));
    assert.deepEqual(Array.from(y), full.slice(1, 7));
    assert.deepEqual(Array.from(x.paddingMask), full.slice(0, 6).map((_, i) => (i < packed.length ? 1 : 0)));
    assert.deepEqual(Array.from(sampleWeight), full.slice(1, 7).map((_, i) => (i + 1 < packed.length ? 1 : 0)));
  });

  it("detokenize drops start and end tokens, as keras-hub's generate_postprocess", () => {
    const ids = [END_OF_TEXT_ID, ...tokenizer.encode("Hello world"), END_OF_TEXT_ID];
    assert.equal(preprocessor.detokenize(ids), "Hello world");
  });
});

describe("TokenStreamDecoder", () => {
  it("never splits a UTF-8 character and its pieces add up to the full decode", () => {
    const text = "naïve 🦅 falcons 日本語 — ok\u{1F600}!";
    const ids = tokenizer.encode(text);
    const decoder = new TokenStreamDecoder(tokenizer);
    const pieces = Array.from(ids, (id) => decoder.push(id));
    pieces.push(decoder.flush());
    assert.equal(pieces.join(""), text);
    assert.ok(pieces.includes(""), "some tokens end inside a character and wait for the next");
    for (const piece of pieces) {
      assert.ok(!piece.includes("\uFFFD"), `piece ${JSON.stringify(piece)}`);
      assert.ok(!/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(piece), "no split surrogate pair");
    }
  });

  it("skips the ids it is told to and flushes an unfinished character as U+FFFD, like decode()", () => {
    const eagle = tokenizer.encode("🦅");
    const decoder = new TokenStreamDecoder(tokenizer, (id) => id === END_OF_TEXT_ID);
    assert.equal(decoder.push(END_OF_TEXT_ID), "");
    assert.equal(decoder.push(eagle[0]!), "");
    assert.equal(decoder.flush(), tokenizer.decode(eagle.subarray(0, 1)));
    assert.equal(decoder.push(tokenizer.encode("A")[0]!), "A");
  });
});
