// @ts-check
/**
 * Copies the declarations tsc emits into dist/src to dist/cjs, where a package.json marks them
 * CommonJS. The package is an ES module; Node ≥ 20.19 lets CommonJS code require() it, but a
 * TypeScript consumer compiled as CommonJS with module node16 refuses ES declarations (TS1479).
 * The "require" condition of package.json's exports points such consumers here: the same
 * declarations, read as the CommonJS view require() gives of the module's exports.
 */
import { cpSync, rmSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const from = fileURLToPath(new URL("../dist/src", import.meta.url));
const to = fileURLToPath(new URL("../dist/cjs", import.meta.url));
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true, filter: (file) => statSync(file).isDirectory() || file.endsWith(".d.ts") });
writeFileSync(`${to}/package.json`, `${JSON.stringify({ type: "commonjs" })}\n`);
