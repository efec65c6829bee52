/**
 * The continuous-batching engine on a model loaded with `device: "cuda"` (the host emulation of the CUDA
 * kernels, FALCON_CUDA_EMULATE=1), against the same engine on the CPU model: concurrent greedy requests
 * give the CPU's tokens, a prompt spanning several KV blocks gives the CPU's tokens and logits, statistics
 * and KV pool sizing are the CPU engine's. Then device selection's typed errors, and "auto" without CUDA.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconCausalLM, FalconConfigError, FalconError, FalconInputError, type CompleteOptions, type Engine, type EngineStats, type FalconDevice } from "../src/index.js";
import { callNative, native } from "../src/native.js";
import { onRealGpu } from "./helpers/cuda-emulation.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";
import { writeGgufModel } from "./helpers/gguf-model.js";
import { settledMemoryStats } from "./helpers/native-memory.js";
import { HF_CASES } from "./helpers/fixture-suites.js";

const EMULATE = "FALCON_CUDA_EMULATE";
const REAL_GPU = onRealGpu();

const checkpoint = (name: string) => path.join(FIXTURES, "hf", name, "checkpoint");
const load = (name: string, device: FalconDevice) => FalconCausalLM.fromPreset(checkpoint(name), { device });
/** The manifest's float32 tolerance: max |ours − ref| / max(1, max |ref|). */
const f32Tolerance = (name: string) => readJson<{ tolerance_hint: { f32: { rel: number } } }>(path.join(FIXTURES, "hf", name, "manifest.json")).tolerance_hint.f32.rel;

/** The CPU and CUDA models of one fixture case, disposed after the test. */
async function bothDevices(name: string): Promise<{ cpu: FalconCausalLM; cuda: FalconCausalLM } & Disposable> {
  const [cpu, cuda] = await Promise.all([load(name, "cpu"), load(name, "cuda")]);
  assert.equal(cpu.backbone.info().backend, "cpu");
  assert.equal(cuda.backbone.info().backend, "cuda");
  return { cpu, cuda, [Symbol.dispose]: () => [cpu, cuda].forEach((lm) => lm.dispose()) };
}

/** Without the tokens-per-second rate, which is timing. */
function countedStats(engine: Engine): Omit<EngineStats, "tokensPerSecond"> {
  const { tokensPerSecond: _timing, ...counts } = engine.stats();
  return counts;
}

function relativeError(actual: Float32Array[], expected: Float32Array[]): number {
  let worst = 0;
  let scale = 1;
  expected.forEach((row, r) => row.forEach((value, i) => {
    worst = Math.max(worst, Math.abs(actual[r]![i]! - value));
    scale = Math.max(scale, Math.abs(value));
  }));
  return worst / scale;
}

/** Greedy requests of 1 to 45 prompt tokens (up to 3 KV blocks) and 3 to 9 new tokens, no stop token. */
function greedyRequests(vocabularySize: number): { prompt: number[]; maxNewTokens: number }[] {
  return Array.from({ length: 8 }, (_, r) => ({
    prompt: Array.from({ length: 1 + ((r * 13) % 45) }, (_, i) => (r * 31 + i * 17) % vocabularySize),
    maxNewTokens: 3 + (r % 7),
  }));
}

describe("cuda engine", () => {
  const engines: Engine[] = [];
  after(async () => {
    for (const engine of engines) await engine.close();
  });
  const engineOn = (lm: FalconCausalLM, options: Parameters<FalconCausalLM["engine"]>[0]) => {
    const engine = lm.engine(options);
    engines.push(engine);
    return engine;
  };
  const options = { kvCacheBytes: 32 << 20, maxBatchTokens: 32, maxSequences: 8 };

  for (const name of HF_CASES) {
    it(`${name}: concurrent greedy requests, submitted at staggered times, give the CPU engine's tokens and statistics`, async () => {
      using models = await bothDevices(name);
      const requests = greedyRequests(models.cpu.backbone.getConfig().vocabularySize);
      const run = (engine: Engine) => Promise.all(requests.map(async ({ prompt, maxNewTokens }, r) => {
        await new Promise((resolve) => setTimeout(resolve, r % 5));
        return Array.from(await engine.generate(prompt, { maxNewTokens, stopTokenIds: null, sampler: "greedy" }));
      }));
      const cpuEngine = engineOn(models.cpu, options);
      const cudaEngine = engineOn(models.cuda, options);
      const expected = await run(cpuEngine);
      const actual = await run(cudaEngine);
      actual.forEach((tokens, r) => assert.deepEqual(tokens, expected[r], `request ${r}`));
      const stats = countedStats(cudaEngine);
      assert.equal(stats.generatedTokens, requests.reduce((sum, { maxNewTokens }) => sum + maxNewTokens, 0));
      assert.deepEqual([stats.waiting, stats.running, stats.kvBlocks.used], [0, 0, 0], "every request finished and gave its blocks back");
      // Staggered arrival makes batch composition, and so prefix hits, depend on timing: only the pool's totals must agree.
      assert.equal(stats.kvBlocks.total, countedStats(cpuEngine).kvBlocks.total);
      assert.equal(stats.kvBlocks.free + stats.kvBlocks.cached, stats.kvBlocks.total);
    });
  }

  it("a 70-token prompt (5 KV blocks, prefilled in chunks of 16) decodes across a block boundary as on the CPU; its cached blocks are reused", async () => {
    const name = "rw_alibi_mha_sequential";
    using models = await bothDevices(name);
    const V = models.cpu.backbone.getConfig().vocabularySize;
    const prompt = Array.from({ length: 70 }, (_, i) => (i * 37 + 5) % V);
    const request = { maxNewTokens: 20, stopTokenIds: null, sampler: "greedy", returnLogits: true } as const;
    const chunked = { kvCacheBytes: 32 << 20, maxBatchTokens: 16, maxSequences: 4 };
    const cpuEngine = engineOn(models.cpu, chunked);
    const cudaEngine = engineOn(models.cuda, chunked);
    const expected = await cpuEngine.complete(prompt, request);
    const actual = await cudaEngine.complete(prompt, request);
    assert.deepEqual(Array.from(actual.tokenIds), Array.from(expected.tokenIds));
    assert.equal(actual.logits!.length, 20);
    const error = relativeError(actual.logits!, expected.logits!);
    assert.ok(error <= f32Tolerance(name), `logits rows: error ${error} against the CPU engine's`);
    // 70 prompt + 19 fed generated tokens = 89 computed: blocks 0..4 are full and go to the prefix cache.
    const total = cudaEngine.stats().kvBlocks.total;
    assert.deepEqual(countedStats(cudaEngine).kvBlocks, { total, used: 0, free: total - 5, cached: 5 });
    // The same prompt again: its 4 blocks wholly inside the prompt (64 tokens) come from the cache.
    const again = await cudaEngine.complete(prompt, request);
    assert.deepEqual(Array.from(again.tokenIds), Array.from(expected.tokenIds));
    assert.equal(cudaEngine.stats().prefixHitTokens, 64);
    await cpuEngine.complete(prompt, request);
    assert.deepEqual(countedStats(cudaEngine), countedStats(cpuEngine));
  });

  it("sizes the KV pool as on the CPU: the same block bytes, kvCacheBytes / block bytes blocks, the default pool bounded by maxSequences contexts", async () => {
    using models = await bothDevices("f40b_newarch_gqa");
    const { NativeEngine } = native();
    const blockBytes = NativeEngine.kvBlockBytes(models.cuda.backbone.nativeHandle);
    assert.equal(blockBytes, NativeEngine.kvBlockBytes(models.cpu.backbone.nativeHandle));
    assert.deepEqual(countedStats(engineOn(models.cuda, { kvCacheBytes: 10 * blockBytes + 1 })).kvBlocks, { total: 10, used: 0, free: 10, cached: 0 });
    assert.throws(() => models.cuda.engine({ kvCacheBytes: blockBytes - 1 }), FalconInputError);
    const context = Math.min(models.cuda.backbone.getConfig().maxPositionEmbeddings, 1 << 20);
    const { total } = engineOn(models.cuda, { maxSequences: 4, maxBatchTokens: 64 }).stats().kvBlocks;
    assert.ok(total >= 1 && total <= 4 * Math.ceil(context / 16), `${total} blocks`);
  });
});

describe("cuda engine: sampling from candidates ranked on the device", () => {
  const engines: Engine[] = [];
  after(async () => {
    for (const engine of engines) await engine.close();
  });
  const options = { kvCacheBytes: 32 << 20, maxBatchTokens: 32, maxSequences: 8 };
  const engineOn = (lm: FalconCausalLM) => {
    const engine = lm.engine(options);
    engines.push(engine);
    return engine;
  };
  /** The native step runner's count of output rows returned whole, as ranked candidates and as drawn tokens (NativeEngineStats). */
  const logitsRows = (engine: Engine) => {
    const { wholeLogitsRows, rankedLogitsRows, drawnTokenRows } = engine.native.stats();
    return { whole: wholeLogitsRows, ranked: rankedLogitsRows, drawn: drawnTokenRows };
  };
  type Request = { prompt: number[]; options: CompleteOptions };
  /** Every request at once (batched together), each's tokens in order. */
  const run = (engine: Engine, requests: Request[]) =>
    Promise.all(requests.map(async ({ prompt, options }) => Array.from((await engine.complete(prompt, { stopTokenIds: null, ...options })).tokenIds)));
  const prompt = (r: number, V: number) => Array.from({ length: 3 + ((r * 11) % 30) }, (_, i) => (r * 29 + i * 13) % V);

  // The fixtures' vocabulary is 101 ids: k = 64 is ranked on the device, k = 100 is not (more than its 64).
  const rankedSamplers: CompleteOptions["sampler"][] = [
    "greedy",
    { type: "topK", k: 5, seed: 7 },
    { type: "topK", k: 64, temperature: 0.8, seed: 2 ** 40 + 3 },
    { type: "topK", k: 1, seed: 1 },
    { type: "topP", p: 0.9, k: 20, seed: 11 },
    { type: "topP", p: 0.6, k: 64, temperature: 1.5, seed: 12 },
    { type: "topK", k: 40, temperature: 0, seed: 5 },
    { type: "temperature", temperature: 0, seed: 6 },
  ];
  /**
   * The requests (made for the fixture's vocabulary) on the CPU and the CUDA engine of fixture `name`:
   * the same tokens, every CUDA row returned as `kind`, every CPU row whole (the CPU computes whole rows
   * on the host and samples them: nothing to copy, nothing ranked or drawn).
   */
  const assertCpuTokensReturnedAs = async (name: string, kind: "ranked" | "drawn", requestsFor: (V: number) => Request[]) => {
    using models = await bothDevices(name);
    const requests = requestsFor(models.cpu.backbone.getConfig().vocabularySize);
    const cpuEngine = engineOn(models.cpu);
    const cudaEngine = engineOn(models.cuda);
    const expected = await run(cpuEngine, requests);
    const actual = await run(cudaEngine, requests);
    actual.forEach((tokens, r) => assert.deepEqual(tokens, expected[r], `request ${r}: ${JSON.stringify(requests[r]!.options.sampler)}`));
    const generated = requests.reduce((sum, { options }) => sum + options.maxNewTokens!, 0);
    assert.deepEqual(logitsRows(cudaEngine), { whole: 0, ranked: 0, drawn: 0, [kind]: generated });
    assert.deepEqual(logitsRows(cpuEngine), { whole: generated, ranked: 0, drawn: 0 });
  };

  for (const name of ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel"]) {
    it(`${name}: seeded top-k, capped top-p and greedy requests give the CPU engine's tokens, and no whole logits row comes back from the device`, () =>
      assertCpuTokensReturnedAs(name, "ranked", (V) =>
        rankedSamplers.map((sampler, r) => ({ prompt: prompt(r, V), options: { maxNewTokens: 4 + (r % 5), sampler } }))));
  }

  // Samplers over the whole softmax or its nucleus (top-p without a cap below the vocabulary): their tokens
  // are drawn on the device from the step's logits and the sampler's own draw.
  const drawnSamplers = (V: number): CompleteOptions["sampler"][] => [
    { type: "temperature", temperature: 0.9, seed: 3 },
    { type: "random", seed: 4 },
    { type: "random", temperature: 1.7, seed: 2 ** 40 + 1 },
    { type: "temperature", temperature: 0.3, seed: 10 },
    { type: "topP", p: 0.8, seed: 5 },
    { type: "topP", p: 0.8, k: V, seed: 6 },
    { type: "topP", p: 0.3, temperature: 1.4, seed: 2 ** 40 + 7 },
    { type: "topP", p: 0.97, temperature: 0.6, seed: 8 },
  ];
  for (const name of ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel"]) {
    it(`${name}: seeded temperature, random and uncapped top-p requests give the CPU engine's tokens, drawn on the device: only their tokens come back`, () =>
      assertCpuTokensReturnedAs(name, "drawn", (V) =>
        drawnSamplers(V).map((sampler, r) => ({ prompt: prompt(r + 3, V), options: { maxNewTokens: 5 + (r % 4), sampler } }))));
  }

  it("top-p of mass 1 or cut within rounding of p, top-k above 64, logprobs and returned logits still take whole rows, with the CPU's tokens; a mixed batch ranks and draws only the rows that can be", async () => {
    using models = await bothDevices("f40b_newarch_gqa");
    const V = models.cpu.backbone.getConfig().vocabularySize;
    const whole: CompleteOptions[] = [
      { sampler: { type: "topP", p: 1, seed: 5 } },
      // At this temperature every weight is exp(−0) = 1: a flat row, whose lowest half of ids has mass p
      // to within rounding. The kernel leaves the cut to the host's sums, and the row comes back whole.
      { sampler: { type: "topP", p: Math.floor(V / 2) / V, temperature: 1e30, seed: 13 } },
      { sampler: { type: "topK", k: 100, seed: 8 } },
      { sampler: "greedy", logprobs: 2 },
      { sampler: { type: "topK", k: 5, seed: 9 }, returnLogits: true },
      { sampler: { type: "temperature", temperature: 0.9, seed: 3 }, logprobs: 0 },
    ];
    const requests = whole.map((options, r) => ({ prompt: prompt(r, V), options: { ...options, maxNewTokens: 3 } }));
    const cpuEngine = engineOn(models.cpu);
    const cudaEngine = engineOn(models.cuda);
    const expected = await run(cpuEngine, requests);
    const actual = await run(cudaEngine, requests);
    actual.forEach((tokens, r) => assert.deepEqual(tokens, expected[r], `request ${r}: ${JSON.stringify(requests[r]!.options)}`));
    assert.deepEqual(logitsRows(cudaEngine), { whole: 3 * whole.length, ranked: 0, drawn: 0 });
    // One batch of all three kinds: each row comes back as its own request needs it.
    const mixed: Request[] = [
      ...requests,
      { prompt: prompt(20, V), options: { maxNewTokens: 3, sampler: { type: "topK", k: 5, seed: 9 } } },
      { prompt: prompt(21, V), options: { maxNewTokens: 4, sampler: { type: "random", seed: 12 } } },
    ];
    const mixedExpected = await run(cpuEngine, mixed);
    const mixedActual = await run(cudaEngine, mixed);
    assert.deepEqual(mixedActual, mixedExpected);
    assert.deepEqual(logitsRows(cudaEngine), { whole: 2 * 3 * whole.length, ranked: 3, drawn: 4 });
  });
});

describe("cuda weights", () => {
  const config = { vocabularySize: 4096, numLayers: 2, numAttentionHeads: 4, hiddenDim: 256, intermediateDim: 512, dtype: "float32" as const, seed: 3 };

  it("a model on device cuda keeps its matrices in device memory only: the host holds the registry and vectors", async () => {
    const before = await settledMemoryStats();
    const cuda = new FalconBackbone(config, { device: "cuda" });
    await cuda.call({ tokenIds: [[1]] });
    const hostBytes = (await settledMemoryStats()).liveBytes - before.liveBytes;
    const matrixBytes = cuda.info().weightBytes;
    try {
      // Without the sink the host would hold matrixBytes (16 MiB here); the registry, vectors and one
      // call's workspace are a few hundred KiB.
      assert.ok(hostBytes < matrixBytes / 8, `${hostBytes} host bytes for ${matrixBytes} bytes of weights`);
      const model = cuda.nativeHandle;
      await assert.rejects(callNative(() => model.getWeight("layers.0.qkv.weight")), (error: unknown) =>
        error instanceof FalconError && /device memory/.test(error.message) && /"cpu"/.test(error.message));
    } finally {
      cuda.dispose();
    }
  });

  it("rows staged through the page-locked buffers (4 MiB each) arrive whole: rows of every piece are the CPU's", async () => {
    // A float32 file into a float32 model: the loader hands the sink blocks of up to 8 MiB, each staged
    // as pieces of 4096 rows of 1 KiB through the two buffers in turn.
    const source = new FalconBackbone({ ...config, vocabularySize: 18000, numLayers: 1, seed: 4 }, { device: "cpu" });
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), "falcon-staging-")), "wide.gguf");
    await writeGgufModel(source, file, { matrixType: "F32" });
    source.dispose();
    const cpu = await FalconBackbone.fromPreset(file, { device: "cpu" });
    const cuda = await FalconBackbone.fromPreset(file, { device: "cuda" });
    try {
      const inputs = { tokenIds: [[5, 4095, 4096, 8191, 8192, 12288, 16384, 17999]] };
      const [expected, actual] = [await cpu.call(inputs), await cuda.call(inputs)];
      assert.ok(relativeError([actual.data], [expected.data]) < 1e-4, `${relativeError([actual.data], [expected.data])}`);
    } finally {
      cpu.dispose();
      cuda.dispose();
      rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  for (const dtype of ["float32", "bfloat16", "float16", "int8"] as const) {
    it(`${dtype}: a random initialisation written straight to the device is the CPU's: the same hidden states within float32 summation`, async () => {
      const cpu = new FalconBackbone({ ...config, dtype }, { device: "cpu" });
      const cuda = new FalconBackbone({ ...config, dtype }, { device: "cuda" });
      try {
        const inputs = { tokenIds: [[5, 900, 17, 4000, 33, 2]] };
        const [expected, actual] = [await cpu.call(inputs), await cuda.call(inputs)];
        // int8: the CPU quantises activations as well, CUDA multiplies them in float32 (README).
        const bound = dtype === "int8" ? 5e-2 : 1e-4;
        assert.ok(relativeError([actual.data], [expected.data]) < bound, `${relativeError([actual.data], [expected.data])}`);
      } finally {
        cpu.dispose();
        cuda.dispose();
      }
    });
  }
});

describe("cuda device selection", () => {
  const name = "rw_alibi_mha_sequential";

  it('device "gpu" is a FalconInputError naming the accepted values', async () => {
    const requested: string = "gpu";
    await assert.rejects(FalconCausalLM.fromPreset(checkpoint(name), { device: requested as FalconDevice }), (error: unknown) =>
      error instanceof FalconInputError && /gpu/.test(error.message) && [/\bauto\b/, /\bcpu\b/, /\bcuda\b/, /\bcuda:/].every((value) => value.test(error.message)));
  });

  if (REAL_GPU) {
    // A GPU run (bench/cuda-check.sh): the CUDA build on a machine with one GPU.
    it("device cuda:7, a GPU the machine does not have, is a FalconConfigError", async () => {
      await assert.rejects(load(name, "cuda:7"), FalconConfigError);
    });

    it('device "auto" picks the GPU', async () => {
      const lm = await load(name, "auto");
      try {
        assert.equal(lm.backbone.info().backend, "cuda");
      } finally {
        lm.dispose();
      }
    });
    return;
  }

  it("device cuda:7 on the emulated device, where only cuda:0 exists, is a FalconConfigError naming both", async () => {
    await assert.rejects(load(name, "cuda:7"), (error: unknown) =>
      error instanceof FalconConfigError && /cuda:7/.test(error.message) && /cuda:0/.test(error.message));
  });

  describe(`without ${EMULATE}`, () => {
    /** Runs `body` with the emulation switched off, then restores it (tests run one at a time, so no load sees the change). */
    async function withoutEmulation(body: () => Promise<void>): Promise<void> {
      const saved = process.env[EMULATE];
      delete process.env[EMULATE];
      try {
        await body();
      } finally {
        if (saved !== undefined) process.env[EMULATE] = saved;
      }
    }

    it('device "cuda" in a build without CUDA kernels is a FalconConfigError saying so and how to get them; with them and no GPU, one naming the driver or device', () => withoutEmulation(async () => {
      const hasKernels = native().cudaKernelsBuilt();
      await assert.rejects(load(name, "cuda"), (error: unknown) =>
        error instanceof FalconConfigError &&
        (hasKernels ? /driver|device/i.test(error.message) : /no CUDA kernels/i.test(error.message) && /nvcc|FALCON_CUDA|build:cmake/.test(error.message)));
    }));

    it('device "auto" picks the CPU', () => withoutEmulation(async () => {
      const lm = await load(name, "auto");
      try {
        const { backend, device } = lm.backbone.info();
        assert.deepEqual({ backend, device }, { backend: "cpu", device: "cpu" });
      } finally {
        lm.dispose();
      }
    }));
  });
});
