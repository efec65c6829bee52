/**
 * FalconCausalLM: a backbone and its LM head (the tied embedding, or lm_head for untied checkpoints),
 * with the tokenizer and preprocessor that turn text into prompts and tokens back into text.
 * call() and callWithCache() return logits; generate() and stream() decode with the KV cache.
 */
import { existsSync } from "node:fs";
import path from "node:path";

import { FalconBackbone, type CreateCacheOptions, type FalconKvCache, type FromPresetOptions } from "./backbone.js";
import { ChatTemplate, defaultChatTemplate, loadChatTemplate } from "./chat-template.js";
import { createEngine, type Engine, type EngineOptions } from "./engine/engine.js";
import { describeValue, FalconConfigError, FalconInputError, FalconPresetError } from "./errors.js";
import { generate, streamPieces, type DecodeContext, type GenerateOptions, type StreamPiece } from "./generate.js";
import type { BackboneInputs, Tensor, TokenIdsInput } from "./inputs.js";
import {
  FalconCausalLMPreprocessor,
  type FalconCausalLMPreprocessorOptions,
  type PaddedPrompts,
  type PromptInput,
} from "./preprocessor.js";
import { readJsonObject } from "./presets/json.js";
import { readPreset } from "./presets/index.js";
import type { WriteKerasPresetOptions } from "./presets/keras-export.js";
import { FalconTokenizer, readTokenizerJson } from "./tokenizer.js";

export interface FalconCausalLMOptions {
  /** A preprocessor, or options for the default one built around the tokenizer. */
  preprocessor?: FalconCausalLMPreprocessor | FalconCausalLMPreprocessorOptions;
  /** How chat messages become a prompt (default: DEFAULT_CHAT_TEMPLATE, the Falcon chat format). */
  chatTemplate?: ChatTemplate;
}

export interface CausalLMFromPresetOptions extends FromPresetOptions {
  /**
   * Preprocessor options. Defaults follow the preset's convention: keras-hub presets prepend the start
   * token and take sequence_length / add_start_token / add_end_token from preprocessor.json when they
   * have one; Hugging Face checkpoints add no start token and take their eos / bos / pad ids from
   * generation_config.json (or config.json).
   */
  preprocessor?: FalconCausalLMPreprocessorOptions;
  /** Use this tokenizer instead of the preset's (null: none, even if the preset has one). */
  tokenizer?: FalconTokenizer | null;
}

/**
 * Which tokenizer files a preset directory has, without loading them: keras-hub assets, an HF
 * tokenizer.json (one with a "model"), a keras-hub tokenizer config whose assets are missing, or none.
 */
export function presetTokenizerFiles(directory: string): "keras-hub assets" | "HF tokenizer.json" | "keras-hub config without assets" | null {
  if (existsSync(path.join(directory, "assets", "tokenizer", "vocabulary.json"))) return "keras-hub assets";
  const file = path.join(directory, "tokenizer.json");
  if (!existsSync(file)) return null;
  const json = readTokenizerJson(file);
  if ("model" in json) return "HF tokenizer.json";
  return "registered_name" in json ? "keras-hub config without assets" : null;
}

/** eos / bos / pad ids of an HF checkpoint (generation_config.json over config.json). */
function hfSpecialTokenIds(directory: string): FalconCausalLMPreprocessorOptions {
  const ids: FalconCausalLMPreprocessorOptions = {};
  const read = (file: string) => (existsSync(path.join(directory, file)) ? readJsonObject(path.join(directory, file)) : {});
  const sources = [read("generation_config.json"), read("config.json")];
  const pick = (key: string): number | undefined => {
    for (const source of sources) {
      const value = Array.isArray(source[key]) ? (source[key] as unknown[])[0] : source[key];
      if (typeof value === "number" && Number.isInteger(value) && value >= 0) return value;
    }
    return undefined;
  };
  const [eos, bos, pad] = [pick("eos_token_id"), pick("bos_token_id"), pick("pad_token_id")];
  if (eos !== undefined) ids.endTokenId = eos;
  if (bos !== undefined) ids.startTokenId = bos;
  if (pad !== undefined) ids.padTokenId = pad;
  return ids;
}

/** A keras-hub preset's preprocessor.json (a serialized FalconCausalLMPreprocessor): its packing settings. */
function kerasPreprocessorSettings(directory: string): FalconCausalLMPreprocessorOptions {
  const file = path.join(directory, "preprocessor.json");
  if (!existsSync(file)) return {};
  const json = readJsonObject(file);
  const config = json["config"];
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new FalconPresetError(`${file}: expected a serialized preprocessor with a "config" object`);
  }
  const fields = config as Record<string, unknown>;
  const settings: FalconCausalLMPreprocessorOptions = {};
  const length = fields["sequence_length"];
  if (length !== undefined && length !== null) {
    if (typeof length !== "number" || !Number.isInteger(length) || length <= 0) {
      throw new FalconPresetError(`${file}: sequence_length must be a positive integer, got ${describeValue(length)}`);
    }
    settings.sequenceLength = length;
  }
  for (const [key, option] of [["add_start_token", "addStartToken"], ["add_end_token", "addEndToken"]] as const) {
    const value = fields[key];
    if (value === undefined) continue;
    if (typeof value !== "boolean") throw new FalconPresetError(`${file}: ${key} must be a boolean, got ${describeValue(value)}`);
    settings[option] = value;
  }
  return settings;
}

export class FalconCausalLM implements DecodeContext {
  /** Turns text and id prompts into padded batches, and tokens back into text. */
  readonly preprocessor: FalconCausalLMPreprocessor;
  /** How chat messages become a prompt for this model (see renderChat). */
  readonly chatTemplate: ChatTemplate;

  constructor(
    readonly backbone: FalconBackbone,
    tokenizer?: FalconTokenizer,
    options: FalconCausalLMOptions = {},
  ) {
    const preprocessor = options.preprocessor;
    if (preprocessor instanceof FalconCausalLMPreprocessor) {
      if (tokenizer !== undefined && preprocessor.tokenizer !== tokenizer) {
        throw new FalconConfigError("the preprocessor was built with a different tokenizer than the one passed to FalconCausalLM");
      }
      this.preprocessor = preprocessor;
    } else {
      this.preprocessor = new FalconCausalLMPreprocessor(tokenizer, preprocessor);
    }
    if (options.chatTemplate !== undefined && !(options.chatTemplate instanceof ChatTemplate)) {
      throw new FalconConfigError(`chatTemplate must be a ChatTemplate, got ${describeValue(options.chatTemplate)}`);
    }
    this.chatTemplate = options.chatTemplate ?? defaultChatTemplate();
    const vocabularySize = backbone.getConfig().vocabularySize;
    const tokens = this.preprocessor.tokenizer?.vocabularySize;
    if (tokens !== undefined && tokens > vocabularySize) {
      throw new FalconConfigError(`the tokenizer has ${tokens} tokens but the model's vocabulary has only ${vocabularySize} rows`);
    }
  }

  /** The tokenizer, when the model has one (text prompts need it; token ids do not). */
  get tokenizer(): FalconTokenizer | undefined {
    return this.preprocessor.tokenizer;
  }

  /** @internal Ids at or above this (padded vocabulary rows) are never sampled. */
  get samplingVocabularySize(): number {
    return this.tokenizer?.vocabularySize ?? this.backbone.getConfig().vocabularySize;
  }

  /**
   * Loads a keras-hub preset or a Hugging Face checkpoint (the format is detected from config.json),
   * and its tokenizer when it has one (assets/tokenizer/ or an HF tokenizer.json). A checkpoint's chat
   * template comes from its chat_template.jinja or tokenizer_config.json; keras-hub presets get the default Falcon format.
   */
  static async fromPreset(pathOrName: string, options: CausalLMFromPresetOptions = {}): Promise<FalconCausalLM> {
    if (typeof options !== "object" || options === null) throw new FalconInputError("fromPreset options must be an object");
    const { preprocessor: preprocessorOptions, tokenizer: tokenizerOption, ...backboneOptions } = options;
    const preset = await readPreset(pathOrName, backboneOptions);
    const embedded = preset.embedded;
    const tokenizer = tokenizerOption !== undefined
      ? (tokenizerOption ?? undefined)
      : embedded ? (embedded.tokenizer() ?? undefined)
      // A keras-hub tokenizer config without its assets is an error FalconTokenizer.fromPreset explains.
      : presetTokenizerFiles(preset.directory) !== null ? FalconTokenizer.fromPreset(preset.directory) : undefined;
    const conventions: FalconCausalLMPreprocessorOptions = embedded ? embedded.preprocessor
      : preset.format === "huggingface"
      ? { addStartToken: false, ...hfSpecialTokenIds(preset.directory) }
      : kerasPreprocessorSettings(preset.directory);
    const chatTemplate = preset.format === "huggingface" ? loadChatTemplate(preset.directory) : defaultChatTemplate();
    const backbone = await FalconBackbone.fromPreset(preset.location, backboneOptions);
    try {
      return new FalconCausalLM(backbone, tokenizer, { preprocessor: { ...conventions, ...preprocessorOptions }, chatTemplate });
    } catch (error) {
      backbone.dispose();
      throw error instanceof FalconConfigError ? new FalconPresetError(`${preset.location}: ${error.message}`, { cause: error }) : error;
    }
  }

  /** Logits [batch, length, vocabularySize]. */
  async call(inputs: BackboneInputs): Promise<Tensor> {
    return this.backbone.tokenEmbedding.reverse(await this.backbone.call(inputs));
  }

  createCache(options: CreateCacheOptions): FalconKvCache {
    return this.backbone.createCache(options);
  }

  /** Logits of the new tokens after writing them into the cache (see FalconBackbone.callWithCache). */
  async callWithCache(inputs: TokenIdsInput | BackboneInputs, cache: FalconKvCache, cacheUpdateIndex: number | number[]): Promise<Tensor> {
    return this.backbone.tokenEmbedding.reverse(await this.backbone.callWithCache(inputs, cache, cacheUpdateIndex));
  }

  /**
   * Generates a completion for each prompt with the KV cache (batched; each row stops on its own).
   * Text in, text out (prompt + completion without start/end tokens, or only the completion with
   * stripPrompt); token ids in, ids out (the prompt's real ids + the generated ids, stop token included).
   * Each call owns its cache, so concurrent calls on one model are safe.
   */
  generate(prompt: string, options?: GenerateOptions): Promise<string>;
  generate(prompts: readonly string[], options?: GenerateOptions): Promise<string[]>;
  generate(tokenIds: readonly number[] | Int32Array, options?: GenerateOptions): Promise<Int32Array>;
  generate(tokenIds: readonly (readonly number[] | Int32Array)[] | PaddedPrompts, options?: GenerateOptions): Promise<Int32Array[]>;
  generate(prompts: PromptInput, options?: GenerateOptions): Promise<string | string[] | Int32Array | Int32Array[]>;
  async generate(prompts: PromptInput, options: GenerateOptions = {}): Promise<string | string[] | Int32Array | Int32Array[]> {
    return generate(this, prompts, options);
  }

  /**
   * Streams the completion's text as it is generated, never splitting a UTF-8 character (start and end
   * tokens left out). One prompt yields strings; a batch yields { row, text } pieces. Needs a tokenizer;
   * breaking out of the loop or aborting frees the cache.
   */
  stream(prompt: string | readonly number[] | Int32Array, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  stream(prompts: readonly string[] | readonly (readonly number[] | Int32Array)[] | PaddedPrompts, options?: GenerateOptions): AsyncGenerator<StreamPiece, void, undefined>;
  stream(prompts: PromptInput, options?: GenerateOptions): AsyncGenerator<string | StreamPiece, void, undefined>;
  stream(prompts: PromptInput, options: GenerateOptions = {}): AsyncGenerator<string | StreamPiece, void, undefined> {
    this.preprocessor.requireTokenizer("stream()");
    const single = typeof prompts === "string" || prompts instanceof Int32Array ||
      (Array.isArray(prompts) && typeof prompts[0] === "number");
    const pieces = streamPieces(this, prompts, options);
    if (!single) return pieces;
    return (async function* () {
      for await (const piece of pieces) yield piece.text;
    })();
  }

  /**
   * A continuous-batching engine over this model: concurrent engine.generate() / stream() / complete()
   * calls run together in shared steps over a paged KV pool (see EngineOptions for sizes and defaults).
   * The engine keeps the model's weights alive until it is closed, even if the model is disposed.
   */
  engine(options: EngineOptions = {}): Engine {
    return createEngine(this, options);
  }

  /** Saves the backbone as a keras-hub preset (the LM head is the tied embedding there). */
  async saveToPreset(directory: string, options: WriteKerasPresetOptions = {}): Promise<void> {
    await this.backbone.saveToPreset(directory, options);
  }

  get disposed(): boolean {
    return this.backbone.disposed;
  }

  dispose(): void {
    this.backbone.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}
