/**
 * Preloaded (`node --import`) into a fuzzed CLI process. The CLI catches every error in main() and
 * prints only its message, so the error's class is lost; main's catch tests `error instanceof
 * UsageError` (a FalconError subclass), and this hook records the value tested, unchanged in
 * behaviour. On a non-zero exit the last tested value is written to stderr for the parent to classify.
 */
import { FalconError } from "../../../src/errors.js";
import { CAUGHT_MARKER } from "./protocol.js";

let tested: { value: unknown } | undefined;
const ordinaryInstanceOf = Function.prototype[Symbol.hasInstance];
Object.defineProperty(FalconError, Symbol.hasInstance, {
  value(this: (...args: unknown[]) => unknown, value: unknown): boolean {
    tested = { value };
    return ordinaryInstanceOf.call(this, value);
  },
});

process.on("exit", (code) => {
  if (code === 0 || tested === undefined) return;
  const value = tested.value;
  const isError = value instanceof Error;
  const report = {
    errorClass: isError ? value.constructor.name : `non-Error ${typeof value}`,
    falconError: ordinaryInstanceOf.call(FalconError, value),
    message: isError ? value.message : String(value),
    code: isError ? (value as NodeJS.ErrnoException).code : undefined,
  };
  process.stderr.write(`\n${CAUGHT_MARKER}${JSON.stringify(report)}\n`);
});
