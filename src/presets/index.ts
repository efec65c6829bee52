/** Reads any preset directory: a keras-hub preset or a Hugging Face checkpoint, told apart by config.json. */
import path from "node:path";

import { resolveBackboneConfig, type FalconBackboneConfig, type ResolvedBackboneConfig } from "../config.js";
import { FalconConfigError, FalconPresetError } from "../errors.js";
import type { NativeModel } from "../native.js";
import { resolvePresetDirectory } from "./builtin.js";
import { isRemoteHandle, resolvePresetHandle, type PresetHandleOptions } from "./hub.js";
import { isHfConfig, prepareHfWeights, parseHfConfig } from "./hf.js";
import { readJsonObject } from "./json.js";
import { isKerasConfig, prepareKerasWeights, parseKerasConfig } from "./keras.js";

export type PresetFormat = "keras" | "huggingface";

/** Weights checked against a config and ready to stream into a model built from it. */
export interface PreparedWeights {
  /** The weight files the check read, as paths inside the preset directory. */
  files: string[];
  load(model: NativeModel): Promise<void>;
  /** Releases what the check opened when no model is loaded after all. */
  dispose(): void;
}

export interface Preset {
  directory: string;
  format: PresetFormat;
  config: FalconBackboneConfig;
  /**
   * Checks the preset's weights against (a dtype variant of) `config` without allocating the model:
   * every tensor the config implies must be in the files with its shape. Call before building it.
   */
  prepareWeights(config: ResolvedBackboneConfig): Promise<PreparedWeights>;
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

/** Reads a local directory, a built-in preset name, or an hf:// / kaggle:// handle. */
export async function readPreset(pathOrName: string, handleOptions: PresetHandleOptions = {}): Promise<Preset> {
  const directory = isRemoteHandle(pathOrName)
    ? await resolvePresetHandle(pathOrName, handleOptions)
    : resolvePresetDirectory(pathOrName);
  const configFile = path.join(directory, "config.json");
  const json = readJsonObject(configFile);
  if (isKerasConfig(json)) {
    return {
      directory, format: "keras", config: validated(parseKerasConfig(json, configFile), configFile),
      prepareWeights: (config) => prepareKerasWeights(directory, config, configFile),
    };
  }
  if (isHfConfig(json)) {
    return {
      directory, format: "huggingface", config: validated(parseHfConfig(json, configFile), configFile),
      prepareWeights: async (config) => prepareHfWeights(directory, config, configFile),
    };
  }
  throw new FalconPresetError(
    `${configFile}: neither a keras-hub preset (registered_name) nor a Hugging Face Falcon checkpoint (model_type "falcon")`,
  );
}
