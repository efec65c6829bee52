/**
 * Built-in preset names. Weights cannot be downloaded at run time here, so a name resolves to a
 * local directory the user provides; the error says exactly where to put it.
 */
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { FalconPresetError } from "../errors.js";

export interface PresetMetadata {
  description: string;
  params: number;
  path: string;
  officialName: string;
  modelCard: string;
}

export interface BuiltinPreset {
  metadata: PresetMetadata;
  /** Where keras-hub downloads it from. */
  kaggleHandle: string;
}

export const BUILTIN_PRESETS: Readonly<Record<string, BuiltinPreset>> = Object.freeze({
  falcon_refinedweb_1b_en: {
    metadata: {
      description:
        "24-layer Falcon model (Falcon with 1B parameters), trained on 350B tokens of RefinedWeb dataset.",
      params: 1311625216,
      path: "falcon",
      officialName: "Falcon",
      modelCard: "https://huggingface.co/tiiuae/falcon-rw-1b",
    },
    kaggleHandle: "kaggle://keras/falcon/keras/falcon_refinedweb_1b_en/1",
  },
});

/** Directories searched for a built-in preset, in order. */
export function presetSearchDirectories(): string[] {
  const directories: string[] = [];
  if (process.env["FALCON_NATIVE_PRESETS"]) directories.push(process.env["FALCON_NATIVE_PRESETS"]);
  const cacheHome = process.env["XDG_CACHE_HOME"] || path.join(os.homedir(), ".cache");
  directories.push(path.join(cacheHome, "falcon-native", "presets"));
  return directories;
}

/** Resolves a local directory or a built-in preset name to a directory holding config.json. */
export function resolvePresetDirectory(pathOrName: string): string {
  if (typeof pathOrName !== "string" || pathOrName.length === 0) {
    throw new FalconPresetError("a preset must be a directory path or a built-in preset name");
  }
  const builtin = BUILTIN_PRESETS[pathOrName];
  if (builtin) {
    const candidates = presetSearchDirectories().map((dir) => path.join(dir, pathOrName));
    const found = candidates.find((dir) => existsSync(path.join(dir, "config.json")));
    if (found) return found;
    throw new FalconPresetError(
      `built-in preset "${pathOrName}" is not on this machine. Download it (keras-hub handle ${builtin.kaggleHandle}) and put ` +
        `the preset directory (config.json, model.weights.h5, assets/) at ${candidates[candidates.length - 1]}` +
        `, or set FALCON_NATIVE_PRESETS to a directory that contains ${pathOrName}/. Looked in: ${candidates.join(", ")}`,
    );
  }
  if (!existsSync(pathOrName)) {
    throw new FalconPresetError(
      `preset "${pathOrName}" not found: it is neither a directory nor a built-in preset name (${Object.keys(BUILTIN_PRESETS).join(", ")})`,
    );
  }
  if (!existsSync(path.join(pathOrName, "config.json"))) {
    throw new FalconPresetError(`${pathOrName}: not a preset directory (no config.json)`);
  }
  return pathOrName;
}
