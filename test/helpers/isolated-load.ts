/**
 * Loads a preset in a child process under a timeout, for inputs that once hung or killed the
 * loading process: a hang then fails the test instead of wedging the whole suite.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const INDEX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "index.js");

export interface IsolatedOutcome {
  /** The error's class name and message, or "loaded". */
  result: { name: string; message: string } | "loaded" | undefined;
  timedOut: boolean;
  /** Wall time of the child, in milliseconds. */
  elapsedMs: number;
  stderr: string;
}

/** `FalconBackbone.fromPreset` of each directory in turn, in one fresh process; one outcome per directory. */
export function fromPresetIsolated(directories: string[], timeoutMs: number): IsolatedOutcome[] {
  const script = `
    const { FalconBackbone } = await import(${JSON.stringify(INDEX)});
    for (const dir of ${JSON.stringify(directories)}) {
      let result;
      const started = performance.now();
      try {
        (await FalconBackbone.fromPreset(dir)).dispose();
        result = "loaded";
      } catch (error) {
        result = { name: error?.name, message: String(error?.message) };
      }
      process.stdout.write(JSON.stringify({ result, elapsedMs: performance.now() - started }) + "\\n");
    }
  `;
  const started = performance.now();
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    timeout: timeoutMs,
    encoding: "utf8",
    env: { ...process.env, FALCON_NUM_THREADS: "1" },
  });
  const elapsedMs = performance.now() - started;
  const lines = child.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line) as { result: IsolatedOutcome["result"]; elapsedMs: number });
  const timedOut = child.error !== undefined && (child.error as NodeJS.ErrnoException).code === "ETIMEDOUT";
  return directories.map((_, i) => ({
    result: lines[i]?.result,
    timedOut: timedOut && lines[i] === undefined,
    elapsedMs: lines[i]?.elapsedMs ?? elapsedMs,
    stderr: child.stderr.slice(-2000),
  }));
}
