/**
 * Engine: many concurrent requests on one model, batched together by the native continuous-batching
 * engine (native/core/engine.h). One native thread runs steps back to back over a paged KV pool;
 * requests are submitted and cancelled from here, and their tokens come back through one callback
 * per step. generate() and stream() take lm.generate()'s options for one prompt and give its
 * results; complete() adds finish reasons, usage, logprobs and logits rows.
 */
import { describeValue, FalconDisposedError, FalconError, FalconInputError } from "../errors.js";
import { abortError, checkOptions, type GenerateOptions } from "../generate.js";
import { callNativeSync, native, toFalconError, type NativeEngine, type NativeEngineEvent, type NativeFakeRunnerOptions } from "../native.js";
import type { FalconBackbone } from "../backbone.js";
import type { FalconCausalLMPreprocessor } from "../preprocessor.js";
import { resolveSamplerConfig } from "../samplers.js";
import { TokenStreamDecoder } from "../stream-decoder.js";
import type { FalconTokenizer } from "../tokenizer.js";

export interface EngineOptions {
  /**
   * Bytes of the paged KV pool. Default: half of the memory available now on the model's device (the
   * host's for the CPU, the GPU's for CUDA: `info().memoryAvailable`), at most what maxSequences sequences of the model's full context (maxPositionEmbeddings, capped
   * at 2^20 tokens) need.
   */
  kvCacheBytes?: number;
  /** Tokens one step computes at most (prompt chunks and decodes together); default 512. */
  maxBatchTokens?: number;
  /** Sequences running at once at most; default min(64, maxBatchTokens), at most maxBatchTokens. */
  maxSequences?: number;
  /** Reuse the KV blocks of earlier requests with the same leading tokens (default true; always off for dynamic NTK rotary). */
  prefixCaching?: boolean;
  /**
   * What the KV pool stores keys and values as: "float32" (default: attention computes in float32), or
   * "bfloat16" / "float16", half the bytes per block (each key and value rounded once when written).
   */
  kvCacheDtype?: KvCacheDType;
}

/** The storage dtypes of the engine's KV pool. */
export type KvCacheDType = "float32" | "bfloat16" | "float16";
export const KV_CACHE_DTYPES: readonly KvCacheDType[] = ["float32", "bfloat16", "float16"];

/** lm.generate()'s options, plus stop strings. */
export interface EngineGenerateOptions extends GenerateOptions {
  /**
   * Stop when the completion's text contains one of these (as OpenAI's `stop`): the text returned
   * ends before it; token ids returned include the token that completed it. Needs a tokenizer.
   */
  stop?: string | readonly string[];
}

export interface CompleteOptions extends EngineGenerateOptions {
  /** Return each generated token's logprob and the n most likely alternatives (n in [0, 20], as OpenAI). */
  logprobs?: number;
  /** Return each generated token's logits row (debugging; vocabulary-sized Float32Arrays). */
  returnLogits?: boolean;
}

/** complete()'s options that make sense for a stream (logits rows are for complete() alone). */
export type CompleteStreamOptions = Omit<CompleteOptions, "returnLogits">;

export type FinishReason = "stop" | "length";

export interface TokenLogprob {
  token: number;
  logprob: number;
}

/** A generated token's log-probability (before temperature or truncation) and the most likely tokens at its step. */
export interface CompletionLogprob extends TokenLogprob {
  top: TokenLogprob[];
}

export interface Completion {
  /** The completion's text (start and end tokens left out, cut before a stop string), when the model has a tokenizer. */
  text?: string;
  /** The generated ids (a stop token included). */
  tokenIds: Int32Array;
  /** "stop": a stop token or stop string; "length": maxNewTokens or maxLength. */
  finishReason: FinishReason;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  logprobs?: CompletionLogprob[];
  logits?: Float32Array[];
}

/** A piece of a completeStream(): what one engine step added. */
export interface CompletionChunk {
  /** Text released since the last chunk (held back while a stop string could still claim it). */
  text: string;
  /** Ids generated since the last chunk. */
  tokenIds: number[];
  /** Their logprobs, when asked for. */
  logprobs?: CompletionLogprob[];
  /** The last chunk only. */
  finishReason?: FinishReason;
  usage?: Completion["usage"];
}

function emptyChunk(withLogprobs: boolean): CompletionChunk {
  return withLogprobs ? { text: "", tokenIds: [], logprobs: [] } : { text: "", tokenIds: [] };
}

/** complete()'s own options checked; the rest is checked with the prompt. */
function checkCompleteOptions(options: CompleteOptions): CompleteOptions {
  if (typeof options !== "object" || options === null) throw new FalconInputError("complete options must be an object");
  const { logprobs, returnLogits } = options;
  if (logprobs !== undefined && (typeof logprobs !== "number" || !Number.isInteger(logprobs) || logprobs < 0 || logprobs > 20)) {
    throw new FalconInputError(`logprobs must be an integer in [0, 20], got ${describeValue(logprobs)}`);
  }
  if (returnLogits !== undefined && typeof returnLogits !== "boolean") {
    throw new FalconInputError(`returnLogits must be a boolean, got ${describeValue(returnLogits)}`);
  }
  return options;
}

export interface EngineStats {
  /** Requests queued, not yet admitted (or preempted, to be recomputed). */
  waiting: number;
  running: number;
  /**
   * KV blocks of 16 tokens: used by running sequences; cached (unreferenced prefix blocks kept for
   * reuse, evicted least recently used first when needed); free. New blocks come from free + cached.
   */
  kvBlocks: { total: number; used: number; free: number; cached: number };
  /** Prompt tokens served from the prefix cache instead of being computed. */
  prefixHitTokens: number;
  /** Running sequences sent back to wait when the pool ran out (their tokens are recomputed, same results). */
  preemptions: number;
  generatedTokens: number;
  /** Generated tokens per second over the last few seconds. */
  tokensPerSecond: number;
}

/** What an engine needs from a FalconCausalLM. */
export interface EngineHost {
  readonly preprocessor: FalconCausalLMPreprocessor;
  /** The model's vocabulary (logits rows). */
  readonly vocabularySize: number;
  /** Ids at or above this are never sampled (the tokenizer's vocabulary size). */
  readonly samplingVocabularySize: number;
}

const STOP_STRINGS_LIMIT = 16;
/** Tokens per KV block (native/core/step.h kKvBlockTokens). */
export const KV_BLOCK_TOKENS = 16;
const ENGINE_OPTION_KEYS = new Set(["kvCacheBytes", "maxBatchTokens", "maxSequences", "prefixCaching", "kvCacheDtype"]);

/** Checks lm.engine()'s options (sizes before anything is allocated). */
export function checkEngineOptions(options: EngineOptions): Required<Omit<EngineOptions, "kvCacheBytes">> & { kvCacheBytes?: number } {
  if (typeof options !== "object" || options === null) throw new FalconInputError("engine options must be an object");
  for (const key of Object.keys(options)) {
    if (!ENGINE_OPTION_KEYS.has(key)) throw new FalconInputError(`unknown engine option "${key}" (known: ${[...ENGINE_OPTION_KEYS].join(", ")})`);
  }
  const integer = (value: unknown, name: string, low: number, high: number): number => {
    if (typeof value !== "number" || !Number.isInteger(value) || value < low || value > high) {
      throw new FalconInputError(`${name} must be an integer in [${low}, ${high}], got ${describeValue(value)}`);
    }
    return value;
  };
  const maxBatchTokens = integer(options.maxBatchTokens ?? 512, "maxBatchTokens", 1, 1 << 20);
  // The default never exceeds the token budget: every running sequence decodes a token per step.
  const maxSequences = integer(options.maxSequences ?? Math.min(64, maxBatchTokens), "maxSequences", 1, 65536);
  if (maxSequences > maxBatchTokens) {
    throw new FalconInputError(`maxSequences (${maxSequences}) must be at most maxBatchTokens (${maxBatchTokens}): every running sequence decodes a token per step`);
  }
  if (options.prefixCaching !== undefined && typeof options.prefixCaching !== "boolean") {
    throw new FalconInputError(`prefixCaching must be a boolean, got ${describeValue(options.prefixCaching)}`);
  }
  const kvCacheBytes = options.kvCacheBytes === undefined ? undefined : integer(options.kvCacheBytes, "kvCacheBytes", 1, Number.MAX_SAFE_INTEGER);
  const kvCacheDtype = options.kvCacheDtype ?? "float32";
  if (!KV_CACHE_DTYPES.includes(kvCacheDtype)) {
    throw new FalconInputError(`kvCacheDtype must be one of ${KV_CACHE_DTYPES.join(", ")}, got ${describeValue(options.kvCacheDtype)}`);
  }
  return { maxBatchTokens, maxSequences, prefixCaching: options.prefixCaching ?? true, kvCacheBytes, kvCacheDtype };
}

/** One request's events as they arrive, read by one consumer. */
class RequestChannel {
  readonly #events: NativeEngineEvent[] = [];
  #failure: { error: unknown } | null = null;
  #wake: (() => void) | null = null;

  push(event: NativeEngineEvent): void {
    this.#events.push(event);
    this.#wake?.();
  }

  fail(error: unknown): void {
    this.#failure ??= { error };
    this.#wake?.();
  }

  /** The next event; throws the failure (abort, close) as soon as there is one. */
  async next(): Promise<NativeEngineEvent> {
    for (;;) {
      if (this.#failure) throw this.#failure.error;
      const event = this.#events.shift();
      if (event) return event;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = null;
    }
  }
}

/**
 * Routes native events to their requests. Held by the native callback, never holding the native
 * engine, so an engine nobody references is collected (its finalizer stops the thread) unless
 * requests are outstanding: then `keepAlive` holds the Engine until they end.
 */
class EventRouter {
  readonly channels = new Map<number, RequestChannel>();
  keepAlive: Engine | null = null;

  deliver(events: NativeEngineEvent[]): void {
    for (const event of events) {
      const channel = this.channels.get(event.id);
      if (!channel) continue;  // aborted: the caller has its answer already
      channel.push(event);
      if (event.finish !== "") this.channels.delete(event.id);
    }
    if (this.channels.size === 0) this.keepAlive = null;
  }
}

/** A single prompt as the engine submits it. */
interface PreparedRequest {
  promptIds: Int32Array;
  kind: "text" | "ids";
  /** New tokens at most (0: nothing to generate). */
  budget: number;
  stopTokenIds: number[];
  stopStrings: string[];
}

/**
 * The completion's text as tokens arrive, cut at the first stop string; `releasable()` gives the text
 * no stop string can still claim (a stream never shows text a stop string then takes back).
 */
class CompletionText {
  readonly #decoder: TokenStreamDecoder;
  readonly #stops: readonly string[];
  readonly #longestStop: number;
  text = "";
  #released = 0;
  stopped = false;

  constructor(tokenizer: FalconTokenizer, skip: (id: number) => boolean, stops: readonly string[]) {
    this.#decoder = new TokenStreamDecoder(tokenizer, skip);
    this.#stops = stops;
    this.#longestStop = stops.reduce((longest, stop) => Math.max(longest, stop.length), 0);
  }

  push(token: number): void {
    if (!this.stopped) this.#append(this.#decoder.push(token));
  }

  /** Flushes the decoder (the stream has ended). */
  end(): void {
    if (!this.stopped) this.#append(this.#decoder.flush());
  }

  /** Text not yet released that no stop string can still take back; everything when `final`. */
  releasable(final: boolean): string {
    let end = this.text.length;
    if (!final && !this.stopped) end -= this.#heldBack();
    const piece = end > this.#released ? this.text.slice(this.#released, end) : "";
    this.#released = Math.max(this.#released, end);
    return piece;
  }

  #append(piece: string): void {
    if (piece === "") return;
    const searchFrom = Math.max(0, this.text.length - this.#longestStop + 1);
    this.text += piece;
    let cut = -1;
    for (const stop of this.#stops) {
      const at = this.text.indexOf(stop, searchFrom);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      this.stopped = true;
    }
  }

  /** Length of the longest end of the text that begins some stop string. */
  #heldBack(): number {
    for (let length = Math.min(this.#longestStop - 1, this.text.length); length > 0; length--) {
      const tail = this.text.slice(this.text.length - length);
      if (this.#stops.some((stop) => stop.startsWith(tail))) return length;
    }
    return 0;
  }
}

/** A request's end as complete() reports it. */
interface RequestOutcome {
  tokens: number[];
  finishReason: FinishReason;
  logprobs: CompletionLogprob[];
  logits: Float32Array[];
  text: CompletionText | null;
}

export class Engine {
  readonly #host: EngineHost;
  #native: NativeEngine | null;
  readonly #router: EventRouter;
  /** Settles once the model's weights are ready (a random initialisation may still run): requests wait for it. */
  readonly #ready: Promise<unknown>;

  /** @internal Use lm.engine(). */
  constructor(host: EngineHost, create: (onEvents: (events: NativeEngineEvent[]) => void) => NativeEngine, ready: Promise<unknown>) {
    this.#host = host;
    const router = new EventRouter();
    this.#router = router;
    this.#native = callNativeSync(() => create((events) => router.deliver(events)));
    this.#ready = ready;
  }

  /**
   * @internal An engine over the native fake step runner (no model): the greedy next token is a hash
   * of the sequence's tokens (native/core/fake_step_runner.h). For tests of the policy and of this class.
   */
  static withFakeRunner(options: NativeFakeRunnerOptions, host?: Partial<EngineHost>): Engine {
    const preprocessor = host?.preprocessor;
    if (!preprocessor) throw new FalconInputError("withFakeRunner needs a preprocessor");
    const full: EngineHost = {
      preprocessor,
      vocabularySize: options.vocabSize,
      samplingVocabularySize: host?.samplingVocabularySize ?? options.vocabSize,
    };
    return new Engine(full, (onEvents) => native().NativeEngine.withFakeRunner(options, onEvents), Promise.resolve());
  }

  /** @internal The native engine (tests read its step log). */
  get native(): NativeEngine {
    if (!this.#native) throw new FalconDisposedError("this engine has been closed");
    return this.#native;
  }

  get closed(): boolean {
    return this.#native === null;
  }

  /**
   * lm.generate() for one prompt, batched with every other request of this engine: text in, text out
   * (prompt + completion, or the completion with stripPrompt); ids in, ids out.
   */
  generate(prompt: string, options?: EngineGenerateOptions): Promise<string>;
  generate(tokenIds: readonly number[] | Int32Array, options?: EngineGenerateOptions): Promise<Int32Array>;
  generate(prompt: string | readonly number[] | Int32Array, options?: EngineGenerateOptions): Promise<string | Int32Array>;
  async generate(prompt: string | readonly number[] | Int32Array, options: EngineGenerateOptions = {}): Promise<string | Int32Array> {
    const request = this.#prepare(prompt, options);
    const text = request.stopStrings.length > 0 ? this.#completionText(request.stopStrings) : null;
    const outcome = await this.#run(request, options, {}, text);
    const generated = Int32Array.from(outcome.tokens);
    const ids = options.stripPrompt ? generated : concat(request.promptIds, generated);
    if (request.kind === "ids") return ids;
    if (outcome.text?.stopped) {
      // Cut at the stop string: the completion's text after the prompt's.
      return (options.stripPrompt ? "" : this.#host.preprocessor.detokenize(request.promptIds)) + outcome.text.text;
    }
    return this.#host.preprocessor.detokenize(ids);
  }

  /** lm.stream() for one prompt: the completion's text as it is generated, never splitting a UTF-8 character. */
  async *stream(prompt: string | readonly number[] | Int32Array, options: EngineGenerateOptions = {}): AsyncGenerator<string, void, undefined> {
    this.#host.preprocessor.requireTokenizer("stream()");
    for await (const chunk of this.completeStream(prompt, options)) {
      if (chunk.text !== "") yield chunk.text;
    }
  }

  /**
   * complete() as it is generated: a chunk per engine step with the new token ids (and their logprobs),
   * and the text no stop string can still take back; the last chunk carries the finish reason and usage.
   * Breaking out of the loop cancels the request.
   */
  async *completeStream(prompt: string | readonly number[] | Int32Array, options: CompleteStreamOptions = {}): AsyncGenerator<CompletionChunk, void, undefined> {
    const { logprobs, ...generateOptions } = checkCompleteOptions(options);
    const request = this.#prepare(prompt, generateOptions);
    const tokenizer = this.#host.preprocessor.tokenizer;
    const text = tokenizer ? this.#completionText(request.stopStrings) : null;
    let pending = emptyChunk(logprobs !== undefined);
    let wake: (() => void) | null = null;
    let settled: { outcome: RequestOutcome } | { error: unknown } | null = null;
    // Ends the request when the consumer stops iterating early.
    const consumerGone = new AbortController();
    this.#run(request, generateOptions, { logprobs }, text, (token, logprob) => {
      pending.tokenIds.push(token);
      if (logprob) pending.logprobs?.push(logprob);
      if (text) pending.text += text.releasable(false);
      wake?.();
    }, consumerGone.signal).then(
      (outcome) => {
        settled = { outcome };
        wake?.();
      },
      (error: unknown) => {
        settled = { error };
        wake?.();
      },
    );
    try {
      for (;;) {
        if (pending.tokenIds.length > 0) {
          const chunk = pending;
          pending = emptyChunk(logprobs !== undefined);
          yield chunk;
          continue;
        }
        if (settled) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      consumerGone.abort();
    }
    const end = settled as { outcome: RequestOutcome } | { error: unknown };
    if ("error" in end) throw end.error;
    text?.end();
    const completionTokens = end.outcome.tokens.length;
    yield {
      text: text?.releasable(true) ?? "",
      tokenIds: [],
      ...(logprobs !== undefined ? { logprobs: [] } : {}),
      finishReason: end.outcome.finishReason,
      usage: { promptTokens: request.promptIds.length, completionTokens, totalTokens: request.promptIds.length + completionTokens },
    };
  }

  /** One completion with its finish reason, usage and, on request, logprobs and logits rows. */
  async complete(prompt: string | readonly number[] | Int32Array, options: CompleteOptions = {}): Promise<Completion> {
    const { logprobs, returnLogits, ...generateOptions } = checkCompleteOptions(options);
    const request = this.#prepare(prompt, generateOptions);
    const tokenizer = this.#host.preprocessor.tokenizer;
    const text = tokenizer ? this.#completionText(request.stopStrings) : null;
    const outcome = await this.#run(request, generateOptions, { logprobs, returnLogits }, text);
    text?.end();
    const completion: Completion = {
      tokenIds: Int32Array.from(outcome.tokens),
      finishReason: outcome.finishReason,
      usage: {
        promptTokens: request.promptIds.length,
        completionTokens: outcome.tokens.length,
        totalTokens: request.promptIds.length + outcome.tokens.length,
      },
    };
    if (text) completion.text = text.text;
    if (logprobs !== undefined) completion.logprobs = outcome.logprobs;
    if (returnLogits) completion.logits = outcome.logits;
    return completion;
  }

  stats(): EngineStats {
    const { waiting, running, kvBlocks, prefixHitTokens, preemptions, generatedTokens, tokensPerSecond } = callNativeSync(() => this.native.stats());
    return { waiting, running, kvBlocks, prefixHitTokens, preemptions, generatedTokens, tokensPerSecond };
  }

  /**
   * Stops the engine: requests in flight reject with FalconDisposedError, the native thread is joined
   * (after the step in progress) and the KV pool freed. Idempotent.
   */
  async close(): Promise<void> {
    const engine = this.#native;
    if (!engine) return;
    this.#native = null;
    const error = new FalconDisposedError("the engine was closed");
    for (const channel of this.#router.channels.values()) channel.fail(error);
    this.#router.channels.clear();
    this.#router.keepAlive = null;
    engine.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #completionText(stops: readonly string[]): CompletionText {
    const preprocessor = this.#host.preprocessor;
    return new CompletionText(preprocessor.requireTokenizer("text output"), (id) => preprocessor.isSpecial(id), stops);
  }

  /** lm.generate()'s prompt handling for one prompt: truncation, start token, budgets and stop ids. */
  #prepare(prompt: string | readonly number[] | Int32Array, options: EngineGenerateOptions): PreparedRequest {
    if (typeof options !== "object" || options === null) throw new FalconInputError("generate options must be an object");
    const { stop, ...generateOptions } = options;
    checkOptions(generateOptions);
    if (!(typeof prompt === "string" || prompt instanceof Int32Array || (Array.isArray(prompt) && (prompt.length === 0 || typeof prompt[0] === "number")))) {
      throw new FalconInputError(
        "the engine takes one prompt (a string or token ids) per call; submit each prompt of a batch separately and they are batched together",
      );
    }
    const stopStrings = stop === undefined ? [] : typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(stopStrings) || stopStrings.length > STOP_STRINGS_LIMIT ||
        !stopStrings.every((s: unknown) => typeof s === "string" && s.length > 0 && s.length <= 1000)) {
      throw new FalconInputError(`stop must be a non-empty string or an array of at most ${STOP_STRINGS_LIMIT} (each 1 to 1000 characters), got ${describeValue(stop)}`);
    }
    if (stopStrings.length > 0) this.#host.preprocessor.requireTokenizer("stop strings");
    const { preprocessor, vocabularySize } = this.#host;
    const maxLength = options.maxLength ?? (options.maxNewTokens === undefined ? preprocessor.sequenceLength : undefined);
    const packed = preprocessor.generatePreprocess(prompt, { sequenceLength: maxLength ?? preprocessor.sequenceLength });
    const promptIds = packed.tokenIds.subarray(0, packed.lengths[0]!);
    promptIds.forEach((id, i) => {
      if (id >= vocabularySize) throw new FalconInputError(`prompt 0 token ${i} = ${id} is out of range [0, ${vocabularySize})`);
    });
    const byNew = options.maxNewTokens ?? Infinity;
    const byLength = maxLength === undefined ? Infinity : Math.max(0, maxLength - promptIds.length);
    const stopTokenIds = options.stopTokenIds === undefined
      ? (preprocessor.endTokenId === undefined ? [] : [preprocessor.endTokenId])
      : [...(options.stopTokenIds ?? [])];
    return { promptIds, kind: packed.kind, budget: Math.min(byNew, byLength), stopTokenIds, stopStrings };
  }

  /** Submits the request and follows it to its end (or abort, close, failure). */
  async #run(
    request: PreparedRequest, options: GenerateOptions, extra: { logprobs?: number; returnLogits?: boolean },
    text: CompletionText | null, onStep?: (token: number, logprob: CompletionLogprob | undefined) => void, consumerGone?: AbortSignal,
  ): Promise<RequestOutcome> {
    const { signal, onToken } = options;
    const outcome: RequestOutcome = { tokens: [], finishReason: "length", logprobs: [], logits: [], text };
    if (signal?.aborted) throw abortError(signal);
    const sampler = resolveSamplerConfig(options.sampler);
    if (this.closed) throw new FalconDisposedError("this engine has been closed");
    if (request.budget === 0) return outcome;
    await this.#ready;
    if (signal?.aborted) throw abortError(signal);
    const engine = this.native;
    const id = callNativeSync(() => engine.submit({
      promptIds: request.promptIds,
      maxNewTokens: request.budget,
      stopTokenIds: request.stopTokenIds.filter((token) => token <= 0x7fffffff),
      allowedVocabulary: Math.min(this.#host.samplingVocabularySize, this.#host.vocabularySize),
      sampler,
      logprobs: extra.logprobs ?? -1,
      returnLogits: extra.returnLogits ?? false,
    }));
    const channel = new RequestChannel();
    this.#router.channels.set(id, channel);
    this.#router.keepAlive = this;
    const onAbort = () => channel.fail(abortError(signal!));
    const onConsumerGone = () => channel.fail(new FalconDisposedError("the stream was closed"));
    signal?.addEventListener("abort", onAbort, { once: true });
    consumerGone?.addEventListener("abort", onConsumerGone, { once: true });
    let finished = false;
    try {
      for (;;) {
        const event = await channel.next();
        if (event.finish === "error") {
          finished = true;
          const error = Object.assign(new Error(event.error?.message ?? "the engine step failed"), { code: event.error?.code });
          const typed = toFalconError(error);
          throw typed instanceof FalconError ? typed : new FalconError(String(error.message));
        }
        if (event.finish === "cancelled") {
          finished = true;
          throw signal?.aborted ? abortError(signal) : new FalconDisposedError("the request was cancelled");
        }
        outcome.tokens.push(event.token);
        const logprob = event.logprob === undefined ? undefined : { token: event.token, logprob: event.logprob, top: event.top ?? [] };
        if (logprob) outcome.logprobs.push(logprob);
        if (event.logits) outcome.logits.push(event.logits);
        onToken?.(event.token, 0);
        if (signal?.aborted) throw abortError(signal);
        text?.push(event.token);
        onStep?.(event.token, logprob);
        if (event.finish !== "") {
          finished = true;
          outcome.finishReason = event.finish === "stop" ? "stop" : "length";
          return outcome;
        }
        if (text?.stopped) {
          outcome.finishReason = "stop";
          return outcome;
        }
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      consumerGone?.removeEventListener("abort", onConsumerGone);
      if (!finished && this.#router.channels.delete(id)) {
        this.#native?.cancel(id);
        if (this.#router.channels.size === 0) this.#router.keepAlive = null;
      }
    }
  }
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** What lm.engine() needs from a FalconCausalLM. */
export interface EngineModel {
  readonly backbone: FalconBackbone;
  readonly preprocessor: FalconCausalLMPreprocessor;
  readonly samplingVocabularySize: number;
}

/** Longest context the default pool size plans for, whatever a config's maxPositionEmbeddings says. */
const DEFAULT_CONTEXT_LIMIT = 1 << 20;

/** lm.engine(): the pool sized from the options (see EngineOptions.kvCacheBytes for the default). */
export function createEngine(lm: EngineModel, options: EngineOptions = {}): Engine {
  const settings = checkEngineOptions(options);
  const config = lm.backbone.getConfig();
  const model = lm.backbone.nativeHandle;
  const addon = native();
  const blockBytes = callNativeSync(() => addon.NativeEngine.kvBlockBytes(model, settings.kvCacheDtype));
  const context = Math.min(config.maxPositionEmbeddings, DEFAULT_CONTEXT_LIMIT);
  const kvCacheBytes = settings.kvCacheBytes ??
    Math.min(Math.floor(callNativeSync(() => model.info()).memoryAvailable / 2), settings.maxSequences * Math.ceil(context / KV_BLOCK_TOKENS) * blockBytes);
  const numBlocks = Math.min(Math.floor(kvCacheBytes / blockBytes), 0x7fffffff);
  if (numBlocks < 1) {
    throw new FalconInputError(`kvCacheBytes (${kvCacheBytes}) is less than one KV block of this model (${blockBytes} bytes)`);
  }
  const ready = lm.backbone.nativeModel();
  ready.catch(() => undefined);  // a request awaits it and rejects
  const host: EngineHost = {
    preprocessor: lm.preprocessor,
    vocabularySize: config.vocabularySize,
    samplingVocabularySize: lm.samplingVocabularySize,
  };
  const engineOptions = {
    numBlocks, maxBatchTokens: settings.maxBatchTokens, maxSequences: settings.maxSequences, prefixCaching: settings.prefixCaching,
    kvDtype: settings.kvCacheDtype,
  };
  return new Engine(host, (onEvents) => new addon.NativeEngine(model, engineOptions, onEvents), ready);
}
