#include "kernels.h"

namespace falcon::cpu {

const KernelTable& kernels() {
  switch (active_isa()) {
    case Isa::Avx512: return avx512_kernels();
    case Isa::Avx2: return avx2_kernels();
    case Isa::Scalar: break;
  }
  return scalar_kernels();
}

}  // namespace falcon::cpu
