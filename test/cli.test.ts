/**
 * The falcon-native command line through a child process (help, version, run, inspect and its weight
 * file checks, generate from ids, text and stdin, JSON output, sampler flags, a closed stdout, errors
 * that name the fix), and the config arithmetic inspect relies on.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { cpSync, readFileSync, rmSync, truncateSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import { BUILTIN_PRESETS, FalconBackbone, describeVariant, parameterCount, weightBytes, type FalconBackboneConfig } from "../src/index.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { CYCLE_TEXT, writeCycleCheckpoint } from "./helpers/text-model.js";

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli.js");
const HF = path.join(FIXTURES, "hf");
const KERAS_PRESET = path.join(FIXTURES, "keras", "falcon_h2_d32_l2", "preset");

interface Result { code: number; stdout: string; stderr: string }

const CLI_ENV = { ...process.env, FALCON_NUM_THREADS: "2" };

/** Runs the CLI with `stdin` as its standard input (empty by default: stdin is a pipe, never a terminal, here). */
function cliWithInput(stdin: string | Buffer, ...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 60_000, env: CLI_ENV }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin!.end(stdin);
  });
}

function cli(...args: string[]): Promise<Result> {
  return cliWithInput("", ...args);
}

const VARIANTS: Record<string, string> = {
  rw_alibi_mha_sequential: "falcon-rw",
  f7b_rotary_mqa_parallel: "falcon-7b",
  f40b_newarch_gqa: "falcon-40b-style",
  f11b_newarch_1ln: "falcon2-11b-style",
  rotary_mha_sequential_bias: "custom",
};

interface GenerateRecord { prompt_ids: number[][]; attention_mask: number[][]; max_new_tokens: number; eos_token_id: number; pad_token_id: number; output_ids_f32: number[][] }

describe("parameterCount and weightBytes from the config alone", () => {
  const configs: FalconBackboneConfig[] = [
    { vocabularySize: 101, numLayers: 2, numAttentionHeads: 4, hiddenDim: 32, intermediateDim: 128 },
    { vocabularySize: 97, numLayers: 3, numAttentionHeads: 8, numKeyValueHeads: 2, hiddenDim: 64, intermediateDim: 96, positionEncoding: "rotary", blockLayout: "parallel_two_norms", useBias: false, tieWordEmbeddings: false },
    { vocabularySize: 50, numLayers: 1, numAttentionHeads: 4, numKeyValueHeads: 1, hiddenDim: 32, intermediateDim: 40, positionEncoding: "rotary", blockLayout: "parallel_one_norm", useBias: false, dtype: "bfloat16" },
    { vocabularySize: 64, numLayers: 2, numAttentionHeads: 2, hiddenDim: 16, intermediateDim: 64, dtype: "mixed_float16", tieWordEmbeddings: false },
  ];
  it("equal the native info() of a model built from the config", () => {
    for (const config of configs) {
      const model = new FalconBackbone(config);
      const info = model.info();
      assert.equal(parameterCount(config), info.parameterCount, JSON.stringify(config));
      // The logical size; the native core may hold more (rows padded or repacked for its kernels).
      assert.ok(weightBytes(config) <= info.weightBytes, `${weightBytes(config)} > native ${info.weightBytes}`);
      const matrixBytes = config.dtype === undefined || config.dtype === "float32" ? 4 : 2;
      assert.ok(weightBytes(config) >= parameterCount(config) * matrixBytes && weightBytes(config) <= parameterCount(config) * 4);
      model.dispose();
    }
  });

  it("give falcon-rw-1b's published 1,311,625,216 parameters", () => {
    const rw1b: FalconBackboneConfig = { vocabularySize: 50304, numLayers: 24, numAttentionHeads: 32, hiddenDim: 2048, intermediateDim: 8192 };
    assert.equal(parameterCount(rw1b), BUILTIN_PRESETS["falcon_refinedweb_1b_en"]!.metadata.params);
    assert.equal(describeVariant(rw1b).variant, "falcon-rw");
  });
});

describe("falcon-native CLI", () => {
  const dir = makeTempDir("falcon-cli-test-");
  const textPreset = path.join(dir, "cycle");
  before(() => void writeCycleCheckpoint(textPreset));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("--help lists every command and its flags; COMMAND --help only that command's", async () => {
    const { code, stdout } = await cli("--help");
    assert.equal(code, 0);
    const generateFlags = ["--max-new-tokens", "--sampler", "--stream", "--stop-token-ids", "--json", "stdin"];
    for (const text of ["generate --preset DIR", "run [--preset DIR | --save DIR]", "inspect PRESET", "--version", "COMMAND --help", "--batch", ...generateFlags]) {
      assert.ok(stdout.includes(text), `help mentions ${text}`);
    }
    const [generate, run, inspect, afterTerminator] = await Promise.all([
      cli("generate", "--help"), cli("run", "-h"), cli("inspect", "--help"), cli("generate", "--preset", "x", "--", "--help"),
    ]);
    for (const sub of [generate, run, inspect]) assert.equal(sub.code, 0, sub.stderr);
    assert.match(generate.stdout, /^Usage:\n {2}falcon-native generate --preset DIR/);
    for (const text of generateFlags) assert.ok(generate.stdout.includes(text), `generate --help mentions ${text}`);
    assert.ok(!generate.stdout.includes("--batch") && !generate.stdout.includes("inspect PRESET"), "generate --help is about generate only");
    assert.match(run.stdout, /^Usage:\n {2}falcon-native run .*\n[^]*--save DIR[^]*--batch N[^]*--length N/);
    assert.ok(!run.stdout.includes("--max-new-tokens"));
    assert.match(inspect.stdout, /^Usage:\n {2}falcon-native inspect PRESET[^]*--json/);
    assert.ok(!inspect.stdout.includes("--stream"));
    // After "--", "--help" is a prompt word: the command runs (and fails on the missing preset).
    assert.equal(afterTerminator.code, 1);
    assert.match(afterTerminator.stderr, /not found/);
  });

  it("--version prints package.json's version", async () => {
    const manifest = JSON.parse(readFileSync(path.resolve(path.dirname(CLI), "..", "..", "package.json"), "utf8")) as { version: string };
    const { code, stdout } = await cli("--version");
    assert.equal(code, 0);
    assert.equal(stdout, `${manifest.version}\n`);
    assert.match(manifest.version, /^\d+\.\d+\.\d+/);
  });

  it("run: a small random model, shapes, time and checksum", async () => {
    const { code, stdout, stderr } = await cli("run", "--batch", "1", "--length", "8");
    assert.equal(code, 0, stderr);
    assert.match(stdout, /output\s+hidden \[1, 8, 256\], logits \[1, 8, 1024\]/);
    assert.match(stdout, /checksum\s+-?\d+\.\d+/);
  });

  it("inspect: config, variant, parameter count, dtype, bytes, tokenizer and runtime, without loading weights", async () => {
    const json = await cli("inspect", KERAS_PRESET, "--json");
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout);
    const native = await FalconBackbone.fromPreset(KERAS_PRESET, { loadWeights: false });
    assert.equal(report.parameterCount, native.info().parameterCount);
    assert.equal(report.weightBytes, report.parameterCount * 4, "float32: 4 bytes a parameter");
    assert.deepEqual(report.config, native.getConfig());
    native.dispose();
    assert.equal(report.format, "keras");
    assert.equal(report.variant, "falcon-rw");
    assert.equal(report.tokenizer, null);
    assert.deepEqual(report.weightFiles, {
      files: [{ file: "model.weights.h5", bytes: statSync(path.join(KERAS_PRESET, "model.weights.h5")).size }],
    });
    assert.ok(["scalar", "avx2", "avx512"].includes(report.isa));
    assert.equal(report.threads, 2);
    assert.equal(report.backend, "cpu");
    const bf16 = JSON.parse((await cli("inspect", KERAS_PRESET, "--json", "--dtype", "bfloat16")).stdout);
    assert.equal(bf16.storageDtype, "bfloat16");
    assert.ok(bf16.weightBytes < report.weightBytes);

    const text = await cli("inspect", textPreset);
    assert.equal(text.code, 0, text.stderr);
    for (const line of [/^variant\s+falcon-rw/m, /^parameters\s+3,228,064$/m, /^files\s+model\.safetensors \(12\.3 MiB\): every weight present$/m, /^dtype\s+float32/m, /^weights\s+.*MiB/m, /^tokenizer\s+HF tokenizer.json/m, /^runtime\s+cpu backend, \w+ kernels/m]) {
      assert.match(text.stdout, line);
    }
    const reports = await Promise.all(Object.keys(VARIANTS).map((name) => cli("inspect", path.join(HF, name, "checkpoint"), "--json")));
    Object.entries(VARIANTS).forEach(([name, variant], i) => assert.equal(JSON.parse(reports[i]!.stdout).variant, variant, name));
  });

  it("inspect: a missing, truncated or mismatched weight file is an error naming it, with status 1", async () => {
    const copy = (from: string, name: string) => {
      const to = path.join(dir, name);
      cpSync(from, to, { recursive: true });
      return to;
    };
    const hfSource = path.join(HF, "rw_alibi_mha_sequential", "checkpoint");
    const noWeights = copy(hfSource, "hf-no-weights");
    unlinkSync(path.join(noWeights, "model.safetensors"));
    const truncated = copy(hfSource, "hf-truncated");
    const safetensors = path.join(truncated, "model.safetensors");
    truncateSync(safetensors, statSync(safetensors).size - 4);
    const missingShard = copy(hfSource, "hf-missing-shard");
    unlinkSync(path.join(missingShard, "model.safetensors"));
    writeFileSync(path.join(missingShard, "model.safetensors.index.json"), JSON.stringify({
      weight_map: { "transformer.word_embeddings.weight": "model-00001-of-00002.safetensors" },
    }));
    // config.json promises a layer more than the file holds: every header is sound, the sizes do not add up.
    const moreLayers = copy(hfSource, "hf-more-layers");
    const config = JSON.parse(readFileSync(path.join(moreLayers, "config.json"), "utf8"));
    writeFileSync(path.join(moreLayers, "config.json"), JSON.stringify({ ...config, num_hidden_layers: config.num_hidden_layers + 1 }));
    const kerasNoWeights = copy(KERAS_PRESET, "keras-no-weights");
    unlinkSync(path.join(kerasNoWeights, "model.weights.h5"));
    const kerasTruncated = copy(KERAS_PRESET, "keras-truncated");
    const h5 = path.join(kerasTruncated, "model.weights.h5");
    truncateSync(h5, statSync(h5).size - 1000);

    const cases: [string, RegExp][] = [
      [noWeights, /no model\.safetensors or model\.safetensors\.index\.json/],
      [truncated, /model\.safetensors: tensor ".*": data_offsets .* fall outside .*truncated/],
      [missingShard, /model-00001-of-00002\.safetensors: cannot open \(ENOENT\)/],
      [moreLayers, /config\.json: num_hidden_layers = \d+, but .*model\.safetensors holds \d+ layers/],
      [kerasNoWeights, /no model\.weights\.h5/],
      [kerasTruncated, /model\.weights\.h5: truncated: the HDF5 superblock says \d+ bytes but the file has \d+/],
    ];
    const results = await Promise.all(cases.map(([preset]) => cli("inspect", preset, "--json")));
    for (const [i, [preset, message]] of cases.entries()) {
      const result = results[i]!;
      assert.equal(result.code, 1, `${preset}: ${result.stdout}`);
      assert.equal(result.stdout, "", "no report for a broken preset");
      assert.match(result.stderr, message, preset);
    }
  });

  it("generate --ids on every HF fixture: greedy ids equal the fixture's generate record", async () => {
    for (const name of Object.keys(VARIANTS)) {
      const [record] = readJson<{ generate: GenerateRecord[] }>(path.join(HF, name, "manifest.json")).generate;
      const prompts = record!.prompt_ids.map((row, b) => row.filter((_, c) => record!.attention_mask[b]![c] === 1));
      const args = prompts.flatMap((row) => ["--ids", row.join(",")]);
      const { code, stdout, stderr } = await cli("generate", "--preset", path.join(HF, name, "checkpoint"), ...args, "--max-new-tokens", String(record!.max_new_tokens));
      assert.equal(code, 0, stderr);
      const expected = record!.output_ids_f32.map((row, b) => {
        const real = row.slice(record!.attention_mask[b]!.filter((flag) => flag === 0).length);
        const eos = real.indexOf(record!.eos_token_id, prompts[b]!.length);
        return (eos >= 0 ? real.slice(0, eos + 1) : real).join(",");
      });
      assert.deepEqual(stdout.trimEnd().split("\n"), expected, name);
    }
  });

  it("generate text, streamed or not, with sampler flags and a seed", async () => {
    const plain = await cli("generate", "--preset", textPreset, "The", "falcon", "--max-new-tokens", "8");
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, `The falcon${CYCLE_TEXT}\n`);
    const streamed = await cli("generate", "--preset", textPreset, "The falcon", "--max-new-tokens", "8", "--stream", "--verbose");
    assert.equal(streamed.stdout, `The falcon${CYCLE_TEXT}\n`);
    assert.match(streamed.stderr, /generated 8 tokens in/);
    const stripped = await cli("generate", "--preset", textPreset, "The falcon", "--max-new-tokens", "3", "--strip-prompt", "--sampler", "top-k", "--k", "3", "--seed", "1");
    assert.equal(stripped.stdout, "🦅\n");
    const checkpoint = path.join(HF, "f40b_newarch_gqa", "checkpoint");
    const sampled = ["generate", "--preset", checkpoint, "--ids", "1,2,3", "--max-new-tokens", "20", "--stop-token-ids", "none", "--p", "0.95", "--temperature", "5", "--seed", "7"];
    const [first, second, other] = await Promise.all([cli(...sampled), cli(...sampled), cli(...sampled.slice(0, -1), "8")]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, second.stdout, "same seed, same ids");
    assert.notEqual(first.stdout, other.stdout, "another seed");
    assert.equal(first.stdout.trim().split(",").length, 23);
    const streamIds = await cli("generate", "--preset", checkpoint, "--ids", "90,58,61,90,90", "--max-new-tokens", "8", "--stream");
    assert.equal(streamIds.stdout, "90,58,61,90,90,72,5,65,9,16,13,77,46\n");
  });

  it("generate reads the prompt from stdin when none is given, or when it is -", async () => {
    const expected = `The falcon${CYCLE_TEXT}\n`;
    const [piped, dash, windows] = await Promise.all([
      cliWithInput("The falcon\n", "generate", "--preset", textPreset, "--max-new-tokens", "8"),
      cliWithInput("The falcon", "generate", "--preset", textPreset, "-", "--max-new-tokens", "8", "--stream"),
      cliWithInput("The falcon\r\n", "generate", "--preset", textPreset, "--max-new-tokens", "8"),
    ]);
    for (const result of [piped, dash, windows]) {
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, expected);
    }
    const multiline = await cliWithInput("line one\nThe falcon\n\n", "generate", "--preset", textPreset, "--max-new-tokens", "8");
    assert.equal(multiline.stdout, `line one\nThe falcon\n${CYCLE_TEXT}\n`, "only the last newline is dropped");
    const [notUtf8, empty, dashWithIds] = await Promise.all([
      cliWithInput(Buffer.from([0x54, 0xff, 0x0a]), "generate", "--preset", textPreset),
      cliWithInput("\n", "generate", "--preset", textPreset),
      cliWithInput("The falcon", "generate", "--preset", textPreset, "--ids", "1", "-"),
    ]);
    assert.deepEqual([notUtf8.code, empty.code, dashWithIds.code], [2, 2, 2]);
    assert.match(notUtf8.stderr, /the prompt on stdin is not UTF-8 text/);
    assert.match(empty.stderr, /give a prompt: .*on stdin/);
    assert.match(dashWithIds.stderr, /give either a text prompt or --ids, not both/);
  });

  it("generate --json: one object with the rows' ids and text, token counts and timings", async () => {
    const [text, plain] = await Promise.all([
      cli("generate", "--preset", textPreset, "The falcon", "--max-new-tokens", "8", "--json"),
      cli("generate", "--preset", textPreset, "The falcon", "--max-new-tokens", "8"),
    ]);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(text.stdout.trimEnd().split("\n").length, 1, "one line");
    const report = JSON.parse(text.stdout);
    assert.deepEqual(Object.keys(report).sort(), ["generatedTokens", "ids", "text", "timings"]);
    assert.deepEqual(report.text, [plain.stdout.trimEnd()]);
    const { tokenizer, cycle } = writeCycleCheckpoint(path.join(dir, "cycle-json"));
    assert.deepEqual(report.ids, [[...tokenizer.encode("The falcon"), ...cycle]]);
    assert.equal(report.generatedTokens, 8);
    for (const key of ["loadMs", "generateMs", "tokensPerSecond"]) assert.ok(report.timings[key] > 0, key);

    const checkpoint = path.join(HF, "f40b_newarch_gqa", "checkpoint");
    const idArgs = ["generate", "--preset", checkpoint, "--ids", "90,58,61,90,90", "--ids", "1,2", "--max-new-tokens", "8", "--stop-token-ids", "none"];
    const [ids, idsPlain, stripped] = await Promise.all([cli(...idArgs, "--json"), cli(...idArgs), cli(...idArgs, "--strip-prompt", "--json")]);
    assert.equal(ids.code, 0, ids.stderr);
    const idsReport = JSON.parse(ids.stdout);
    assert.deepEqual(idsReport.ids.map((row: number[]) => row.join(",")), idsPlain.stdout.trimEnd().split("\n"));
    assert.equal(idsReport.text, null, "no tokenizer, no text");
    assert.equal(idsReport.generatedTokens, 16);
    assert.deepEqual(JSON.parse(stripped.stdout).ids, idsReport.ids.map((row: number[], b: number) => row.slice(b === 0 ? 5 : 2)));
  });

  it("a reader that closes stdout early (| head -c 10) ends generation quietly with status 0", { timeout: 30_000 }, async () => {
    // Far more tokens than the timeout allows: only stopping at the closed pipe lets the test pass.
    // --json writes once, at the end: its stdout is closed before it starts.
    for (const args of [["The falcon", "--stream"], ["--ids", "1,2", "--stream"], ["--ids", "1,2", "--max-new-tokens", "8", "--json"]]) {
      const child = spawn(process.execPath, [CLI, "generate", "--preset", textPreset, "--max-new-tokens", "50000", "--stop-token-ids", "none", ...args], {
        env: CLI_ENV, stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => void (stderr += chunk.toString()));
      if (args.includes("--json")) child.stdout.destroy();
      else child.stdout.once("data", () => child.stdout.destroy());
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("exit", (c, s) => resolve([c, s])));
      assert.deepEqual({ code, signal, stderr }, { code: 0, signal: null, stderr: "" }, args.join(" "));
    }
  });

  it("errors name the fix", async () => {
    const fixture = path.join(HF, "rw_alibi_mha_sequential", "checkpoint");
    const cases: [string[], number, RegExp][] = [
      [["generate", "--preset", fixture, "The falcon"], 2, /has no tokenizer.*pass token ids with --ids 1,2,3/],
      [["generate", "The falcon"], 2, /generate needs --preset DIR/],
      [["generate", "--preset", fixture], 2, /give a prompt: .*--ids 1,2,3/],
      [["generate", "--preset", fixture, "--ids", "1,x"], 2, /--ids must be a non-negative integer, got "x"/],
      [["run", "--batch", "1e300"], 1, /run --batch × --length: a \[1e\+300, 64\] batch needs .* bytes, more than the \d+ bytes of memory/],
      [["generate", "--preset", fixture, "--ids", "1", "--sampler", "beam"], 2, /--sampler must be one of greedy, top-k, top-p, temperature, random/],
      [["generate", "--preset", fixture, "--ids", "1", "--sampler", "greedy", "--k", "3"], 2, /--k does not apply to --sampler greedy; use it with --sampler top-k \| top-p/],
      [["generate", "--preset", fixture, "--ids", "1", "--p", "2"], 1, /p must be a number in \(0, 1\]/],
      [["generate", "--preset", fixture, "--ids", "1,500"], 1, /token 1 = 500 is out of range \[0, 101\)/],
      [["generate", "--preset", path.join(dir, "missing"), "--ids", "1"], 1, /not found: it is neither a directory nor a built-in preset name/],
      [["generate", "--preset", fixture, "--ids", "1", "--frobnicate"], 2, /Unknown option '--frobnicate'/],
      [["inspect"], 2, /inspect takes one preset directory or name/],
      [["fly"], 2, /unknown command "fly" \(commands: generate, run, inspect, serve, build\)/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(...args)));
    for (const [i, [args, code, message]] of cases.entries()) {
      const result = results[i]!;
      assert.equal(result.code, code, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(" "));
      if (args[0] !== "fly") assert.match(result.stderr, new RegExp(`Run "falcon-native ${args[0]} --help" for usage`));
    }
  });
});
