// Flow-Mixup (Flow-Mixup paper, eq. 2-3): the per-thread bodies of the Mixing module's forward and backward kernels.
// Tensors are (rows, features) with unit column stride, rows = flow_size * batch, flow blocks of `batch` rows
// one after another. No thread cooperates with another, so the CUDA kernels (flow.cu) and the CPU emulation of
// their launch grids (flow_cpu.cpp) run exactly this code.
#pragma once
#include "common.h"

namespace fastmix {
namespace flow {

constexpr int kThreads = 256;
constexpr int kColumnsPerThread = 4;
constexpr int64_t kTile = int64_t(kThreads) * kColumnsPerThread;  // columns per block

// One block per (row, column tile); rows vary fastest, so the blocks that read a row as their own and as a
// shuffled partner run together and the second read is served by L2.
inline Grid grid(int64_t rows, int64_t features) { return {rows * ((features + kTile - 1) / kTile), kThreads}; }

// Where a thread of that grid works: its row, the row's sample in its flow block, and its first column (then every
// kThreads-th, kColumnsPerThread of them).
struct Cell {
  int64_t rows, row, sample, column0;
};

FASTMIX_HD Cell cell(int64_t block, int thread, int64_t batch, int64_t flow_size) {
  Cell c;
  c.rows = batch * flow_size;
  c.row = block % c.rows;
  c.sample = c.row % batch;
  c.column0 = (block / c.rows) * kTile + thread;
  return c;
}

// out[r] = z[r] and out[rows + r] = p z[r] + (1 - p) z[partner] (eq. 2), partner = perm[r % batch] in r's flow
// block; without keep_original only the mix, at out[r]. z[r] is loaded once for both halves.
template <typename T>
FASTMIX_HD void forward_thread(int64_t block, int thread, const T* z, int64_t z_row_stride,
                               const typename Traits<T>::acc* lam, const int64_t* perm, T* out,
                               int64_t out_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                               bool keep_original) {
  using Acc = typename Traits<T>::acc;
  const auto [rows, row, sample, column0] = cell(block, thread, batch, flow_size);
  const T* own = z + row * z_row_stride;
  const T* partner = z + (row - sample + perm[sample]) * z_row_stride;
  T* mixed = out + (keep_original ? rows + row : row) * out_row_stride;
  T* copy = out + row * out_row_stride;
  const Acc p = lam[sample];
  for (int k = 0; k < kColumnsPerThread; ++k) {
    const int64_t f = column0 + int64_t(k) * kThreads;
    if (f >= features) return;
    const T value = own[f];
    if (keep_original) copy[f] = value;
    mixed[f] = Traits<T>::store(p * Traits<T>::load(value) + (Acc(1) - p) * Traits<T>::load(partner[f]));
  }
}

// grad_z[j] = 0.5 (g0[j] + p_j g1[j] + (1 - p_q) g1[q]) with q = perm^-1 (j) in j's flow block (eq. 3), g0 the
// original flow's gradient (rows 0..rows-1) and g1 the mixed flow's (rows..2 rows-1); without keep_original,
// grad_z[j] = p_j g1[j] + (1 - p_q) g1[q] with g1 at rows 0..rows-1. One thread writes each element.
template <typename T>
FASTMIX_HD void backward_thread(int64_t block, int thread, const T* grad, int64_t grad_row_stride,
                                const typename Traits<T>::acc* lam, const int64_t* inverse, T* grad_z,
                                int64_t grad_z_row_stride, int64_t batch, int64_t flow_size, int64_t features,
                                bool keep_original) {
  using Acc = typename Traits<T>::acc;
  const auto [rows, row, sample, column0] = cell(block, thread, batch, flow_size);
  const int64_t source_sample = inverse[sample];
  const T* mixed = grad + (keep_original ? rows : 0) * grad_row_stride;
  const T* own = mixed + row * grad_row_stride;
  const T* source = mixed + (row - sample + source_sample) * grad_row_stride;
  const T* original = grad + row * grad_row_stride;
  T* dst = grad_z + row * grad_z_row_stride;
  const Acc p_own = lam[sample];
  const Acc q_source = Acc(1) - lam[source_sample];
  for (int k = 0; k < kColumnsPerThread; ++k) {
    const int64_t f = column0 + int64_t(k) * kThreads;
    if (f >= features) return;
    Acc value = p_own * Traits<T>::load(own[f]) + q_source * Traits<T>::load(source[f]);
    if (keep_original) value = Acc(0.5) * (Traits<T>::load(original[f]) + value);
    dst[f] = Traits<T>::store(value);
  }
}

}  // namespace flow
}  // namespace fastmix
