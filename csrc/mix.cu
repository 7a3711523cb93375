// Per-sample Mixup/CutMix CUDA kernels: thin wrappers that run the bodies in mix.h over the launch grid.
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>
#include "mix.h"
#include "native.h"

namespace fastmix {
namespace mix {

template <typename T>
__global__ void pair_mix_kernel(const T* x, int64_t x_row_stride, T* out, int64_t out_row_stride, int64_t features,
                                const int32_t* self_boxes, const typename Traits<T>::acc* self_weights,
                                const int32_t* seg_boxes, const typename Traits<T>::acc* seg_weights,
                                const int64_t* sources, const int64_t* offsets, Geometry g) {
  pair_mix_thread<T>(blockIdx.x, threadIdx.x, x, x_row_stride, out, out_row_stride, features, self_boxes,
                     self_weights, seg_boxes, seg_weights, sources, offsets, g);
}

template <typename T>
static void launch(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                   int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                   uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, Geometry g, cudaStream_t stream) {
  using Acc = typename Traits<T>::acc;
  const Grid grid = pair_mix_grid(batch, features);
  if (grid.blocks == 0) return;
  pair_mix_kernel<T><<<grid.blocks, grid.threads, 0, stream>>>(
      reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<T*>(out), out_row_stride, features,
      reinterpret_cast<const int32_t*>(self_boxes), reinterpret_cast<const Acc*>(self_weights),
      reinterpret_cast<const int32_t*>(seg_boxes), reinterpret_cast<const Acc*>(seg_weights),
      reinterpret_cast<const int64_t*>(sources), reinterpret_cast<const int64_t*>(offsets), g);
}

template <typename T>
__global__ void mix_pairs_kernel(const T* x, int64_t x_row_stride, T* out, int64_t out_row_stride, int64_t features,
                                 const typename Traits<T>::acc* weight, const int32_t* boxes, const int64_t* sources,
                                 const int64_t* offsets, bool adjoint, Geometry g) {
  mix_pairs_thread<T>(blockIdx.x, threadIdx.x, x, x_row_stride, out, out_row_stride, features, weight, boxes,
                      sources, offsets, adjoint, g);
}

}  // namespace mix

void mix_pairs_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                    int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t sources, uintptr_t offsets,
                    int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, bool adjoint,
                    int dtype, uintptr_t stream) {
  const mix::Geometry g{height, width, h_div, w_div, has_box};
  const Grid grid = mix::pair_mix_grid(batch, features);
  if (grid.blocks == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<true>(dtype, "mix_pairs_cuda", [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename Traits<T>::acc;
    mix::mix_pairs_kernel<T><<<grid.blocks, grid.threads, 0, s>>>(
        reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<T*>(out), out_row_stride, features,
        reinterpret_cast<const Acc*>(weight), reinterpret_cast<const int32_t*>(boxes),
        reinterpret_cast<const int64_t*>(sources), reinterpret_cast<const int64_t*>(offsets), adjoint, g);
  });
  check_launch("mix_pairs_cuda");
}

void pair_mix_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                   int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                   uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, int64_t height, int64_t width,
                   int64_t h_div, int64_t w_div, bool has_box, int dtype, uintptr_t stream) {
  const mix::Geometry g{height, width, h_div, w_div, has_box};
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<true>(dtype, "pair_mix_cuda", [&](auto tag) {
    using T = decltype(tag);
    mix::launch<T>(x, x_row_stride, out, out_row_stride, batch, features, self_boxes, self_weights, seg_boxes,
                   seg_weights, sources, offsets, g, s);
  });
  check_launch("pair_mix_cuda");
}

}  // namespace fastmix
