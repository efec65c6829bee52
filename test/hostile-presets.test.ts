/**
 * Hostile preset files (issue 10): configs that imply far more weights than the files hold, config
 * fields of the wrong type, special files where preset files belong, corrupt safetensors headers and
 * indexes, corrupt HDF5, and a hub that sends more than it announced. Every one must end in a typed
 * error naming the file, quickly, without touching memory the files do not justify.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import h5wasm from "h5wasm/node";

import { FalconBackbone, FalconCausalLM, FalconConfigError, FalconPresetError } from "../src/index.js";
import { Hdf5Reader } from "../src/presets/hdf5.js";
import { resolveHfHandle, type HubDownloadProgress } from "../src/presets/hub.js";
import { MAX_CONFIG_JSON_BYTES, readJsonObject } from "../src/presets/json.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { readFloat32Datasets, writeFloat32Datasets } from "./helpers/keras-preset.js";
import { fromPresetIsolated } from "./helpers/isolated-load.js";
import { writeSafetensors, type TensorToWrite } from "./helpers/safetensors-writer.js";

const HF_ROTARY = path.join(FIXTURES, "hf", "f7b_rotary_mqa_parallel", "checkpoint");
const KERAS = path.join(FIXTURES, "keras", "falcon_h3_d24_l2", "preset");
/** bfloat16 variables carry a string attribute in HDF5's global heap, where corruption does the most harm. */
const KERAS_BF16 = path.join(FIXTURES, "keras", "falcon_h3_d24_l2__bfloat16", "preset");
/** Found by zeroing 35-byte windows of KERAS_BF16's model.weights.h5: HDF5 loops forever reading the global heap. */
const SPINNING_OFFSET = 2058;
/**
 * Likewise, in the same heap: in one thread HDF5 reads these as a bad element type, or aborts the
 * WebAssembly module ("Aborted()", "memory access out of bounds"), depending on what it read before.
 */
const ABORTING_OFFSETS = [2020, 2050, 2052, 2029, 2031, 2015];

const temporary: string[] = [];
after(() => temporary.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "falcon-hostile-"));
  temporary.push(dir);
  return dir;
}

/** A copy of an HF checkpoint whose config.json has been edited. */
function hfCopy(edit: (config: Record<string, unknown>) => void = () => undefined): string {
  const dir = tempDir();
  copyFileSync(path.join(HF_ROTARY, "model.safetensors"), path.join(dir, "model.safetensors"));
  const config = JSON.parse(readFileSync(path.join(HF_ROTARY, "config.json"), "utf8")) as Record<string, unknown>;
  edit(config);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

/** A copy of a keras preset whose config.json `config` object has been edited. */
function kerasCopy(edit: (config: Record<string, unknown>) => void = () => undefined, weights?: Buffer, source = KERAS): string {
  const dir = tempDir();
  if (weights) writeFileSync(path.join(dir, "model.weights.h5"), weights);
  else copyFileSync(path.join(source, "model.weights.h5"), path.join(dir, "model.weights.h5"));
  const json = JSON.parse(readFileSync(path.join(source, "config.json"), "utf8")) as { config: Record<string, unknown> };
  edit(json.config);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(json));
  return dir;
}

async function rejectsWith(dir: string, type: typeof FalconPresetError | typeof FalconConfigError, message: RegExp): Promise<void> {
  await assert.rejects(FalconBackbone.fromPreset(dir), (error: Error) => {
    assert.ok(error instanceof type, `${error.name}: ${error.message}`);
    assert.match(error.message, message);
    return true;
  });
}

describe("configs that contradict the checkpoint are refused before the model is allocated", () => {
  it("num_hidden_layers far beyond the files names the field, the config and the weights", async () => {
    const dir = hfCopy((c) => (c["num_hidden_layers"] = 4000));
    const started = performance.now();
    await rejectsWith(dir, FalconPresetError, /config\.json: num_hidden_layers = 4000, but .*model\.safetensors holds 2 layers/);
    // Allocating and zero-filling 4000 layers takes seconds; the check reads only headers.
    assert.ok(performance.now() - started < 2000, `took ${performance.now() - started} ms`);
  });

  it("ffn_hidden_size and vocab_size beyond the files name the field", async () => {
    await rejectsWith(
      hfCopy((c) => (c["ffn_hidden_size"] = 1 << 18)),
      FalconPresetError,
      /mlp\.dense_h_to_4h\.weight" has shape \[224, 56\], expected \[262144, 56\] for this config \(.*config\.json: ffn_hidden_size = 262144/,
    );
    await rejectsWith(
      hfCopy((c) => (c["vocab_size"] = 1 << 24)),
      FalconPresetError,
      /word_embeddings\.weight" has shape \[101, 56\], expected \[16777216, 56\] .*vocab_size = 16777216/,
    );
  });

  it("keras num_layers and intermediate_dim beyond the files name the field", async () => {
    await rejectsWith(kerasCopy((c) => (c["num_layers"] = 4000)), FalconPresetError, /config\.json: num_layers = 4000, but .*model\.weights\.h5 holds 2 decoder layers/);
    await rejectsWith(
      kerasCopy((c) => (c["intermediate_dim"] = 1 << 18)),
      FalconPresetError,
      /dense_h_to_4h\/vars\/0 has shape \[24, 96\], expected \[24, 262144\] .*intermediate_dim = 262144/,
    );
  });

  it("a keras dataset that declares more rows than the file stores is refused", async () => {
    const datasets = await readFloat32Datasets(path.join(KERAS, "model.weights.h5"));
    const embedding = "layers/reversible_embedding/vars/0";
    const stored = datasets.get(embedding)!;
    datasets.delete(embedding);
    const dir = kerasCopy((c) => (c["vocabulary_size"] = 1 << 20));
    const file = path.join(dir, "model.weights.h5");
    await writeFloat32Datasets(file, datasets);
    // A chunked dataset resized without writing: 2^20 rows declared, 101 stored, the file stays small.
    await h5wasm.ready;
    const h5 = new h5wasm.File(file, "a");
    h5.create_group("layers/reversible_embedding");
    h5.create_group("layers/reversible_embedding/vars");
    h5.create_dataset({ name: embedding, data: stored.data, shape: stored.shape, maxshape: [null, stored.shape[1]], chunks: stored.shape })
      .resize([1 << 20, stored.shape[1]]);
    h5.close();
    await rejectsWith(dir, FalconPresetError, /model\.weights\.h5: the weights this config implies \(.*config\.json\) take \d+ bytes, but the file has only \d+/);
  });

  it("sizes beyond any Falcon are a FalconConfigError naming the field, from the constructor too", async () => {
    await rejectsWith(hfCopy((c) => (c["hidden_size"] = 2 ** 24)), FalconConfigError, /config\.json: hiddenDim must be at most 131072, got 16777216/);
    await rejectsWith(hfCopy((c) => (c["num_hidden_layers"] = 1e6)), FalconConfigError, /numLayers must be at most 4096, got 1000000/);
    const base = { vocabularySize: 101, numLayers: 2, numAttentionHeads: 2, hiddenDim: 8, intermediateDim: 32 };
    assert.throws(() => new FalconBackbone({ ...base, maxPositionEmbeddings: 2 ** 40 }), FalconConfigError);
    assert.throws(() => new FalconBackbone({ ...base, vocabularySize: 2 ** 25 }), /vocabularySize must be at most 16777216/);
  });
});

describe("config fields of the wrong type", () => {
  const hfCases: [string, unknown, RegExp][] = [
    ["alibi", "false", /"alibi" must be a boolean, got string "false"/],
    ["parallel_attn", 1, /"parallel_attn" must be a boolean, got number 1/],
    ["hidden_size", "56", /"hidden_size" must be an integer, got string "56"/],
    ["num_hidden_layers", 2.5, /"num_hidden_layers" must be an integer, got number 2\.5/],
    ["rope_scaling", "linear", /"rope_scaling" must be an object, got string "linear"/],
    ["rope_theta", "10000", /"rope_theta" must be a number, got string "10000"/],
    ["torch_dtype", ["float32"], /"torch_dtype" must be a string, got an array of 1/],
    ["bias", "true", /"bias" must be a boolean/],
  ];
  for (const [field, value, message] of hfCases) {
    it(`HF ${field} = ${JSON.stringify(value)} is refused`, async () => {
      await rejectsWith(hfCopy((c) => (c[field] = value)), FalconPresetError, new RegExp(`config\\.json: ${message.source}`));
    });
  }

  const kerasCases: [string, unknown, RegExp][] = [
    ["num_layers", "2", /"num_layers" must be an integer, got string "2"/],
    ["layer_norm_epsilon", "1e-5", /"layer_norm_epsilon" must be a number, got string/],
    ["dtype", 5, /"dtype" must be a string, got number 5/],
    ["trainable", "yes", /"trainable" must be a boolean/],
  ];
  for (const [field, value, message] of kerasCases) {
    it(`keras ${field} = ${JSON.stringify(value)} is refused`, async () => {
      await rejectsWith(kerasCopy((c) => (c[field] = value)), FalconPresetError, new RegExp(`config\\.json.*${message.source}`));
    });
  }
});

describe("deeply nested values are described, not recursed into", () => {
  const DEPTH = 100_000;
  const nested = `${"[".repeat(DEPTH)}${"]".repeat(DEPTH)}`;
  /** `text` (JSON with a NESTED placeholder) written to `file` in a copy of `source`. */
  function withNested(dir: string, file: string, json: Record<string, unknown>, key: string): void {
    writeFileSync(path.join(dir, file), JSON.stringify(json).replace(`"${key}":"NESTED"`, `"${key}":${nested}`));
  }

  it("an HF field, a keras field and an index entry nested 100,000 deep are FalconPresetErrors", async () => {
    const hf = hfCopy();
    const hfConfig = JSON.parse(readFileSync(path.join(hf, "config.json"), "utf8")) as Record<string, unknown>;
    withNested(hf, "config.json", { ...hfConfig, num_ln_in_parallel_attn: "NESTED" }, "num_ln_in_parallel_attn");
    await rejectsWith(hf, FalconPresetError, /"num_ln_in_parallel_attn" must be an integer, got an array of 1/);

    const keras = kerasCopy();
    const kerasConfig = JSON.parse(readFileSync(path.join(keras, "config.json"), "utf8")) as { config: Record<string, unknown> };
    kerasConfig.config["attention_dropout_rate"] = "NESTED";
    withNested(keras, "config.json", kerasConfig, "attention_dropout_rate");
    await rejectsWith(keras, FalconPresetError, /"attention_dropout_rate" must be a number, got an array of 1/);

    const sharded = hfCopy();
    rmSync(path.join(sharded, "model.safetensors"));
    withNested(sharded, "model.safetensors.index.json", { weight_map: { "transformer.ln_f.weight": "NESTED" } }, "transformer.ln_f.weight");
    await rejectsWith(sharded, FalconPresetError, /maps to an array of 1, not a \.safetensors file/);
  });

  it("a keras config field named like an Object.prototype member, and a nested preprocessor.json value, are FalconPresetErrors", async () => {
    await rejectsWith(kerasCopy((c) => (c["toString"] = 0)), FalconPresetError, /unknown FalconBackbone argument "toString"/);
    const keras = kerasCopy();
    writeFileSync(path.join(keras, "preprocessor.json"), `{"config":{"add_start_token":${nested}}}`);
    await assert.rejects(FalconCausalLM.fromPreset(keras), (error: Error) => {
      assert.ok(error instanceof FalconPresetError, `${error.name}: ${error.message}`);
      assert.match(error.message, /preprocessor\.json: add_start_token must be a boolean, got an array of 1/);
      return true;
    });
  });

  it("a config object passed to the constructor with nested or cyclic values is a FalconConfigError", () => {
    const base = { vocabularySize: 101, numLayers: 2, numAttentionHeads: 2, hiddenDim: 8, intermediateDim: 32 };
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    assert.throws(() => new FalconBackbone({ ...base, attentionDropoutRate: JSON.parse(nested) }), /attentionDropoutRate must be a number in \[0, 1\), got an array of 1/);
    assert.throws(() => new FalconBackbone({ ...base, numLayers: cyclic as never }), /numLayers must be a positive integer, got an object/);
  });
});

describe("special and oversized files where preset files belong", () => {
  it("a FIFO as config.json or model.safetensors is refused without blocking", { skip: process.platform === "win32" }, () => {
    const configFifo = hfCopy();
    rmSync(path.join(configFifo, "config.json"));
    execFileSync("mkfifo", [path.join(configFifo, "config.json")]);
    const weightsFifo = hfCopy();
    rmSync(path.join(weightsFifo, "model.safetensors"));
    execFileSync("mkfifo", [path.join(weightsFifo, "model.safetensors")]);
    const outcomes = fromPresetIsolated([configFifo, weightsFifo], 20_000);
    const fifos = [path.join(configFifo, "config.json"), path.join(weightsFifo, "model.safetensors")];
    outcomes.forEach((outcome, i) => {
      assert.ok(!outcome.timedOut, `loading with a FIFO as ${fifos[i]} hung`);
      assert.deepEqual(outcome.result, { name: "FalconPresetError", message: `${fifos[i]}: a FIFO, not a regular file` });
    });
  });

  it("a FIFO or a directory as model.weights.h5 is refused without blocking", { skip: process.platform === "win32" }, () => {
    const fifo = kerasCopy();
    rmSync(path.join(fifo, "model.weights.h5"));
    execFileSync("mkfifo", [path.join(fifo, "model.weights.h5")]);
    const directory = kerasCopy();
    rmSync(path.join(directory, "model.weights.h5"));
    mkdirSync(path.join(directory, "model.weights.h5"));
    const [fromFifo, fromDirectory] = fromPresetIsolated([fifo, directory], 20_000);
    assert.ok(!fromFifo.timedOut, "loading with a FIFO as model.weights.h5 hung");
    assert.deepEqual(fromFifo.result, { name: "FalconPresetError", message: `${path.join(fifo, "model.weights.h5")}: a FIFO, not a regular file` });
    assert.deepEqual(fromDirectory.result, { name: "FalconPresetError", message: `${path.join(directory, "model.weights.h5")}: a directory, not a regular file` });
  });

  it("a directory or a device as config.json is refused", async () => {
    const directory = hfCopy();
    rmSync(path.join(directory, "config.json"));
    mkdirSync(path.join(directory, "config.json"));
    await rejectsWith(directory, FalconPresetError, /config\.json: a directory, not a regular file/);
    if (process.platform !== "win32") {
      const device = hfCopy();
      rmSync(path.join(device, "config.json"));
      symlinkSync("/dev/zero", path.join(device, "config.json"));
      await rejectsWith(device, FalconPresetError, /config\.json: a device, not a regular file/);
    }
  });

  it("a config.json over the size limit is refused before it is read", () => {
    const dir = tempDir();
    const file = path.join(dir, "config.json");
    writeFileSync(file, "{}");
    truncateSync(file, MAX_CONFIG_JSON_BYTES + 1);
    assert.throws(() => readJsonObject(file), (error: Error) => {
      assert.ok(error instanceof FalconPresetError);
      assert.match(error.message, new RegExp(`config\\.json: ${MAX_CONFIG_JSON_BYTES + 1} bytes exceeds the ${MAX_CONFIG_JSON_BYTES}-byte limit`));
      return true;
    });
  });
});

/** The fixture's tensors rewritten, with `editHeader` applied to the header. */
function safetensorsCopy(editHeader: (header: Record<string, unknown>) => void): string {
  const dir = hfCopy();
  const source = readFileSync(path.join(HF_ROTARY, "model.safetensors"));
  const headerLength = Number(source.readBigUInt64LE(0));
  const header = JSON.parse(source.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const data = source.subarray(8 + headerLength);
  const tensors: TensorToWrite[] = Object.entries(header)
    .filter(([name]) => name !== "__metadata__")
    .sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0])
    .map(([name, entry]) => ({
      name, dtype: entry.dtype, shape: entry.shape, byteLength: entry.data_offsets[1] - entry.data_offsets[0],
      fill: (out, offset) => out.set(data.subarray(entry.data_offsets[0] + offset, entry.data_offsets[0] + offset + out.length)),
    }));
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, editHeader);
  return dir;
}

describe("corrupt safetensors headers and indexes", () => {
  const name = "transformer.ln_f.weight";
  const dtypes: [string, unknown][] = [
    ["an object with its own toString", { toString: 1 }],
    ["an Object.prototype member name", "constructor"],
    ["a number", 4],
  ];
  for (const [label, dtype] of dtypes) {
    it(`a dtype that is ${label} is a FalconPresetError`, async () => {
      const dir = safetensorsCopy((header) => ((header[name] as Record<string, unknown>)["dtype"] = dtype));
      await rejectsWith(dir, FalconPresetError, /model\.safetensors: tensor "transformer\.ln_f\.weight" has dtype .*supported dtypes are F32, F16, BF16/);
    });
  }

  /** A sharded copy of the fixture whose index maps every tensor to `shard`. */
  function shardedCopy(shard: string, prepare: (dir: string) => void = () => undefined): string {
    const dir = hfCopy();
    const header = readFileSync(path.join(dir, "model.safetensors"));
    const names = Object.keys(JSON.parse(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString("utf8"))).filter((n) => n !== "__metadata__");
    rmSync(path.join(dir, "model.safetensors"));
    writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, shard])) }));
    prepare(dir);
    return dir;
  }

  it("a shard that is a directory is a FalconPresetError, not EISDIR", async () => {
    const dir = shardedCopy("model-00001-of-00001.safetensors", (d) => mkdirSync(path.join(d, "model-00001-of-00001.safetensors")));
    await rejectsWith(dir, FalconPresetError, /model-00001-of-00001\.safetensors: a directory, not a regular file/);
  });

  for (const shard of ["../model.safetensors", "/etc/passwd.safetensors", "sub/../../x.safetensors", "..\\x.safetensors"]) {
    it(`a shard named ${shard} is refused without being opened`, async () => {
      const dir = shardedCopy(shard);
      await rejectsWith(dir, FalconPresetError, /model\.safetensors\.index\.json: tensor ".*" maps to .*, not a \.safetensors file in the checkpoint directory/);
    });
  }
});

/** A preset's model.weights.h5 with 35 bytes zeroed at `offset`. */
function zeroedWeights(offset: number, source = KERAS): Buffer {
  const bytes = Buffer.from(readFileSync(path.join(source, "model.weights.h5")));
  bytes.fill(0, offset, offset + 35);
  return bytes;
}

describe("corrupt model.weights.h5", () => {
  it("a corrupt dataset header is a FalconPresetError naming the file, not 'name not defined'", async () => {
    const dir = kerasCopy(() => undefined, zeroedWeights(32130));
    await rejectsWith(dir, FalconPresetError, /model\.weights\.h5: cannot read layers\/.* \(error - name not defined!\); the file may be corrupt/);
  });

  it("a file that makes HDF5 loop forever ends in a FalconPresetError, and the next loads work", () => {
    const spinning = kerasCopy(() => undefined, zeroedWeights(SPINNING_OFFSET, KERAS_BF16), KERAS_BF16);
    const aborting = kerasCopy(() => undefined, zeroedWeights(ABORTING_OFFSETS[2], KERAS_BF16), KERAS_BF16);
    // In a child process: before the watchdog, the first load never returned and blocked its thread.
    const [spun, aborted, good] = fromPresetIsolated([spinning, aborting, KERAS_BF16], 60_000);
    assert.ok(!spun.timedOut, "the load of a file that makes HDF5 loop never ended");
    assert.equal(typeof spun.result === "object" && spun.result.name, "FalconPresetError", JSON.stringify(spun.result));
    assert.match((spun.result as { message: string }).message, /model\.weights\.h5: .*the HDF5 reader did not answer within 10 s, so it was stopped/);
    assert.ok(spun.elapsedMs < 15_000, `took ${spun.elapsedMs} ms`);
    assert.equal(typeof aborted.result === "object" && aborted.result.name, "FalconPresetError", JSON.stringify(aborted.result));
    assert.equal(good.result, "loaded", JSON.stringify(good.result));
  });

  it("a reader's watchdog is per request and a stopped reader leaves the next one healthy", async () => {
    const spinning = path.join(kerasCopy(() => undefined, zeroedWeights(SPINNING_OFFSET, KERAS_BF16), KERAS_BF16), "model.weights.h5");
    const reader = await Hdf5Reader.open(spinning, { timeoutMs: 1500 });
    const started = performance.now();
    const failure = await (async () => {
      for (const name of await reader.datasetPaths()) await reader.dataset(name);
    })().catch((error: Error) => error);
    reader.close();
    assert.ok(failure instanceof FalconPresetError, String(failure));
    assert.match(failure.message, /model\.weights\.h5: cannot read .* \(the HDF5 reader did not answer within 1\.5 s, so it was stopped\)/);
    assert.ok(performance.now() - started < 5000);
    const healthy = await Hdf5Reader.open(path.join(KERAS_BF16, "model.weights.h5"));
    assert.deepEqual(await healthy.dataset("layers/reversible_embedding/vars/0"), { dtype: "bfloat16", shape: [101, 24] });
    healthy.close();
  });

  it("corrupt files in a row each end in a FalconPresetError, and a good preset loads after them", async () => {
    for (const offset of ABORTING_OFFSETS) {
      await rejectsWith(kerasCopy(() => undefined, zeroedWeights(offset, KERAS_BF16), KERAS_BF16), FalconPresetError, /model\.weights\.h5: /);
    }
    const model = await FalconBackbone.fromPreset(KERAS_BF16);
    assert.equal(model.getConfig().numLayers, 2);
    model.dispose();
  });
});

describe("hub downloads past the announced size", () => {
  const COMMIT = "0123456789abcdef0123456789abcdef01234567";

  /** A hub whose config.json is announced as 64 bytes but whose GET streams `bodyBytes`. */
  async function lyingHub(bodyBytes: number, announce: "x-linked-size" | "content-length"): Promise<{ endpoint: string; sent: () => number; close: () => Promise<void> }> {
    let sent = 0;
    const server = http.createServer((request, response) => {
      const headers: Record<string, string> = { "x-repo-commit": COMMIT, etag: `"${"a".repeat(40)}"` };
      if (request.method === "HEAD") {
        response.writeHead(200, announce === "x-linked-size" ? { ...headers, "x-linked-size": "64" } : { ...headers, "content-length": "64" });
        response.end();
        return;
      }
      response.writeHead(200, headers);
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (sent < bodyBytes) {
          sent += chunk.length;
          if (!response.write(chunk)) {
            response.once("drain", pump);
            return;
          }
        }
        response.end();
      };
      response.on("close", () => response.removeAllListeners("drain"));
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    return {
      endpoint: `http://127.0.0.1:${port}`,
      sent: () => sent,
      close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
    };
  }

  for (const announce of ["x-linked-size", "content-length"] as const) {
    it(`stops at the ${announce} the Hub announced and deletes the download`, async () => {
      const hub = await lyingHub(64 * 1024 * 1024, announce);
      const cacheDir = tempDir();
      const progress: HubDownloadProgress[] = [];
      try {
        await assert.rejects(
          resolveHfHandle("hf://acme/liar", { cacheDir, endpoint: hub.endpoint, offline: false, progressBar: false, onProgress: (p) => progress.push(p) }),
          (error: Error) => {
            assert.ok(error instanceof FalconPresetError, `${error.name}: ${error.message}`);
            assert.match(error.message, /config\.json may have 64 bytes \(the size the Hub announced\), but .* sent more bytes than that/);
            return true;
          },
        );
        assert.ok(progress.every((p) => p.downloadedBytes <= 64), `wrote ${Math.max(...progress.map((p) => p.downloadedBytes))} bytes of a 64-byte file`);
        assert.ok(hub.sent() < 64 * 1024 * 1024, "the server was allowed to send its whole body");
      } finally {
        await hub.close();
      }
    });
  }
});
