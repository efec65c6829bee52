/**
 * Samplers as pure functions against references: the random generator against a C implementation of the
 * published xoshiro128** (test/helpers/xoshiro-reference.c), the distributions against softmax computed
 * here in float64 (exactly, over a uniform grid of draws, and within a binomial bound over seeded draws),
 * nuclei built by hand, seeds, padded vocabulary rows.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  FalconInputError,
  SeededRandom,
  argmax,
  createSampler,
  resolveSamplerConfig,
  sampleRandom,
  sampleTopK,
  sampleTopP,
  topKIndices,
  topPNucleus,
} from "../src/index.js";
import { XOSHIRO_REFERENCE, referenceDoubles, runXoshiroReference } from "./helpers/xoshiro-reference.js";

/** Seeded Gaussian-ish logits (sum of uniforms), reproducible. */
function randomLogits(count: number, seed: number, scale = 3): Float32Array {
  const random = new SeededRandom(seed);
  return Float32Array.from({ length: count }, () => (random.next() + random.next() + random.next() - 1.5) * scale);
}

function softmax(logits: ArrayLike<number>, ids: number[], temperature = 1): Map<number, number> {
  const max = Math.max(...ids.map((id) => logits[id]!));
  const weights = ids.map((id) => Math.exp((logits[id]! - max) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  return new Map(ids.map((id, i) => [id, weights[i]! / total]));
}

/** Ids sorted best first (ties: lower id), as a reference for the selection code. */
function ranking(logits: Float32Array, allowed = logits.length): number[] {
  return Array.from({ length: allowed }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
}

function frequencies(draws: number[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const id of draws) counts.set(id, (counts.get(id) ?? 0) + 1);
  return new Map([...counts].map(([id, count]) => [id, count / draws.length]));
}

/**
 * Nothing outside the support, and every frequency within 5 binomial standard deviations of its
 * probability, sqrt(p(1 − p) / n), plus one draw for p near 0 or 1.
 */
function assertMatches(draws: number[], expected: Map<number, number>): void {
  for (const id of draws) assert.ok(expected.has(id), `sampled ${id}, outside the support ${[...expected.keys()]}`);
  const observed = frequencies(draws);
  const n = draws.length;
  for (const [id, probability] of expected) {
    const frequency = observed.get(id) ?? 0;
    const bound = 5 * Math.sqrt((probability * (1 - probability)) / n) + 1 / n;
    assert.ok(Math.abs(frequency - probability) <= bound, `id ${id}: frequency ${frequency} vs probability ${probability} (bound ${bound})`);
  }
}

/**
 * The exact distribution of a sampler as a function of its uniform draw: over u = (j + ½) / N for
 * j < N, an inverse-CDF sampler picks each id round(N · probability) times, give or take one, whatever
 * order it accumulates the candidates in; nothing outside the support.
 */
function assertExactDistribution(pick: (u: number) => number, expected: Map<number, number>, N = 20000): void {
  const counts = new Map<number, number>();
  for (let j = 0; j < N; j++) {
    const id = pick((j + 0.5) / N);
    assert.ok(expected.has(id), `u = ${(j + 0.5) / N} picked ${id}, outside the support ${[...expected.keys()]}`);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  for (const [id, probability] of expected) {
    const count = counts.get(id) ?? 0;
    assert.ok(Math.abs(count - N * probability) <= 1, `id ${id}: ${count} of ${N} draws, probability ${probability}`);
  }
}

describe("sampler configuration", () => {
  it("fills keras-hub's defaults and accepts names", () => {
    assert.deepEqual({ ...resolveSamplerConfig("greedy"), seed: 0 }, { type: "greedy", k: null, p: null, temperature: 0, seed: 0 });
    assert.deepEqual(resolveSamplerConfig({ type: "topK", seed: 3 }), { type: "topK", k: 5, p: null, temperature: 1, seed: 3 });
    assert.deepEqual(resolveSamplerConfig({ type: "topP", seed: 3 }), { type: "topP", k: null, p: 0.1, temperature: 1, seed: 3 });
    assert.deepEqual(resolveSamplerConfig({ type: "topP", p: 0.9, k: 40, temperature: 0.7, seed: 1 }),
      { type: "topP", k: 40, p: 0.9, temperature: 0.7, seed: 1 });
    assert.equal(resolveSamplerConfig(undefined).type, "greedy");
    assert.equal(resolveSamplerConfig("random").temperature, 1);
  });

  it("rejects bad samplers and options with a FalconInputError naming the field", () => {
    const bad: [unknown, RegExp][] = [
      ["beam", /sampler must be one of/],
      [{ type: "topK", k: 0 }, /k must be a positive integer/],
      [{ type: "topK", k: 2.5 }, /k must be a positive integer/],
      [{ type: "topP", p: 0 }, /p must be a number in \(0, 1\]/],
      [{ type: "topP", p: 1.5 }, /p must be a number in \(0, 1\]/],
      [{ type: "random", temperature: -1 }, /temperature must be a finite number/],
      [{ type: "random", seed: -1 }, /seed must be a non-negative integer/],
      [{ type: "random", seed: 1.5 }, /seed must be a non-negative integer/],
      [{ type: "greedy", k: 3 }, /has no option "k"/],
      [{ type: "random", p: 0.5 }, /has no option "p"/],
    ];
    for (const [spec, message] of bad) {
      assert.throws(() => resolveSamplerConfig(spec as never), (error: unknown) => error instanceof FalconInputError && message.test(error.message));
    }
  });
});

describe("argmax and top-k selection", () => {
  it("argmax takes the lowest id on ties, skips NaN and never looks past `allowed`", () => {
    assert.equal(argmax(new Float32Array([1, 3, 3, 2]), 0, 4), 1);
    assert.equal(argmax(new Float32Array([NaN, 1, NaN, 0]), 0, 4), 1);
    assert.equal(argmax(new Float32Array([0, 1, 2, 9, 9]), 0, 3), 2);
    assert.equal(argmax(new Float32Array([7, 0, 5, 1]), 2, 2), 0);  // offset: the row [5, 1]
    assert.equal(argmax(new Float32Array([-Infinity, -Infinity]), 0, 2), 0);
    assert.throws(() => argmax(new Float32Array(3), 1, 3), FalconInputError);
  });

  it("topKIndices equals a full sort on random rows, ties broken by id", () => {
    for (let seed = 0; seed < 20; seed++) {
      const logits = randomLogits(500, seed);
      for (let i = 0; i < 50; i++) logits[(seed * 7 + i * 13) % 500] = 1.25;  // plenty of ties
      for (const k of [1, 5, 37, 500, 900]) {
        assert.deepEqual(Array.from(topKIndices(logits, 0, 500, k)), ranking(logits).slice(0, k));
      }
      assert.deepEqual(Array.from(topKIndices(logits, 0, 300, 10)), ranking(logits, 300).slice(0, 10));
    }
  });
});

describe("top-k sampling", () => {
  it("never leaves the k best and matches their softmax", () => {
    const logits = randomLogits(1000, 11, 1.5);
    const random = new SeededRandom(5);
    for (const [k, temperature] of [[5, 1], [3, 0.5], [8, 2]] as const) {
      const best = ranking(logits).slice(0, k);
      const draws = Array.from({ length: 20000 }, () => sampleTopK(logits, 0, 1000, k, temperature, random.next()));
      assertMatches(draws, softmax(logits, best, temperature));
    }
  });

  it("k larger than the vocabulary samples everything allowed; temperature 0 is greedy", () => {
    const logits = new Float32Array([0, 1, 2, 100]);
    const random = new SeededRandom(1);
    const draws = Array.from({ length: 20000 }, () => sampleTopK(logits, 0, 3, 50, 1, random.next()));
    assertMatches(draws, softmax(logits, [0, 1, 2]));
    assert.equal(sampleTopK(logits, 0, 3, 2, 0, 0.99), 2);
  });
});

describe("top-p sampling", () => {
  it("keeps the smallest set whose mass reaches p, as keras-hub's TopPSampler", () => {
    const probabilities = [0.05, 0.5, 0.1, 0.2, 0.15];
    const logits = Float32Array.from(probabilities, Math.log);
    const nucleusIds = (p: number) => Array.from(topPNucleus(logits, 0, 5, p, 1).ids);
    assert.deepEqual(nucleusIds(0.1), [1]);
    assert.deepEqual(nucleusIds(0.5), [1]);
    assert.deepEqual(nucleusIds(0.6), [1, 3]);
    assert.deepEqual(nucleusIds(0.7), [1, 3]);
    assert.deepEqual(nucleusIds(0.71), [1, 3, 4]);
    assert.deepEqual(nucleusIds(1), [1, 3, 4, 2, 0]);
    const nucleus = topPNucleus(logits, 0, 5, 0.8, 1);
    assert.deepEqual(Array.from(nucleus.ids), [1, 3, 4]);
    nucleus.probabilities.forEach((probability, i) => assert.ok(Math.abs(probability - [0.5, 0.2, 0.15][i]!) < 1e-6));
    // With k, only the k best are candidates and probabilities renormalise over them.
    assert.deepEqual(Array.from(topPNucleus(logits, 0, 5, 0.9, 1, 2).ids), [1, 3]);
  });

  it("samples only the nucleus, in proportion to its probabilities", () => {
    const probabilities = [0.05, 0.5, 0.1, 0.2, 0.15];
    const logits = Float32Array.from(probabilities, Math.log);
    const random = new SeededRandom(2);
    const draws = Array.from({ length: 20000 }, () => sampleTopP(logits, 0, 5, 0.75, 1, random.next()));
    assertMatches(draws, new Map([[1, 0.5 / 0.85], [3, 0.2 / 0.85], [4, 0.15 / 0.85]]));
  });

  it("on a 50304-wide row the nucleus is the minimal best-first set with mass ≥ p", () => {
    const logits = randomLogits(50304, 3, 4);
    for (const [p, temperature] of [[0.9, 1], [0.5, 0.7], [0.99, 1.3]] as const) {
      const { ids, probabilities } = topPNucleus(logits, 0, 50257, p, temperature);
      const order = ranking(logits, 50257);
      assert.deepEqual(Array.from(ids), order.slice(0, ids.length), "best first, nothing skipped");
      const reference = softmax(logits, order, temperature);
      const mass = Array.from(ids).reduce((sum, id) => sum + reference.get(id)!, 0);
      const withoutLast = mass - reference.get(ids[ids.length - 1]!)!;
      assert.ok(mass >= p - 1e-9 && withoutLast < p, `mass ${mass}, without the last ${withoutLast}, p ${p}`);
      probabilities.forEach((probability, i) => assert.ok(Math.abs(probability - reference.get(ids[i]!)!) < 1e-9));
      assert.ok(Array.from(ids).every((id) => id < 50257));
    }
  });
});

describe("exact distributions over a grid of uniform draws, on rows built by hand", () => {
  const logits = new Float32Array([0.5, 3, -1, 2, 2.5, 1]);

  it("random: softmax(logits / temperature) over every id", () => {
    for (const temperature of [1, 0.5, 3]) {
      assertExactDistribution((u) => sampleRandom(logits, 0, 6, temperature, u), softmax(logits, [0, 1, 2, 3, 4, 5], temperature));
    }
  });

  it("top-k: only the k best (3, 2.5 and 2 for k = 3), in softmax proportion; ties at the cut go to the lower id", () => {
    for (const temperature of [1, 0.5]) {
      assertExactDistribution((u) => sampleTopK(logits, 0, 6, 3, temperature, u), softmax(logits, [1, 4, 3], temperature));
    }
    assertExactDistribution((u) => sampleTopK(logits, 0, 6, 1, 1, u), new Map([[1, 1]]));
    const ties = new Float32Array([1, 2, 2, 2, 0]);
    assertExactDistribution((u) => sampleTopK(ties, 0, 5, 2, 1, u), new Map([[1, 0.5], [2, 0.5]]));
  });

  it("top-p: the nucleus worked out by hand, renormalised", () => {
    const probabilities = Float32Array.from([0.05, 0.5, 0.1, 0.2, 0.15], Math.log);
    // 0.5 + 0.2 = 0.7 < 0.75 ≤ 0.5 + 0.2 + 0.15.
    assertExactDistribution((u) => sampleTopP(probabilities, 0, 5, 0.75, 1, u), new Map([[1, 0.5 / 0.85], [3, 0.2 / 0.85], [4, 0.15 / 0.85]]));
    // k = 2: candidates 0.5 and 0.2, renormalised to 5/7 and 2/7; 5/7 < 0.9, so both.
    assertExactDistribution((u) => sampleTopP(probabilities, 0, 5, 0.9, 1, u, 2), new Map([[1, 5 / 7], [3, 2 / 7]]));
    assertExactDistribution((u) => sampleTopP(probabilities, 0, 5, 0.3, 1, u), new Map([[1, 1]]));
  });

  it("top-p on equal logits (probabilities exactly ¼): mass exactly p stops, a hair more takes one more id", () => {
    const flat = new Float32Array(4);
    const ids = (p: number) => Array.from(topPNucleus(flat, 0, 4, p, 1).ids);
    assert.deepEqual(ids(0.25), [0]);
    assert.deepEqual(ids(0.5), [0, 1]);
    assert.deepEqual(ids(0.5 + 1e-9), [0, 1, 2]);
    assert.deepEqual(ids(1), [0, 1, 2, 3]);
    assertExactDistribution((u) => sampleTopP(flat, 0, 4, 0.5, 1, u), new Map([[0, 0.5], [1, 0.5]]));
  });

  it("temperature → 0 is greedy for every sampler and every draw", () => {
    for (const temperature of [0, 1e-3, 1e-2]) {
      const greedy = new Map([[argmax(logits, 0, 6), 1]]);
      assertExactDistribution((u) => sampleRandom(logits, 0, 6, temperature, u), greedy, 10000);
      assertExactDistribution((u) => sampleTopK(logits, 0, 6, 4, temperature, u), greedy, 10000);
      assertExactDistribution((u) => sampleTopP(logits, 0, 6, 0.99, temperature, u), greedy, 10000);
      assertExactDistribution((u) => sampleTopP(logits, 0, 6, 0.99, temperature, u, 3), greedy, 10000);
    }
  });
});

describe("random and temperature sampling", () => {
  it("match softmax(logits / temperature)", () => {
    const logits = randomLogits(12, 4);
    const all = Array.from({ length: 12 }, (_, i) => i);
    const random = new SeededRandom(9);
    for (const temperature of [1, 0.5, 2]) {
      const draws = Array.from({ length: 30000 }, () => sampleRandom(logits, 0, 12, temperature, random.next()));
      assertMatches(draws, softmax(logits, all, temperature));
    }
    assert.equal(sampleRandom(logits, 0, 12, 0, 0.5), argmax(logits, 0, 12));
  });

  it("ignore -Infinity and NaN logits", () => {
    const logits = new Float32Array([-Infinity, 0, NaN, 0]);
    const random = new SeededRandom(3);
    const draws = Array.from({ length: 2000 }, () => sampleRandom(logits, 0, 4, 1, random.next()));
    assert.deepEqual([...new Set(draws)].sort(), [1, 3]);
  });

  it("give +Infinity logits all the mass, shared equally (the softmax's limit)", () => {
    const logits = new Float32Array([3, Infinity, NaN, -Infinity, 50, Infinity, 0]);
    const random = new SeededRandom(5);
    for (const sample of [
      (u: number) => sampleRandom(logits, 0, 7, 1, u),
      (u: number) => sampleTopK(logits, 0, 7, 4, 0.7, u),
      (u: number) => sampleTopP(logits, 0, 7, 1, 1, u),
    ]) {
      const draws = Array.from({ length: 2000 }, () => sample(random.next()));
      const ones = draws.filter((id) => id === 1).length;
      assert.deepEqual([...new Set(draws)].sort(), [1, 5], "only the +Infinity ids");
      assert.ok(ones > 900 && ones < 1100, `id 1 drawn ${ones} times of 2000`);
    }
    // A nucleus that one +Infinity id fills holds that id alone (ties go to the lower id).
    assert.deepEqual(Array.from(topPNucleus(logits, 0, 7, 0.5, 1).ids), [1]);
  });
});

describe("padded vocabulary rows", () => {
  it("no sampler ever picks an id at or above the tokenizer's vocabulary, even when it scores best", () => {
    const allowed = 50257;
    const logits = randomLogits(50304, 8);
    for (let id = allowed; id < 50304; id++) logits[id] = 1000;
    const specs = [
      "greedy",
      { type: "topK", k: 50, seed: 1 },
      { type: "topP", p: 0.9, seed: 1 },
      { type: "topP", p: 1, k: 100, seed: 1 },
      { type: "temperature", temperature: 5, seed: 1 },
      { type: "random", seed: 1 },
    ] as const;
    for (const spec of specs) {
      const sampler = createSampler(spec);
      for (let i = 0; i < 200; i++) {
        const id = sampler.sample(logits, 0, allowed, 0);
        assert.ok(id >= 0 && id < allowed, `${JSON.stringify(spec)} sampled ${id}`);
      }
    }
  });
});

describe("seeds", () => {
  const logits = randomLogits(3000, 21, 1);
  const run = (spec: Parameters<typeof createSampler>[0], rows = 1, steps = 300) => {
    const sampler = createSampler(spec);
    const out: number[][] = Array.from({ length: rows }, () => []);
    for (let step = 0; step < steps; step++) for (let row = 0; row < rows; row++) out[row]!.push(sampler.sample(logits, 0, 3000, row));
    return out;
  };

  it("the same seed reproduces the same tokens, another seed does not", () => {
    for (const type of ["topK", "topP", "temperature", "random"] as const) {
      const spec = type === "topP" ? { type, p: 0.9, seed: 42 } : type === "topK" ? { type, k: 50, seed: 42 } : { type, seed: 42 };
      assert.deepEqual(run(spec), run(spec), type);
      assert.notDeepEqual(run(spec), run({ ...spec, seed: 43 }), type);
    }
  });

  it("each row has its own stream: a row's tokens do not depend on the other rows", () => {
    const alone = run({ type: "random", seed: 7 }, 1)[0];
    const batch = run({ type: "random", seed: 7 }, 3);
    assert.deepEqual(batch[0], alone);
    assert.notDeepEqual(batch[1], batch[0]);
    assert.notDeepEqual(batch[2], batch[1]);
  });

  it("SeededRandom is xoshiro128** seeded by splitmix32: every output equals the C reference's", () => {
    for (const { seed, stream, values } of XOSHIRO_REFERENCE.uint32) {
      const random = new SeededRandom(seed, stream);
      assert.deepEqual(values.map(() => random.nextUint32()), values, `nextUint32, seed ${seed}, stream ${stream}`);
    }
    for (const { seed, stream, values } of XOSHIRO_REFERENCE.double) {
      const random = new SeededRandom(seed, stream);
      assert.deepEqual(values.map(() => random.next()), values, `next, seed ${seed}, stream ${stream}`);
    }
    const unseeded = [createSampler("random").config.seed, createSampler("random").config.seed];
    assert.notEqual(unseeded[0], unseeded[1], "no seed: a fresh random one");
  });

  it("the embedded reference values are what the C reference prints (when a C compiler is installed)", (t) => {
    const printed = runXoshiroReference();
    if (!printed) {
      t.skip("no C compiler: the embedded values stand");
      return;
    }
    assert.deepEqual(printed, XOSHIRO_REFERENCE);
  });

  it("a sampler draws one reference uniform per token from its row's own stream, and inverts the CDF with it", () => {
    const logits = new Float32Array([0.5, 3, -1, 2, 2.5, 1]);
    /** The id where the running sum of softmax over `order` first exceeds u. */
    const inverseCdf = (order: number[], u: number): number => {
      const probabilities = softmax(logits, order);
      let running = 0;
      for (const id of order) {
        running += probabilities.get(id)!;
        if (u < running) return id;
      }
      return order[order.length - 1]!;
    };
    const cases = [
      { spec: { type: "random", seed: 42 } as const, order: [0, 1, 2, 3, 4, 5] },     // ids ascending
      { spec: { type: "topK", k: 3, seed: 1 } as const, order: [1, 4, 3] },            // the k best, best first
    ];
    for (const { spec, order } of cases) {
      const sampler = createSampler(spec);
      const rows = [0, 1, 2];
      const drawn: number[][] = rows.map(() => []);
      for (let step = 0; step < 16; step++) for (const row of rows) drawn[row]!.push(sampler.sample(logits, 0, 6, row));
      for (const row of rows) {
        assert.deepEqual(drawn[row], referenceDoubles(spec.seed, row).map((u) => inverseCdf(order, u)), `${spec.type}, row ${row}`);
      }
    }
  });
});
