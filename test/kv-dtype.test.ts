/**
 * KV pools that store keys and values as bfloat16 or float16 (native/core/kv_pool.h): their logits
 * against a float32 pool's within a bound derived from the rounding, greedy decoding unchanged where
 * the float32 choice is clear, the bytes of a block, and refused dtypes. Batch invariance of 16-bit
 * pools is tested beside the float32 pool's, per ISA, in paged-step.test.ts.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { FalconCausalLM, FalconInputError, runtimeInfo, setIsa } from "../src/index.js";
import { callNativeSync, native, type NativeKvDType, type NativeModel, type NativeStepRunnerForTest } from "../src/native.js";
import { FIXTURES } from "./helpers/fixtures.js";
import { decodeOneSequence } from "./helpers/step-decode.js";

const { isa: defaultIsa, supportedIsas } = runtimeInfo();
after(() => setIsa(defaultIsa));

const HF = path.join(FIXTURES, "hf");
const BLOCK = 16;
const PROMPT_LENGTH = 20;
const DECODE_STEPS = 40;
const POOL_BLOCKS = Math.ceil((PROMPT_LENGTH + DECODE_STEPS) / BLOCK);

/** The largest relative error of one stored element, rounded to nearest: half the spacing of its 8 (bfloat16) or 11 (float16) significant bits. */
const UNIT_ROUNDOFF: Record<"bfloat16" | "float16", number> = { bfloat16: 2 ** -9, float16: 2 ** -11 };

/**
 * How far a 16-bit pool may move a logit, as a multiple of u·max|logit| of its row (u = UNIT_ROUNDOFF).
 * Each stored key and value component is off by at most u of itself, and nothing else changes (the
 * attention arithmetic is float32 either way). In one head, values off by u move the output
 * Σ p_j v_j by at most u·max|v| (the probabilities sum to 1); keys off by u move each score by at most
 * u·A (A = Σ_c |q_c k_c| / √d), hence each probability by at most 2uA of itself and the output by at
 * most 2uA·max|v|. The fixture models' scores are small (A ≤ ½), so a layer's attention output moves by
 * at most 2u of its scale; the residual stream, layer norms and head carry that relative change through
 * to the logits, and the 2 layers add theirs: 2 · 2u = 4u. A pool that stored the wrong bits (a broken
 * widening, a slot read past the visible keys, a key written unrounded as another dtype) misses by
 * orders of magnitude more.
 */
const BOUND_IN_ROUNDOFFS = 4;
const boundOf = (kvDtype: "bfloat16" | "float16", row: Float32Array) =>
  BOUND_IN_ROUNDOFFS * UNIT_ROUNDOFF[kvDtype] * row.reduce((largest, x) => Math.max(largest, Math.abs(x)), 0);

/** One fixture model per attention layout: ALiBi MHA, rotary MQA parallel, rotary GQA (two norms), one-norm parallel, rotary MHA with biases. */
const MODELS = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel", "f40b_newarch_gqa", "f11b_newarch_1ln", "rotary_mha_sequential_bias"];
/** Those whose float32 greedy decode below never comes near a tie (checked: every step's top-2 gap exceeds twice the bound). */
const CLEAR_GREEDY_MODELS = ["rw_alibi_mha_sequential", "f7b_rotary_mqa_parallel"];

const models = new Map<string, { lm: FalconCausalLM; model: NativeModel }>();
before(async () => {
  for (const name of MODELS) {
    const lm = await FalconCausalLM.fromPreset(path.join(HF, name, "checkpoint"));
    models.set(name, { lm, model: await lm.backbone.nativeModel() });
  }
});
after(() => {
  for (const { lm } of models.values()) lm.backbone.dispose();
});

/** The prompt in one step, then DECODE_STEPS decode steps (helpers/step-decode.ts), over the pool's blocks in reverse order. */
function decode(runner: NativeStepRunnerForTest, vocabulary: number, prompt: number[], forced?: number[]): { rows: Float32Array[]; tokens: number[] } {
  const blockTable = Int32Array.from({ length: POOL_BLOCKS }, (_, i) => POOL_BLOCKS - 1 - i);
  return decodeOneSequence(runner, { vocabulary, prompt, decodeSteps: DECODE_STEPS, blockTable, forced });
}

function promptFor(vocabulary: number): number[] {
  return Array.from({ length: PROMPT_LENGTH }, (_, i) => (i * 37 + 5) % vocabulary);
}

for (const isa of supportedIsas) {
  describe(`16-bit KV pools against a float32 pool (${isa} kernels)`, () => {
    for (const kvDtype of ["bfloat16", "float16"] as const) {
      it(`${kvDtype}: every logit within ${BOUND_IN_ROUNDOFFS}·2^${Math.log2(UNIT_ROUNDOFF[kvDtype])}·max|logit| of its row, fed the same tokens`, () => {
        setIsa(isa);
        for (const name of MODELS) {
          const { lm, model } = models.get(name)!;
          const vocabulary = lm.backbone.getConfig().vocabularySize;
          const prompt = promptFor(vocabulary);
          const reference = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, "float32")), vocabulary, prompt);
          const rounded = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, kvDtype)), vocabulary, prompt, reference.tokens);
          assert.equal(rounded.rows.length, reference.rows.length);
          let differs = false;
          reference.rows.forEach((expected, r) => {
            const bound = boundOf(kvDtype, expected);
            rounded.rows[r]!.forEach((x, v) => {
              const error = Math.abs(x - expected[v]!);
              if (!(error <= bound)) assert.fail(`${name}, row ${r}, logit ${v}: ${x} vs ${expected[v]} (error ${error}, bound ${bound})`);
              if (error > 0) differs = true;
            });
          });
          // Rounded keys and values do change some logit: the pool stores what it says it does.
          assert.ok(differs, `${name}: ${kvDtype} logits are bit for bit the float32 pool's`);
        }
      });

      it(`${kvDtype}: greedy decoding picks the float32 pool's tokens where its top two logits are further apart than twice the bound`, () => {
        setIsa(isa);
        for (const name of CLEAR_GREEDY_MODELS) {
          const { lm, model } = models.get(name)!;
          const vocabulary = lm.backbone.getConfig().vocabularySize;
          const prompt = promptFor(vocabulary);
          const reference = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, "float32")), vocabulary, prompt);
          // Each of the top two moves by at most the bound, so their order cannot change.
          reference.rows.slice(PROMPT_LENGTH - 1).forEach((row, step) => {
            const [first, second] = [...row].sort((a, b) => b - a);
            assert.ok(first! - second! > 2 * boundOf(kvDtype, row), `${name}, step ${step}: the float32 top-2 gap is too small for this test`);
          });
          const greedy = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, kvDtype)), vocabulary, prompt);
          assert.deepEqual(greedy.tokens, reference.tokens, name);
        }
      });
    }
  });
}

describe("KV pool dtypes: bytes and refusals", () => {
  it("a 16-bit block's keys and values take half a float32 block's bytes; valid flags and positions stay", () => {
    for (const name of MODELS) {
      const { lm, model } = models.get(name)!;
      const config = lm.backbone.getConfig();
      const headDim = config.hiddenDim / config.numAttentionHeads;
      // Per block: keys and values of every layer and distinct KV head, then an int32 position and a valid byte per slot.
      const expected = (elementBytes: number) => config.numLayers * config.numKeyValueHeads * 2 * BLOCK * headDim * elementBytes + BLOCK * (4 + 1);
      assert.equal(callNativeSync(() => native().NativeEngine.kvBlockBytes(model)), expected(4), name);
      assert.equal(callNativeSync(() => native().NativeEngine.kvBlockBytes(model, "float32")), expected(4), name);
      assert.equal(callNativeSync(() => native().NativeEngine.kvBlockBytes(model, "bfloat16")), expected(2), name);
      assert.equal(callNativeSync(() => native().NativeEngine.kvBlockBytes(model, "float16")), expected(2), name);
    }
  });

  it("a pool created without a dtype is a float32 pool, bit for bit", () => {
    const { lm, model } = models.get(MODELS[0]!)!;
    const vocabulary = lm.backbone.getConfig().vocabularySize;
    const prompt = promptFor(vocabulary);
    const implicit = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS)), vocabulary, prompt);
    const explicit = decode(callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, "float32")), vocabulary, prompt);
    assert.deepEqual(implicit.rows, explicit.rows);
  });

  it("dtypes a pool cannot store are refused with FalconInputError, before anything is allocated", () => {
    const { model } = models.get(MODELS[0]!)!;
    for (const dtype of ["int8", "float64"]) {
      const refused = (error: Error) => error instanceof FalconInputError && new RegExp(`float32, bfloat16 or float16, not ${dtype}`).test(error.message);
      assert.throws(() => callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, dtype as NativeKvDType)), refused, dtype);
      assert.throws(() => callNativeSync(() => native().NativeEngine.kvBlockBytes(model, dtype as NativeKvDType)), refused, dtype);
      // The dtype is refused, not the memory a pool this large would take.
      assert.throws(() => callNativeSync(() => native().stepRunnerForTest(model, 2 ** 31 - 1, dtype as NativeKvDType)), refused, dtype);
    }
    for (const dtype of ["bf16", "", 16, null]) {
      const refused = (error: Error) => error instanceof FalconInputError && /kvDtype must be 'float32', 'bfloat16' or 'float16'/.test(error.message);
      assert.throws(() => callNativeSync(() => native().stepRunnerForTest(model, POOL_BLOCKS, dtype as NativeKvDType)), refused, String(dtype));
      assert.throws(() => callNativeSync(() => native().NativeEngine.kvBlockBytes(model, dtype as NativeKvDType)), refused, String(dtype));
    }
  });
});
