// CPU emulation of the Flow-Mixup CUDA launch grids: the bodies from flow.h over every (block, thread).
#include <stdexcept>
#include <string>
#include "flow.h"
#include "native.h"

namespace fastmix {

namespace {

template <typename T>
void emulate_forward(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                     int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features, bool keep_original) {
  const Grid grid = flow::grid(batch * flow_size, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      flow::forward_thread<T>(block, thread, reinterpret_cast<const T*>(z), z_row_stride,
                              reinterpret_cast<const typename Traits<T>::acc*>(lam),
                              reinterpret_cast<const int64_t*>(perm), reinterpret_cast<T*>(out), out_row_stride,
                              batch, flow_size, features, keep_original);
    }
  }
}

template <typename T>
void emulate_backward(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse, uintptr_t grad_z,
                      int64_t grad_z_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                      bool keep_original) {
  const Grid grid = flow::grid(batch * flow_size, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      flow::backward_thread<T>(block, thread, reinterpret_cast<const T*>(grad), grad_row_stride,
                               reinterpret_cast<const typename Traits<T>::acc*>(lam),
                               reinterpret_cast<const int64_t*>(inverse), reinterpret_cast<T*>(grad_z),
                               grad_z_row_stride, batch, flow_size, features, keep_original);
    }
  }
}

}  // namespace

void flow_forward_emulate(uintptr_t z, int64_t z_row_stride, uintptr_t lam, uintptr_t perm, uintptr_t out,
                          int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                          bool keep_original, int dtype) {
  auto run = [&](auto tag) {
    emulate_forward<decltype(tag)>(z, z_row_stride, lam, perm, out, out_row_stride, batch, flow_size, features,
                                   keep_original);
  };
  dispatch_dtype(dtype, "flow_forward_emulate", run);
}

void flow_backward_emulate(uintptr_t grad, int64_t grad_row_stride, uintptr_t lam, uintptr_t inverse,
                           uintptr_t grad_z, int64_t grad_z_row_stride, int64_t batch, int64_t flow_size,
                           int64_t features, bool keep_original, int dtype) {
  auto run = [&](auto tag) {
    emulate_backward<decltype(tag)>(grad, grad_row_stride, lam, inverse, grad_z, grad_z_row_stride, batch, flow_size,
                                    features, keep_original);
  };
  dispatch_dtype(dtype, "flow_backward_emulate", run);
}

}  // namespace fastmix
