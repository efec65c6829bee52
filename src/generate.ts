/**
 * The decoding loop behind FalconCausalLM.generate() and stream().
 *
 * One prefill call runs the whole padded batch (paddingMask = real tokens) into a fresh KV cache, then
 * every step feeds one token per row at that row's own cache slot (per-row cacheUpdateIndex), so
 * prompts of different lengths decode together without re-processing anything: positions for ALiBi
 * and rotary come from the cache's padding history, so every row sees the positions it would alone.
 * Rows that are done are fed the pad token with mask 0 at a parking slot (the native batch must keep
 * the cache's batch size); their results are ignored and rows never affect each other.
 */
import type { FalconBackbone, FalconKvCache } from "./backbone.js";
import type { ResolvedBackboneConfig } from "./config.js";
import { describeValue, FalconInputError } from "./errors.js";
import { checkAllocation } from "./inputs.js";
import { callNative } from "./native.js";
import type { FalconCausalLMPreprocessor, PackedPrompts, PromptInput } from "./preprocessor.js";
import { createSampler, type SamplerSpec } from "./samplers.js";
import { TokenStreamDecoder } from "./stream-decoder.js";

export interface GenerateOptions {
  /** New tokens per row at most. */
  maxNewTokens?: number;
  /**
   * keras-hub's max_length: prompt + completion of a row at most (prompts are truncated to it).
   * Default: the preprocessor's sequenceLength when maxNewTokens is not given either.
   */
  maxLength?: number;
  /** A row stops after producing one of these (default: the end token; null: never stop early). */
  stopTokenIds?: readonly number[] | null;
  /** Return only the completion (default false: prompt + completion, as keras-hub). */
  stripPrompt?: boolean;
  /** "greedy" (default), "topK", "topP", "temperature", "random", or { type, k, p, temperature, seed }. */
  sampler?: SamplerSpec;
  /** Aborting stops generation before the next step, frees the cache and rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called for every generated token (stop tokens included) with its batch row. */
  onToken?: (tokenId: number, row: number) => void;
}

/** A piece of streamed text and the batch row it belongs to. */
export interface StreamPiece {
  row: number;
  text: string;
}

/** What the decoding loop needs from a FalconCausalLM. */
export interface DecodeContext {
  readonly backbone: FalconBackbone;
  readonly preprocessor: FalconCausalLMPreprocessor;
  /** @internal Ids at or above this are never sampled (the tokenizer's vocabulary size). */
  readonly samplingVocabularySize: number;
  createCache(options: { batchSize: number; maxLength: number }): FalconKvCache;
}

/** One decoding step, reused between steps: tokens[b] is valid where produced[b] is 1. */
interface StepEvent {
  tokens: Int32Array;
  produced: Uint8Array;
}

/** The prompts as packed and every row's generated tokens. */
interface DecodeResult {
  packed: PackedPrompts;
  generated: Int32Array[];
}

/** Bytes a KV cache holds per sequence slot: float32 keys and values of every layer, a valid flag and a position. */
function cacheBytesPerSlot(config: ResolvedBackboneConfig): number {
  const headDim = config.hiddenDim / config.numAttentionHeads;
  return config.numLayers * 2 * config.numKeyValueHeads * headDim * Float32Array.BYTES_PER_ELEMENT + 1 + Int32Array.BYTES_PER_ELEMENT;
}

/**
 * Refuses a cache that cannot exist before anything is allocated. Whether the memory is free right
 * now is the native allocator's check; this one needs no native call and holds whatever else is running.
 */
function checkCacheSize(config: ResolvedBackboneConfig, batch: number, cacheLength: number, longestPrompt: number): void {
  const bytes = batch * cacheLength * cacheBytesPerSlot(config);
  checkAllocation(
    `generate needs a KV cache of ${batch} × ${cacheLength} tokens (prompt ${longestPrompt} + up to ${cacheLength - longestPrompt} new), ${bytes} bytes`,
    cacheLength,
    bytes,
    "; lower maxNewTokens or maxLength",
  );
}

const OPTION_KEYS = new Set(["maxNewTokens", "maxLength", "stopTokenIds", "stripPrompt", "sampler", "signal", "onToken"]);

/** @internal Throws FalconInputError for options generate() does not take or values it refuses. */
export function checkOptions(options: GenerateOptions): void {
  if (typeof options !== "object" || options === null) throw new FalconInputError("generate options must be an object");
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) throw new FalconInputError(`unknown generate option "${key}" (known: ${[...OPTION_KEYS].join(", ")})`);
  }
  const { maxNewTokens, maxLength, stopTokenIds, signal, onToken } = options;
  if (maxNewTokens !== undefined && (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)) {
    throw new FalconInputError(`maxNewTokens must be a non-negative integer, got ${describeValue(maxNewTokens)}`);
  }
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength <= 0)) {
    throw new FalconInputError(`maxLength must be a positive integer, got ${describeValue(maxLength)}`);
  }
  if (stopTokenIds !== undefined && stopTokenIds !== null &&
      (!Array.isArray(stopTokenIds) || !stopTokenIds.every((id) => Number.isInteger(id) && id >= 0))) {
    throw new FalconInputError(`stopTokenIds must be an array of token ids or null, got ${describeValue(stopTokenIds)}`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new FalconInputError("signal must be an AbortSignal");
  if (onToken !== undefined && typeof onToken !== "function") throw new FalconInputError("onToken must be a function");
}

/** The AbortError a generate call rejects with (the signal's own reason when that is an AbortError). */
export function abortError(signal: AbortSignal): DOMException {
  const reason: unknown = signal.reason;
  if (reason instanceof DOMException && reason.name === "AbortError") return reason;
  const error = new DOMException("generation was aborted", "AbortError");
  if (reason !== undefined) Object.defineProperty(error, "cause", { value: reason, configurable: true, writable: true });
  return error;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * The batch with every row's real tokens moved to its start, right-padded to the longest row. A padded
 * prompt may be far wider than its real tokens (200,000 columns, one real token) and the prefill costs
 * width²; padding is masked out and positions count only real tokens, so dropping it changes nothing.
 */
function withoutPadding(packed: PackedPrompts, padTokenId: number): PackedPrompts {
  const [batch, width] = packed.shape;
  const realCounts = new Int32Array(batch);
  for (let i = 0; i < packed.paddingMask.length; i++) realCounts[Math.floor(i / width)]! += packed.paddingMask[i]!;
  const longest = realCounts.reduce((a, b) => Math.max(a, b), 0);
  if (longest === width && realCounts.every((count, b) => count === packed.lengths[b])) {
    // Right-padded already; a pad id the model lacks becomes padTokenId (masked anyway).
    for (let i = 0; i < packed.tokenIds.length; i++) if (!packed.paddingMask[i]) packed.tokenIds[i] = padTokenId;
    return packed;
  }
  const tokenIds = new Int32Array(batch * longest).fill(padTokenId);
  const paddingMask = new Uint8Array(batch * longest);
  for (let b = 0; b < batch; b++) {
    let column = 0;
    for (let c = 0; c < width; c++) {
      if (!packed.paddingMask[b * width + c]) continue;
      tokenIds[b * longest + column] = packed.tokenIds[b * width + c]!;
      paddingMask[b * longest + column++] = 1;
    }
  }
  return { ...packed, tokenIds, paddingMask, shape: [batch, longest], lengths: realCounts };
}

/**
 * The decoding loop as an async generator of steps; its return value holds the tokens. Stopping the
 * iteration early (return() or an error) frees the cache.
 */
export async function* decodeSteps(
  context: DecodeContext, prompts: PromptInput, options: GenerateOptions,
): AsyncGenerator<StepEvent, DecodeResult, undefined> {
  checkOptions(options);
  const { signal, onToken } = options;
  throwIfAborted(signal);
  const sampler = createSampler(options.sampler);
  const { preprocessor, backbone } = context;
  const config = backbone.getConfig();
  const vocabularySize = config.vocabularySize;
  const hiddenDim = config.hiddenDim;
  const allowed = Math.min(context.samplingVocabularySize, vocabularySize);

  const maxLength = options.maxLength ?? (options.maxNewTokens === undefined ? preprocessor.sequenceLength : undefined);
  const preprocessed = preprocessor.generatePreprocess(prompts, { sequenceLength: maxLength ?? preprocessor.sequenceLength });
  const padTokenId = preprocessor.padTokenId < vocabularySize ? preprocessor.padTokenId : 0;
  for (let i = 0; i < preprocessed.tokenIds.length; i++) {
    const id = preprocessed.tokenIds[i]!;
    if (id >= vocabularySize && preprocessed.paddingMask[i]) {
      const width = preprocessed.shape[1];
      throw new FalconInputError(`prompt ${Math.floor(i / width)} token ${i % width} = ${id} is out of range [0, ${vocabularySize})`);
    }
  }
  const packed = withoutPadding(preprocessed, padTokenId);
  const [batch, width] = packed.shape;
  const stopTokenIds = options.stopTokenIds === undefined
    ? (preprocessor.endTokenId === undefined ? [] : [preprocessor.endTokenId])
    : (options.stopTokenIds ?? []);
  const stops = new Set(stopTokenIds);

  // Per-row budgets: maxNewTokens, and what maxLength leaves after the prompt. Plain numbers: an
  // option may be any integer, and the cache check below refuses what no cache can hold.
  const lengths = packed.lengths;
  const budget: number[] = [];
  let cacheLength = width;
  let longestPrompt = 0;
  for (let b = 0; b < batch; b++) {
    const byNew = options.maxNewTokens ?? Infinity;
    const byLength = maxLength === undefined ? Infinity : Math.max(0, maxLength - lengths[b]!);
    budget.push(Math.min(byNew, byLength));
    cacheLength = Math.max(cacheLength, lengths[b]! + budget[b]!);
    longestPrompt = Math.max(longestPrompt, lengths[b]!);
  }
  // Rows grow as tokens come: a budget is a bound, not a size to allocate.
  const generated = budget.map((): number[] => []);
  const running = Uint8Array.from(budget, (count) => (count > 0 ? 1 : 0));
  const result = (): DecodeResult => ({ packed, generated: generated.map((row) => Int32Array.from(row)) });
  if (!running.some((flag) => flag === 1)) return result();
  checkCacheSize(config, batch, cacheLength, longestPrompt);

  const model = await backbone.nativeModel();
  throwIfAborted(signal);
  const cache = context.createCache({ batchSize: batch, maxLength: cacheLength });
  try {
    // Prefill: the padded prompts at slots [0, width); logits only at each row's last real token.
    const hidden = await callNative(() =>
      model.forward(packed.tokenIds, packed.paddingMask, null, batch, width, cache.native, new Int32Array(batch)),
    );
    const lastHidden = new Float32Array(batch * hiddenDim);
    for (let b = 0; b < batch; b++) {
      const at = (b * width + lengths[b]! - 1) * hiddenDim;
      lastHidden.set(hidden.subarray(at, at + hiddenDim), b * hiddenDim);
    }
    let logits = await callNative(() => model.projectLogits(lastHidden, batch));

    const event: StepEvent = { tokens: new Int32Array(batch), produced: new Uint8Array(batch) };
    const stepIds = new Int32Array(batch);
    const stepMask = new Uint8Array(batch);
    const stepIndex = new Int32Array(batch);
    for (;;) {
      throwIfAborted(signal);
      let anyRunning = false;
      for (let b = 0; b < batch; b++) {
        event.produced[b] = 0;
        if (!running[b]) continue;
        const token = sampler.sample(logits, b * vocabularySize, allowed, b);
        generated[b]!.push(token);
        event.tokens[b] = token;
        event.produced[b] = 1;
        if (stops.has(token) || generated[b]!.length >= budget[b]!) running[b] = 0;
        else anyRunning = true;
        onToken?.(token, b);
        throwIfAborted(signal);
      }
      yield event;
      if (!anyRunning) break;
      throwIfAborted(signal);
      for (let b = 0; b < batch; b++) {
        const next = lengths[b]! + generated[b]!.length;  // slot after the row's last token
        if (running[b]) {
          stepIds[b] = event.tokens[b]!;
          stepMask[b] = 1;
          stepIndex[b] = next - 1;
        } else {
          stepIds[b] = padTokenId;
          stepMask[b] = 0;
          stepIndex[b] = Math.min(next, cacheLength - 1);
        }
      }
      const stepHidden = await callNative(() => model.forward(stepIds, stepMask, null, batch, 1, cache.native, stepIndex));
      throwIfAborted(signal);
      logits = await callNative(() => model.projectLogits(stepHidden, batch));
    }
  } finally {
    cache.dispose();
  }
  return result();
}

/** The real prompt tokens of row b (mask 1 within its length). */
function promptIds(packed: PackedPrompts, b: number): Int32Array {
  const width = packed.shape[1];
  const row = packed.tokenIds.subarray(b * width, b * width + packed.lengths[b]!);
  const mask = packed.paddingMask.subarray(b * width, b * width + packed.lengths[b]!);
  return mask.every((flag) => flag === 1) ? row : row.filter((_, c) => mask[c] === 1);
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Runs the loop to the end: text in → text out (without start/end tokens), ids in → ids out. */
export async function generate(
  context: DecodeContext, prompts: PromptInput, options: GenerateOptions = {},
): Promise<string | string[] | Int32Array | Int32Array[]> {
  const steps = decodeSteps(context, prompts, options);
  let next = await steps.next();
  while (!next.done) next = await steps.next();
  const { packed, generated } = next.value;
  const rows = generated.map((tokens, b) => (options.stripPrompt ? tokens : concat(promptIds(packed, b), tokens)));
  if (packed.kind === "ids") return packed.single ? rows[0]! : rows;
  const texts = rows.map((ids) => context.preprocessor.detokenize(ids));
  return packed.single ? texts[0]! : texts;
}

/**
 * Runs the loop and yields the completion's text as it is produced, never splitting a UTF-8
 * character; start and end tokens are left out. Breaking out of the loop frees the cache.
 */
export async function* streamPieces(
  context: DecodeContext, prompts: PromptInput, options: GenerateOptions = {},
): AsyncGenerator<StreamPiece, void, undefined> {
  const tokenizer = context.preprocessor.requireTokenizer("stream()");
  const skip = (id: number) => context.preprocessor.isSpecial(id);
  const decoders: TokenStreamDecoder[] = [];
  const steps = decodeSteps(context, prompts, options);
  try {
    for (let next = await steps.next(); !next.done; next = await steps.next()) {
      const { tokens, produced } = next.value;
      for (let b = 0; b < tokens.length; b++) {
        if (!produced[b]) continue;
        const decoder = (decoders[b] ??= new TokenStreamDecoder(tokenizer, skip));
        const text = decoder.push(tokens[b]!);
        if (text !== "") yield { row: b, text };
      }
    }
  } finally {
    await steps.return(undefined as never);
  }
  for (const [b, decoder] of decoders.entries()) {
    const text = decoder?.flush() ?? "";
    if (text !== "") yield { row: b, text };
  }
}
