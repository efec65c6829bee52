/**
 * FalconBackbone: keras-hub's API over the native core. The same class runs every Falcon variant;
 * keras-hub presets describe falcon-rw, Hugging Face checkpoints the rest.
 */
import {
  resolveBackboneConfig,
  toNativeConfig,
  type FalconBackboneConfig,
  type FalconDType,
  type ResolvedBackboneConfig,
} from "./config.js";
import { FalconInputError } from "./errors.js";
import { NativeResource } from "./native-resource.js";
import { packInputs, type BackboneInputs, type PackedInputs, type Tensor, type TokenIdsInput } from "./inputs.js";
import { callNative, callNativeSync, native, type NativeKvCache, type NativeModel, type NativeModelInfo } from "./native.js";
import { BUILTIN_PRESETS } from "./presets/builtin.js";
import type { PresetHandleOptions } from "./presets/hub.js";
import { readPreset } from "./presets/index.js";
import { writeKerasPreset, type WriteKerasPresetOptions } from "./presets/keras-export.js";

/**
 * Where a model runs: "cpu"; "cuda" (GPU 0) or "cuda:N"; "auto" (the default): GPU 0 when this
 * binary has the CUDA kernels, a GPU answers and the dtype runs there (int4 is CPU-only), else the CPU.
 * `info().device` says which. FALCON_CUDA_EMULATE=1 runs "cuda" on a host emulation of the GPU
 * kernels (slow; for tests and kernel work without a GPU).
 */
export type FalconDevice = "auto" | "cpu" | "cuda" | `cuda:${number}`;

export interface FalconBackboneOptions {
  /** Where the model runs (default "auto"). */
  device?: FalconDevice;
}

export interface FromPresetOptions extends PresetHandleOptions, FalconBackboneOptions {
  /** Load the preset's weights (default true); false gives a seeded random initialisation. */
  loadWeights?: boolean;
  /** Override the dtype; weights are cast while they load. */
  dtype?: FalconDType;
}

export function isFalconDevice(value: unknown): value is FalconDevice {
  return typeof value === "string" && /^(auto|cpu|cuda|cuda:\d{1,3})$/.test(value);
}

/** The device option checked: FalconInputError naming the accepted values. */
function checkDevice(device: unknown): FalconDevice {
  if (device === undefined) return "auto";
  if (!isFalconDevice(device)) throw new FalconInputError(`device must be "auto", "cpu", "cuda" or "cuda:N", got ${JSON.stringify(device)}`);
  return device;
}

export interface CreateCacheOptions {
  batchSize: number;
  maxLength: number;
}

/** Per-sequence key/value storage for incremental decoding with one model. */
export class FalconKvCache extends NativeResource<NativeKvCache> {
  /** @internal Use FalconBackbone.createCache. */
  constructor(
    nativeCache: NativeKvCache,
    readonly batchSize: number,
    readonly maxLength: number,
  ) {
    super(nativeCache, "KV cache");
  }

  /** @internal */
  get native(): NativeKvCache {
    return this.handle;
  }

  /** Bytes of key/value storage held natively. */
  get byteSize(): number {
    return this.handle.byteSize();
  }
}

/** The token embedding and, reversed, the tied LM head. */
export class TokenEmbedding {
  /** @internal */
  constructor(private readonly backbone: FalconBackbone) {}

  get vocabularySize(): number {
    return this.backbone.getConfig().vocabularySize;
  }

  get hiddenDim(): number {
    return this.backbone.getConfig().hiddenDim;
  }

  /** Embedding rows for a [batch, length] id batch → [batch, length, hidden]. */
  async embed(tokenIds: TokenIdsInput, shape?: [number, number]): Promise<Tensor> {
    const packed = packInputs({ tokenIds, shape }, this.vocabularySize);
    const model = await this.backbone.nativeModel();
    const data = await callNative(() => model.embed(packed.tokenIds));
    return { data, shape: [packed.batch, packed.length, this.hiddenDim] };
  }

  /** logits = hidden · Eᵀ (or the untied head), for hidden of shape [..., hiddenDim]. */
  async reverse(hidden: Tensor): Promise<Tensor> {
    const D = this.hiddenDim;
    if (!hidden || !(hidden.data instanceof Float32Array) || !Array.isArray(hidden.shape)) {
      throw new FalconInputError("reverse() takes a { data: Float32Array, shape } tensor");
    }
    if (hidden.shape[hidden.shape.length - 1] !== D || hidden.data.length % D !== 0 ||
        hidden.shape.reduce((a, b) => a * b, 1) !== hidden.data.length) {
      throw new FalconInputError(`reverse() needs a tensor of shape [..., ${D}], got [${hidden.shape.join(", ")}]`);
    }
    const model = await this.backbone.nativeModel();
    const rows = hidden.data.length / D;
    const data = await callNative(() => model.projectLogits(hidden.data, rows));
    return { data, shape: [...hidden.shape.slice(0, -1), this.vocabularySize] };
  }
}

/** @internal fromPreset's marker: the caller loads the weights, so no random initialisation. */
const LOADING = Symbol("loading");

export class FalconBackbone extends NativeResource<NativeModel> {
  /** Built-in preset names and their metadata. */
  static readonly presets = BUILTIN_PRESETS;

  readonly tokenEmbedding: TokenEmbedding;
  readonly #config: ResolvedBackboneConfig;
  #ready: Promise<void>;

  constructor(config: FalconBackboneConfig, options?: FalconBackboneOptions);
  /** @internal */
  constructor(config: FalconBackboneConfig, options: FalconBackboneOptions, initialisation: typeof LOADING);
  constructor(config: FalconBackboneConfig, options: FalconBackboneOptions = {}, initialisation?: typeof LOADING) {
    const resolved = resolveBackboneConfig(config);
    if (typeof options !== "object" || options === null) throw new FalconInputError("FalconBackbone options must be an object");
    const device = checkDevice(options.device);
    super(callNativeSync(() => new (native().NativeModel)(toNativeConfig(resolved), device)), "model");
    this.#config = resolved;
    this.tokenEmbedding = new TokenEmbedding(this);
    if (initialisation === LOADING) {
      this.#ready = Promise.resolve();
    } else {
      // Initialisation (and a device backend's upload) runs off the event loop; every call awaits it.
      const model = this.handle;
      this.#ready = callNative(() => model.initializeRandom(this.#config.seed)).then(() => callNative(() => model.prepareWeights()));
      this.#ready.catch(() => undefined);
    }
  }

  /**
   * Loads a keras-hub preset directory, a Hugging Face Falcon checkpoint directory (config.json +
   * safetensors), or a built-in preset name resolved to a local directory.
   */
  static async fromPreset(pathOrName: string, options: FromPresetOptions = {}): Promise<FalconBackbone> {
    if (typeof options !== "object" || options === null) throw new FalconInputError("fromPreset options must be an object");
    const preset = await readPreset(pathOrName, options);
    const config = { ...preset.config };
    if (options.dtype !== undefined) config.dtype = options.dtype;
    const device = checkDevice(options.device);
    if (options.loadWeights === false) return new FalconBackbone(config, { device });
    // The files are checked against the config before the model's memory is allocated.
    const weights = await preset.prepareWeights(resolveBackboneConfig(config));
    let backbone: FalconBackbone;
    try {
      backbone = new FalconBackbone(config, { device }, LOADING);
    } catch (error) {
      weights.dispose();
      throw error;
    }
    try {
      await weights.load(backbone.handle);
      const model = backbone.handle;
      await callNative(() => model.prepareWeights());
    } catch (error) {
      backbone.dispose();
      throw error;
    }
    return backbone;
  }

  /** The resolved configuration; `new FalconBackbone(getConfig())` builds the same architecture. */
  getConfig(): ResolvedBackboneConfig {
    return { ...this.#config, ropeScaling: this.#config.ropeScaling && { ...this.#config.ropeScaling } };
  }

  /** Parameter count, weight bytes, storage dtype, the backend and device in use. */
  info(): NativeModelInfo {
    return this.handle.info();
  }

  /** Hidden states after the final layer norm, [batch, length, hiddenDim]. */
  async call(inputs: BackboneInputs): Promise<Tensor> {
    const packed = packInputs(inputs, this.#config.vocabularySize);
    const model = await this.nativeModel();
    const data = await callNative(() =>
      model.forward(packed.tokenIds, packed.paddingMask, packed.positionIds, packed.batch, packed.length, null, null),
    );
    return { data, shape: [packed.batch, packed.length, this.#config.hiddenDim] };
  }

  /** A native KV cache for `batchSize` sequences of up to `maxLength` tokens. */
  createCache(options: CreateCacheOptions): FalconKvCache {
    const { batchSize, maxLength } = options ?? ({} as CreateCacheOptions);
    for (const [key, value] of Object.entries({ batchSize, maxLength })) {
      if (!Number.isInteger(value) || value <= 0) {
        throw new FalconInputError(`createCache: ${key} must be a positive integer, got ${String(value)}`);
      }
    }
    const model = this.handle;
    const nativeCache = callNativeSync(() => new (native().NativeKvCache)(model, batchSize, maxLength));
    return new FalconKvCache(nativeCache, batchSize, maxLength);
  }

  /**
   * keras-hub's call_with_cache: runs the new tokens, writes their keys and values into the cache
   * at slots [cacheUpdateIndex, cacheUpdateIndex + length) and attends over every earlier valid slot.
   * Returns the hidden states of the new tokens. A per-row index array lets rows advance independently.
   */
  async callWithCache(
    inputs: TokenIdsInput | BackboneInputs,
    cache: FalconKvCache,
    cacheUpdateIndex: number | number[],
  ): Promise<Tensor> {
    const packed = this.packCacheInputs(inputs);
    if (!(cache instanceof FalconKvCache)) throw new FalconInputError("callWithCache needs a cache from createCache()");
    if (packed.batch !== cache.batchSize) {
      throw new FalconInputError(`tokenIds has ${packed.batch} rows but the cache holds ${cache.batchSize} sequences`);
    }
    const indices = typeof cacheUpdateIndex === "number" ? new Array<number>(packed.batch).fill(cacheUpdateIndex) : cacheUpdateIndex;
    if (!Array.isArray(indices) || indices.length !== packed.batch) {
      throw new FalconInputError("cacheUpdateIndex must be a number or one number per row");
    }
    indices.forEach((index, row) => {
      if (!Number.isInteger(index) || index < 0 || index + packed.length > cache.maxLength) {
        throw new FalconInputError(
          `cacheUpdateIndex ${index} (row ${row}) + ${packed.length} new tokens does not fit the cache's maxLength ${cache.maxLength}`,
        );
      }
    });
    const model = await this.nativeModel();
    const data = await callNative(() =>
      model.forward(
        packed.tokenIds, packed.paddingMask, packed.positionIds, packed.batch, packed.length,
        cache.native, Int32Array.from(indices),
      ),
    );
    return { data, shape: [packed.batch, packed.length, this.#config.hiddenDim] };
  }

  private packCacheInputs(inputs: TokenIdsInput | BackboneInputs): PackedInputs {
    const isInputObject = typeof inputs === "object" && inputs !== null && !Array.isArray(inputs) && "tokenIds" in inputs;
    return packInputs(isInputObject ? (inputs as BackboneInputs) : { tokenIds: inputs as TokenIdsInput }, this.#config.vocabularySize);
  }

  /**
   * Writes a keras-hub preset (config.json, metadata.json, model.weights.h5 in keras' exact HDF5 tree)
   * that keras-hub's FalconBackbone.from_preset loads; any falcon-rw-compatible model qualifies, so an
   * HF falcon-rw checkpoint becomes a keras-hub preset.
   */
  async saveToPreset(directory: string, options: WriteKerasPresetOptions = {}): Promise<void> {
    await writeKerasPreset(directory, this.#config, await this.nativeModel(), options);
  }

  /** @internal The native model now (its initialisation may still run: calls on it await nativeModel()). */
  get nativeHandle(): NativeModel {
    return this.handle;
  }

  /** @internal The native model once its initialisation has finished. */
  async nativeModel(): Promise<NativeModel> {
    await this.#ready;
    return this.handle;
  }
}
