/**
 * The fuzz parent: a few long-lived child runners (runner.ts) that take cases one at a time, and
 * one-shot CLI processes. While a case runs the parent enforces its timeout and polls the process's
 * VmRSS; a case passes when it loads, or is refused with a FalconError that has a message.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { cliArguments } from "./families.js";
import { CAUGHT_MARKER, familyNumber, type CaseOutcome, type CaseRequest, type ChildMessage, type FamilyName } from "./protocol.js";
import { FuzzRandom } from "./random.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RUNNER = path.join(HERE, "runner.js");
const OBSERVER = path.join(HERE, "cli-observer.js");
const CLI = path.resolve(HERE, "..", "..", "..", "src", "cli.js");

export interface FuzzLimits {
  timeoutMs: number;
  /**
   * More time for a family whose library stops a stuck reader itself after a longer bound (the HDF5
   * reader's watchdog): a case of it must end within that bound plus timeoutMs.
   */
  extraTimeoutMs?: Partial<Record<FamilyName, number>>;
  rssLimitBytes: number;
  /** V8's old-space limit in the child, below the RSS limit so a JS-heap bomb dies as itself. */
  heapLimitMiB: number;
  /** RLIMIT_DATA of each child: a backstop for an allocation too large and fast for RSS polling. */
  dataLimitBytes: number;
}

export type FailureKind = "harness-error" | "untyped-error" | "empty-message" | "hang" | "memory-bomb" | "crash" | "accepted-hostile-input";

export interface CaseReport {
  family: string;
  index: number;
  failure?: { kind: FailureKind; errorClass: string; message: string; detail: string };
  notes: string[];
  /** The case the same child ran just before, when the failure may depend on it. */
  previous?: string;
  ms: number;
}

type Ending = { kind: "timeout" } | { kind: "memory"; rss: number } | { kind: "exit"; code: number | null; signal: NodeJS.Signals | null };

class HarnessError extends Error {}

const live = new Set<ChildProcess>();
const temporaryDirectories = new Set<string>();
let exitHookInstalled = false;

/** No child or temporary directory outlives the harness, however the harness ends (a signal included). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", tearDown);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      tearDown();
      process.kill(process.pid, signal);
    });
  }
}

function tearDown(): void {
  killAll();
  for (const directory of temporaryDirectories) rmSync(directory, { recursive: true, force: true });
}

/** Removes `directory` when the process exits or is stopped by a signal, if removeTemporaryDirectory has not. */
export function registerTemporaryDirectory(directory: string): void {
  temporaryDirectories.add(directory);
  installExitHook();
}

export function removeTemporaryDirectory(directory: string): void {
  rmSync(directory, { recursive: true, force: true });
  temporaryDirectories.delete(directory);
}

function track(child: ChildProcess): void {
  live.add(child);
  child.once("exit", () => live.delete(child));
  installExitHook();
}

/** Children started and not yet seen to exit. */
export function liveChildCount(): number {
  return live.size;
}

export function killAll(): void {
  for (const child of live) child.kill("SIGKILL");
}

/**
 * Under AddressSanitizer (npm run test:sanitize preloads it) a child reserves terabytes of shadow
 * address space as it starts, which any RLIMIT_DATA refuses: there the RSS poll alone bounds a case.
 */
const UNDER_ASAN = /libasan/.test(process.env["LD_PRELOAD"] ?? "");

function spawnLimited(args: string[], limits: FuzzLimits, stdio: ("ignore" | "pipe" | "ipc")[], env: NodeJS.ProcessEnv): ChildProcess {
  const dataLimit = UNDER_ASAN ? "" : `ulimit -d ${Math.floor(limits.dataLimitBytes / 1024)} && `;
  // exec keeps the pid, so the parent watches and kills node itself.
  const child = spawn("/bin/sh", ["-c", `${dataLimit}exec "$0" "$@"`, process.execPath, `--max-old-space-size=${limits.heapLimitMiB}`, ...args], {
    stdio, env: { ...process.env, FALCON_NUM_THREADS: "1", ...env },
  });
  track(child);
  return child;
}

function residentBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function limitsFor(family: string, limits: FuzzLimits): FuzzLimits {
  const extra = limits.extraTimeoutMs as Partial<Record<string, number>> | undefined;
  return { ...limits, timeoutMs: limits.timeoutMs + (extra?.[family] ?? 0) };
}

/** Resolves when the process exits, overruns its time, or exceeds the RSS limit (then it is killed). */
function watch(child: ChildProcess, limits: FuzzLimits): { ending: Promise<Ending>; stop(): void } {
  let stop = (): void => undefined;
  const ending = new Promise<Ending>((resolve) => {
    const finish = (result: Ending, kill: boolean): void => {
      stop();
      if (kill) child.once("exit", () => resolve(result)).kill("SIGKILL");
      else resolve(result);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => finish({ kind: "exit", code, signal }, false);
    const timer = setTimeout(() => finish({ kind: "timeout" }, true), limits.timeoutMs);
    const poll = setInterval(() => {
      const rss = residentBytes(child.pid!);
      if (rss > limits.rssLimitBytes) finish({ kind: "memory", rss }, true);
    }, 20);
    child.once("exit", onExit);
    stop = () => {
      clearTimeout(timer);
      clearInterval(poll);
      child.off("exit", onExit);
    };
  });
  return { ending, stop: () => stop() };
}

function tail(text: string): string {
  return text.length > 4000 ? text.slice(-4000) : text;
}

/** The first line of stderr that says why a process died (an abort message, V8's fatal error). */
function deathReason(stderr: string): string {
  const lines = stderr.split("\n").map((line) => line.trim()).filter(Boolean);
  return lines.find((line) => /terminate|abort|fatal|error|signal|segmentation|heap/i.test(line)) ?? lines[0] ?? "";
}

function fromEnding(ending: Ending, stderr: string, limits: FuzzLimits): CaseReport["failure"] {
  if (ending.kind === "timeout") return { kind: "hang", errorClass: "", message: `no result within ${limits.timeoutMs} ms`, detail: "" };
  if (ending.kind === "memory") {
    return { kind: "memory-bomb", errorClass: "", message: `resident memory above ${(limits.rssLimitBytes / 2 ** 30).toFixed(1)} GiB`, detail: `VmRSS ${ending.rss} bytes` };
  }
  const reason = deathReason(stderr);
  const how = ending.signal ? `killed by ${ending.signal}` : `exited with code ${ending.code}`;
  const kind: FailureKind = /heap limit|out of memory|Allocation failed/i.test(stderr) ? "memory-bomb" : "crash";
  return { kind, errorClass: "", message: `${how}${reason ? `: ${reason}` : ""}`, detail: tail(stderr) };
}

function fromOutcome(outcome: CaseOutcome): CaseReport["failure"] {
  if (outcome.status === "ok") return undefined;
  if (outcome.status === "accepted") return { kind: "accepted-hostile-input", errorClass: "", message: outcome.reason, detail: "" };
  if (outcome.falconError && outcome.message.trim() !== "") return undefined;
  return {
    kind: outcome.falconError ? "empty-message" : "untyped-error",
    errorClass: outcome.errorClass, message: outcome.message, detail: outcome.stack,
  };
}

/** One long-lived runner child, respawned after a case kills it. */
class RunnerSlot {
  #child: ChildProcess | undefined;
  #ready: Promise<void> | undefined;
  #stderr = "";
  #previous: string | undefined;

  constructor(private readonly limits: FuzzLimits) {}

  #start(): Promise<void> {
    const child = spawnLimited([RUNNER], this.limits, ["ignore", "ignore", "pipe", "ipc"], {});
    this.#child = child;
    this.#stderr = "";
    this.#previous = undefined;
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (this.#stderr = tail(this.#stderr + chunk)));
    child.once("exit", () => {
      if (this.#child === child) this.#child = undefined;
    });
    return new Promise((resolve, reject) => {
      child.once("message", (message: ChildMessage) => (message.type === "ready" ? resolve() : reject(new Error(`fuzz runner said ${message.type} first`))));
      child.once("exit", (code, signal) => reject(new Error(`fuzz runner exited (${code ?? signal}) before it was ready: ${this.#stderr}`)));
    });
  }

  async run(request: CaseRequest): Promise<CaseReport> {
    if (!this.#child) this.#ready = this.#start();
    await this.#ready;
    const child = this.#child!;
    // A crash report quotes what the child printed while running this case, not before.
    this.#stderr = "";
    const previous = this.#previous;
    this.#previous = `${request.family}:${request.index}`;
    const started = performance.now();
    const notes: string[] = [];
    const limits = limitsFor(request.family, this.limits);
    const watcher = watch(child, limits);
    let onMessage: (message: ChildMessage) => void = () => undefined;
    const result = new Promise<CaseOutcome>((resolve, reject) => {
      onMessage = (message) => {
        if (message.type === "prepared") notes.push(...message.notes);
        else if (message.type === "result") resolve(message.outcome);
        else if (message.type === "harness-error") reject(new HarnessError(message.message));
      };
      child.on("message", onMessage);
    });
    child.send(request);
    const settled = await Promise.race([
      result.then((outcome) => ({ outcome }), (error: HarnessError) => ({ harnessError: error.message })),
      watcher.ending.then((ending) => ({ ending })),
    ]);
    child.off("message", onMessage);
    watcher.stop();
    const report: CaseReport = { family: request.family, index: request.index, notes, ms: performance.now() - started, previous };
    if ("harnessError" in settled) {
      // The harness could not build the case: a bug of the fuzzer, reported as a failure of the run.
      report.failure = { kind: "harness-error", errorClass: "", message: settled.harnessError.split("\n")[0]!, detail: settled.harnessError };
      this.close();
    } else if ("outcome" in settled) {
      report.failure = fromOutcome(settled.outcome);
    } else {
      // Give the stderr pipe a moment to deliver the dying words.
      await new Promise((resolve) => setTimeout(resolve, 20));
      report.failure = fromEnding(settled.ending, this.#stderr, limits);
      this.#child = undefined;
      rmSync(path.join(request.root, `${request.family}-${request.index}`), { recursive: true, force: true });
    }
    return report;
  }

  close(): void {
    this.#child?.kill("SIGKILL");
    this.#child = undefined;
  }
}

/** Runs one CLI case as `node --import cli-observer cli.js ...argv`. */
async function runCliCase(request: CaseRequest, limits: FuzzLimits): Promise<CaseReport> {
  const directory = path.join(request.root, `${request.family}-${request.index}`);
  mkdirSync(directory, { recursive: true });
  const notes: string[] = [];
  const started = performance.now();
  try {
    const rng = new FuzzRandom(request.seed, familyNumber(request.family), request.index);
    const argv = cliArguments(rng, directory, request.seeds, notes);
    notes.unshift(`argv ${JSON.stringify(argv).slice(0, 300)}`);
    // The cache directory is the case's own, so built-in preset names never find a real download.
    const child = spawnLimited(["--import", OBSERVER, CLI, ...argv], limits, ["ignore", "ignore", "pipe"], { XDG_CACHE_HOME: directory, HOME: directory });
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr = tail(stderr + chunk)));
    const watcher = watch(child, limits);
    const ending = await watcher.ending;
    await new Promise((resolve) => setTimeout(resolve, 5));
    const report: CaseReport = { family: request.family, index: request.index, notes, ms: performance.now() - started };
    if (ending.kind !== "exit" || ending.signal !== null || (ending.code !== 0 && ending.code !== 1 && ending.code !== 2)) {
      report.failure = fromEnding(ending, stderr, limits);
      return report;
    }
    if (ending.code === 0) return report;
    const markerAt = stderr.lastIndexOf(CAUGHT_MARKER);
    const printed = stderr.slice(0, markerAt >= 0 ? markerAt : undefined).trim();
    if (markerAt < 0) {
      // The one refusal that throws nothing: an unknown command, answered with the usage text.
      if (ending.code === 2 && printed !== "") return report;
      report.failure = { kind: "crash", errorClass: "", message: `exited with code ${ending.code} without a caught error: ${deathReason(stderr)}`, detail: stderr };
      return report;
    }
    const caught = JSON.parse(stderr.slice(markerAt + CAUGHT_MARKER.length).split("\n")[0]!) as { errorClass: string; falconError: boolean; message: string; code?: string };
    // main() reports node's parseArgs errors as usage errors (exit 2) on purpose: that is the CLI's contract.
    const usage = ending.code === 2 && typeof caught.code === "string" && caught.code.startsWith("ERR_PARSE_ARGS");
    if ((caught.falconError || usage) && caught.message.trim() !== "" && printed !== "") return report;
    report.failure = {
      kind: caught.falconError ? "empty-message" : "untyped-error",
      errorClass: caught.errorClass, message: caught.message, detail: printed,
    };
    return report;
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/** Runs cases over `workers` slots; each slot takes the next case when it finishes one. */
export class FuzzPool {
  readonly #slots: RunnerSlot[];

  constructor(private readonly limits: FuzzLimits, workers: number) {
    this.#slots = Array.from({ length: workers }, () => new RunnerSlot(limits));
  }

  async runAll(requests: readonly CaseRequest[], onReport: (report: CaseReport) => void): Promise<void> {
    let next = 0;
    await Promise.all(this.#slots.map(async (slot) => {
      while (next < requests.length) {
        const request = requests[next++]!;
        try {
          onReport(request.family === "cli" ? await runCliCase(request, this.limits) : await slot.run(request));
        } catch (error) {
          const message = error instanceof Error ? `${error.stack}` : String(error);
          onReport({ family: request.family, index: request.index, notes: [], ms: 0, failure: { kind: "harness-error", errorClass: "", message: message.split("\n")[0]!, detail: message } });
        }
      }
    }));
  }

  close(): void {
    for (const slot of this.#slots) slot.close();
  }
}
