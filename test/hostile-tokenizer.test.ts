/**
 * Tokenizer files and text prompts an attacker controls: catastrophic regexes, malformed structure
 * (every one a FalconPresetError naming the file and the field), FIFOs and oversized files, and text
 * prompts far longer than the sequence length (truncated before they are tokenized, exactly).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";

import { FalconCausalLMPreprocessor } from "../src/preprocessor.js";
import { FalconInputError, FalconPresetError } from "../src/errors.js";
import { BYTE_TO_UNICODE, FalconTokenizer } from "../src/tokenizer.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { END_OF_TEXT, type Gpt2Vocabulary, type Merge, gpt2Vocabulary, hfTokenizerJson, makeTempDir, writeKerasPreset } from "./helpers/gpt2-vocab.js";

const tempRoot = makeTempDir("falcon-hostile-tokenizer-");
after(() => rmSync(tempRoot, { recursive: true, force: true }));

/** The 256 byte tokens, two merges and <|endoftext|>: small enough to write hundreds of variants. */
function tinyVocabulary(): Gpt2Vocabulary {
  const vocabulary: Record<string, number> = {};
  BYTE_TO_UNICODE.forEach((symbol, byte) => {
    vocabulary[symbol] = byte;
  });
  const merges: Merge[] = [["h", "e"], ["l", "l"]];
  merges.forEach(([left, right], index) => {
    vocabulary[left + right] = 256 + index;
  });
  vocabulary[END_OF_TEXT] = 258;
  return { vocabulary, merges };
}

type TokenizerJson = Record<string, unknown> & { model: Record<string, unknown> };
const tinyJson = hfTokenizerJson(tinyVocabulary(), "pair") as TokenizerJson;

/** JSON text nested deeper than JSON.stringify (or any recursive walk) can go: a placeholder in a value. */
class DeepJson {
  constructor(readonly text: string) {}
}

let fileCount = 0;
/** Writes the JSON; DeepJson values are spliced in as their text. */
function writeTokenizerJson(json: unknown): string {
  const path = join(tempRoot, `tokenizer-${fileCount++}.json`);
  const deep: string[] = [];
  const text = JSON.stringify(json, (_key, value: unknown) => (value instanceof DeepJson ? `\u0000deep${deep.push(value.text) - 1}` : value));
  writeFileSync(path, text.replace(/"\\u0000deep(\d+)"/g, (_match, index: string) => deep[Number(index)]!));
  return path;
}

/** Loading must throw a FalconPresetError whose message names the file and matches `message`. */
function assertRefused(path: string, message: RegExp, label: string): void {
  assert.throws(() => FalconTokenizer.fromHfTokenizerJson(path), (error: unknown) => {
    assert.ok(error instanceof FalconPresetError, `${label}: expected FalconPresetError, got ${String(error)}`);
    assert.ok(error.message.includes(path), `${label}: ${error.message} does not name ${path}`);
    assert.match(error.message, message, label);
    return true;
  });
}

const split = (regex: string) => ({ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false });
const byteLevelWithoutRegex = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false };
const replace = (regex: string) => ({ type: "Replace", pattern: { Regex: regex }, content: "" });

/** Pre-tokenisation regexes of real byte-level tokenizers (Llama 3, Qwen 2, DeepSeek, GPT-4o). */
const REAL_PATTERNS = [
  String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  String.raw`[\r\n]`,
  String.raw`\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʔ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-Ֆ]+`,
  String.raw`\s?[!-/:-~！-／：-～‘-‟　-。]+`,
  String.raw`\s+$`,
  String.raw`[一-龥ࠀ-一가-퟿]+`,
  String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
];

describe("catastrophic regexes are refused at load", () => {
  it("nested quantifiers and overlapping alternation in a Split or Replace name the file, the field and the pattern", () => {
    for (const regex of [String.raw`(a+)+$`, String.raw`(a*)*b`, String.raw`(a|aa)+$`, String.raw`(a|a)*$`, String.raw`(a|ab)+c`, String.raw`(?:\d{1,3})+x`, String.raw`((a|ab))*c`]) {
      const inSplit = writeTokenizerJson({ ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [split(regex), byteLevelWithoutRegex] } });
      assertRefused(inSplit, /exponential/, `Split ${regex}`);
      assert.throws(() => FalconTokenizer.fromHfTokenizerJson(inSplit), (error: unknown) =>
        (error as Error).message.includes(`pre_tokenizer.pretokenizers[0].pattern.Regex ${JSON.stringify(regex)}`));
      const inReplace = writeTokenizerJson({ ...tinyJson, normalizer: replace(regex) });
      assertRefused(inReplace, /normalizer\.pattern\.Regex .*exponential/, `Replace ${regex}`);
    }
    const backreference = writeTokenizerJson({ ...tinyJson, normalizer: replace(String.raw`(a)\1`) });
    assertRefused(backreference, /normalizer\.pattern\.Regex .*backreference/, "backreference");
    const lookbehind = writeTokenizerJson({ ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [split(String.raw`(?<=a+)b`), byteLevelWithoutRegex] } });
    assertRefused(lookbehind, /pretokenizers\[0\]\.pattern\.Regex "\(\?<=a\+\)b" repeats without bound inside a lookbehind.*quadratic/, "lookbehind");
  });

  it("every real tokenizer's pattern still loads, and GPT-2's byte-level split still encodes", () => {
    for (const regex of REAL_PATTERNS) {
      const path = writeTokenizerJson({ ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [split(regex), byteLevelWithoutRegex] } });
      const loaded = FalconTokenizer.fromHfTokenizerJson(path);
      assert.equal(loaded.decode(loaded.encode("hello world's 12345 \n\n  x")), "hello world's 12345 \n\n  x", regex);
    }
    const byteLevel = FalconTokenizer.fromHfTokenizerJson(writeTokenizerJson(tinyJson));
    assert.deepEqual(Array.from(byteLevel.encode("hell")), [256, 257], "he|ll");
  });
});

describe("malformed tokenizer.json files are FalconPresetErrors naming the file and the field", () => {
  const nested = (depth: number, leaf: object, key: string) =>
    new DeepJson(`{"type":"Sequence","${key}":[`.repeat(depth) + JSON.stringify(leaf) + "]}".repeat(depth));
  const deepArray = new DeepJson("[".repeat(20_000) + '"h"' + "]".repeat(20_000));
  const cases: Array<[string, unknown, RegExp]> = [
    ["added token id -1", { ...tinyJson, added_tokens: [{ id: -1, content: "<x>", special: true }] }, /added_tokens\[0\]\.id must be a non-negative integer, got number -1/],
    ["added token id 2.5", { ...tinyJson, added_tokens: [{ id: 2.5, content: "<x>" }] }, /added_tokens\[0\]\.id/],
    ["added token empty content", { ...tinyJson, added_tokens: [{ id: 258, content: "" }] }, /added_tokens\[0\]\.content must be a non-empty string/],
    ["added token flag not boolean", { ...tinyJson, added_tokens: [{ id: 258, content: END_OF_TEXT, lstrip: "yes" }] }, /added_tokens\[0\]\.lstrip must be true or false/],
    ["added_tokens not a list", { ...tinyJson, added_tokens: { id: 258 } }, /added_tokens must be a list/],
    ["Split regex does not compile", { ...tinyJson, pre_tokenizer: split("(") }, /pre_tokenizer\.pattern\.Regex "\(" is not a valid regular expression/],
    ["Replace regex does not compile", { ...tinyJson, normalizer: replace("[") }, /normalizer\.pattern\.Regex "\[" is not a valid regular expression/],
    ["pattern neither Regex nor String", { ...tinyJson, pre_tokenizer: { type: "Split", pattern: {}, behavior: "Isolated" } }, /pre_tokenizer\.pattern must be \{"Regex"/],
    ["pattern both Regex and String", { ...tinyJson, normalizer: { type: "Replace", pattern: { Regex: "a", String: "a" }, content: "" } }, /normalizer\.pattern must be/],
    ["pattern Regex not a string", { ...tinyJson, normalizer: { type: "Replace", pattern: { Regex: 5 }, content: "" } }, /normalizer\.pattern must be/],
    ["Replace content missing", { ...tinyJson, normalizer: { type: "Replace", pattern: { String: "a" } } }, /normalizer\.content must be a string/],
    ["20,000 nested pre-tokenizer Sequences", { ...tinyJson, pre_tokenizer: nested(20_000, { type: "ByteLevel" }, "pretokenizers") }, /pre_tokenizer(\.pretokenizers\[0\]){16} nests Sequences more than 16 deep/],
    ["20,000 nested normalizer Sequences", { ...tinyJson, normalizer: nested(20_000, { type: "NFC" }, "normalizers") }, /normalizer(\.normalizers\[0\]){16} nests Sequences more than 16 deep/],
    ["20,000 nested post-processor Sequences", { ...tinyJson, post_processor: nested(20_000, { type: "ByteLevel" }, "processors") }, /post_processor(\.processors\[0\]){16} nests/],
    ["merge nested 20,000 deep", { ...tinyJson, model: { ...tinyJson.model, merges: [deepArray] } }, /model\.merges\[0\] is not a "left right" merge: an array of 1/],
    ["vocabulary id nested 20,000 deep", { ...tinyJson, model: { ...tinyJson.model, vocab: { ...(tinyJson.model["vocab"] as object), x: deepArray } } }, /token "x" has invalid id an array of 1/],
    ["template a string", { ...tinyJson, post_processor: { type: "TemplateProcessing", single: "$A", pair: "$A $B", special_tokens: {} } }, /post_processor\.single must be a list of \{"SpecialToken"/],
    ["template piece malformed", { ...tinyJson, post_processor: { type: "TemplateProcessing", single: [{ Sequence: "A" }] } }, /post_processor\.single\[0\] must be/],
    ["special_tokens ids not ids", { ...tinyJson, post_processor: { type: "TemplateProcessing", single: [], special_tokens: { x: { id: "x", ids: ["1"], tokens: ["x"] } } } }, /post_processor\.special_tokens\."x"\.ids must be a list of token ids/],
    ["Roberta sep malformed", { ...tinyJson, post_processor: { type: "RobertaProcessing", sep: "</s>", cls: ["<s>", 0] } }, /post_processor\.sep must be \["token", id\]/],
    ["unknown normalizer", { ...tinyJson, normalizer: { type: "Precompiled", precompiled_charsmap: "AAAA" } }, /normalizer\.type string "Precompiled" is not a supported normalizer/],
    ["normalizer a string", { ...tinyJson, normalizer: "NFC" }, /normalizer must be a normalizer object or null, got string "NFC"/],
    ["normalizer the string \"null\"", { ...tinyJson, normalizer: "null" }, /normalizer must be a normalizer object or null, got string "null"/],
    ["template a number", { ...tinyJson, post_processor: { type: "TemplateProcessing", single: 5 } }, /post_processor\.single must be a list/],
    ["template type_id a string", { ...tinyJson, post_processor: { type: "TemplateProcessing", single: [{ Sequence: { id: "A", type_id: "x" } }] } }, /post_processor\.single\[0\]\.Sequence\.type_id must be a non-negative integer/],
    ["pre-tokenizer without type", { ...tinyJson, pre_tokenizer: { add_prefix_space: false } }, /pre_tokenizer\.type undefined is not a supported pre-tokenizer/],
    ["null inside a Sequence", { ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [null, { type: "ByteLevel" }] } }, /pre_tokenizer\.pretokenizers\[0\] must be a pre-tokenizer object/],
    ["Sequence parts not a list", { ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: { type: "ByteLevel" } } }, /pre_tokenizer\.pretokenizers must be a list/],
    ["ByteLevel flag a string", { ...tinyJson, pre_tokenizer: { type: "ByteLevel", use_regex: "false" } }, /pre_tokenizer\.use_regex must be true or false, got string "false"/],
    ["Split behavior the encoder lacks", { ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [{ ...split(" "), behavior: "MergedWithPrevious" }, byteLevelWithoutRegex] } }, /pretokenizers\[0\]\.behavior must be one of Isolated, Removed/],
    ["FixedLength length -1", { ...tinyJson, pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "FixedLength", length: -1 }, { type: "ByteLevel" }] } }, /pretokenizers\[0\]\.length must be a positive integer/],
    ["decoder a string", { ...tinyJson, decoder: "ByteLevel" }, /decoder must be a decoder object or null/],
    ["ByteLevel decoder flag a number", { ...tinyJson, decoder: { type: "ByteLevel", add_prefix_space: 1 } }, /decoder\.add_prefix_space must be true or false/],
    ["unk_token a number", { ...tinyJson, model: { ...tinyJson.model, unk_token: 3 } }, /model\.unk_token must be a string/],
    ["dropout 2", { ...tinyJson, model: { ...tinyJson.model, dropout: 2 } }, /model\.dropout must be null or a probability/],
  ];
  for (const [name, json, message] of cases) {
    it(name, () => assertRefused(writeTokenizerJson(json), message, name));
  }
});

/** Runs `body` (an async function body using `lib`, the package) in a child process; a hang there fails here. */
function inChildProcess(body: string): { name: string; message: string } {
  const libUrl = new URL("../src/index.js", import.meta.url).href;
  const tokenizerUrl = new URL("../src/tokenizer.js", import.meta.url).href;
  const script = `
    const lib = { ...(await import(${JSON.stringify(libUrl)})), ...(await import(${JSON.stringify(tokenizerUrl)})) };
    try { await (async () => { ${body} })(); console.log(JSON.stringify({ name: "no error", message: "" })); }
    catch (error) { console.log(JSON.stringify({ name: error.constructor.name, message: error.message })); }`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
  assert.equal(child.signal, null, `the child hung (killed by ${child.signal}): ${child.stderr}`);
  return JSON.parse(child.stdout.trim().split("\n").pop()!) as { name: string; message: string };
}

function makeFifo(path: string): void {
  const made = spawnSync("mkfifo", [path]);
  assert.equal(made.status, 0, `mkfifo failed: ${made.stderr}`);
}

describe("tokenizer files that are not regular files, or too large", { skip: process.platform === "win32" && "no FIFOs on Windows" }, () => {
  it("a FIFO as tokenizer.json, vocabulary.json or merges.txt is refused at once, naming it", () => {
    const hfDir = join(tempRoot, "fifo-hf");
    mkdirSync(hfDir);
    makeFifo(join(hfDir, "tokenizer.json"));
    for (const call of [`lib.FalconTokenizer.fromHfTokenizerJson(${JSON.stringify(hfDir)})`, `lib.FalconTokenizer.fromPreset(${JSON.stringify(hfDir)})`]) {
      const result = inChildProcess(call);
      assert.equal(result.name, "FalconPresetError", `${call}: ${result.message}`);
      assert.match(result.message, /tokenizer\.json: a FIFO, not a regular file/);
    }
    for (const fifoFile of ["vocabulary.json", "merges.txt"]) {
      const presetDir = join(tempRoot, `fifo-${fifoFile}`);
      writeKerasPreset(presetDir, tinyVocabulary());
      const path = join(presetDir, "assets", "tokenizer", fifoFile);
      rmSync(path);
      makeFifo(path);
      const result = inChildProcess(`lib.FalconTokenizer.fromPreset(${JSON.stringify(presetDir)})`);
      assert.equal(result.name, "FalconPresetError", result.message);
      assert.ok(result.message.includes(`${path}: a FIFO, not a regular file`), result.message);
    }
  });

  it("tokenizer files that are symlinks to /dev/zero or /dev/urandom are refused as devices", { skip: process.platform !== "linux" && "Linux devices" }, () => {
    for (const [index, device] of ["/dev/zero", "/dev/urandom"].entries()) {
      const hfDir = join(tempRoot, `device-hf-${index}`);
      mkdirSync(hfDir);
      symlinkSync(device, join(hfDir, "tokenizer.json"));
      const hf = inChildProcess(`lib.FalconTokenizer.fromPreset(${JSON.stringify(hfDir)})`);
      assert.equal(hf.name, "FalconPresetError", hf.message);
      assert.match(hf.message, /tokenizer\.json: a device, not a regular file/);
      for (const file of ["vocabulary.json", "merges.txt"]) {
        const presetDir = join(tempRoot, `device-${index}-${file}`);
        writeKerasPreset(presetDir, tinyVocabulary());
        const path = join(presetDir, "assets", "tokenizer", file);
        rmSync(path);
        symlinkSync(device, path);
        const keras = inChildProcess(`lib.FalconTokenizer.fromPreset(${JSON.stringify(presetDir)})`);
        assert.equal(keras.name, "FalconPresetError", keras.message);
        assert.ok(keras.message.includes(`${path}: a device, not a regular file`), keras.message);
      }
    }
  });

  it("a checkpoint whose tokenizer.json is a FIFO fails to load instead of blocking", () => {
    const checkpoint = join(tempRoot, "fifo-checkpoint");
    mkdirSync(checkpoint);
    const source = join(FIXTURES, "hf", "rw_alibi_mha_sequential", "checkpoint");
    for (const file of ["config.json", "generation_config.json", "model.safetensors"]) copyFileSync(join(source, file), join(checkpoint, file));
    makeFifo(join(checkpoint, "tokenizer.json"));
    const result = inChildProcess(`(await lib.FalconCausalLM.fromPreset(${JSON.stringify(checkpoint)})).dispose()`);
    assert.equal(result.name, "FalconPresetError", result.message);
    assert.match(result.message, /tokenizer\.json: a FIFO/);
  });

  it("a directory named tokenizer.json, and a file over the size bound, are refused before reading", () => {
    const dirPreset = join(tempRoot, "directory-tokenizer");
    mkdirSync(join(dirPreset, "tokenizer.json"), { recursive: true });
    assert.throws(() => FalconTokenizer.fromPreset(dirPreset), (error: unknown) =>
      error instanceof FalconPresetError && /tokenizer\.json: a directory, not a regular file/.test(error.message));
    const huge = join(tempRoot, "huge-tokenizer.json");
    writeFileSync(huge, "");
    truncateSync(huge, 65 * 1024 * 1024);  // sparse: no disk used, nothing worth reading
    assert.throws(() => FalconTokenizer.fromHfTokenizerJson(huge), (error: unknown) =>
      error instanceof FalconPresetError && error.message.includes(`${huge}: 68157440 bytes exceeds the 67108864-byte limit`));
  });
});

/** A seeded text of `length` characters: words, contractions, digit runs, long white-space runs, punctuation, CJK, emoji, special tokens. */
function variedText(length: number, seed: number): string {
  const pieces = [
    "the", "Falcon", "'s", "'re", "don't", "'", "''", "123", "4567890", " ", "  ", "   \n", "\n\n\n", "\t", "\u00a0", "\u3000",
    "\u0085", "!!", "?!", ".", ",", "日本", "🦅", "é", "e\u0301", END_OF_TEXT, "<|endof", "text|>", "x1", "1x", "€", "٣", "Ⅷ",
    "a'b", " '", "—", "(", ")", "\ud800",
  ];
  let state = seed;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  let text = "";
  while (text.length < length) {
    const piece = pieces[Math.floor(random() * pieces.length)]!;
    // Runs of one piece: long white-space runs, long digit runs, long words.
    text += random() < 0.2 ? piece.repeat(1 + Math.floor(random() * 300)) : piece;
  }
  return text.slice(0, length);
}

describe("text prompts are truncated before they are tokenized", () => {
  const gpt2 = gpt2Vocabulary();
  const kerasDir = join(tempRoot, "gpt2-keras");
  writeKerasPreset(kerasDir, gpt2);
  const falcon7bLayout = writeTokenizerJson({
    ...hfTokenizerJson(gpt2, "pair"),
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Punctuation", behavior: "Contiguous" },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        { type: "Digits", individual_digits: false },
      ],
    },
  });
  const tokenizers: Array<[string, FalconTokenizer]> = [
    ["GPT-2 (keras-hub preset)", FalconTokenizer.fromPreset(kerasDir)],
    ["falcon-7b layout", FalconTokenizer.fromHfTokenizerJson(falcon7bLayout)],
    ["a Split the prefix cut does not know", FalconTokenizer.fromHfTokenizerJson(writeTokenizerJson({
      ...hfTokenizerJson(gpt2, "pair"),
      pre_tokenizer: { type: "Sequence", pretokenizers: [split(REAL_PATTERNS[0]!), byteLevelWithoutRegex] },
    }))],
  ];

  it("the first n ids of a prefix are exactly the first n ids of the whole text", () => {
    for (const [name, tokenizer] of tokenizers) {
      for (let seed = 1; seed <= 5; seed++) {
        const text = variedText(seed === 1 && name.startsWith("GPT-2") ? 200_000 : 12_000, seed);
        const full = tokenizer.encode(text);
        for (const count of [1, 2, 17, 255, 1023, 4096]) {
          assert.deepEqual(Array.from(tokenizer.encodePrefix(text, count)), Array.from(full.subarray(0, count)), `${name}, seed ${seed}, ${count} ids`);
        }
        const preprocessor = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength: 1024 });
        const packed = preprocessor.generatePreprocess([text, text.slice(0, 100)]);
        assert.deepEqual(Array.from(packed.tokenIds.subarray(0, 1024)), [tokenizer.startTokenId, ...full.subarray(0, 1023)], `${name}, seed ${seed}: packed row`);
        const training = preprocessor.call(text);
        assert.deepEqual(Array.from(training.y.subarray(0, 1024)), Array.from(full.subarray(0, 1024)), `${name}, seed ${seed}: call() labels`);
      }
    }
  });

  it("call() with a sequenceLength no batch can have is a FalconInputError before anything is allocated", () => {
    const tokenizer = tokenizers[0]![1];
    const texts = Array.from({ length: 64 }, (_, row) => `text ${row}`);
    for (const [sequenceLength, message] of [[2 ** 31, /call\(\): a \[64, 2147483648\] batch needs \d+ bytes: more than the 2147483647 tokens per sequence/], [2 ** 30, /call\(\): a \[64, 1073741824\] batch needs 893353197568 bytes, more than/]] as const) {
      const preprocessor = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength });
      assert.throws(() => preprocessor.call(texts), (error: unknown) => error instanceof FalconInputError && message.test(error.message));
    }
  });

  it("a 200,000-character prompt tokenizes only what sequenceLength keeps, well under a second", () => {
    const tokenizer = FalconTokenizer.fromPreset(kerasDir);
    let encodedCharacters = 0;
    const encode = tokenizer.encode.bind(tokenizer);
    tokenizer.encode = (text: string) => {
      encodedCharacters += text.length;
      return encode(text);
    };
    const text = variedText(200_000, 99);
    const preprocessor = new FalconCausalLMPreprocessor(tokenizer, { sequenceLength: 1024 });
    const started = performance.now();
    const packed = preprocessor.generatePreprocess(text);
    const elapsed = performance.now() - started;
    assert.deepEqual(packed.shape, [1, 1024]);
    assert.ok(encodedCharacters < 40_000, `tokenized ${encodedCharacters} of ${text.length} characters`);
    assert.ok(elapsed < 1_000, `took ${elapsed.toFixed(0)} ms`);
  });
});
