#pragma once
// nvcuda::wmma for the CUDA emulation: 16×16×16 tiles of half or bfloat16 inputs with float
// accumulators. Every fragment operation is a warp collective of all 32 lanes (as on the GPU, where
// the whole warp must call it with the same arguments). A fragment's elements are spread over the
// lanes in an order CUDA leaves unspecified; here lane l holds elements 8l .. 8l + 7 of the tile in
// row-major order, so element-wise loops over frag.x[] work as they do on the GPU.
// mma_sync: d[m][n] = c[m][n] + Σ_k a[m][k] · b[k][n], each product exact in float32 (8- or 11-bit
// significands), summed in k order in float32. A tensor core may sum in another order and with
// other internal rounding; the emulation cannot tell how a given GPU rounds.
#include "cuda_emu.h"

namespace falcon::cuda_emu::nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

constexpr int kTile = 16;
constexpr int kPerLane = kTile * kTile / kWarpSize;

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation models the 16x16x16 shape only");
  static constexpr int num_elements = kPerLane;
  T x[kPerLane];
};

namespace detail {

inline void whole_warp(const char* op) {
  if (active_mask() != 0xffffffffu) kernel_error(std::string(op) + " needs all 32 lanes of the warp");
  warp_collective(op, 0xffffffffu, nullptr, nullptr);
}

// Element i of lane `lane`'s share is tile element (row, col) of a row-major 16×16 tile.
inline int row_of(int lane, int i) { return (lane * kPerLane + i) / kTile; }
inline int col_of(int lane, int i) { return (lane * kPerLane + i) % kTile; }

template <typename T>
inline T from_float(float f);
template <>
inline float from_float<float>(float f) { return f; }
template <>
inline half_emu from_float<half_emu>(float f) { return half_emu{falcon::f32_to_f16(f)}; }
template <>
inline bfloat16_emu from_float<bfloat16_emu>(float f) { return bfloat16_emu{falcon::f32_to_bf16(f)}; }

template <typename A, typename B, typename C, typename D>
struct MmaExchange {
  D* d;
  const A* a;
  const B* b;
  const C* c;
};

template <typename A, typename B, typename C, typename D>
void complete_mma(void* const* payloads, unsigned) {
  float a[kTile][kTile], b[kTile][kTile], c[kTile][kTile];
  for (int lane = 0; lane < kWarpSize; ++lane) {
    const auto* exchange = static_cast<MmaExchange<A, B, C, D>*>(payloads[lane]);
    for (int i = 0; i < kPerLane; ++i) {
      a[row_of(lane, i)][col_of(lane, i)] = to_float(exchange->a->x[i]);
      b[row_of(lane, i)][col_of(lane, i)] = to_float(exchange->b->x[i]);
      c[row_of(lane, i)][col_of(lane, i)] = exchange->c->x[i];
    }
  }
  for (int lane = 0; lane < kWarpSize; ++lane) {
    auto* exchange = static_cast<MmaExchange<A, B, C, D>*>(payloads[lane]);
    for (int i = 0; i < kPerLane; ++i) {
      const int m = row_of(lane, i), n = col_of(lane, i);
      float sum = c[m][n];
      for (int k = 0; k < kTile; ++k) sum += a[m][k] * b[k][n];
      exchange->d->x[i] = sum;
    }
  }
}

}  // namespace detail

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& frag, float value) {
  detail::whole_warp("fill_fragment");
  for (int i = 0; i < kPerLane; ++i) frag.x[i] = detail::from_float<T>(value);
}

// matrix_a / matrix_b: the layout is the fragment's; element (r, c) of the tile is at
// p[r · ldm + c] (row_major) or p[c · ldm + r] (col_major). For matrix_b the tile is b[k][n].
template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& frag, const T* p, unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>, "matrix fragments carry their layout");
  detail::whole_warp("load_matrix_sync");
  const int lane = place().lane;
  for (int i = 0; i < kPerLane; ++i) {
    const int r = detail::row_of(lane, i), c = detail::col_of(lane, i);
    frag.x[i] = std::is_same_v<Layout, row_major> ? p[size_t(r) * ldm + size_t(c)] : p[size_t(c) * ldm + size_t(r)];
  }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& frag, const float* p, unsigned ldm, layout_t layout) {
  detail::whole_warp("load_matrix_sync");
  const int lane = place().lane;
  for (int i = 0; i < kPerLane; ++i) {
    const int r = detail::row_of(lane, i), c = detail::col_of(lane, i);
    frag.x[i] = layout == mem_row_major ? p[size_t(r) * ldm + size_t(c)] : p[size_t(c) * ldm + size_t(r)];
  }
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& frag, unsigned ldm, layout_t layout) {
  detail::whole_warp("store_matrix_sync");
  const int lane = place().lane;
  for (int i = 0; i < kPerLane; ++i) {
    const int r = detail::row_of(lane, i), c = detail::col_of(lane, i);
    (layout == mem_row_major ? p[size_t(r) * ldm + size_t(c)] : p[size_t(c) * ldm + size_t(r)]) = frag.x[i];
  }
}

template <typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  static_assert(std::is_same_v<T, half_emu> || std::is_same_v<T, bfloat16_emu>, "half or bfloat16 inputs");
  using A = fragment<matrix_a, 16, 16, 16, T, LayoutA>;
  using B = fragment<matrix_b, 16, 16, 16, T, LayoutB>;
  using C = fragment<accumulator, 16, 16, 16, float>;
  if (active_mask() != 0xffffffffu) kernel_error("mma_sync needs all 32 lanes of the warp");
  detail::MmaExchange<A, B, C, C> exchange{&d, &a, &b, &c};
  warp_collective("mma_sync", 0xffffffffu, &exchange, detail::complete_mma<A, B, C, C>);
}

}  // namespace falcon::cuda_emu::nvcuda::wmma

namespace nvcuda = falcon::cuda_emu::nvcuda;
