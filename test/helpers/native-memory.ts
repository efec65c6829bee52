/** The addon's allocation counters, read once JavaScript has collected what it dropped. */
import v8 from "node:v8";
import vm from "node:vm";

import { nativeMemoryStats, type NativeMemoryStats } from "../../src/index.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

export type MemoryStats = NativeMemoryStats;

/**
 * Collects garbage until the counters stop changing (finalizers of result arrays run a tick after
 * the collection that finds them), then returns them.
 */
export async function settledMemoryStats(): Promise<MemoryStats> {
  let previous = nativeMemoryStats();
  for (let round = 0; round < 50; round++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    const current = nativeMemoryStats();
    if (round >= 2 && current.liveBytes === previous.liveBytes && current.liveAllocations === previous.liveAllocations) return current;
    previous = current;
  }
  return previous;
}
