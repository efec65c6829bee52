#include "dtype.h"

namespace falcon {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::BFloat16: return 2;
    case DType::Float16: return 2;
    case DType::Float64: return 8;
    case DType::Int8: return 1;
    case DType::Int4: return 0;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::BFloat16: return "bfloat16";
    case DType::Float16: return "float16";
    case DType::Float64: return "float64";
    case DType::Int8: return "int8";
    case DType::Int4: return "int4";
  }
  return "unknown";
}

bool parse_dtype(const std::string& name, DType* out) {
  if (name == "float32") *out = DType::Float32;
  else if (name == "bfloat16") *out = DType::BFloat16;
  else if (name == "float16") *out = DType::Float16;
  else if (name == "float64") *out = DType::Float64;
  else if (name == "int8") *out = DType::Int8;
  else if (name == "int4") *out = DType::Int4;
  else return false;
  return true;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {
      // Subnormal half: renormalise into a normal float.
      int shift = 0;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
      }
      mantissa &= 0x3ffu;
      bits = sign | (uint32_t(127 - 15 - shift + 1) << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

uint16_t f32_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (abs_bits >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds past the largest half
  if (abs_bits < 0x38800000u) {
    // Result is subnormal (or zero): scale into the 10-bit field with round to nearest even.
    if (abs_bits < 0x33000000u) return uint16_t(sign);
    uint32_t exponent = abs_bits >> 23;
    uint32_t mantissa = (abs_bits & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exponent;  // 113 - exponent + 13
    uint32_t half_mantissa = mantissa >> shift;
    uint32_t remainder = mantissa & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ++half_mantissa;
    return uint16_t(sign | half_mantissa);
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return uint16_t(sign | ((rounded - (112u << 23)) >> 13));
}

namespace {

// Source bytes come from files and caller buffers at any offset: read and write through memcpy,
// which compiles to a plain (unaligned-tolerant) move.
template <typename T>
T load_unaligned(const void* data, size_t index) {
  T value;
  std::memcpy(&value, static_cast<const char*>(data) + index * sizeof(T), sizeof(T));
  return value;
}

template <typename T>
void store_unaligned(void* data, size_t index, T value) {
  std::memcpy(static_cast<char*>(data) + index * sizeof(T), &value, sizeof(T));
}

}  // namespace

float load_as_f32(const void* data, DType dtype, size_t index) {
  switch (dtype) {
    case DType::Float32: return load_unaligned<float>(data, index);
    case DType::BFloat16: return bf16_to_f32(load_unaligned<uint16_t>(data, index));
    case DType::Float16: return f16_to_f32(load_unaligned<uint16_t>(data, index));
    case DType::Float64: return float(load_unaligned<double>(data, index));
    case DType::Int8: return float(int(load_unaligned<uint8_t>(data, index)) - 128);
    case DType::Int4: break;  // nibbles with group scales: WeightMatrix::get reads them
  }
  return 0.0f;
}

void store_from_f32(void* data, DType dtype, size_t index, float value) {
  switch (dtype) {
    case DType::Float32: store_unaligned<float>(data, index, value); break;
    case DType::BFloat16: store_unaligned<uint16_t>(data, index, f32_to_bf16(value)); break;
    case DType::Float16: store_unaligned<uint16_t>(data, index, f32_to_f16(value)); break;
    case DType::Float64: store_unaligned<double>(data, index, double(value)); break;
    case DType::Int8: store_unaligned<uint8_t>(data, index, uint8_t(int(value) + 128)); break;
    case DType::Int4: break;  // quantised a group at a time at load (model.cpp)
  }
}

}  // namespace falcon
