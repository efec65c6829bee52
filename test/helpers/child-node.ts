/** Runs a snippet in a child Node process: for checks whose failure would abort, hang or kill the test runner. */
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** URLs of the compiled library, for `import()` in child snippets and worker threads. */
export const LIBRARY_URL = new URL("../../src/index.js", import.meta.url).href;
export const NATIVE_URL = new URL("../../src/native.js", import.meta.url).href;

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `source` as an ES module in a fresh `node`, optionally under a shell prefix such as
 * `ulimit -u 40 &&`, and returns how it ended.
 */
export function runNode(
  source: string,
  options: { env?: Record<string, string>; timeoutMs?: number; shellPrefix?: string; uid?: number; gid?: number } = {},
): ChildResult {
  const spawnOptions: SpawnSyncOptions = {
    encoding: "utf8",
    env: { ...process.env, ...options.env },
    timeout: options.timeoutMs ?? 60_000,
    killSignal: "SIGKILL",
    uid: options.uid,
    gid: options.gid,
  };
  const result = options.shellPrefix
    ? spawnSync("bash", ["-c", `${options.shellPrefix} exec "$0" --input-type=module -e "$1"`, process.execPath, source], spawnOptions)
    : spawnSync(process.execPath, ["--input-type=module", "-e", source], spawnOptions);
  return { status: result.status, signal: result.signal, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** Says how a child ended, for assertion messages. */
export function describeChild(result: ChildResult): string {
  return `status ${result.status}, signal ${result.signal}\nstdout: ${result.stdout.slice(-2000)}\nstderr: ${result.stderr.slice(-2000)}`;
}

/** Threads that processes of `uid` run now (RLIMIT_NPROC counts them all). */
export function threadsOfUser(uid: number): number {
  let total = 0;
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid) total += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // The process ended while we looked.
    }
  }
  return total;
}
