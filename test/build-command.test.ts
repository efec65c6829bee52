/**
 * `falcon-native build`: which node-gyp it runs, with what and where, and what it reports; node-gyp is
 * a stand-in script here (a real build takes minutes), the load check runs on this repo's build.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";

import { nodeGypCommand } from "../src/build-command.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "dist", "src", "cli.js");

describe("falcon-native build", () => {
  const dir = makeTempDir("falcon-build-command-");
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A node-gyp stand-in that records its arguments and folder, then exits with `status`. */
  function fakeNodeGyp(name: string, status: number): { script: string; record: string } {
    const record = path.join(dir, `${name}.json`);
    const script = path.join(dir, `${name}.js`);
    writeFileSync(script, `require("fs").writeFileSync(${JSON.stringify(record)}, JSON.stringify({ args: process.argv.slice(2), cwd: process.cwd() }));\n` +
      `console.log("gyp info ok"); process.exit(${status});\n`);
    return { script, record };
  }
  const cli = (args: string[], env: Record<string, string>) =>
    spawnSync(process.execPath, [CLI, "build", ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });

  it("runs node-gyp rebuild in the package folder, then checks that the build loads", () => {
    const { script, record } = fakeNodeGyp("ok", 0);
    const result = cli(["--jobs", "3"], { npm_config_node_gyp: script });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `built ${path.join(ROOT, "build", "Release", "falcon_native.node")}\n`);
    assert.match(result.stderr, /gyp info ok/, "node-gyp's output goes to stderr");
    assert.deepEqual(JSON.parse(readFileSync(record, "utf8")), { args: ["rebuild", "--release", "-j", "3"], cwd: ROOT });
  });

  it("a failing node-gyp exits 1 naming what a build needs; a bad --jobs is a usage error", () => {
    const { script } = fakeNodeGyp("fails", 3);
    const failed = cli([], { npm_config_node_gyp: script });
    assert.equal(failed.status, 1);
    assert.match(failed.stderr, /falcon-native build: node-gyp failed \(status 3\)\. It needs python3, make and a C\+\+17 compiler/);
    const usage = cli(["--jobs", "0"], { npm_config_node_gyp: script });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--jobs/);
  });

  it("node-gyp: npm's node-gyp setting, else the copy bundled with the running npm", () => {
    assert.deepEqual(nodeGypCommand({ npm_config_node_gyp: "/opt/node-gyp/bin/node-gyp.js" }), [process.execPath, "/opt/node-gyp/bin/node-gyp.js"]);
    assert.deepEqual(nodeGypCommand({ npm_config_node_gyp: "/usr/bin/node-gyp" }), ["/usr/bin/node-gyp"]);
    const npm = path.join(dir, "npm");
    const bundled = path.join(npm, "node_modules", "node-gyp", "bin", "node-gyp.js");
    mkdirSync(path.dirname(bundled), { recursive: true });
    mkdirSync(path.join(npm, "bin"), { recursive: true });
    writeFileSync(bundled, "");
    assert.deepEqual(nodeGypCommand({ npm_execpath: path.join(npm, "bin", "npm-cli.js") }), [process.execPath, bundled]);
  });

  it("has its own --help", () => {
    const result = spawnSync(process.execPath, [CLI, "build", "--help"], { encoding: "utf8" });
    assert.equal(result.status, 0);
    assert.match(result.stdout, /^Usage:\n  falcon-native build \[--jobs N\]/);
    assert.match(result.stdout, /--jobs N/);
  });
});
