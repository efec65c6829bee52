/**
 * Falcon's tokenizer: GPT-2 byte-level BPE (Falcon-RW / keras-hub `FalconTokenizer`), also able to
 * load any byte-level BPE Hugging Face `tokenizer.json` (e.g. falcon-7b's).
 *
 * Encoding runs on @huggingface/tokenizers. Decoding is done here by hand with the GPT-2
 * byte↔unicode table, because the library's decode cannot give raw bytes (a streaming decoder must
 * never cut a UTF-8 character in half), throws on an empty id list, silently drops unknown ids, and
 * by default rewrites " ." to "." (clean_up_tokenization_spaces), which is not lossless.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { describeValue, FalconError, FalconInputError, FalconPresetError, quoted } from "./errors.js";
import { checkIdList } from "./inputs.js";
import { readBoundedTextFile, readJsonObject, readJsonValue } from "./presets/json.js";

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

/**
 * The largest public tokenizer.json files (256k-token vocabularies) are ~35 MB; a vocabulary or
 * merges file of a keras-hub preset is smaller still.
 */
const MAX_TOKENIZER_FILE_BYTES = 64 * 1024 * 1024;

/**
 * A tokenizer file's text: a regular file of bounded size only (presets/json.ts), since a FIFO, device or
 * directory would block the event loop or fail untyped.
 */
function readTextFile(path: string, what: string): string {
  if (!existsSync(path)) throw new FalconPresetError(`${what} not found: ${path}`);
  return readBoundedTextFile(path, MAX_TOKENIZER_FILE_BYTES);
}

/** A tokenizer JSON file (tokenizer.json, vocabulary.json), parsed; its structure is checked by the caller. */
function readJsonFile(path: string, what: string): unknown {
  if (!existsSync(path)) throw new FalconPresetError(`${what} not found: ${path}`);
  return readJsonValue(path, MAX_TOKENIZER_FILE_BYTES);
}

/** A path argument of a loader: anything else would reach node:path as an untyped TypeError. */
function requirePath(value: unknown, name: string): string {
  if (typeof value !== "string" || value === "") throw new FalconInputError(`${name} must be a path, got ${describeValue(value)}`);
  return value;
}

/** A preset's tokenizer.json as an object, read as the tokenizer reads it (a regular file of bounded size). */
export function readTokenizerJson(path: string): Record<string, unknown> {
  return readJsonObject(path, MAX_TOKENIZER_FILE_BYTES);
}

/**
 * Why a regular expression can take exponential time on some input, or null when it cannot. A
 * backtracking matcher tries every way a repeated group can divide the text: a quantifier inside an
 * unbounded repetition or an unbounded one inside any repetition (`(a+)+`, `(a?b?)*`), or an unbounded repetition of
 * alternatives that can begin alike (`(a|ab)*`), makes the ways exponential in the text's length.
 * Conservative: an alternation counts as disjoint only when every branch starts with its own literal
 * character. Backreferences are refused outright (matching with them is NP-hard), and so is an
 * unbounded repetition in a lookbehind (rescanned from every position). Real tokenizers' patterns
 * (GPT-2, Llama 3, Qwen, DeepSeek) repeat only single characters or classes.
 */
function catastrophicBacktracking(pattern: string): string | null {
  interface Group {
    /** Holds a quantifier (`?` included: an optional part can be matched by either of two iterations), at any depth. */
    quantified: boolean;
    /** Holds an unbounded quantifier (*, +, {n,}), at any depth. */
    repeatsUnbounded: boolean;
    /** Holds, at any depth, an alternation whose branches may begin with the same character. */
    overlappingAlternation: boolean;
    /** First literal character of each finished branch; null when it is not a known literal. */
    branchStarts: (string | null)[];
    /** First literal of the current branch: undefined before its first atom. */
    currentStart: string | null | undefined;
    /** A lookbehind, which the matcher runs backwards from every position it tries. */
    lookbehind: boolean;
  }
  const newGroup = (lookbehind = false): Group => ({
    quantified: false, repeatsUnbounded: false, overlappingAlternation: false, branchStarts: [], currentStart: undefined, lookbehind,
  });
  const closeBranch = (group: Group) => {
    group.branchStarts.push(group.currentStart ?? null);
    group.currentStart = undefined;
  };
  const stack: Group[] = [newGroup()];
  /** What a following quantifier applies to: a closed group, another atom, or nothing (start, `|`, anchors). */
  let previous: { group: Group | null; literal: string | null; startsBranch: boolean } | null = null;
  const atom = (literal: string | null, group: Group | null = null) => {
    const current = stack[stack.length - 1]!;
    const startsBranch = current.currentStart === undefined;
    if (startsBranch) current.currentStart = literal;
    previous = { group, literal, startsBranch };
  };
  for (let i = 0; i < pattern.length; ) {
    const char = pattern[i]!;
    if (char === "\\") {
      const next = pattern[i + 1] ?? "";
      if (/[1-9]/.test(next) || next === "k" || next === "g") return "uses a backreference or subroutine call";
      const braced = /^\\[pPxuo]\{[^}]*\}/.exec(pattern.slice(i, i + 64));
      const length = braced ? braced[0].length : 2;
      atom(/[A-Za-z0-9]/.test(next) ? null : next);
      i += length;
      continue;
    }
    if (char === "[") {
      // Skip the class, nested classes (Oniguruma's [a-z&&[^aeiou]]) and escapes included.
      let depth = 0;
      let j = i;
      for (; j < pattern.length; j++) {
        const c = pattern[j]!;
        if (c === "\\") {
          j++;
        } else if (c === "[") {
          depth++;
          if (pattern[j + 1] === "^") j++;
          if (pattern[j + 1] === "]") j++;  // a "]" first in a class is literal
        } else if (c === "]" && --depth === 0) {
          break;
        }
      }
      atom(null);
      i = j + 1;
      continue;
    }
    if (char === "(") {
      const prefix = /^\(\?(?:[imxsWDSPy-]*\)|#[^)]*\))/.exec(pattern.slice(i, i + 64));
      if (prefix) {  // inline flags (?i) or a comment: not a group, nothing to repeat
        previous = null;
        i += prefix[0].length;
        continue;
      }
      const lookbehind = /^\(\?<[=!]/.test(pattern.slice(i, i + 4));
      if (/^\(\?P?(?:<[A-Za-z_]|')/.test(pattern.slice(i, i + 4)) && !lookbehind) {
        // Named group: skip its name.
        i = pattern.indexOf(pattern[i + 2] === "'" ? "'" : ">", i + 3) + 1;
        if (i === 0) return null;  // malformed; the compiler reports it
      } else {
        const groupPrefix = /^\((?:\?(?:[imxsWDSPy-]*:|<?[=!]|>|~))?/.exec(pattern.slice(i, i + 16))!;
        i += groupPrefix[0].length;
      }
      stack.push(newGroup(lookbehind));
      previous = null;
      continue;
    }
    if (char === ")") {
      const group = stack.pop()!;
      closeBranch(group);
      // Run at every position, an unbounded lookbehind rescans the text before it: quadratic.
      if (group.lookbehind && group.repeatsUnbounded) return "repeats without bound inside a lookbehind";
      if (group.branchStarts.length > 1) {
        const starts = group.branchStarts;
        if (starts.some((start) => start === null) || new Set(starts).size !== starts.length) group.overlappingAlternation = true;
      }
      const parent = stack[stack.length - 1];
      if (!parent) return null;  // unbalanced; the compiler reports it
      parent.quantified ||= group.quantified;
      parent.repeatsUnbounded ||= group.repeatsUnbounded;
      parent.overlappingAlternation ||= group.overlappingAlternation;
      const first = group.branchStarts.length === 1 ? group.branchStarts[0]! : null;
      atom(first, group);
      i++;
      continue;
    }
    if (char === "|") {
      closeBranch(stack[stack.length - 1]!);
      previous = null;
      i++;
      continue;
    }
    const quantifier = /^(?:[*+?]|\{(\d*)(,?)(\d*)\})/.exec(pattern.slice(i, i + 32));
    if (quantifier && (quantifier[0].length === 1 || quantifier[1] !== "" || quantifier[3] !== "")) {
      let min = 1;
      let max = 1;
      if (quantifier[0] === "*") [min, max] = [0, Infinity];
      else if (quantifier[0] === "+") [min, max] = [1, Infinity];
      else if (quantifier[0] === "?") [min, max] = [0, 1];
      else {
        min = quantifier[1] === "" ? 0 : Number(quantifier[1]);
        max = quantifier[2] === "" ? min : quantifier[3] === "" ? Infinity : Number(quantifier[3]);
      }
      i += quantifier[0].length;
      if (pattern[i] === "?" || pattern[i] === "+") i++;  // lazy or possessive
      const target = previous as { group: Group | null; literal: string | null; startsBranch: boolean } | null;
      if (target === null) continue;
      const current = stack[stack.length - 1]!;
      if (target.startsBranch && min === 0) current.currentStart = null;  // the branch may start with what follows
      current.quantified = true;
      if (max <= 1) continue;
      const unbounded = max === Infinity;
      const group = target.group;
      if (group !== null) {
        if ((unbounded && group.quantified) || group.repeatsUnbounded) return "repeats a group that holds a quantifier (nested quantifiers)";
        if (unbounded && group.overlappingAlternation) return "repeats alternatives that can match the same text (overlapping alternation)";
      }
      current.repeatsUnbounded ||= unbounded;
      previous = null;
      continue;
    }
    atom(".^$".includes(char) ? null : char);
    i++;
  }
  return null;
}

/** Sequences nest one or two levels in real tokenizers; the bound keeps every walk over them shallow. */
const MAX_SEQUENCE_NESTING = 16;

/** Checks one field of a tokenizer.json component; `field` is its path in the file. */
type FieldCheck = (value: unknown, field: string, source: string) => void;

function fieldError(source: string, field: string, problem: string, cause?: unknown): FalconPresetError {
  return new FalconPresetError(`${source}: ${field} ${problem}`, cause === undefined ? undefined : { cause });
}

const optionalBoolean: FieldCheck = (value, field, source) => {
  if (value !== undefined && value !== null && typeof value !== "boolean") throw fieldError(source, field, `must be true or false, got ${describeValue(value)}`);
};

const optionalString: FieldCheck = (value, field, source) => {
  if (value !== undefined && value !== null && typeof value !== "string") throw fieldError(source, field, `must be a string, got ${describeValue(value)}`);
};

const requiredString: FieldCheck = (value, field, source) => {
  if (typeof value !== "string") throw fieldError(source, field, `must be a string, got ${describeValue(value)}`);
};

const optionalTokenId: FieldCheck = (value, field, source) => {
  if (value !== undefined && value !== null && !(Number.isSafeInteger(value) && (value as number) >= 0)) {
    throw fieldError(source, field, `must be a non-negative integer, got ${describeValue(value)}`);
  }
};

function optionalOneOf(allowed: readonly string[], why = ""): FieldCheck {
  return (value, field, source) => {
    if (value === undefined || value === null) return;
    if (typeof value !== "string" || !allowed.some((name) => name.toLowerCase() === value.toLowerCase())) {
      throw fieldError(source, field, `must be one of ${allowed.join(", ")}${why}, got ${describeValue(value)}`);
    }
  };
}

const positiveInteger: FieldCheck = (value, field, source) => {
  if (!Number.isSafeInteger(value) || (value as number) <= 0) throw fieldError(source, field, `must be a positive integer, got ${describeValue(value)}`);
};

/** A Split or Replace pattern: {"String": s} or {"Regex": r}, the regex compilable and without catastrophic backtracking. */
const pattern: FieldCheck = (value, field, source) => {
  const kinds = isPlainObject(value) ? Object.keys(value).filter((key) => key === "Regex" || key === "String") : [];
  if (!isPlainObject(value) || kinds.length !== 1 || typeof value[kinds[0]!] !== "string") {
    throw fieldError(source, field, `must be {"Regex": "…"} or {"String": "…"}, got ${describeValue(value)}`);
  }
  if (kinds[0] === "String") return;
  const regex = value["Regex"] as string;
  try {
    // Compiled as the encoder will compile it (Oniguruma syntax rewritten for JavaScript), on an empty model.
    const split = { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false };
    new Tokenizer({ model: { type: "BPE", vocab: {}, merges: [] }, normalizer: null, pre_tokenizer: split, post_processor: null, decoder: null, added_tokens: [] }, {});
  } catch (cause) {
    throw fieldError(source, `${field}.Regex`, `${quoted(regex)} is not a valid regular expression (${(cause as Error).message})`, cause);
  }
  const danger = catastrophicBacktracking(regex);
  if (danger !== null) throw fieldError(source, `${field}.Regex`, `${quoted(regex)} ${danger}, which can make matching take time exponential (or quadratic) in the text's length`);
};

/** [token, id], as BertProcessing and RobertaProcessing give `sep` and `cls`. */
const tokenAndId: FieldCheck = (value, field, source) => {
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== "string" || !Number.isSafeInteger(value[1]) || value[1] < 0) {
    throw fieldError(source, field, `must be ["token", id], got ${describeValue(value)}`);
  }
};

/** A TemplateProcessing template: [{"SpecialToken": {id, type_id}} | {"Sequence": {id, type_id}}, …]. */
function template(required: boolean): FieldCheck {
  return (value, field, source) => {
    if (value === undefined && !required) return;
    if (!Array.isArray(value)) throw fieldError(source, field, `must be a list of {"SpecialToken": …} or {"Sequence": …} pieces, got ${describeValue(value)}`);
    value.forEach((piece: unknown, index) => {
      const at = `${field}[${index}]`;
      const kind = isPlainObject(piece) && Object.keys(piece).length === 1 ? Object.keys(piece)[0]! : "";
      const body = isPlainObject(piece) ? piece[kind] : undefined;
      if ((kind !== "SpecialToken" && kind !== "Sequence") || !isPlainObject(body)) {
        throw fieldError(source, at, `must be {"SpecialToken": {id, type_id}} or {"Sequence": {id, type_id}}, got ${describeValue(piece)}`);
      }
      requiredString(body["id"], `${at}.${kind}.id`, source);
      optionalTokenId(body["type_id"], `${at}.${kind}.type_id`, source);
    });
  };
}

/** TemplateProcessing's special_tokens: {name: {id, ids, tokens}}. */
const specialTokens: FieldCheck = (value, field, source) => {
  if (value === undefined || value === null) return;
  if (!isPlainObject(value)) throw fieldError(source, field, `must be an object, got ${describeValue(value)}`);
  for (const [name, token] of Object.entries(value)) {
    const at = `${field}.${quoted(name)}`;
    if (!isPlainObject(token)) throw fieldError(source, at, `must be {id, ids, tokens}, got ${describeValue(token)}`);
    requiredString(token["id"], `${at}.id`, source);
    const { ids, tokens } = token;
    if (!Array.isArray(ids) || !ids.every((id) => Number.isSafeInteger(id) && id >= 0)) throw fieldError(source, `${at}.ids`, `must be a list of token ids, got ${describeValue(ids)}`);
    if (!Array.isArray(tokens) || !tokens.every((entry) => typeof entry === "string")) throw fieldError(source, `${at}.tokens`, `must be a list of strings, got ${describeValue(tokens)}`);
  }
};

/** The component kinds of a tokenizer.json: their types, the fields each type reads, and where a Sequence lists its parts. */
interface ComponentKind {
  name: string;
  sequenceField: string;
  types: Record<string, Record<string, FieldCheck>>;
}

const BYTE_LEVEL_FIELDS = { add_prefix_space: optionalBoolean, trim_offsets: optionalBoolean, use_regex: optionalBoolean };
const REPLACE_FIELDS = { pattern, content: requiredString };

const NORMALIZER: ComponentKind = {
  name: "normalizer",
  sequenceField: "normalizers",
  types: {
    Sequence: {},
    Replace: REPLACE_FIELDS,
    NFC: {}, NFD: {}, NFKC: {}, NFKD: {},
    Strip: { strip_left: optionalBoolean, strip_right: optionalBoolean },
    StripAccents: {},
    Lowercase: {},
    Prepend: { prepend: requiredString },
    BertNormalizer: { clean_text: optionalBoolean, handle_chinese_chars: optionalBoolean, lowercase: optionalBoolean, strip_accents: optionalBoolean },
  },
};

const PRE_TOKENIZER: ComponentKind = {
  name: "pre-tokenizer",
  sequenceField: "pretokenizers",
  types: {
    Sequence: {},
    ByteLevel: BYTE_LEVEL_FIELDS,
    // The encoder splits Isolated or Removed only; merging delimiters into neighbours it would get wrong.
    Split: { pattern, behavior: optionalOneOf(["Isolated", "Removed"], " (the encoder supports no other)"), invert: optionalBoolean },
    Punctuation: { behavior: optionalOneOf(["Contiguous"], " (the encoder supports no other)") },
    Digits: { individual_digits: optionalBoolean },
    Whitespace: {},
    WhitespaceSplit: {},
    BertPreTokenizer: {},
    Metaspace: {
      replacement: optionalString, str_rep: optionalString, add_prefix_space: optionalBoolean, split: optionalBoolean,
      prepend_scheme: optionalOneOf(["always", "first", "never"]),
    },
    Replace: REPLACE_FIELDS,
    FixedLength: { length: positiveInteger },
  },
};

const POST_PROCESSOR: ComponentKind = {
  name: "post-processor",
  sequenceField: "processors",
  types: {
    Sequence: {},
    ByteLevel: BYTE_LEVEL_FIELDS,
    TemplateProcessing: { single: template(true), pair: template(false), special_tokens: specialTokens },
    BertProcessing: { sep: tokenAndId, cls: tokenAndId },
    RobertaProcessing: { sep: tokenAndId, cls: tokenAndId, trim_offsets: optionalBoolean, add_prefix_space: optionalBoolean },
  },
};

const DECODER: ComponentKind = { name: "decoder", sequenceField: "decoders", types: { ByteLevel: BYTE_LEVEL_FIELDS } };

/**
 * Checks a component and, for a Sequence, its parts (at most MAX_SEQUENCE_NESTING deep, so no
 * malformed file can exhaust the stack here or in the encoder); null is "none" at the top only.
 */
function validateComponent(value: unknown, field: string, source: string, kind: ComponentKind, depth = 0): void {
  if (value === null && depth === 0) return;
  if (!isPlainObject(value)) throw fieldError(source, field, `must be a ${kind.name} object with a "type", got ${describeValue(value)}`);
  const type = value["type"];
  const fields = typeof type === "string" && Object.hasOwn(kind.types, type) ? kind.types[type]! : undefined;
  if (fields === undefined) {
    throw fieldError(source, `${field}.type`, `${describeValue(type)} is not a supported ${kind.name} (supported: ${Object.keys(kind.types).join(", ")})`);
  }
  for (const [name, check] of Object.entries(fields)) check(value[name], `${field}.${name}`, source);
  if (type !== "Sequence") return;
  if (depth >= MAX_SEQUENCE_NESTING) throw fieldError(source, field, `nests Sequences more than ${MAX_SEQUENCE_NESTING} deep`);
  const parts = value[kind.sequenceField];
  if (!Array.isArray(parts)) throw fieldError(source, `${field}.${kind.sequenceField}`, `must be a list of ${kind.name}s, got ${describeValue(parts)}`);
  parts.forEach((part: unknown, index) => validateComponent(part, `${field}.${kind.sequenceField}[${index}]`, source, kind, depth + 1));
}

/** An `added_tokens` entry: id, non-empty content and the library's flags. */
function validateAddedToken(value: unknown, field: string, source: string): HfAddedToken {
  if (!isPlainObject(value)) throw fieldError(source, field, `must be an {id, content} object, got ${describeValue(value)}`);
  if (!Number.isSafeInteger(value["id"]) || (value["id"] as number) < 0) {
    throw fieldError(source, `${field}.id`, `must be a non-negative integer, got ${describeValue(value["id"])}`);
  }
  if (typeof value["content"] !== "string" || value["content"] === "") {
    throw fieldError(source, `${field}.content`, `must be a non-empty string, got ${describeValue(value["content"])}`);
  }
  for (const flag of ["single_word", "lstrip", "rstrip", "normalized", "special"]) optionalBoolean(value[flag], `${field}.${flag}`, source);
  return value as unknown as HfAddedToken;
}

/** The BPE model's settings besides vocabulary and merges. */
function validateModelSettings(model: Record<string, unknown>, source: string): void {
  for (const name of ["unk_token", "continuing_subword_prefix", "end_of_word_suffix"]) optionalString(model[name], `model.${name}`, source);
  for (const name of ["fuse_unk", "byte_fallback", "ignore_merges"]) optionalBoolean(model[name], `model.${name}`, source);
  const dropout = model["dropout"];
  if (dropout !== undefined && dropout !== null && !(typeof dropout === "number" && dropout >= 0 && dropout <= 1)) {
    throw fieldError(source, "model.dropout", `must be null or a probability, got ${describeValue(dropout)}`);
  }
}
/** Checks a `{token: id}` map; ids must be distinct non-negative integers. */
function validateVocabulary(vocabulary: unknown, source: string): Record<string, number> {
  if (!isPlainObject(vocabulary)) throw new FalconPresetError(`${source}: vocabulary must be a {token: id} object`);
  const tokenById = new Map<number, string>();
  for (const [token, id] of Object.entries(vocabulary)) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw new FalconPresetError(`${source}: token ${quoted(token)} has invalid id ${describeValue(id)}`);
    }
    const other = tokenById.get(id);
    if (other !== undefined) {
      throw new FalconPresetError(`${source}: tokens ${quoted(other)} and ${quoted(token)} share id ${id}`);
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
      throw new FalconPresetError(`${path} line ${index + 1}: expected "left right", got ${quoted(line)}`);
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
      throw new FalconPresetError(`${path}: model.merges[${index}] is not a "left right" merge: ${describeValue(merge)}`);
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
      throw new FalconPresetError(`${source}: merge ${index + 1} "${left} ${right}" uses ${quoted(missing)}, which is not in the vocabulary`);
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

/** GPT-2's character classes, as its pre-tokenisation regex sees them (`\s` is White_Space there). */
const enum CharClass { Space, Letter, Number, Other }
const WHITE_SPACE = /^\p{White_Space}$/u;
const LETTER = /^\p{L}$/u;
const NUMBER = /^\p{N}$/u;

function charClass(character: string): CharClass {
  if (WHITE_SPACE.test(character)) return CharClass.Space;
  if (LETTER.test(character)) return CharClass.Letter;
  return NUMBER.test(character) ? CharClass.Number : CharClass.Other;
}

const isHighSurrogate = (unit: number) => unit >= 0xd800 && unit <= 0xdbff;
const isLowSurrogate = (unit: number) => unit >= 0xdc00 && unit <= 0xdfff;

/**
 * Whether GPT-2's pre-tokenisation regex splits `text` at `k` whatever follows `k`: the character
 * before `k` is not white space and the one at `k` is of another class (white space, letter, number,
 * other). Then every alternative that matches the character before `k` stops at `k` (`'s`-style
 * contractions, ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`; the white-space alternatives cannot
 * hold it), and no decision before `k` reads past it, so the pre-tokens of text[0, k) are those of
 * `text` up to `k`. The one exception is an apostrophe before a letter, which a contraction joins.
 */
function isGpt2Boundary(text: string, k: number): boolean {
  if (k <= 0 || k >= text.length || isLowSurrogate(text.charCodeAt(k))) return false;
  const beforeStart = k >= 2 && isLowSurrogate(text.charCodeAt(k - 1)) && isHighSurrogate(text.charCodeAt(k - 2)) ? k - 2 : k - 1;
  const before = text.slice(beforeStart, k);
  const after = text.slice(k, isHighSurrogate(text.charCodeAt(k)) && isLowSurrogate(text.charCodeAt(k + 1)) ? k + 2 : k + 1);
  const beforeClass = charClass(before);
  const afterClass = charClass(after);
  return beforeClass !== CharClass.Space && beforeClass !== afterClass && !(before === "'" && afterClass === CharClass.Letter);
}

/**
 * Whether every GPT-2 boundary (isGpt2Boundary) of a text is also where its encoding may be cut:
 * no normalizer, and a pre-tokenizer made of GPT-2's split and steps that only split runs of a
 * character class or map characters (Punctuation, Digits, ByteLevel without its regex; falcon-7b's
 * layout). Such steps split a prefix of a piece as they split the piece, GPT-2's split ends a
 * pre-token at the boundary, and BPE works on each pre-token alone.
 */
function cutsAtGpt2Boundaries(normalizer: unknown, preTokenizer: HfPreTokenizer | null): boolean {
  if (normalizer !== null || preTokenizer === null) return false;
  const steps: HfPreTokenizer[] = [];
  const flatten = (step: HfPreTokenizer): void => {
    if (step.type === "Sequence") (step.pretokenizers ?? []).forEach(flatten);
    else steps.push(step);
  };
  flatten(preTokenizer);
  const isGpt2Split = (step: HfPreTokenizer) =>
    step.type === "Split" && isPlainObject(step["pattern"]) && step["pattern"]["Regex"] === GPT2_SPLIT_PATTERN &&
    step["behavior"] === "Isolated" && step["invert"] !== true;
  const onlySplitsRuns = (step: HfPreTokenizer) =>
    step.type === "Punctuation" || step.type === "Digits" || (step.type === "ByteLevel" && step.use_regex === false);
  return steps.some(isGpt2Split) && steps.every((step) => isGpt2Split(step) || onlySplitsRuns(step));
}

/**
 * Byte-level BPE tokenizer for Falcon. `<|endoftext|>` is the start and end token and is never split
 * by BPE; `encode` adds no special tokens (keras-hub's preprocessor adds the start token).
 */
/** @internal A tokenizer as data, to rebuild it in a worker thread. */
export interface TokenizerDefinition {
  json: object;
  source: string;
}

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
  /** The checked tokenizer.json this tokenizer was built from, and where it came from (for workers). */
  private readonly json: HfTokenizerJson;
  private readonly source: string;
  /** Whether encodePrefix may encode a prefix cut at a GPT-2 boundary (see cutsAtGpt2Boundaries). */
  private readonly prefixCutsAtGpt2Boundaries: boolean;
  /** Added tokens are matched before pre-tokenisation: a prefix must not cut one in two. */
  private readonly addedTokenContents: string[];
  private readonly idByToken: Map<string, number>;
  private readonly tokenById: string[];
  /** The raw bytes of token `id` are `tokenBytes[tokenByteOffsets[id] .. tokenByteOffsets[id + 1]]`. */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenByteOffsets: Int32Array;
  /** ignoreBOM keeps a leading U+FEFF (lossless); non-fatal turns partial UTF-8 into U+FFFD. */
  private readonly utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  private constructor(json: HfTokenizerJson, source: string) {
    this.json = json;
    this.source = source;
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

    const preTokenizer = withExactWhitespaceSplit(json.pre_tokenizer, source);
    this.prefixCutsAtGpt2Boundaries = cutsAtGpt2Boundaries(json.normalizer, preTokenizer);
    this.addedTokenContents = addedTokens.map((added) => added.content);
    try {
      this.encoder = new Tokenizer(
        {
          ...json,
          added_tokens: addedTokens,
          pre_tokenizer: preTokenizer,
          // Encoding adds no special tokens, so the post-processor changes nothing; decoding is done
          // here. Neither is built, so a field the library would misread there cannot matter.
          post_processor: null,
          decoder: null,
        },
        // The tokenizer_config only steers the library's decode, which this class does not use.
        {},
      );
    } catch (cause) {
      // The fields the library reads are checked above; this names the file if it still refuses one.
      if (cause instanceof FalconError) throw cause;
      throw new FalconPresetError(`${source}: the tokenizer cannot be built (${(cause as Error).message})`, { cause });
    }
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
    requirePath(presetDir, "presetDir");
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
    requirePath(pathOrDir, "pathOrDir");
    const path = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory() ? join(pathOrDir, TOKENIZER_JSON) : pathOrDir;
    return FalconTokenizer.fromHfTokenizerObject(readJsonFile(path, "HF tokenizer.json"), path);
  }

  /** @internal A parsed tokenizer.json (built by a preset reader, e.g. from a GGUF's vocabulary), checked as a file is. */
  static fromHfTokenizerObject(parsed: unknown, path: string): FalconTokenizer {
    if (!isPlainObject(parsed) || !isPlainObject(parsed["model"])) {
      throw new FalconPresetError(`${path} is not an HF tokenizer.json (no "model" object)`);
    }
    const model = parsed["model"];
    if (model["type"] !== undefined && model["type"] !== "BPE") {
      throw new FalconPresetError(`${path}: model type ${describeValue(model["type"])} is not supported, only BPE`);
    }
    const vocabulary = validateVocabulary(model["vocab"], path);
    const merges = parseHfMerges(model["merges"], path);
    validateMerges(merges, vocabulary, path);
    validateModelSettings(model, path);
    const addedTokenList = parsed["added_tokens"] ?? [];
    if (!Array.isArray(addedTokenList)) throw fieldError(path, "added_tokens", `must be a list of {id, content}, got ${describeValue(addedTokenList)}`);
    const addedTokens = addedTokenList.map((added: unknown, index) => validateAddedToken(added, `added_tokens[${index}]`, path));
    const components = { normalizer: NORMALIZER, pre_tokenizer: PRE_TOKENIZER, post_processor: POST_PROCESSOR, decoder: DECODER };
    for (const [field, kind] of Object.entries(components)) {
      if (parsed[field] !== undefined && parsed[field] !== null && !isPlainObject(parsed[field])) {
        throw fieldError(path, field, `must be a ${kind.name} object or null, got ${describeValue(parsed[field])}`);
      }
    }
    // A decoder other than ByteLevel is refused below with the reason (only byte-level BPE).
    if (isPlainObject(parsed["decoder"]) && parsed["decoder"]["type"] === "ByteLevel") validateComponent(parsed["decoder"], "decoder", path, DECODER);
    validateComponent(parsed["normalizer"] ?? null, "normalizer", path, NORMALIZER);
    validateComponent(parsed["pre_tokenizer"] ?? null, "pre_tokenizer", path, PRE_TOKENIZER);
    validateComponent(parsed["post_processor"] ?? null, "post_processor", path, POST_PROCESSOR);
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
    requirePath(presetDir, "presetDir");
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

  /**
   * @internal What rebuilds this tokenizer in another thread (structured-cloneable): pass it to
   * FalconTokenizer.fromDefinition there.
   */
  get definition(): TokenizerDefinition {
    return { json: this.json, source: this.source };
  }

  /** @internal The tokenizer a `definition` describes (already checked where it was made). */
  static fromDefinition(definition: TokenizerDefinition): FalconTokenizer {
    return new FalconTokenizer(definition.json as HfTokenizerJson, definition.source);
  }

  /** Token ids of `text`, without start or end token. Lone UTF-16 surrogates encode as U+FFFD. */
  encode(text: string): Int32Array {
    return Int32Array.from(this.encoder.encode(text, { add_special_tokens: false }).ids);
  }

  /**
   * The first `maxTokens` ids of encode(text), tokenizing only what they need: growing prefixes of the
   * text, each cut where the encoding of a prefix is a prefix of the text's encoding (a GPT-2
   * pre-token boundary outside any added token), until one yields enough ids. A text without such a
   * cut, or a tokenizer whose pipeline gives no such guarantee, is encoded whole.
   */
  encodePrefix(text: string, maxTokens: number): Int32Array {
    if (typeof maxTokens !== "number" || !(maxTokens >= 0)) {
      throw new FalconInputError(`maxTokens must be a non-negative number, got ${describeValue(maxTokens)}`);
    }
    // GPT-2 averages about 4 characters a token; a prefix that falls short is doubled.
    for (let length = 4 * maxTokens + 256; this.prefixCutsAtGpt2Boundaries && length < text.length; length *= 2) {
      const cut = this.nextPrefixCut(text, length);
      if (cut < 0) break;
      const ids = this.encode(text.slice(0, cut));
      if (ids.length >= maxTokens) return ids.slice(0, maxTokens);
      length = cut;
    }
    const ids = this.encode(text);
    return ids.length > maxTokens ? ids.slice(0, maxTokens) : ids;
  }

  /** The first GPT-2 boundary at or after `from` that no added token spans, or -1. */
  private nextPrefixCut(text: string, from: number): number {
    for (let k = from; k < text.length; k++) {
      if (!isGpt2Boundary(text, k)) continue;
      const spansAddedToken = this.addedTokenContents.some((content) => {
        const start = Math.max(0, k - content.length + 1);
        const at = text.slice(start, k + content.length - 1).indexOf(content);
        return at >= 0 && start + at < k;
      });
      if (!spansAddedToken) return k;
    }
    return -1;
  }

  encodeBatch(texts: readonly string[]): Int32Array[] {
    return texts.map((text) => this.encode(text));
  }

  /** The exact bytes the ids stand for; may end (or start) inside a UTF-8 character. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    checkIdList(ids, "decode");
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
