/** Reads any preset directory: a keras-hub preset or a Hugging Face checkpoint, told apart by config.json. */
import path from "node:path";

import { resolveBackboneConfig, type FalconBackboneConfig, type ResolvedBackboneConfig } from "../config.js";
import { FalconConfigError, FalconPresetError } from "../errors.js";
import type { NativeModel } from "../native.js";
import { resolvePresetDirectory } from "./builtin.js";
import type { FalconCausalLMPreprocessorOptions } from "../preprocessor.js";
import type { FalconTokenizer } from "../tokenizer.js";
import { isGgufPath, readGgufPreset, type GgufWeightConversion } from "./gguf.js";
import { isRemoteHandle, resolvePresetHandle, type PresetHandleOptions } from "./hub.js";
import { isHfConfig, prepareHfWeights, parseHfConfig } from "./hf.js";
import { readJsonObject } from "./json.js";
import { isKerasConfig, prepareKerasWeights, parseKerasConfig } from "./keras.js";

export type PresetFormat = "keras" | "huggingface" | "gguf";

/** Weights checked against a config and ready to stream into a model built from it. */
export interface PreparedWeights {
  /** The weight files the check read, as paths inside the preset directory. */
  files: string[];
  load(model: NativeModel): Promise<void>;
  /** Releases what the check opened when no model is loaded after all. */
  dispose(): void;
  /** A GGUF's tensor types and what loading makes of each (read as stored or dequantised, and the dtype stored). */
  conversions?: GgufWeightConversion[];
}

/** What a single-file preset (GGUF) carries inside itself, which a directory keeps in files beside its config. */
export interface EmbeddedPresetAssets {
  /** The file's own tokenizer, or null when it has none. */
  tokenizer(): FalconTokenizer | null;
  /** Special token ids and whether prompts get the start token. */
  preprocessor: FalconCausalLMPreprocessorOptions;
}

export interface Preset {
  /** The preset directory; for a GGUF, the directory holding the file. */
  directory: string;
  /** What fromPreset reads: the directory, or the GGUF file. */
  location: string;
  format: PresetFormat;
  config: FalconBackboneConfig;
  /**
   * Checks the preset's weights against (a dtype variant of) `config` without allocating the model:
   * every tensor the config implies must be in the files with its shape. Call before building it.
   */
  prepareWeights(config: ResolvedBackboneConfig): Promise<PreparedWeights>;
  /** GGUF only: the tokenizer and token conventions inside the file. */
  embedded?: EmbeddedPresetAssets;
}

/** A parsed config checked as the model would check it, so the error names the file it came from. */
function validated(config: FalconBackboneConfig, configFile: string): FalconBackboneConfig {
  try {
    resolveBackboneConfig(config);
  } catch (cause) {
    if (cause instanceof FalconConfigError) throw new FalconConfigError(`${configFile}: ${cause.message}`, { cause });
    throw cause;
  }
  return config;
}

/** Reads a local directory, a .gguf file, a built-in preset name, or an hf:// / kaggle:// handle. */
export async function readPreset(pathOrName: string, handleOptions: PresetHandleOptions = {}): Promise<Preset> {
  const location = isRemoteHandle(pathOrName)
    ? await resolvePresetHandle(pathOrName, handleOptions)
    : isGgufPath(pathOrName) ? pathOrName : resolvePresetDirectory(pathOrName);
  if (isGgufPath(location)) {
    const gguf = readGgufPreset(location);
    return {
      directory: path.dirname(location), location, format: "gguf", config: validated(gguf.config, location),
      prepareWeights: async (config) => gguf.prepareWeights(config),
      embedded: { tokenizer: gguf.tokenizer, preprocessor: gguf.preprocessor },
    };
  }
  const directory = location;
  const configFile = path.join(directory, "config.json");
  const json = readJsonObject(configFile);
  if (isKerasConfig(json)) {
    return {
      directory, location, format: "keras", config: validated(parseKerasConfig(json, configFile), configFile),
      prepareWeights: (config) => prepareKerasWeights(directory, config, configFile),
    };
  }
  if (isHfConfig(json)) {
    return {
      directory, location, format: "huggingface", config: validated(parseHfConfig(json, configFile), configFile),
      prepareWeights: async (config) => prepareHfWeights(directory, config, configFile),
    };
  }
  throw new FalconPresetError(
    `${configFile}: neither a keras-hub preset (registered_name) nor a Hugging Face Falcon checkpoint (model_type "falcon")`,
  );
}
