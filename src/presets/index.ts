/** Reads any preset directory: a keras-hub preset or a Hugging Face checkpoint, told apart by config.json. */
import path from "node:path";

import type { FalconBackboneConfig, ResolvedBackboneConfig } from "../config.js";
import { FalconPresetError } from "../errors.js";
import type { NativeModel } from "../native.js";
import { resolvePresetDirectory } from "./builtin.js";
import { isRemoteHandle, resolvePresetHandle, type PresetHandleOptions } from "./hub.js";
import { isHfConfig, loadHfWeights, parseHfConfig } from "./hf.js";
import { readJsonObject } from "./json.js";
import { isKerasConfig, loadKerasWeights, parseKerasConfig } from "./keras.js";

export type PresetFormat = "keras" | "huggingface";

export interface Preset {
  directory: string;
  format: PresetFormat;
  config: FalconBackboneConfig;
  /** Streams the preset's weights into a model built from (a dtype variant of) `config`. */
  loadWeights(config: ResolvedBackboneConfig, model: NativeModel): Promise<void>;
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
      directory, format: "keras", config: parseKerasConfig(json, configFile),
      loadWeights: (config, model) => loadKerasWeights(directory, config, model),
    };
  }
  if (isHfConfig(json)) {
    return {
      directory, format: "huggingface", config: parseHfConfig(json, configFile),
      loadWeights: (config, model) => loadHfWeights(directory, config, model),
    };
  }
  throw new FalconPresetError(
    `${configFile}: neither a keras-hub preset (registered_name) nor a Hugging Face Falcon checkpoint (model_type "falcon")`,
  );
}
