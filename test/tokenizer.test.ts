import assert from "node:assert/strict";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Tiktoken } from "js-tiktoken/lite";
import r50kBase from "js-tiktoken/ranks/r50k_base";
import { FalconInputError, FalconPresetError } from "../src/errors.js";
import { BYTE_TO_UNICODE, FalconTokenizer } from "../src/tokenizer.js";
import {
  END_OF_TEXT,
  END_OF_TEXT_ID,
  type Gpt2Vocabulary,
  type Merge,
  gpt2Vocabulary,
  hfTokenizerJson,
  makeTempDir,
  mergesText,
  writeKerasPreset,
} from "./helpers/gpt2-vocab.js";
import { seededRandom } from "./helpers/seeded-random.js";

const tempRoot = makeTempDir("falcon-tokenizer-test-");
after(() => rmSync(tempRoot, { recursive: true, force: true }));

const gpt2 = gpt2Vocabulary();
const kerasPresetDir = join(tempRoot, "keras-preset");
writeKerasPreset(kerasPresetDir, gpt2);
const hfStringMergesPath = join(tempRoot, "hf-string-merges.json");
writeFileSync(hfStringMergesPath, JSON.stringify(hfTokenizerJson(gpt2, "string")));
const hfPairMergesDir = join(tempRoot, "hf-pair-merges");
mkdirSync(hfPairMergesDir);
writeFileSync(join(hfPairMergesDir, "tokenizer.json"), JSON.stringify(hfTokenizerJson(gpt2, "pair")));

const tokenizer = FalconTokenizer.fromPreset(kerasPresetDir);

/** Stock js-tiktoken r50k_base: the GPT-2 encoding. */
const tiktoken = new Tiktoken(r50kBase);
/**
 * js-tiktoken compiles the GPT-2 regex as a JavaScript RegExp, whose `\s` counts U+FEFF as
 * whitespace and U+0085 not, unlike the Python `regex` module OpenAI's GPT-2 used (and Oniguruma in
 * HF tokenizers, and Rust in tiktoken). This copy uses Unicode White_Space, which is what GPT-2 means.
 */
const tiktokenUnicodeWhitespace = new Tiktoken({
  ...r50kBase,
  pat_str: r50kBase.pat_str.replaceAll("\\s", "\\p{White_Space}").replaceAll("\\S", "\\P{White_Space}"),
});
const JS_WHITESPACE_MISMATCH = /[\u0085\ufeff]/u;

const corpus: readonly string[] = [
  "Hello, world! This is a test of the GPT-2 tokenizer.",
  "The quick brown fox jumps over the lazy dog.\nIt was the best of times, it was the worst of times.",
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
  "const x = {a: [1, 2, 3]}; // comment\nconsole.log(x?.a ?? 'none');",
  "12345 3.14 -0.001 1e10 2024-01-01 $1,000,000.00 007",
  "!!!??? ... --- *** ((([[[{{{}}}]]]))) @#$%^&* ~~~ ```",
  "don't I'll we've they're she's it'd I'm",
  "DON'T I'LL We'Ve 'tis o'clock ''",
  "   multiple   spaces   between    words   ",
  "\n\n\nnewlines\n\n",
  "\ttabs\t\tand\t mixed \t\n whitespace \r\n",
  "trailing spaces     ",
  "😀 👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ 🦜",
  "我爱自然语言处理。日本語のテキスト、한국어 텍스트",
  "مرحبا بالعالم، كيف حالك؟",
  "Hello мир 世界 مرحبا שלום नमस्ते",
  "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353algo",
  "a\u00a0b\u2003c\u3000d\u200be\u2028f",
  END_OF_TEXT,
  `Text before${END_OF_TEXT}text after${END_OF_TEXT}`,
  "<|endoftext| is not special, nor <|endoftext",
  "https://example.com/path?q=1&r=2 user@example.org",
  '<div class="x">Hi &amp; bye</div>',
  '{"key": [true, false, null], "n": -12.5e+3}',
  "antidisestablishmentarianism supercalifragilisticexpialidocious",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ================",
  "\u0000\u0001\u001f\u007f control",
  " ",
  "Αλφα Βήτα Привет, как дела?",
  "∀x∈ℝ: x² ≥ 0 ∑ ∫ √2 ≈ 1.414",
  "١٢٣ ４５６ 789",
  "สวัสดีครับ",
];

/** Strings mixing scripts, emoji, combining marks, every Unicode space, contractions and specials. */
function randomUnicodeStrings(count: number, seed: number): string[] {
  const random = seededRandom(seed);
  const below = (n: number): number => Math.floor(random() * n);
  const inRange = (low: number, high: number) => (): string => String.fromCodePoint(low + below(high - low + 1));
  const unicodeSpaces = [0x9, 0xa, 0xb, 0xc, 0xd, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2005, 0x200a, 0x200b, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff];
  const pieces: Array<() => string> = [
    inRange(0x20, 0x7e),
    inRange(0x20, 0x7e),
    inRange(0x80, 0x24f),
    inRange(0x300, 0x36f),
    inRange(0x4e00, 0x9fff),
    inRange(0xac00, 0xd7a3),
    inRange(0x600, 0x6ff),
    inRange(0x900, 0x97f),
    inRange(0x1f300, 0x1faff),
    () => ["\u200d", "\ufe0f", "'s", "'ll", "'T", " '", "1", "١", "０"][below(9)]!,
    () => String.fromCodePoint(unicodeSpaces[below(unicodeSpaces.length)]!),
    () => " ".repeat(1 + below(4)),
    () => (random() < 0.1 ? END_OF_TEXT : "\n"),
    () => {
      // Any scalar value, including unassigned and private-use ones; surrogates are not characters.
      const codePoint = below(0x110000 - 0x800);
      return String.fromCodePoint(codePoint < 0xd800 ? codePoint : codePoint + 0x800);
    },
  ];
  return Array.from({ length: count }, () =>
    Array.from({ length: 1 + below(40) }, () => pieces[below(pieces.length)]!()).join(""),
  );
}

const randomCorpus = randomUnicodeStrings(300, 20240611);
const allTexts = [...corpus, ...randomCorpus];

const show = (text: string): string => JSON.stringify(text);

describe("FalconTokenizer on the GPT-2 vocabulary (keras-hub preset)", () => {
  it("has GPT-2's sizes and special tokens", () => {
    assert.equal(tokenizer.vocabularySize, 50257);
    assert.equal(tokenizer.startTokenId, END_OF_TEXT_ID);
    assert.equal(tokenizer.endTokenId, END_OF_TEXT_ID);
    assert.equal(tokenizer.padTokenId, 0);
    assert.equal(tokenizer.idToToken(END_OF_TEXT_ID), END_OF_TEXT);
    assert.equal(tokenizer.tokenToId(END_OF_TEXT), END_OF_TEXT_ID);
    assert.equal(tokenizer.tokenToId("Ġthe"), 262);
    assert.equal(tokenizer.idToToken(262), "Ġthe");
    assert.equal(tokenizer.tokenToId("no such token"), undefined);
  });

  it("gives js-tiktoken r50k_base ids on the fixed corpus", () => {
    for (const text of corpus) {
      assert.deepEqual(Array.from(tokenizer.encode(text)), tiktoken.encode(text, "all"), show(text));
    }
  });

  it("gives r50k_base ids on random Unicode strings", () => {
    for (const text of randomCorpus) {
      const ids = Array.from(tokenizer.encode(text));
      assert.deepEqual(ids, tiktokenUnicodeWhitespace.encode(text, "all"), show(text));
      if (!JS_WHITESPACE_MISMATCH.test(text)) assert.deepEqual(ids, tiktoken.encode(text, "all"), show(text));
    }
  });

  it("splits on Unicode White_Space like GPT-2's Python regex, not JavaScript's \\s", () => {
    // Python: regex.findall(GPT2_PATTERN, "a \x85b") == ["a", " ", "\x85", "b"], and for "a \ufeffb"
    // == ["a", " \ufeff", "b"]; JavaScript's \s gives ["a", " \x85", "b"] and ["a", " ", "\ufeff", "b"].
    const pieceIds = (pieces: string[]): number[] => pieces.flatMap((piece) => Array.from(tokenizer.encode(piece)));
    assert.deepEqual(Array.from(tokenizer.encode("a \u0085b")), pieceIds(["a", " ", "\u0085", "b"]));
    assert.deepEqual(Array.from(tokenizer.encode("a \ufeffb")), pieceIds(["a", " \ufeff", "b"]));
    assert.notDeepEqual(Array.from(tokenizer.encode("a \u0085b")), tiktoken.encode("a \u0085b"));
  });

  it("round-trips every string exactly", () => {
    for (const text of allTexts) assert.equal(tokenizer.decode(tokenizer.encode(text)), text, show(text));
    assert.equal(tokenizer.decode(tokenizer.encode("\ufeffleading byte order mark")), "\ufeffleading byte order mark");
    assert.equal(tokenizer.decode(tokenizer.encode("spaces before punctuation , . ? !")), "spaces before punctuation , . ? !");
  });

  it("never splits <|endoftext|>", () => {
    assert.deepEqual(Array.from(tokenizer.encode(END_OF_TEXT)), [END_OF_TEXT_ID]);
    assert.deepEqual(Array.from(tokenizer.encode(`a${END_OF_TEXT}${END_OF_TEXT} b`)), [64, END_OF_TEXT_ID, END_OF_TEXT_ID, 275]);
    assert.equal(tokenizer.decode([END_OF_TEXT_ID]), END_OF_TEXT);
  });

  it("handles empty input", () => {
    assert.equal(tokenizer.encode("").length, 0);
    assert.equal(tokenizer.decode([]), "");
    assert.equal(tokenizer.decodeBytes(new Int32Array(0)).length, 0);
  });

  it("encodes and decodes batches like single calls", () => {
    const texts = corpus.slice(0, 8);
    const batch = tokenizer.encodeBatch(texts);
    batch.forEach((ids, i) => {
      assert.ok(ids instanceof Int32Array);
      assert.deepEqual(ids, tokenizer.encode(texts[i]!));
    });
    assert.deepEqual(tokenizer.decodeBatch(batch), texts);
  });

  it("decodeBytes gives the exact bytes of a token that splits a UTF-8 character", () => {
    const parrot = "🦜"; // F0 9F A6 9C: GPT-2 has no token for it, so BPE cuts it into byte groups.
    const ids = tokenizer.encode(parrot);
    assert.ok(ids.length > 1);
    const perTokenBytes = Array.from(ids, (id) => tokenizer.decodeBytes([id]));
    assert.deepEqual(Buffer.concat(perTokenBytes), Buffer.from(parrot, "utf8"));
    assert.deepEqual(Buffer.from(perTokenBytes[0]!), Buffer.from([0xf0, 0x9f]));
    assert.throws(() => new TextDecoder("utf-8", { fatal: true }).decode(perTokenBytes[0]!));
    assert.equal(tokenizer.decode([ids[0]!]), "\ufffd");
    assert.equal(tokenizer.decode(ids), parrot);
  });

  it("decodes token by token through a streaming UTF-8 decoder", () => {
    for (const text of allTexts) {
      const stream = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
      let decoded = "";
      for (const id of tokenizer.encode(text)) decoded += stream.decode(tokenizer.decodeBytes([id]), { stream: true });
      decoded += stream.decode();
      assert.equal(decoded, text, show(text));
    }
  });

  it("rejects ids outside the vocabulary", () => {
    for (const badId of [-1, 50257, 1.5, Number.NaN]) {
      assert.throws(() => tokenizer.decode([badId]), FalconInputError, String(badId));
      assert.throws(() => tokenizer.decodeBytes([15496, badId]), FalconInputError, String(badId));
    }
    assert.throws(() => tokenizer.idToToken(50257), FalconInputError);
  });
});

describe("FalconTokenizer from an HF tokenizer.json", () => {
  const fromStringMerges = FalconTokenizer.fromHfTokenizerJson(hfStringMergesPath);
  const fromPairMerges = FalconTokenizer.fromHfTokenizerJson(hfPairMergesDir);

  it("gives the same ids as the keras-hub preset, for both merge encodings", () => {
    for (const hf of [fromStringMerges, fromPairMerges]) {
      assert.equal(hf.vocabularySize, 50257);
      assert.equal(hf.endTokenId, END_OF_TEXT_ID);
      for (const text of allTexts) assert.deepEqual(hf.encode(text), tokenizer.encode(text), show(text));
      assert.equal(hf.decode(hf.encode(allTexts.join(""))), allTexts.join(""));
    }
  });

  it("splits on Unicode White_Space also when ByteLevel sits inside a Sequence (falcon-7b layout)", () => {
    const falcon7bPreTokenizer = {
      type: "Sequence",
      pretokenizers: [
        { type: "Punctuation", behavior: "contiguous" },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        { type: "Digits", individual_digits: false },
      ],
    };
    const path = join(tempRoot, "sequence-pre-tokenizer.json");
    writeFileSync(path, JSON.stringify({ ...hfTokenizerJson(gpt2, "pair"), pre_tokenizer: falcon7bPreTokenizer }));
    const sequenced = FalconTokenizer.fromHfTokenizerJson(path);
    const expected = ["a", " ", "\u0085", "b"].flatMap((piece) => Array.from(tokenizer.encode(piece)));
    assert.deepEqual(Array.from(sequenced.encode("a \u0085b")), expected);
    for (const text of corpus) assert.equal(sequenced.decode(sequenced.encode(text)), text, show(text));
  });

  it("is what fromPreset picks for a directory holding only tokenizer.json", () => {
    const text = corpus[0]!;
    assert.deepEqual(FalconTokenizer.fromPreset(hfPairMergesDir).encode(text), tokenizer.encode(text));
  });
});

/**
 * A small byte-level vocabulary: the 256 byte tokens (id = byte), four merges, <|endoftext|>.
 * "hello world" encodes as hell|o|Ġw|o|r|l|d.
 */
function tinyVocabulary(): Gpt2Vocabulary {
  const vocabulary: Record<string, number> = {};
  BYTE_TO_UNICODE.forEach((symbol, byte) => {
    vocabulary[symbol] = byte;
  });
  const merges: Merge[] = [
    ["h", "e"],
    ["l", "l"],
    ["he", "ll"],
    ["Ġ", "w"],
  ];
  merges.forEach(([left, right], index) => {
    vocabulary[left + right] = 256 + index;
  });
  vocabulary[END_OF_TEXT] = 260;
  return { vocabulary, merges };
}
const TINY_HELLO_WORLD_IDS = [258, 111, 259, 111, 114, 108, 100];

let presetCount = 0;
/** Writes a keras-style preset with the given file contents; undefined leaves the file out. */
function writeTinyPreset(files: { vocabulary?: string; merges?: string }): string {
  const presetDir = join(tempRoot, `tiny-${presetCount++}`);
  const assetsDir = join(presetDir, "assets", "tokenizer");
  mkdirSync(assetsDir, { recursive: true });
  if (files.vocabulary !== undefined) writeFileSync(join(assetsDir, "vocabulary.json"), files.vocabulary);
  if (files.merges !== undefined) writeFileSync(join(assetsDir, "merges.txt"), files.merges);
  return presetDir;
}

function assertPresetError(load: () => unknown, message: RegExp, label = ""): void {
  assert.throws(load, (error: unknown) => {
    assert.ok(error instanceof FalconPresetError, `${label}: expected FalconPresetError, got ${String(error)}`);
    assert.match(error.message, message, label);
    return true;
  });
}

describe("keras-hub preset files", () => {
  const tiny = tinyVocabulary();
  const tinyVocabularyJson = JSON.stringify(tiny.vocabulary);

  it("accepts merges.txt with or without #version, trailing newline or CRLF", () => {
    const variants = [
      mergesText(tiny.merges),
      mergesText(tiny.merges, { versionHeader: false }),
      mergesText(tiny.merges).trimEnd(),
      mergesText(tiny.merges).replaceAll("\n", "\r\n"),
    ];
    for (const merges of variants) {
      const loaded = FalconTokenizer.fromKerasPreset(writeTinyPreset({ vocabulary: tinyVocabularyJson, merges }));
      assert.deepEqual(Array.from(loaded.encode("hello world")), TINY_HELLO_WORLD_IDS, show(merges));
      assert.equal(loaded.endTokenId, 260);
      assert.equal(loaded.vocabularySize, 261);
    }
  });

  it("is not confused by keras-hub's own tokenizer.json", () => {
    const loaded = FalconTokenizer.fromPreset(kerasPresetDir);
    assert.deepEqual(loaded.encode(corpus[0]!), tokenizer.encode(corpus[0]!));
    const configOnlyDir = join(tempRoot, "keras-config-only");
    mkdirSync(configOnlyDir);
    writeFileSync(join(configOnlyDir, "tokenizer.json"), JSON.stringify({ registered_name: "keras_hub>FalconTokenizer", config: {} }));
    assertPresetError(() => FalconTokenizer.fromPreset(configOnlyDir), /keras-hub tokenizer config.*vocabulary\.json/);
  });

  it("a loader given something other than a path throws FalconInputError, not node:path's TypeError", () => {
    for (const load of [FalconTokenizer.fromPreset, FalconTokenizer.fromKerasPreset, FalconTokenizer.fromHfTokenizerJson]) {
      for (const value of [null, 5, "", { path: "x" }]) {
        assert.throws(() => load(value as never), (error: unknown) =>
          error instanceof FalconInputError && /must be a path, got /.test(error.message), `${load.name}(${String(value)})`);
      }
    }
  });

  it("names the file that is missing or malformed", () => {
    const goodMerges = mergesText(tiny.merges);
    const vocabularyWith = (changes: Record<string, unknown>): string => JSON.stringify({ ...tiny.vocabulary, ...changes });
    const withoutKey = (key: string): string => {
      const { [key]: _removed, ...rest } = tiny.vocabulary;
      return JSON.stringify(rest);
    };
    const cases: Array<[string, { vocabulary?: string; merges?: string }, RegExp]> = [
      ["missing vocabulary", { merges: goodMerges }, /vocabulary not found: .*vocabulary\.json/],
      ["vocabulary not JSON", { vocabulary: "{oops", merges: goodMerges }, /vocabulary\.json: malformed JSON/],
      ["vocabulary is a list", { vocabulary: "[1, 2]", merges: goodMerges }, /vocabulary\.json: vocabulary must be a \{token: id\} object/],
      ["non-integer id", { vocabulary: vocabularyWith({ hello: "7" }), merges: goodMerges }, /vocabulary\.json: token "hello" has invalid id string "7"/],
      ["shared id", { vocabulary: vocabularyWith({ hello: 3 }), merges: goodMerges }, /vocabulary\.json: tokens .* share id 3/],
      ["id gap", { vocabulary: vocabularyWith({ hello: 999 }), merges: goodMerges }, /vocabulary\.json: token ids must run from 0 to 261 without gaps, found 999/],
      ["missing merges", { vocabulary: tinyVocabularyJson }, /merges file not found: .*merges\.txt/],
      ["one-part merge line", { vocabulary: tinyVocabularyJson, merges: "#version: 0.2\nh e\nll\n" }, /merges\.txt line 3: expected "left right"/],
      ["three-part merge line", { vocabulary: tinyVocabularyJson, merges: "h e x\n" }, /merges\.txt line 1/],
      ["merge of unknown token", { vocabulary: tinyVocabularyJson, merges: "h e\nq z\n" }, /merges\.txt: merge 2 "q z" uses "qz"/],
      ["missing byte token", { vocabulary: withoutKey("Ā"), merges: goodMerges }, /lacks the token for byte 0x00/],
      ["missing <|endoftext|>", { vocabulary: withoutKey(END_OF_TEXT), merges: goodMerges }, /no <\|endoftext\|> token/],
    ];
    for (const [name, files, message] of cases) {
      const presetDir = writeTinyPreset(files);
      assertPresetError(() => FalconTokenizer.fromKerasPreset(presetDir), message, name);
    }
  });

  it("rejects a preset directory without a tokenizer", () => {
    const emptyDir = join(tempRoot, "empty");
    mkdirSync(emptyDir);
    assertPresetError(() => FalconTokenizer.fromPreset(emptyDir), /no tokenizer in .*vocabulary\.json.*tokenizer\.json/);
  });

  it("rejects HF tokenizer.json files it cannot run exactly", () => {
    const writeHf = (name: string, json: unknown): string => {
      const path = join(tempRoot, `${name}.json`);
      writeFileSync(path, JSON.stringify(json));
      return path;
    };
    const tinyHf = hfTokenizerJson(tiny, "pair") as { model: Record<string, unknown>; [key: string]: unknown };
    const tinyFromHf = FalconTokenizer.fromHfTokenizerJson(writeHf("tiny-hf", tinyHf));
    assert.deepEqual(Array.from(tinyFromHf.encode("hello world")), TINY_HELLO_WORLD_IDS);
    assert.equal(tinyFromHf.endTokenId, 260);
    assertPresetError(() => FalconTokenizer.fromHfTokenizerJson(join(tempRoot, "absent.json")), /HF tokenizer\.json not found: .*absent\.json/);
    assertPresetError(() => FalconTokenizer.fromHfTokenizerJson(writeHf("no-model", { version: "1.0" })), /no-model\.json is not an HF tokenizer\.json/);
    assertPresetError(
      () => FalconTokenizer.fromHfTokenizerJson(writeHf("wordpiece", { ...tinyHf, model: { ...tinyHf.model, type: "WordPiece" } })),
      /wordpiece\.json: model type string "WordPiece" is not supported/,
    );
    assertPresetError(
      () => FalconTokenizer.fromHfTokenizerJson(writeHf("bad-merge", { ...tinyHf, model: { ...tinyHf.model, merges: ["h e", "hell"] } })),
      /bad-merge\.json: model\.merges\[1\] is not a "left right" merge/,
    );
    assertPresetError(
      () => FalconTokenizer.fromHfTokenizerJson(writeHf("metaspace", { ...tinyHf, decoder: { type: "Metaspace" } })),
      /metaspace\.json: only byte-level BPE tokenizers .* are supported/,
    );
    assertPresetError(
      () => FalconTokenizer.fromHfTokenizerJson(writeHf("split-only", { ...tinyHf, pre_tokenizer: { type: "Whitespace" } })),
      /split-only\.json: only byte-level BPE tokenizers .* are supported/,
    );
    assertPresetError(
      () =>
        FalconTokenizer.fromHfTokenizerJson(
          writeHf("prefix-space", { ...tinyHf, pre_tokenizer: { type: "ByteLevel", add_prefix_space: true, use_regex: true } }),
        ),
      /prefix-space\.json: ByteLevel pre-tokenizer with add_prefix_space=true is not supported/,
    );
  });
});
