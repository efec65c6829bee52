#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace falcon {

// Storage types. Float64 exists only as a source format to cast from at load time; Int8 and Int4 only
// as quantised weight-matrix formats, never as sources. An Int8 value q in [-127, 127] is stored offset
// by 128, as the byte q + 128: the unsigned operand the VNNI byte dot product multiplies, so the kernels
// use the bytes as they are. An Int4 value is a nibble q in [0, 15] standing for (q − 8) · d, with one
// float16 scale d per group of 32 inputs, as ggml's Q4_0 (weights.h has the layout).
enum class DType { Float32, BFloat16, Float16, Float64, Int8, Int4 };

// Bytes per element; 0 for Int4, whose elements are half a byte (weights.h sizes its matrices).
size_t dtype_size(DType dtype);
// Int8 and Int4: formats a matrix is quantised into, which no element-wise load or store reads.
inline bool is_quantised(DType dtype) { return dtype == DType::Int8 || dtype == DType::Int4; }
const char* dtype_name(DType dtype);
bool parse_dtype(const std::string& name, DType* out);

inline float bf16_to_f32(uint16_t bits) {
  uint32_t widened = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof value);
  return value;
}

// Round to nearest even, as torch and keras do; NaN stays NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

// Reads element `index` of a buffer of `dtype` as float (float64 is narrowed).
float load_as_f32(const void* data, DType dtype, size_t index);
// Writes `value` as element `index` of a buffer of `dtype`, rounding to nearest even.
void store_from_f32(void* data, DType dtype, size_t index, float value);

}  // namespace falcon
