#pragma once
// The kernel table: one entry per hot inner loop, one table per instruction set (scalar.cpp is the
// readable reference; avx2.cpp and avx512.cpp are the fast versions). kernels() is the single
// dispatch point: it returns the table of the active ISA (see cpu_features.h).
#include <cstdint>
#include <type_traits>

#include "../../core/weights.h"
#include "../cpu_features.h"

// Marks the ISA kernel files' micro-kernels, which they keep out of line.
#if defined(_MSC_VER) && !defined(__clang__)
#define FALCON_NOINLINE __declspec(noinline)
#else
#define FALCON_NOINLINE __attribute__((noinline))
#endif

namespace falcon::cpu {

// Input rows are packed before a matmul (ops/linear.cpp) into blocks of kPackedRows rows: block b
// holds, for every step s along k (weights.h), the 32-bit units of its rows side by side:
//   units[(b · steps + s) · kPackedRows + r] = unit(row b·kPackedRows + r, step s)
// (slots of rows past the last one are left undefined; kernels never read them)
// A unit is the step's inputs of one row in the form the weights' kernel multiplies:
//   float32 / float16 weights: one float32 x[m][s]
//   bfloat16 weights: the pair (x[m][2s], x[m][2s+1]) rounded to bf16 (bf16 models multiply in bf16); or,
//     for more rows than the table's bf16_pairs_max_rows, one input rounded to bf16 and held as float32,
//     steps counting single inputs, as for float32 (PackedRows::float_units): kernels that multiply bf16 in
//     float32 (AVX2) then read the inputs as they are instead of widening them for every panel
//   int8 and int4 weights: the quad x[m][4s .. 4s+3] quantised to int8, little end first. Each row is quantised
//     in blocks of kQuantSteps steps, symmetrically (the block's largest magnitude maps to ±127), so
//     one outlier costs precision only in its own block; a matmul sums the exact integer products
//     of each block and then adds them up in float32, scaled by the block's scale.
// Pad inputs (past cols, up to a whole step) are zero.
constexpr int64_t kPackedRows = 8;
constexpr int64_t kQuantSteps = 64;  // 256 inputs per int8 quantisation block

constexpr int64_t kAttentionQueries = 4;
// Attention reads keys and values in the KV pool's blocks of kKeyBlock token slots (core/kv_pool.h):
// a block's keys transposed, so the scores of a block are one vector per query,
//   keys[c · kKeyBlock + s] = component c of the block's slot s,
// and its values row-major, values[s · d + c]. Key j of a sequence is slot j % kKeyBlock of block
// j / kKeyBlock of its block list.
constexpr int64_t kKeyBlock = 16;

struct PackedRows {
  const uint32_t* units = nullptr;
  int64_t rows = 0;
  int64_t steps = 0;
  // bfloat16 weights only: the units are float32 inputs (rounded to bf16), two steps for each of the weights'.
  bool float_units = false;
  // int8 only, [row][block] for blocks of kQuantSteps steps (quant_blocks per row):
  int64_t quant_blocks = 0;
  const float* block_scales = nullptr;  // x ≈ q · scale
  const int32_t* block_sums = nullptr;  // Σ of the block's q (the VNNI kernels, whose weights are stored + 128, subtract 128 · this)
  // int4 only, [row][group] for groups of kInt4Group inputs (8 steps; int4_groups per row, the last
  // holding the steps that are left): Σ of the group's q. int4 weights are nibbles stored + 8
  // (weights.h), so the kernels multiply those and subtract 8 · this.
  int64_t int4_groups = 0;
  const int32_t* group_sums = nullptr;
};

// What a matmul does with each output before storing it, applied in this order: scale (int8 weights),
// + bias[n] (when not null), GELU (exact erf form), and y += (the residual add) instead of y =.
struct Epilogue {
  const float* bias = nullptr;
  bool gelu = false;
  bool accumulate = false;
};

// y[m · y_stride + n] (+)= epilogue(Σ_k x[m][k] · w(n, k)) for m < x.rows and
// n in [first_panel · 32, min(end_panel · 32, w.rows)). w.dtype picks the kernel.
using MatmulKernel = void (*)(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                              const Epilogue& epilogue, float* y, int64_t y_stride);

// The multiply-add a compute-ceiling probe repeats: float32 FMA (float32 and float16 weights), the
// bf16 pair dot product (bfloat16), the int8 quad dot product (int8).
enum class PeakOp { F32Fma, Bf16Dot, Int8Dot };

// Attention for up to kAttentionQueries queries of one head at a time, so each key and value is
// loaded once per group, over key and value blocks of one element type (the KV pool's dtype: float32,
// or bfloat16 / float16 widened exactly to float32 as they are loaded, so the arithmetic is the same
// float32 chain for every storage type). Query g is at q + g · q_stride; key_blocks and value_blocks
// list the sequence's blocks (kKeyBlock above), slots past `count` are never read (but the last
// block's unused key lanes may be loaded). A query's results never depend on the other queries of
// its call, nor on `count` beyond the keys it covers: the step's batch invariance rests on this.
// The 16-bit KV elements as distinct types, for the kernels templated on what they load.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2 && sizeof(F16) == 2, "stored as the bits alone");

struct AttentionKernels {
  // scores[g · score_stride + j] = dot(query g, key j) for j < count, summed along c in order.
  void (*key_scores_blocked)(const float* q, int64_t q_stride, int64_t queries, const void* const* key_blocks,
                             int64_t count, int64_t d, float* scores, int64_t score_stride);
  // out[g · out_stride + c] = Σ_j p[g · p_stride + j] · value j[c] for c < d, summed over j < count in order.
  void (*weighted_sum)(const float* p, int64_t p_stride, int64_t queries, const void* const* value_blocks, int64_t count,
                       int64_t d, float* out, int64_t out_stride);
};

struct KernelTable {
  Isa isa;
  MatmulKernel matmul_f32;
  MatmulKernel matmul_bf16;
  MatmulKernel matmul_f16;
  MatmulKernel matmul_i8;
  // bfloat16 weights: up to this many rows, inputs are packed as bf16 pairs; more as float32 units.
  int64_t bf16_pairs_max_rows;
  // Quantises one row of `cols` inputs for int8 weights, block by block (see the int8 unit above):
  // scale = max |x| / 127, q = x · (127 / max |x|) rounded to nearest even; writes the units of every
  // step to units[s · kPackedRows], and each block's scale and Σ q.
  void (*quantise_row)(const float* x, int64_t cols, int64_t quant_blocks, uint32_t* units, float* scales, int32_t* sums);
  // out[i] = (in[i] − mean) / √(variance + epsilon) · gamma[i] + beta[i] over one row of `dim` values
  // (population variance), with the statistics accumulated in double: the mean of thousands of
  // activations must not drift with their magnitude.
  void (*layer_norm_row)(const float* in, int64_t dim, const float* gamma, const float* beta, float epsilon, float* out);
  // Attention over a KV pool storing float32, bfloat16 and float16 keys and values (attention_kernels).
  AttentionKernels attention_f32;
  AttentionKernels attention_bf16;
  AttentionKernels attention_f16;
  // scores[j] = (scores[j] + slope · position[j]) · scale where valid[j], else −inf, for j < count;
  // returns the largest (−inf when none is valid). Falcon adds ALiBi before the 1/√d scale.
  float (*mask_scores)(float* scores, const uint8_t* valid, const int32_t* position, int64_t count, float slope,
                       float scale);
  // x[i] = exp(x[i] − shift) for n values (−inf gives exactly 0); returns their sum. Depends on n:
  // attention passes exactly a query's visible keys.
  float (*exp_sum)(float* x, int64_t n, float shift);
  // Runs `iterations` rounds of independent `op`s on registers, as the matmul of that dtype issues
  // them on this ISA; returns the arithmetic operations done (a multiply-add counts 2). Measures the
  // machine's compute ceiling per weight dtype.
  double (*peak_ops)(int64_t iterations, PeakOp op);
  // Sum of n floats read once, front to back: the memory bandwidth probe's inner loop.
  float (*stream_sum)(const float* data, int64_t n);
};

// Calls body(std::integral_constant<int, n>{}) with n = min(count, Max), for count ≥ 1: kernels whose
// register tiles are sized at compile time pick theirs from a count known only at run time.
template <int Max, typename Body>
inline void with_count(int64_t count, Body&& body) {
  if constexpr (Max == 1) {
    body(std::integral_constant<int, 1>{});
  } else if (count >= Max) {
    body(std::integral_constant<int, Max>{});
  } else {
    with_count<Max - 1>(count, body);
  }
}

// A lone row (decode) runs against panels two at a time, so two streams of weights are read from memory
// at once: pair(p) takes panels p and p + 1 of [first_panel, end_panel), single(p) a last one left over.
template <typename Pair, typename Single>
inline void for_panel_pairs(int64_t first_panel, int64_t end_panel, Pair&& pair, Single&& single) {
  int64_t p = first_panel;
  for (; p + 1 < end_panel; p += 2) pair(p);
  if (p < end_panel) single(p);
}

// This thread's float scratch of at least `count` floats, kept for its later calls (memory.h's thread
// scratch): for a kernel whose buffer is too large for a worker's stack. Valid until its next call;
// starts on a cache line (kScratchAlignment bytes), so aligned vector loads work at multiples of 8 floats.
constexpr size_t kScratchAlignment = 64;
float* kernel_scratch(size_t count);

const KernelTable& scalar_kernels();
#if FALCON_X86
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();
#endif

// The table of the active ISA.
const KernelTable& kernels();

// int4 matmuls (kernels/int4_*.cpp; not in KernelTable so that family stays in files of its own): per
// group of 32 inputs, the exact integer sum Σ q_x · (q_w − 8), scaled by the weights' float16 scale
// times the activation block's scale and added up in float32, group by group.
void matmul_i4_scalar(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                      const Epilogue& epilogue, float* y, int64_t y_stride);
#if FALCON_X86
void matmul_i4_avx2(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                    const Epilogue& epilogue, float* y, int64_t y_stride);
// Needs AVX-VNNI.
void matmul_i4_avx_vnni(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                        const Epilogue& epilogue, float* y, int64_t y_stride);
// Needs AVX-512 VNNI.
void matmul_i4_avx512(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                      const Epilogue& epilogue, float* y, int64_t y_stride);
// Writes `rows` rows of a float32 tile [rows][kPanelWidth] to y (row r at y + r · y_stride) through the
// epilogue, the outputs of w's panel p that exist only, as the AVX2 tiles store theirs (avx2_common.h's
// TileStore). AVX2: the int4 kernels of both families share it.
void int4_store_tile_avx2(const float* tile, int rows, const WeightMatrix& w, int64_t p, const Epilogue& epilogue, float* y,
                          int64_t y_stride);
#endif

// The matmul kernel of `table` for weights of `dtype`.
MatmulKernel matmul_kernel(const KernelTable& table, DType dtype);
// The attention kernels of `table` for a KV pool storing `kv_dtype` (float32, bfloat16 or float16).
const AttentionKernels& attention_kernels(const KernelTable& table, DType kv_dtype);

}  // namespace falcon::cpu
