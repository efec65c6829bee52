/** The FalconBackbone API: construction and config validation, inputs, caches and their misuse. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  FalconBackbone,
  FalconConfigError,
  FalconDisposedError,
  FalconInputError,
  type FalconBackboneConfig,
} from "../src/index.js";
import { settledMemoryStats } from "./helpers/native-memory.js";

const TINY: FalconBackboneConfig = {
  vocabularySize: 10, numLayers: 2, numAttentionHeads: 2, hiddenDim: 32, intermediateDim: 128,
  layerNormEpsilon: 1e-5, attentionDropoutRate: 0, feedforwardDropoutRate: 0, dtype: "float32", seed: 0,
};

describe("construction", () => {
  it("runs the issue's example end to end", async () => {
    const tiny = new FalconBackbone(TINY);
    const hidden = await tiny.call({ tokenIds: [[1, 2, 3]] });
    assert.deepEqual(hidden.shape, [1, 3, 32]);
    const logits = await tiny.tokenEmbedding.reverse(hidden);
    assert.deepEqual(logits.shape, [1, 3, 10]);
    assert.ok(logits.data.every(Number.isFinite));
    tiny.dispose();
  });

  it("round-trips getConfig()", () => {
    const model = new FalconBackbone({ ...TINY, dtype: "mixed_bfloat16", seed: 7 });
    const config = model.getConfig();
    const rebuilt = new FalconBackbone(config);
    assert.deepEqual(rebuilt.getConfig(), config);
    assert.equal(config.dtype, "mixed_bfloat16");
    assert.equal(model.info().dtype, "bfloat16");
    model.dispose();
    rebuilt.dispose();
  });

  it("initialises deterministically from the seed", async () => {
    const run = async (seed: number) => {
      const model = new FalconBackbone({ ...TINY, seed });
      const out = await model.call({ tokenIds: [[1, 2, 3, 4]] });
      model.dispose();
      return out.data;
    };
    assert.deepEqual(await run(3), await run(3));
    assert.notDeepEqual(await run(3), await run(4));
  });

  const invalid: [string, Partial<FalconBackboneConfig> & Record<string, unknown>, RegExp][] = [
    ["hidden not divisible by heads", { hiddenDim: 30, numAttentionHeads: 4 }, /divisible/],
    ["zero layers", { numLayers: 0 }, /numLayers must be a positive integer/],
    ["fractional vocabulary", { vocabularySize: 10.5 }, /vocabularySize/],
    ["unknown dtype", { dtype: "int2" as never }, /dtype must be one of/],
    ["dropout rate 1", { attentionDropoutRate: 1 }, /attentionDropoutRate/],
    ["negative epsilon", { layerNormEpsilon: -1 }, /layerNormEpsilon/],
    ["unknown field", { hidden_dim: 32 }, /unknown config field "hidden_dim"/],
    ["kv heads not dividing heads", { numKeyValueHeads: 3, numAttentionHeads: 4 }, /multiple of numKeyValueHeads/],
  ];
  for (const [label, change, message] of invalid) {
    it(`rejects ${label}`, () => {
      assert.throws(() => new FalconBackbone({ ...TINY, ...change } as FalconBackboneConfig), (error: Error) => {
        assert.ok(error instanceof FalconConfigError, `${error.name}: ${error.message}`);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it("accepts dropout rates as keras-hub does (no-ops at inference)", async () => {
    const plain = new FalconBackbone(TINY);
    const dropout = new FalconBackbone({ ...TINY, attentionDropoutRate: 0.1, feedforwardDropoutRate: 0.2 });
    assert.deepEqual((await plain.call({ tokenIds: [[4, 5]] })).data, (await dropout.call({ tokenIds: [[4, 5]] })).data);
    plain.dispose();
    dropout.dispose();
  });
});

describe("inputs", () => {
  const model = new FalconBackbone(TINY);
  const bad: [string, Parameters<FalconBackbone["call"]>[0], RegExp][] = [
    ["an id past the vocabulary", { tokenIds: [[1, 2], [3, 10]] }, /tokenIds\[1\]\[1\] = 10 is out of range \[0, 10\)/],
    ["a negative id", { tokenIds: [[-1]] }, /tokenIds\[0\]\[0\] = -1/],
    ["a fractional id", { tokenIds: [[1.5]] }, /tokenIds\[0\]\[0\] = 1.5 is not an integer/],
    ["ragged rows", { tokenIds: [[1, 2, 3], [1, 2]] }, /tokenIds\[1\] has length 2 but row 0 has length 3/],
    ["an empty batch", { tokenIds: [] }, /at least one row/],
    ["a mask value of 2", { tokenIds: [[1, 2]], paddingMask: [[1, 2]] }, /paddingMask\[0\]\[1\] = 2 must be 0 or 1/],
    ["a mask of another shape", { tokenIds: [[1, 2]], paddingMask: [[1, 1, 1]] }, /paddingMask has shape \[1, 3\] but tokenIds has shape \[1, 2\]/],
    ["a flat array without a shape", { tokenIds: new Int32Array([1, 2]) }, /pass its shape/],
    ["a shape that does not fit the data", { tokenIds: { data: new Int32Array(5), shape: [2, 3] } }, /holds 5 values/],
  ];
  for (const [label, inputs, message] of bad) {
    it(`rejects ${label} with FalconInputError`, async () => {
      await assert.rejects(model.call(inputs), (error: Error) => {
        assert.ok(error instanceof FalconInputError, `${error.name}: ${error.message}`);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it("accepts a flat Int32Array with a shape, boolean masks and typed masks alike", async () => {
    const nested = await model.call({ tokenIds: [[1, 2, 3], [4, 5, 6]], paddingMask: [[1, 1, 0], [1, 1, 1]] });
    const flat = await model.call({
      tokenIds: new Int32Array([1, 2, 3, 4, 5, 6]), shape: [2, 3],
      paddingMask: { data: new Uint8Array([1, 1, 0, 1, 1, 1]), shape: [2, 3] },
    });
    const booleans = await model.call({ tokenIds: [[1, 2, 3], [4, 5, 6]], paddingMask: [[true, true, false], [true, true, true]] });
    assert.deepEqual(flat.data, nested.data);
    assert.deepEqual(booleans.data, nested.data);
  });

  it("gives each valid position the same result whatever the padding around it", async () => {
    const alone = await model.call({ tokenIds: [[3, 4, 5]] });
    const right = await model.call({ tokenIds: [[3, 4, 5, 0, 0]], paddingMask: [[1, 1, 1, 0, 0]] });
    const left = await model.call({ tokenIds: [[0, 0, 3, 4, 5]], paddingMask: [[0, 0, 1, 1, 1]] });
    const D = 32;
    for (let i = 0; i < 3 * D; i++) {
      assert.ok(Math.abs(right.data[i] - alone.data[i]) < 1e-5);
      assert.ok(Math.abs(left.data[2 * D + i] - alone.data[i]) < 1e-5);
    }
  });

  it("embeds ids and checks them", async () => {
    const embedded = await model.tokenEmbedding.embed([[1, 2]]);
    assert.deepEqual(embedded.shape, [1, 2, 32]);
    await assert.rejects(model.tokenEmbedding.embed([[11]]), FalconInputError);
    await assert.rejects(model.tokenEmbedding.reverse({ data: new Float32Array(31), shape: [1, 31] }), /shape \[\.\.\., 32\]/);
  });
});

describe("KV cache", () => {
  // One-token steps of models with shared KV heads take their query heads in groups (native attention).
  const VARIANTS: { name: string; config: Partial<FalconBackboneConfig> }[] = [
    { name: "MHA, ALiBi", config: {} },
    { name: "GQA 8:2, ALiBi", config: { numAttentionHeads: 8, numKeyValueHeads: 2 } },
    { name: "MQA 6:1, ALiBi", config: { hiddenDim: 48, numAttentionHeads: 6, numKeyValueHeads: 1 } },
    { name: "MQA 8:1, rotary", config: { numAttentionHeads: 8, numKeyValueHeads: 1, positionEncoding: "rotary" } },
  ];
  for (const { name, config } of VARIANTS) {
    it(`decodes incrementally to the full forward result, with padding and per-row indices (${name})`, async () => {
      const model = new FalconBackbone({ ...TINY, vocabularySize: 50, seed: 3, ...config });
      const D = model.getConfig().hiddenDim;
      // Prompts of 16 or more tokens score keys in transposed blocks, one-token steps row by row.
      const length = 21;
      const prompt = 17;
      const tokens = [0, 1].map((b) => Array.from({ length }, (_, t) => (b === 1 && t === 0 ? 0 : 5 + ((t * 7 + b * 3) % 40))));
      const mask = [0, 1].map((b) => Array.from({ length }, (_, t) => (b === 1 && t === 0 ? 0 : 1)));
      const full = await model.call({ tokenIds: tokens, paddingMask: mask });
      const cache = model.createCache({ batchSize: 2, maxLength: length + 2 });
      await model.callWithCache({ tokenIds: tokens.map((r) => r.slice(0, prompt)), paddingMask: mask.map((r) => r.slice(0, prompt)) }, cache, 0);
      for (let t = prompt; t < length; t++) {
        const step = await model.callWithCache(tokens.map((r) => [r[t]]), cache, [t, t]);
        for (let b = 0; b < 2; b++) {
          for (let c = 0; c < D; c++) {
            assert.ok(Math.abs(step.data[b * D + c] - full.data[(b * length + t) * D + c]) < 1e-5, `row ${b} position ${t}`);
          }
        }
      }
      assert.ok(cache.byteSize > 0);
      cache.dispose();
      model.dispose();
    });
  }

  it("holds only the distinct key/value heads", () => {
    const mqa = new FalconBackbone({ ...TINY, numAttentionHeads: 4, numKeyValueHeads: 1 });
    const mha = new FalconBackbone({ ...TINY, numAttentionHeads: 4 });
    const a = mqa.createCache({ batchSize: 1, maxLength: 16 });
    const b = mha.createCache({ batchSize: 1, maxLength: 16 });
    assert.equal(a.byteSize * 4, b.byteSize);
    assert.equal(a.byteSize, 2 /* layers */ * 2 /* k, v */ * 1 * 16 * 8 * 4);
    for (const x of [a, b, mqa, mha]) x.dispose();
  });

  it("rejects misuse with typed errors", async () => {
    const model = new FalconBackbone(TINY);
    const other = new FalconBackbone(TINY);
    const cache = model.createCache({ batchSize: 1, maxLength: 4 });
    await assert.rejects(model.callWithCache([[1, 2, 3]], cache, 2), /does not fit the cache's maxLength 4/);
    await assert.rejects(model.callWithCache([[1], [2]], cache, 0), /2 rows but the cache holds 1/);
    await assert.rejects(model.callWithCache([[1]], cache, -1), FalconInputError);
    await assert.rejects(other.callWithCache([[1]], cache, 0), /created for another model/);
    assert.throws(() => model.createCache({ batchSize: 0, maxLength: 4 }), FalconInputError);
    const first = model.callWithCache([[1, 2]], cache, 0);
    await assert.rejects(model.callWithCache([[1]], cache, 2), /in use by another call/);
    await first;
    cache.dispose();
    await assert.rejects(model.callWithCache([[1]], cache, 0), FalconDisposedError);
    model.dispose();
    await assert.rejects(model.call({ tokenIds: [[1]] }), FalconDisposedError);
    assert.throws(() => model.createCache({ batchSize: 1, maxLength: 2 }), FalconDisposedError);
    other.dispose();
  });

  it("serves concurrent calls on one model", async () => {
    const model = new FalconBackbone(TINY);
    const inputs = Array.from({ length: 8 }, (_, i) => ({ tokenIds: [[i % 10, (i + 1) % 10, (i + 2) % 10]] }));
    const sequential: Float32Array[] = [];
    for (const input of inputs) sequential.push((await model.call(input)).data);
    const concurrent = await Promise.all(inputs.map((input) => model.call(input)));
    concurrent.forEach((out, i) => assert.deepEqual(out.data, sequential[i]));
    model.dispose();
  });
});

describe("garbage collection", () => {
  it("frees models and caches that were never disposed, without crashing", async () => {
    const before = await settledMemoryStats();
    // In a function of its own, so nothing it made is still referenced when the counters are read.
    const useAndDrop = async () => {
      for (let i = 0; i < 20; i++) {
        const model = new FalconBackbone({ ...TINY, vocabularySize: 4096, hiddenDim: 256, intermediateDim: 1024, seed: i });
        const cache = model.createCache({ batchSize: 2, maxLength: 64 });
        await model.callWithCache([[1, 2], [3, 4]], cache, 0);
      }
    };
    await useAndDrop();
    // Counted natively: every weight, cache, workspace and result array of the 20 models is gone.
    const after = await settledMemoryStats();
    assert.equal(after.liveBytes, before.liveBytes, `${after.liveBytes - before.liveBytes} bytes still allocated`);
    assert.equal(after.liveAllocations, before.liveAllocations);
    const model = new FalconBackbone(TINY);
    assert.deepEqual((await model.call({ tokenIds: [[1]] })).shape, [1, 1, 32]);
    model.dispose();
  });
});
