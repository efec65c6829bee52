/**
 * README.md's ```ts snippets, run as written (paths pointed at fixture copies, the hub at a local cache)
 * and checked for values: the keras preset example against a float64 reference forward pass (itself
 * checked against the fixture's sequence_output), the tiny model's logits against hidden · Eᵀ computed
 * here, incremental decoding against the full forward pass, the HF example against the HF fixture's
 * references, and the text example against a model whose continuation is fixed by construction.
 */
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import ts from "typescript";

import * as falcon from "../src/index.js";
import { FalconBackbone, type Completion, type CompletionLogprob, type EngineStats, type Tensor } from "../src/index.js";
import { FIXTURES, compareRows, readJson, type Tolerance } from "./helpers/fixtures.js";
import { writeGgufModel } from "./helpers/gguf-model.js";
import { readReferenceBin } from "./helpers/greedy-reference.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";
import { readNpy } from "./helpers/npy.js";
import { referenceForward, referenceLogits, referenceModel, type ReferenceModel } from "./helpers/reference-forward.js";
import { CYCLE_TEXT, writeCycleCheckpoint } from "./helpers/text-model.js";
import { writeTinyCheckpoint } from "../src/tiny-checkpoint.js";

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "README.md");
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli.js");
const KERAS_CASE = path.join(FIXTURES, "keras", "falcon_h4_d64_l2");
const HF = path.join(FIXTURES, "hf");

/** The README's ```ts blocks, in order. */
function tsSnippets(): string[] {
  return [...readFileSync(README, "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1]!);
}

/**
 * Runs a snippet as the body of an async function: `import { … } from "falcon-native"` reads this
 * checkout's src, string literals in `paths` are replaced, `given` supplies names the snippet uses but
 * does not define (the snippet's own declarations shadow them), and the values named in `results`
 * come back.
 */
async function runSnippet(
  snippet: string, dir: string, options: { paths?: Record<string, string>; given?: Record<string, unknown>; results: string[] },
): Promise<Record<string, unknown>> {
  let body = snippet;
  for (const [from, to] of Object.entries(options.paths ?? {})) {
    assert.ok(body.includes(JSON.stringify(from)), `the snippet mentions ${from}`);
    body = body.replaceAll(JSON.stringify(from), JSON.stringify(to));
  }
  body = body.replace(/^import \{([^}]*)\} from "falcon-native";$/gm, "const {$1} = falcon;");
  // Default imports of other packages come from `given` (e.g. the openai client).
  body = body.replace(/^import (\w+) from "[^"]+";$/gm, (line, name: string) => {
    assert.ok(options.given && name in options.given, `${line}: give ${name}`);
    return "";
  });
  assert.ok(!/^import /m.test(body), "every import is from falcon-native or given");
  const given = Object.keys(options.given ?? {});
  const source = `export default async function (falcon: any, given: any) {
  const { ${given.join(", ")} } = given;
  {
${body}
    return { ${options.results.join(", ")} };
  }
}`;
  const { outputText, diagnostics } = ts.transpileModule(source, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    reportDiagnostics: true,
  });
  assert.deepEqual(diagnostics?.map((diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")), []);
  const file = path.join(dir, `snippet-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, outputText);
  const module = (await import(pathToFileURL(file).href)) as { default: (f: unknown, g: unknown) => Promise<Record<string, unknown>> };
  return module.default(falcon, options.given ?? {});
}

/** max |actual − expected| / max(1, max |expected|) over rows where valid(row): the HF manifests' metric. */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, width: number, valid: (row: number) => boolean): number {
  assert.equal(actual.length, expected.length);
  let worst = 0;
  let scale = 1;
  for (let i = 0; i < expected.length; i++) {
    if (!valid(Math.floor(i / width))) continue;
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return worst / scale;
}

describe("README ts snippets", () => {
  const dir = makeTempDir("falcon-readme-test-");
  const snippets = tsSnippets();
  const find = (marker: string) => {
    const found = snippets.filter((snippet) => snippet.includes(marker));
    assert.equal(found.length, 1, `one README snippet contains ${marker}`);
    return found[0]!;
  };
  const kerasTolerance = readJson<{ tolerance_hint: { sequence_output: Tolerance; lm_logits: Tolerance } }>(path.join(KERAS_CASE, "manifest.json")).tolerance_hint;
  let kerasReference: ReferenceModel;
  before(async () => {
    await using backbone = await FalconBackbone.fromPreset(path.join(KERAS_CASE, "preset"));
    kerasReference = await referenceModel(backbone);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("has exactly the five snippets this file runs", () => {
    assert.equal(snippets.length, 5);
    for (const marker of ["const tiny = new FalconBackbone(", "FalconCausalLM.fromPreset(\"./falcon-7b\")", "lm.stream(\"The falcon\"", "lm.engine({", "createServer(lm"]) find(marker);
  });

  it("every snippet type-checks as a strict TypeScript module against the package's own types: no undefined names", () => {
    // Inside the repository, so "falcon-native" resolves to this package by its own name (exports → dist's
    // declarations) and "openai" to the dev dependency, as in a reader's project.
    const root = path.dirname(README);
    const files = new Map(snippets.map((snippet, index) => [path.join(root, "test", `readme-snippet-${index}.ts`), snippet]));
    const options: ts.CompilerOptions = {
      strict: true, noEmit: true, skipLibCheck: true, types: ["node"],
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    };
    const host = ts.createCompilerHost(options);
    const { fileExists, readFile, getSourceFile } = host;
    host.fileExists = (file) => files.has(file) || fileExists.call(host, file);
    host.readFile = (file) => files.get(file) ?? readFile.call(host, file);
    host.getSourceFile = (file, language, ...rest) => {
      const text = files.get(file);
      return text === undefined ? getSourceFile.call(host, file, language, ...rest) : ts.createSourceFile(file, text, language);
    };
    const program = ts.createProgram([...files.keys()], options, host);
    const problems = ts.getPreEmitDiagnostics(program).filter((diagnostic) => diagnostic.file && files.has(diagnostic.file.fileName)).map((diagnostic) => {
      const { line } = diagnostic.file!.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
      return `${path.basename(diagnostic.file!.fileName)}:${line + 1}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")}`;
    });
    assert.deepEqual(problems, []);
  });

  it("the reference forward pass reproduces the keras fixture's sequence_output and lm_logits on every run", () => {
    const manifest = readJson<{ backbone_runs: { name: string; token_ids: string; padding_mask: string; sequence_output: string; lm_logits: string }[] }>(
      path.join(KERAS_CASE, "manifest.json"));
    for (const run of manifest.backbone_runs) {
      const rows = (file: string) => {
        const array = readNpy(path.join(KERAS_CASE, file));
        const [B, L] = array.shape as [number, number];
        return Array.from({ length: B }, (_, b) => Array.from(array.data.subarray(b * L, (b + 1) * L)));
      };
      const mask = rows(run.padding_mask);
      const valid = (row: number) => mask.flat()[row] === 1;
      const hidden = referenceForward(kerasReference, rows(run.token_ids), mask);
      assert.equal(compareRows(hidden, readNpy(path.join(KERAS_CASE, run.sequence_output)).data, kerasReference.hiddenDim, kerasTolerance.sequence_output, valid), undefined, run.name);
      assert.equal(compareRows(referenceLogits(kerasReference, hidden), readNpy(path.join(KERAS_CASE, run.lm_logits)).data, kerasReference.vocabularySize,
        kerasTolerance.lm_logits, valid), undefined, run.name);
    }
  });

  it("API: the preset's output, the tiny model's logits and incremental decoding, against references", async () => {
    const presetDir = path.join(dir, "falcon_refinedweb_1b_en");
    cpSync(path.join(KERAS_CASE, "preset"), presetDir, { recursive: true });
    const { out, tiny, logits, next } = await runSnippet(find("const tiny = new FalconBackbone("), dir, {
      paths: { "./falcon_refinedweb_1b_en": presetDir },
      results: ["out", "tiny", "logits", "next"],
    }) as { out: Tensor; tiny: FalconBackbone; logits: Tensor; next: Tensor };
    const D = kerasReference.hiddenDim;

    // model.call({ tokenIds: [[5, 9, 2, 0]], paddingMask: [[1, 1, 1, 0]] }): three real positions.
    assert.deepEqual(out.shape, [1, 4, D]);
    assert.ok(out.data instanceof Float32Array);
    const expected = referenceForward(kerasReference, [[5, 9, 2, 0]], [[1, 1, 1, 0]]);
    assert.equal(compareRows(out.data, expected, D, kerasTolerance.sequence_output, (row) => row < 3), undefined);

    // Incremental decoding: [5, 9, 2] into slots 0..2, then 17 at slot 3, is the full pass over [5, 9, 2, 17] at position 3.
    assert.deepEqual(next.shape, [1, 1, D]);
    const full = referenceForward(kerasReference, [[5, 9, 2, 17]], null);
    assert.equal(compareRows(next.data, full.subarray(3 * D, 4 * D), D, kerasTolerance.sequence_output), undefined);

    // The tiny random model: its logits are hidden · Eᵀ, with E read back from the model, and its hidden
    // states are the reference forward pass over its own weights.
    try {
      assert.deepEqual(logits.shape, [1, 3, 10]);
      const tinyReference = await referenceModel(tiny);
      const hidden = await tiny.call({ tokenIds: [[1, 2, 3]] });
      const tight = { atol: 1e-5, rtol: 1e-5 };
      assert.equal(compareRows(logits.data, referenceLogits(tinyReference, hidden.data), 10, tight), undefined, "logits = hidden · Eᵀ");
      assert.equal(compareRows(hidden.data, referenceForward(tinyReference, [[1, 2, 3]], null), 32, tight), undefined, "hidden states");
      const spread = Math.max(...logits.data) - Math.min(...logits.data);
      assert.ok(spread > 1e-3, `the random model's logits are not all equal (spread ${spread})`);
    } finally {
      tiny.dispose();
    }
  });

  it("Hugging Face: logits against the HF fixture, an hf:// handle from the cache, saved as a keras preset", async () => {
    const caseDir = path.join(HF, "f7b_rotary_mqa_parallel");
    cpSync(path.join(caseDir, "checkpoint"), path.join(dir, "falcon-7b"), { recursive: true });
    // hf://tiiuae/falcon-rw-1b resolves in a hub cache holding the falcon-rw fixture; nothing is downloaded.
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const repoDir = path.join(dir, "hub", "models--tiiuae--falcon-rw-1b");
    mkdirSync(path.join(repoDir, "refs"), { recursive: true });
    writeFileSync(path.join(repoDir, "refs", "main"), commit);
    cpSync(path.join(HF, "rw_alibi_mha_sequential", "checkpoint"), path.join(repoDir, "snapshots", commit), { recursive: true });
    const environment = { HF_HUB_CACHE: process.env["HF_HUB_CACHE"], HF_HUB_OFFLINE: process.env["HF_HUB_OFFLINE"] };
    process.env["HF_HUB_CACHE"] = path.join(dir, "hub");
    process.env["HF_HUB_OFFLINE"] = "1";

    interface Run { name: string; input_ids: number[][]; attention_mask: number[][] | null; position_ids: unknown; outputs: { logits: Record<string, { file: string }>; last_hidden_state?: Record<string, { file: string }> } }
    type Manifest = { runs: Run[]; tolerance_hint: { f32: { rel: number } } };
    const f7b = readJson<Manifest>(path.join(caseDir, "manifest.json"));
    // The README's tokenIds and paddingMask are this fixture run's.
    const run = f7b.runs.find((candidate) => candidate.name === "b1_s7")!;
    let results: { data: Float32Array; shape: number[]; lm: falcon.FalconCausalLM; bb: FalconBackbone };
    try {
      results = await runSnippet(find("FalconCausalLM.fromPreset(\"./falcon-7b\")"), dir, {
        paths: { "./falcon-7b": path.join(dir, "falcon-7b"), "./falcon-rw-1b-keras": path.join(dir, "falcon-rw-1b-keras") },
        results: ["data", "shape", "lm", "bb"],
      }) as typeof results;
    } finally {
      for (const [name, value] of Object.entries(environment)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    const { data, shape, lm, bb } = results;
    try {
      const valid = (row: number) => run.attention_mask![0]![row] === 1;
      assert.deepEqual(shape, [1, 7, 101]);
      const error = relativeError(data, readReferenceBin(path.join(caseDir, run.outputs.logits["f32"]!.file), "float32"), 101, valid);
      assert.ok(error <= f7b.tolerance_hint.f32.rel, `logits: error ${error}`);

      // The backbone from the hub and the keras preset it saved both give the fixture's last_hidden_state.
      const rw = readJson<Manifest>(path.join(HF, "rw_alibi_mha_sequential", "manifest.json"));
      const rwRun = rw.runs.find((candidate) => candidate.name === "b3_s11_rightpad")!;
      const expected = readReferenceBin(path.join(HF, "rw_alibi_mha_sequential", rwRun.outputs.last_hidden_state!["f32"]!.file), "float32");
      const rwValid = (row: number) => rwRun.attention_mask![Math.floor(row / 11)]![row % 11] === 1;
      await using saved = await FalconBackbone.fromPreset(path.join(dir, "falcon-rw-1b-keras"));
      for (const [label, backbone] of [["hf://", bb], ["saved keras preset", saved]] as const) {
        const hidden = await backbone.call({ tokenIds: rwRun.input_ids, paddingMask: rwRun.attention_mask! });
        const hiddenError = relativeError(hidden.data, expected, backbone.getConfig().hiddenDim, rwValid);
        assert.ok(hiddenError <= rw.tolerance_hint.f32.rel, `${label}: last_hidden_state error ${hiddenError}`);
      }
    } finally {
      lm.dispose();
      bb.dispose();
    }
  });

  it("text in, text out: every output is the continuation the model is built to produce", async () => {
    const { cycle } = writeCycleCheckpoint(path.join(dir, "cycle"));
    const written: string[] = [];
    // The snippet writes to process.stdout, captured here.
    const { text, texts, ids } = await runSnippet(find("lm.stream(\"The falcon\""), dir, {
      paths: { "./tiny-falcon": path.join(dir, "cycle") },
      given: { process: { stdout: { write: (piece: string) => written.push(piece) } } },
      results: ["text", "texts", "ids"],
    }) as { text: string; texts: string[]; ids: Int32Array[] };
    // 40 new tokens are five turns of the 8-token cycle.
    assert.equal(text, `The falcon${CYCLE_TEXT.repeat(5)}`);
    assert.deepEqual(texts, [CYCLE_TEXT.repeat(5), CYCLE_TEXT.repeat(5)]);
    // Streamed without maxNewTokens: up to sequenceLength (1024) tokens of prompt and cycle; top-p 0.9 keeps only the
    // cycle's next token (its logit leads by tens), so the text is the cycle, whole characters at a time.
    const streamed = written.join("");
    assert.ok(streamed.length > 0 && CYCLE_TEXT.repeat(Math.ceil(streamed.length / CYCLE_TEXT.length) + 1).startsWith(streamed.replace(/\uFFFD$/, "")),
      `streamed ${JSON.stringify(streamed.slice(0, 40))}…`);
    assert.ok(written.every((piece) => !piece.includes("\uFFFD") || piece === written[written.length - 1]));
    assert.deepEqual(ids.map((row) => Array.from(row)), [[35, 92, 67, ...cycle], [30, 65, ...cycle]]);
  });

  it("the engine: concurrent requests, complete() with logprobs, a stream and stats, on the cycle model", async () => {
    const { cycle } = writeCycleCheckpoint(path.join(dir, "engine-cycle"));
    const written: string[] = [];
    const { story, sampled, finishReason, usage, logprobs, stats } = await runSnippet(find("lm.engine({"), dir, {
      paths: { "./tiny-falcon": path.join(dir, "engine-cycle") },
      given: { process: { stdout: { write: (piece: string) => written.push(piece) } } },
      results: ["story", "sampled", "finishReason", "usage", "logprobs", "stats"],
    }) as { story: string; sampled: string; finishReason: string; usage: Completion["usage"]; logprobs: CompletionLogprob[]; stats: EngineStats };
    // 32 new tokens are four turns of the 8-token cycle; top-k keeps the cycle's next token (its logit leads by tens).
    assert.equal(story, CYCLE_TEXT.repeat(4));
    assert.equal(sampled, `The falcon${CYCLE_TEXT.repeat(4)}`);
    assert.equal(finishReason, "length");
    // An HF checkpoint's prompt gets no start token: its tokens are the tokenizer's.
    const promptTokens = falcon.FalconTokenizer.fromPreset(path.join(dir, "engine-cycle")).encode("The falcon").length;
    assert.deepEqual(usage, { promptTokens, completionTokens: 8, totalTokens: promptTokens + 8 });
    assert.equal(logprobs.length, 8);
    for (const [k, entry] of logprobs.entries()) {
      assert.equal(entry.token, cycle[k % cycle.length]);
      assert.equal(entry.top.length, 2);
      assert.equal(entry.top[0]!.token, entry.token, "the chosen token is the likeliest");
      assert.ok(entry.logprob <= 0 && entry.logprob > -1e-3, `logprob ${entry.logprob}`);
    }
    assert.equal(written.join(""), CYCLE_TEXT.repeat(2));
    assert.equal(stats.running, 0);
    assert.equal(stats.waiting, 0);
    assert.equal(stats.kvBlocks.used, 0, "every request's blocks were released");
  });

  it("the server: the openai client's chat completion against createServer, on the cycle model", async () => {
    writeCycleCheckpoint(path.join(dir, "server-cycle"));
    const { answer } = await runSnippet(find("createServer(lm"), dir, {
      paths: { "./tiny-falcon": path.join(dir, "server-cycle") },
      given: { process: { env: { PORT: "0" } }, OpenAI },
      results: ["answer"],
    }) as { answer: string };
    // 32 new tokens are four turns of the 8-token cycle, whatever the prompt; sampling at temperature 1
    // keeps the cycle's next token (its logit leads by tens).
    assert.equal(answer, CYCLE_TEXT.repeat(4));
  });

  it("the text, engine and server snippets also run on the tiny checkpoint they name", async () => {
    const tiny = path.join(dir, "tiny-falcon");
    writeTinyCheckpoint(tiny);
    const tokenizer = falcon.FalconTokenizer.fromPreset(tiny);
    const stdout = { write: (piece: string) => assert.equal(typeof piece, "string") };
    const text = await runSnippet(find("lm.stream(\"The falcon\""), dir, {
      paths: { "./tiny-falcon": tiny }, given: { process: { stdout } }, results: ["text", "texts", "ids"],
    }) as { text: string; texts: string[]; ids: Int32Array[] };
    assert.ok(text.text.startsWith("The falcon") && text.text.length > "The falcon".length, text.text);
    assert.equal(text.texts.length, 2);
    for (const [row, prompt] of [[35, 92, 67], [30, 65]].entries()) {
      assert.deepEqual(Array.from(text.ids[row]!.slice(0, prompt.length)), prompt);
      assert.ok(text.ids[row]!.length > prompt.length && text.ids[row]!.length <= prompt.length + 8);
    }
    const engine = await runSnippet(find("lm.engine({"), dir, {
      paths: { "./tiny-falcon": tiny }, given: { process: { stdout } }, results: ["story", "sampled", "usage", "stats"],
    }) as { story: string; sampled: string; usage: Completion["usage"]; stats: EngineStats };
    assert.ok(engine.sampled.startsWith("The falcon"));
    assert.equal(engine.usage.promptTokens, tokenizer.encode("The falcon").length);
    assert.equal(engine.stats.kvBlocks.used, 0);
    const server = await runSnippet(find("createServer(lm"), dir, {
      paths: { "./tiny-falcon": tiny }, given: { process: { env: { PORT: "0" } }, OpenAI }, results: ["answer"],
    }) as { answer: string };
    assert.equal(typeof server.answer, "string");
  });
});

/**
 * The README's ```sh and ```bash lines, in order: each command (continuation lines joined, comments
 * dropped, `a && b` split) either runs here or is listed in NOT_RUN with the reason. Every
 * `npx falcon-native …` runs as `node dist/src/cli.js …` in a scratch directory, where the README's own
 * `npx falcon-native run --save ./tiny-falcon` writes the checkpoint the later lines name; `serve` runs on a
 * free port instead of 8080 and the `curl` after it is sent by fetch to that port.
 */
const NOT_RUN: Record<string, string> = {
  "npm install": "installs the dependencies and compiles the addon: the suite runs on this checkout's build",
  "npm test": "the suite itself",
  "npm install falcon-native": "installs from the registry: package.test.ts installs the packed tarball offline instead",
  "npm install falcon-native @falcon-native/linux-x64-cuda": "the CUDA package is not published",
  "npx falcon-native build": "a full node-gyp rebuild of the addon (minutes): build-command.test.ts runs the command on a stub build",
  "npm rebuild falcon-native": "rebuilds an installed package through npm",
  "npm install falcon-native --build-from-source": "installs from the registry",
  "docker build -t falcon-native .": "no docker in the tests (the Dockerfile's command is falcon-native serve, run here)",
  "docker run --rm -p 8080:8080 -v /srv/models/falcon-7b-instruct:/models/preset:ro falcon-native": "no docker in the tests",
  "docker run --rm -p 8080:8080 -v /srv/models/falcon-7b-instruct:/models/preset:ro -e FALCON_API_KEY=change-me falcon-native --dtype bfloat16 --max-sequences 16": "no docker in the tests",
};

/** Splits a shell line into words: single quotes literal, double quotes with \" escapes, nothing else expanded. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      assert.ok(end > i, `unterminated quote in ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let text = "";
      for (i++; i < line.length && line[i] !== '"'; i++) text += line[i] === "\\" ? line[++i] : line[i];
      assert.ok(i < line.length, `unterminated quote in ${line}`);
      word = (word ?? "") + text;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** A line without its comment: a # at a word's start, outside quotes. */
function withoutComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!))) {
      return line.slice(0, i).trimEnd();
    }
  }
  return line.trimEnd();
}

/** The commands of the README's sh and bash blocks, in order. */
function shCommands(): string[] {
  const commands: string[] = [];
  for (const [, body] of readFileSync(README, "utf8").matchAll(/^```(?:sh|bash)\n([\s\S]*?)^```$/gm)) {
    const joined = body!.replace(/\\\n\s*/g, "");
    for (const line of joined.split("\n")) {
      const command = withoutComment(line).trim();
      if (command !== "") commands.push(...command.split(" && ").map((part) => part.trim()));
    }
  }
  return commands;
}

function runCli(cwd: string, args: string[], stdin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { cwd, timeout: 60_000, env: { ...process.env, FALCON_NUM_THREADS: "2" } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
    child.stdin!.end(stdin);
  });
}

/**
 * The GGUF the README's GGUF lines name, written from the tiny checkpoint by the tests' own writer, its
 * tokenizer as the file's vocabulary: every matrix Q4_0, since the tiny model's widths (448, 64) are
 * not multiples of the K-quants' 256-value blocks.
 */
async function writeTinyGguf(checkpoint: string, file: string): Promise<void> {
  const tokenizer = JSON.parse(readFileSync(path.join(checkpoint, "tokenizer.json"), "utf8")) as {
    model: { vocab: Record<string, number>; merges: [string, string][] }; added_tokens: { id: number; content: string }[];
  };
  const tokens: string[] = [];
  for (const [token, id] of Object.entries(tokenizer.model.vocab)) tokens[id] = token;
  const tokenTypes = new Int32Array(tokens.length).fill(1);
  for (const added of tokenizer.added_tokens) tokenTypes[added.id] = 3;
  const eosId = tokenizer.added_tokens[0]!.id;
  await using backbone = await FalconBackbone.fromPreset(checkpoint);
  await writeGgufModel(backbone, file, { matrixType: "Q4_0", vocabulary: { tokens, tokenTypes, merges: tokenizer.model.merges.map((pair) => pair.join(" ")), eosId, pre: "falcon" } });
}

/** A port nothing listens on now. */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("README sh commands", () => {
  const dir = makeTempDir("falcon-readme-sh-");
  after(() => rmSync(dir, { recursive: true, force: true }));
  const commands = shCommands();

  it("every command not run here is in the README and says why", () => {
    for (const command of Object.keys(NOT_RUN)) assert.ok(commands.includes(command), `NOT_RUN lists "${command}", which the README no longer has`);
    for (const command of commands) {
      assert.ok(command in NOT_RUN || /^(echo "[^"]*" \| )?npx falcon-native /.test(command) || command.startsWith("curl "),
        `"${command}" neither runs here nor is in NOT_RUN`);
    }
  });

  it("every npx falcon-native command runs on the checkpoint the README makes, and the curl reaches serve", async () => {
    const version = (JSON.parse(readFileSync(path.join(path.dirname(README), "package.json"), "utf8")) as { version: string }).version;
    let server: { child: ChildProcess; port: number; exited: Promise<number | null> } | undefined;
    let ran = 0;
    try {
      for (const command of commands) {
        if (command in NOT_RUN) continue;
        ran++;
        if (command.startsWith("curl ")) {
          assert.ok(server, `${command}: no serve command before it`);
          const words = shellWords(command).slice(1);
          const headers: Record<string, string> = {};
          let body: string | undefined;
          let url: string | undefined;
          for (let i = 0; i < words.length; i++) {
            if (words[i] === "-s") continue;
            if (words[i] === "-H") {
              const [name, ...value] = words[++i]!.split(":");
              headers[name!] = value.join(":").trim();
            } else if (words[i] === "-d") {
              body = words[++i];
            } else {
              url = words[i];
            }
          }
          assert.match(url ?? "", /^localhost:8080\//, command);
          const response = await fetch(`http://127.0.0.1:${server.port}/${url!.slice("localhost:8080/".length)}`, { method: body ? "POST" : "GET", headers, body });
          const text = await response.text();
          assert.equal(response.status, 200, `${command}: ${text}`);
          assert.match(text, /^data: \{"id":"chatcmpl-/m, command);
          assert.match(text, /^data: \[DONE\]$/m, command);
          continue;
        }
        const [, echoed, rest] = /^(?:echo ("[^"]*") \| )?npx falcon-native(.*)$/.exec(command)!;
        const args = shellWords(rest!);
        const gguf = args.find((arg) => arg.endsWith(".gguf"));
        if (gguf !== undefined && !existsSync(path.join(dir, gguf))) await writeTinyGguf(path.join(dir, "tiny-falcon"), path.join(dir, gguf));
        const stdin = echoed === undefined ? "" : `${shellWords(echoed)[0]}\n`;
        if (args[0] === "serve") {
          const portIndex = args.indexOf("--port");
          assert.ok(portIndex > 0, `${command}: names its port`);
          const port = await freePort();
          args[portIndex + 1] = String(port);
          const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, FALCON_NUM_THREADS: "2" } });
          const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
          server = { child, port, exited };
          for (let waited = 0; ; waited += 50) {
            const health = await fetch(`http://127.0.0.1:${port}/health`).then((response) => response.status, () => 0);
            if (health === 200) break;
            assert.ok(waited < 30_000, `${command}: not ready within 30 s`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          continue;
        }
        const result = await runCli(dir, args, stdin);
        assert.equal(result.code, 0, `${command}\n${result.stderr}`);
        assert.notEqual(result.stdout, "", command);
        if (args.includes("--json")) {
          const report = JSON.parse(result.stdout) as { ids: number[][]; text: string[] };
          assert.equal(report.text[0]!.startsWith("The falcon"), true, `${command}: ${result.stdout}`);
        }
        if (args[0] === "--version") assert.equal(result.stdout, `${version}\n`);
        if (args[0] === "inspect") assert.match(result.stdout, gguf ? /^tokenizer +GGUF/m : /^tokenizer +HF tokenizer\.json$/m, command);
        if (args[0] === "generate" && !args.includes("--help") && !args.includes("--ids") && !args.includes("--json")) {
          assert.ok(result.stdout.startsWith("The falcon"), `${command}: ${result.stdout}`);
        }
      }
    } finally {
      if (server) {
        server.child.kill("SIGTERM");
        assert.equal(await server.exited, 0, "serve exits 0 on SIGTERM");
      }
    }
    assert.equal(ran, commands.length - Object.keys(NOT_RUN).length);
  });
});
