// Entry points of fastmix._C. Every pointer is a raw address passed from Python as an integer; Python owns
// allocation, checks shapes and dtypes, and keeps the tensors alive until the call returns.
#pragma once
#include <cstdint>
#include <string>

namespace fastmix {

// C++ emulation of the CUDA launch grids (zeta_cpu.cpp): the same per-thread bodies, run on host memory.
void zeta_weights_emulate(uintptr_t keys, uintptr_t weights, int64_t batch, double gamma, double norm,
                          bool self_dominant, int dtype);
void zeta_mix_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                      int64_t batch, int64_t features, int dtype);

#if defined(FASTMIX_WITH_CUDA)
void check_launch(const char* what);  // raises std::runtime_error on a pending CUDA error
int cuda_driver_version();            // cudaDriverGetVersion, 0 when no driver is installed
int cuda_device_count();              // 0 when no device or no driver
void zeta_weights_cuda(uintptr_t keys, uintptr_t weights, int64_t batch, double gamma, double norm,
                       bool self_dominant, int dtype, uintptr_t stream);
void zeta_mix_cuda(uintptr_t x, int64_t x_row_stride, uintptr_t weights, uintptr_t out, int64_t out_row_stride,
                   int64_t batch, int64_t features, int dtype, uintptr_t stream);
#endif

}  // namespace fastmix
