// Two-component GMM EM CUDA kernel: one block per group, the whole fit in one launch (phases in gmm.h).
// Not yet run on a GPU: verified only through the CPU emulation of its block (gmm_cpu.cpp, tests/test_gmm.py).
#include <cuda_runtime.h>
#include "gmm.h"
#include "native.h"

namespace fastmix {
namespace gmm {

template <typename T>
__global__ void __launch_bounds__(kEmThreads) em_kernel(const T* sorted_values, const int64_t* offsets,
                                                        const double* count, const double* lo, const double* scale,
                                                        double* weights, double* means, double* variances,
                                                        double* log_likelihood, int64_t* n_iter, uint8_t* converged,
                                                        int64_t max_iter, double tol, double reg_covar, double eps) {
  __shared__ double partials[kEmThreads * kStats];
  __shared__ GroupState state;
  __shared__ Prepared prepared;
  const int64_t g = blockIdx.x;
  const int thread = threadIdx.x;
  if (thread == 0) state = begin_group(g, weights, means, variances);
  __syncthreads();
  for (int64_t iteration = 0; iteration < max_iter; ++iteration) {
    if (state.done) break;  // read by every thread after a barrier: the whole block leaves together
    if (thread == 0) prepared = prepare(state.weights, state.means, state.variances);
    __syncthreads();
    thread_pass<T>(thread, sorted_values, offsets[g], offsets[g + 1], lo[g], 1.0 / scale[g], prepared,
                   partials + thread * kStats);
    __syncthreads();
    for (int stride = kEmThreads / 2; stride > 0; stride >>= 1) {
      reduce_step(partials, thread, stride);
      __syncthreads();
    }
    if (thread == 0) step_group(state, partials, count[g], reg_covar, eps, tol, log_likelihood + g * max_iter);
    __syncthreads();
  }
  if (thread == 0) end_group(state, g, weights, means, variances, n_iter, converged);
}

}  // namespace gmm

void gmm2_em_cuda(uintptr_t sorted_values, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count,
                  uintptr_t lo, uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                  uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                  double reg_covar, double eps, uintptr_t stream) {
  if (n_groups <= 0) return;  // a zero-size grid is a launch error (the caller skips the call when no value is held)
  auto s = reinterpret_cast<cudaStream_t>(stream);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    gmm::em_kernel<T><<<n_groups, gmm::kEmThreads, 0, s>>>(
        reinterpret_cast<const T*>(sorted_values), reinterpret_cast<const int64_t*>(offsets),
        reinterpret_cast<const double*>(count), reinterpret_cast<const double*>(lo),
        reinterpret_cast<const double*>(scale), reinterpret_cast<double*>(weights), reinterpret_cast<double*>(means),
        reinterpret_cast<double*>(variances), reinterpret_cast<double*>(log_likelihood),
        reinterpret_cast<int64_t*>(n_iter), reinterpret_cast<uint8_t*>(converged), max_iter, tol, reg_covar, eps);
  };
  dispatch_float(dtype, "gmm2_em_cuda", launch);
  check_launch("gmm2_em_cuda");
}

}  // namespace fastmix
