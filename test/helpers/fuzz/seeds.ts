/**
 * Valid inputs the fuzzer mutates: the shared fixtures' checkpoints and presets, plus what this file
 * writes once per run (a small byte-level BPE tokenizer in both layouts, a sharded keras preset, and a
 * text checkpoint for the CLI), all under the run's temporary directory.
 */
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

import { BYTE_TO_UNICODE } from "../../../src/tokenizer.js";
import { FIXTURES } from "../fixtures.js";
import { END_OF_TEXT, hfTokenizerJson, writeKerasPreset, type Gpt2Vocabulary, type Merge } from "../gpt2-vocab.js";
import { readFloat32Datasets, writeFloat32Datasets } from "../keras-preset.js";
import { writeCycleCheckpoint } from "../text-model.js";

export const HF_CHECKPOINTS = [
  "hf/rw_alibi_mha_sequential/checkpoint",
  "hf/rw_alibi_mha_sequential/checkpoint_basemodel",
  "hf/f7b_rotary_mqa_parallel/checkpoint_bf16",
  "hf/f40b_newarch_gqa/checkpoint",
  "hf/f11b_newarch_1ln/checkpoint",
  "hf/rotary_mha_sequential_bias/checkpoint",
].map((relative) => path.join(FIXTURES, relative));

export const HF_SHARDED_CHECKPOINT = path.join(FIXTURES, "hf/f40b_newarch_gqa/checkpoint_sharded");

/** float32, bfloat16 (opaque + attribute), float16 and float64 weight files. */
export const KERAS_PRESETS = [
  "keras/falcon_h2_d32_l2/preset",
  "keras/falcon_h3_d24_l2__bfloat16/preset",
  "keras/falcon_h3_d24_l2__float16/preset",
  "keras/falcon_h3_d24_l2__float64/preset",
  "keras/falcon_h4_d64_l2/preset",
].map((relative) => path.join(FIXTURES, relative));

/** Directories under the run's seed directory, written by prepareSeeds. */
export const GENERATED = {
  hfTokenizer: "hf-tokenizer",
  kerasTokenizer: "keras-tokenizer",
  kerasSharded: "keras-sharded",
  cycleCheckpoint: "cycle-checkpoint",
} as const;

/** A byte-level BPE vocabulary small enough to load in milliseconds: 256 bytes, a few merges, the end token. */
export function smallVocabulary(): Gpt2Vocabulary {
  const vocabulary: Record<string, number> = {};
  BYTE_TO_UNICODE.forEach((symbol, byte) => (vocabulary[symbol] = byte));
  const merges: Merge[] = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["a", "a"], ["aa", "aa"], ["Ġ", "f"], ["a", "l"], ["c", "o"], ["Ġf", "al"], ["Ġfal", "co"]];
  for (const [left, right] of merges) vocabulary[left + right] ??= Object.keys(vocabulary).length;
  vocabulary[END_OF_TEXT] = Object.keys(vocabulary).length;
  return { vocabulary, merges };
}

export async function prepareSeeds(seedDirectory: string): Promise<void> {
  const vocabulary = smallVocabulary();
  const hfTokenizer = path.join(seedDirectory, GENERATED.hfTokenizer);
  mkdirSync(hfTokenizer, { recursive: true });
  writeFileSync(path.join(hfTokenizer, "tokenizer.json"), JSON.stringify(hfTokenizerJson(vocabulary, "pair"), null, 2));
  writeKerasPreset(path.join(seedDirectory, GENERATED.kerasTokenizer), vocabulary);

  // Two shards, every layer's variables split over both, as keras' sharded saver writes them.
  const source = KERAS_PRESETS[0]!;
  const sharded = path.join(seedDirectory, GENERATED.kerasSharded);
  mkdirSync(sharded);
  const datasets = await readFloat32Datasets(path.join(source, "model.weights.h5"));
  const names = [...datasets.keys()];
  const shardNames = ["model_00000.weights.h5", "model_00001.weights.h5"];
  const weightMap: Record<string, string[]> = {};
  for (const [shard, file] of shardNames.entries()) {
    const part = new Map(names.filter((_, i) => i % 2 === shard).map((name) => [name, datasets.get(name)!]));
    await writeFloat32Datasets(path.join(sharded, file), part);
    for (const name of part.keys()) (weightMap[`/${name.slice(0, name.lastIndexOf("/"))}`] ??= []).push(file);
  }
  writeFileSync(path.join(sharded, "model.weights.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
  copyFileSync(path.join(source, "config.json"), path.join(sharded, "config.json"));

  writeCycleCheckpoint(path.join(seedDirectory, GENERATED.cycleCheckpoint));
}
