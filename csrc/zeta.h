// zeta-mixup (paper 002, eq. 2-3): the per-thread bodies of the weight and mix kernels.
// No thread cooperates with another, so the CUDA kernels (zeta.cu) and the CPU emulation of their
// launch grids (zeta_cpu.cpp) run exactly this code: the CPU tests check the index arithmetic.
#pragma once
#include <cmath>
#include "common.h"

namespace fastmix {
namespace zeta {

constexpr int kWeightThreads = 256;
constexpr int kMixThreads = 256;  // one output column per thread
constexpr int kMixRows = 16;      // output rows accumulated in registers per thread

inline Grid weights_grid(int64_t batch) {
  return {(batch * batch + kWeightThreads - 1) / kWeightThreads, kWeightThreads};
}

// W[p, i] = rank^-gamma / C (eq. 3), rank = 1 + the number of keys in row p below key[p, i] (ties broken by
// column). With self_dominant the diagonal key counts as -inf, so sample p takes rank 1 in its own row.
template <typename W>
FASTMIX_HD void weights_thread(int64_t block, int thread, const W* keys, W* weights, int64_t batch, double gamma,
                               double norm, bool self_dominant) {
  const int64_t t = block * kWeightThreads + thread;
  if (t >= batch * batch) return;
  const int64_t p = t / batch;
  const int64_t i = t - p * batch;
  const W* row = keys + p * batch;
  const bool i_first = self_dominant && i == p;
  int64_t below = 0;
  for (int64_t j = 0; j < batch; ++j) {
    if (j == i) continue;
    const bool j_first = self_dominant && j == p;
    const bool before = i_first ? false : (j_first || row[j] < row[i] || (row[j] == row[i] && j < i));
    below += before ? 1 : 0;
  }
  weights[t] = static_cast<W>(pow(static_cast<double>(below + 1), -gamma) / norm);
}

inline Grid mix_grid(int64_t batch, int64_t features) {
  const int64_t row_blocks = (batch + kMixRows - 1) / kMixRows;
  const int64_t column_tiles = (features + kMixThreads - 1) / kMixThreads;
  return {row_blocks * column_tiles, kMixThreads};
}

// out[p, f] = sum_i W[p, i] x[i, f] for the kMixRows rows of this block's row block and this thread's column.
// Row blocks vary fastest across blocks, so the blocks that re-read a column tile of x run together (L2 hits).
template <typename T>
FASTMIX_HD void mix_thread(int64_t block, int thread, const T* x, int64_t x_row_stride,
                           const typename Traits<T>::acc* weights, T* out, int64_t out_row_stride, int64_t batch,
                           int64_t features) {
  using Acc = typename Traits<T>::acc;
  const int64_t row_blocks = (batch + kMixRows - 1) / kMixRows;
  const int64_t row_block = block % row_blocks;
  const int64_t f = (block / row_blocks) * kMixThreads + thread;
  if (f >= features) return;
  const int64_t p0 = row_block * kMixRows;
  Acc acc[kMixRows];
  for (int r = 0; r < kMixRows; ++r) acc[r] = Acc(0);
  for (int64_t i = 0; i < batch; ++i) {
    const Acc xv = Traits<T>::load(x[i * x_row_stride + f]);
    for (int r = 0; r < kMixRows; ++r) {
      const int64_t p = p0 + r < batch ? p0 + r : batch - 1;  // rows past the end recompute the last row
      acc[r] += weights[p * batch + i] * xv;
    }
  }
#ifdef __CUDA_ARCH__
#pragma unroll  // clang keeps acc in registers only if every loop over it unrolls (else 64 B of local memory)
#endif
  for (int r = 0; r < kMixRows && p0 + r < batch; ++r) out[(p0 + r) * out_row_stride + f] = Traits<T>::store(acc[r]);
}

}  // namespace zeta
}  // namespace fastmix
