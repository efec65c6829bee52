#pragma once
#include <napi.h>

namespace falcon::binding {

// Test-only: one matmul through the active ISA's kernels, for testing each kernel family against the
// scalar reference on identical inputs (test/int4.test.ts).
//   matmulForTest(dtype, weights, outputs, cols, x, rows, bias, gelu, y) → Float32Array [rows, outputs]
// weights (Float32Array [outputs, cols]) are stored as a model of `dtype` stores them (int8 and int4
// quantised), x (Float32Array [rows, cols]) packed for them; bias (Float32Array [outputs] or null) and
// gelu are the epilogue's, and y (Float32Array [rows, outputs] or null) is accumulated into when given.
// Runs synchronously on the calling thread (and the thread pool).
Napi::Value MatmulForTest(const Napi::CallbackInfo& info);

}  // namespace falcon::binding
