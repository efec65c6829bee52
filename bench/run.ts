/**
 * The benchmark harness (`npm run bench`): llama-bench's measures on a falcon-rw-1b-shaped model with
 * random weights (or a preset), per dtype, beside the machine's own ceilings measured in the same run.
 *
 *   npm run bench -- [--small] [--preset DIR] [--dtypes float32,bfloat16,float16,int8,int4] [--reps 5]
 *                    [--threads N] [--engine-dtypes bfloat16,int8] [--device auto|cpu|cuda|cuda:N]
 *                    [--prompts 128,512] [--streams 1,4,16,64] [--engine-sampler greedy|random|topP] [--json]
 *
 * For the dtypes in --engine-dtypes (that are also measured), the continuous-batching engine's rows
 * follow (bench/engine.ts): aggregate decode tokens/s at 1, 4, 16 and 64 (--streams) concurrent streams
 * sampling greedily or, with --engine-sampler random, from the whole softmax at temperature 1 (topP:
 * from its nucleus of mass 0.9),
 * and time to first token of a 264-token prompt with its 256-token prefix cold and cached. The floors
 * are this CPU's; a model on a GPU (--device cuda) is timed without them (bench/cuda-check.sh measures the GPU's).
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";

import { FalconBackbone, FalconCausalLM, isFalconDevice, runtimeInfo, setNumThreads, type FalconBackboneConfig, type FalconDType } from "../src/index.js";
import { native } from "../src/native.js";
import { measureFirstToken, measureStreams, type FirstTokenMeasure } from "./engine.js";
import { layerMatrixParameters, measureDecode, measurePrefill } from "./measure.js";
import type { Summary } from "./stats.js";

export const FALCON_RW_1B: FalconBackboneConfig = {
  vocabularySize: 50304, numLayers: 24, numAttentionHeads: 32, hiddenDim: 2048, intermediateDim: 8192,
};
const SMALL: FalconBackboneConfig = { vocabularySize: 1024, numLayers: 4, numAttentionHeads: 8, hiddenDim: 256, intermediateDim: 1024 };

interface Ceilings {
  readGBps: number;
  f32Gflops: number;
  bf16Gflops: number;
  int8Gops: number;
}

interface Row {
  dtype: FalconDType;
  ceilings: Ceilings;
  measure: string;
  tokensPerSecond: Summary;
  floor?: { tokensPerSecond: number; percent: number; limit: string };
}

/** Time to first token through the engine, cold and with the prefix cached, beside each one's floor. */
interface FirstTokenRow extends FirstTokenMeasure {
  dtype: FalconDType;
  floorSeconds: { cold: number; warm: number };
}

function cpuModel(): string {
  const match = /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"));
  return match ? match[1].trim() : os.cpus()[0]?.model ?? "unknown";
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: "boolean", default: false }, preset: { type: "string" }, dtypes: { type: "string" },
      reps: { type: "string", default: "5" }, threads: { type: "string" }, json: { type: "boolean", default: false },
      "engine-dtypes": { type: "string", default: "bfloat16,int8" }, device: { type: "string", default: "auto" },
      prompts: { type: "string" }, streams: { type: "string" }, "engine-sampler": { type: "string", default: "greedy" },
    },
  });
  if (!isFalconDevice(values.device)) throw new Error(`--device must be auto, cpu, cuda or cuda:N, got "${values.device}"`);
  const device = values.device;
  if (values.threads) setNumThreads(Number(values.threads));
  const reps = Math.max(1, Number(values.reps));
  const dtypes = (values.dtypes ?? "float32,bfloat16,float16,int8").split(",") as FalconDType[];
  const lengths = (text: string, flag: string) => text.split(",").map((item) => {
    const value = Number(item);
    if (!Number.isInteger(value) || value < 1) throw new Error(`${flag} takes positive integers, got "${text}"`);
    return value;
  });
  const promptLengths = values.prompts ? lengths(values.prompts, "--prompts") : values.small ? [16, 64] : [128, 512];
  const generated = values.small ? 16 : 128;
  const batchedSteps = values.small ? 8 : 32;
  const engineDtypes = new Set(values["engine-dtypes"]!.split(",").filter((name) => name !== ""));
  // Up to 64 streams of a 1.3B model decode for minutes per repetition: the engine rows take at most 3.
  const engineReps = Math.min(reps, 3);
  const engineStreams = values.streams ? lengths(values.streams, "--streams") : [1, 4, 16, 64];
  const engineSampler = values["engine-sampler"]!;
  if (engineSampler !== "greedy" && engineSampler !== "random" && engineSampler !== "topP") {
    throw new Error(`--engine-sampler must be greedy, random or topP, got "${engineSampler}"`);
  }
  const log = (line: string) => { if (!values.json) console.log(line); };

  const runtime = runtimeInfo();
  const machine = { cpu: cpuModel(), threads: runtime.threads, isa: runtime.isa, node: process.versions.node };
  log(`machine    ${machine.cpu}, ${machine.threads} threads, ${machine.isa} kernels, Node ${machine.node}`);
  // The compute ceilings belong to the CPU: each is the best of every probe in the run (a low one means
  // another process took a core for a moment). This machine's memory bandwidth drifts from minute to
  // minute, so each model's bandwidth floors use the higher of two probes, taken just before and just
  // after its measurements.
  const peaks = { f32Gflops: 0, bf16Gflops: 0, int8Gops: 0 };
  const probeReadGBps = async (): Promise<number> => {
    const probe = await native().probeMachine(values.small ? 2 ** 28 : 2 ** 31);
    peaks.f32Gflops = Math.max(peaks.f32Gflops, probe.f32FlopsPerSecond / 1e9);
    peaks.bf16Gflops = Math.max(peaks.bf16Gflops, probe.bf16FlopsPerSecond / 1e9);
    peaks.int8Gops = Math.max(peaks.int8Gops, probe.int8OpsPerSecond / 1e9);
    return probe.readBytesPerSecond / 1e9;
  };

  const rows: Row[] = [];
  const firstTokenRows: FirstTokenRow[] = [];
  for (const dtype of dtypes) {
    const model = values.preset
      ? await FalconBackbone.fromPreset(values.preset, { dtype, device })
      : new FalconBackbone({ ...(values.small ? SMALL : FALCON_RW_1B), dtype, seed: 1 }, { device });
    await model.call({ tokenIds: [[0]] });
    const config = model.getConfig();
    const info = model.info();
    const readBefore = await probeReadGBps();
    const prefill = [];
    for (const length of promptLengths) prefill.push({ length, result: await measurePrefill(model, length, reps) });
    const single = await measureDecode(model, generated, reps);
    const batched = [];
    for (const batch of [4, 16]) batched.push({ batch, result: await measureDecode(model, batchedSteps, reps, batch) });
    const streams = [];
    let firstToken: FirstTokenMeasure | undefined;
    if (engineDtypes.has(dtype)) {
      const lm = new FalconCausalLM(model);
      for (const count of engineStreams) streams.push(await measureStreams(lm, count, batchedSteps, engineReps, 8, engineSampler));
      firstToken = await measureFirstToken(lm, values.small ? 64 : 256, engineReps);
    }
    const readAfter = await probeReadGBps();
    model.dispose();

    const ceilings: Ceilings = { readGBps: Math.max(readBefore, readAfter), ...peaks };
    log(`\nmodel      ${values.preset ?? (values.small ? "small random" : "falcon-rw-1b shape, random weights")}: ${info.parameterCount.toLocaleString("en-US")} parameters, ${dtype} (${(info.weightBytes / 2 ** 30).toFixed(2)} GiB of weights), on ${info.device}`);
    log(`  ceilings read ${readBefore.toFixed(1)} GB/s before and ${readAfter.toFixed(1)} after these runs, f32 FMA ${peaks.f32Gflops.toFixed(0)} GFLOP/s, bf16 dot ${peaks.bf16Gflops.toFixed(0)} GFLOP/s, int8 dot ${peaks.int8Gops.toFixed(0)} GOP/s`);
    // Decode reads every weight byte once per step; prefill multiplies each layer matrix once per token.
    const decodeFloor = (ceilings.readGBps * 1e9) / info.weightBytes;
    const peak = 1e9 * (dtype === "bfloat16" || dtype === "mixed_bfloat16" ? ceilings.bf16Gflops
      : dtype === "int8" || dtype === "int4" ? ceilings.int8Gops : ceilings.f32Gflops);
    const prefillFloor = peak / (2 * layerMatrixParameters(config));
    // A decoded token also projects its logits; a batch of b sequences reads the weights once per step.
    const tokenComputeFloor = peak / (2 * (layerMatrixParameters(config) + config.vocabularySize * config.hiddenDim));
    // The floors come from this CPU's probes: a model on a GPU is timed without them (bench/cuda-check.sh has the GPU's).
    const onCpu = info.backend === "cpu";
    const add = (measure: string, tokensPerSecond: Summary, floor?: number, limit?: string) => {
      const row: Row = { dtype, ceilings, measure, tokensPerSecond };
      if (floor !== undefined && onCpu) row.floor = { tokensPerSecond: floor, percent: (100 * tokensPerSecond.median) / floor, limit: limit! };
      rows.push(row);
      const spread = `(min ${tokensPerSecond.min.toFixed(1)}, max ${tokensPerSecond.max.toFixed(1)})`;
      const floorText = row.floor ? `   ${row.floor.percent.toFixed(0)}% of the ${limit} floor ${floor!.toFixed(1)}` : "";
      log(`  ${measure.padEnd(10)} ${tokensPerSecond.median.toFixed(1).padStart(8)} tok/s ${spread}${floorText}`);
    };
    for (const { length, result } of prefill) add(`pp${length}`, result, prefillFloor, "compute");
    add(`tg${generated}`, single, decodeFloor, "bandwidth");
    for (const { batch, result } of batched) {
      const batchFloor = Math.min(tokenComputeFloor, batch * decodeFloor);
      add(`b${batch}×tg${batchedSteps}`, result, batchFloor, batchFloor === tokenComputeFloor ? "compute" : "bandwidth");
      log(`  ${"".padEnd(10)} ${(result.median / single.median).toFixed(1)}× the single-sequence decode rate`);
    }
    // The engine: a step of R decode rows can go no faster than the slower of one read of the weights
    // and R tokens' arithmetic at the measured peak.
    for (const { streams: count, tokensPerSecond } of streams) {
      const floor = Math.min(count * decodeFloor, tokenComputeFloor);
      add(`engine×${count}${engineSampler === "greedy" ? "" : ` ${engineSampler}`}`, tokensPerSecond, floor, floor === tokenComputeFloor ? "compute" : "bandwidth");
    }
    if (firstToken) {
      // A cold prompt multiplies every layer matrix once per token and the head once; a cached prefix
      // leaves 8 tokens, which still read every weight once.
      const ownTokens = firstToken.promptLength - firstToken.prefixLength;
      const headFlops = 2 * config.vocabularySize * config.hiddenDim;
      const cold = (2 * layerMatrixParameters(config) * firstToken.promptLength + headFlops) / peak;
      const warm = Math.max(info.weightBytes / (ceilings.readGBps * 1e9), (2 * layerMatrixParameters(config) * ownTokens + headFlops) / peak);
      firstTokenRows.push({ dtype, ...firstToken, floorSeconds: { cold, warm } });
      const line = (label: string, seconds: Summary, floorSeconds: number) =>
        log(`  ${label.padEnd(10)} ${seconds.median.toFixed(3).padStart(8)} s     (min ${seconds.min.toFixed(3)}, max ${seconds.max.toFixed(3)})` +
          (onCpu ? `   ${((100 * floorSeconds) / seconds.median).toFixed(0)}% of the floor ${floorSeconds.toFixed(3)} s` : ""));
      line(`ttft${firstToken.promptLength}`, firstToken.cold, cold);
      line(`  cached`, firstToken.warm, warm);
      log(`  ${"".padEnd(10)} ${(firstToken.cold.median / firstToken.warm.median).toFixed(1)}× faster with the ${firstToken.prefixLength}-token prefix cached`);
    }
  }
  if (values.json) console.log(JSON.stringify({ machine, rows, firstTokenRows }, null, 2));
}

await main();
