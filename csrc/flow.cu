// Flow-Mixup CUDA kernels: thin wrappers that run the bodies in flow.h over the launch grid.
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>
#include "flow.h"
#include "native.h"

namespace fastmix {
namespace flow {

template <typename T>
__global__ void forward_kernel(const T* z, int64_t z_row_stride, const typename Traits<T>::acc* lam,
                               const int64_t* perm, T* out, int64_t out_row_stride, int64_t batch, int64_t flow_size,
                               int64_t features, bool keep_original) {
  forward_thread<T>(blockIdx.x, threadIdx.x, z, z_row_stride, lam, perm, out, out_row_stride, batch, flow_size,
                    features, keep_original);
}

template <typename T>
__global__ void backward_kernel(const T* grad, int64_t grad_row_stride, const typename Traits<T>::acc* lam,
                                const int64_t* inverse, T* grad_z, int64_t grad_z_row_stride, int64_t batch,
                                int64_t flow_size, int64_t features, bool keep_original) {
  backward_thread<T>(blockIdx.x, threadIdx.x, grad, grad_row_stride, lam, inverse, grad_z, grad_z_row_stride, batch,
                     flow_size, features, keep_original);
}

template <typename T>
void launch_forward(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                    int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features, bool keep_original,
                    cudaStream_t stream) {
  const Grid g = grid(batch * flow_size, features);
  if (g.blocks == 0) return;  // no rows or no features: a zero-size grid is cudaErrorInvalidConfiguration
  forward_kernel<T><<<g.blocks, g.threads, 0, stream>>>(
      reinterpret_cast<const T*>(z), z_row_stride, reinterpret_cast<const typename Traits<T>::acc*>(lam),
      reinterpret_cast<const int64_t*>(perm), reinterpret_cast<T*>(out), out_row_stride, batch, flow_size, features,
      keep_original);
}

template <typename T>
void launch_backward(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse, uintptr_t grad_z,
                     int64_t grad_z_row_stride, int64_t batch, int64_t flow_size, int64_t features, bool keep_original,
                     cudaStream_t stream) {
  const Grid g = grid(batch * flow_size, features);
  if (g.blocks == 0) return;  // no rows or no features: a zero-size grid is cudaErrorInvalidConfiguration
  backward_kernel<T><<<g.blocks, g.threads, 0, stream>>>(
      reinterpret_cast<const T*>(grad), grad_row_stride, reinterpret_cast<const typename Traits<T>::acc*>(lam),
      reinterpret_cast<const int64_t*>(inverse), reinterpret_cast<T*>(grad_z), grad_z_row_stride, batch, flow_size,
      features, keep_original);
}

}  // namespace flow

void flow_forward_cuda(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                       int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features, bool keep_original,
                       int dtype, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    flow::launch_forward<T>(z, z_row_stride, lam, perm, out, out_row_stride, batch, flow_size, features,
                            keep_original, s);
  };
  dispatch_dtype(dtype, "flow_forward_cuda", launch);
  check_launch("flow_forward_cuda");
}

void flow_backward_cuda(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse, uintptr_t grad_z,
                        int64_t grad_z_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                        bool keep_original, int dtype, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    flow::launch_backward<T>(grad, grad_row_stride, lam, inverse, grad_z, grad_z_row_stride, batch, flow_size,
                             features, keep_original, s);
  };
  dispatch_dtype(dtype, "flow_backward_cuda", launch);
  check_launch("flow_backward_cuda");
}

}  // namespace fastmix
