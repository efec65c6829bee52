/**
 * Falcon's tokenizer: GPT-2 byte-level BPE (Falcon-RW / keras-hub `FalconTokenizer`), also able to
 * load any byte-level BPE Hugging Face `tokenizer.json` (e.g. falcon-7b's).
 *
 * Encoding runs on @huggingface/tokenizers. Decoding is done here by hand with the GPT-2
 * byte↔unicode table, because the library's decode cannot give raw bytes (a streaming decoder must
 * never cut a UTF-8 character in half), throws on an empty id list, silently drops unknown ids, and
 * by default rewrites " ." to "." (clean_up_tokenization_spaces), which is not lossless.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { FalconInputError, FalconPresetError } from "./errors.js";

/** Falcon's start, end and unsplittable special token (keras-hub `FalconTokenizer`). */
const END_OF_TEXT = "<|endoftext|>";

/** keras-hub hard-codes pad id 0 ("!" in GPT-2); pads are masked out, so its meaning is irrelevant. */
const PAD_TOKEN_ID = 0;

/** GPT-2's pre-tokenisation regex, in Oniguruma syntax as HF `tokenizer.json` files carry it. */
const GPT2_SPLIT_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

/** The keras-hub preset layout (spec §5.1): vocabulary assets live next to a Keras config. */
const KERAS_VOCABULARY_PATH = join("assets", "tokenizer", "vocabulary.json");
const KERAS_MERGES_PATH = join("assets", "tokenizer", "merges.txt");
const TOKENIZER_JSON = "tokenizer.json";

/**
 * GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves and the other 68 bytes
 * are shifted to U+0100 upwards, so every byte is one visible character of a vocabulary token.
 */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const isPrintable = (byte: number): boolean =>
    (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    table.push(String.fromCharCode(isPrintable(byte) ? byte : 256 + shifted++));
  }
  return table;
})();
const UNICODE_TO_BYTE = new Map(BYTE_TO_UNICODE.map((symbol, byte) => [symbol, byte]));

/** An entry of `added_tokens` in an HF tokenizer.json. */
interface HfAddedToken {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

/** A pre-tokenizer entry of an HF tokenizer.json (only the fields this file looks at). */
interface HfPreTokenizer {
  type: string;
  add_prefix_space?: boolean;
  use_regex?: boolean;
  pretokenizers?: HfPreTokenizer[];
  [field: string]: unknown;
}

/** A BPE merge rule: the two adjacent tokens that are joined into one. */
type Merge = [left: string, right: string];

/** The parts of an HF tokenizer.json that this file reads or rewrites, vocabulary and merges checked. */
interface HfTokenizerJson {
  model: {
    type?: string;
    vocab: Record<string, number>;
    merges: Merge[];
    continuing_subword_prefix?: string | null;
    end_of_word_suffix?: string | null;
    [field: string]: unknown;
  };
  added_tokens: HfAddedToken[];
  normalizer: unknown;
  pre_tokenizer: HfPreTokenizer | null;
  post_processor: unknown;
  decoder: { type: string } | null;
  [field: string]: unknown;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readTextFile(path: string, what: string): string {
  if (!existsSync(path)) throw new FalconPresetError(`${what} not found: ${path}`);
  try {
    return readFileSync(path, "utf8");
  } catch (cause) {
    throw new FalconPresetError(`cannot read ${what} ${path}`, { cause });
  }
}

function readJsonFile(path: string, what: string): unknown {
  const text = readTextFile(path, what);
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FalconPresetError(`${what} ${path} is not valid JSON`, { cause });
  }
}

/** Checks a `{token: id}` map; ids must be distinct non-negative integers. */
function validateVocabulary(vocabulary: unknown, source: string): Record<string, number> {
  if (!isPlainObject(vocabulary)) throw new FalconPresetError(`${source}: vocabulary must be a {token: id} object`);
  const tokenById = new Map<number, string>();
  for (const [token, id] of Object.entries(vocabulary)) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw new FalconPresetError(`${source}: token ${JSON.stringify(token)} has invalid id ${JSON.stringify(id)}`);
    }
    const other = tokenById.get(id);
    if (other !== undefined) {
      throw new FalconPresetError(`${source}: tokens ${JSON.stringify(other)} and ${JSON.stringify(token)} share id ${id}`);
    }
    tokenById.set(id, token);
  }
  return vocabulary as Record<string, number>;
}

/** Parses keras-hub's merges.txt: one "left right" per line, an optional `#version` first line. */
function parseMergesText(text: string, path: string): Merge[] {
  const lines = text.split("\n").map((line) => line.replace(/\r$/, ""));
  const merges: Merge[] = [];
  lines.forEach((line, index) => {
    if (line === "" || (index === 0 && line.startsWith("#version"))) return;
    const parts = line.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      throw new FalconPresetError(`${path} line ${index + 1}: expected "left right", got ${JSON.stringify(line)}`);
    }
    merges.push([parts[0]!, parts[1]!]);
  });
  return merges;
}

/** HF tokenizer.json merges are "a b" strings (older `tokenizers`) or ["a", "b"] pairs (newer). */
function parseHfMerges(merges: unknown, path: string): Merge[] {
  if (!Array.isArray(merges)) throw new FalconPresetError(`${path}: model.merges must be an array`);
  return merges.map((merge: unknown, index): Merge => {
    const parts = typeof merge === "string" ? merge.split(" ") : merge;
    if (!Array.isArray(parts) || parts.length !== 2 || !parts.every((part) => typeof part === "string" && part !== "")) {
      throw new FalconPresetError(`${path}: model.merges[${index}] is not a "left right" merge: ${JSON.stringify(merge)}`);
    }
    return [parts[0] as string, parts[1] as string];
  });
}

/** BPE can only produce tokens of the vocabulary if every merge joins two tokens into a third one. */
function validateMerges(merges: readonly Merge[], vocabulary: Record<string, number>, source: string): void {
  const has = (token: string): boolean => Object.hasOwn(vocabulary, token);
  merges.forEach(([left, right], index) => {
    const missing = [left, right, left + right].find((token) => !has(token));
    if (missing !== undefined) {
      throw new FalconPresetError(`${source}: merge ${index + 1} "${left} ${right}" uses ${JSON.stringify(missing)}, which is not in the vocabulary`);
    }
  });
}

/** Without a ByteLevel step, BPE would see raw characters and silently drop those not in the vocabulary. */
function hasByteLevelPreTokenizer(preTokenizer: HfPreTokenizer | null): boolean {
  if (preTokenizer === null) return false;
  return preTokenizer.type === "ByteLevel" || (preTokenizer.pretokenizers ?? []).some(hasByteLevelPreTokenizer);
}

/**
 * The library's ByteLevel pre-tokenizer splits with a JavaScript regex literal whose `\s` differs
 * from the Oniguruma / Python `regex` `\s` that HF and OpenAI GPT-2 use: it treats U+FEFF as
 * whitespace and U+0085 as not. Its Split pre-tokenizer translates `\s` to `\p{White_Space}`
 * correctly, so a regex-splitting ByteLevel is rewritten into the equivalent Split + byte mapping.
 */
function withExactWhitespaceSplit(preTokenizer: HfPreTokenizer | null, source: string): HfPreTokenizer | null {
  if (preTokenizer === null) return null;
  if (preTokenizer.type === "Sequence") {
    return {
      ...preTokenizer,
      pretokenizers: (preTokenizer.pretokenizers ?? []).map((inner) => withExactWhitespaceSplit(inner, source)!),
    };
  }
  if (preTokenizer.type !== "ByteLevel" || preTokenizer.use_regex === false) return preTokenizer;
  if (preTokenizer.add_prefix_space === true) {
    // HF prepends the space once per pre-token before splitting; the library would prepend it to
    // every split piece after the rewrite. No Falcon or GPT-2 tokenizer sets this flag.
    throw new FalconPresetError(`${source}: ByteLevel pre-tokenizer with add_prefix_space=true is not supported`);
  }
  return {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: GPT2_SPLIT_PATTERN }, behavior: "Isolated", invert: false },
      { ...preTokenizer, use_regex: false },
    ],
  };
}

/**
 * Byte-level BPE tokenizer for Falcon. `<|endoftext|>` is the start and end token and is never split
 * by BPE; `encode` adds no special tokens (keras-hub's preprocessor adds the start token).
 */
export class FalconTokenizer {
  /** Id of `<|endoftext|>`, which keras-hub prepends to prompts. */
  readonly startTokenId: number;
  /** Id of `<|endoftext|>`; generation stops on it. */
  readonly endTokenId: number;
  /** keras-hub's hard-coded pad id. */
  readonly padTokenId = PAD_TOKEN_ID;
  /** Number of token ids, which run from 0 without gaps (50257 for GPT-2). */
  readonly vocabularySize: number;

  private readonly encoder: Tokenizer;
  private readonly idByToken: Map<string, number>;
  private readonly tokenById: string[];
  /** The raw bytes of token `id` are `tokenBytes[tokenByteOffsets[id] .. tokenByteOffsets[id + 1]]`. */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenByteOffsets: Int32Array;
  /** ignoreBOM keeps a leading U+FEFF (lossless); non-fatal turns partial UTF-8 into U+FFFD. */
  private readonly utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  private constructor(json: HfTokenizerJson, source: string) {
    const vocabulary = json.model.vocab;
    if (json.model.continuing_subword_prefix || json.model.end_of_word_suffix) {
      throw new FalconPresetError(`${source}: byte-level BPE cannot have subword prefixes or suffixes`);
    }
    if (json.decoder?.type !== "ByteLevel" || !hasByteLevelPreTokenizer(json.pre_tokenizer)) {
      throw new FalconPresetError(`${source}: only byte-level BPE tokenizers (ByteLevel pre-tokenizer and decoder) are supported`);
    }
    const missingByte = BYTE_TO_UNICODE.findIndex((symbol) => !Object.hasOwn(vocabulary, symbol));
    if (missingByte >= 0) {
      // Without every single-byte token, BPE silently drops the bytes it cannot represent.
      throw new FalconPresetError(`${source}: vocabulary lacks the token for byte 0x${missingByte.toString(16).padStart(2, "0")}`);
    }
    this.idByToken = new Map(Object.entries(vocabulary));
    for (const added of json.added_tokens) this.idByToken.set(added.content, added.id);
    const endTokenId = this.idByToken.get(END_OF_TEXT);
    if (endTokenId === undefined) throw new FalconPresetError(`${source}: vocabulary has no ${END_OF_TEXT} token`);
    this.startTokenId = endTokenId;
    this.endTokenId = endTokenId;
    // keras-hub lists <|endoftext|> in unsplittable_tokens; an added token is what makes the library
    // match it as a whole before BPE.
    const addedTokens: HfAddedToken[] = json.added_tokens.some((added) => added.content === END_OF_TEXT)
      ? json.added_tokens
      : [...json.added_tokens, { id: endTokenId, content: END_OF_TEXT, special: true, normalized: false }];

    const entries: Array<[token: string, id: number]> = [
      ...Object.entries(vocabulary),
      // Added tokens come last so that they win over vocabulary entries sharing their id, as in HF.
      ...addedTokens.map((added): [string, number] => [added.content, added.id]),
    ];
    this.vocabularySize = new Set(entries.map(([, id]) => id)).size;
    this.tokenById = new Array<string>(this.vocabularySize);
    for (const [token, id] of entries) {
      if (id >= this.vocabularySize) {
        throw new FalconPresetError(`${source}: token ids must run from 0 to ${this.vocabularySize - 1} without gaps, found ${id}`);
      }
      this.tokenById[id] = token;
    }
    ({ bytes: this.tokenBytes, offsets: this.tokenByteOffsets } = this.buildTokenBytes(new Set(addedTokens.map((added) => added.id))));

    this.encoder = new Tokenizer(
      { ...json, added_tokens: addedTokens, pre_tokenizer: withExactWhitespaceSplit(json.pre_tokenizer, source) },
      // The tokenizer_config only steers the library's decode, which this class does not use.
      {},
    );
  }

  /**
   * Raw bytes of every token, packed. Added tokens (`<|endoftext|>` …) are plain text, the others are
   * spelled in the byte-level alphabet; a character outside that alphabet stands for its own UTF-8,
   * as in HF's ByteLevel decoder.
   */
  private buildTokenBytes(addedTokenIds: ReadonlySet<number>): { bytes: Uint8Array; offsets: Int32Array } {
    const utf8 = new TextEncoder();
    const perToken: Uint8Array[] = [];
    const offsets = new Int32Array(this.vocabularySize + 1);
    let total = 0;
    for (let id = 0; id < this.vocabularySize; id++) {
      const token = this.tokenById[id]!;
      const symbols = Array.from(token);
      const bytes =
        addedTokenIds.has(id) || !symbols.every((symbol) => UNICODE_TO_BYTE.has(symbol))
          ? utf8.encode(token)
          : Uint8Array.from(symbols, (symbol) => UNICODE_TO_BYTE.get(symbol)!);
      perToken.push(bytes);
      total += bytes.length;
      offsets[id + 1] = total;
    }
    const packed = new Uint8Array(total);
    perToken.forEach((bytes, id) => packed.set(bytes, offsets[id]!));
    return { bytes: packed, offsets };
  }

  /** Loads a keras-hub preset's `assets/tokenizer/vocabulary.json` and `merges.txt`. */
  static fromKerasPreset(presetDir: string): FalconTokenizer {
    const vocabularyPath = join(presetDir, KERAS_VOCABULARY_PATH);
    const mergesPath = join(presetDir, KERAS_MERGES_PATH);
    const vocabulary = validateVocabulary(readJsonFile(vocabularyPath, "vocabulary"), vocabularyPath);
    const merges = parseMergesText(readTextFile(mergesPath, "merges file"), mergesPath);
    validateMerges(merges, vocabulary, mergesPath);
    // The tokenizer.json an HF GPT-2 checkpoint would carry (keras-hub v0.17 semantics: GPT-2 regex,
    // no prefix space, <|endoftext|> unsplittable).
    const byteLevel: HfPreTokenizer = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
    const json: HfTokenizerJson = {
      model: { type: "BPE", vocab: vocabulary, merges, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null },
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: byteLevel,
      post_processor: null,
      decoder: byteLevel,
    };
    return new FalconTokenizer(json, vocabularyPath);
  }

  /** Loads a Hugging Face `tokenizer.json`, given the file or the directory holding it. */
  static fromHfTokenizerJson(pathOrDir: string): FalconTokenizer {
    const path = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory() ? join(pathOrDir, TOKENIZER_JSON) : pathOrDir;
    return FalconTokenizer.fromHfTokenizerObject(readJsonFile(path, "HF tokenizer.json"), path);
  }

  private static fromHfTokenizerObject(parsed: unknown, path: string): FalconTokenizer {
    if (!isPlainObject(parsed) || !isPlainObject(parsed["model"])) {
      throw new FalconPresetError(`${path} is not an HF tokenizer.json (no "model" object)`);
    }
    const model = parsed["model"];
    if (model["type"] !== undefined && model["type"] !== "BPE") {
      throw new FalconPresetError(`${path}: model type ${JSON.stringify(model["type"])} is not supported, only BPE`);
    }
    const vocabulary = validateVocabulary(model["vocab"], path);
    const merges = parseHfMerges(model["merges"], path);
    validateMerges(merges, vocabulary, path);
    const addedTokens = parsed["added_tokens"] ?? [];
    if (!Array.isArray(addedTokens) || !addedTokens.every((added) => isPlainObject(added) && typeof added["content"] === "string" && Number.isSafeInteger(added["id"]))) {
      throw new FalconPresetError(`${path}: added_tokens must be a list of {id, content}`);
    }
    const json = {
      ...parsed,
      model: { ...model, vocab: vocabulary, merges },
      added_tokens: addedTokens,
      normalizer: parsed["normalizer"] ?? null,
      pre_tokenizer: parsed["pre_tokenizer"] ?? null,
      post_processor: parsed["post_processor"] ?? null,
      decoder: parsed["decoder"] ?? null,
    } as HfTokenizerJson;
    return new FalconTokenizer(json, path);
  }

  /**
   * Loads whichever tokenizer a preset directory has: keras-hub assets, else an HF tokenizer.json.
   * keras-hub also writes a `tokenizer.json`, but it is a serialized Keras object
   * (`registered_name`, no vocabulary), so only one with a "model" key counts as HF.
   */
  static fromPreset(presetDir: string): FalconTokenizer {
    if (existsSync(join(presetDir, KERAS_VOCABULARY_PATH))) return FalconTokenizer.fromKerasPreset(presetDir);
    const tokenizerJsonPath = join(presetDir, TOKENIZER_JSON);
    if (existsSync(tokenizerJsonPath)) {
      const parsed = readJsonFile(tokenizerJsonPath, "tokenizer.json");
      if (isPlainObject(parsed) && "model" in parsed) return FalconTokenizer.fromHfTokenizerObject(parsed, tokenizerJsonPath);
      if (isPlainObject(parsed) && "registered_name" in parsed) {
        throw new FalconPresetError(`${tokenizerJsonPath} is a keras-hub tokenizer config, but ${join(presetDir, KERAS_VOCABULARY_PATH)} is missing`);
      }
      throw new FalconPresetError(`${tokenizerJsonPath} is neither an HF tokenizer.json nor a keras-hub tokenizer config`);
    }
    throw new FalconPresetError(`no tokenizer in ${presetDir}: expected ${KERAS_VOCABULARY_PATH} + ${KERAS_MERGES_PATH} or ${TOKENIZER_JSON}`);
  }

  /** Token ids of `text`, without start or end token. Lone UTF-16 surrogates encode as U+FFFD. */
  encode(text: string): Int32Array {
    return Int32Array.from(this.encoder.encode(text, { add_special_tokens: false }).ids);
  }

  encodeBatch(texts: readonly string[]): Int32Array[] {
    return texts.map((text) => this.encode(text));
  }

  /** The exact bytes the ids stand for; may end (or start) inside a UTF-8 character. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    let length = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = this.checkId(ids[i]!);
      length += this.tokenByteOffsets[id + 1]! - this.tokenByteOffsets[id]!;
    }
    const bytes = new Uint8Array(length);
    let position = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const token = this.tokenBytes.subarray(this.tokenByteOffsets[id]!, this.tokenByteOffsets[id + 1]!);
      bytes.set(token, position);
      position += token.length;
    }
    return bytes;
  }

  /** The text the ids stand for; bytes that are not valid UTF-8 become U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    return this.utf8Decoder.decode(this.decodeBytes(ids));
  }

  decodeBatch(batch: readonly ArrayLike<number>[]): string[] {
    return batch.map((ids) => this.decode(ids));
  }

  /** The vocabulary entry for `id` (byte-level spelling, e.g. "Ġthe"). */
  idToToken(id: number): string {
    return this.tokenById[this.checkId(id)]!;
  }

  /** The id of a vocabulary entry, or undefined if there is none. */
  tokenToId(token: string): number | undefined {
    return this.idByToken.get(token);
  }

  private checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabularySize) {
      throw new FalconInputError(`token id ${id} is not in the vocabulary (size ${this.vocabularySize})`);
    }
    return id;
  }
}
