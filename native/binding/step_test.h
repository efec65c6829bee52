#pragma once
#include <napi.h>

namespace falcon::binding {

// Test-only exports that drive the ragged step directly (test/paged-step.test.ts): what the engine
// does through its runner, with block tables and batches a test chooses.
//   runStepForTest(model, cache, spec) → Float32Array, the final hidden states of spec.outputRows
//     [outputs, hidden], over the cache's pool (block ids [0, batchSize · ceil(maxLength / 16))).
//   stepRunnerForTest(model, numBlocks, kvDtype = "float32") → { numBlocks(), vocabSize(), run(spec) →
//     Float32Array logits [outputs, vocab] }, a runner from make_model_step_runner whose pool stores
//     keys and values as kvDtype.
// spec: { sequences: [{ blockTable: Int32Array, start, count, ropeLength }], tokenIds: Int32Array,
//         positions: Int32Array, valid: Uint8Array, outputRows: Int32Array }
// All run synchronously on the calling thread.
Napi::Value RunStepForTest(const Napi::CallbackInfo& info);
Napi::Value StepRunnerForTest(const Napi::CallbackInfo& info);

}  // namespace falcon::binding
