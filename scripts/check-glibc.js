#!/usr/bin/env node
// Usage: node scripts/check-glibc.js ADDON.node [--max 2.28]
// Fails when the addon needs a glibc newer than the baseline (its highest GLIBC_x.y symbol version,
// read with objdump), links the C++ runtime dynamically (GLIBCXX_/CXXABI_ versions or a NEEDED
// libstdc++/libgcc_s), or leaves an unversioned undefined symbol that node does not provide (one a
// newer runtime library would bind at load time, where an older glibc lacks it).
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { max: { type: "string", default: "2.28" } } });
if (positionals.length !== 1) {
  console.error("usage: node scripts/check-glibc.js ADDON.node [--max 2.28]");
  process.exit(2);
}
const [file] = positionals;
const parse = (version) => version.split(".").map(Number);
const compare = (a, b) => {
  const [x, y] = [parse(a), parse(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
};

const symbols = execFileSync("objdump", ["-T", file], { encoding: "utf8" });
const headers = execFileSync("objdump", ["-p", file], { encoding: "utf8" });
const problems = [];

const glibc = [...new Set([...symbols.matchAll(/\bGLIBC_([0-9.]+)\b/g)].map((m) => m[1]))].sort(compare);
const highest = glibc.at(-1);
if (highest === undefined) problems.push("no GLIBC_ symbol versions: not a glibc build?");
else if (compare(highest, values.max) > 0) {
  const newer = symbols.split("\n").filter((line) => [...line.matchAll(/\bGLIBC_([0-9.]+)\b/g)].some((m) => compare(m[1], values.max) > 0));
  problems.push(`needs GLIBC_${highest}, above the baseline GLIBC_${values.max}:\n${newer.map((line) => `    ${line.trim()}`).join("\n")}`);
}
const cxxRuntime = [...new Set([...symbols.matchAll(/\b(GLIBCXX|CXXABI)_[0-9.]+\b/g)].map((m) => m[0]))];
if (cxxRuntime.length > 0) problems.push(`binds the shared C++ runtime (${cxxRuntime.join(", ")}): link it statically`);
const needed = [...headers.matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((m) => m[1]);
const runtimeLibraries = needed.filter((name) => /^lib(stdc\+\+|gcc_s)\./.test(name));
if (runtimeLibraries.length > 0) problems.push(`needs ${runtimeLibraries.join(", ")}: link the C++ runtime statically`);
// Undefined, not weak, unversioned ("Base" or none): node provides the N-API (and libuv) ones.
const unversioned = symbols.split("\n")
  .map((line) => /^[0-9a-f]+\s+(\S*)\s+\S*\s+\*UND\*\s+[0-9a-f]+\s+(?:Base\s+)?(\S+)$/.exec(line.trim()))
  .filter((m) => m && !m[1].includes("w") && !/^(napi_|node_api_|uv_)/.test(m[2]))
  .map((m) => m[2]);
if (unversioned.length > 0) problems.push(`unversioned undefined symbols node does not provide: ${unversioned.join(", ")}`);

if (problems.length > 0) {
  console.error(`check-glibc: ${file}\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`check-glibc: ${file} needs GLIBC_${highest} at most (baseline GLIBC_${values.max}); C++ runtime linked statically; needs ${needed.join(", ")}`);
