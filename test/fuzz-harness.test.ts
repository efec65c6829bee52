/**
 * The fuzz harness itself: a case is rebuilt byte for byte from (seed, family, index), and the parent
 * gives each kind of misbehaviour its verdict (probes that refuse, throw the wrong class, hang, grow
 * without bound, abort, or load what they must refuse), and leaves no process or file behind.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, lstatSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { HARNESS_PROBE, IN_PROCESS_FAMILIES, PROBES } from "./helpers/fuzz/families.js";
import { FuzzPool, liveChildCount, registerTemporaryDirectory, removeTemporaryDirectory, type CaseReport } from "./helpers/fuzz/pool.js";
import { familyNumber } from "./helpers/fuzz/protocol.js";
import { FuzzRandom } from "./helpers/fuzz/random.js";
import { prepareSeeds } from "./helpers/fuzz/seeds.js";

const root = mkdtempSync(path.join(os.tmpdir(), "falcon-fuzz-harness-"));
const seeds = path.join(root, "seeds");
registerTemporaryDirectory(root);
after(() => removeTemporaryDirectory(root));
before(async () => {
  mkdirSync(seeds);
  await prepareSeeds(seeds);
});

/** Every entry under dir: its kind and its bytes (or link target), by relative path. */
function snapshot(dir: string): Map<string, string> {
  const entries = new Map<string, string>();
  const walk = (relative: string): void => {
    for (const name of readdirSync(path.join(dir, relative))) {
      const entry = path.join(relative, name);
      const stat = lstatSync(path.join(dir, entry));
      if (stat.isSymbolicLink()) entries.set(entry, `link ${readlinkSync(path.join(dir, entry)).replace(dir, "<case>")}`);
      else if (stat.isDirectory()) {
        entries.set(entry, "directory");
        walk(entry);
      } else if (stat.isFIFO()) entries.set(entry, "fifo");
      else entries.set(entry, readFileSync(path.join(dir, entry)).toString("base64"));
    }
  };
  walk("");
  return entries;
}

describe("fuzz cases", () => {
  it("are rebuilt identically from seed, family and index, and differ between indices", () => {
    for (const family of IN_PROCESS_FAMILIES) {
      const build = (index: number, copy: string): { files: Map<string, string>; notes: string[] } => {
        const directory = path.join(root, `${family.name}-${index}-${copy}`);
        mkdirSync(directory);
        const notes: string[] = [];
        const rng = new FuzzRandom(12345, familyNumber(family.name), index);
        family.prepare({ rng, index, directory, seeds, notes });
        const files = snapshot(directory);
        rmSync(directory, { recursive: true, force: true });
        return { files, notes };
      };
      const distinct = new Set<string>();
      for (let index = 0; index < 8; index++) {
        const first = build(index, "a");
        const second = build(index, "b");
        assert.deepEqual(second.notes, first.notes, `${family.name}:${index} notes`);
        assert.deepEqual(new Map([...second.files].map(([k, v]) => [k, v.replace(`-${index}-b`, `-${index}-a`)])), first.files, `${family.name}:${index} files`);
        distinct.add(first.notes.join("\n"));
      }
      assert.ok(distinct.size >= 6, `${family.name}: 8 indices gave only ${distinct.size} different cases`);
    }
  });
});

describe("fuzz verdicts", () => {
  it("pass loads and FalconErrors; fail other errors, empty messages, hangs, memory bombs, aborts and accepted escapes", async () => {
    // The probes' runner is resident at under 150 MiB, and at 200–290 MiB under AddressSanitizer
    // (test:sanitize), where a 384 MiB limit once caught the empty-message probe's runner in CI. 768 MiB
    // keeps 2.5× that room; the memory-bomb probe passes it within about eight of its 64 MiB steps. The
    // clock starts at spawn: node's start, the addon's load and those steps took over 1.5 s once on a
    // busy 2-core machine (the bomb was judged a hang), so the time limit leaves that several times over.
    const pool = new FuzzPool({ timeoutMs: 4000, rssLimitBytes: 768 * 2 ** 20, heapLimitMiB: 1024, dataLimitBytes: 4 * 2 ** 30 }, 2);
    const reports = new Map<string, CaseReport>();
    try {
      await pool.runAll(PROBES.map((_, index) => ({ family: HARNESS_PROBE.name, index, seed: 1, root, seeds })), (report) => {
        reports.set(PROBES[report.index]!, report);
      });
    } finally {
      pool.close();
    }
    for (let waited = 0; liveChildCount() > 0 && waited < 5000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(liveChildCount(), 0, "children outlived the pool");
    const kinds = Object.fromEntries(PROBES.map((probe) => [probe, reports.get(probe)?.failure?.kind ?? "pass"]));
    assert.deepEqual(kinds, {
      "load": "pass", "refuse": "pass", "untyped-error": "untyped-error", "empty-message": "empty-message",
      "hang": "hang", "memory-bomb": "memory-bomb", "abort": "crash", "escape": "accepted-hostile-input",
    });
    assert.equal(reports.get("untyped-error")!.failure!.errorClass, "TypeError");
    assert.match(reports.get("abort")!.failure!.message, /SIGABRT/);
    for (const probe of PROBES) assert.ok(!existsSync(path.join(root, `${HARNESS_PROBE.name}-${PROBES.indexOf(probe)}`)), `${probe} left its directory`);
  });
});
