#include "gguf_dequant.h"

#include <algorithm>
#include <cstring>

#include "dtype.h"
#include "error.h"
#include "memory.h"

// ggml writes each product and sum as its own rounding (x86 builds without FMA); a fused multiply-add
// would change last bits, and the tests compare against an independent JavaScript dequantiser.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace falcon {

namespace {

// Each block's float16 fields are read as bytes: blocks are packed (Q8_0's are 34 bytes), so a field
// can sit at any address.
float half_at(const uint8_t* p) { return f16_to_f32(uint16_t(p[0] | (p[1] << 8))); }

constexpr int64_t kQK = 32;    // QK4_0, QK4_1, QK5_0, QK5_1, QK8_0
constexpr int64_t kQK_K = 256; // the K-quants' super-block

// get_scale_min_k4: the 6-bit scale and min of sub-block j from a K-quant's 12 packed bytes.
void scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Rows are dequantised in blocks of about this many float32 bytes, as weight_file.cpp reads them.
constexpr uint64_t kDequantBlockBytes = uint64_t(8) << 20;

}  // namespace

bool ggml_quant_block(uint32_t type, int64_t* block_values, int64_t* block_bytes) {
  switch (GgmlQuantType(type)) {
    case GgmlQuantType::Q4_0: *block_values = kQK; *block_bytes = 2 + 16; return true;
    case GgmlQuantType::Q4_1: *block_values = kQK; *block_bytes = 4 + 16; return true;
    case GgmlQuantType::Q5_0: *block_values = kQK; *block_bytes = 2 + 4 + 16; return true;
    case GgmlQuantType::Q5_1: *block_values = kQK; *block_bytes = 4 + 4 + 16; return true;
    case GgmlQuantType::Q8_0: *block_values = kQK; *block_bytes = 2 + 32; return true;
    case GgmlQuantType::Q4_K: *block_values = kQK_K; *block_bytes = 4 + 12 + 128; return true;
    case GgmlQuantType::Q5_K: *block_values = kQK_K; *block_bytes = 4 + 12 + 32 + 128; return true;
    case GgmlQuantType::Q6_K: *block_values = kQK_K; *block_bytes = 128 + 64 + 16 + 2; return true;
  }
  return false;
}

void dequantize_ggml_row(GgmlQuantType type, const uint8_t* x, float* y, int64_t count) {
  int64_t block_values = 0, block_bytes = 0;
  require(ggml_quant_block(uint32_t(type), &block_values, &block_bytes) && count % block_values == 0, ErrorKind::Weights,
          "dequantize_ggml_row: bad type or count");
  const int64_t blocks = count / block_values;
  for (int64_t b = 0; b < blocks; b++, x += block_bytes, y += block_values) {
    switch (type) {
      case GgmlQuantType::Q4_0: {
        const float d = half_at(x);
        const uint8_t* qs = x + 2;
        for (int j = 0; j < 16; j++) {
          y[j] = float((qs[j] & 0x0F) - 8) * d;
          y[j + 16] = float((qs[j] >> 4) - 8) * d;
        }
        break;
      }
      case GgmlQuantType::Q4_1: {
        const float d = half_at(x), m = half_at(x + 2);
        const uint8_t* qs = x + 4;
        for (int j = 0; j < 16; j++) {
          y[j] = float(qs[j] & 0x0F) * d + m;
          y[j + 16] = float(qs[j] >> 4) * d + m;
        }
        break;
      }
      case GgmlQuantType::Q5_0:
      case GgmlQuantType::Q5_1: {
        const bool has_min = type == GgmlQuantType::Q5_1;
        const float d = half_at(x);
        const float m = has_min ? half_at(x + 2) : 0.0f;
        const uint8_t* qh_bytes = x + (has_min ? 4 : 2);
        const uint32_t qh = uint32_t(qh_bytes[0]) | (uint32_t(qh_bytes[1]) << 8) | (uint32_t(qh_bytes[2]) << 16) |
                            (uint32_t(qh_bytes[3]) << 24);
        const uint8_t* qs = qh_bytes + 4;
        for (int j = 0; j < 16; j++) {
          const int high0 = int(((qh >> j) << 4) & 0x10);
          const int high1 = int((qh >> (j + 12)) & 0x10);
          const int q0 = (qs[j] & 0x0F) | high0;
          const int q1 = (qs[j] >> 4) | high1;
          if (has_min) {
            y[j] = float(q0) * d + m;
            y[j + 16] = float(q1) * d + m;
          } else {
            y[j] = float(q0 - 16) * d;
            y[j + 16] = float(q1 - 16) * d;
          }
        }
        break;
      }
      case GgmlQuantType::Q8_0: {
        const float d = half_at(x);
        const int8_t* qs = reinterpret_cast<const int8_t*>(x + 2);
        for (int j = 0; j < 32; j++) y[j] = float(qs[j]) * d;
        break;
      }
      case GgmlQuantType::Q4_K:
      case GgmlQuantType::Q5_K: {
        const bool five_bits = type == GgmlQuantType::Q5_K;
        const float d = half_at(x), dmin = half_at(x + 2);
        const uint8_t* scales = x + 4;
        const uint8_t* qh = x + 16;
        const uint8_t* ql = x + 16 + (five_bits ? 32 : 0);
        float* out = y;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
          uint8_t sc, mn;
          scale_min_k4(is, scales, &sc, &mn);
          const float d1 = d * float(sc), m1 = dmin * float(mn);
          scale_min_k4(is + 1, scales, &sc, &mn);
          const float d2 = d * float(sc), m2 = dmin * float(mn);
          for (int l = 0; l < 32; l++) {
            const int high = five_bits && (qh[l] & u1) ? 16 : 0;
            const float scaled = d1 * float((ql[l] & 0xF) + high);
            *out++ = scaled - m1;
          }
          for (int l = 0; l < 32; l++) {
            const int high = five_bits && (qh[l] & u2) ? 16 : 0;
            const float scaled = d2 * float((ql[l] >> 4) + high);
            *out++ = scaled - m2;
          }
        }
        break;
      }
      case GgmlQuantType::Q6_K: {
        const uint8_t* ql = x;
        const uint8_t* qh = x + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(x + 192);
        const float d = half_at(x + 208);
        float* out = y;
        for (int n = 0; n < 256; n += 128, out += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * float(sc[is]) * float(q1);
            out[l + 32] = d * float(sc[is + 2]) * float(q2);
            out[l + 64] = d * float(sc[is + 4]) * float(q3);
            out[l + 96] = d * float(sc[is + 6]) * float(q4);
          }
        }
        break;
      }
    }
  }
}

void set_weight_from_ggml(Model& model, const std::string& name, int64_t row_offset, GgmlQuantType type, int64_t rows,
                          int64_t cols, const WeightFile& file, uint64_t byte_offset) {
  int64_t block_values = 0, block_bytes = 0;
  require(ggml_quant_block(uint32_t(type), &block_values, &block_bytes), ErrorKind::Weights,
          "weight '" + name + "': unsupported ggml type " + std::to_string(uint32_t(type)));
  require(rows > 0 && cols > 0 && cols % block_values == 0, ErrorKind::Weights,
          "weight '" + name + "': rows of " + std::to_string(cols) + " values are not whole ggml blocks of " +
              std::to_string(block_values));
  model.check_weight_target(name, row_offset, rows, cols);
  const uint64_t row_bytes = uint64_t(cols / block_values) * uint64_t(block_bytes);
  require(file.contains(byte_offset, row_bytes * uint64_t(rows)), ErrorKind::Weights,
          file.path() + ": weight '" + name + "' runs past the end of the file");
  const std::string what = "weight '" + name + "'";
  const int64_t block_rows = int64_t(std::max<uint64_t>(1, kDequantBlockBytes / (uint64_t(cols) * sizeof(float))));
  const int64_t first_block_rows = std::min(block_rows, rows);
  TrackedVector<uint8_t> packed(size_t(uint64_t(first_block_rows) * row_bytes));
  TrackedVector<float> values(size_t(first_block_rows) * size_t(cols));
  for (int64_t first = 0; first < rows; first += block_rows) {
    const int64_t count = std::min(block_rows, rows - first);
    file.read(byte_offset + uint64_t(first) * row_bytes, uint64_t(count) * row_bytes, packed.data(), what);
    for (int64_t r = 0; r < count; r++) {
      dequantize_ggml_row(type, packed.data() + size_t(r) * row_bytes, values.data() + size_t(r) * size_t(cols), cols);
    }
    TensorSource part;
    part.data = values.data();
    part.dtype = DType::Float32;
    part.rows = count;
    part.cols = cols;
    model.set_weight(name, row_offset + first, part);
  }
}

}  // namespace falcon
