/**
 * llama.cpp's tools built from the llama.cpp source node-llama-cpp ships
 * (node_modules/node-llama-cpp/llama/gitRelease.bundle), shared by batched-bench.mjs
 * (llama-batched-bench), serve-bench.mjs (llama-server), compare.mjs (llama-bench) and the GGUF
 * check (llama-quantize): cloned into bench/compare/.llama-build/
 * (gitignored) and built with CMake (Release, static, no curl/OpenSSL, no tests or examples, no web
 * UI). Nothing is downloaded. Two builds share the checkout:
 * - "native" (build/): for this CPU only (-DGGML_NATIVE=ON), every target at once so one build
 *   serves every script;
 * - "avx2" (build-avx2/): llama-bench only, with AVX2, FMA, F16C and BMI2 and no AVX-512 or AVX-VNNI,
 *   whatever this CPU has: compare.mjs --isa avx2 runs it beside our AVX2 kernels, an AVX2-only
 *   machine's code on an AVX-512 one;
 * - "avx2-vnni" (build-avx2-vnni/): the same with AVX-VNNI on, for compare.mjs --isa avx2-vnni (the
 *   AVX2 CPUs that have it: Intel's since Alder Lake, including the E-core Xeons without AVX-512).
 *
 * A build is kept (its stamp file) until the bundle's commit, the CMake flags, the targets or the
 * patch change. A checkout already at the bundle's commit with the patch applied is reused and only
 * reconfigured, so a flag or target change rebuilds what it touches rather than everything.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const llamaPackage = path.join(here, "node_modules", "node-llama-cpp", "llama");
const bundle = path.join(llamaPackage, "gitRelease.bundle");
export const buildRoot = path.join(here, ".llama-build");
const sourceDir = path.join(buildRoot, "llama.cpp");

/** The targets of the native build: every script's. */
const LLAMA_TARGETS = ["llama-batched-bench", "llama-server", "llama-bench", "llama-quantize"];

/**
 * llama.cpp's logger is asynchronous and never flushed at exit (its singleton is leaked on purpose,
 * llama.cpp issue #22142), so llama-batched-bench sometimes exits before its last table rows are
 * written. One line flushes it before the tool returns.
 */
const LOG_FLUSH_PATCH = {
  file: path.join("tools", "batched-bench", "batched-bench.cpp"),
  anchor: "    llama_backend_free();\n\n    return 0;\n}",
  replacement: "    llama_backend_free();\n\n    common_log_flush(common_log_main());\n\n    return 0;\n}",
};

/** CMake flags of every build; each build adds its instruction-set flags after the first. */
const COMMON_FLAGS = [
  "-DCMAKE_BUILD_TYPE=Release",
  "-DBUILD_SHARED_LIBS=OFF",
  "-DLLAMA_CURL=OFF",
  "-DLLAMA_OPENSSL=OFF",
  "-DLLAMA_BUILD_TESTS=OFF",
  "-DLLAMA_BUILD_EXAMPLES=OFF",
  "-DLLAMA_BUILD_SERVER=ON",
  "-DLLAMA_BUILD_APP=OFF",
  "-DLLAMA_BUILD_TOOLS=ON",
  // The server embeds a web UI; without these it would try npm or a download. It gets none.
  "-DLLAMA_BUILD_UI=OFF",
  "-DLLAMA_USE_PREBUILT_UI=OFF",
];

/** The builds: their directory (under .llama-build/), instruction-set flags and targets. */
const LLAMA_BUILDS = {
  native: { dir: "build", isaFlags: ["-DGGML_NATIVE=ON"], targets: LLAMA_TARGETS },
  avx2: {
    dir: "build-avx2",
    isaFlags: ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
      "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF"],
    targets: ["llama-bench"],
  },
  "avx2-vnni": {
    dir: "build-avx2-vnni",
    isaFlags: ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
      "-DGGML_AVX_VNNI=ON", "-DGGML_AVX512=OFF"],
    targets: ["llama-bench"],
  },
};

/**
 * The instruction-set extensions this CPU reports (x86 /proc/cpuinfo "flags", ARM "Features"). A
 * -DGGML_NATIVE=ON build compiles for the CPU it was built on (-march=native), so a cached build from
 * another machine (a shared checkout, a new VM) could stop on an illegal instruction here: the native
 * build's stamp records these and is rebuilt when they change.
 */
function hostIsaFlags() {
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return [];
  }
  const line = cpuinfo.split("\n").find((l) => /^(flags|Features)\s*:/.test(l)) ?? "";
  return [...new Set(line.replace(/^[^:]*:/, "").trim().split(/\s+/))]
    .filter((flag) => /^(sse|ssse|avx|fma|f16c|bmi|amx|vnni|vpclmul|gfni|asimd|sve|sme|i8mm|bf16|fphp|dotprod)/.test(flag))
    .sort();
}

/** The CMake flags of a build. */
function cmakeFlags(buildName) {
  const [buildType, ...rest] = COMMON_FLAGS;
  return [buildType, ...LLAMA_BUILDS[buildName].isaFlags, ...rest];
}

/** node-llama-cpp's record of the llama.cpp release its bundle holds. */
export function llamaCppInfo() {
  return JSON.parse(readFileSync(path.join(llamaPackage, "llama.cpp.info.json"), "utf8"));
}

/** Runs a command with its output appended to `logFile`; throws with the log's tail when it fails. */
function run(command, commandArgs, { cwd, logFile }) {
  const fd = openSync(logFile, "a");
  try {
    const result = spawnSync(command, commandArgs, { cwd, stdio: ["ignore", fd, fd] });
    if (result.error) throw result.error;
    if (result.status !== 0) {
      const tail = readFileSync(logFile, "utf8").split("\n").slice(-30).join("\n");
      throw new Error(`${command} ${commandArgs.join(" ")} failed (exit ${result.status}); ${logFile} ends:\n${tail}`);
    }
  } finally {
    closeSync(fd);
  }
}

function bundleCommit() {
  const result = spawnSync("git", ["bundle", "list-heads", bundle], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`cannot read ${bundle} (run \`npm ci\` in bench/compare): ${result.stderr}`);
  const head = result.stdout.split("\n").find((line) => / HEAD$/.test(line)) ?? result.stdout.split("\n")[0];
  return head.split(" ")[0];
}

/** Whether sourceDir is a checkout of `commit` with the patch applied (then its build dir can be reused). */
function checkoutReady(commit) {
  if (!existsSync(path.join(sourceDir, ".git"))) return false;
  const head = spawnSync("git", ["rev-parse", "HEAD"], { cwd: sourceDir, encoding: "utf8" });
  if (head.status !== 0 || head.stdout.trim() !== commit) return false;
  const patched = path.join(sourceDir, LOG_FLUSH_PATCH.file);
  return existsSync(patched) && readFileSync(patched, "utf8").includes(LOG_FLUSH_PATCH.replacement);
}

/** The source directory `buildDir` was configured for, or null. */
function configuredSource(buildDir) {
  const cache = path.join(buildDir, "CMakeCache.txt");
  if (!existsSync(cache)) return null;
  return /^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$/m.exec(readFileSync(cache, "utf8"))?.[1] ?? null;
}

function checkOut(commit, logFile, log) {
  rmSync(sourceDir, { recursive: true, force: true });
  // Builds of the checkout removed are stale.
  for (const build of Object.values(LLAMA_BUILDS)) rmSync(path.join(buildRoot, build.dir), { recursive: true, force: true });
  log(`llama.cpp: cloning ${commit.slice(0, 12)} from node-llama-cpp's bundle into ${path.relative(process.cwd(), sourceDir)}`);
  run("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundle, sourceDir], { cwd: buildRoot, logFile });
  run("git", ["-c", "advice.detachedHead=false", "checkout", "--quiet", commit], { cwd: sourceDir, logFile });
  const patched = path.join(sourceDir, LOG_FLUSH_PATCH.file);
  const source = readFileSync(patched, "utf8");
  if (!source.includes(LOG_FLUSH_PATCH.anchor)) {
    throw new Error(`${patched} has changed: update LOG_FLUSH_PATCH (its last rows could be lost otherwise)`);
  }
  writeFileSync(patched, source.replace(LOG_FLUSH_PATCH.anchor, LOG_FLUSH_PATCH.replacement));
}

/**
 * The binaries of build `buildName` (LLAMA_BUILDS), built now unless the ones there came from this
 * commit, these flags and this patch. Returns { commit, cmakeFlags, buildDir, buildSeconds, builtNow,
 * binaries: { target: path } }.
 */
export function ensureLlamaBuild({ jobs, log, buildName = "native" }) {
  const build = LLAMA_BUILDS[buildName];
  if (!build) throw new Error(`unknown llama.cpp build ${buildName} (use ${Object.keys(LLAMA_BUILDS).join(", ")})`);
  const buildDir = path.join(buildRoot, build.dir);
  // The native build's stamp keeps its first name, so builds made before there were two stay valid.
  const stampFile = path.join(buildRoot, buildName === "native" ? "build-stamp.json" : `${build.dir}-stamp.json`);
  const commit = bundleCommit();
  const generator = spawnSync("ninja", ["--version"]).status === 0 ? ["-G", "Ninja"] : [];
  const flags = cmakeFlags(buildName);
  const wanted = { commit, cmakeFlags: flags, generator, targets: build.targets, patch: LOG_FLUSH_PATCH.replacement,
    ...(buildName === "native" ? { hostIsa: hostIsaFlags() } : {}) };
  const binaries = Object.fromEntries(build.targets.map((target) => [target, path.join(buildDir, "bin", target)]));
  const result = { commit, cmakeFlags: flags, buildDir, binaries };
  const stamp = existsSync(stampFile) ? JSON.parse(readFileSync(stampFile, "utf8")) : null;
  if (stamp && Object.values(binaries).every((file) => existsSync(file)) && JSON.stringify(stamp.wanted) === JSON.stringify(wanted)) {
    log(`llama.cpp ${commit.slice(0, 12)}: ${build.targets.join(", ")} in ${path.relative(process.cwd(), path.join(buildDir, "bin"))} (built in ${stamp.buildSeconds.toFixed(0)} s)`);
    return { ...result, buildSeconds: stamp.buildSeconds, builtNow: false };
  }
  mkdirSync(buildRoot, { recursive: true });
  const logFile = path.join(buildRoot, `${build.dir}.log`);
  writeFileSync(logFile, "");
  rmSync(stampFile, { force: true });
  if (checkoutReady(commit)) {
    log(`llama.cpp: reusing the checkout of ${commit.slice(0, 12)} (flags or targets changed)`);
    // CMake refuses a build directory configured for another path (a copied or moved .llama-build).
    // A build for another CPU keeps its objects (-march=native is the same text to the build tool).
    const otherCpu = JSON.stringify(stamp?.wanted.hostIsa) !== JSON.stringify(wanted.hostIsa);
    if (configuredSource(buildDir) !== sourceDir || otherCpu) rmSync(buildDir, { recursive: true, force: true });
  } else {
    checkOut(commit, logFile, log);
  }
  log(`llama.cpp: building ${build.targets.join(", ")} (${buildName}) with ${jobs} jobs (log: ${path.relative(process.cwd(), logFile)}); minutes on 2 cores`);
  const t0 = performance.now();
  run("cmake", ["-S", sourceDir, "-B", buildDir, ...generator, ...flags], { cwd: buildRoot, logFile });
  run("cmake", ["--build", buildDir, "--parallel", String(jobs), "--target", ...build.targets], { cwd: buildRoot, logFile });
  const buildSeconds = (performance.now() - t0) / 1000;
  for (const file of Object.values(binaries)) {
    if (!existsSync(file)) throw new Error(`the build finished but ${file} is missing; see ${logFile}`);
  }
  writeFileSync(stampFile, JSON.stringify({ wanted, buildSeconds, builtAt: new Date().toISOString() }, null, 2));
  log(`llama.cpp: built in ${buildSeconds.toFixed(0)} s`);
  return { ...result, buildSeconds, builtNow: true };
}
