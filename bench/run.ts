/**
 * The benchmark harness (`npm run bench`): llama-bench's measures on a falcon-rw-1b-shaped model with
 * random weights (or a preset), per dtype, beside the machine's own ceilings measured in the same run.
 *
 *   npm run bench -- [--small] [--preset DIR] [--dtypes float32,bfloat16,float16,int8] [--reps 5]
 *                    [--threads N] [--json]
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";

import { FalconBackbone, runtimeInfo, setNumThreads, type FalconBackboneConfig, type FalconDType } from "../src/index.js";
import { native } from "../src/native.js";
import { measureDecode, measurePrefill } from "./measure.js";
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

function cpuModel(): string {
  const match = /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"));
  return match ? match[1].trim() : os.cpus()[0]?.model ?? "unknown";
}

/** Parameters multiplied per prompt token: every layer's matrices (the LM head is not run by pp). */
function layerMatrixParameters(config: Required<FalconBackboneConfig>): number {
  const D = config.hiddenDim;
  const d = D / config.numAttentionHeads;
  const perLayer = D * (config.numAttentionHeads + 2 * config.numKeyValueHeads) * d + D * D + 2 * D * config.intermediateDim;
  return config.numLayers * perLayer;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: "boolean", default: false }, preset: { type: "string" }, dtypes: { type: "string" },
      reps: { type: "string", default: "5" }, threads: { type: "string" }, json: { type: "boolean", default: false },
    },
  });
  if (values.threads) setNumThreads(Number(values.threads));
  const reps = Math.max(1, Number(values.reps));
  const dtypes = (values.dtypes ?? "float32,bfloat16,float16,int8").split(",") as FalconDType[];
  const promptLengths = values.small ? [16, 64] : [128, 512];
  const generated = values.small ? 16 : 128;
  const batchedSteps = values.small ? 8 : 32;
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
  for (const dtype of dtypes) {
    const model = values.preset
      ? await FalconBackbone.fromPreset(values.preset, { dtype })
      : new FalconBackbone({ ...(values.small ? SMALL : FALCON_RW_1B), dtype, seed: 1 });
    await model.call({ tokenIds: [[0]] });
    const config = model.getConfig();
    const info = model.info();
    const readBefore = await probeReadGBps();
    const prefill = [];
    for (const length of promptLengths) prefill.push({ length, result: await measurePrefill(model, length, reps) });
    const single = await measureDecode(model, generated, reps);
    const batched = [];
    for (const batch of [4, 16]) batched.push({ batch, result: await measureDecode(model, batchedSteps, reps, batch) });
    const readAfter = await probeReadGBps();
    model.dispose();

    const ceilings: Ceilings = { readGBps: Math.max(readBefore, readAfter), ...peaks };
    log(`\nmodel      ${values.preset ?? (values.small ? "small random" : "falcon-rw-1b shape, random weights")}: ${info.parameterCount.toLocaleString("en-US")} parameters, ${dtype} (${(info.weightBytes / 2 ** 30).toFixed(2)} GiB of weights)`);
    log(`  ceilings read ${readBefore.toFixed(1)} GB/s before and ${readAfter.toFixed(1)} after these runs, f32 FMA ${peaks.f32Gflops.toFixed(0)} GFLOP/s, bf16 dot ${peaks.bf16Gflops.toFixed(0)} GFLOP/s, int8 dot ${peaks.int8Gops.toFixed(0)} GOP/s`);
    // Decode reads every weight byte once per step; prefill multiplies each layer matrix once per token.
    const decodeFloor = (ceilings.readGBps * 1e9) / info.weightBytes;
    const peak = 1e9 * (dtype === "bfloat16" || dtype === "mixed_bfloat16" ? ceilings.bf16Gflops
      : dtype === "int8" ? ceilings.int8Gops : ceilings.f32Gflops);
    const prefillFloor = peak / (2 * layerMatrixParameters(config));
    // A decoded token also projects its logits; a batch of b sequences reads the weights once per step.
    const tokenComputeFloor = peak / (2 * (layerMatrixParameters(config) + config.vocabularySize * config.hiddenDim));
    const add = (measure: string, tokensPerSecond: Summary, floor?: number, limit?: string) => {
      const row: Row = { dtype, ceilings, measure, tokensPerSecond };
      if (floor !== undefined) row.floor = { tokensPerSecond: floor, percent: (100 * tokensPerSecond.median) / floor, limit: limit! };
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
  }
  if (values.json) console.log(JSON.stringify({ machine, rows }, null, 2));
}

await main();
