/**
 * The published package as a user gets it: `npm pack` (which runs `prepare`, the published build),
 * installed into a fresh consumer offline with --ignore-scripts and no compiler on PATH, then loaded
 * with `import` and `require`, run through its CLI, and type-checked as a strict TypeScript consumer
 * (node16 CommonJS and ES modules, bundler resolution). Also what the tarball must and must not hold.
 *
 * The consumer's dependencies are file: links to this repo's installed copies: an offline install
 * from the npm cache cannot work in general (`npm ci` caches tarballs but not the registry documents
 * npm needs to resolve version ranges), and the tarball itself still goes through npm install.
 */
import assert from "node:assert/strict";
import { execFile, type ExecFileException } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import ts from "typescript";

import { parameterCount } from "../src/index.js";
import { makeTempDir } from "./helpers/gpt2-vocab.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const TSC = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");

interface Result { code: number; stdout: string; stderr: string }

function run(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { ...options, timeout: 60_000, maxBuffer: 16 * 2 ** 20 }, (error: ExecFileException | null, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

/** npm's own script, run with this node: found on PATH the way a shell would. */
function npmCli(): string {
  for (const dir of (process.env["PATH"] ?? "").split(path.delimiter)) {
    const candidate = path.join(dir, "npm");
    if (existsSync(candidate)) return realpathSync(candidate);
  }
  throw new Error("npm is not on PATH");
}

interface PackedFile { path: string }
interface PackResult { filename: string; files: PackedFile[] }

interface Manifest {
  name: string;
  version: string;
  license?: string;
  keywords?: string[];
  homepage?: string;
  bugs?: { url?: string };
  repository?: { type?: string; url?: string };
  engines?: { node?: string };
  exports?: Record<string, unknown>;
  dependencies?: Record<string, string>;
}

/** A consumer program using values and types of the public API; it prints what it computed. */
const CONSUMER_SOURCE = `import {
  FalconBackbone, FalconError, FalconInputError, describeVariant, runtimeInfo,
  type FalconBackboneConfig, type FalconVariant, type NativeModelInfo, type RuntimeInfo, type Tensor,
} from "falcon-native";

const config: FalconBackboneConfig = { vocabularySize: 16, numLayers: 1, numAttentionHeads: 2, hiddenDim: 8, intermediateDim: 16 };
const model = new FalconBackbone(config);
const info: NativeModelInfo = model.info();
const variant: FalconVariant = describeVariant(config).variant;
const runtime: RuntimeInfo = runtimeInfo();
model.call({ tokenIds: [[1, 2, 3]] }).then((hidden: Tensor) => {
  model.dispose();
  const typed = new FalconInputError("x") instanceof FalconError;
  console.log(JSON.stringify({ shape: hidden.shape, parameters: info.parameterCount, variant, backend: runtime.backend, typed }));
});
`;

const CONSUMERS: { name: string; type: "module" | "commonjs"; compilerOptions: Record<string, unknown>; runs: boolean }[] = [
  { name: "node16-esm", type: "module", compilerOptions: { module: "node16", moduleResolution: "node16" }, runs: true },
  { name: "node16-cjs", type: "commonjs", compilerOptions: { module: "node16", moduleResolution: "node16" }, runs: true },
  { name: "bundler", type: "module", compilerOptions: { module: "esnext", moduleResolution: "bundler", noEmit: true }, runs: false },
];

/** Writes one consumer project per entry of CONSUMERS under `dir`, with skipLibCheck as given. */
function writeConsumers(dir: string, skipLibCheck: boolean): void {
  for (const consumer of CONSUMERS) {
    const project = path.join(dir, consumer.name);
    mkdirSync(project, { recursive: true });
    writeFileSync(path.join(project, "package.json"), JSON.stringify({ type: consumer.type }));
    writeFileSync(path.join(project, "index.ts"), CONSUMER_SOURCE);
    writeFileSync(path.join(project, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        strict: true, target: "es2022", outDir: "out", skipLibCheck, types: ["node"],
        typeRoots: [path.join(ROOT, "node_modules", "@types")], ...consumer.compilerOptions,
      },
      files: ["index.ts"],
    }));
  }
}

/**
 * Named types reachable from the public (not private or protected) signatures of the package's
 * exports that the package's index does not export: a user can get such a value but not name its type.
 */
function unexportedPublicTypes(indexDts: string): string[] {
  const packageDir = path.dirname(indexDts);
  const program = ts.createProgram([indexDts], { strict: true, module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16, noEmit: true, types: [] });
  const checker = program.getTypeChecker();
  const unalias = (symbol: ts.Symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);
  const exported = new Set(checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(indexDts)!)!).map(unalias));
  const ownDeclaration = (symbol: ts.Symbol) => symbol.declarations?.some((d) => d.getSourceFile().fileName.startsWith(packageDir)) ?? false;
  const hidden = (node: ts.Declaration | undefined) =>
    node !== undefined && (ts.getCombinedModifierFlags(node) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0;
  const missing = new Map<string, string>();
  const seen = new Set<ts.Type>();

  const visitMembers = (type: ts.Type, where: string) => {
    for (const property of checker.getPropertiesOfType(type)) {
      if (property.name.startsWith("__#") || hidden(property.valueDeclaration)) continue;
      visitType(checker.getTypeOfSymbol(property), `${where}.${property.name}`);
    }
    for (const kind of [ts.SignatureKind.Call, ts.SignatureKind.Construct]) {
      for (const signature of checker.getSignaturesOfType(type, kind)) {
        if (hidden(signature.declaration as ts.Declaration | undefined)) continue;
        for (const parameter of signature.getParameters()) visitType(checker.getTypeOfSymbol(parameter), `${where}(${parameter.name})`);
        visitType(signature.getReturnType(), `${where}()`);
      }
    }
    for (const index of checker.getIndexInfosOfType(type)) visitType(index.type, `${where}[]`);
  };
  const visitType = (type: ts.Type, where: string) => {
    if (seen.has(type)) return;
    seen.add(type);
    const objectFlags = type.flags & ts.TypeFlags.Object ? (type as ts.ObjectType).objectFlags : 0;
    const named = type.aliasSymbol ?? (type.flags & ts.TypeFlags.Object && !(objectFlags & ts.ObjectFlags.Anonymous) ? type.symbol : undefined);
    if (named && ownDeclaration(named) && !exported.has(unalias(named)) && !missing.has(named.name)) missing.set(named.name, where);
    for (const argument of type.aliasTypeArguments ?? []) visitType(argument, where);
    if (type.isUnionOrIntersection()) for (const member of type.types) visitType(member, where);
    if (type.flags & ts.TypeFlags.Object) {
      if (objectFlags & ts.ObjectFlags.Reference) for (const argument of checker.getTypeArguments(type as ts.TypeReference)) visitType(argument, where);
      if (!named || ownDeclaration(named)) visitMembers(type, where);
    }
  };
  for (const symbol of exported) {
    if (symbol.flags & ts.SymbolFlags.Class) {
      visitMembers(checker.getDeclaredTypeOfSymbol(symbol), symbol.name);
      visitMembers(checker.getTypeOfSymbol(symbol), symbol.name);  // constructor and statics
    } else if (symbol.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias)) {
      visitType(checker.getDeclaredTypeOfSymbol(symbol), symbol.name);
    } else {
      visitType(checker.getTypeOfSymbol(symbol), symbol.name);
    }
  }
  return [...missing].map(([name, where]) => `${name} (reached through ${where})`);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name));
}

describe("the npm package, packed, installed offline and used", { timeout: 120_000 }, () => {
  const dir = makeTempDir("falcon-package-test-");
  const consumer = path.join(dir, "consumer");
  const installed = path.join(consumer, "node_modules", "falcon-native");
  // Only node on PATH: nothing the package does at install or load time may need a compiler.
  const binDir = path.join(dir, "bin");
  // The loader's overrides cleared: the consumer loads the packed prebuild.
  // A consumer as a user runs it: the packed prebuild, not the addon or sanitizer runtimes this suite may
  // be running with (test:sanitize preloads ASan, which the prebuild's private C++ runtime cannot share).
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: binDir, FALCON_NUM_THREADS: "1", FALCON_NATIVE_ADDON: "", FALCON_BACKEND: "" };
  for (const name of ["LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS"]) delete env[name];
  let packed: PackResult;
  let manifest: Manifest;

  before(async () => {
    mkdirSync(binDir);
    symlinkSync(process.execPath, path.join(binDir, "node"));
    // The prebuild for this platform, as a release would pack it (named as prebuildify --tag-libc
    // names it): the local build when none is there. CI packs the glibc-baseline linux-x64 prebuild
    // (npm run prebuild:linux in .ci/run), never the host build.
    const prebuildDir = path.join(ROOT, "prebuilds", `${process.platform}-${process.arch}`);
    const staged = !existsSync(prebuildDir);
    const libc = process.platform === "linux" ? (existsSync("/etc/alpine-release") ? ".musl" : ".glibc") : "";
    if (process.env["CI"] && `${process.platform}-${process.arch}${libc}` === "linux-x64.glibc") {
      assert.ok(existsSync(path.join(prebuildDir, "falcon-native.glibc.node")), "CI packs the baseline prebuild: npm run prebuild:linux first");
    }
    if (staged) {
      mkdirSync(prebuildDir, { recursive: true });
      copyFileSync(path.join(ROOT, "build", "Release", "falcon_native.node"), path.join(prebuildDir, `falcon-native${libc}.node`));
    }
    try {
      const pack = await run(process.execPath, [npmCli(), "pack", "--json", "--pack-destination", dir], { cwd: ROOT });
      assert.equal(pack.code, 0, pack.stderr);
      [packed] = JSON.parse(pack.stdout) as PackResult[];
    } finally {
      if (staged) rmSync(prebuildDir, { recursive: true, force: true });
    }
    mkdirSync(consumer);
    manifest = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as Manifest;
    const dependencies = Object.fromEntries(Object.keys(manifest.dependencies ?? {}).map((name) => [name, `file:${path.join(ROOT, "node_modules", name)}`]));
    writeFileSync(path.join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, dependencies }));
    const install = await run(
      process.execPath,
      [npmCli(), "install", "--ignore-scripts", "--offline", "--no-audit", "--no-fund", path.join(dir, packed.filename)],
      { cwd: consumer, env },
    );
    assert.equal(install.code, 0, install.stderr);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("the tarball holds the build, the prebuild, LICENSE and README, and no source maps, sources or tests", () => {
    const files = packed.files.map((file) => file.path);
    for (const file of ["LICENSE", "README.md", "package.json", "dist/src/index.js", "dist/src/index.d.ts", "dist/src/cli.js", "dist/cjs/index.d.ts", "dist/cjs/package.json", "binding.gyp"]) {
      assert.ok(files.includes(file), `${file} is packed`);
    }
    assert.ok(files.some((file) => file.startsWith(`prebuilds/${process.platform}-${process.arch}/`) && file.endsWith(".node")), "a prebuild for this platform");
    assert.deepEqual(files.filter((file) => file.endsWith(".map") || /^(src|test|bench|build)\//.test(file) || file.startsWith("dist/test/")), []);
    for (const file of filesUnder(path.join(installed, "dist"))) {
      assert.doesNotMatch(readFileSync(file, "utf8"), /sourceMappingURL/, `${file} points at no source map`);
    }
    const license = readFileSync(path.join(installed, "LICENSE"), "utf8");
    assert.match(license, /^\s*Apache License\s+Version 2\.0, January 2004/);
    assert.match(license, /END OF TERMS AND CONDITIONS/);
  });

  it("package.json: license, repository, homepage, bugs, keywords, engines and conditional exports", () => {
    const shipped = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8")) as Manifest;
    assert.equal(shipped.license, "Apache-2.0");
    assert.equal(shipped.repository?.type, "git");
    assert.match(shipped.repository?.url ?? "", /^git\+https:\/\/.+\.git$/);
    assert.match(shipped.homepage ?? "", /^https:\/\//);
    assert.match(shipped.bugs?.url ?? "", /^https:\/\//);
    assert.ok((shipped.keywords ?? []).includes("falcon"));
    // require() of an ES module (without top-level await) needs Node 20.19.
    assert.equal(shipped.engines?.node, ">=20.19");
    assert.deepEqual(Object.keys(shipped.exports?.["."] as object), ["import", "require", "types", "default"]);
  });

  it("loads with import and with require, and the CLI runs, with only node on PATH", async () => {
    const script = (load: string) =>
      `${load}; const m = new f.FalconBackbone({ vocabularySize: 8, numLayers: 1, numAttentionHeads: 2, hiddenDim: 8, intermediateDim: 8 });` +
      " m.call({ tokenIds: [[1, 2]] }).then((h) => { console.log(JSON.stringify({ shape: h.shape, backend: f.runtimeInfo().backend })); m.dispose(); });";
    const expected = `${JSON.stringify({ shape: [1, 2, 8], backend: "cpu" })}\n`;
    const [imported, required, version, cli] = await Promise.all([
      run(process.execPath, ["--input-type=module", "-e", script(`import * as f from "falcon-native"`)], { cwd: consumer, env }),
      run(process.execPath, ["-e", script(`const f = require("falcon-native")`)], { cwd: consumer, env }),
      run(process.execPath, ["-p", `require("falcon-native/package.json").version`], { cwd: consumer, env }),
      run(path.join(consumer, "node_modules", ".bin", "falcon-native"), ["run", "--batch", "1", "--length", "4"], { cwd: consumer, env }),
    ]);
    assert.deepEqual([imported.code, imported.stdout], [0, expected], imported.stderr);
    assert.deepEqual([required.code, required.stdout], [0, expected], required.stderr);
    assert.equal(version.stdout, `${manifest.version}\n`);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /^output\s+hidden \[1, 4, 256\], logits \[1, 4, 1024\]$/m);
  });

  it("a newcomer's text generation: run --save writes the tiny checkpoint, generate and inspect run on it", async () => {
    const bin = path.join(consumer, "node_modules", ".bin", "falcon-native");
    const saved = await run(bin, ["run", "--save", "./tiny-falcon", "--batch", "1", "--length", "4"], { cwd: consumer, env });
    assert.equal(saved.code, 0, saved.stderr);
    const [generated, inspected] = await Promise.all([
      run(bin, ["generate", "--preset", "./tiny-falcon", "The falcon", "--max-new-tokens", "8", "--json"], { cwd: consumer, env }),
      run(bin, ["inspect", "./tiny-falcon"], { cwd: consumer, env }),
    ]);
    assert.equal(generated.code, 0, generated.stderr);
    const report = JSON.parse(generated.stdout) as { text: string[]; generatedTokens: number };
    assert.ok(report.text[0]!.startsWith("The falcon") && report.generatedTokens > 0, generated.stdout);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.match(inspected.stdout, /^tokenizer +HF tokenizer\.json$/m);
  });

  it("a strict TypeScript consumer type-checks (node16 CommonJS and ES modules, bundler) and runs", async () => {
    const projects = path.join(consumer, "skip-lib-check");
    writeConsumers(projects, true);
    const checks = await Promise.all(CONSUMERS.map(({ name }) => run(process.execPath, [TSC, "-p", path.join(projects, name)], { cwd: consumer })));
    CONSUMERS.forEach(({ name }, i) => assert.equal(checks[i]!.code, 0, `${name}: ${checks[i]!.stdout}`));
    const runs = await Promise.all(CONSUMERS.filter((c) => c.runs).map(({ name }) => run(process.execPath, [path.join(projects, name, "out", "index.js")], { cwd: consumer, env })));
    for (const result of runs) {
      assert.equal(result.code, 0, result.stderr);
      const parameters = parameterCount({ vocabularySize: 16, numLayers: 1, numAttentionHeads: 2, hiddenDim: 8, intermediateDim: 16 });
      assert.deepEqual(JSON.parse(result.stdout), { shape: [1, 3, 8], parameters, variant: "falcon-rw", backend: "cpu", typed: true });
    }
  });

  it("the shipped declarations type-check themselves (skipLibCheck off)", async () => {
    const projects = path.join(consumer, "lib-check");
    writeConsumers(projects, false);
    // The node16 pair reads both declaration trees (dist/src and its CommonJS copy dist/cjs).
    const names = CONSUMERS.filter((c) => c.runs).map((c) => c.name);
    const checks = await Promise.all(names.map((name) => run(process.execPath, [TSC, "-p", path.join(projects, name), "--noEmit"], { cwd: consumer })));
    names.forEach((name, i) => assert.equal(checks[i]!.code, 0, `${name}: ${checks[i]!.stdout}`));
  });

  it("public declarations: no @internal member, and every type a public signature uses is exported", () => {
    for (const file of filesUnder(path.join(installed, "dist")).filter((f) => f.endsWith(".d.ts"))) {
      assert.doesNotMatch(readFileSync(file, "utf8"), /@internal/, file);
    }
    assert.deepEqual(unexportedPublicTypes(path.join(installed, "dist", "src", "index.d.ts")), []);
  });

  it("public declarations name no module-private symbol (typeof LOADING)", () => {
    assert.doesNotMatch(readFileSync(path.join(installed, "dist", "src", "backbone.d.ts"), "utf8"), /typeof LOADING|unique symbol/);
  });
});
