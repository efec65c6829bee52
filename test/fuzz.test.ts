/**
 * Seeded, bounded fuzzing of every parser the library exposes: safetensors headers and indexes, HF
 * and keras configs, model.weights.h5, tokenizer files and CLI arguments. Each case is a mutation of
 * a valid input, run in a child process with a timeout and an RSS limit; it passes when the input
 * loads (and runs) or is refused with a FalconError that has a message. Nothing else is allowed: no
 * other error class, hang, crash or memory bomb.
 *
 *   FUZZ_CASES=N     total cases over all families (default about a minute on two cores)
 *   FUZZ_SEED=S      run seed (default fixed, so CI is reproducible); FUZZ_SEED=random picks one
 *   FUZZ_FAMILIES=a,b  run only these families (their share of FUZZ_CASES)
 *   FUZZ_ONLY=f:i,…  run only these cases, in this order, in one child (a failure prints its line)
 *   FUZZ_REPORT=F    also append the failures to the markdown file F
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { appendFileSync, mkdirSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { HDF5_REQUEST_TIMEOUT_MS } from "../src/presets/hdf5.js";
import { FuzzPool, killAll, registerTemporaryDirectory, removeTemporaryDirectory, type CaseReport, type FuzzLimits } from "./helpers/fuzz/pool.js";
import { FAMILY_NAMES, familyNumber, type CaseRequest, type FamilyName } from "./helpers/fuzz/protocol.js";
import { prepareSeeds } from "./helpers/fuzz/seeds.js";

const DEFAULT_SEED = 0x5eed10;
const DEFAULT_CASES = 2800;
/** Relative cost-weighted share of the cases: CLI cases start a process, HDF5 cases run wasm. */
const SHARES: Record<FamilyName, number> = {
  "safetensors": 22, "safetensors-index": 10, "hf-config": 20, "keras-config": 12, "keras-h5": 14, "tokenizer": 20, "cli": 1.5,
};

function positiveIntegerEnv(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, got "${text}"`);
  return value;
}

/**
 * scripts/test-sanitize.sh sets FALCON_TEST_TIME_SCALE: under ASan and UBSan a CLI case takes about 3 s on an
 * idle machine (1 s without), and two run at once, so the plain 5 s limit failed a case that finishes. A hang
 * still outlasts any scaled limit.
 */
const TIME_SCALE = Math.max(1, positiveIntegerEnv("FALCON_TEST_TIME_SCALE") ?? 1);
const LIMITS: FuzzLimits = {
  timeoutMs: 5000 * TIME_SCALE, extraTimeoutMs: { "keras-h5": HDF5_REQUEST_TIMEOUT_MS }, rssLimitBytes: 1.5 * 2 ** 30,
  heapLimitMiB: 1024, dataLimitBytes: 4 * 2 ** 30,
};
const seed = process.env["FUZZ_SEED"] === "random" ? randomInt(2 ** 47) : positiveIntegerEnv("FUZZ_SEED") ?? DEFAULT_SEED;
const totalCases = positiveIntegerEnv("FUZZ_CASES") ?? DEFAULT_CASES;
const families = process.env["FUZZ_FAMILIES"]?.split(",").filter(Boolean);
families?.forEach(familyNumber);
const only = process.env["FUZZ_ONLY"]?.split(",").filter(Boolean).map((item) => {
  const [family = "", index = ""] = item.split(":");
  familyNumber(family);
  if (!/^\d+$/.test(index)) throw new Error(`FUZZ_ONLY entries are family:index, got "${item}"`);
  return { family, index: Number(index) };
});

function casesFor(family: FamilyName): number {
  const shareTotal = Object.values(SHARES).reduce((a, b) => a + b, 0);
  return Math.max(1, Math.round((totalCases * SHARES[family]) / shareTotal));
}

function reproduction(report: CaseReport): string {
  const alone = `FUZZ_SEED=${seed} FUZZ_ONLY=${report.family}:${report.index} node --test dist/test/fuzz.test.js`;
  return report.previous ? `${alone}  (ran after ${report.previous} in the same child: FUZZ_ONLY=${report.previous},${report.family}:${report.index})` : alone;
}

function elide(text: string, root: string): string {
  return text.replaceAll(root, "<tmp>").replace(/\/[^\s"']*\/test\/fixtures/g, "<fixtures>").replace(/\d+/g, "#");
}

/**
 * Failures with the same kind, error class and first message line (temp paths and numbers elided) are
 * one finding. A hang, memory bomb or crash has no message of its own, so its mutations (seed and
 * numbers elided) stand in for one: two different inputs that hang are two findings.
 */
function signature(report: CaseReport, root: string): string {
  const failure = report.failure!;
  const firstLine = elide(failure.message.split("\n")[0]!, root).slice(0, 200);
  const base = `${failure.kind}${failure.errorClass ? ` ${failure.errorClass}` : ""}: ${firstLine}`;
  if (failure.errorClass !== "" || failure.kind === "accepted-hostile-input") return base;
  const input = report.notes.filter((note) => !note.startsWith("seed ")).map((note) => elide(note, root).slice(0, 80)).join("; ");
  return `${base} (input: ${input})`;
}

function summarise(family: string, failures: CaseReport[], root: string): string {
  const groups = new Map<string, CaseReport[]>();
  for (const report of failures) {
    const key = signature(report, root);
    groups.set(key, [...(groups.get(key) ?? []), report]);
  }
  const lines = [`${family}: ${failures.length} failing case(s), ${groups.size} signature(s), seed ${seed}`];
  for (const [key, reports] of groups) {
    const first = reports[0]!;
    lines.push(`- ${key}  [${reports.length} case(s)]`);
    lines.push(`    repro: ${reproduction(first)}`);
    lines.push(`    input: ${first.notes.join("; ").slice(0, 400)}`);
    const detail = first.failure!.detail.split("\n").filter(Boolean).slice(0, 4).join(" | ");
    if (detail) lines.push(`    detail: ${detail.replaceAll(root, "<tmp>").slice(0, 400)}`);
  }
  return lines.join("\n");
}

describe(`fuzz (seed ${seed})`, () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "falcon-fuzz-"));
  const seeds = path.join(root, "seeds");
  let pool: FuzzPool;
  registerTemporaryDirectory(root);

  before(async () => {
    mkdirSync(seeds);
    await prepareSeeds(seeds);
    // Two children: the test runner runs files one at a time, and this machine has two cores.
    pool = new FuzzPool(LIMITS, only ? 1 : Math.min(2, os.availableParallelism()));
  });

  after(() => {
    pool?.close();
    killAll();
    removeTemporaryDirectory(root);
  });

  for (const family of FAMILY_NAMES) {
    const selected = families === undefined || families.includes(family);
    const indices = only ? only.filter((c) => c.family === family).map((c) => c.index)
      : selected ? Array.from({ length: casesFor(family) }, (_, i) => i) : [];
    it(`${family}: ${indices.length} mutated inputs load, or are refused with a FalconError`, async () => {
      const requests: CaseRequest[] = indices.map((index) => ({ family, index, seed, root, seeds }));
      const failures: CaseReport[] = [];
      let passingMs = 0;
      const started = performance.now();
      await pool.runAll(requests, (report) => {
        if (report.failure) failures.push(report);
        else passingMs += report.ms;
      });
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const passing = requests.length - failures.length;
      process.stdout.write(`# fuzz ${family}: ${requests.length} cases in ${seconds} s (${(passingMs / Math.max(1, passing)).toFixed(0)} ms per passing case), ${failures.length} failing (seed ${seed})\n`);
      if (failures.length === 0) return;
      const summary = summarise(family, failures, root);
      if (process.env["FUZZ_REPORT"]) appendFileSync(process.env["FUZZ_REPORT"], `\n${summary}\n`);
      assert.fail(summary);
    });
  }
});
