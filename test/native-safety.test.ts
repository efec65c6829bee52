/**
 * Nothing a caller or a file can do to the native addon kills or wedges the process: worker
 * termination mid-call, buffers moved during a call, pool resizes mid-call, thread limits, files
 * truncated while they load, impossible sizes; and what the addon allocates is counted and freed.
 * Checks whose failure would abort or hang run in a child process.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { FalconBackbone, FalconConfigError, FalconInputError, FalconPresetError, type FalconBackboneConfig } from "../src/index.js";
import { resolveBackboneConfig, toNativeConfig } from "../src/config.js";
import { callNative, callNativeSync, native, type NativeModelConfig } from "../src/native.js";
import { readSafetensorsHeader } from "../src/presets/safetensors.js";
import { describeChild, LIBRARY_URL, NATIVE_URL, runNode, threadsOfUser } from "./helpers/child-node.js";
import { settledMemoryStats } from "./helpers/native-memory.js";
import { randomTensor, writeSafetensors } from "./helpers/safetensors-writer.js";

/** Big enough that a 128-token call takes milliseconds, so there is time to interfere with it. */
const SLOW: FalconBackboneConfig = {
  vocabularySize: 512, numLayers: 4, numAttentionHeads: 4, hiddenDim: 256, intermediateDim: 1024,
  layerNormEpsilon: 1e-5, attentionDropoutRate: 0, feedforwardDropoutRate: 0, dtype: "float32", seed: 3,
};
const CONFIG_URL = new URL("../src/config.js", import.meta.url).href;

function nativeConfig(overrides: Partial<NativeModelConfig> = {}): NativeModelConfig {
  return { ...toNativeConfig(resolveBackboneConfig(SLOW)), ...overrides };
}

function tempDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), "falcon-native-safety-"));
}

describe("worker threads", () => {
  it("survives worker.terminate() while the worker's forward and logits calls are in flight", () => {
    const workerSource = `
      const { parentPort } = require("node:worker_threads");
      import(${JSON.stringify(LIBRARY_URL)}).then(async ({ FalconBackbone }) => {
        const model = new FalconBackbone(${JSON.stringify(SLOW)});
        const tokenIds = [Array.from({ length: 128 }, (_, i) => i % 500)];
        parentPort.postMessage("running");
        for (;;) await model.tokenEmbedding.reverse(await model.call({ tokenIds }));
      });`;
    const child = runNode(`
      import { Worker } from "node:worker_threads";
      for (let round = 0; round < 24; round++) {
        const worker = new Worker(${JSON.stringify(workerSource)}, { eval: true, execArgv: [] });
        await new Promise((resolve) => worker.once("message", resolve));
        await new Promise((resolve) => setTimeout(resolve, round % 8));
        await worker.terminate();
      }
      console.log("alive");`);
    assert.equal(child.status, 0, describeChild(child));
    assert.match(child.stdout, /alive/);
  });
});

describe("async calls own their inputs", () => {
  it("projectLogits and setWeight read the buffer as it was at call time, even when it is transferred and reused", () => {
    // One libuv thread, held by a long forward: the calls under test run only after their buffers were moved.
    const child = runNode(`
      const { FalconBackbone } = await import(${JSON.stringify(LIBRARY_URL)});
      const { native } = await import(${JSON.stringify(NATIVE_URL)});
      const { resolveBackboneConfig, toNativeConfig } = await import(${JSON.stringify(CONFIG_URL)});
      const backbone = new FalconBackbone(${JSON.stringify(SLOW)});
      const model = await backbone.nativeModel();
      const tokenIds = new Int32Array(256).map((_, i) => i % 500);
      const moveAndOverwrite = (view) => new Float32Array(structuredClone(view.buffer, { transfer: [view.buffer] })).fill(1e4);

      const rows = 8;
      const hidden = new Float32Array(rows * 256).map((_, i) => Math.sin(i));
      const expectedLogits = await model.projectLogits(hidden.slice(), rows);
      let blocker = model.forward(tokenIds, null, null, 1, 256, null, null);
      const logits = model.projectLogits(hidden, rows);
      moveAndOverwrite(hidden);
      await blocker;
      const logitsSame = (await logits).every((value, i) => value === expectedLogits[i]);

      const fresh = new (native().NativeModel)(toNativeConfig(resolveBackboneConfig(${JSON.stringify(SLOW)})));
      const weights = new Float32Array(512 * 256).map((_, i) => Math.cos(i));
      const expectedWeights = weights.slice();
      blocker = model.forward(tokenIds, null, null, 1, 256, null, null);
      const setting = fresh.setWeight("token_embedding", 0, weights, "float32", 512, 256, false);
      moveAndOverwrite(weights);
      await blocker;
      await setting;
      const stored = new Float32Array((await fresh.getWeight("token_embedding")).data.slice().buffer);
      const weightsSame = stored.every((value, i) => value === expectedWeights[i]);
      console.log(JSON.stringify({ logitsSame, weightsSame }));`, { env: { UV_THREADPOOL_SIZE: "1" } });
    assert.equal(child.status, 0, describeChild(child));
    assert.deepEqual(JSON.parse(child.stdout), { logitsSame: true, weightsSame: true });
  });
});

describe("thread pool", () => {
  it("setNumThreads during running calls neither breaks nor waits on them", () => {
    const child = runNode(`
      const { FalconBackbone, setNumThreads } = await import(${JSON.stringify(LIBRARY_URL)});
      const model = new FalconBackbone(${JSON.stringify(SLOW)});
      const tokenIds = [Array.from({ length: 128 }, (_, i) => i % 500)];
      const reference = (await model.call({ tokenIds })).data;
      let mismatches = 0;
      for (let round = 0; round < 30; round++) {
        const pending = [model.call({ tokenIds }), model.call({ tokenIds })];
        await new Promise((resolve) => setTimeout(resolve, round % 4));
        setNumThreads(1 + (round % 3));
        for (const result of await Promise.all(pending)) {
          if (!result.data.every((value, i) => value === reference[i])) mismatches++;
        }
      }
      console.log(JSON.stringify({ mismatches }));`, { timeoutMs: 90_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.deepEqual(JSON.parse(child.stdout), { mismatches: 0 });
  });

  it("survives a thread limit: the default pool keeps the threads it got, setNumThreads throws and keeps its pool", () => {
    // RLIMIT_NPROC counts every thread of the user and does not bind root: run as nobody when root.
    const asRoot = process.getuid?.() === 0;
    const user = asRoot ? { uid: 65534, gid: 65534 } : {};
    const limit = threadsOfUser(asRoot ? 65534 : process.getuid?.() ?? 0) + 48;
    const child = runNode(`
      const { FalconBackbone, FalconError, runtimeInfo, setNumThreads } = await import(${JSON.stringify(LIBRARY_URL)});
      const threads = runtimeInfo().threads;
      let refusal;
      try {
        setNumThreads(1000);
      } catch (error) {
        refusal = { message: error.message, isFalconError: error instanceof FalconError };
      }
      const model = new FalconBackbone(${JSON.stringify({ ...SLOW, numLayers: 1 })});
      const hidden = await model.call({ tokenIds: [[1, 2, 3]] });
      console.log(JSON.stringify({ threads, refusal, after: runtimeInfo().threads, shape: hidden.shape }));`,
      { shellPrefix: `ulimit -u ${limit} &&`, ...user, env: { FALCON_NUM_THREADS: "1000" } });
    assert.equal(child.status, 0, describeChild(child));
    const report = JSON.parse(child.stdout);
    assert.ok(report.threads >= 1 && report.threads < 1000, `the default pool reports ${report.threads} threads`);
    assert.equal(report.refusal?.isFalconError, true, describeChild(child));
    assert.match(report.refusal.message, /cannot start 1000 threads/);
    assert.equal(report.after, report.threads);
    assert.deepEqual(report.shape, [1, 3, 256]);
  });
});

describe("weight files", () => {
  function checkpoint(): { file: string; byteOffset: number } {
    const file = path.join(tempDir(), "model.safetensors");
    writeSafetensors(file, [randomTensor("token_embedding", "F32", [512, 256], 5)]);
    return { file, byteOffset: readSafetensorsHeader(file).get("token_embedding")!.byteOffset };
  }

  it("a file truncated after it was opened gives FalconPresetError naming the file and weight, not SIGBUS", async () => {
    const { file, byteOffset } = checkpoint();
    const model = callNativeSync(() => new (native().NativeModel)(nativeConfig()));
    const weightFile = new (native().NativeWeightFile)(file);
    truncateSync(file, byteOffset + 1000);
    await assert.rejects(
      callNative(() => model.setWeightFromFile("token_embedding", 0, weightFile, byteOffset, "float32", 512, 256, false)),
      (error: Error) => error instanceof FalconPresetError && error.message.includes(file) &&
        /token_embedding/.test(error.message) && /truncated/.test(error.message),
    );
    weightFile.dispose();
    model.dispose();
  });

  it("refuses a directory or a FIFO as a weight file at once (opening a FIFO used to wait for a writer)", () => {
    const dir = tempDir();
    const fifo = path.join(dir, "model.safetensors");
    execFileSync("mkfifo", [fifo]);
    const child = runNode(`
      const { callNativeSync, native } = await import(${JSON.stringify(NATIVE_URL)});
      const messages = [];
      for (const file of ${JSON.stringify([dir, fifo])}) {
        try {
          callNativeSync(() => new (native().NativeWeightFile)(file));
        } catch (error) {
          messages.push(error.constructor.name + ": " + error.message);
        }
      }
      console.log(JSON.stringify(messages));`, { timeoutMs: 20_000 });
    assert.equal(child.status, 0, describeChild(child));
    assert.deepEqual(JSON.parse(child.stdout), [`FalconPresetError: ${dir}: is a directory`, `FalconPresetError: ${fifo}: is not a regular file`]);
  });

  it("a file truncated while it loads either loads or fails typed", async () => {
    for (let round = 0; round < 8; round++) {
      const { file, byteOffset } = checkpoint();
      const model = callNativeSync(() => new (native().NativeModel)(nativeConfig()));
      const weightFile = new (native().NativeWeightFile)(file);
      const loading = callNative(() => model.setWeightFromFile("token_embedding", 0, weightFile, byteOffset, "float32", 512, 256, false));
      await new Promise((resolve) => setTimeout(resolve, round % 3));
      truncateSync(file, byteOffset + 4096 * round);
      await loading.catch((error: unknown) => assert.ok(error instanceof FalconPresetError, String(error)));
      weightFile.dispose();
      model.dispose();
    }
  });

  it("reads unaligned source data: a header length that is not a multiple of 8, a buffer at an odd offset", async () => {
    // Under `npm run test:sanitize` a misaligned load is a UBSan error.
    // bfloat16 values (k / 128 is exact) widen to float32 unchanged.
    const values = Array.from({ length: 512 * 256 }, (_, i) => ((i % 255) - 127) / 128);
    const data = new Uint8Array(values.length * 2);
    const f32 = new Float32Array(1);
    const bits = new Uint32Array(f32.buffer);
    values.forEach((value, i) => {
      f32[0] = value;
      new DataView(data.buffer).setUint16(2 * i, bits[0] >>> 16, true);
    });
    let json = JSON.stringify({ token_embedding: { dtype: "BF16", shape: [512, 256], data_offsets: [0, data.length] } });
    if (json.length % 2 === 0) json += " ";
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(tempDir(), "model.safetensors");
    writeFileSync(file, Buffer.concat([length, Buffer.from(json), data]));
    const byteOffset = readSafetensorsHeader(file).get("token_embedding")!.byteOffset;
    assert.equal(byteOffset % 2, 1);

    const model = callNativeSync(() => new (native().NativeModel)(nativeConfig()));
    const weightFile = new (native().NativeWeightFile)(file);
    await model.setWeightFromFile("token_embedding", 0, weightFile, byteOffset, "bfloat16", 512, 256, false);
    weightFile.dispose();
    const shifted = new Uint8Array(1 + 256 * 2);
    shifted.set(data.subarray(0, 256 * 2), 1);
    await model.setWeight("final_norm.gamma", 0, shifted.subarray(1), "bfloat16", 256, 1, false);
    const embedding = new Float32Array((await model.getWeight("token_embedding")).data.slice().buffer);
    const gamma = new Float32Array((await model.getWeight("final_norm.gamma")).data.slice().buffer);
    assert.ok(embedding.every((value, i) => value === values[i]));
    assert.ok(gamma.every((value, i) => value === values[i]));
    model.dispose();
  });
});

describe("sizes are priced before anything is allocated", () => {
  it("refuses a model bigger than the machine's memory with FalconConfigError stating bytes needed and available", () => {
    const before = native().memoryStats();
    for (const overrides of [{ numLayers: 1_000_000 }, { hiddenDim: 2 ** 24, numHeads: 1, numKvHeads: 1 }]) {
      const started = Date.now();
      assert.throws(
        () => callNativeSync(() => new (native().NativeModel)(nativeConfig(overrides))),
        (error: Error) => error instanceof FalconConfigError && /needs \d+ bytes but only \d+ bytes of memory are available/.test(error.message),
      );
      assert.ok(Date.now() - started < 1000, "refused at once");
    }
    assert.deepEqual(native().memoryStats(), before);
  });

  it("refuses caches bigger than the machine's memory with FalconInputError stating bytes needed and available", async () => {
    const model = new FalconBackbone(SLOW);
    await model.nativeModel();  // its random initialisation has finished
    const before = native().memoryStats();
    for (const options of [{ batchSize: 1e6, maxLength: 64 }, { batchSize: 1, maxLength: 1e9 }]) {
      assert.throws(() => model.createCache(options), (error: Error) =>
        error instanceof FalconInputError && /needs \d+ bytes but only \d+ bytes of memory are available/.test(error.message));
    }
    assert.deepEqual(native().memoryStats(), before);
    model.dispose();
  });

  it("exposes the estimates: they cover what a model and a cache really allocate", async () => {
    const config = nativeConfig({ dtype: "int8", hiddenDim: 250, numHeads: 5, numKvHeads: 5, ffnDim: 1001 });
    const before = await settledMemoryStats();
    const model = callNativeSync(() => new (native().NativeModel)(config));
    const withModel = native().memoryStats().liveBytes - before.liveBytes;
    const cache = new (native().NativeKvCache)(model, 3, 100);
    const withCache = native().memoryStats().liveBytes - before.liveBytes - withModel;
    const modelEstimate = native().modelMemoryBytes(config);
    const cacheEstimate = native().cacheMemoryBytes(config, 3, 100);
    assert.ok(withModel <= modelEstimate && modelEstimate < withModel * 1.05 + 64 * 1024, `model: ${withModel} counted, ${modelEstimate} estimated`);
    assert.ok(withCache <= cacheEstimate && cacheEstimate < withCache * 1.05 + 4096, `cache: ${withCache} counted, ${cacheEstimate} estimated`);
    assert.ok(native().cacheMemoryBytes(config, 1e6, 1e6) > native().memoryAvailable());
    assert.ok(native().memoryAvailable() > 0);
    assert.throws(() => callNativeSync(() => native().modelMemoryBytes({ ...config, hiddenDim: 7 })), FalconConfigError);
    cache.dispose();
    model.dispose();
    assert.deepEqual(await settledMemoryStats(), before);
  });
});

describe("native memory accounting", () => {
  it("a converting load (bfloat16 → int8) leaves nothing allocated after dispose, not even per-thread scratch", async () => {
    const before = await settledMemoryStats();
    const config = nativeConfig({ dtype: "int8", vocabSize: 16384, hiddenDim: 512, numHeads: 8, numKvHeads: 8 });
    const model = callNativeSync(() => new (native().NativeModel)(config));
    const bf16 = new Uint16Array(16384 * 512).map((_, i) => 0x3c00 + (i % 97));
    await model.setWeight("token_embedding", 0, bf16, "bfloat16", 16384, 512, false);
    const file = path.join(tempDir(), "model.safetensors");
    writeSafetensors(file, [randomTensor("w", "BF16", [1024, 512], 9)]);
    const weightFile = new (native().NativeWeightFile)(file);
    await model.setWeightFromFile("layers.0.ffn_up.weight", 0, weightFile, readSafetensorsHeader(file).get("w")!.byteOffset, "bfloat16", 1024, 512, false);
    weightFile.dispose();
    model.dispose();
    assert.deepEqual(await settledMemoryStats(), before);
  });

  it("forward and logits calls return to the baseline once their results are collected; per-thread scratch stays bounded", async () => {
    const model = new FalconBackbone(SLOW);
    await model.nativeModel();
    const before = await settledMemoryStats();
    // In a function of its own, so no result is still referenced when the counters are read.
    const decode = async () => {
      const cache = model.createCache({ batchSize: 2, maxLength: 600 });
      const hidden = await model.callWithCache({ tokenIds: [Array(512).fill(1), Array(512).fill(2)] }, cache, 0);
      await model.tokenEmbedding.reverse(hidden);
      for (let step = 0; step < 8; step++) await model.callWithCache([[3], [4]], cache, 512 + step);
      cache.dispose();
    };
    await decode();
    const after = await settledMemoryStats();
    assert.equal(after.liveBytes, before.liveBytes);
    assert.equal(after.liveAllocations, before.liveAllocations);
    // Pool workers and the libuv threads that call them keep at most six buffers (a normalised row,
    // attention scores and key blocks, three packed-activation arrays) of at most 1 MiB each.
    const threads = native().numThreads() + 4;
    assert.ok(after.threadScratchBytes <= threads * 6 * 2 ** 20, `${after.threadScratchBytes} bytes of per-thread scratch`);
    model.dispose();
  });
});
