// zeta-mixup CUDA kernels: thin wrappers that run the bodies in zeta.h over the launch grid.
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>
#include "zeta.h"
#include "native.h"

namespace fastmix {
namespace zeta {

template <typename W>
__global__ void weights_kernel(const W* keys, W* weights, int64_t batch, double gamma, double norm,
                               bool self_dominant) {
  weights_thread<W>(blockIdx.x, threadIdx.x, keys, weights, batch, gamma, norm, self_dominant);
}

template <typename T>
__global__ void mix_kernel(const T* x, int64_t x_row_stride, const typename Traits<T>::acc* weights, T* out,
                           int64_t out_row_stride, int64_t batch, int64_t features) {
  mix_thread<T>(blockIdx.x, threadIdx.x, x, x_row_stride, weights, out, out_row_stride, batch, features);
}

}  // namespace zeta

void zeta_weights_cuda(uintptr_t keys, uintptr_t weights, int64_t batch, double gamma, double norm,
                       bool self_dominant, int dtype, uintptr_t stream) {
  const Grid grid = zeta::weights_grid(batch);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == kFloat32) {
    zeta::weights_kernel<float><<<grid.blocks, grid.threads, 0, s>>>(
        reinterpret_cast<const float*>(keys), reinterpret_cast<float*>(weights), batch, gamma, norm, self_dominant);
  } else if (dtype == kFloat64) {
    zeta::weights_kernel<double><<<grid.blocks, grid.threads, 0, s>>>(
        reinterpret_cast<const double*>(keys), reinterpret_cast<double*>(weights), batch, gamma, norm, self_dominant);
  } else {
    throw std::invalid_argument("zeta_weights_cuda: weights must be float32 or float64");
  }
  check_launch("zeta_weights_cuda");
}

template <typename T>
static void launch_mix(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                       int64_t batch, int64_t features, cudaStream_t stream) {
  const Grid grid = zeta::mix_grid(batch, features);
  zeta::mix_kernel<T><<<grid.blocks, grid.threads, 0, stream>>>(
      reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<const typename Traits<T>::acc*>(weights),
      reinterpret_cast<T*>(out), out_row_stride, batch, features);
}

void zeta_mix_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                   int64_t batch, int64_t features, int dtype, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, "zeta_mix_cuda", [&](auto tag) {
    launch_mix<decltype(tag)>(x, x_row_stride, weights, out, out_row_stride, batch, features, s);
  });
  check_launch("zeta_mix_cuda");
}

}  // namespace fastmix
