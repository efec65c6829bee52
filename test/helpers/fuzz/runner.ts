/**
 * The fuzz child: runs cases one at a time as the parent sends them (see pool.ts). Each case is
 * rebuilt from (seed, family, index) in its own directory, then loaded; the result says whether it
 * loaded, or what it threw. Hangs, crashes and memory growth are the parent's to observe.
 */
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { Worker } from "node:worker_threads";

import { HARNESS_PROBE, IN_PROCESS_FAMILIES } from "./families.js";
import { FuzzRandom } from "./random.js";
import { PROBE_FAMILY_NUMBER, familyNumber, type CaseOutcome, type CaseRequest, type ChildMessage } from "./protocol.js";

import { FalconError } from "../../../src/errors.js";

function send(message: ChildMessage): void {
  process.send!(message);
}

/** Dies with the parent even while the main thread is stuck in a hung case (its event loop cannot run). */
function watchParent(): void {
  const parent = process.ppid;
  const watchdog = new Worker(
    `const { workerData } = require("node:worker_threads");
     setInterval(() => { if (process.ppid !== workerData) process.kill(process.pid, "SIGKILL"); }, 500);`,
    { eval: true, workerData: parent },
  );
  watchdog.unref();
}

async function runCase(request: CaseRequest): Promise<void> {
  const family = [...IN_PROCESS_FAMILIES, HARNESS_PROBE].find((f) => f.name === request.family);
  if (!family) throw new Error(`unknown fuzz family ${request.family}`);
  const directory = path.join(request.root, `${request.family}-${request.index}`);
  rmSync(directory, { recursive: true, force: true });
  mkdirSync(directory, { recursive: true });
  const notes: string[] = [];
  const rng = new FuzzRandom(request.seed, family === HARNESS_PROBE ? PROBE_FAMILY_NUMBER : familyNumber(request.family), request.index);
  let outcome: CaseOutcome;
  try {
    const prepared = family.prepare({ rng, index: request.index, directory, seeds: request.seeds, notes });
    send({ type: "prepared", notes });
    try {
      const loaded = await prepared.run();
      outcome = loaded && prepared.mustFail ? { status: "accepted", reason: prepared.mustFail } : { status: "ok" };
    } catch (error) {
      outcome = describeError(error);
    }
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
  // Sent only once the directory is gone: the parent may end this process as soon as it has the result.
  send({ type: "result", outcome });
}

function describeError(error: unknown): CaseOutcome {
  if (error instanceof Error) {
    return {
      status: "threw",
      errorClass: error.constructor?.name ?? error.name,
      falconError: error instanceof FalconError,
      message: error.message,
      stack: (error.stack ?? "").split("\n").slice(0, 8).join("\n"),
    };
  }
  return { status: "threw", errorClass: `non-Error ${typeof error}`, falconError: false, message: String(error), stack: "" };
}

watchParent();
process.on("disconnect", () => process.exit(0));
process.on("message", (request: CaseRequest) => {
  runCase(request).catch((error) => {
    // A failure to build the case is the harness's bug: report it loudly rather than as a finding.
    send({ type: "harness-error", message: error instanceof Error ? `${error.stack}` : String(error) });
  });
});
send({ type: "ready" });
