/**
 * `falcon-native build`: compiles the addon from the installed package's sources (node-gyp rebuild in
 * the package folder, into build/Release, the loader's local-build candidate), for a platform no
 * prebuild fits or an install made with scripts off; then checks that the result loads.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { positiveInteger, UsageError } from "./cli-args.js";

export const BUILD_HELP = `build:
  Compiles the native addon from this installed package's sources with node-gyp (needs python3,
  make and a C++17 compiler; on Windows, Visual Studio's C++ tools) into build/Release, which the
  loader then prefers over the prebuilt binary. node-gyp: npm's config "node-gyp", else the copy
  npm bundles, else node-gyp on PATH.
  --jobs N          compile N files at once (default: one per core)
`;

export const BUILD_EXAMPLES = `  npx falcon-native build
`;

/** The package folder: the compiled CLI, dist/src/build-command.js, sits two levels below it. */
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * node-gyp's command line: npm's `node-gyp` setting (npm_config_node_gyp, which npm exports to the
 * commands it runs), the copy npm bundles next to this node or the running npm, or node-gyp on PATH.
 */
export function nodeGypCommand(env: NodeJS.ProcessEnv = process.env): string[] {
  const script = (file: string) => (/\.[cm]?js$/.test(file) ? [process.execPath, file] : [file]);
  if (env["npm_config_node_gyp"]) return script(env["npm_config_node_gyp"]);
  const npmDirs = [
    env["npm_execpath"] ? path.join(path.dirname(env["npm_execpath"]), "..") : undefined,
    path.join(path.dirname(process.execPath), "..", "lib", "node_modules", "npm"),
    path.join(path.dirname(process.execPath), "node_modules", "npm"),
  ];
  for (const dir of npmDirs) {
    const bundled = dir && path.join(dir, "node_modules", "node-gyp", "bin", "node-gyp.js");
    if (bundled && existsSync(bundled)) return [process.execPath, realpathSync(bundled)];
  }
  return [process.platform === "win32" ? "node-gyp.cmd" : "node-gyp"];
}

export async function buildCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { jobs: { type: "string" } } });
  if (positionals.length > 0) throw new UsageError(`build takes no arguments (got ${positionals.join(" ")})`);
  const jobs = values.jobs === undefined ? "max" : String(positiveInteger(values.jobs, 1, "--jobs"));
  const [command, ...prefix] = nodeGypCommand();
  const gypArgs = [...prefix, "rebuild", "--release", "-j", jobs];
  process.stderr.write(`building the addon in ${packageRoot}: ${[command, ...gypArgs].join(" ")}\n`);
  // node-gyp's progress goes to stderr: stdout carries only the result line.
  const status = await new Promise<number | string>((resolve) => {
    const child = spawn(command!, gypArgs, { cwd: packageRoot, stdio: ["ignore", process.stderr, process.stderr], shell: process.platform === "win32" });
    child.on("error", (error) => resolve(error.message));
    child.on("close", (code, signal) => resolve(code ?? signal ?? "unknown"));
  });
  if (status !== 0) {
    throw new Error(
      `node-gyp failed (${typeof status === "number" ? `status ${status}` : status}). It needs python3, make and a C++17 compiler ` +
        "(Debian/Ubuntu: apt-get install python3 make g++; macOS: xcode-select --install; Windows: Visual Studio's C++ tools), " +
        `and write access to ${packageRoot}`,
    );
  }
  const built = path.join(packageRoot, "build", "Release", "falcon_native.node");
  // In a child: a build that crashes on load must not take this process with it.
  const check = spawnSync(process.execPath, ["-e", "require(process.argv[1]).numThreads()", built], { encoding: "utf8" });
  if (check.status !== 0) {
    const reason = check.stderr.split("\n").find((line) => /Error/.test(line)) ?? `the check exited with ${check.status ?? check.signal}`;
    throw new Error(`the built addon ${built} does not load: ${reason.trim()}`);
  }
  process.stdout.write(`built ${built}\n`);
}
