#!/usr/bin/env node
/** The falcon-native command line: `run` (the main job) and `inspect`. */
import { parseArgs } from "node:util";

import { FalconBackbone } from "./backbone.js";
import { FALCON_DTYPES, type FalconBackboneConfig, type FalconDType } from "./config.js";
import { FalconError } from "./errors.js";
import { runtimeInfo, setNumThreads } from "./runtime.js";

const HELP = `falcon-native — Falcon language models for Node.js

Usage:
  falcon-native run [--preset DIR] [options]   run the backbone on random token ids and report
  falcon-native inspect PRESET                 print a preset's configuration and size
  falcon-native --help

run options:
  --preset DIR      keras-hub preset directory or built-in name (default: a small random model)
  --dtype TYPE      ${FALCON_DTYPES.join(" | ")} (default float32)
  --batch N         rows (default 2)
  --length N        tokens per row (default 64)
  --seed N          seed for the random model and the token ids (default 0)
  --threads N       worker threads (default: all cores, or FALCON_NUM_THREADS)
`;

/** A small model that runs in well under a second on two cores. */
const DEFAULT_MODEL: FalconBackboneConfig = {
  vocabularySize: 1024, numLayers: 4, numAttentionHeads: 8, hiddenDim: 256, intermediateDim: 1024,
};

function positiveInteger(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new FalconError(`${flag} must be a positive integer, got "${value}"`);
  return parsed;
}

function nonNegativeInteger(value: string, flag: string): number {
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 0) throw new FalconError(`${flag} must be a non-negative integer, got "${value}"`);
  return parsed;
}

/** Deterministic ids so the checksum is reproducible across runs and machines. */
function randomIds(count: number, vocabularySize: number, seed: number): Int32Array {
  let state = (seed * 2654435761 + 1) >>> 0;
  const ids = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    ids[i] = state % vocabularySize;
  }
  return ids;
}

async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      preset: { type: "string" }, dtype: { type: "string" }, batch: { type: "string" }, length: { type: "string" },
      seed: { type: "string" }, threads: { type: "string" },
    },
  });
  if (values.dtype !== undefined && !FALCON_DTYPES.includes(values.dtype as FalconDType)) {
    throw new FalconError(`--dtype must be one of ${FALCON_DTYPES.join(", ")}`);
  }
  const dtype = values.dtype as FalconDType | undefined;
  const batch = positiveInteger(values.batch, 2, "--batch");
  const length = positiveInteger(values.length, 64, "--length");
  const seed = values.seed === undefined ? 0 : nonNegativeInteger(values.seed, "--seed");
  if (values.threads !== undefined) setNumThreads(positiveInteger(values.threads, 1, "--threads"));

  const loadStart = performance.now();
  const model = values.preset
    ? await FalconBackbone.fromPreset(values.preset, { dtype })
    : new FalconBackbone({ ...DEFAULT_MODEL, dtype, seed });
  const config = model.getConfig();
  const tokenIds = randomIds(batch * length, config.vocabularySize, seed);
  await model.call({ tokenIds: new Int32Array([0]), shape: [1, 1] });  // waits for initialisation
  const loadMs = performance.now() - loadStart;

  const start = performance.now();
  const hidden = await model.call({ tokenIds, shape: [batch, length] });
  const forwardMs = performance.now() - start;
  const logits = await model.tokenEmbedding.reverse(hidden);
  let checksum = 0;
  for (let i = 0; i < hidden.data.length; i++) checksum += hidden.data[i] * ((i % 7) + 1);
  const info = model.info();
  console.log(`model      ${values.preset ?? "random (embedded default)"}: ${config.numLayers} layers, hidden ${config.hiddenDim}, ` +
    `${config.numAttentionHeads} heads, vocab ${config.vocabularySize}, ${info.parameterCount.toLocaleString("en-US")} parameters, ${info.dtype}`);
  const runtime = runtimeInfo();
  console.log(`backend    ${info.backend} (${runtime.isa} kernels), ${runtime.threads} threads`);
  console.log(`input      tokenIds [${batch}, ${length}]`);
  console.log(`output     hidden [${hidden.shape.join(", ")}], logits [${logits.shape.join(", ")}]`);
  console.log(`time       load ${loadMs.toFixed(1)} ms, forward ${forwardMs.toFixed(1)} ms (${((batch * length) / (forwardMs / 1000)).toFixed(1)} tokens/s)`);
  console.log(`checksum   ${checksum.toFixed(6)}`);
  model.dispose();
}

async function inspect(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  if (positionals.length !== 1) throw new FalconError("inspect takes one preset directory or name: falcon-native inspect PRESET");
  const model = await FalconBackbone.fromPreset(positionals[0], { loadWeights: false });
  const info = model.info();
  console.log(JSON.stringify({ config: model.getConfig(), parameterCount: info.parameterCount, weightBytes: info.weightBytes,
    dtype: info.dtype, backend: info.backend, ...runtimeInfo() }, null, 2));
  model.dispose();
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  const commands: Record<string, (args: string[]) => Promise<void>> = { run, inspect };
  const handler = commands[command];
  if (!handler) {
    process.stderr.write(`falcon-native: unknown command "${command}"\n\n${HELP}`);
    return 2;
  }
  try {
    await handler(rest);
    return 0;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`falcon-native ${command}: ${message}\nRun "falcon-native --help" for usage.\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
