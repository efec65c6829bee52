#include "cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string>

#if FALCON_X86 && defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#include <immintrin.h>
#elif FALCON_X86
#include <cpuid.h>
#endif

#include "../core/error.h"

namespace falcon::cpu {

namespace {

#if FALCON_X86
// CPUID leaf `leaf`, subleaf `subleaf` into eax..edx; false when the CPU has no such leaf.
bool cpuid(unsigned leaf, unsigned subleaf, unsigned* eax, unsigned* ebx, unsigned* ecx, unsigned* edx) {
#if defined(_MSC_VER) && !defined(__clang__)
  int registers[4];
  __cpuid(registers, int(leaf & 0x80000000u));
  if (unsigned(registers[0]) < leaf) return false;
  __cpuidex(registers, int(leaf), int(subleaf));
  *eax = unsigned(registers[0]), *ebx = unsigned(registers[1]), *ecx = unsigned(registers[2]), *edx = unsigned(registers[3]);
  return true;
#else
  return __get_cpuid_count(leaf, subleaf, eax, ebx, ecx, edx);
#endif
}

// The low half of XCR0: which register states the OS saves on a context switch. Only valid with OSXSAVE.
unsigned xcr0_low() {
#if defined(_MSC_VER) && !defined(__clang__)
  return unsigned(_xgetbv(0));
#else
  unsigned low, high;
  __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return low;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if FALCON_X86
  unsigned eax, ebx, ecx, edx;
  if (!cpuid(1, 0, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  f.fma = ecx & (1u << 12);
  f.f16c = ecx & (1u << 29);
  if (osxsave) {
    const unsigned xcr0 = xcr0_low();
    f.os_saves_ymm = (xcr0 & 0x6u) == 0x6u;            // SSE and AVX state
    f.os_saves_zmm = (xcr0 & 0xe6u) == 0xe6u;          // plus opmask and both ZMM halves
  }
  if (cpuid(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = ebx & (1u << 5);
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512_vnni = ecx & (1u << 11);
  }
  if (cpuid(7, 1, &eax, &ebx, &ecx, &edx)) {
    f.avx_vnni = eax & (1u << 4);
    f.avx512_bf16 = eax & (1u << 5);
  }
#endif
  // FALCON_CPU_WITHOUT=avx512_bf16,avx512_vnni,avx_vnni hides those extensions, so that the paths taken
  // on CPUs that lack them are tested on CPUs that have them.
  if (const char* hidden = std::getenv("FALCON_CPU_WITHOUT")) {
    const std::string list = std::string(",") + hidden + ",";
    if (list.find(",avx512_bf16,") != std::string::npos) f.avx512_bf16 = false;
    if (list.find(",avx512_vnni,") != std::string::npos) f.avx512_vnni = false;
    if (list.find(",avx_vnni,") != std::string::npos) f.avx_vnni = false;
  }
  return f;
}

bool supports(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.os_saves_ymm && f.avx2 && f.fma && f.f16c;
    case Isa::Avx512: return f.os_saves_zmm && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c;
  }
  return false;
}

Isa initial_isa() {
  if (const char* requested = std::getenv("FALCON_ISA")) {
    Isa isa;
    if (parse_isa(requested, &isa) && supports(isa)) return isa;
  }
  Isa best = Isa::Scalar;
  for (Isa isa : supported_isas()) best = isa;
  return best;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> isa{initial_isa()};
  return isa;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  if (name == "scalar") *out = Isa::Scalar;
  else if (name == "avx2") *out = Isa::Avx2;
  else if (name == "avx512") *out = Isa::Avx512;
  else return false;
  return true;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (supports(isa)) isas.push_back(isa);
  }
  return isas;
}

Isa active_isa() { return active().load(std::memory_order_relaxed); }

void set_active_isa(Isa isa) {
  require(supports(isa), ErrorKind::Input, std::string("this CPU cannot run the ") + isa_name(isa) + " kernels");
  active().store(isa);
}

}  // namespace falcon::cpu
