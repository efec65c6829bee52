#pragma once
#include <string>
#include <vector>

// 1 on x86 and x86-64 (GCC, Clang or MSVC): the only targets the AVX2 and AVX-512 kernels are compiled
// for. Elsewhere the scalar kernels are the whole table and no x86 feature is ever reported.
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#define FALCON_X86 1
#else
#define FALCON_X86 0
#endif

namespace falcon::cpu {

// Kernel families, from slowest to fastest. Every family computes the same results (to float
// rounding); the scalar one is the reference the others are tested against.
enum class Isa { Scalar, Avx2, Avx512 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool avx_vnni = false;  // the VEX-encoded byte dot products on ymm (Intel from Alder Lake, AMD from Zen 5)
  bool os_saves_ymm = false;  // XCR0: the OS preserves AVX state
  bool os_saves_zmm = false;  // XCR0: the OS preserves AVX-512 state
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
bool parse_isa(const std::string& name, Isa* out);
// Families this CPU and OS can run.
std::vector<Isa> supported_isas();
// The family in use: the best supported one, or FALCON_ISA when it names a supported family.
Isa active_isa();
// Overrides the family (must be supported); used by tests to run every path.
void set_active_isa(Isa isa);

}  // namespace falcon::cpu
