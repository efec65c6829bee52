/**
 * The engine's native sampler (native/core/sampler.cpp) against src/samplers.ts: for every sampler
 * type, seed and stream, over rows with ties, NaN and infinities, one native SequenceSampler picks
 * exactly the tokens createSampler(config).sample picks on the same rows. token_logprobs against a
 * float64 log-softmax computed here.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { FalconInputError, SeededRandom, createSampler, resolveSamplerConfig, type SamplerSpec } from "../src/index.js";
import { native, toFalconError } from "../src/native.js";

const addon = native();

type RowKind = "gaussian" | "ties" | "special" | "allNegativeInfinity" | "allNaN" | "positiveInfinity" | "peaked" | "flat";
const ROW_KINDS: readonly RowKind[] = ["gaussian", "ties", "special", "allNegativeInfinity", "allNaN", "positiveInfinity", "peaked", "flat"];

/** One row of `length` logits of the given kind, from `random`. */
function fillRow(row: Float32Array, kind: RowKind, random: SeededRandom): void {
  const gaussian = () => (random.next() + random.next() + random.next() - 1.5) * 4;
  for (let i = 0; i < row.length; i++) {
    switch (kind) {
      case "gaussian":
        row[i] = gaussian();
        break;
      case "ties":
        row[i] = Math.round(gaussian() / 2);  // a handful of levels: many equal logits
        break;
      case "special": {
        const r = random.next();
        row[i] = r < 0.05 ? NaN : r < 0.15 ? -Infinity : r < 0.17 ? Math.round(gaussian()) : gaussian();
        break;
      }
      case "allNegativeInfinity":
        row[i] = random.next() < 0.3 ? NaN : -Infinity;
        break;
      case "allNaN":
        row[i] = NaN;
        break;
      case "positiveInfinity": {
        const r = random.next();
        row[i] = r < 0.03 ? Infinity : r < 0.06 ? NaN : r < 0.1 ? -Infinity : gaussian();
        break;
      }
      case "peaked":
        row[i] = i % 97 === 13 ? 40 : gaussian();
        break;
      case "flat":
        row[i] = 0.25;
        break;
    }
  }
}

/** `rows` rows of `rowLength` logits, every kind in turn (so rows after an unusual one reuse scratch). */
function makeRows(rows: number, rowLength: number, seed: number, kinds: readonly RowKind[] = ROW_KINDS): Float32Array {
  const random = new SeededRandom(seed, 99);
  const logits = new Float32Array(rows * rowLength);
  for (let row = 0; row < rows; row++) {
    const kind = row < kinds.length ? kinds[row]! : kinds[Math.floor(random.next() * kinds.length)]!;
    fillRow(logits.subarray(row * rowLength, (row + 1) * rowLength), kind, random);
  }
  return logits;
}

function nativeTokens(logits: Float32Array, allowed: number | Int32Array, rows: number, spec: SamplerSpec, stream: number): number[] {
  return Array.from(addon.sampleForTest(logits, allowed, rows, resolveSamplerConfig(spec), stream));
}

function typeScriptTokens(logits: Float32Array, allowed: number | Int32Array, rows: number, spec: SamplerSpec, stream: number): number[] {
  const sampler = createSampler(spec);
  const rowLength = logits.length / rows;
  return Array.from({ length: rows }, (_, row) =>
    sampler.sample(logits, row * rowLength, typeof allowed === "number" ? allowed : allowed[row]!, stream));
}

// Seeds with a high part (≥ 2^32) and at the edges of the low part, each on every stream in turn.
const SEEDS = [0, 1, 42, 0xffffffff, 0x100000000, 0x123456789ab, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER];
const STREAMS = [0, 1, 2, 3];

/** Every config over the same rows, for each seed (on streams 0..3 in turn): native tokens equal TypeScript's. */
function assertSameTokens(specs: SamplerSpec[], logits: Float32Array, allowed: number | Int32Array, rows: number, offset = 0): void {
  specs.forEach((spec, specIndex) => {
    SEEDS.forEach((seed, seedIndex) => {
      const stream = STREAMS[(seedIndex + specIndex + offset) % STREAMS.length]!;
      const config = (typeof spec === "string" ? { type: spec } : spec) as SamplerSpec & object;
      const seeded = (config.type === "greedy" ? config : { ...config, seed }) as SamplerSpec;
      const expected = typeScriptTokens(logits, allowed, rows, seeded, stream);
      const actual = nativeTokens(logits, allowed, rows, seeded, stream);
      assert.deepEqual(actual, expected, `${JSON.stringify(seeded)} stream ${stream}`);
    });
  });
}

const TEMPERATURES = [1, 0.7, 0, 1e-30, 3, 1e30];
const ROWS = 24;

describe("native sampler equals src/samplers.ts", () => {
  for (const [rowLength, allowed] of [[37, 37], [300, 291], [1000, 1000]] as const) {
    const logits = makeRows(ROWS, rowLength, rowLength);
    // Ids at or past `allowed` are never candidates: make them the best logits of the row.
    for (let row = 0; row < ROWS; row++) logits.fill(1e30, row * rowLength + allowed, (row + 1) * rowLength);

    it(`greedy, rows of ${allowed} allowed of ${rowLength}`, () => {
      assertSameTokens(["greedy"], logits, allowed, ROWS);
    });

    it(`topK, rows of ${allowed} allowed of ${rowLength}`, () => {
      const ks = [1, 3, 5, 128, 129, 200, allowed - 1, allowed, allowed + 7, 1e6];
      assertSameTokens(
        ks.flatMap((k) => TEMPERATURES.map((temperature) => ({ type: "topK" as const, k, temperature }))),
        logits, allowed, ROWS);
    });

    it(`topP, rows of ${allowed} allowed of ${rowLength}`, () => {
      const ps = [1e-12, 0.1, 0.5, 0.9, 1 - 1e-12, 1];
      const ks = [undefined, 1, 3, 129, allowed + 1];
      assertSameTokens(
        ps.flatMap((p) => ks.flatMap((k) => [1, 0, 1e-30, 0.5, 1e30].map((temperature) =>
          (k === undefined ? { type: "topP" as const, p, temperature } : { type: "topP" as const, p, k, temperature })))),
        logits, allowed, ROWS);
    });

    it(`temperature and random, rows of ${allowed} allowed of ${rowLength}`, () => {
      assertSameTokens(
        (["temperature", "random"] as const).flatMap((type) => TEMPERATURES.map((temperature) => ({ type, temperature }))),
        logits, allowed, ROWS);
    });
  }

  it("scratch that grows between rows (allowed per row) picks the same tokens", () => {
    // Rows of different widths grow the scratch between rows, +Infinity rows among them.
    const rowLength = 400;
    const kinds: RowKind[] = ["gaussian", "positiveInfinity", "ties", "positiveInfinity", "special", "positiveInfinity", "gaussian", "positiveInfinity"];
    const logits = makeRows(kinds.length, rowLength, 7, kinds);
    const allowed = Int32Array.from([20, 20, 150, 150, 140, 400, 10, 400]);
    const specs: SamplerSpec[] = [
      "greedy",
      { type: "topK", k: 130 },
      { type: "topK", k: 7, temperature: 0.5 },
      { type: "topP", p: 0.8 },
      { type: "topP", p: 0.3, k: 140 },
      { type: "random" },
      { type: "temperature", temperature: 2 },
    ];
    assertSameTokens(specs, logits, allowed, kinds.length);
  });

  it("the nucleus cut lands where TypeScript's does when p is exactly a candidate's probability (exp bit for bit)", () => {
    // Rows [0, -d]: TypeScript's nucleus for p = 1 / (1 + exp(-d / T)) is the first id alone, so it
    // always picks 0. An exp one ulp off moves the first id's probability below p, lets the second id
    // in, and draws pick it about a third of the time: the C library's exp differs from V8's on about
    // one argument in ten.
    const random = new SeededRandom(5);
    const rows = 8;
    for (let n = 0; n < 400; n++) {
      const d = Math.fround(random.next());  // as the float32 logit holds it
      const temperature = n % 2 === 0 ? 1 : 0.37;
      const p = 1 / (1 + Math.exp(-d / temperature));
      const logits = new Float32Array(rows * 2);
      for (let row = 0; row < rows; row++) logits[row * 2 + 1] = -d;
      const spec: SamplerSpec = { type: "topP", p, temperature, seed: n };
      const expected = typeScriptTokens(logits, 2, rows, spec, 0);
      assert.deepEqual(expected, new Array(rows).fill(0));
      assert.deepEqual(nativeTokens(logits, 2, rows, spec, 0), expected, `d ${d} temperature ${temperature}`);
    }
  });

  it("draws are not degenerate: seeds and streams change random tokens", () => {
    const logits = makeRows(16, 64, 5, ["flat"]);
    const seen = new Set<string>();
    for (const seed of [1, 2, 3]) {
      for (const stream of STREAMS) seen.add(nativeTokens(logits, 64, 16, { type: "random", seed }, stream).join(","));
    }
    assert.equal(seen.size, 12);
  });
});

describe("native sampler refuses bad configurations with FalconInputError", () => {
  const logits = makeRows(2, 16, 3);
  const resolved = { type: "topK", k: 5, p: null, temperature: 1, seed: 1 };
  const bad: [string, Record<string, unknown>][] = [
    ["unknown type", { ...resolved, type: "beam" }],
    ["negative temperature", { ...resolved, temperature: -0.5 }],
    ["NaN temperature", { ...resolved, temperature: NaN }],
    ["infinite temperature", { ...resolved, temperature: Infinity }],
    ["topK k 0", { ...resolved, k: 0 }],
    ["topK k negative", { ...resolved, k: -3 }],
    ["topK k fractional", { ...resolved, k: 2.5 }],
    ["topP p 0", { ...resolved, type: "topP", k: null, p: 0 }],
    ["topP p above 1", { ...resolved, type: "topP", k: null, p: 1.5 }],
    ["topP p NaN", { ...resolved, type: "topP", k: null, p: NaN }],
    ["topP k negative", { ...resolved, type: "topP", k: -1, p: 0.5 }],
    ["negative seed", { ...resolved, seed: -1 }],
    ["fractional seed", { ...resolved, seed: 1.5 }],
    ["seed past 2^53 - 1", { ...resolved, seed: 2 ** 53 }],
    ["NaN seed", { ...resolved, seed: NaN }],
    ["non-number seed", { ...resolved, seed: "1" }],
  ];
  for (const [name, config] of bad) {
    it(name, () => {
      assert.throws(() => {
        try {
          addon.sampleForTest(logits, 16, 2, config as Parameters<typeof addon.sampleForTest>[3], 0);
        } catch (error) {
          throw toFalconError(error);
        }
      }, FalconInputError);
    });
  }

  it("rows that do not fit the logits", () => {
    for (const [allowed, rows] of [[0, 2], [17, 2], [16, 3], [16, 0]] as const) {
      assert.throws(() => {
        try {
          addon.sampleForTest(logits, allowed, rows, resolved, 0);
        } catch (error) {
          throw toFalconError(error);
        }
      }, FalconInputError, `allowed ${allowed} rows ${rows}`);
    }
  });

  it("a valid configuration is accepted (the cases above fail for their field alone)", () => {
    assert.equal(addon.sampleForTest(logits, 16, 2, resolved, 0).length, 2);
  });
});

/** log-softmax in float64 with NaN as -Infinity; +Infinity logits share the mass; no finite logit: id 0 is certain. */
function referenceLogprobs(row: Float32Array, allowed: number): number[] {
  const values = Array.from(row.subarray(0, allowed), (v) => (Number.isNaN(v) ? -Infinity : v));
  const infinite = values.filter((v) => v === Infinity).length;
  if (infinite > 0) return values.map((v) => (v === Infinity ? -Math.log(infinite) : -Infinity));
  const max = Math.max(...values);
  if (max === -Infinity) return values.map((_, id) => (id === 0 ? 0 : -Infinity));
  const logSumExp = max + Math.log(values.reduce((sum, v) => sum + Math.exp(v - max), 0));
  return values.map((v) => (v === -Infinity ? -Infinity : v - logSumExp));
}

function assertLogprob(actual: number, expected: number, what: string): void {
  if (!Number.isFinite(expected)) {
    assert.equal(actual, expected, what);
    return;
  }
  // float32 rounding of a float64 value: half an ulp, relative.
  assert.ok(Math.abs(actual - expected) <= 2 ** -23 * Math.abs(expected) + 1e-12, `${what}: ${actual} vs ${expected}`);
}

describe("native token_logprobs", () => {
  const rowLength = 300;
  const logits = makeRows(ROW_KINDS.length * 2, rowLength, 21);

  for (let row = 0; row < ROW_KINDS.length * 2; row++) {
    const kind = ROW_KINDS[row % ROW_KINDS.length]!;
    it(`row ${row} (${kind}): the chosen token's logprob and the top ones, best first, ties to the lower id`, () => {
      const values = logits.subarray(row * rowLength, (row + 1) * rowLength);
      const allowed = row % 2 === 0 ? rowLength : 257;
      const expected = referenceLogprobs(values, allowed);
      const ranking = Array.from({ length: allowed }, (_, id) => id)
        .sort((a, b) => {
          const va = Number.isNaN(values[a]!) ? -Infinity : values[a]!;
          const vb = Number.isNaN(values[b]!) ? -Infinity : values[b]!;
          return va === vb ? a - b : vb > va ? 1 : -1;
        });
      for (const chosen of [0, 5, allowed - 1, ranking[0]!]) {
        for (const top of [0, 1, 5, 20, allowed, allowed + 10]) {
          const result = addon.tokenLogprobsForTest(values, allowed, chosen, top);
          assertLogprob(result.logprob, expected[chosen]!, `chosen ${chosen}`);
          assert.deepEqual(Array.from(result.tokens), ranking.slice(0, Math.min(top, allowed)), `top ${top}`);
          result.logprobs.forEach((logprob, n) => assertLogprob(logprob, expected[result.tokens[n]!]!, `top ${top} #${n}`));
        }
      }
    });
  }

  it("probabilities sum to 1 over the allowed ids", () => {
    const values = logits.subarray(0, rowLength);
    const { logprobs } = addon.tokenLogprobsForTest(values, rowLength, 0, rowLength);
    const total = Array.from(logprobs).reduce((sum, logprob) => sum + Math.exp(logprob), 0);
    assert.ok(Math.abs(total - 1) < 1e-5, `${total}`);
  });

  it("refuses a chosen id outside the allowed ids and a negative top", () => {
    const values = logits.subarray(0, rowLength);
    for (const [chosen, top] of [[-1, 1], [rowLength, 1], [0, -1]] as const) {
      assert.throws(() => {
        try {
          addon.tokenLogprobsForTest(values, rowLength, chosen, top);
        } catch (error) {
          throw toFalconError(error);
        }
      }, FalconInputError, `chosen ${chosen} top ${top}`);
    }
  });
});
