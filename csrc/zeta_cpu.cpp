// CPU emulation of the zeta-mixup CUDA launch grids: the bodies from zeta.h over every (block, thread).
#include <stdexcept>
#include <string>
#include "native.h"
#include "zeta.h"

namespace fastmix {

void zeta_weights_emulate(uintptr_t keys, uintptr_t weights, int64_t batch, double gamma, double norm,
                          bool self_dominant, int dtype) {
  const Grid grid = zeta::weights_grid(batch);
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      if (dtype == kFloat32) {
        zeta::weights_thread<float>(block, thread, reinterpret_cast<const float*>(keys),
                                    reinterpret_cast<float*>(weights), batch, gamma, norm, self_dominant);
      } else if (dtype == kFloat64) {
        zeta::weights_thread<double>(block, thread, reinterpret_cast<const double*>(keys),
                                     reinterpret_cast<double*>(weights), batch, gamma, norm, self_dominant);
      } else {
        throw std::invalid_argument("zeta_weights_emulate: weights must be float32 or float64");
      }
    }
  }
}

template <typename T>
static void emulate_mix(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                        int64_t batch, int64_t features) {
  const Grid grid = zeta::mix_grid(batch, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      zeta::mix_thread<T>(block, thread, reinterpret_cast<const T*>(x), x_row_stride,
                          reinterpret_cast<const typename Traits<T>::acc*>(weights), reinterpret_cast<T*>(out),
                          out_row_stride, batch, features);
    }
  }
}

void zeta_mix_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                      int64_t batch, int64_t features, int dtype) {
  dispatch_dtype(dtype, "zeta_mix_emulate", [&](auto tag) {
    emulate_mix<decltype(tag)>(x, x_row_stride, weights, out, out_row_stride, batch, features);
  });
}

}  // namespace fastmix
