/**
 * The ragged step over the paged KV pool (native/core/step.h, backend.h): batch invariance bit for bit,
 * agreement with the float64 reference and the keras-hub cache API, the step runner, and refusal of bad
 * steps. Driven through the test-only exports runStepForTest (a cache's pool with block tables the test
 * chooses) and stepRunnerForTest; every kernel family this CPU supports runs the invariance cases.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, describe, it } from "node:test";

import { FalconBackbone, FalconInputError, runtimeInfo, setIsa, type FalconBackboneConfig, type FalconDType } from "../src/index.js";
import { resolveBackboneConfig, toNativeConfig } from "../src/config.js";
import { callNativeSync, native, type NativeKvCache, type NativeKvDType, type NativeModel, type NativeStepSpec } from "../src/native.js";
import { compareRows, FIXTURES, readJson, type Tolerance } from "./helpers/fixtures.js";
import { referenceForward, referenceModel } from "./helpers/reference-forward.js";
import { seededRandom } from "./helpers/seeded-random.js";

const { isa: defaultIsa, supportedIsas } = runtimeInfo();
after(() => setIsa(defaultIsa));

const BLOCK = 16;
const POOL_BLOCKS = 96;

/**
 * One model per attention layout. Head dimensions 20, 80, 12 and 16 reach every column tail of the
 * value sums (AVX-512's 64-column path and its 16-column tail, AVX2's 8); 300 MLP units give int8
 * rows two quantisation blocks.
 */
const LAYOUTS: [string, FalconBackboneConfig][] = [
  ["alibi MHA", { vocabularySize: 61, numLayers: 2, numAttentionHeads: 5, hiddenDim: 100, intermediateDim: 300, seed: 11 }],
  ["rotary MQA", {
    vocabularySize: 61, numLayers: 2, numAttentionHeads: 2, numKeyValueHeads: 1, hiddenDim: 160, intermediateDim: 300,
    positionEncoding: "rotary", blockLayout: "parallel_one_norm", useBias: false, seed: 12,
  }],
  ["rotary GQA", {
    vocabularySize: 61, numLayers: 2, numAttentionHeads: 10, numKeyValueHeads: 2, hiddenDim: 120, intermediateDim: 300,
    positionEncoding: "rotary", blockLayout: "parallel_two_norms", tieWordEmbeddings: false, seed: 13,
  }],
  // Trained on 8 positions: every sequence here is longer, so its own length stretches the rotary base.
  ["dynamic NTK", {
    vocabularySize: 61, numLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, hiddenDim: 64, intermediateDim: 300,
    positionEncoding: "rotary", ropeScaling: { type: "dynamic", factor: 2 }, maxPositionEmbeddings: 8, seed: 14,
  }],
];
const DTYPES: FalconDType[] = ["float32", "bfloat16", "float16", "int8"];

const integer = (next: () => number, low: number, high: number) => low + Math.floor(next() * (high - low + 1));

/** A sequence to run: its tokens (prompt then the decoded ones fed back), their validity and positions. */
interface Sequence {
  tokens: number[];
  valid: number[];
  promptLength: number;
}

/** Positions as keras-hub derives them: real tokens count up from 0, padding sits at 0. */
function positionsOf(sequence: Sequence): number[] {
  let real = 0;
  return sequence.valid.map((flag) => (flag ? real++ : 0));
}

function makeSequence(next: () => number, vocabulary: number, promptLength: number, decoded: number, leadingPadding = 0): Sequence {
  const length = promptLength + decoded;
  return {
    tokens: Array.from({ length }, () => integer(next, 0, vocabulary - 1)),
    valid: Array.from({ length }, (_, t) => (t < leadingPadding ? 0 : 1)),
    promptLength,
  };
}

/** Per step, the sequences that take part and how many of their next tokens. */
type Schedule = { sequence: number; count: number }[][];

/** One step's output rows, `width` values each: a cache pool's hidden states, or a step runner's logits. */
type StepFunction = (spec: NativeStepSpec) => Float32Array;

const cacheStep = (model: NativeModel, cache: NativeKvCache): StepFunction => (spec) => native().runStepForTest(model, cache, spec);

/**
 * Runs `schedule` through `step` and returns every sequence's output rows, [tokens, width] each: those
 * of the tokens `wanted` asks for (all by default; output rows of their steps), zeros elsewhere.
 */
function runSchedule(step: StepFunction, sequences: Sequence[], schedule: Schedule, tables: Int32Array[], width: number,
  wanted: (sequence: number, token: number) => boolean = () => true): Float32Array[] {
  const done = sequences.map(() => 0);
  const rows = sequences.map((sequence) => new Float32Array(sequence.tokens.length * width));
  const positions = sequences.map(positionsOf);
  for (const stepSequences of schedule) {
    const spec: NativeStepSpec = { sequences: [], tokenIds: new Int32Array(0), positions: new Int32Array(0), valid: new Uint8Array(0), outputRows: new Int32Array(0) };
    const ids: number[] = [], stepPositions: number[] = [], valid: number[] = [], outputs: number[] = [];
    for (const { sequence, count } of stepSequences) {
      const s = sequences[sequence]!;
      const start = done[sequence]!;
      // Its whole prompt while the prompt is prefilled, its own length after (step.h).
      const ropeLength = start + count <= s.promptLength ? s.promptLength : start + count;
      spec.sequences.push({ blockTable: tables[sequence]!, start, count, ropeLength });
      for (let t = start; t < start + count; t++) {
        if (wanted(sequence, t)) outputs.push(ids.length);
        ids.push(s.tokens[t]!);
        stepPositions.push(positions[sequence]![t]!);
        valid.push(s.valid[t]!);
      }
    }
    spec.tokenIds = Int32Array.from(ids);
    spec.positions = Int32Array.from(stepPositions);
    spec.valid = Uint8Array.from(valid);
    spec.outputRows = Int32Array.from(outputs);
    const result = callNativeSync(() => step(spec));
    let output = 0;
    for (const { sequence, count } of stepSequences) {
      for (let t = done[sequence]!; t < done[sequence]! + count; t++) {
        if (!wanted(sequence, t)) continue;
        rows[sequence]!.set(result.subarray(output * width, (output + 1) * width), t * width);
        output++;
      }
      done[sequence]! += count;
    }
  }
  return rows;
}

/** Block tables from a shuffled pool, so no sequence's blocks are contiguous (or in order). */
function assignTables(next: () => number, sequences: Sequence[]): Int32Array[] {
  const free = Array.from({ length: POOL_BLOCKS }, (_, i) => i);
  for (let i = free.length - 1; i > 0; i--) {
    const j = integer(next, 0, i);
    [free[i], free[j]] = [free[j]!, free[i]!];
  }
  return sequences.map((sequence) => Int32Array.from(free.splice(0, Math.ceil(sequence.tokens.length / BLOCK))));
}

/** The prompt in chunks of `chunk`, then one decode step per generated token. */
function chunkedAlone(sequence: Sequence, chunk: number): Schedule {
  const schedule: Schedule = [];
  for (let t = 0; t < sequence.promptLength; t += chunk) schedule.push([{ sequence: 0, count: Math.min(chunk, sequence.promptLength - t) }]);
  for (let t = sequence.promptLength; t < sequence.tokens.length; t++) schedule.push([{ sequence: 0, count: 1 }]);
  return schedule;
}

/** All sequences at once: each step, a random subset advances by a random prompt chunk or one decode token. */
function mixedSchedule(next: () => number, sequences: Sequence[]): Schedule {
  const done = sequences.map(() => 0);
  const schedule: Schedule = [];
  while (done.some((count, i) => count < sequences[i]!.tokens.length)) {
    const step: Schedule[number] = [];
    sequences.forEach((sequence, i) => {
      const left = sequence.tokens.length - done[i]!;
      if (left === 0 || next() < 0.25) return;
      const count = done[i]! < sequence.promptLength ? Math.min(integer(next, 1, 12), sequence.promptLength - done[i]!) : 1;
      step.push({ sequence: i, count });
      done[i]! += count;
    });
    if (step.length > 0) schedule.push(step);
  }
  return schedule;
}

function firstDifference(actual: Float32Array, expected: Float32Array, hiddenDim: number): string {
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) return `token ${Math.floor(i / hiddenDim)}, element ${i % hiddenDim}: ${actual[i]} != ${expected[i]}`;
  }
  return "equal";
}

function assertBitwiseEqual(actual: Float32Array, expected: Float32Array, hiddenDim: number, what: string): void {
  const bytes = (values: Float32Array) => Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  assert.equal(Buffer.compare(bytes(actual), bytes(expected)), 0, `${what}: ${firstDifference(actual, expected, hiddenDim)}`);
}

async function withModel(config: FalconBackboneConfig, dtype: FalconDType, body: (model: NativeModel, cache: NativeKvCache, backbone: FalconBackbone) => Promise<void> | void) {
  const backbone = new FalconBackbone({ ...config, dtype });
  const cache = backbone.createCache({ batchSize: 1, maxLength: POOL_BLOCKS * BLOCK });
  try {
    await body(await backbone.nativeModel(), cache.native, backbone);
  } finally {
    cache.dispose();
    backbone.dispose();
  }
}

/**
 * Runs one sequence X alone, in prompt chunks of 1, 3 and 7, with prompt chunks that want no outputs,
 * and batched with 1 to 9 others on mixed schedules, through `step` (rows `width` wide), and asserts
 * every run gives X the bits of the first.
 */
function assertInvariant(step: StepFunction, layout: string, config: FalconBackboneConfig, seed: number, width: number): void {
  const next = seededRandom(seed);
  // 21 prompt tokens cross a block boundary; ALiBi's sequence starts with padding (a query that sees no valid key).
  const x = makeSequence(next, config.vocabularySize, 21, 4, layout === "alibi MHA" ? 2 : 0);
  const alone = runSchedule(step, [x], chunkedAlone(x, x.promptLength), assignTables(next, [x]), width)[0]!;
  for (const chunk of [1, 3, 7]) {
    const chunked = runSchedule(step, [x], chunkedAlone(x, chunk), assignTables(next, [x]), width)[0]!;
    assertBitwiseEqual(chunked, alone, width, `chunks of ${chunk}`);
  }
  // Prompt chunks that want no outputs still cache every key and value the decode steps read.
  const decodedOnly = runSchedule(step, [x], chunkedAlone(x, 7), assignTables(next, [x]), width, (_, t) => t >= x.promptLength)[0]!;
  const decodeRows = (rows: Float32Array) => rows.subarray(x.promptLength * width);
  assertBitwiseEqual(decodeRows(decodedOnly), decodeRows(alone), width, "decode after prompt chunks without outputs");
  for (let others = 1; others <= 9; others++) {
    const sequences = [x];
    for (let i = 0; i < others; i++) sequences.push(makeSequence(next, config.vocabularySize, integer(next, 1, 20), integer(next, 0, 3)));
    // Shuffled, so X is not always the first sequence (or the first rows) of a step.
    sequences.sort(() => next() - 0.5);
    // The others want only some of their rows, so most steps run their last layer on fewer rows.
    const wanted = new Set(sequences.map((_, i) => i).filter((i) => sequences[i] === x || next() < 0.5));
    const rows = runSchedule(step, sequences, mixedSchedule(next, sequences), assignTables(next, sequences), width,
      (sequence, token) => wanted.has(sequence) || token % 3 === 0);
    assertBitwiseEqual(rows[sequences.indexOf(x)]!, alone, width, `batched with ${others} others`);
  }
}

const KV_DTYPES_16: NativeKvDType[] = ["bfloat16", "float16"];

for (const isa of supportedIsas) {
  describe(`batch invariance, bit for bit (${isa} kernels)`, () => {
    for (const [layout, config] of LAYOUTS) {
      for (const dtype of DTYPES) {
        it(`${layout} ${dtype}: a sequence's hidden states do not depend on its chunking or its batch-mates`, async () => {
          setIsa(isa);
          await withModel(config, dtype, (model, cache) => {
            assertInvariant(cacheStep(model, cache), layout, config, config.seed! * 7 + DTYPES.indexOf(dtype), config.hiddenDim);
          });
        });
      }
      // Keys and values rounded to 16 bits once, widened as attention loads them: the same float32
      // arithmetic per query as a float32 pool, so the same invariance.
      for (const kvDtype of KV_DTYPES_16) {
        it(`${layout}, ${kvDtype} KV pool: a sequence's logits do not depend on its chunking or its batch-mates`, async () => {
          setIsa(isa);
          await withModel(config, "float32", (model) => {
            const runner = callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, kvDtype));
            assertInvariant(runner.run, layout, config, config.seed! * 11 + KV_DTYPES_16.indexOf(kvDtype), config.vocabularySize);
          });
        });
      }
    }
  });
}

describe("the paged step against references", () => {
  const kerasTolerance = readJson<{ tolerance_hint: { sequence_output: Tolerance } }>(
    path.join(FIXTURES, "keras", "falcon_h4_d64_l2", "manifest.json")).tolerance_hint.sequence_output;
  const [, alibi] = LAYOUTS[0]!;

  it("a ragged, chunked batch equals the float64 reference forward of each sequence alone, within the keras fixture's tolerance", async () => {
    await withModel(alibi, "float32", async (model, cache, backbone) => {
      const reference = await referenceModel(backbone);
      const next = seededRandom(5);
      const sequences = Array.from({ length: 6 }, (_, i) => makeSequence(next, alibi.vocabularySize, integer(next, 1, 35), integer(next, 0, 5), i % 3));
      const hidden = runSchedule(cacheStep(model, cache), sequences, mixedSchedule(next, sequences), assignTables(next, sequences), alibi.hiddenDim);
      sequences.forEach((sequence, i) => {
        const expected = referenceForward(reference, [sequence.tokens], [sequence.valid]);
        const real = (row: number) => sequence.valid[row] === 1;
        assert.equal(compareRows(hidden[i]!, expected, alibi.hiddenDim, kerasTolerance, real), undefined, `sequence ${i}`);
      });
    });
  });

  it("callWithCache (the keras-hub cache API) runs the same step: its prefill and decode rows are bit for bit the ragged step's", async () => {
    for (const [layout, config] of LAYOUTS) {
      await withModel(config, "float32", async (model, cache, backbone) => {
        const D = config.hiddenDim;
        const next = seededRandom(6);
        const x = makeSequence(next, config.vocabularySize, 19, 3, layout === "alibi MHA" ? 1 : 0);
        const stepped = runSchedule(cacheStep(model, cache), [x], chunkedAlone(x, 5), assignTables(next, [x]), D)[0]!;
        const kerasCache = backbone.createCache({ batchSize: 1, maxLength: 40 });
        const prompt = { tokenIds: [x.tokens.slice(0, x.promptLength)], paddingMask: [x.valid.slice(0, x.promptLength)] };
        const parts = [(await backbone.callWithCache(prompt, kerasCache, 0)).data];
        for (let t = x.promptLength; t < x.tokens.length; t++) parts.push((await backbone.callWithCache([[x.tokens[t]!]], kerasCache, t)).data);
        kerasCache.dispose();
        const keras = new Float32Array(stepped.length);
        parts.reduce((offset, part) => (keras.set(part, offset), offset + part.length), 0);
        assertBitwiseEqual(keras, stepped, D, layout);
      });
    }
  });

  it("the step runner's logits are the step's hidden states through the head, and its pool is its own", async () => {
    const [, config] = LAYOUTS[2]!;
    await withModel(config, "bfloat16", async (model, cache, backbone) => {
      const runner = callNativeSync(() => native().stepRunnerForTest(model, 8));
      assert.equal(runner.numBlocks(), 8);
      assert.equal(runner.vocabSize(), config.vocabularySize);
      const next = seededRandom(7);
      const x = makeSequence(next, config.vocabularySize, 30, 0);
      const table = Int32Array.from([5, 2]);
      const spec = (start: number, count: number): NativeStepSpec => ({
        sequences: [{ blockTable: table, start, count, ropeLength: x.promptLength }],
        tokenIds: Int32Array.from(x.tokens.slice(start, start + count)),
        positions: Int32Array.from({ length: count }, (_, t) => start + t),
        valid: new Uint8Array(count).fill(1),
        outputRows: Int32Array.from([count - 1]),
      });
      runner.run(spec(0, 17));
      const logits = runner.run(spec(17, 13));
      assert.equal(logits.length, config.vocabularySize);
      const hidden = runSchedule(cacheStep(model, cache), [x], [[{ sequence: 0, count: 17 }], [{ sequence: 0, count: 13 }]], [table], config.hiddenDim)[0]!;
      const last = hidden.subarray(29 * config.hiddenDim);
      const expected = await backbone.tokenEmbedding.reverse({ data: Float32Array.from(last), shape: [1, 1, config.hiddenDim] });
      assertBitwiseEqual(logits, expected.data, config.vocabularySize, "logits");
      assert.throws(() => callNativeSync(() => native().stepRunnerForTest(model, 0)), FalconInputError);
    });
  });
});

describe("the keras-hub cache API on the paged step", () => {
  it("a decoded token has the bits of the same token inside a longer prompt: one attention path for both", async () => {
    // Not dynamic NTK: there a keras-hub call scales its keys to the length at that call, so a prompt
    // cached in two calls holds other keys than one cached in one call (the ragged step's rope_length
    // is what makes chunks agree, tested above).
    for (const [layout, config] of LAYOUTS.filter(([name]) => name !== "dynamic NTK")) {
      await withModel(config, "float32", async (_model, _cache, backbone) => {
        const D = config.hiddenDim;
        const tokens = makeSequence(seededRandom(8), config.vocabularySize, 20, 0).tokens;
        const whole = backbone.createCache({ batchSize: 1, maxLength: 20 });
        const full = (await backbone.callWithCache([tokens], whole, 0)).data;
        const split = backbone.createCache({ batchSize: 1, maxLength: 20 });
        await backbone.callWithCache([tokens.slice(0, 19)], split, 0);
        const last = (await backbone.callWithCache([[tokens[19]!]], split, 19)).data;
        whole.dispose();
        split.dispose();
        assertBitwiseEqual(last, full.subarray(19 * D), D, layout);
      });
    }
  });

  it("a row started past slots no call wrote reads them as padding, never as the memory's old contents", async () => {
    const [, config] = LAYOUTS[0]!;
    const nativeConfig = toNativeConfig(resolveBackboneConfig({ ...config, dtype: "float32" }));
    await withModel(config, "float32", async (_model, _cache, backbone) => {
      // A model whose every key and value is NaN fills a cache's memory with NaN; freed, the same bytes
      // are what the allocator most likely hands the next cache of that size.
      const poisoned = callNativeSync(() => new (native().NativeModel)(nativeConfig));
      const { hiddenDim: D, ffnDim: F, vocabSize: V } = nativeConfig;
      const shape = (name: string): [number, number] => {
        if (name === "token_embedding") return [V, D];
        if (name.endsWith("qkv.weight")) return [3 * D, D];
        if (name.endsWith("qkv.bias")) return [3 * D, 1];
        if (name.endsWith("ffn_up.weight")) return [F, D];
        if (name.endsWith("ffn_up.bias")) return [F, 1];
        if (name.endsWith("ffn_down.weight")) return [D, F];
        if (name.endsWith("attn_out.weight")) return [D, D];
        return [D, 1];
      };
      for (const name of poisoned.weightNames()) {
        const [rows, cols] = shape(name);
        const fill = name.endsWith("qkv.bias") ? NaN : name.endsWith("gamma") ? 1 : 0;
        await poisoned.setWeight(name, 0, new Float32Array(rows * cols).fill(fill), "float32", rows, cols, false);
      }
      const poisonedCache = callNativeSync(() => new (native().NativeKvCache)(poisoned, 1, 48));
      await poisoned.forward(new Int32Array(48), null, null, 1, 48, poisonedCache, new Int32Array(1));
      poisonedCache.dispose();
      const cache = backbone.createCache({ batchSize: 1, maxLength: 48 });
      poisoned.dispose();
      const hidden = (await backbone.callWithCache([[1, 2, 3]], cache, 40)).data;
      cache.dispose();
      const alone = backbone.createCache({ batchSize: 1, maxLength: 3 });
      const expected = (await backbone.callWithCache([[1, 2, 3]], alone, 0)).data;
      alone.dispose();
      // Slots 0..39 are padding: the three tokens attend to themselves only (ALiBi reads positions, not slots).
      assertBitwiseEqual(hidden, expected, D, "started at slot 40");
    });
  });

  it("dynamic NTK scales each row to its own length, not to the longest row of the call", async () => {
    const [, config] = LAYOUTS[3]!;
    await withModel(config, "float32", async (_model, _cache, backbone) => {
      const next = seededRandom(9);
      const long = makeSequence(next, config.vocabularySize, 30, 0).tokens;
      const short = makeSequence(next, config.vocabularySize, 10, 0).tokens;
      const alone = backbone.createCache({ batchSize: 1, maxLength: 10 });
      const expected = (await backbone.callWithCache([short], alone, 0)).data;
      alone.dispose();
      // Row 0 has 20 tokens cached and adds 10 (30 in all); row 1 starts at slot 0 with its 10.
      const cache = backbone.createCache({ batchSize: 2, maxLength: 30 });
      await backbone.callWithCache({ tokenIds: [long.slice(0, 20), long.slice(0, 20)], paddingMask: [Array(20).fill(1), Array(20).fill(0)] }, cache, 0);
      const both = (await backbone.callWithCache([long.slice(20), short], cache, [20, 0])).data;
      cache.dispose();
      assertBitwiseEqual(both.subarray(10 * config.hiddenDim), expected, config.hiddenDim, "the short row");
    });
  });
});

describe("bad steps are refused with FalconInputError naming the problem", () => {
  const [, config] = LAYOUTS[2]!;
  const good = (): NativeStepSpec => ({
    sequences: [
      { blockTable: Int32Array.from([0, 1]), start: 0, count: 3, ropeLength: 3 },
      { blockTable: Int32Array.from([2]), start: 4, count: 1, ropeLength: 5 },
    ],
    tokenIds: Int32Array.from([1, 2, 3, 4]),
    positions: Int32Array.from([0, 1, 2, 4]),
    valid: Uint8Array.from([1, 1, 1, 1]),
    outputRows: Int32Array.from([2, 3]),
  });
  const cases: [string, (spec: NativeStepSpec) => void, RegExp][] = [
    ["no sequences", (s) => { s.sequences = []; s.tokenIds = new Int32Array(0); s.positions = new Int32Array(0); s.valid = new Uint8Array(0); s.outputRows = new Int32Array(0); }, /at least one sequence/],
    ["a zero count", (s) => { s.sequences[1]!.count = 0; }, /count must be positive/],
    ["a negative count", (s) => { s.sequences[0]!.count = -2; }, /count must be positive/],
    ["counts beyond the tokens", (s) => { s.sequences[1]!.count = 5; }, /add up to more than/],
    ["counts short of the tokens", (s) => { s.sequences[0]!.count = 2; }, /add up to 3 but the step has 4/],
    ["a negative start", (s) => { s.sequences[0]!.start = -1; }, /start -1 is out of range/],
    ["a start past int32", (s) => { s.sequences[1]!.start = 2 ** 40; s.sequences[1]!.ropeLength = 2 ** 41; }, /out of range/],
    ["a table too short for its slots", (s) => { s.sequences[1]!.start = 16; s.sequences[1]!.ropeLength = 17; }, /block table has 1 blocks but slots \[0, 17\) need 2/],
    ["an empty table", (s) => { s.sequences[1]!.blockTable = new Int32Array(0); }, /block table has 0 blocks/],
    ["a block outside the pool", (s) => { s.sequences[1]!.blockTable = Int32Array.from([POOL_BLOCKS]); }, /outside the pool's 96 blocks/],
    ["a negative block", (s) => { s.sequences[0]!.blockTable = Int32Array.from([-1, 1]); }, /entry 0 = -1 is outside/],
    ["a block written by two sequences", (s) => { s.sequences[1]!.blockTable = Int32Array.from([0]); }, /block 0 is written twice/],
    ["a rope length shorter than the sequence", (s) => { s.sequences[0]!.ropeLength = 2; }, /rope_length 2 is shorter/],
    ["an id past the vocabulary", (s) => { s.tokenIds[2] = config.vocabularySize; }, /tokenIds\[0\]\[2\] = 61 is out of range/],
    ["a negative id", (s) => { s.tokenIds[0] = -1; }, /out of range/],
    ["fewer positions than tokens", (s) => { s.positions = Int32Array.from([0, 1, 2]); }, /one position and one valid flag per token/],
    ["more valid flags than tokens", (s) => { s.valid = Uint8Array.from([1, 1, 1, 1, 1]); }, /one position and one valid flag per token/],
    ["a valid flag of 2", (s) => { s.valid[1] = 2; }, /valid\[1\] must be 0 or 1/],
    ["a negative position", (s) => { s.positions[3] = -4; }, /positions\[3\] must be non-negative/],
    ["an output row past the tokens", (s) => { s.outputRows = Int32Array.from([4]); }, /output_rows\[0\] = 4 is outside/],
    ["a negative output row", (s) => { s.outputRows = Int32Array.from([0, -1]); }, /output_rows\[1\] = -1/],
    ["a mistyped array", (s) => { (s as unknown as { tokenIds: Float32Array }).tokenIds = new Float32Array(4); }, /spec.tokenIds must be a typed array/],
    ["a fractional start", (s) => { s.sequences[0]!.start = 0.5; }, /start must be a safe integer/],
  ];

  it("through runStepForTest and the step runner, leaving the pool usable", async () => {
    await withModel(config, "float32", async (model, cache) => {
      const runner = callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS));
      for (const [what, spoil, message] of cases) {
        const spec = good();
        spoil(spec);
        assert.throws(() => callNativeSync(() => native().runStepForTest(model, cache, spec)),
          (error: Error) => error instanceof FalconInputError && message.test(error.message), what);
        assert.throws(() => callNativeSync(() => runner.run(spec)),
          (error: Error) => error instanceof FalconInputError && message.test(error.message), `${what} (runner)`);
      }
      assert.equal(callNativeSync(() => native().runStepForTest(model, cache, good())).length, 2 * config.hiddenDim);
      assert.equal(runner.run(good()).length, 2 * config.vocabularySize);
      const other = new FalconBackbone(config);
      const otherModel = await other.nativeModel();
      assert.throws(() => callNativeSync(() => native().runStepForTest(otherModel, cache, good())),
        (error: Error) => error instanceof FalconInputError && /created for another model/.test(error.message));
      other.dispose();
    });
  });
});
