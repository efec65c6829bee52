/** ALiBi slopes and rotary tables of the native core against the transformers reference tables. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";

import { native } from "../src/native.js";
import { FIXTURES, readJson } from "./helpers/fixtures.js";

const PRIMITIVES = path.join(FIXTURES, "hf", "_primitives");
interface Table { file: string; shape: number[] }
const manifest = readJson<{
  alibi: { num_heads: number; slopes_exact: number[] }[];
  rotary: { head_dim: number; base: number; max_position_embeddings: number; linear_scaling_factor: number | null; cos: Table; sin: Table }[];
}>(path.join(PRIMITIVES, "manifest.json"));

function floats(table: Table): Float32Array {
  const bytes = readFileSync(path.join(PRIMITIVES, table.file));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

describe("ALiBi slopes", () => {
  for (const { num_heads: heads, slopes_exact: expected } of manifest.alibi) {
    it(`${heads} heads`, () => {
      const slopes = native().alibiSlopes(heads);
      assert.equal(slopes.length, heads);
      slopes.forEach((slope, h) => assert.ok(Math.abs(slope - expected[h]) <= 1e-7 * expected[h], `head ${h}: ${slope} vs ${expected[h]}`));
    });
  }
  it("matches the spec's worked values", () => {
    assert.deepEqual(Array.from(native().alibiSlopes(3)), [0.0625, 0.00390625, 0.25]);
    assert.deepEqual(Array.from(native().alibiSlopes(6)), [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
  });
});

describe("rotary tables", () => {
  for (const entry of manifest.rotary) {
    const scaling = entry.linear_scaling_factor === null ? "none" : "linear";
    it(`head_dim ${entry.head_dim}, base ${entry.base}, scaling ${scaling} ${entry.linear_scaling_factor ?? ""}`, () => {
      const positions = Int32Array.from({ length: entry.max_position_embeddings }, (_, i) => i);
      const { cos, sin } = native().rotaryTables(entry.head_dim, entry.base, scaling, entry.linear_scaling_factor ?? 1,
        entry.max_position_embeddings, positions, positions.length);
      const [expectedCos, expectedSin] = [floats(entry.cos), floats(entry.sin)];
      const half = entry.head_dim / 2;
      for (let p = 0; p < positions.length; p++) {
        for (let i = 0; i < entry.head_dim; i++) {
          // The reference is cat(freqs, freqs): both halves repeat the same frequencies.
          const ours = p * half + (i % half);
          assert.ok(Math.abs(cos[ours] - expectedCos[p * entry.head_dim + i]) < 2e-6, `cos position ${p} index ${i}`);
          assert.ok(Math.abs(sin[ours] - expectedSin[p * entry.head_dim + i]) < 2e-6, `sin position ${p} index ${i}`);
        }
      }
    });
  }

  it("dynamic NTK scaling leaves short sequences alone and stretches the base past the trained length", () => {
    const [d, base, factor, trained] = [8, 10000, 2, 16];
    const positions = Int32Array.from({ length: 40 }, (_, i) => i);
    const plain = native().rotaryTables(d, base, "none", 1, trained, positions, 40);
    const short = native().rotaryTables(d, base, "dynamic", factor, trained, positions, trained);
    assert.deepEqual(short.cos, plain.cos);
    const long = native().rotaryTables(d, base, "dynamic", factor, trained, positions, 40);
    const stretched = base * Math.pow((factor * 40) / trained - (factor - 1), d / (d - 2));
    for (let p = 0; p < 40; p++) {
      for (let i = 0; i < d / 2; i++) {
        const angle = p / Math.pow(stretched, (2 * i) / d);
        assert.ok(Math.abs(long.cos[p * (d / 2) + i] - Math.cos(angle)) < 1e-6);
      }
    }
  });
});
