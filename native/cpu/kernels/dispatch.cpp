#include "kernels.h"

#include "../../core/memory.h"

namespace falcon::cpu {

const KernelTable& kernels() {
  switch (active_isa()) {
#if FALCON_X86
    case Isa::Avx512: return avx512_kernels();
    case Isa::Avx2: return avx2_kernels();
#else
    // Never active off x86: no x86 feature is reported there, so neither family is supported.
    case Isa::Avx512:
    case Isa::Avx2:
#endif
    case Isa::Scalar: break;
  }
  return scalar_kernels();
}

float* kernel_scratch(size_t count) {
  constexpr size_t kAlignFloats = kScratchAlignment / sizeof(float);
  thread_local TrackedVector<float> scratch = thread_scratch<float>();
  if (scratch.size() < count + kAlignFloats) scratch.resize(count + kAlignFloats);
  const uintptr_t start = reinterpret_cast<uintptr_t>(scratch.data());
  return scratch.data() + ((kScratchAlignment - start % kScratchAlignment) % kScratchAlignment) / sizeof(float);
}

namespace {
MatmulKernel int4_matmul(Isa isa) {
#if FALCON_X86
  // As for int8, AVX2 CPUs with AVX-VNNI take its byte dot products, and AVX-512 CPUs without VNNI run the AVX2 kernel.
  const MatmulKernel avx2 = cpu_features().avx_vnni ? matmul_i4_avx_vnni : matmul_i4_avx2;
#endif
  switch (isa) {
#if FALCON_X86
    case Isa::Avx512: return cpu_features().avx512_vnni ? matmul_i4_avx512 : avx2;
    case Isa::Avx2: return avx2;
#else
    case Isa::Avx512:
    case Isa::Avx2:
#endif
    case Isa::Scalar: break;
  }
  return matmul_i4_scalar;
}
}  // namespace

MatmulKernel matmul_kernel(const KernelTable& table, DType dtype) {
  switch (dtype) {
    case DType::BFloat16: return table.matmul_bf16;
    case DType::Float16: return table.matmul_f16;
    case DType::Int8: return table.matmul_i8;
    case DType::Int4: return int4_matmul(table.isa);
    default: return table.matmul_f32;
  }
}

const AttentionKernels& attention_kernels(const KernelTable& table, DType kv_dtype) {
  switch (kv_dtype) {
    case DType::BFloat16: return table.attention_bf16;
    case DType::Float16: return table.attention_f16;
    default: return table.attention_f32;
  }
}

}  // namespace falcon::cpu
