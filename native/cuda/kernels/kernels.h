#pragma once
// The CUDA kernels' host entry points, declared for the build that includes this header: the real
// kernels (falcon::cuda, compiled by nvcc) or the emulated ones (falcon::cuda::emulated, compiled as
// host C++ through emu/cuda_emu.h; emulated_kernels.cpp). All pointers are device pointers; every
// call is enqueued on `stream` and returns before the work is done (the emulation runs it at once).
// Matrices are row-major. Weights are [n = outputs, k = inputs], the safetensors layout, unpacked.
// Preconditions the kernels cannot check on the device (token ids inside the table, pointers of the
// right sizes) are the caller's; sizes are checked here and refused with Error(Input).
#include <cstdint>

#include "../cuda_compat.h"

namespace FALCON_CUDA_NS {

// Weight and table element types. I8 (plain signed bytes in [-127, 127], with one float32 scale
// per weight row) is for weights only: gemm_f32 and gemv_int8 take it, everything else refuses it.
enum class Element { F32, BF16, F16, I8 };

// What a GEMM does with each output before storing it, in this order (the CPU's Epilogue):
// × scales[n] (int8 weights), + bias[n], exact erf GELU, and y += instead of y =.
struct GemmEpilogue {
  const float* bias = nullptr;
  bool gelu = false;
  bool accumulate = false;
};

// out[i][c] = table[ids[i]][c] widened to float32; table is [*, dim] of `type`.
void embedding(const void* table, Element type, int64_t dim, const int32_t* ids, int64_t count, float* out, cudaStream_t stream);

// out[i][c] = float(q[ids[i]][c]) · scales[ids[i]], one float32 rounding (the CPU's int8 embedding);
// q is [*, dim] of plain signed bytes in [-127, 127] (the CPU stores them offset by 128), one scale per row.
void embedding_int8(const int8_t* q, const float* scales, int64_t dim, const int32_t* ids, int64_t count, float* out,
                    cudaStream_t stream);

// out[i] = x[rows[i]] for i < count: rows of dim floats (the step's output rows before the last
// layer's head, for instance); rows inside x are the caller's precondition.
void gather_rows(const float* x, int64_t dim, const int32_t* rows, int64_t count, float* out, cudaStream_t stream);

// Per row r of `rows`: residual[r] += add[r] (when add is not null), then out[r] = layer_norm(residual[r])
// with population variance, statistics accumulated in double (as the CPU's layer_norm_row).
void add_layer_norm(float* residual, const float* add, int64_t rows, int64_t dim, const float* gamma, const float* beta,
                    float epsilon, float* out, cudaStream_t stream);

// x[r][c] = gelu(x[r][c] + bias[c]) (bias may be null), GELU in its exact erf form.
void bias_gelu(float* x, int64_t rows, int64_t cols, const float* bias, cudaStream_t stream);

// out[i] = x[i] rounded to nearest even as `type` (BF16 or F16), as bits.
void round_to(const float* x, int64_t count, Element type, uint16_t* out, cudaStream_t stream);

// A float32 GEMM input as float16 weights take it on the tensor cores: per row r of x ([rows, k]),
// the power of two 2^e that brings the row's largest finite magnitude into [2^14, 2^15) (e clamped
// to [-113, 126]; e = 0 for a row of zeros), and the scaled row as a pair of float16 rows (bits):
// high = x·2^e rounded to nearest even, low = the remainder rounded to nearest even (0 where x is
// ±Infinity or NaN, which high carries). high + low holds x·2^e to within 2^-22·|x·2^e| + 2^-25:
// 22 significant bits where one float16 keeps 11, and no overflow or flush to zero whatever the
// row's scale. row_unscale[r] = 2^-e. The float32 inputs of a float16 model stay float32 on the CPU;
// one float16 rounding would cost them half their bits and overflow above 65504.
void split_f16(const float* x, int64_t rows, int64_t k, uint16_t* high, uint16_t* low, float* row_unscale, cudaStream_t stream);

// Rotary tables [rows, head_dim / 2] of cos and sin: angle = positions[r] · position_scales[r] /
// bases[r]^(2i / head_dim), in double, rounded once (the CPU's rotary_tables; the host folds each
// sequence's scaling, linear or dynamic NTK, into its rows' base and position scale).
void rotary_tables(const int32_t* positions, const double* bases, const double* position_scales, int64_t rows,
                   int64_t head_dim, float* cos_out, float* sin_out, cudaStream_t stream);

// NeoX rotate-half rotation, in place, of heads [first_head, first_head + heads) of every row of x
// ([rows, row_stride]; head h at column h · head_dim), with the rows' tables.
void apply_rotary(float* x, int64_t rows, int64_t row_stride, int64_t first_head, int64_t heads, int64_t head_dim,
                  const float* cos_table, const float* sin_table, cudaStream_t stream);

// y[m][n] (+)= epilogue(Σ_k x[m][k] · w[n][k]) in float32, every output summed in k order (one
// multiply-add per step), so the result is within the sequential-summation bound of the CPU's.
// w is [n, k] of `type`, widened exactly as it is staged: F32 as it is; F16 with x float32 (the CPU's
// float16 matmul); BF16 with x rounded to bfloat16, nearest even (the CPU's bfloat16 matmul: exact
// products, float32 sums); I8 with the sum × scales[n] before the epilogue (x stays float32, where
// the CPU quantises it). scales must be given for I8 and only for I8 (else Error(Input)).
void gemm_f32(const float* x, int64_t m, int64_t k, const void* w, Element type, const float* scales, int64_t n,
              const GemmEpilogue& epilogue, float* y, cudaStream_t stream);

// A tensor-core GEMM's input, [m, k] 16-bit rows as bits: for bfloat16 weights, x rounded by round_to
// (`high` alone); for float16 weights, x split by split_f16 (`high`, `low` and `row_unscale`).
struct WmmaInput {
  const uint16_t* high = nullptr;
  const uint16_t* low = nullptr;
  const float* row_unscale = nullptr;
};

// The bytes of the staging area stage_wmma_input needs for m rows of k inputs against `type` weights:
// bfloat16's rounded rows; float16's split rows (high, then low) and their row scales; 0 for the types
// the tensor-core GEMM does not take.
size_t wmma_input_bytes(Element type, int64_t m, int64_t k);

// x [m, k] (float32) staged in `staging` (at least wmma_input_bytes(type, m, k)) as gemm_wmma takes it
// against `type` weights: rounded by round_to (BF16) or split by split_f16 (F16).
WmmaInput stage_wmma_input(const float* x, int64_t m, int64_t k, Element type, void* staging, cudaStream_t stream);

// The same on the tensor cores through nvcuda::wmma, w of 16-bit `type` (BF16 or F16, as bits):
// products exact, float32 accumulation. BF16: Σ_k high·w. F16: row_unscale[m] · Σ_k (high·w + low·w),
// two products per step, before the epilogue.
void gemm_wmma(const WmmaInput& x, Element type, int64_t m, int64_t k, const uint16_t* w, int64_t n,
               const GemmEpilogue& epilogue, float* y, cudaStream_t stream);

// Few-row GEMM (decode): rows m ≤ kGemvMaxRows, every weight read once, one warp per output. x is
// float32; with BF16 weights it is rounded to bfloat16 first (bfloat16 models multiply in bfloat16,
// as on the CPU); with F16 weights it stays float32. I8 weights are refused (Error(Input)): they
// take gemv_int8, which carries their scales.
constexpr int64_t kGemvMaxRows = 8;
void gemv(const float* x, int64_t m, int64_t k, const void* w, Element type, int64_t n, const GemmEpilogue& epilogue, float* y,
          cudaStream_t stream);

// Int8 weight-only GEMV: y[m][n] (+)= epilogue(scales[n] · Σ_k x[m][k] · q[n][k]), q in [-127, 127]
// (plain signed bytes), x float32.
void gemv_int8(const float* x, int64_t m, int64_t k, const int8_t* q, const float* scales, int64_t n,
               const GemmEpilogue& epilogue, float* y, cudaStream_t stream);

// Per ranked row i < count: the counts[i] best logits of logits[rows[i]][0 .. allowed[i]) (logits is
// [*, vocab]) and their ids into values_out / ids_out [i · max_k ..], best first in core/sampler.h
// rank_top_k's order exactly: larger value first, ties to the lower id, NaN after every number (NaN
// ids in id order). Rows inside logits, counts in [1, max_k] and allowed in [counts[i], vocab] are the
// caller's (the kernel clamps counts to max_k and allowed, and allowed to vocab); max_k ≤ kTopKMax.
constexpr int64_t kTopKMax = 64;
void top_k(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* counts, const int32_t* allowed, int64_t count,
           int64_t max_k, int32_t* ids_out, float* values_out, cudaStream_t stream);

// Per drawn row i < count: into tokens_out[i], the token SequenceSampler::sample_drawn(draws[i],
// logits[rows[i]], allowed[i]) gives, bit for bit, for a sampler at temperatures[i] over the whole
// row: with top_ps[i] = 0, temperature and random; with top_ps[i] in (0, 1), top-p of that mass
// without a cap. -1 where a top-p row's cut lies within rounding of p (the host's order of summation
// decides it: sample that row on the host). Rows inside logits, allowed in [1, min(vocab,
// kDrawMaxIds)], temperatures above 0 and draws in [0, 1) are the caller's (the kernel clamps allowed).
constexpr int64_t kDrawMaxIds = int64_t(512) * 1024;
void draw_tokens(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* allowed, const double* temperatures,
                 const double* top_ps, const double* draws, int64_t count, int32_t* tokens_out, cudaStream_t stream);

}  // namespace FALCON_CUDA_NS

namespace FALCON_CUDA_NS {

// One layer's keys and values in the engine's paged KV pool (core/kv_pool.h), as they lie on the
// device: element (kv_head, block) starts at kv_head · head_stride + block · block_stride elements;
// a block holds kKvTokens slots, keys transposed ([head_dim][kKvTokens]), values row-major
// ([kKvTokens][head_dim]). valid and positions are per slot ([blocks][kKvTokens]).
constexpr int64_t kKvTokens = 16;
struct PagedKv {
  const void* keys = nullptr;
  const void* values = nullptr;
  Element type = Element::F32;
  int64_t head_stride = 0;
  int64_t block_stride = 0;
  const uint8_t* valid = nullptr;
  const int32_t* positions = nullptr;
};

// The same pool as written: write_kv's destination.
struct PagedKvWrite {
  void* keys = nullptr;
  void* values = nullptr;
  Element type = Element::F32;
  int64_t head_stride = 0;
  int64_t block_stride = 0;
  uint8_t* valid = nullptr;
  int32_t* positions = nullptr;
};

// Stores each row's key and value heads in its pool slot (the CPU's write_cache after rotary, which
// the caller has applied): row r's key head h is qkv[r][(heads + h) · head_dim ..], its value head
// qkv[r][(heads + kv_heads + h) · head_dim ..] (qkv is [rows, qkv_stride]); they go to block
// row_block[r], slot row_slot[r] (< kKvTokens, the caller's precondition), rounded once to nearest
// even as kv.type (falcon::store_from_f32, bit for bit but for NaN payloads: a NaN stays a NaN),
// and valid[block · kKvTokens + slot] = row_valid[r],
// positions[block · kKvTokens + slot] = row_position[r]. Rows must name distinct slots.
void write_kv(const float* qkv, int64_t rows, int64_t qkv_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
              const int32_t* row_block, const int32_t* row_slot, const uint8_t* row_valid, const int32_t* row_position,
              const PagedKvWrite& kv, cudaStream_t stream);

// Which keys each query row attends to: row r belongs to sequence row_sequence[r], whose blocks are
// block_tables[sequence · max_blocks ..], and sees its slots [0, row_slot[r]] (its own and earlier).
struct AttentionRows {
  const int32_t* row_sequence = nullptr;
  const int32_t* row_slot = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t max_blocks = 0;
};

// Split-K paged attention: every query row against its visible keys, in chunks of
// kAttentionSplitKeys keys per block (partial softmax sums in `workspace`), then merged. Scores are
// (q·k + slope[head] · position) / √d over valid slots only (slopes null without ALiBi), exactly the
// CPU's order of operations; a row with no valid key gets zeros. q: [rows, q_stride], heads of
// head_dim at column head · head_dim; out: [rows, heads · head_dim]. Query head h reads KV head
// h / (heads / kv_heads). `max_visible` bounds row_slot + 1 over the rows.
constexpr int64_t kAttentionSplitKeys = 256;
constexpr int64_t kAttentionMaxHeadDim = 256;
int64_t attention_workspace_floats(int64_t rows, int64_t heads, int64_t head_dim, int64_t max_visible);
void paged_attention(const float* q, int64_t rows, int64_t q_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
                     const float* slopes, const PagedKv& kv, const AttentionRows& layout, int64_t max_visible, float* workspace,
                     float* out, cudaStream_t stream);

}  // namespace FALCON_CUDA_NS

namespace FALCON_CUDA_NS {

// Prompt tokens in tiles of up to kFlashQueries consecutive tokens of one sequence: tile t holds
// count[t] tokens from step row first_row[t], whose own slots start at first_slot[t] (so token i of
// the tile sees its sequence's slots [0, first_slot[t] + i]).
constexpr int64_t kFlashQueries = 16;
constexpr int64_t kFlashMaxHeadDim = 128;
struct AttentionTiles {
  const int32_t* sequence = nullptr;
  const int32_t* first_row = nullptr;
  const int32_t* first_slot = nullptr;
  const int32_t* count = nullptr;
  int64_t tiles = 0;
  const int32_t* block_tables = nullptr;  // as AttentionRows
  int64_t max_blocks = 0;
};

// Tiled flash-attention prefill: per (tile, head), the tile's queries against the key blocks they
// see, one KV pool block (16 keys) at a time through shared memory, with an online softmax (running
// maximum and sum, the output rescaled as the maximum grows): no score matrix beyond 16×16. The
// causal and padding masks and ALiBi are applied inline; rotary is applied before (apply_rotary).
// Same scores and masking as paged_attention; head_dim at most kFlashMaxHeadDim.
void flash_attention_prefill(const float* q, int64_t q_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
                             const float* slopes, const PagedKv& kv, const AttentionTiles& tiles, float* out, cudaStream_t stream);

}  // namespace FALCON_CUDA_NS
