/**
 * Every kernel family this CPU supports against the scalar reference, and the fixture suites (int8's and int4's too) run
 * through each non-default family in a child process (FALCON_ISA selects it at startup). On CPUs with
 * AVX-512 BF16 / VNNI or AVX-VNNI, this file runs again in a child with them hidden (FALCON_CPU_WITHOUT),
 * which is how CPUs without them run bfloat16, int8 and int4: AVX-512 ones on the AVX2 kernels, AVX2 ones
 * on vpmaddubsw instead of vpdpbusd.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";

import { FalconBackbone, runtimeInfo, setIsa, setNumThreads, type FalconBackboneConfig, type FalconDType } from "../src/index.js";
import { callNativeSync, native, type NativeKvDType } from "../src/native.js";
import { decodeOneSequence } from "./helpers/step-decode.js";

const { isa: defaultIsa, supportedIsas, features, threads: defaultThreads } = runtimeInfo();
const hiddenFeatures = process.env.FALCON_CPU_WITHOUT;
after(() => {
  setIsa(defaultIsa);
  setNumThreads(defaultThreads);
});

/**
 * Odd sizes so every k tail, output tail and row-group remainder of the tiles is exercised; the wide
 * MLP gives int8 rows several quantisation blocks.
 */
const ODD_SHAPES: FalconBackboneConfig[] = [
  { vocabularySize: 67, numLayers: 2, numAttentionHeads: 5, hiddenDim: 40, intermediateDim: 70, seed: 4 },
  { vocabularySize: 97, numLayers: 1, numAttentionHeads: 6, numKeyValueHeads: 2, hiddenDim: 108, intermediateDim: 136,
    positionEncoding: "rotary", blockLayout: "parallel_two_norms", useBias: false, tieWordEmbeddings: false, seed: 5 },
  { vocabularySize: 53, numLayers: 1, numAttentionHeads: 2, hiddenDim: 24, intermediateDim: 2102, seed: 6 },
];

/**
 * 5 sequences of 19 tokens: prompt attention scores keys in blocks of 16, a whole block and a tail, and
 * queries in groups of 4 and a tail.
 */
function promptTokens(config: FalconBackboneConfig): number[][] {
  return Array.from({ length: 5 }, (_, row) => Array.from({ length: 19 }, (_, t) => (row * 13 + t * 7) % config.vocabularySize));
}

/**
 * The logits of promptTokens, or with `loneRow` of a single token: every matmul then has one input row, the
 * decode kernels' case (a lone row runs against two panels at once where the family does).
 */
async function logitsWith(isa: typeof defaultIsa, config: FalconBackboneConfig, dtype: FalconDType, loneRow = false): Promise<Float32Array> {
  setIsa(isa);
  const model = new FalconBackbone({ ...config, dtype });
  const tokens = loneRow ? [[11 % config.vocabularySize]] : promptTokens(config);
  const logits = await model.tokenEmbedding.reverse(await model.call({ tokenIds: tokens }));
  model.dispose();
  return logits.data;
}

function assertCloseToReference(fast: Float32Array, reference: Float32Array, dtype: FalconDType): void {
  let worst = 0;
  let scale = 1;
  for (let i = 0; i < reference.length; i++) {
    worst = Math.max(worst, Math.abs(fast[i] - reference[i]));
    scale = Math.max(scale, Math.abs(reference[i]));
  }
  // bf16 models round activations to bf16 before every matmul, so a different summation order can
  // move an activation by one bf16 step (2^-8); float32, float16 and int8 (float32 compute) agree to rounding.
  const limit = dtype === "bfloat16" ? 1e-2 : 2e-5;
  assert.ok(worst / scale < limit, `relative error ${worst / scale}`);
}

describe("kernel families against the scalar reference", () => {
  for (const isa of supportedIsas.filter((name) => name !== "scalar")) {
    for (const dtype of ["float32", "bfloat16", "float16", "int8"] as FalconDType[]) {
      ODD_SHAPES.forEach((config, index) => {
        it(`${isa} ${dtype} shape ${index}`, async () => {
          assertCloseToReference(await logitsWith(isa, config, dtype), await logitsWith("scalar", config, dtype), dtype);
        });
        // One thread takes every panel of a matrix in pairs: pairs end on a partial panel (40, 53, 97, 120
        // and 2102 outputs) or leave a last lone panel (24, 67, 70 and 136); two threads split them into other runs.
        it(`${isa} ${dtype} shape ${index}, a lone row on 1 and ${defaultThreads} threads`, async () => {
          for (const threads of [1, defaultThreads]) {
            setNumThreads(threads);
            try {
              assertCloseToReference(await logitsWith(isa, config, dtype, true), await logitsWith("scalar", config, dtype, true), dtype);
            } finally {
              setNumThreads(defaultThreads);
            }
          }
        });
      });
    }
  }
});

/**
 * A prompt batch taller than the AVX2 bfloat16 prefill's sweep of rows (1008: native/cpu/kernels/avx2.cpp,
 * matmul_bf16): 58 sequences of 19 tokens, 1102 rows, the 54th running from the first sweep into the second.
 * Each sequence's hidden states must be the bits it gets alone (19 rows, one sweep): every row's sums are one
 * chain of multiply-adds in k order, however its matmul tiles and sweeps the rows. The shape with the 2102-wide
 * MLP, whose down projection runs k in many passes (a sweep's sums resume between them). Every dtype, every family.
 */
const SWEEP_SEQUENCES = 58;
const SWEEP_TOKENS = 19;

describe("a prompt batch over 1008 rows", () => {
  const config = ODD_SHAPES[2]!;
  const sequence = (i: number) => Array.from({ length: SWEEP_TOKENS }, (_, t) => (i * 13 + t * 7) % config.vocabularySize);
  for (const isa of supportedIsas.filter((name) => name !== "scalar")) {
    for (const dtype of ["float32", "bfloat16", "float16", "int8"] as FalconDType[]) {
      it(`${isa} ${dtype}: sequences 0, 53 (across row 1008) and 57 get the bits they get alone`, async () => {
        setIsa(isa);
        const model = new FalconBackbone({ ...config, dtype });
        try {
          const batch = (await model.call({ tokenIds: Array.from({ length: SWEEP_SEQUENCES }, (_, i) => sequence(i)) })).data;
          const width = SWEEP_TOKENS * config.hiddenDim;
          for (const i of [0, 53, SWEEP_SEQUENCES - 1]) {
            const alone = (await model.call({ tokenIds: [sequence(i)] })).data;
            assert.deepStrictEqual(batch.subarray(i * width, (i + 1) * width), alone, `sequence ${i}`);
          }
        } finally {
          model.dispose();
        }
      });
    }
  }
});

/**
 * Attention at real head dimensions (64, 128), where the kernels' wide paths run: every query group size
 * (prompt groups of 4 consecutive tokens and a tail of 3; decode groups of the heads sharing a KV head:
 * 1 in MHA, 2 in GQA, 4 in MQA), keys in runs of blocks with a partial last block, and each KV pool
 * dtype. A prompt of 71 tokens, then decode steps fed the scalar run's greedy tokens.
 */
const ATTENTION_SHAPES: FalconBackboneConfig[] = [
  { vocabularySize: 61, numLayers: 1, numAttentionHeads: 2, hiddenDim: 128, intermediateDim: 64, seed: 7 },
  { vocabularySize: 61, numLayers: 1, numAttentionHeads: 4, numKeyValueHeads: 2, hiddenDim: 256, intermediateDim: 64,
    positionEncoding: "rotary", blockLayout: "parallel_two_norms", seed: 8 },
  { vocabularySize: 61, numLayers: 1, numAttentionHeads: 4, numKeyValueHeads: 1, hiddenDim: 512, intermediateDim: 64,
    positionEncoding: "rotary", blockLayout: "parallel_one_norm", seed: 9 },
];
const ATTENTION_PROMPT = 71;
const ATTENTION_DECODE_STEPS = 12;

/** Every step's logit rows and the tokens fed (helpers/step-decode.ts): `forced`, or greedy when absent. */
async function attentionRun(isa: typeof defaultIsa, config: FalconBackboneConfig, kvDtype: NativeKvDType, forced?: number[]) {
  setIsa(isa);
  const model = new FalconBackbone({ ...config, dtype: "float32" });
  try {
    const blocks = Math.ceil((ATTENTION_PROMPT + ATTENTION_DECODE_STEPS) / 16);
    const nativeModel = await model.nativeModel();
    const runner = callNativeSync(() => native().stepRunnerForTest(nativeModel, blocks, kvDtype));
    const prompt = Array.from({ length: ATTENTION_PROMPT }, (_, i) => (i * 17 + 3) % config.vocabularySize);
    return decodeOneSequence(runner, {
      vocabulary: config.vocabularySize, prompt, decodeSteps: ATTENTION_DECODE_STEPS, blockTable: Int32Array.from({ length: blocks }, (_, i) => i), forced,
    });
  } finally {
    model.dispose();
  }
}

/**
 * setIsa may run while an async forward pass does. Families pack bfloat16 inputs differently (the AVX2 kernels
 * take more than 16 rows as float32, the others as pairs), so a matmul must run on the family its inputs were
 * packed for: one that read float32 units as pairs would read twice k of every weight panel, past its end.
 */
describe("switching the kernel family during a forward pass", () => {
  it("leaves every matmul on the family that packed its inputs", { skip: supportedIsas.length < 2 }, async () => {
    const config: FalconBackboneConfig = { vocabularySize: 61, numLayers: 4, numAttentionHeads: 4, hiddenDim: 48, intermediateDim: 200, seed: 8 };
    const reference = await logitsWith("scalar", config, "bfloat16");
    const model = new FalconBackbone({ ...config, dtype: "bfloat16" });
    const tokens = promptTokens(config);
    let switches = 0;
    try {
      for (let round = 0; round < 20; round++) {
        let finished = false;
        const logits = model.call({ tokenIds: tokens }).then((hidden) => model.tokenEmbedding.reverse(hidden)).finally(() => { finished = true; });
        while (!finished) {
          setIsa(supportedIsas[switches++ % supportedIsas.length]);
          await new Promise((resolve) => setImmediate(resolve));
        }
        assertCloseToReference((await logits).data, reference, "bfloat16");
      }
    } finally {
      model.dispose();
      setIsa(defaultIsa);
    }
    // Far more switches than forward passes: most passes saw the family change under them.
    assert.ok(switches > 100, `only ${switches} switches in 20 forward passes`);
  });
});

describe("attention kernels against the scalar reference at head dimensions 64 and 128", () => {
  for (const isa of supportedIsas.filter((name) => name !== "scalar")) {
    for (const kvDtype of ["float32", "bfloat16", "float16"] as NativeKvDType[]) {
      ATTENTION_SHAPES.forEach((config, index) => {
        it(`${isa}, ${kvDtype} KV, shape ${index} (head dim ${config.hiddenDim / config.numAttentionHeads})`, async () => {
          const reference = await attentionRun("scalar", config, kvDtype);
          const fast = await attentionRun(isa, config, kvDtype, reference.tokens);
          assert.equal(fast.rows.length, ATTENTION_PROMPT + ATTENTION_DECODE_STEPS);
          fast.rows.forEach((row, step) => {
            const expected = reference.rows[step]!;
            const scale = expected.reduce((most, x) => Math.max(most, Math.abs(x)), 1);
            const worst = row.reduce((most, x, i) => Math.max(most, Math.abs(x - expected[i]!)), 0);
            // The same float32 chains in the same order, but for fused multiply-adds: agreement to rounding.
            assert.ok(worst / scale < 2e-5, `row ${step}: relative error ${worst / scale}`);
          });
        });
      });
    }
  }
});

const here = path.dirname(fileURLToPath(import.meta.url));

/** Runs test files in a child process with `env` added; passes when all of its tests pass. */
function childTestsPass(files: string[], env: Record<string, string>): void {
  const result = spawnSync(process.execPath, ["--test", ...files.map((file) => path.join(here, file))], {
    // Without NODE_TEST_CONTEXT the child reports as a standalone run, with its own summary lines.
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "NODE_TEST_CONTEXT")), ...env },
    encoding: "utf8",
    timeout: 300_000,
  });
  const summary = result.stdout.split("\n").filter((line) => /^# (pass|fail)/.test(line)).join(", ");
  assert.equal(result.status, 0, `${summary}\n${result.stdout.slice(-3000)}`);
  assert.match(summary, /# pass [1-9]\d*, # fail 0/);
}

describe("fixture suites through every other kernel family", { skip: hiddenFeatures !== undefined }, () => {
  for (const isa of supportedIsas.filter((name) => name !== defaultIsa)) {
    it(`FALCON_ISA=${isa}`, () => childTestsPass(["keras-fixtures.test.js", "hf-fixtures.test.js", "int8.test.js", "int4.test.js"], { FALCON_ISA: isa }));
  }
});

const HIDDEN_EXTENSIONS = ["avx512_bf16", "avx512_vnni", "avx_vnni"];

describe("without AVX-512 BF16 and VNNI and AVX-VNNI", () => {
  if (hiddenFeatures === undefined) {
    const present = HIDDEN_EXTENSIONS.filter((name) => features[name]);
    it(`runs these comparisons and the fixture suites with ${present.join(", ") || "them"} hidden`, { skip: present.length === 0 }, () =>
      childTestsPass(["isa-paths.test.js", "keras-fixtures.test.js", "hf-fixtures.test.js", "int8.test.js", "int4.test.js"],
        { FALCON_CPU_WITHOUT: HIDDEN_EXTENSIONS.join(","), FALCON_ISA: defaultIsa }));
  } else {
    it("reports the hidden extensions as absent", () => {
      for (const name of HIDDEN_EXTENSIONS) assert.equal(features[name], false, name);
    });
  }
});
