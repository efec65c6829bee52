// AVX2 + FMA + F16C kernels. The float32 / float16 matmul micro-kernel holds 3 input rows × 32
// outputs (one panel) in 12 of the 16 ymm registers, int8 2 rows (its inputs take more registers; 3 on
// CPUs with AVX-VNNI, whose byte dot product needs none). AVX2 has no bf16 dot product: bfloat16 pairs
// are widened to float32 by shifting, in a 2-row tile for decode and, for many rows, a pass of the panel
// at a time, which the float32 tile then runs over inputs packed as float32 (matmul_bf16). Many rows run over k in
// passes whose slice of the panel stays in L1 (matmul below); a lone decode row runs against two panels at once.
#include "../cpu_features.h"

#if FALCON_X86

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

// The target applies after the standard headers: an inline function of theirs compiled here for
// AVX2 could be the copy the linker keeps for the whole addon, and fault on a CPU without it. The
// project headers follow it: their templates (with_count) call this file's lambdas, which inline
// only into functions of the same target.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's intrinsic headers trip these on _mm*_undefined_*; vector arguments never cross a non-AVX ABI here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx2,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include "../../core/dtype.h"
#include "kernels.h"
#include "avx2_common.h"

namespace falcon::cpu {
namespace {

// A tile is up to 3 slots of 32 sums (4 registers each, 12 of the 16): slot j is row j of the tile
// against one panel, or, for a lone decode row, that row against panel j (two panels at once give
// the row 8 independent chains of multiply-adds instead of 4, which hides their latency).
struct TileOut {
  const TileStore* stores;  // one per panel of the tile
  bool panels;
  void operator()(int slot, const __m256* c) const {
    if (panels) stores[slot](c, 0);
    else stores[0](c, slot);
  }
};

// One pass of a tile over steps [begin, end) of k. The first pass starts every sum at zero, later
// ones resume from `partial` (32 floats per slot); the last writes the sums through the epilogue,
// the others back to `partial`. A resumed sum continues its one chain of multiply-adds in k order, so
// how k is split into passes changes no result, and no row's result depends on the other rows.
struct Pass {
  int64_t begin;
  int64_t end;
  bool first;
  bool last;
  float* partial;
  // Steps s < fetch_before also prefetch the units of the tile's block start (TileUnits) one pass length
  // (end - begin) on (see matmul).
  int64_t fetch_before;
  // Each step asks for its panel lines kDecodeFetchBytes ahead: the first tile of a pass over few rows
  // (batched decode), which reads the panel from memory.
  bool stream_weights;
};

// Where a tile's rows find their units: row r's unit of step s is rows[r][s * kPackedRows]. A tile may
// run from one block of kPackedRows rows into the next (3-row tiles over 8-row blocks: 3 + 3 + 2 left a
// 2-row tile, 12 % slower per multiply-add, on a quarter of every block); block_start is the units of
// the block whose first row is in the tile, if one is, which the tile asks for ahead (UnitFetch).
struct TileUnits {
  const uint32_t* rows[3];
  const uint32_t* block_start;
};

inline TileUnits tile_units(const PackedRows& x, int64_t m, int rows) {
  TileUnits units{{nullptr, nullptr, nullptr}, nullptr};
  for (int r = 0; r < rows; ++r) {
    const int64_t row = m + r;
    units.rows[r] = x.units + (row / kPackedRows) * x.steps * kPackedRows + row % kPackedRows;
    if (row % kPackedRows == 0) units.block_start = units.rows[r];
  }
  return units;
}

// Every step's units are kPackedRows 4-byte values (float32, a bf16 pair or an int8 quad), so a cache
// line holds two steps of a block: every other step asks for the block's line a pass length on. Built
// before a tile's loop, so the loop keeps the bound and distance in registers: read through `pass` they
// were loaded from memory on every step (GCC does not hoist them past the prefetch).
struct UnitFetch {
  const char* ahead;  // the block's units of step 0, a pass length on
  int64_t before;

  UnitFetch(const Pass& pass, const TileUnits& units)
      : ahead(units.block_start == nullptr ? nullptr
                                           : reinterpret_cast<const char*>(units.block_start) + (pass.end - pass.begin) * kPackedRows * 4),
        before(units.block_start == nullptr ? 0 : pass.fetch_before) {}
  void operator()(int64_t s) const {
    if (s < before && (s & 1) == 0) fetch_line(ahead + s * kPackedRows * 4);
  }
};

// The lines of a step of a tile's panels (Lines of them a panel), asked for kDecodeFetchBytes ahead: by a
// lone row's two panels (step1 the second's), and by the first tile of a pass over few rows
// (Pass::stream_weights); the other tiles read the panel from cache.
template <int Lines, int Panels>
inline void fetch_panel_steps(const void* step, const void* step1, bool stream_weights) {
  static_assert(Panels <= 2, "a lone row runs against two panels at most");
  if (Panels > 1 || stream_weights) fetch_stream_ahead<Lines>(step);
  if (Panels > 1) fetch_stream_ahead<Lines>(step1);
}

// Accumulators are named one by one: held in an array, GCC 12 keeps them in memory.
#define FALCON_EACH_SLOT(op) op(0, c0a, c0b, c0c, c0d) op(1, c1a, c1b, c1c, c1d) op(2, c2a, c2b, c2c, c2d)
#define FALCON_RESUME(j, a, b, c, d)                                                                \
  __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;                                              \
  if (Slots > j && !pass.first) {                                                                   \
    const float* p = pass.partial + j * kPanelWidth;                                                \
    a = _mm256_load_ps(p), b = _mm256_load_ps(p + 8), c = _mm256_load_ps(p + 16), d = _mm256_load_ps(p + 24); \
  }
#define FALCON_FINISH(j, a, b, c, d)                                                                \
  if (Slots > j) {                                                                                  \
    const __m256 sums[4] = {a, b, c, d};                                                            \
    if (pass.last) {                                                                                \
      out(j, sums);                                                                                 \
    } else {                                                                                        \
      float* p = pass.partial + j * kPanelWidth;                                                    \
      for (int i = 0; i < 4; ++i) _mm256_store_ps(p + 8 * i, sums[i]);                              \
    }                                                                                               \
  }

// Weight loaders: 8 weights of one panel step as float32 (float16 widened by F16C, under the FMAs).
struct F32Panel {
  using Element = float;
  static constexpr int kMaxRows = 3;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
};
struct F16Panel {
  using Element = uint16_t;
  static constexpr int kMaxRows = 3;
  static __m256 load(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
};

// Float32 and float16 weights: per step, each of the panel's 4 weight vectors is loaded once and
// multiplied by every row's broadcast input (12 multiply-adds per 4 loads and 3 broadcasts, in all
// 16 registers).
template <typename Panel, int Rows, int Panels>
FALCON_NOINLINE void micro_float(const TileUnits& units, const typename Panel::Element* panel, int64_t panel_stride,
                                 const Pass& pass, const TileOut& out) {
  constexpr int Slots = Rows * Panels;
  static_assert(Slots <= 3 && (Rows == 1 || Panels == 1), "a tile is rows of one panel or one row of panels");
  FALCON_EACH_SLOT(FALCON_RESUME)
  const UnitFetch fetch_units(pass, units);
  const bool stream_weights = pass.stream_weights;
  const float* row0 = reinterpret_cast<const float*>(units.rows[0]);
  const float* row1 = reinterpret_cast<const float*>(units.rows[1]);
  const float* row2 = reinterpret_cast<const float*>(units.rows[2]);
  for (int64_t s = pass.begin, end = pass.end; s < end; ++s) {
    const auto* step = panel + s * kPanelWidth;
    fetch_units(s);
    fetch_panel_steps<int(sizeof(*step)) / 2, Panels>(step, Panels > 1 ? step + panel_stride : step, stream_weights);
    const __m256 x0 = _mm256_broadcast_ss(row0 + s * kPackedRows);
    if (Panels == 1) {
      const __m256 x1 = Rows > 1 ? _mm256_broadcast_ss(row1 + s * kPackedRows) : x0;
      const __m256 x2 = Rows > 2 ? _mm256_broadcast_ss(row2 + s * kPackedRows) : x0;
#define FALCON_COLUMN(i, r0, r1, r2)              \
  {                                               \
    const __m256 w = Panel::load(step + 8 * i);   \
    r0 = _mm256_fmadd_ps(x0, w, r0);              \
    if (Rows > 1) r1 = _mm256_fmadd_ps(x1, w, r1); \
    if (Rows > 2) r2 = _mm256_fmadd_ps(x2, w, r2); \
  }
      FALCON_COLUMN(0, c0a, c1a, c2a) FALCON_COLUMN(1, c0b, c1b, c2b) FALCON_COLUMN(2, c0c, c1c, c2c)
      FALCON_COLUMN(3, c0d, c1d, c2d)
#undef FALCON_COLUMN
    } else {
#define FALCON_PANEL(j, a, b, c, d)                                                    \
  if (Slots > j) {                                                                     \
    const auto* weights = step + j * panel_stride;                                     \
    a = _mm256_fmadd_ps(x0, Panel::load(weights), a);                                  \
    b = _mm256_fmadd_ps(x0, Panel::load(weights + 8), b);                              \
    c = _mm256_fmadd_ps(x0, Panel::load(weights + 16), c);                             \
    d = _mm256_fmadd_ps(x0, Panel::load(weights + 24), d);                             \
  }
      FALCON_EACH_SLOT(FALCON_PANEL)
#undef FALCON_PANEL
    }
  }
  FALCON_EACH_SLOT(FALCON_FINISH)
}

// 8 bf16 pairs (32-bit units, x[2s] in the low half and x[2s + 1] in the high one) as two float32 vectors,
// exactly, since a bf16 is the top half of a float32: the even elements shifted up, the odd ones masked
// (high_half: 0xffff0000 in every lane, held by the caller).
inline __m256 bf16_evens(__m256i pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)); }
inline __m256 bf16_odds(__m256i pairs, __m256i high_half) { return _mm256_castsi256_ps(_mm256_and_si256(pairs, high_half)); }

// bf16 pairs: the even and odd k of each output are split into two float32 vectors (by shifting:
// AVX2 has no bf16 dot product), and each output's chain takes the even product, then the odd one.
// Two slots: the rows' broadcast pairs take 4 registers beside the 8 sums and the widened weights.
template <int Rows, int Panels>
FALCON_NOINLINE void micro_bf16(const TileUnits& units, const uint16_t* panel, int64_t panel_stride, const Pass& pass,
                                const TileOut& out) {
  constexpr int Slots = Rows * Panels;
  static_assert(Slots <= 2 && (Rows == 1 || Panels == 1), "a tile is rows of one panel or one row of panels");
  FALCON_EACH_SLOT(FALCON_RESUME)
  const __m256i high_half = _mm256_set1_epi32(int(0xffff0000u));
  const UnitFetch fetch_units(pass, units);
  const bool stream_weights = pass.stream_weights;
  const uint32_t* row0 = units.rows[0];
  const uint32_t* row1 = units.rows[1];
  for (int64_t s = pass.begin, end = pass.end; s < end; ++s) {
    const uint16_t* step = panel + s * 2 * kPanelWidth;
    const uint16_t* step1 = Panels > 1 ? step + panel_stride : step;
    fetch_units(s);
    fetch_panel_steps<2, Panels>(step, step1, stream_weights);
    const __m256i unit0 = _mm256_set1_epi32(int(row0[s * kPackedRows]));
    const __m256 x0_even = bf16_evens(unit0), x0_odd = bf16_odds(unit0, high_half);
    const __m256i unit1 = Rows > 1 ? _mm256_set1_epi32(int(row1[s * kPackedRows])) : unit0;
    const __m256 x1_even = bf16_evens(unit1), x1_odd = bf16_odds(unit1, high_half);
#define FALCON_GROUP(g, c0, c1)                                                                              \
  {                                                                                                          \
    const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 16 * g));               \
    const __m256 even = bf16_evens(pairs), odd = bf16_odds(pairs, high_half);                                 \
    c0 = _mm256_fmadd_ps(x0_odd, odd, _mm256_fmadd_ps(x0_even, even, c0));                                   \
    if (Panels > 1) {                                                                                        \
      const __m256i pairs1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step1 + 16 * g));           \
      const __m256 even1 = bf16_evens(pairs1), odd1 = bf16_odds(pairs1, high_half);                          \
      c1 = _mm256_fmadd_ps(x0_odd, odd1, _mm256_fmadd_ps(x0_even, even1, c1));                               \
    } else if (Rows > 1) {                                                                                   \
      c1 = _mm256_fmadd_ps(x1_odd, odd, _mm256_fmadd_ps(x1_even, even, c1));                                 \
    }                                                                                                        \
  }
    FALCON_GROUP(0, c0a, c1a) FALCON_GROUP(1, c0b, c1b) FALCON_GROUP(2, c0c, c1c) FALCON_GROUP(3, c0d, c1d)
#undef FALCON_GROUP
  }
  FALCON_EACH_SLOT(FALCON_FINISH)
}
#undef FALCON_RESUME
#undef FALCON_FINISH
#undef FALCON_EACH_SLOT

// The int8 kernels' step after each quantisation block: one slot's 32 integer sums, scaled by the
// block's scale, into its row of the float32 tile (32 floats a slot). The first block's are written,
// not added: the tile's memory is not zeroed.
inline void scale_block_sums(float* slot_tile, const __m256i (&sums)[4], float block_scale, bool first_block) {
  const __m256 scale = _mm256_set1_ps(block_scale);
  for (int i = 0; i < 4; ++i) {
    const __m256 value = _mm256_cvtepi32_ps(sums[i]);
    float* t = slot_tile + 8 * i;
    _mm256_store_ps(t, first_block ? _mm256_mul_ps(value, scale) : _mm256_fmadd_ps(value, scale, _mm256_load_ps(t)));
  }
}

// After a tile's last pass, its slots' float32 sums go out through the epilogue.
inline void store_int8_tile(const float* tile, int slots, const TileOut& out) {
  for (int j = 0; j < slots; ++j) {
    const __m256 sums[4] = {_mm256_load_ps(tile + j * kPanelWidth), _mm256_load_ps(tile + j * kPanelWidth + 8),
                            _mm256_load_ps(tile + j * kPanelWidth + 16), _mm256_load_ps(tile + j * kPanelWidth + 24)};
    out(j, sums);
  }
}

// int8: the integer dot product of each step's quad, as |x| · (w with x's sign) so that vpmaddubsw's
// unsigned × signed byte products (at most 2 · 127 · 127 per pair) never saturate; the stored bytes
// w + 128 (dtype.h) become w by flipping their top bit. After each quantisation block the integer sums
// are scaled into the float32 sums kept in `partial` (passes start and end on block boundaries). A tile
// is up to two rows of one panel or, for a lone decode row, one row of two panels (panel_stride bytes
// apart), each line asked for ahead as the float kernels do.
template <int Rows, int Panels>
FALCON_NOINLINE void micro_i8(const TileUnits& units, const uint8_t* panel, int64_t panel_stride, const float* block_scales,
                              int64_t quant_blocks, const Pass& pass, const TileOut& out) {
  constexpr int Slots = Rows * Panels;
  static_assert(Slots <= 2 && (Rows == 1 || Panels == 1), "int8 tiles are up to two rows of one panel, or a row of two panels");
  float* tile = pass.partial;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i top_bits = _mm256_set1_epi8(char(0x80));
  const int64_t first_block = pass.begin / kQuantSteps;
  const int64_t end_block = (pass.end + kQuantSteps - 1) / kQuantSteps;
  const UnitFetch fetch_units(pass, units);
  const bool stream_weights = pass.stream_weights;
  const uint32_t* row0 = units.rows[0];
  const uint32_t* row1 = units.rows[1];
  for (int64_t block = first_block; block < end_block; ++block) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    const int64_t block_end = std::min(pass.end, (block + 1) * kQuantSteps);
    for (int64_t s = block * kQuantSteps; s < block_end; ++s) {
      const uint8_t* step = panel + s * 4 * kPanelWidth;
      const uint8_t* step1 = Panels > 1 ? step + panel_stride : step;
      fetch_units(s);
      fetch_panel_steps<2, Panels>(step, step1, stream_weights);
#define FALCON_WEIGHTS(from, i) _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(from) + i), top_bits)
#define FALCON_DOT(x, magnitude, w, c) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w, x)), ones))
      const __m256i w0 = FALCON_WEIGHTS(step, 0), w1 = FALCON_WEIGHTS(step, 1), w2 = FALCON_WEIGHTS(step, 2), w3 = FALCON_WEIGHTS(step, 3);
      const __m256i x0 = _mm256_set1_epi32(int(row0[s * kPackedRows]));
      const __m256i m0 = _mm256_abs_epi8(x0);
      FALCON_DOT(x0, m0, w0, c00); FALCON_DOT(x0, m0, w1, c01); FALCON_DOT(x0, m0, w2, c02); FALCON_DOT(x0, m0, w3, c03);
      if (Panels > 1) {
        FALCON_DOT(x0, m0, FALCON_WEIGHTS(step1, 0), c10); FALCON_DOT(x0, m0, FALCON_WEIGHTS(step1, 1), c11);
        FALCON_DOT(x0, m0, FALCON_WEIGHTS(step1, 2), c12); FALCON_DOT(x0, m0, FALCON_WEIGHTS(step1, 3), c13);
      }
      if (Rows > 1) {
        const __m256i x1 = _mm256_set1_epi32(int(row1[s * kPackedRows]));
        const __m256i m1 = _mm256_abs_epi8(x1);
        FALCON_DOT(x1, m1, w0, c10); FALCON_DOT(x1, m1, w1, c11); FALCON_DOT(x1, m1, w2, c12); FALCON_DOT(x1, m1, w3, c13);
      }
#undef FALCON_DOT
#undef FALCON_WEIGHTS
    }
    scale_block_sums(tile, {c00, c01, c02, c03}, block_scales[block], block == 0);
    // Slot 1 is the second row, or the lone row (scale block_scales[block]) against the second panel.
    if (Slots > 1) scale_block_sums(tile + kPanelWidth, {c10, c11, c12, c13}, block_scales[(Rows - 1) * quant_blocks + block], block == 0);
  }
  if (pass.last) store_int8_tile(tile, Slots, out);
}

// int8 on CPUs with AVX-VNNI: the stored bytes w + 128 are vpdpbusd's unsigned operand as they are,
// and each block's sums start at −128 · Σ q (the row's block_sums), which leaves exactly Σ q · w: one
// instruction per 8 outputs and step where micro_i8 takes four. A tile is up to three rows of one panel
// (12 sums, 3 broadcast quads and the weight vector: all 16 registers) or, for a lone decode row, one
// row of two panels, each line asked for ahead as the float kernels do. Scaled per quantisation block
// into `partial` as micro_i8.
template <int Rows, int Panels>
FALCON_NOINLINE void micro_i8_vnni(const TileUnits& units, const uint8_t* panel, int64_t panel_stride,
                                   const float* block_scales, const int32_t* block_sums, int64_t quant_blocks,
                                   const Pass& pass, const TileOut& out) {
  constexpr int Slots = Rows * Panels;
  static_assert(Slots <= 3 && (Rows == 1 || Panels == 1), "a tile is rows of one panel or one row of panels");
  // The row of slot j: row j of one panel, or the lone row against panel j.
  constexpr int64_t kSlotRow[3] = {0, Panels > 1 ? 0 : 1, Panels > 1 ? 0 : 2};
  float* tile = pass.partial;
  const int64_t first_block = pass.begin / kQuantSteps;
  const int64_t end_block = (pass.end + kQuantSteps - 1) / kQuantSteps;
  const UnitFetch fetch_units(pass, units);
  const bool stream_weights = pass.stream_weights;
  const uint32_t* row0 = units.rows[0];
  const uint32_t* row1 = units.rows[1];
  const uint32_t* row2 = units.rows[2];
  for (int64_t block = first_block; block < end_block; ++block) {
#define FALCON_START(j) _mm256_set1_epi32(Slots > j ? -128 * block_sums[kSlotRow[j] * quant_blocks + block] : 0)
    __m256i c00 = FALCON_START(0), c01 = c00, c02 = c00, c03 = c00;
    __m256i c10 = FALCON_START(1), c11 = c10, c12 = c10, c13 = c10;
    __m256i c20 = FALCON_START(2), c21 = c20, c22 = c20, c23 = c20;
#undef FALCON_START
    const int64_t block_end = std::min(pass.end, (block + 1) * kQuantSteps);
    for (int64_t s = block * kQuantSteps; s < block_end; ++s) {
      const uint8_t* step = panel + s * 4 * kPanelWidth;
      const uint8_t* step1 = Panels > 1 ? step + panel_stride : step;
      fetch_units(s);
      fetch_panel_steps<2, Panels>(step, step1, stream_weights);
      const __m256i x0 = _mm256_set1_epi32(int(row0[s * kPackedRows]));
      const __m256i x1 = Rows > 1 ? _mm256_set1_epi32(int(row1[s * kPackedRows])) : x0;
      const __m256i x2 = Rows > 2 ? _mm256_set1_epi32(int(row2[s * kPackedRows])) : x0;
#define FALCON_DOT(i, c0, c1, c2)                                                                    \
  {                                                                                                  \
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 32 * i));           \
    dot_bytes_vex(c0, w, x0);                                                                        \
    if (Panels > 1) dot_bytes_vex(c1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step1 + 32 * i)), x0); \
    if (Rows > 1) dot_bytes_vex(c1, w, x1);                                                          \
    if (Rows > 2) dot_bytes_vex(c2, w, x2);                                                          \
  }
      FALCON_DOT(0, c00, c10, c20) FALCON_DOT(1, c01, c11, c21) FALCON_DOT(2, c02, c12, c22) FALCON_DOT(3, c03, c13, c23)
#undef FALCON_DOT
    }
#define FALCON_SCALE(j, c0, c1, c2, c3) \
  if (Slots > j) scale_block_sums(tile + j * kPanelWidth, {c0, c1, c2, c3}, block_scales[kSlotRow[j] * quant_blocks + block], block == 0);
    FALCON_SCALE(0, c00, c01, c02, c03) FALCON_SCALE(1, c10, c11, c12, c13) FALCON_SCALE(2, c20, c21, c22, c23)
#undef FALCON_SCALE
  }
  if (pass.last) store_int8_tile(tile, Slots, out);
}

// One tile of each weight dtype: run<Rows, Panels>(x, m, panel, panel_stride, pass, out) multiplies
// rows [m, m + Rows) of x by Panels panels (panel_stride elements apart) over one pass along k.
// kMaxRows is its tallest tile, passes along k start on multiples of kPassAlign steps (int8's sums
// are scaled per quantisation block). Every tile runs a lone row against two panels at once.
template <typename Panel>
struct FloatTile {
  using Element = typename Panel::Element;
  static constexpr int kMaxRows = Panel::kMaxRows;
  static constexpr int64_t kPassAlign = 1;
  template <int Rows, int Panels>
  static void run(const PackedRows& x, int64_t m, const void* panel, int64_t panel_stride, const Pass& pass, const TileOut& out) {
    const TileUnits units = tile_units(x, m, Rows);
    micro_float<Panel, Rows, Panels>(units, static_cast<const Element*>(panel), panel_stride, pass, out);
  }
};
struct Bf16Tile {
  static constexpr int kMaxRows = 2;
  static constexpr int64_t kPassAlign = 1;
  template <int Rows, int Panels>
  static void run(const PackedRows& x, int64_t m, const void* panel, int64_t panel_stride, const Pass& pass, const TileOut& out) {
    const TileUnits units = tile_units(x, m, Rows);
    micro_bf16<Rows, Panels>(units, static_cast<const uint16_t*>(panel), panel_stride, pass, out);
  }
};
struct Int8Tile {
  static constexpr int kMaxRows = 2;
  static constexpr int64_t kPassAlign = kQuantSteps;
  template <int Rows, int Panels>
  static void run(const PackedRows& x, int64_t m, const void* panel, int64_t panel_stride, const Pass& pass, const TileOut& out) {
    const TileUnits units = tile_units(x, m, Rows);
    micro_i8<Rows, Panels>(units, static_cast<const uint8_t*>(panel), panel_stride, x.block_scales + m * x.quant_blocks,
                           x.quant_blocks, pass, out);
  }
};

struct Int8VnniTile {
  static constexpr int kMaxRows = 3;
  static constexpr int64_t kPassAlign = kQuantSteps;
  template <int Rows, int Panels>
  static void run(const PackedRows& x, int64_t m, const void* panel, int64_t panel_stride, const Pass& pass, const TileOut& out) {
    const TileUnits units = tile_units(x, m, Rows);
    micro_i8_vnni<Rows, Panels>(units, static_cast<const uint8_t*>(panel), panel_stride,
                                x.block_scales + m * x.quant_blocks, x.block_sums + m * x.quant_blocks, x.quant_blocks, pass, out);
  }
};

// Rows whose tiles take turns on each pass's slice of a panel (at most; a group is whole tiles of the
// tallest kind: 63 rows of 3-row tiles), and the bytes of that slice: the slice (half of a 32 KiB L1)
// is read from L2 once per group instead of once per tile, which is what bounded a whole-k tile on
// float32 weights (a panel step of 128 bytes per 8 multiply-adds).
constexpr int64_t kGroupRows = 64;
constexpr int64_t kPassBytes = 16384;

// Up to this many rows, the first tile of each pass asks for its panel's lines ahead (Pass::stream_weights).
constexpr int64_t kStreamRows = 16;

// The rows of the next tile of a group with `remaining` rows left: the tallest tiles, never leaving a
// lone row while a 2 + 2 split exists.
inline int next_tile_rows(int64_t remaining, int max_rows) {
  if (max_rows == 3 && remaining > 3 && remaining % 3 == 1) return 2;
  return int(std::min<int64_t>(remaining, max_rows));
}

// Calls tile(m, rows) for the tiles of rows [group, group_end) in order, the tallest of up to MaxRows rows
// each (next_tile_rows), with `rows` a std::integral_constant for the micro-kernels' templates.
template <int MaxRows, typename Tile>
void for_each_tile(int64_t group, int64_t group_end, Tile&& tile) {
  for (int64_t m = group; m < group_end;) {
    const int rows = next_tile_rows(group_end - m, MaxRows);
    with_count<MaxRows>(rows, [&](auto count) { tile(m, count); });
    m += rows;
  }
}

// Panels outer; for many rows, groups of kGroupRows rows, each over k in passes of kPassBytes of a
// panel, every tile of the group per pass. A lone row (decode) streams two panels at once, over all of k.
template <typename Tile>
void matmul(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
            float* y, int64_t y_stride) {
  const float* scales = w.dtype == DType::Int8 ? w.scales.data() : nullptr;
  const int64_t panel_stride = w.stored_cols() * kPanelWidth;  // elements
  alignas(32) float partial[kGroupRows * kPanelWidth];
  auto store_for = [&](int64_t p, int64_t m) { return tile_store(w, p, m, epilogue, scales, y, y_stride); };
  if (x.rows == 1) {
    const Pass pass{0, x.steps, true, true, partial, 0, false};
    for_panel_pairs(first_panel, end_panel, [&](int64_t p) {
      const TileStore stores[2] = {store_for(p, 0), store_for(p + 1, 0)};
      Tile::template run<1, 2>(x, 0, w.panel(p), panel_stride, pass, TileOut{stores, true});
    }, [&](int64_t p) {
      const TileStore store = store_for(p, 0);
      Tile::template run<1, 1>(x, 0, w.panel(p), panel_stride, pass, TileOut{&store, false});
    });
    return;
  }
  const int64_t step_bytes = kPanelWidth * w.k_group() * int64_t(dtype_size(w.dtype));
  // Few rows (batched decode) read each panel from memory once, in the pass's first tile, as a lone row does.
  const bool stream_weights = x.rows <= kStreamRows;
  const int64_t pass_steps = x.rows > Tile::kMaxRows
      ? std::max<int64_t>(1, kPassBytes / step_bytes / Tile::kPassAlign) * Tile::kPassAlign : x.steps;
  const int64_t group_rows = kGroupRows / Tile::kMaxRows * Tile::kMaxRows;
  for (int64_t p = first_panel; p < end_panel; ++p) {
    for (int64_t group = 0; group < x.rows; group += group_rows) {
      const int64_t group_end = std::min(x.rows, group + group_rows);
      for (int64_t begin = 0; begin < x.steps; begin += pass_steps) {
        const int64_t end = std::min(x.steps, begin + pass_steps);
        // While the group works on this pass, the tile with each row block's first row prefetches that
        // block's units for the next pass: the activations of a long k (the FFN's down projection: 32 KiB a row)
        // do not stay in cache from one panel to the next, and the hardware prefetcher does not follow
        // a group's jump from block to block (one thread, 512 rows, k = 8192: float32 65 → 78 GFLOP/s).
        const int64_t fetch_before = std::min(end, x.steps - (end - begin));
        for_each_tile<Tile::kMaxRows>(group, group_end, [&](int64_t m, auto rows) {
          const Pass pass{begin, end, begin == 0, end == x.steps, partial + (m - group) * kPanelWidth, fetch_before,
                          stream_weights && m == group};
          const TileStore store = store_for(p, m);
          Tile::template run<decltype(rows)::value, 1>(x, m, w.panel(p), panel_stride, pass, TileOut{&store, false});
        });
      }
    }
  }
}

// bfloat16 over many rows runs on the float32 tile (matmul_bf16 below), over weights widened to float32
// a pass at a time: steps [begin, end) of a panel, as the float32 panel steps 2 · (s − begin) (w[2s] of
// each output) and the one after (w[2s + 1]), split as micro_bf16 splits them.
// The 8 bf16 pairs at `pairs` as float32: the evens to even[0, 8), the odds to odd[0, 8).
inline void widen_bf16_pairs(const void* pairs, float* even, float* odd) {
  const __m256i loaded = _mm256_loadu_si256(static_cast<const __m256i*>(pairs));
  _mm256_storeu_ps(even, bf16_evens(loaded));
  _mm256_storeu_ps(odd, bf16_odds(loaded, _mm256_set1_epi32(int(0xffff0000u))));
}

void widen_bf16_panel(const uint16_t* panel, int64_t begin, int64_t end, float* out) {
  for (int64_t s = begin; s < end; ++s) {
    float* even = out + 2 * (s - begin) * kPanelWidth;
    for (int group = 0; group < 4; ++group) {
      widen_bf16_pairs(panel + s * 2 * kPanelWidth + 16 * group, even + 8 * group, even + kPanelWidth + 8 * group);
    }
  }
}

// bfloat16 weights: a lone row and few rows (decode) run micro_bf16 on the stored pairs. Many rows run
// the float32 tile over widened weights and over inputs that pack_activations rounded to bf16 and packed as
// float32 (PackedRows::float_units: above kStreamRows rows, the table's bf16_pairs_max_rows): micro_bf16
// spends a broadcast, a shift and a mask per row and step on the inputs and a shift and a mask on each
// weight vector, and its two rows' 8 chains take two multiply-adds a step, which leaves no slack for FMA
// latency; the float32 tile's 3 rows run 12 chains of one, and each pass of a panel is widened once for all
// rows. (Widening the inputs here instead, a group and a pass at a time, took about 11 % of a bf16 pp512's
// time: it was done once for every panel.) Passes are outermost within a panel so the widened slice of the
// panel stays in L1 for every group, the rows' running sums kept in scratch between passes. Every output's
// chain is micro_bf16's, x[2s] · w[2s] then x[2s + 1] · w[2s + 1] on the same float32 values, so it gets
// the same bits either way.
void matmul_bf16(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
                 float* y, int64_t y_stride) {
  if (!x.float_units) {
    matmul<Bf16Tile>(x, w, first_panel, end_panel, epilogue, y, y_stride);
    return;
  }
  constexpr int kMaxRows = F32Panel::kMaxRows;
  const int64_t group_rows = kGroupRows / kMaxRows * kMaxRows;
  // The float32 tile's passes: kPassBytes of its panel, half as many bf16 steps.
  const int64_t pass_steps = kPassBytes / (kPanelWidth * int64_t(sizeof(float))) / 2;
  const int64_t panel_floats = 2 * pass_steps * kPanelWidth;
  const int64_t weight_steps = x.steps / 2;
  // Rows go in sweeps of 16 groups, so the running sums' scratch stays 126 KiB however long the prompt;
  // each sweep reads the weights once.
  const int64_t sweep_rows = 16 * group_rows;
  float* wide_panel = kernel_scratch(size_t(panel_floats + sweep_rows * kPanelWidth));
  float* partial = wide_panel + panel_floats;
  for (int64_t sweep = 0; sweep < x.rows; sweep += sweep_rows) {
    const int64_t sweep_end = std::min(x.rows, sweep + sweep_rows);
    for (int64_t p = first_panel; p < end_panel; ++p) {
      for (int64_t begin = 0; begin < weight_steps; begin += pass_steps) {
        const int64_t end = std::min(weight_steps, begin + pass_steps);
        widen_bf16_panel(static_cast<const uint16_t*>(w.panel(p)), begin, end, wide_panel);
        // The inputs from the pass's first step on, so that their steps count from 0 as the widened panel's.
        PackedRows inputs = x;
        inputs.units += 2 * begin * kPackedRows;
        const int64_t input_steps = 2 * (end - begin);
        // Each block's units of the next pass are asked for while this one runs, as matmul does.
        const int64_t fetch_before = std::min(input_steps, x.steps - 2 * end);
        for (int64_t group = sweep; group < sweep_end; group += group_rows) {
          const int64_t group_end = std::min(sweep_end, group + group_rows);
          for_each_tile<kMaxRows>(group, group_end, [&](int64_t m, auto rows) {
            constexpr int Rows = decltype(rows)::value;
            const Pass pass{0, input_steps, begin == 0, end == weight_steps, partial + (m - sweep) * kPanelWidth, fetch_before, false};
            const TileStore store = tile_store(w, p, m, epilogue, nullptr, y, y_stride);
            micro_float<F32Panel, Rows, 1>(tile_units(inputs, m, Rows), wide_panel, 0, pass, TileOut{&store, false});
          });
        }
      }
    }
  }
}

// `iterations` rounds of `dot` (32 byte multiply-adds into one int32 vector) on 8 independent chains;
// returns the operations done.
template <typename Dot>
double int8_dot_chains(int64_t iterations, Dot dot) {
  // Distinct starting values: identical chains would be merged into one by the compiler.
  __m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1), c2 = _mm256_set1_epi32(2), c3 = _mm256_set1_epi32(3);
  __m256i c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5), c6 = _mm256_set1_epi32(6), c7 = _mm256_set1_epi32(7);
  for (int64_t i = 0; i < iterations; ++i) {
    dot(c0); dot(c1); dot(c2); dot(c3); dot(c4); dot(c5); dot(c6); dot(c7);
  }
  const __m256i total = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                                         _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
  volatile int sink = _mm256_extract_epi32(total, 0);
  (void)sink;
  // 8 chains × 32 byte multiply-adds × 2 operations.
  return double(iterations) * 8 * 32 * 2;
}

double peak_ops(int64_t iterations, PeakOp op) {
  if (op == PeakOp::Int8Dot) {
    // The int8 kernel's inner sequence on 8 independent chains: vpdpbusd with AVX-VNNI, else sign,
    // vpmaddubsw, vpmaddwd and add.
    const __m256i ones = _mm256_set1_epi16(1), magnitude = _mm256_set1_epi8(3), w = _mm256_set1_epi8(-2);
    return cpu_features().avx_vnni
        ? int8_dot_chains(iterations, [&](__m256i& c) { dot_bytes_vex(c, magnitude, w); })
        : int8_dot_chains(iterations, [&](__m256i& c) {
            c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w, c)), ones));
          });
  }
  // float32 FMAs: also the ceiling of bf16 weights, which AVX2 widens to float32.
  // Distinct starting values: identical chains would be merged into one by the compiler.
#define FALCON_START(i) _mm256_set1_ps(1.0f + 0.001f * i)
  __m256 a0 = FALCON_START(0), a1 = FALCON_START(1), a2 = FALCON_START(2), a3 = FALCON_START(3), a4 = FALCON_START(4);
  __m256 a5 = FALCON_START(5), a6 = FALCON_START(6), a7 = FALCON_START(7), a8 = FALCON_START(8), a9 = FALCON_START(9);
#undef FALCON_START
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#define FALCON_FMA(a) a = _mm256_fmadd_ps(a, m, b)
    FALCON_FMA(a0); FALCON_FMA(a1); FALCON_FMA(a2); FALCON_FMA(a3); FALCON_FMA(a4);
    FALCON_FMA(a5); FALCON_FMA(a6); FALCON_FMA(a7); FALCON_FMA(a8); FALCON_FMA(a9);
#undef FALCON_FMA
  }
  const __m256 total = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                     _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)), _mm256_add_ps(a8, a9)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  volatile float sink = lanes[0];
  (void)sink;
  return double(iterations) * 10 * 8 * 2;
}

// The scalar reference's quantisation (kernels.h), 8 inputs at a time: the same products, clamps and
// round-to-nearest-even conversions, so the units, scales and sums are identical to it.
void quantise_row(const float* x, int64_t cols, int64_t quant_blocks, uint32_t* units, float* scales, int32_t* sums) {
  const __m256 lowest = _mm256_set1_ps(-127.0f), highest = _mm256_set1_ps(127.0f);
  const __m256 magnitude_bits = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t block = 0; block < quant_blocks; ++block) {
    const int64_t k_begin = block * kQuantSteps * 4;
    const int64_t k_end = std::min(cols, k_begin + kQuantSteps * 4);
    __m256 largest_lanes = _mm256_setzero_ps();
    for (int64_t k = k_begin; k < k_end; k += 8) {
      // Operands in this order, a NaN input is skipped as std::max skips it in the reference.
      largest_lanes = _mm256_max_ps(_mm256_and_ps(load_f32(x + k, k_end - k), magnitude_bits), largest_lanes);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, largest_lanes);
    const float largest = *std::max_element(lanes, lanes + 8);
    const __m256 inverse = _mm256_set1_ps(largest > 0.0f ? 127.0f / largest : 0.0f);
    scales[block] = largest / 127.0f;
    __m256i total = _mm256_setzero_si256();
    for (int64_t k = k_begin; k < k_end; k += 8) {
      const __m256 v = load_f32(x + k, k_end - k);
      const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, inverse), lowest), highest));
      total = _mm256_add_epi32(total, q);
      // Within each 128-bit lane: 4 int32 → 4 int16 → 4 int8, so each lane's low 32 bits are one quad.
      const __m256i words = _mm256_packs_epi32(q, q);
      const __m256i bytes = _mm256_packs_epi16(words, words);
      const int64_t first_step = k / 4;
      units[first_step * kPackedRows] = uint32_t(_mm256_extract_epi32(bytes, 0));
      if (k + 4 < k_end) units[(first_step + 1) * kPackedRows] = uint32_t(_mm256_extract_epi32(bytes, 4));
    }
    alignas(32) int32_t partial_sums[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(partial_sums), total);
    int32_t sum = 0;
    for (int32_t value : partial_sums) sum += value;
    sums[block] = sum;
  }
}

// 8 stored KV elements as float32, exactly: bfloat16 is the top half of a float32, float16 widens by F16C.
inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 widen8(const Bf16* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline __m256 widen8(const F16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
// The first min(remaining, 8) elements, zeros after them; reads nothing past them.
inline __m256 widen8(const float* p, int64_t remaining) { return load_f32(p, remaining); }
template <typename Element>
inline __m256 widen8(const Element* p, int64_t remaining) {
  if (remaining >= 8) return widen8(p);
  Element lanes[8] = {};
  std::memcpy(lanes, p, size_t(remaining) * sizeof(Element));
  return widen8(lanes);
}

// Query g's columns [c, d) one vector at a time: the columns a whole group of vectors does not cover.
// Value j is row j % kKeyBlock of block j / kKeyBlock; each column's sum runs over j in order.
template <typename Element>
void weighted_sum_tail(const float* p, const void* const* value_blocks, int64_t count, int64_t c, int64_t d, float* out) {
  for (; c < d; c += 8) {
    const int64_t remaining = d - c;
    __m256 a = _mm256_setzero_ps();
    for (int64_t first = 0; first < count; first += kKeyBlock) {
      const Element* block = static_cast<const Element*>(value_blocks[first / kKeyBlock]) + c;
      const int64_t rows = std::min(kKeyBlock, count - first);
      for (int64_t r = 0; r < rows; ++r) a = _mm256_fmadd_ps(_mm256_set1_ps(p[first + r]), widen8(block + r * d, remaining), a);
    }
    if (remaining >= 8) _mm256_storeu_ps(out + c, a);
    else _mm256_maskstore_ps(out + c, lanes_below(remaining), a);
  }
}

// Each value row's columns are loaded once per group of queries and multiplied by every query's
// probability, Vectors × 8 columns at a time: 8 accumulator chains (1 query × 8 vectors, 2 × 4, 3 or
// 4 × 2), so the multiply-adds do not wait on one another (one chain per column ran at a quarter of
// the FMA rate: the prefill's attention took 6 % of its time for 2 % of its work). Each column's sum
// is the same chain in j order however the columns are grouped.
template <typename Element, int Queries>
void weighted_sum_group(const float* p, int64_t p_stride, const void* const* value_blocks, int64_t count, int64_t d,
                        float* out, int64_t out_stride) {
  constexpr int Vectors = Queries == 1 ? 8 : Queries == 2 ? 4 : 2;
  int64_t c = 0;
  for (; c + 8 * Vectors <= d; c += 8 * Vectors) {
    __m256 a[Queries][Vectors];
#pragma GCC unroll 8
    for (int g = 0; g < Queries; ++g) {
#pragma GCC unroll 8
      for (int v = 0; v < Vectors; ++v) a[g][v] = _mm256_setzero_ps();
    }
    for (int64_t first = 0; first < count; first += kKeyBlock) {
      const Element* block = static_cast<const Element*>(value_blocks[first / kKeyBlock]) + c;
      const int64_t rows = std::min(kKeyBlock, count - first);
      for (int64_t r = 0; r < rows; ++r) {
        const Element* row = block + r * d;
        if constexpr (Queries == 1) {
          // Each vector is used once: loaded as it is multiplied (8 held at once would not leave a register).
          const __m256 pj = _mm256_set1_ps(p[first + r]);
#pragma GCC unroll 8
          for (int v = 0; v < Vectors; ++v) a[0][v] = _mm256_fmadd_ps(pj, widen8(row + 8 * v), a[0][v]);
        } else {
          __m256 values[Vectors];
#pragma GCC unroll 8
          for (int v = 0; v < Vectors; ++v) values[v] = widen8(row + 8 * v);
#pragma GCC unroll 8
          for (int g = 0; g < Queries; ++g) {
            const __m256 pj = _mm256_set1_ps(p[g * p_stride + first + r]);
#pragma GCC unroll 8
            for (int v = 0; v < Vectors; ++v) a[g][v] = _mm256_fmadd_ps(pj, values[v], a[g][v]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < Queries; ++g) {
#pragma GCC unroll 8
      for (int v = 0; v < Vectors; ++v) _mm256_storeu_ps(out + g * out_stride + c + 8 * v, a[g][v]);
    }
  }
  for (int g = 0; g < Queries; ++g) weighted_sum_tail<Element>(p + g * p_stride, value_blocks, count, c, d, out + g * out_stride);
}

// Each block of 16 keys is two vectors per query, one multiply-add each per head dimension: 8
// accumulator chains for a group of queries (1 query × 4 blocks, 2 × 2 blocks, 3 or 4 × 1 block), so a
// lone decode query does not wait on a single chain of d dependent multiply-adds. A lane's sum is
// the same chain along c in order either way.
template <typename Element, int Queries>
void key_scores_blocked_group(const float* q, int64_t q_stride, const void* const* key_blocks, int64_t count, int64_t d,
                              float* scores, int64_t score_stride) {
  constexpr int Blocks = Queries == 1 ? 4 : Queries == 2 ? 2 : 1;
  int64_t j = 0;
  // Whole groups of Blocks blocks first (the last may be partly past count: its lanes are not stored),
  // then the blocks left one at a time.
  const auto run = [&](auto blocks_constant) {
    constexpr int RunBlocks = decltype(blocks_constant)::value;
    const Element* blocks[RunBlocks];
#pragma GCC unroll 4
    for (int b = 0; b < RunBlocks; ++b) blocks[b] = static_cast<const Element*>(key_blocks[j / kKeyBlock + b]);
    __m256 low[Queries][RunBlocks], high[Queries][RunBlocks];
#pragma GCC unroll 4
    for (int g = 0; g < Queries; ++g) {
#pragma GCC unroll 4
      for (int b = 0; b < RunBlocks; ++b) low[g][b] = high[g][b] = _mm256_setzero_ps();
    }
    for (int64_t c = 0; c < d; ++c) {
#pragma GCC unroll 4
      for (int b = 0; b < RunBlocks; ++b) {
        const __m256 key_low = widen8(blocks[b] + c * kKeyBlock), key_high = widen8(blocks[b] + c * kKeyBlock + 8);
#pragma GCC unroll 4
        for (int g = 0; g < Queries; ++g) {
          const __m256 x = _mm256_set1_ps(q[g * q_stride + c]);
          low[g][b] = _mm256_fmadd_ps(x, key_low, low[g][b]);
          high[g][b] = _mm256_fmadd_ps(x, key_high, high[g][b]);
        }
      }
    }
#pragma GCC unroll 4
    for (int b = 0; b < RunBlocks; ++b) {
      const int64_t first = j + b * kKeyBlock;
      const __m256i mask_low = lanes_below(count - first), mask_high = lanes_below(count - first - 8);
#pragma GCC unroll 4
      for (int g = 0; g < Queries; ++g) {
        _mm256_maskstore_ps(scores + g * score_stride + first, mask_low, low[g][b]);
        _mm256_maskstore_ps(scores + g * score_stride + first + 8, mask_high, high[g][b]);
      }
    }
    j += RunBlocks * kKeyBlock;
  };
  if constexpr (Blocks > 1) {
    while (j + (Blocks - 1) * kKeyBlock < count) run(std::integral_constant<int, Blocks>{});
  }
  while (j < count) run(std::integral_constant<int, 1>{});
}

template <typename Element>
void key_scores_blocked(const float* q, int64_t q_stride, int64_t queries, const void* const* key_blocks, int64_t count,
                        int64_t d, float* scores, int64_t score_stride) {
  static_assert(kKeyBlock == 16, "two AVX2 vectors per key block");
  with_count<kAttentionQueries>(queries, [&](auto group) {
    key_scores_blocked_group<Element, decltype(group)::value>(q, q_stride, key_blocks, count, d, scores, score_stride);
  });
}

template <typename Element>
void weighted_sum(const float* p, int64_t p_stride, int64_t queries, const void* const* value_blocks, int64_t count,
                  int64_t d, float* out, int64_t out_stride) {
  with_count<kAttentionQueries>(queries, [&](auto group) {
    weighted_sum_group<Element, decltype(group)::value>(p, p_stride, value_blocks, count, d, out, out_stride);
  });
}

float exp_sum(float* x, int64_t n, float shift) {
  const __m256 shift_v = _mm256_set1_ps(shift);
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    // Masked scores are -inf: their probability must be exactly zero, not exp's clamped minimum.
    const __m256 finite = _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m256 e = _mm256_and_ps(finite, exp256(_mm256_sub_ps(v, shift_v)));
    _mm256_storeu_ps(x + i, e);
    total = _mm256_add_ps(total, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

float stream_sum(const float* data, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(data + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(data + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(data + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(data + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

// The AVX-512 kernel's arithmetic (the same bits), 8 values at a time: the statistics in double, each half
// of a vector widened to 4 doubles; the squares and the output's γ and β are fused multiply-adds, so it may
// differ from the scalar reference in the last bit. The AVX2 table ran the scalar loop before: 3.1–3.7 µs a
// row of 2048 on Zen 5 (this: 0.8–1.3 µs), two rows a layer in every decoded token, on the caller while the
// other threads wait.
void layer_norm_row(const float* in, int64_t dim, const float* gamma, const float* beta, float epsilon, float* out) {
  // The low and high 4 lanes of a float (or 32-bit mask) vector, widened to double (or 64-bit lanes).
  const auto low_as_double = [](__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); };
  const auto high_as_double = [](__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); };
  const auto low_mask = [](__m256i m) { return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))); };
  const auto high_mask = [](__m256i m) { return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1))); };
  __m256d sum_low = _mm256_setzero_pd(), sum_high = _mm256_setzero_pd();
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256 v = load_f32(in + i, dim - i);
    sum_low = _mm256_add_pd(sum_low, low_as_double(v));
    sum_high = _mm256_add_pd(sum_high, high_as_double(v));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum_low, sum_high));
  const double mean_d = (lanes[0] + lanes[1] + lanes[2] + lanes[3]) / double(dim);
  const __m256d mean_wide = _mm256_set1_pd(mean_d);
  __m256d squares_low = _mm256_setzero_pd(), squares_high = _mm256_setzero_pd();
  for (int64_t i = 0; i < dim; i += 8) {
    // Lanes past dim would add mean²: they are masked to zero after centring.
    const __m256i keep = lanes_below(dim - i);
    const __m256 v = load_f32(in + i, dim - i);
    const __m256d centred_low = _mm256_and_pd(_mm256_sub_pd(low_as_double(v), mean_wide), low_mask(keep));
    const __m256d centred_high = _mm256_and_pd(_mm256_sub_pd(high_as_double(v), mean_wide), high_mask(keep));
    squares_low = _mm256_fmadd_pd(centred_low, centred_low, squares_low);
    squares_high = _mm256_fmadd_pd(centred_high, centred_high, squares_high);
  }
  _mm256_store_pd(lanes, _mm256_add_pd(squares_low, squares_high));
  const double squares = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  const __m256 mean = _mm256_set1_ps(float(mean_d));
  const __m256 inverse_std = _mm256_set1_ps(float(1.0 / std::sqrt(squares / double(dim) + double(epsilon))));
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256 normalised = _mm256_mul_ps(_mm256_sub_ps(load_f32(in + i, dim - i), mean), inverse_std);
    _mm256_maskstore_ps(out + i, lanes_below(dim - i), _mm256_fmadd_ps(normalised, load_f32(gamma + i, dim - i), load_f32(beta + i, dim - i)));
  }
}

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::Avx2, matmul<FloatTile<F32Panel>>, matmul_bf16, matmul<FloatTile<F16Panel>>,
                                 cpu_features().avx_vnni ? matmul<Int8VnniTile> : matmul<Int8Tile>, kStreamRows, quantise_row,
                                 layer_norm_row,
                                 {key_scores_blocked<float>, weighted_sum<float>},
                                 {key_scores_blocked<Bf16>, weighted_sum<Bf16>},
                                 {key_scores_blocked<F16>, weighted_sum<F16>},
                                 scalar_kernels().mask_scores, exp_sum, peak_ops,
                                 stream_sum};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
