/**
 * The addon loader (src/native-loader.ts): its decisions from given facts, and in child processes, a
 * package copy with no binary, a broken prebuild, and fake CUDA packages whose probe crashes, hangs,
 * or answers.
 */
import assert from "node:assert/strict";
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import { FalconConfigError } from "../src/errors.js";
import {
  cudaPackageFor,
  loadAddon,
  loadCandidates,
  needsCudaProbe,
  probeCuda,
  type LoaderFacts,
} from "../src/native-loader.js";
import { describeChild, runNode } from "./helpers/child-node.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const LOCAL_BUILD = path.join(ROOT, "build", "Release", "falcon_native.node");

function facts(overrides: Partial<LoaderFacts> = {}): LoaderFacts {
  return {
    target: "linux-x64",
    libc: "glibc",
    nodeVersion: "20.19.0",
    addonFile: undefined,
    backend: undefined,
    cudaPackage: "@falcon-native/linux-x64-cuda",
    cudaBinary: undefined,
    cudaProbe: undefined,
    localBuild: "/pkg/build/Release/falcon_native.node",
    localBuildExists: false,
    prebuildDir: "/pkg/prebuilds",
    prebuild: "/pkg/prebuilds/linux-x64/falcon-native.glibc.node",
    ...overrides,
  };
}

const summary = (f: LoaderFacts) => loadCandidates(f).map((c) => [c.label.split(" (")[0], c.file ?? c.unavailable]);

describe("loader decisions", () => {
  it("by default: CUDA (not installed), then the local build, then the prebuild", () => {
    assert.deepEqual(summary(facts()), [
      ["CUDA build", "@falcon-native/linux-x64-cuda is not installed"],
      ["local build", "not built"],
      ["prebuilt binary", "/pkg/prebuilds/linux-x64/falcon-native.glibc.node"],
    ]);
    assert.deepEqual(summary(facts({ localBuildExists: true, prebuild: undefined })), [
      ["CUDA build", "@falcon-native/linux-x64-cuda is not installed"],
      ["local build", "/pkg/build/Release/falcon_native.node"],
      ["prebuilt binary", "none for linux-x64 (glibc)"],
    ]);
  });

  it("the CUDA package comes first when installed and its probe answers; a failed probe says why", () => {
    const installed = { cudaBinary: "/pkg/node_modules/@falcon-native/linux-x64-cuda/falcon-native.node" };
    assert.deepEqual(summary(facts({ ...installed, cudaProbe: { usable: true } }))[0], ["CUDA build", installed.cudaBinary]);
    const failed = loadCandidates(facts({ ...installed, cudaProbe: { usable: false, reason: "the driver did not answer within 30 s" } }))[0]!;
    assert.equal(failed.file, undefined);
    assert.equal(failed.unavailable, "no usable GPU: the driver did not answer within 30 s");
    assert.match(failed.fix, /NVIDIA driver.*FALCON_BACKEND=cpu/);
  });

  it("the probe runs only when the CUDA package is installed and FALCON_BACKEND allows CUDA", () => {
    const installed = { cudaBinary: "/cuda.node" };
    assert.equal(needsCudaProbe(facts()), false);
    assert.equal(needsCudaProbe(facts(installed)), true);
    assert.equal(needsCudaProbe(facts({ ...installed, backend: "cuda" })), true);
    assert.equal(needsCudaProbe(facts({ ...installed, backend: "cpu" })), false);
    assert.equal(needsCudaProbe(facts({ ...installed, addonFile: "/asan.node" })), false);
  });

  it("FALCON_BACKEND=cpu skips CUDA; FALCON_BACKEND=cuda tries CUDA only; another value is a config error", () => {
    const installed = { cudaBinary: "/cuda.node", cudaProbe: { usable: true } as const };
    assert.deepEqual(summary(facts({ ...installed, backend: "cpu" })), [
      ["CUDA build", "not tried: FALCON_BACKEND=cpu"],
      ["local build", "not built"],
      ["prebuilt binary", "/pkg/prebuilds/linux-x64/falcon-native.glibc.node"],
    ]);
    assert.deepEqual(summary(facts({ backend: "cuda" })), [
      ["CUDA build", "@falcon-native/linux-x64-cuda is not installed"],
      ["local build", "not tried: FALCON_BACKEND=cuda"],
      ["prebuilt binary", "not tried: FALCON_BACKEND=cuda"],
    ]);
    assert.deepEqual(summary(facts({ backend: "" })), summary(facts()));
    assert.throws(() => loadCandidates(facts({ backend: "gpu" })), (error: unknown) =>
      error instanceof FalconConfigError && /FALCON_BACKEND is "gpu": set it to cpu or cuda/.test(error.message));
  });

  it("FALCON_NATIVE_ADDON is the only candidate; targets without a CUDA build say so", () => {
    assert.deepEqual(summary(facts({ addonFile: "/asan.node", backend: "cuda" })), [["FALCON_NATIVE_ADDON", "/asan.node"]]);
    assert.equal(cudaPackageFor("darwin-arm64", ""), undefined);
    assert.equal(cudaPackageFor("linux-x64", "musl"), undefined);
    assert.equal(cudaPackageFor("linux-x64", "glibc"), "@falcon-native/linux-x64-cuda");
    assert.deepEqual(summary(facts({ target: "darwin-arm64", libc: "", cudaPackage: undefined, prebuild: undefined }))
      .map(([, what]) => what), ["no CUDA build is made for darwin-arm64", "not built", "none for darwin-arm64"]);
  });

  it("loadAddon returns the first candidate that loads, and otherwise lists each one, why and its fix", () => {
    const tried: string[] = [];
    const loaded = loadAddon(facts({ localBuildExists: true }), (file) => {
      tried.push(file);
      if (file.includes("build/Release")) throw new Error(`${file}: invalid ELF header\nRequire stack: ...`);
      return { file };
    }, (message) => new Error(message));
    assert.deepEqual(tried, ["/pkg/build/Release/falcon_native.node", "/pkg/prebuilds/linux-x64/falcon-native.glibc.node"]);
    assert.deepEqual(loaded, { file: "/pkg/prebuilds/linux-x64/falcon-native.glibc.node" });

    let message = "";
    assert.throws(() => loadAddon(facts({ localBuildExists: true }), (file) => {
      throw new Error(file.includes("prebuilds") ? "/lib/libc.so.6: version `GLIBC_2.99' not found (required by x)\nmore" : `${file}: invalid ELF header`);
    }, (text) => new Error((message = text))));
    assert.equal(message, [
      "could not load the falcon-native addon for linux-x64 (Node 20.19.0, glibc). Tried, in order:",
      "  1. CUDA build (@falcon-native/linux-x64-cuda): @falcon-native/linux-x64-cuda is not installed",
      "     fix: npm install @falcon-native/linux-x64-cuda (the same version as falcon-native; it needs an NVIDIA driver)",
      "  2. local build (/pkg/build/Release/falcon_native.node): /pkg/build/Release/falcon_native.node: invalid ELF header",
      "     fix: npx falcon-native build (builds it from the installed sources; needs python3, make and a C++17 compiler)",
      "  3. prebuilt binary (/pkg/prebuilds/linux-x64/falcon-native.glibc.node): /lib/libc.so.6: version `GLIBC_2.99' not found (required by x)",
      "     fix: npm rebuild falcon-native (builds from source when no prebuild loads, unless install scripts are off), " +
        "or npx falcon-native build (builds it from the installed sources; needs python3, make and a C++17 compiler)",
    ].join("\n"));
  });
});

/** Writes a fake CUDA package for this target into `nodeModules` whose main module is `source`. */
function writeCudaPackage(nodeModules: string, source: string): string {
  const dir = path.join(nodeModules, "@falcon-native", "linux-x64-cuda");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "@falcon-native/linux-x64-cuda", main: "index.cjs" }));
  writeFileSync(path.join(dir, "index.cjs"), source);
  return path.join(dir, "index.cjs");
}

describe("the CUDA probe", () => {
  const dir = makeTempDir("falcon-probe-");
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("runs once per binary per process, and a crash, a hang or a CPU answer is a reason, not a failure here", () => {
    const counter = path.join(dir, "probes.txt");
    const answering = writeCudaPackage(path.join(dir, "answering"), `require("fs").appendFileSync(${JSON.stringify(counter)}, "x"); exports.defaultBackend = () => "cuda";`);
    assert.deepEqual(probeCuda(answering), { usable: true });
    assert.deepEqual(probeCuda(answering), { usable: true });
    assert.equal(readFileSync(counter, "utf8"), "x");

    const crashing = writeCudaPackage(path.join(dir, "crashing"), `process.kill(process.pid, "SIGSEGV");`);
    assert.deepEqual(probeCuda(crashing), { usable: false, reason: "loading the CUDA build killed the probe process (SIGSEGV)" });
    const hanging = writeCudaPackage(path.join(dir, "hanging"), "for (;;);");
    assert.deepEqual(probeCuda(hanging, 1000), { usable: false, reason: "the driver did not answer within 1 s" });
    const throwing = writeCudaPackage(path.join(dir, "throwing"), `throw new Error("cuInit failed: CUDA_ERROR_NO_DEVICE");`);
    assert.deepEqual(probeCuda(throwing), { usable: false, reason: "the probe exited with status 1: Error: cuInit failed: CUDA_ERROR_NO_DEVICE" });
    const cpu = writeCudaPackage(path.join(dir, "cpu"), `exports.defaultBackend = () => "cpu";`);
    assert.deepEqual(probeCuda(cpu), { usable: false, reason: 'the CUDA build reports backend "cpu"' });
  });
});

const LIBC = process.platform === "linux" ? (existsSync("/etc/alpine-release") ? "musl" : "glibc") : "";

describe("the loader in a copy of the package, in child processes", { skip: cudaPackageFor(`${process.platform}-${process.arch}`, LIBC) === undefined && "a CUDA package exists for linux-x64 glibc only" }, () => {
  const dir = makeTempDir("falcon-loader-");
  const pkg = path.join(dir, "falcon-native");
  const nodeModules = path.join(pkg, "node_modules");
  const prebuild = path.join(pkg, "prebuilds", "linux-x64", "falcon-native.glibc.node");
  const env = { FALCON_NATIVE_ADDON: "", FALCON_BACKEND: "", FALCON_NUM_THREADS: "1" };
  const load = (extraEnv: Record<string, string> = {}) => runNode(
    `import(${JSON.stringify(new URL(`file://${path.join(pkg, "dist", "src", "index.js")}`).href)}).then(` +
      "(m) => m.runtimeInfo().backend).then(console.log, (e) => { console.error(e.name + ': ' + e.message); process.exitCode = 3; })",
    { env: { ...env, ...extraEnv } },
  );

  before(() => {
    mkdirSync(nodeModules, { recursive: true });
    writeFileSync(path.join(pkg, "package.json"), JSON.stringify({ name: "falcon-native", version: "0.0.0", type: "module" }));
    cpSync(path.join(ROOT, "dist", "src"), path.join(pkg, "dist", "src"), { recursive: true });
    for (const entry of readdirSync(path.join(ROOT, "node_modules"))) {
      if (entry !== "@falcon-native" && !entry.startsWith(".")) symlinkSync(path.join(ROOT, "node_modules", entry), path.join(nodeModules, entry));
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("with no binary anywhere: the error lists each candidate, why and its fix", () => {
    const result = load();
    assert.equal(result.status, 3, describeChild(result));
    assert.equal(result.stderr, [
      "FalconNativeLoadError: could not load the falcon-native addon for linux-x64 " +
        `(Node ${process.versions.node}, ${LIBC}). Tried, in order:`,
      "  1. CUDA build (@falcon-native/linux-x64-cuda): @falcon-native/linux-x64-cuda is not installed",
      "     fix: npm install @falcon-native/linux-x64-cuda (the same version as falcon-native; it needs an NVIDIA driver)",
      `  2. local build (${path.join(pkg, "build", "Release", "falcon_native.node")}): not built`,
      "     fix: npx falcon-native build (builds it from the installed sources; needs python3, make and a C++17 compiler)",
      `  3. prebuilt binary (${path.join(pkg, "prebuilds")}): none for linux-x64 (glibc)`,
      "     fix: npm rebuild falcon-native (builds from source when no prebuild loads, unless install scripts are off), " +
        "or npx falcon-native build (builds it from the installed sources; needs python3, make and a C++17 compiler)",
      "",
    ].join("\n"));
  });

  it("a prebuild that does not load: its error is the reason", () => {
    mkdirSync(path.dirname(prebuild), { recursive: true });
    writeFileSync(prebuild, "not an ELF file\n".repeat(400));
    const result = load();
    assert.equal(result.status, 3, describeChild(result));
    assert.match(result.stderr, new RegExp(`3\\. prebuilt binary \\(${prebuild}\\): ${prebuild}: invalid ELF header\\n     fix: npm rebuild falcon-native`));
  });

  it("a CUDA package whose driver crashes the probe: the CPU prebuild loads; with FALCON_BACKEND=cuda, the error says why", () => {
    copyFileSync(LOCAL_BUILD, prebuild);
    writeCudaPackage(nodeModules, `process.kill(process.pid, "SIGSEGV");`);
    const auto = load();
    assert.deepEqual([auto.status, auto.stdout], [0, "cpu\n"], describeChild(auto));
    assert.match(auto.stderr, /\[FALCON_NO_GPU\] Warning: @falcon-native\/linux-x64-cuda is installed but no GPU is usable \(loading the CUDA build killed the probe process \(SIGSEGV\)\): running on the CPU/);
    const cuda = load({ FALCON_BACKEND: "cuda" });
    assert.equal(cuda.status, 3, describeChild(cuda));
    assert.match(cuda.stderr, /1\. CUDA build \(@falcon-native\/linux-x64-cuda\): no usable GPU: loading the CUDA build killed the probe process \(SIGSEGV\)\n     fix: install or repair the NVIDIA driver/);
    assert.match(cuda.stderr, /2\. local build .*: not tried: FALCON_BACKEND=cuda/);
  });

  it("a CUDA package whose probe answers is chosen, unless FALCON_BACKEND=cpu", () => {
    const calls = path.join(dir, "cuda-loads.txt");
    writeCudaPackage(nodeModules,
      `require("fs").appendFileSync(${JSON.stringify(calls)}, "x");` +
        `module.exports = { ...require(${JSON.stringify(prebuild)}), defaultBackend: () => "cuda" };`);
    const auto = load();
    assert.deepEqual([auto.status, auto.stdout, auto.stderr], [0, "cuda\n", ""], describeChild(auto));
    assert.equal(readFileSync(calls, "utf8"), "xx", "loaded by the probe, then by the process");
    const cpu = load({ FALCON_BACKEND: "cpu" });
    assert.deepEqual([cpu.status, cpu.stdout], [0, "cpu\n"], describeChild(cpu));
    assert.equal(readFileSync(calls, "utf8"), "xx", "FALCON_BACKEND=cpu runs no probe");
  });
});
