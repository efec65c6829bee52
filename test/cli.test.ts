/**
 * The falcon-native command line through a child process (help, run, inspect, generate from ids and
 * text, sampler flags, errors that name the fix), and the config arithmetic inspect relies on.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
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

function cli(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 60_000, env: { ...process.env, FALCON_NUM_THREADS: "2" } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
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

  it("--help lists every command and its flags", async () => {
    const { code, stdout } = await cli("--help");
    assert.equal(code, 0);
    for (const text of ["generate --preset DIR", "run [--preset DIR]", "inspect PRESET", "--max-new-tokens", "--sampler", "--stream", "--stop-token-ids"]) {
      assert.ok(stdout.includes(text), `help mentions ${text}`);
    }
    const sub = await cli("generate", "--help");
    assert.equal(sub.code, 0);
    assert.equal(sub.stdout, stdout);
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
    assert.ok(["scalar", "avx2", "avx512"].includes(report.isa));
    assert.equal(report.threads, 2);
    assert.equal(report.backend, "cpu");
    const bf16 = JSON.parse((await cli("inspect", KERAS_PRESET, "--json", "--dtype", "bfloat16")).stdout);
    assert.equal(bf16.storageDtype, "bfloat16");
    assert.ok(bf16.weightBytes < report.weightBytes);

    const text = await cli("inspect", textPreset);
    assert.equal(text.code, 0, text.stderr);
    for (const line of [/^variant\s+falcon-rw/m, /^parameters\s+3,228,064$/m, /^dtype\s+float32/m, /^weights\s+.*MiB/m, /^tokenizer\s+HF tokenizer.json/m, /^runtime\s+cpu backend, \w+ kernels/m]) {
      assert.match(text.stdout, line);
    }
    const reports = await Promise.all(Object.keys(VARIANTS).map((name) => cli("inspect", path.join(HF, name, "checkpoint"), "--json")));
    Object.entries(VARIANTS).forEach(([name, variant], i) => assert.equal(JSON.parse(reports[i]!.stdout).variant, variant, name));
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

  it("errors name the fix", async () => {
    const fixture = path.join(HF, "rw_alibi_mha_sequential", "checkpoint");
    const cases: [string[], number, RegExp][] = [
      [["generate", "--preset", fixture, "The falcon"], 2, /has no tokenizer.*pass token ids with --ids 1,2,3/],
      [["generate", "The falcon"], 2, /generate needs --preset DIR/],
      [["generate", "--preset", fixture], 2, /give a prompt: .*--ids 1,2,3/],
      [["generate", "--preset", fixture, "--ids", "1,x"], 2, /--ids must be a non-negative integer, got "x"/],
      [["generate", "--preset", fixture, "--ids", "1", "--sampler", "beam"], 2, /--sampler must be one of greedy, top-k, top-p, temperature, random/],
      [["generate", "--preset", fixture, "--ids", "1", "--sampler", "greedy", "--k", "3"], 2, /--k does not apply to --sampler greedy; use it with --sampler top-k \| top-p/],
      [["generate", "--preset", fixture, "--ids", "1", "--p", "2"], 1, /p must be a number in \(0, 1\]/],
      [["generate", "--preset", fixture, "--ids", "1,500"], 1, /token 1 = 500 is out of range \[0, 101\)/],
      [["generate", "--preset", path.join(dir, "missing"), "--ids", "1"], 1, /not found: it is neither a directory nor a built-in preset name/],
      [["generate", "--preset", fixture, "--ids", "1", "--frobnicate"], 2, /Unknown option '--frobnicate'/],
      [["inspect"], 2, /inspect takes one preset directory or name/],
      [["fly"], 2, /unknown command "fly" \(commands: generate, run, inspect\)/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(...args)));
    for (const [i, [args, code, message]] of cases.entries()) {
      const result = results[i]!;
      assert.equal(result.code, code, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(" "));
      if (args[0] !== "fly") assert.match(result.stderr, /Run "falcon-native --help" for usage/);
    }
  });
});
