/**
 * FalconCausalLMPreprocessor: keras-hub's `FalconCausalLMPreprocessor` (KH17 causal_lm_preprocessor.py,
 * start_end_packer.py). Text is tokenized, the start token prepended, rows right-padded with the pad
 * id and truncated from the right, and the padding mask built for the caller. Token ids are accepted
 * too (one row, or a ragged batch) and used verbatim: no start token is added to ids.
 */
import { describeValue, FalconInputError } from "./errors.js";
import { checkBatchFits, checkIdList, packInputs, type PaddingMaskInput, type TokenIdsInput } from "./inputs.js";
import type { FalconTokenizer } from "./tokenizer.js";

/** keras-hub's hard-coded pad id (GPT-2's "!"; pads are masked out). */
const DEFAULT_PAD_TOKEN_ID = 0;

export interface FalconCausalLMPreprocessorOptions {
  /** Packed length for call() and the truncation length for prompts (default 1024, as keras-hub). */
  sequenceLength?: number;
  /** Prepend the start token to text (default true, as keras-hub; HF checkpoints add none). */
  addStartToken?: boolean;
  /** Append the end token in call() (training); generation never adds it (default true). */
  addEndToken?: boolean;
  /** Override the tokenizer's special ids, or give them when there is no tokenizer (HF generation_config). */
  startTokenId?: number;
  endTokenId?: number;
  padTokenId?: number;
}

/** Prompts already padded into a rectangle, as Hugging Face passes them (left padding allowed). */
export interface PaddedPrompts {
  tokenIds: TokenIdsInput;
  /** 1 = real token, 0 = padding; all ones when omitted. */
  paddingMask?: PaddingMaskInput;
  /** Shape of a flat Int32Array tokenIds. */
  shape?: [number, number];
}

/**
 * What generate() accepts: a string, a batch of strings, a row of ids, a ragged batch of id rows, or
 * a padded batch with its mask.
 */
export type PromptInput =
  | string
  | readonly string[]
  | readonly number[]
  | Int32Array
  | readonly (readonly number[] | Int32Array)[]
  | PaddedPrompts;

/** A batch packed for the model: right-padded (unless it came padded), flat, with its mask. */
export interface PackedPrompts {
  /** [batch, length] row-major. */
  tokenIds: Int32Array;
  /** [batch, length] row-major, 1 = real token. */
  paddingMask: Uint8Array;
  shape: [number, number];
  /** Per row: one past the last real token (the slot its first new token goes to). */
  lengths: Int32Array;
  /** Whether the prompts were text (so results are text) or token ids. */
  kind: "text" | "ids";
  /** Whether a single prompt (not a batch) was given. */
  single: boolean;
}

export interface GeneratePreprocessOptions {
  /** Truncation length (default the preprocessor's sequenceLength). */
  sequenceLength?: number;
  /**
   * "longest" (default) pads to the longest row, which is all generation needs; "sequenceLength" pads
   * every row to sequenceLength as keras-hub's packer does.
   */
  padTo?: "longest" | "sequenceLength";
}

/** keras-hub's training-time output: x = packed[:-1], y = packed[1:], sampleWeight = mask[1:]. */
export interface CausalLMTrainingBatch {
  x: { tokenIds: Int32Array; paddingMask: Uint8Array; shape: [number, number] };
  y: Int32Array;
  sampleWeight: Float32Array;
}

function isPaddedPrompts(value: unknown): value is PaddedPrompts {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value) && "tokenIds" in value;
}

function checkPositiveInteger(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new FalconInputError(`${name} must be a positive integer, got ${describeValue(value)}`);
  }
  return value;
}

function checkTokenId(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0x7fffffff) {
    throw new FalconInputError(`${name} must be a non-negative integer token id, got ${describeValue(value)}`);
  }
  return value;
}

export class FalconCausalLMPreprocessor {
  readonly tokenizer: FalconTokenizer | undefined;
  readonly sequenceLength: number;
  readonly addStartToken: boolean;
  readonly addEndToken: boolean;
  readonly startTokenId: number | undefined;
  readonly endTokenId: number | undefined;
  readonly padTokenId: number;

  constructor(tokenizer?: FalconTokenizer, options: FalconCausalLMPreprocessorOptions = {}) {
    this.tokenizer = tokenizer;
    this.sequenceLength = checkPositiveInteger(options.sequenceLength ?? 1024, "sequenceLength");
    this.addStartToken = options.addStartToken ?? true;
    this.addEndToken = options.addEndToken ?? true;
    const optionalId = (value: number | undefined, name: string) => (value === undefined ? undefined : checkTokenId(value, name));
    this.startTokenId = optionalId(options.startTokenId, "startTokenId") ?? tokenizer?.startTokenId;
    this.endTokenId = optionalId(options.endTokenId, "endTokenId") ?? tokenizer?.endTokenId;
    this.padTokenId = optionalId(options.padTokenId, "padTokenId") ?? tokenizer?.padTokenId ?? DEFAULT_PAD_TOKEN_ID;
  }

  /** The tokenizer, or a FalconInputError saying how to get one. */
  requireTokenizer(what = "text prompts"): FalconTokenizer {
    if (!this.tokenizer) {
      throw new FalconInputError(
        `${what} need a tokenizer, and this model has none: load a preset that has one (keras-hub assets/tokenizer/ ` +
          "or an HF tokenizer.json), pass one to new FalconCausalLM(backbone, tokenizer), or give token ids instead",
      );
    }
    return this.tokenizer;
  }

  /**
   * Token ids of one text, with the start token when addStartToken; at most `maxLength` of them
   * (default: no truncation). Only as much text is tokenized as the kept ids need.
   */
  tokenize(text: string, maxLength = Infinity): Int32Array {
    const tokenizer = this.requireTokenizer();
    if (maxLength !== Infinity) checkPositiveInteger(maxLength, "maxLength");
    const start = this.addStartToken ? 1 : 0;
    return this.#withStartToken(maxLength === Infinity ? tokenizer.encode(text) : tokenizer.encodePrefix(text, Math.max(0, maxLength - start)));
  }

  /**
   * @internal tokenize(text, maxLength) with the text encoded by `encodePrefix` (the tokenizer's
   * encodePrefix run elsewhere, e.g. in a worker thread).
   */
  async tokenizeWith(text: string, maxLength: number, encodePrefix: (text: string, maxTokens: number) => Promise<Int32Array>): Promise<Int32Array> {
    this.requireTokenizer();
    checkPositiveInteger(maxLength, "maxLength");
    return this.#withStartToken(await encodePrefix(text, Math.max(0, maxLength - (this.addStartToken ? 1 : 0))));
  }

  #withStartToken(ids: Int32Array): Int32Array {
    if (!this.addStartToken) return ids;
    const withStart = new Int32Array(ids.length + 1);
    withStart[0] = this.startTokenId!;
    withStart.set(ids, 1);
    return withStart;
  }

  /**
   * keras-hub's generate_preprocess: tokenizes, prepends the start token to text, truncates every row
   * to sequenceLength from the right, right-pads with padTokenId and builds the mask. Ids are used
   * verbatim (truncated too); a PaddedPrompts batch is used as given (its rows may be left-padded).
   */
  generatePreprocess(prompts: PromptInput, options: GeneratePreprocessOptions = {}): PackedPrompts {
    const sequenceLength = checkPositiveInteger(options?.sequenceLength ?? this.sequenceLength, "sequenceLength");
    if (isPaddedPrompts(prompts)) return this.packPadded(prompts);
    let rows: ArrayLike<number>[];
    let kind: "text" | "ids";
    let single: boolean;
    if (typeof prompts === "string") {
      [rows, kind, single] = [[this.tokenize(prompts, sequenceLength)], "text", true];
    } else if (prompts instanceof Int32Array) {
      [rows, kind, single] = [[prompts], "ids", true];
    } else if (Array.isArray(prompts)) {
      if (prompts.length === 0) throw new FalconInputError("prompts must not be an empty array");
      const first = prompts[0];
      if (typeof first === "string") {
        prompts.forEach((prompt: unknown, row: number) => {
          if (typeof prompt !== "string") throw new FalconInputError(`prompts[${row}] is not a string: a batch is all text or all token ids`);
        });
        [rows, kind, single] = [(prompts as string[]).map((text) => this.tokenize(text, sequenceLength)), "text", false];
      } else if (typeof first === "number") {
        [rows, kind, single] = [[prompts as readonly number[]], "ids", true];
      } else if (Array.isArray(first) || first instanceof Int32Array) {
        prompts.forEach((prompt: unknown, row: number) => {
          if (!Array.isArray(prompt) && !(prompt instanceof Int32Array)) {
            throw new FalconInputError(`prompts[${row}] is not an array of token ids: a batch is all text or all token ids`);
          }
        });
        [rows, kind, single] = [prompts as ArrayLike<number>[], "ids", false];
      } else {
        throw new FalconInputError(`prompts[0] must be a string, a token id or an array of token ids, got ${describeValue(first)}`);
      }
    } else {
      throw new FalconInputError(
        "prompts must be a string, an array of strings, token ids (number[] or Int32Array), an array of id rows, or { tokenIds, paddingMask }",
      );
    }
    const truncated = rows.map((row, r) => {
      const length = Math.min(row.length, sequenceLength);
      if (length === 0) {
        throw new FalconInputError(`prompt ${r} is empty: generation needs at least one token (text gets the start token unless addStartToken is false)`);
      }
      return { row, length, r };
    });
    const width = options?.padTo === "sequenceLength" ? sequenceLength : truncated.reduce((longest, t) => Math.max(longest, t.length), 0);
    const batch = rows.length;
    // Int32 ids and a byte of mask per cell.
    checkBatchFits(batch, width, 5, "generatePreprocess");
    const tokenIds = new Int32Array(batch * width).fill(this.padTokenId);
    const paddingMask = new Uint8Array(batch * width);
    const lengths = new Int32Array(batch);
    for (const { row, length, r } of truncated) {
      for (let c = 0; c < length; c++) {
        tokenIds[r * width + c] = checkTokenId(row[c], `prompt ${r} token ${c}`);
        paddingMask[r * width + c] = 1;
      }
      lengths[r] = length;
    }
    return { tokenIds, paddingMask, shape: [batch, width], lengths, kind, single };
  }

  /** A padded batch as given; each row's length ends at its last real token. */
  private packPadded(prompts: PaddedPrompts): PackedPrompts {
    const packed = packInputs({ tokenIds: prompts.tokenIds, paddingMask: prompts.paddingMask, shape: prompts.shape }, 0x7fffffff);
    const { batch, length } = packed;
    const paddingMask = packed.paddingMask ?? new Uint8Array(batch * length).fill(1);
    const lengths = new Int32Array(batch);
    for (let r = 0; r < batch; r++) {
      let last = -1;
      for (let c = 0; c < length; c++) if (paddingMask[r * length + c]) last = c;
      if (last < 0) throw new FalconInputError(`paddingMask row ${r} has no real token: generation needs at least one`);
      lengths[r] = last + 1;
    }
    return { tokenIds: packed.tokenIds, paddingMask, shape: [batch, length], lengths, kind: "ids", single: false };
  }

  /**
   * keras-hub's training-time call(): each text packed to sequenceLength + 1 with the start and end
   * tokens (as configured), truncated from the right and right-padded; x drops the last column, y the
   * first, and sampleWeight is the mask of y.
   */
  call(texts: string | readonly string[]): CausalLMTrainingBatch {
    const tokenizer = this.requireTokenizer();
    const batch = typeof texts === "string" ? [texts] : texts;
    if (!Array.isArray(batch) || !batch.every((text) => typeof text === "string")) {
      throw new FalconInputError(`call() takes a text or an array of texts, got ${describeValue(texts)}`);
    }
    const L = this.sequenceLength;
    // Int32 ids and labels, float32 weights and a byte of mask per cell.
    checkBatchFits(batch.length, L, 13, "call()");
    const tokenIds = new Int32Array(batch.length * L).fill(this.padTokenId);
    const paddingMask = new Uint8Array(batch.length * L);
    const y = new Int32Array(batch.length * L).fill(this.padTokenId);
    const sampleWeight = new Float32Array(batch.length * L);
    batch.forEach((text, r) => {
      const start = this.addStartToken ? [this.startTokenId!] : [];
      const ids = [
        ...start,
        ...tokenizer.encodePrefix(text, L + 1 - start.length),
        ...(this.addEndToken ? [this.endTokenId!] : []),
      ].slice(0, L + 1);
      ids.forEach((id, c) => {
        if (c < L) {
          tokenIds[r * L + c] = id;
          paddingMask[r * L + c] = 1;
        }
        if (c > 0) {
          y[r * L + c - 1] = id;
          sampleWeight[r * L + c - 1] = 1;
        }
      });
    });
    return { x: { tokenIds, paddingMask, shape: [batch.length, L] }, y, sampleWeight };
  }

  /**
   * keras-hub's generate_postprocess for one row of real tokens: the text without the start and end
   * tokens (keras-hub drops every start/end id before detokenizing).
   */
  detokenize(ids: ArrayLike<number>): string {
    const tokenizer = this.requireTokenizer("text output");
    return tokenizer.decode(this.withoutSpecialTokens(ids));
  }

  /** The ids without start and end tokens. */
  withoutSpecialTokens(ids: ArrayLike<number>): Int32Array {
    checkIdList(ids, "withoutSpecialTokens");
    const kept = new Int32Array(ids.length);
    let count = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!this.isSpecial(id)) kept[count++] = id;
    }
    return kept.subarray(0, count);
  }

  /** Whether `id` is the start or end token (skipped in text output). */
  isSpecial(id: number): boolean {
    return id === this.startTokenId || id === this.endTokenId;
  }
}
