#!/usr/bin/env node
/** The falcon-native command line: `generate`, `run` (the main job) and `inspect`. */
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { FalconBackbone } from "./backbone.js";
import { FalconCausalLM, presetTokenizerFiles } from "./causal-lm.js";
import {
  FALCON_DTYPES,
  describeVariant,
  parameterCount,
  resolveBackboneConfig,
  storageDType,
  weightBytes,
  type FalconBackboneConfig,
  type ResolvedBackboneConfig,
} from "./config.js";
import { deviceOption, dtypeOption, finiteNumber, idList, nonNegativeInteger, positiveInteger, UsageError } from "./cli-args.js";
import type { GenerateOptions } from "./generate.js";
import { checkBatchFits } from "./inputs.js";
import type { GgufWeightConversion } from "./presets/gguf.js";
import { readPreset, type Preset } from "./presets/index.js";
import { BUILD_EXAMPLES, BUILD_HELP, buildCommand } from "./build-command.js";
import { SERVE_EXAMPLES, SERVE_HELP, serveCommand } from "./server/serve-command.js";
import { runtimeInfo, setNumThreads } from "./runtime.js";
import { writeTinyCheckpoint } from "./tiny-checkpoint.js";
import type { SamplerConfig } from "./samplers.js";

const USAGE = `Usage:
  falcon-native generate --preset DIR [options] [TEXT...]   generate text (or token ids) from a prompt
  falcon-native run [--preset DIR | --save DIR] [options]   run the backbone on random token ids and report
  falcon-native inspect PRESET [--json] [--dtype TYPE]      a preset's configuration, size and the runtime
  falcon-native serve PRESET [options]                      an OpenAI-compatible HTTP server for many users
  falcon-native build [--jobs N]                            compile the native addon from the installed sources
  falcon-native COMMAND --help                              one command's options
  falcon-native --version
`;

type CommandName = "generate" | "run" | "inspect" | "serve" | "build";

const COMMAND_HELP: Record<CommandName, { options: string; examples: string }> = {
  generate: {
    options: `generate:
  TEXT...                   the prompt (the words are joined with spaces); needs a preset with a tokenizer.
                            No TEXT and no --ids, or TEXT "-": the prompt is read from stdin (one trailing
                            newline dropped)
  --preset DIR              keras-hub preset, Hugging Face checkpoint directory, built-in name, hf:// handle
  --ids 1,2,3               a prompt as token ids instead of text (repeat for a batch); prints ids
  --max-new-tokens N        new tokens per prompt (default 40 unless --max-length is given)
  --max-length N            prompt + completion tokens at most (keras-hub's max_length)
  --sampler NAME            greedy | top-k | top-p | temperature | random (default greedy;
                            --k, --p or --temperature alone pick top-k, top-p or temperature)
  --k N                     top-k candidates (default 5; with top-p: also cap the candidates)
  --p X                     top-p probability mass in (0, 1] (default 0.1)
  --temperature X           divide the logits by X before sampling (default 1; 0 = greedy)
  --seed N                  sampler seed: the same seed gives the same text
  --stop-token-ids 11,12    stop a row after any of these (default: the end token; "none": never)
  --strip-prompt            print only the completion
  --stream                  print the completion as it is generated (one prompt)
  --json                    print one JSON object: ids and text of every row, token counts and timings
  --dtype TYPE              ${FALCON_DTYPES.join(" | ")} (default: the preset's)
  --device NAME             auto | cpu | cuda | cuda:N (default auto: a GPU when one is usable)
  --threads N               worker threads (default: all cores, or FALCON_NUM_THREADS)
  --verbose                 timings on stderr
`,
    examples: `  falcon-native generate --preset ./falcon_refinedweb_1b_en "The falcon" --max-new-tokens 40 --stream
  echo "The falcon" | falcon-native generate --preset ./falcon_refinedweb_1b_en --json
  falcon-native generate --preset ./checkpoint --ids 35,92,67 --sampler top-p --p 0.9 --seed 1
`,
  },
  run: {
    options: `run:
  --preset DIR      keras-hub preset directory or built-in name (default: a small random model)
  --save DIR        write a tiny text-generation checkpoint into DIR (new or empty), then run it: a
                    Hugging Face checkpoint with a byte-level BPE tokenizer and a chat template, whose
                    model is a bigram model of a few paragraphs about falcons, for trying generate,
                    inspect and serve without downloading a model
  --dtype TYPE      ${FALCON_DTYPES.join(" | ")} (default float32)
  --device NAME     auto | cpu | cuda | cuda:N (default auto: a GPU when one is usable)
  --batch N         rows (default 2)
  --length N        tokens per row (default 64)
  --seed N          seed for the random model and the token ids (default 0)
  --threads N       worker threads (default: all cores, or FALCON_NUM_THREADS)
`,
    examples: `  falcon-native run --batch 1 --length 128
  falcon-native run --save ./tiny-falcon && falcon-native generate --preset ./tiny-falcon "The falcon"
`,
  },
  inspect: {
    options: `inspect:
  PRESET            a preset directory, built-in name or handle; no model is built, and of the weight
                    files only headers are read: a missing, truncated or mismatched file is an error
  --dtype TYPE      report sizes for this dtype instead of the preset's
  --json            print one JSON object
`,
    examples: `  falcon-native inspect ./falcon_refinedweb_1b_en
`,
  },
  serve: { options: SERVE_HELP, examples: SERVE_EXAMPLES },
  build: { options: BUILD_HELP, examples: BUILD_EXAMPLES },
};

const COMMAND_NAMES = Object.keys(COMMAND_HELP) as CommandName[];

const HELP = `falcon-native — Falcon language models for Node.js

${USAGE}
${COMMAND_NAMES.map((name) => COMMAND_HELP[name].options).join("\n")}
Examples:
${COMMAND_NAMES.map((name) => COMMAND_HELP[name].examples).join("")}`;

function commandHelp(name: CommandName): string {
  const usage = USAGE.split("\n").find((line) => line.startsWith(`  falcon-native ${name} `))!;
  return `Usage:\n${usage}\n\n${COMMAND_HELP[name].options}\nExamples:\n${COMMAND_HELP[name].examples}`;
}

/** A small model that runs in well under a second on two cores. */
const DEFAULT_MODEL: FalconBackboneConfig = {
  vocabularySize: 1024, numLayers: 4, numAttentionHeads: 8, hiddenDim: 256, intermediateDim: 1024,
};

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
      seed: { type: "string" }, threads: { type: "string" }, save: { type: "string" }, device: { type: "string" },
    },
  });
  if (values.save !== undefined && values.preset !== undefined) throw new UsageError("--save writes a new checkpoint and runs it; drop --preset");
  const dtype = dtypeOption(values.dtype);
  const device = deviceOption(values.device);
  const batch = positiveInteger(values.batch, 2, "--batch");
  const length = positiveInteger(values.length, 64, "--length");
  const seed = values.seed === undefined ? 0 : nonNegativeInteger(values.seed, "--seed");
  if (values.threads !== undefined) setNumThreads(positiveInteger(values.threads, 1, "--threads"));

  if (values.save !== undefined) {
    const saved = writeTinyCheckpoint(values.save);
    console.log(`saved      ${saved.directory}: ${saved.files.join(", ")} (tokenizer of ${saved.tokenizerVocabulary} tokens)`);
    console.log(`try        falcon-native generate --preset ${saved.directory} "The falcon"`);
  }
  const presetName = values.save ?? values.preset;
  const loadStart = performance.now();
  const model = presetName
    ? await FalconBackbone.fromPreset(presetName, { dtype, device })
    : new FalconBackbone({ ...DEFAULT_MODEL, dtype, seed }, { device });
  const config = model.getConfig();
  // The ids are made here, before the model's own input checks run: price them with the hidden states the call returns.
  checkBatchFits(batch, length, Int32Array.BYTES_PER_ELEMENT + Float32Array.BYTES_PER_ELEMENT * config.hiddenDim, "run --batch × --length");
  const tokenIds = randomIds(batch * length, config.vocabularySize, seed);
  await model.call({ tokenIds: new Int32Array([0]), shape: [1, 1] });  // waits for initialisation
  const loadMs = performance.now() - loadStart;

  const start = performance.now();
  const hidden = await model.call({ tokenIds, shape: [batch, length] });
  const forwardMs = performance.now() - start;
  const logits = await model.tokenEmbedding.reverse(hidden);
  let checksum = 0;
  for (let i = 0; i < hidden.data.length; i++) checksum += hidden.data[i]! * ((i % 7) + 1);
  const info = model.info();
  console.log(`model      ${presetName ?? "random (embedded default)"}: ${config.numLayers} layers, hidden ${config.hiddenDim}, ` +
    `${config.numAttentionHeads} heads, vocab ${config.vocabularySize}, ${info.parameterCount.toLocaleString("en-US")} parameters, ${info.dtype}`);
  const runtime = runtimeInfo();
  console.log(`backend    ${info.backend === "cpu" ? `cpu (${runtime.isa} kernels), ${runtime.threads} threads` : `${info.backend} on ${info.device}`}`);
  console.log(`input      tokenIds [${batch}, ${length}]`);
  console.log(`output     hidden [${hidden.shape.join(", ")}], logits [${logits.shape.join(", ")}]`);
  console.log(`time       load ${loadMs.toFixed(1)} ms, forward ${forwardMs.toFixed(1)} ms (${((batch * length) / (forwardMs / 1000)).toFixed(1)} tokens/s)`);
  console.log(`checksum   ${checksum.toFixed(6)}`);
  model.dispose();
}


/**
 * The preset's weight files, checked against the config as a load checks them (every tensor present
 * with its shape, sizes within the files) but without reading any tensor bytes.
 */
async function checkWeightFiles(
  preset: Preset,
  config: ResolvedBackboneConfig,
): Promise<{ files: { file: string; bytes: number }[]; conversions?: GgufWeightConversion[] }> {
  const prepared = await preset.prepareWeights(config);
  prepared.dispose();
  const files = prepared.files.map((file) => ({ file, bytes: statSync(path.join(preset.directory, file)).size }));
  return prepared.conversions ? { files, conversions: prepared.conversions } : { files };
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true, options: { json: { type: "boolean" }, dtype: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UsageError("inspect takes one preset directory or name: falcon-native inspect PRESET");
  const preset = await readPreset(positionals[0]!);
  const dtype = dtypeOption(values.dtype);
  const config = resolveBackboneConfig({ ...preset.config, ...(dtype ? { dtype } : {}) });
  const { variant, description } = describeVariant(config);
  const tokenizer = preset.embedded ? (preset.embedded.tokenizer() ? "GGUF vocabulary (tokenizer.ggml.*)" : null) : presetTokenizerFiles(preset.directory);
  const weightFiles = await checkWeightFiles(preset, config);
  const runtime = runtimeInfo();
  const report = {
    preset: preset.location,
    format: preset.format,
    variant,
    description,
    config,
    parameterCount: parameterCount(config),
    dtype: config.dtype,
    storageDtype: storageDType(config.dtype),
    weightBytes: weightBytes(config),
    weightFiles,
    tokenizer,
    backend: runtime.backend,
    cudaKernels: runtime.cudaKernels,
    isa: runtime.isa,
    supportedIsas: runtime.supportedIsas,
    threads: runtime.threads,
  };
  if (values.json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  const c = config;
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1)} MiB`;
  const lines: [string, string][] = [
    ["preset", `${preset.location} (${preset.format === "keras" ? "keras-hub preset" : preset.format === "gguf" ? "GGUF file" : "Hugging Face checkpoint"})`],
    ["variant", description],
    ["layers", `${c.numLayers} × hidden ${c.hiddenDim}, ${c.numAttentionHeads} heads (${c.numKeyValueHeads} key-value), intermediate ${c.intermediateDim}`],
    ["vocabulary", `${c.vocabularySize} rows`],
    ["positions", c.positionEncoding === "alibi" ? "ALiBi" :
      `rotary, theta ${c.ropeTheta}${c.ropeScaling ? `, ${c.ropeScaling.type} scaling ×${c.ropeScaling.factor}` : ""}, max ${c.maxPositionEmbeddings}`],
    ["blocks", `${c.blockLayout.replaceAll("_", " ")}, ${c.useBias ? "with" : "without"} biases, ${c.tieWordEmbeddings ? "tied" : "untied"} head, layer norm ε ${c.layerNormEpsilon}`],
    ["parameters", report.parameterCount.toLocaleString("en-US")],
    ["dtype", `${c.dtype} (weights stored as ${report.storageDtype})`],
    ["weights", `${mib(report.weightBytes)} (${report.weightBytes.toLocaleString("en-US")} bytes)`],
    ["files", `${weightFiles.files.map(({ file, bytes }) => `${file} (${mib(bytes)})`).join(", ")}: every weight present`],
    ...(weightFiles.conversions ?? []).map(({ ggmlType, tensors, read, storedAs }): [string, string] =>
      ["tensors", `${ggmlType} × ${tensors}: ${read}, stored as ${storedAs}`]),
    ["tokenizer", tokenizer ?? "none (generate takes token ids: --ids 1,2,3)"],
    ["runtime", `device auto runs on ${report.backend} (${runtime.cudaKernels ? "this binary has CUDA kernels" : "this binary has no CUDA kernels"}); ` +
      `${runtime.isa} CPU kernels (supported: ${runtime.supportedIsas.join(", ")}), ${runtime.threads} threads`],
  ];
  for (const [key, value] of lines) console.log(`${key.padEnd(11)}${value}`);
}

const SAMPLER_NAMES: Record<string, SamplerConfig["type"]> = {
  greedy: "greedy", "top-k": "topK", "top-p": "topP", temperature: "temperature", random: "random",
  topK: "topK", topP: "topP", top_k: "topK", top_p: "topP",
};

function samplerOption(values: { sampler?: string; k?: string; p?: string; temperature?: string; seed?: string }): SamplerConfig {
  let name = values.sampler;
  if (name === undefined) name = values.p !== undefined ? "top-p" : values.k !== undefined ? "top-k" : values.temperature !== undefined ? "temperature" : "greedy";
  const type = SAMPLER_NAMES[name];
  if (!type) throw new UsageError(`--sampler must be one of greedy, top-k, top-p, temperature, random; got "${name}"`);
  const applies: Record<string, SamplerConfig["type"][]> = {
    "--k": ["topK", "topP"], "--p": ["topP"], "--temperature": ["topK", "topP", "temperature", "random"], "--seed": ["topK", "topP", "temperature", "random"],
  };
  const given: Record<string, string | undefined> = { "--k": values.k, "--p": values.p, "--temperature": values.temperature, "--seed": values.seed };
  for (const [flag, value] of Object.entries(given)) {
    if (value !== undefined && !applies[flag]!.includes(type)) {
      const names = Object.keys(SAMPLER_NAMES).filter((n) => n.includes("-") || !/[A-Z_]/.test(n)).filter((n) => applies[flag]!.includes(SAMPLER_NAMES[n]!));
      throw new UsageError(`${flag} does not apply to --sampler ${name}; use it with --sampler ${names.join(" | ")}`);
    }
  }
  const config: Record<string, unknown> = { type };
  if (values.k !== undefined) config["k"] = positiveInteger(values.k, 1, "--k");
  if (values.p !== undefined) config["p"] = finiteNumber(values.p, "--p");
  if (values.temperature !== undefined) config["temperature"] = finiteNumber(values.temperature, "--temperature");
  if (values.seed !== undefined) config["seed"] = nonNegativeInteger(values.seed, "--seed");
  return config as unknown as SamplerConfig;
}

/** A prompt this long on stdin is a file piped to the wrong command, not text to tokenize. */
const MAX_STDIN_PROMPT_BYTES = 16 * 2 ** 20;

/** The prompt piped in, as UTF-8 text without the newline `echo` adds. */
async function readStdinPrompt(): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > MAX_STDIN_PROMPT_BYTES) {
      process.stdin.destroy();
      throw new UsageError(`the prompt on stdin exceeds ${MAX_STDIN_PROMPT_BYTES / 2 ** 20} MiB`);
    }
    chunks.push(chunk);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new UsageError("the prompt on stdin is not UTF-8 text");
  }
  return text.replace(/\r?\n$/, "");
}

/**
 * Aborted when stdout can no longer be written, above all when its reader has gone (`| head`):
 * generation stops at the next token and the command ends quietly, with status 0 for EPIPE as a
 * pipeline expects.
 */
const stdoutClosed = new AbortController();
let stdoutFailure: NodeJS.ErrnoException | undefined;
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") stdoutFailure ??= error;
  stdoutClosed.abort(error);
});

async function generateCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      preset: { type: "string" }, ids: { type: "string", multiple: true }, "max-new-tokens": { type: "string" },
      "max-length": { type: "string" }, sampler: { type: "string" }, k: { type: "string" }, p: { type: "string" },
      temperature: { type: "string" }, seed: { type: "string" }, "stop-token-ids": { type: "string" },
      "strip-prompt": { type: "boolean" }, stream: { type: "boolean" }, json: { type: "boolean" }, dtype: { type: "string" },
      device: { type: "string" },
      threads: { type: "string" }, verbose: { type: "boolean" },
    },
  });
  if (!values.preset) {
    throw new UsageError('generate needs --preset DIR (a keras-hub preset or Hugging Face checkpoint directory): falcon-native generate --preset DIR "The falcon"');
  }
  const ids = (values.ids ?? []).map((row) => idList(row, "--ids"));
  if (ids.length > 0 && positionals.length > 0) throw new UsageError("give either a text prompt or --ids, not both");
  // No prompt from an interactive terminal is a mistake; piped in, it is the prompt. "-" reads stdin explicitly.
  const fromStdin = (positionals.length === 1 && positionals[0] === "-") || (positionals.length === 0 && ids.length === 0 && !process.stdin.isTTY);
  const text = fromStdin ? await readStdinPrompt() : positionals.join(" ");
  if (ids.length === 0 && text === "") {
    throw new UsageError('give a prompt: falcon-native generate --preset DIR "The falcon", on stdin, or token ids with --ids 1,2,3');
  }
  if (values.stream && ids.length > 1) throw new UsageError("--stream prints one prompt as it is generated; give a single --ids row");
  if (values.stream && values.json) throw new UsageError("--json prints one object once generation ends; drop --stream");
  const options: GenerateOptions = { sampler: samplerOption(values), stripPrompt: values["strip-prompt"] ?? false, signal: stdoutClosed.signal };
  if (values["max-length"] !== undefined) options.maxLength = positiveInteger(values["max-length"], 1, "--max-length");
  if (values["max-new-tokens"] !== undefined) options.maxNewTokens = nonNegativeInteger(values["max-new-tokens"], "--max-new-tokens");
  else if (options.maxLength === undefined) options.maxNewTokens = 40;
  const stop = values["stop-token-ids"];
  if (stop !== undefined) options.stopTokenIds = stop === "none" ? null : idList(stop, "--stop-token-ids");
  const dtype = dtypeOption(values.dtype);
  const device = deviceOption(values.device);
  if (values.threads !== undefined) setNumThreads(positiveInteger(values.threads, 1, "--threads"));

  const loadStart = performance.now();
  const lm = await FalconCausalLM.fromPreset(values.preset, { dtype, device });
  try {
    const loadMs = performance.now() - loadStart;
    if (ids.length === 0 && !lm.tokenizer) {
      throw new UsageError(
        `${values.preset} has no tokenizer (no assets/tokenizer/vocabulary.json, no HF tokenizer.json), so it cannot take text: ` +
          "pass token ids with --ids 1,2,3, or add the tokenizer files to the preset",
      );
    }
    let generated = 0;
    const start = performance.now();
    const onToken = () => void generated++;
    const out = process.stdout;
    if (values.json) {
      // Text goes in as the ids generate() would pack it into (same truncation), so ids and text describe the same rows.
      const prompts = ids.length > 0 ? ids : [promptIds(lm, text, options)];
      const rows = await lm.generate(prompts, { ...options, onToken });
      const generateMs = performance.now() - start;
      const report = {
        ids: rows.map((row) => Array.from(row)),
        text: lm.tokenizer ? rows.map((row) => lm.preprocessor.detokenize(row)) : null,
        generatedTokens: generated,
        timings: { loadMs, generateMs, tokensPerSecond: generated / (generateMs / 1000) },
      };
      out.write(`${JSON.stringify(report)}\n`);
    } else if (values.stream && ids.length === 0) {
      if (!options.stripPrompt) out.write(text);
      for await (const piece of lm.stream(text, { ...options, onToken })) out.write(piece);
      out.write("\n");
    } else if (values.stream) {
      // Ids in, ids out: each id as soon as it is sampled.
      const prompt = ids[0]!;
      let first = true;
      if (!options.stripPrompt) {
        out.write(prompt.join(","));
        first = false;
      }
      await lm.generate(prompt, {
        ...options,
        onToken: (id) => {
          generated++;
          out.write(`${first ? "" : ","}${id}`);
          first = false;
        },
      });
      out.write("\n");
    } else if (ids.length > 0) {
      const rows = await lm.generate(ids, { ...options, onToken });
      for (const row of rows) out.write(`${Array.from(row).join(",")}\n`);
    } else {
      out.write(`${await lm.generate(text, { ...options, onToken })}\n`);
    }
    if (values.verbose) {
      const ms = performance.now() - start;
      const runtime = runtimeInfo();
      process.stderr.write(
        `load ${loadMs.toFixed(1)} ms; generated ${generated} tokens in ${ms.toFixed(1)} ms ` +
          `(${(generated / (ms / 1000)).toFixed(1)} tokens/s); ${lm.backbone.info().device}, ${runtime.isa} kernels, ${runtime.threads} threads\n`,
      );
    }
  } finally {
    lm.dispose();
  }
}

/** The prompt ids generate() uses for `text`: tokenized with the start token, truncated to the packing length. */
function promptIds(lm: FalconCausalLM, text: string, options: GenerateOptions): Int32Array {
  const packed = lm.preprocessor.generatePreprocess(text, { sequenceLength: options.maxLength ?? lm.preprocessor.sequenceLength });
  return packed.tokenIds.slice(0, packed.lengths[0]!);
}

/** package.json's version: the compiled CLI, dist/src/cli.js, sits two levels below it in the repo and in an install. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return manifest.version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  if (command === "--version") {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const commands: Record<CommandName, (args: string[]) => Promise<void>> = { generate: generateCommand, run, inspect, serve: serveCommand, build: buildCommand };
  if (!(COMMAND_NAMES as string[]).includes(command)) {
    process.stderr.write(`falcon-native: unknown command "${command}" (commands: ${COMMAND_NAMES.join(", ")})\n\n${HELP}`);
    return 2;
  }
  const name = command as CommandName;
  // Arguments after "--" are prompt words, never flags.
  const flags = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (flags.includes("--help") || flags.includes("-h")) {
    process.stdout.write(commandHelp(name));
    return 0;
  }
  try {
    await commands[name](rest);
  } catch (error) {
    // Once stdout is gone, the error is generation stopping for it, not a problem to report.
    if (!stdoutClosed.signal.aborted) {
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`falcon-native ${name}: ${message}\nRun "falcon-native ${name} --help" for usage.\n`);
      return error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? 2 : 1;
    }
  }
  if (stdoutFailure) {
    process.stderr.write(`falcon-native ${name}: cannot write to stdout (${stdoutFailure.message})\n`);
    return 1;
  }
  return 0;  // also when the reader of stdout went away (EPIPE): what it read is all it wanted
}

process.exitCode = await main(process.argv.slice(2));
