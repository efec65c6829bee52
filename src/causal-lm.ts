/**
 * FalconCausalLM: a backbone and its LM head (the tied embedding, or lm_head for untied checkpoints).
 * call() and callWithCache() return logits instead of hidden states.
 */
import { FalconBackbone, type CreateCacheOptions, type FalconKvCache, type FromPresetOptions } from "./backbone.js";
import type { WriteKerasPresetOptions } from "./presets/keras-export.js";
import type { BackboneInputs, Tensor, TokenIdsInput } from "./inputs.js";

export class FalconCausalLM {
  constructor(readonly backbone: FalconBackbone) {}

  /** Loads a keras-hub preset or a Hugging Face checkpoint (the format is detected from config.json). */
  static async fromPreset(pathOrName: string, options: FromPresetOptions = {}): Promise<FalconCausalLM> {
    return new FalconCausalLM(await FalconBackbone.fromPreset(pathOrName, options));
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

  /** Saves the backbone as a keras-hub preset (the LM head is the tied embedding there). */
  async saveToPreset(directory: string, options: WriteKerasPresetOptions = {}): Promise<void> {
    await this.backbone.saveToPreset(directory, options);
  }

  dispose(): void {
    this.backbone.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
