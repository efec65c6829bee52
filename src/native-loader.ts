/**
 * Which addon binary src/native.ts loads. Candidates, in order: the file FALCON_NATIVE_ADDON names
 * (alone, when set); the CUDA package for this platform, when it is installed and its driver answers
 * a probe run in a child process; a local build (build/Release, made by `npx falcon-native build` or
 * `npm rebuild`); the CPU prebuild matching this platform, architecture and libc. The two CPU
 * candidates follow node-gyp-build's order: a build the user made on purpose wins over the prebuild.
 * FALCON_BACKEND=cpu skips CUDA; FALCON_BACKEND=cuda tries CUDA only.
 *
 * loadCandidates and loadFailureMessage are pure (facts in, decisions out) so tests can cover every
 * decision; gatherLoaderFacts reads the filesystem and runs the probe.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";

import { FalconConfigError } from "./errors.js";

export type NativeBackendChoice = "cpu" | "cuda";

/** The CUDA probe's answer: usable, or why not. */
export type CudaProbeResult = { usable: true } | { usable: false; reason: string };

/** What the loader decides from: the environment, the files present and the probe's answer. */
export interface LoaderFacts {
  /** `${process.platform}-${process.arch}`. */
  target: string;
  /** "glibc" or "musl" on Linux, "" elsewhere: for messages. */
  libc: string;
  nodeVersion: string;
  /** FALCON_NATIVE_ADDON: one file to load and nothing else (a sanitizer build, for example). */
  addonFile: string | undefined;
  /** FALCON_BACKEND as set ("" counts as unset). */
  backend: string | undefined;
  /** The optional CUDA package for this target, or undefined where none is built. */
  cudaPackage: string | undefined;
  /** The CUDA package's addon, when the package is installed. */
  cudaBinary: string | undefined;
  /** The driver probe's answer; undefined when it was not run (no package, or FALCON_BACKEND=cpu). */
  cudaProbe: CudaProbeResult | undefined;
  /** build/Release/falcon_native.node, and whether it exists. */
  localBuild: string;
  localBuildExists: boolean;
  /** The prebuilds folder, and the prebuild in it matching this target and libc, if any. */
  prebuildDir: string;
  prebuild: string | undefined;
}

/** One candidate: a file to load, or the reason it cannot be tried; and what fixes it. */
export interface LoadCandidate {
  label: string;
  file?: string;
  unavailable?: string;
  fix: string;
}

export interface LoadAttempt {
  candidate: LoadCandidate;
  /** Why it failed: the candidate's `unavailable` reason, or the first line of its load error. */
  reason: string;
}

const BUILD_FIX = "npx falcon-native build (builds it from the installed sources; needs python3, make and a C++17 compiler)";
const REBUILD_FIX = `npm rebuild falcon-native (builds from source when no prebuild loads, unless install scripts are off), or ${BUILD_FIX}`;
const DRIVER_FIX = "install or repair the NVIDIA driver (nvidia-smi should list the GPU), or set FALCON_BACKEND=cpu to run on the CPU";

/** The package holding the CUDA build for a target and libc, where one is made. */
export function cudaPackageFor(target: string, libc: string): string | undefined {
  return target === "linux-x64" && libc === "glibc" ? "@falcon-native/linux-x64-cuda" : undefined;
}

/** True when the CUDA probe is needed to decide: the package is installed and CUDA may be chosen. */
export function needsCudaProbe(facts: Omit<LoaderFacts, "cudaProbe">): boolean {
  return facts.addonFile === undefined && facts.cudaBinary !== undefined && backendChoice(facts.backend) !== "cpu";
}

function backendChoice(backend: string | undefined): NativeBackendChoice | undefined {
  if (backend === undefined || backend === "") return undefined;
  if (backend === "cpu" || backend === "cuda") return backend;
  throw new FalconConfigError(`FALCON_BACKEND is "${backend}": set it to cpu or cuda, or unset it to pick automatically`);
}

/** The candidates to try, in order; throws FalconConfigError for a FALCON_BACKEND other than cpu or cuda. */
export function loadCandidates(facts: LoaderFacts): LoadCandidate[] {
  if (facts.addonFile !== undefined) {
    return [{ label: "FALCON_NATIVE_ADDON", file: facts.addonFile, fix: "point FALCON_NATIVE_ADDON at a built falcon_native.node, or unset it" }];
  }
  const choice = backendChoice(facts.backend);
  const candidates: LoadCandidate[] = [];

  const where = facts.libc === "musl" ? `${facts.target} (musl)` : facts.target;
  const cudaLabel = `CUDA build (${facts.cudaPackage ?? `none made for ${where}`})`;
  if (choice === "cpu") {
    candidates.push({ label: cudaLabel, unavailable: "not tried: FALCON_BACKEND=cpu", fix: "unset FALCON_BACKEND to use a GPU when one answers" });
  } else if (facts.cudaPackage === undefined) {
    candidates.push({ label: cudaLabel, unavailable: `no CUDA build is made for ${where}`, fix: "run on the CPU: unset FALCON_BACKEND" });
  } else if (facts.cudaBinary === undefined) {
    candidates.push({
      label: cudaLabel,
      unavailable: `${facts.cudaPackage} is not installed`,
      fix: `npm install ${facts.cudaPackage} (the same version as falcon-native; it needs an NVIDIA driver)`,
    });
  } else if (facts.cudaProbe === undefined || !facts.cudaProbe.usable) {
    const reason = facts.cudaProbe === undefined ? "the driver probe did not run" : facts.cudaProbe.reason;
    candidates.push({ label: cudaLabel, unavailable: `no usable GPU: ${reason}`, fix: DRIVER_FIX });
  } else {
    candidates.push({ label: cudaLabel, file: facts.cudaBinary, fix: `npm install ${facts.cudaPackage} again (the same version as falcon-native)` });
  }
  if (choice === "cuda") {
    const fix = "unset FALCON_BACKEND (or set it to cpu) to run on the CPU";
    candidates.push({ label: `local build (${facts.localBuild})`, unavailable: "not tried: FALCON_BACKEND=cuda", fix });
    candidates.push({ label: `prebuilt binary (${facts.prebuildDir})`, unavailable: "not tried: FALCON_BACKEND=cuda", fix });
    return candidates;
  }

  candidates.push(
    facts.localBuildExists
      ? { label: `local build (${facts.localBuild})`, file: facts.localBuild, fix: BUILD_FIX }
      : { label: `local build (${facts.localBuild})`, unavailable: "not built", fix: BUILD_FIX },
  );
  candidates.push(
    facts.prebuild !== undefined
      ? { label: `prebuilt binary (${facts.prebuild})`, file: facts.prebuild, fix: REBUILD_FIX }
      : {
          label: `prebuilt binary (${facts.prebuildDir})`,
          unavailable: `none for ${facts.target}${facts.libc ? ` (${facts.libc})` : ""}`,
          fix: REBUILD_FIX,
        },
  );
  return candidates;
}

/** The error message after every candidate failed: each one, why, and its fix. */
export function loadFailureMessage(facts: LoaderFacts, attempts: LoadAttempt[]): string {
  const libc = facts.libc ? `, ${facts.libc}` : "";
  const lines = [`could not load the falcon-native addon for ${facts.target} (Node ${facts.nodeVersion}${libc}). Tried, in order:`];
  attempts.forEach(({ candidate, reason }, i) => {
    lines.push(`  ${i + 1}. ${candidate.label}: ${reason}`, `     fix: ${candidate.fix}`);
  });
  return lines.join("\n");
}

/** The first line of a load error: the rest is a stack or a require stack. */
export function loadErrorReason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0]!.trim() || "failed to load";
}

const probes = new Map<string, CudaProbeResult>();

/**
 * Loads the CUDA addon in a child process and asks it for its backend: a broken or hung driver then
 * crashes or stalls the child, not this process. Once per binary per process. The CUDA build's
 * defaultBackend() answers "cuda" only when the driver initialises and a device is usable.
 */
export function probeCuda(binary: string, timeoutMs = 30_000): CudaProbeResult {
  const cached = probes.get(binary);
  if (cached) return cached;
  const script = "process.stdout.write(String(require(process.argv[1]).defaultBackend()))";
  const child = spawnSync(process.execPath, ["-e", script, binary], {
    encoding: "utf8", timeout: timeoutMs, stdio: ["ignore", "pipe", "pipe"], windowsHide: true,
  });
  let result: CudaProbeResult;
  if ((child.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT") {
    result = { usable: false, reason: `the driver did not answer within ${timeoutMs / 1000} s` };
  } else if (child.error) {
    result = { usable: false, reason: `the probe could not run: ${child.error.message}` };
  } else if (child.signal) {
    result = { usable: false, reason: `loading the CUDA build killed the probe process (${child.signal})` };
  } else if (child.status !== 0) {
    // Node prints the throwing source line first; the "SomeError: message" line says what happened.
    const lines = child.stderr.split("\n").map((line) => line.trim());
    const cause = lines.find((line) => /^[A-Za-z]*Error\b/.test(line)) ?? lines.find(Boolean);
    result = { usable: false, reason: `the probe exited with status ${child.status}${cause ? `: ${cause}` : ""}` };
  } else if (child.stdout !== "cuda") {
    result = { usable: false, reason: `the CUDA build reports backend "${child.stdout.slice(0, 40)}"` };
  } else {
    result = { usable: true };
  }
  probes.set(binary, result);
  return result;
}

/** The prebuild node-gyp-build would pick from `prebuildDir` (platform, arch, libc and N-API tags). */
function matchingPrebuild(prebuildDir: string, require: NodeRequire): string | undefined {
  const gypBuild = require("node-gyp-build") as NodeGypBuildMatchers;
  const list = (dir: string) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  const tuple = list(prebuildDir).map(gypBuild.parseTuple).filter(gypBuild.matchTuple(process.platform, process.arch)).sort(gypBuild.compareTuples)[0];
  if (!tuple) return undefined;
  const folder = path.join(prebuildDir, tuple.name);
  const winner = list(folder).map(gypBuild.parseTags).filter(gypBuild.matchTags("node", process.versions.modules)).sort(gypBuild.compareTags("node"))[0];
  return winner ? path.join(folder, winner.file) : undefined;
}

/** node-gyp-build's matching rules, which it exports beside load(). */
interface NodeGypBuildMatchers {
  parseTuple(name: string): { name: string } | undefined;
  matchTuple(platform: string, arch: string): (tuple: { name: string } | undefined) => boolean;
  compareTuples(a: { name: string } | undefined, b: { name: string } | undefined): number;
  parseTags(file: string): { file: string } | undefined;
  matchTags(runtime: string, abi: string): (tags: { file: string } | undefined) => boolean;
  compareTags(runtime: string): (a: { file: string } | undefined, b: { file: string } | undefined) => number;
}

/** node-gyp-build's test: it tags prebuilds glibc or musl the same way. */
function libcName(): string {
  if (process.platform !== "linux") return "";
  return process.env["LIBC"] || (existsSync("/etc/alpine-release") ? "musl" : "glibc");
}

/** Reads the environment and the package's files; runs the CUDA probe when it decides something. */
export function gatherLoaderFacts(packageRoot: string, require: NodeRequire): LoaderFacts {
  const target = `${process.platform}-${process.arch}`;
  const libc = libcName();
  const cudaPackage = cudaPackageFor(target, libc);
  let cudaBinary: string | undefined;
  if (cudaPackage !== undefined) {
    try {
      cudaBinary = require.resolve(cudaPackage);
    } catch {
      cudaBinary = undefined;
    }
  }
  const localBuild = path.join(packageRoot, "build", "Release", "falcon_native.node");
  const prebuildDir = path.join(packageRoot, "prebuilds");
  const addonFile = process.env["FALCON_NATIVE_ADDON"] ? path.resolve(process.env["FALCON_NATIVE_ADDON"]) : undefined;
  const facts: Omit<LoaderFacts, "cudaProbe"> = {
    target,
    libc,
    nodeVersion: process.versions.node,
    addonFile,
    backend: process.env["FALCON_BACKEND"],
    cudaPackage,
    cudaBinary,
    localBuild,
    localBuildExists: existsSync(localBuild),
    prebuildDir,
    prebuild: matchingPrebuild(prebuildDir, require),
  };
  return { ...facts, cudaProbe: needsCudaProbe(facts) ? probeCuda(cudaBinary!) : undefined };
}

/**
 * Tries each candidate in order and returns the first addon that loads, or throws `makeError(message)`
 * listing every candidate, why it failed and its fix.
 */
export function loadAddon<T>(
  facts: LoaderFacts,
  load: (file: string) => T,
  makeError: (message: string, cause: unknown) => Error,
): T {
  const attempts: LoadAttempt[] = [];
  let lastError: unknown;
  for (const candidate of loadCandidates(facts)) {
    if (candidate.file === undefined) {
      attempts.push({ candidate, reason: candidate.unavailable ?? "unavailable" });
      continue;
    }
    try {
      return load(candidate.file);
    } catch (error) {
      lastError = error;
      attempts.push({ candidate, reason: loadErrorReason(error) });
    }
  }
  throw makeError(loadFailureMessage(facts, attempts), lastError);
}
