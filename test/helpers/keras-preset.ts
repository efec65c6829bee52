/** Builds modified copies of a float32 keras-hub preset, to test how loading fails and shards. */
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import h5wasm from "h5wasm/node";

import { Hdf5Reader } from "../../src/presets/hdf5.js";

export type Datasets = Map<string, { shape: number[]; data: Float32Array }>;

export async function readFloat32Datasets(file: string): Promise<Datasets> {
  const reader = await Hdf5Reader.open(file);
  const datasets: Datasets = new Map();
  for (const name of await reader.datasetPaths()) {
    const info = (await reader.dataset(name))!;
    if (info.dtype !== "float32") throw new Error(`${name} is ${info.dtype}; this helper copies float32 presets`);
    const raw = await reader.readRaw(name, info);
    datasets.set(name, { shape: info.shape, data: new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4) });
  }
  reader.close();
  return datasets;
}

export async function writeFloat32Datasets(file: string, datasets: Datasets): Promise<void> {
  await h5wasm.ready;
  const out = new h5wasm.File(file, "w");
  // h5wasm creates no intermediate groups, so each level is made before its dataset.
  const groups = new Set<string>();
  for (const [name, { shape, data }] of datasets) {
    const parts = name.split("/");
    for (let depth = 1; depth < parts.length; depth++) {
      const group = parts.slice(0, depth).join("/");
      if (!groups.has(group)) {
        out.create_group(group);
        groups.add(group);
      }
    }
    out.create_dataset({ name, data, shape });
  }
  out.close();
}

/** A temp preset dir with the source's config.json and the given weights (optionally split into shards). */
export async function writePreset(sourcePreset: string, datasets: Datasets, shards = 0): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "falcon-preset-"));
  copyFileSync(path.join(sourcePreset, "config.json"), path.join(dir, "config.json"));
  if (shards === 0) {
    await writeFloat32Datasets(path.join(dir, "model.weights.h5"), datasets);
    return dir;
  }
  const parts: Datasets[] = Array.from({ length: shards }, () => new Map());
  const weightMap: Record<string, string> = {};
  [...datasets.keys()].forEach((name, i) => {
    const shard = i % shards;
    parts[shard].set(name, datasets.get(name)!);
    weightMap[`/${name.slice(0, name.lastIndexOf("/"))}`] = `model_${String(shard).padStart(5, "0")}.weights.h5`;
  });
  // A group whose variables were split over two shards is listed with both files.
  for (const [name] of datasets) {
    const group = `/${name.slice(0, name.lastIndexOf("/"))}`;
    const files = new Set(parts.map((part, shard) => ([...part.keys()].some((n) => `/${n.slice(0, n.lastIndexOf("/"))}` === group) ? shard : -1)).filter((s) => s >= 0));
    if (files.size > 1) (weightMap as Record<string, string | string[]>)[group] = [...files].map((s) => `model_${String(s).padStart(5, "0")}.weights.h5`);
  }
  for (let shard = 0; shard < shards; shard++) {
    await writeFloat32Datasets(path.join(dir, `model_${String(shard).padStart(5, "0")}.weights.h5`), parts[shard]);
  }
  writeFileSync(path.join(dir, "model.weights.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return dir;
}
