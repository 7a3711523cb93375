// CPU emulation of the pair-mix CUDA launch grid: the body from mix.h over every (block, thread).
#include <stdexcept>
#include <string>
#include "mix.h"
#include "native.h"

namespace fastmix {

template <typename T>
static void emulate_pair_mix(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride,
                             int64_t batch, int64_t features, uintptr_t self_boxes, uintptr_t self_weights,
                             uintptr_t seg_boxes, uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets,
                             const mix::Geometry& g) {
  using Acc = typename Traits<T>::acc;
  const Grid grid = mix::pair_mix_grid(batch, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      mix::pair_mix_thread<T>(block, thread, reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<T*>(out),
                              out_row_stride, features, reinterpret_cast<const int32_t*>(self_boxes),
                              reinterpret_cast<const Acc*>(self_weights), reinterpret_cast<const int32_t*>(seg_boxes),
                              reinterpret_cast<const Acc*>(seg_weights), reinterpret_cast<const int64_t*>(sources),
                              reinterpret_cast<const int64_t*>(offsets), g);
    }
  }
}

void pair_mix_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                      int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                      uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, int64_t height, int64_t width,
                      int64_t h_div, int64_t w_div, bool has_box, int dtype) {
  const mix::Geometry g{height, width, h_div, w_div, has_box};
  dispatch_dtype<true>(dtype, "pair_mix_emulate", [&](auto tag) {
    using T = decltype(tag);
    emulate_pair_mix<T>(x, x_row_stride, out, out_row_stride, batch, features, self_boxes, self_weights,
                        seg_boxes, seg_weights, sources, offsets, g);
  });
}

}  // namespace fastmix
