/** What the bench/compare scripts share about their command lines. */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** With --help, prints the script's leading doc comment (its usage) and exits. */
export function helpIfAsked(args, scriptUrl) {
  if (!args.help) return;
  console.log(readFileSync(fileURLToPath(scriptUrl), "utf8").split("*/")[0]);
  process.exit(0);
}

export function positiveInt(value, name) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}
