// Per-sample Mixup/CutMix (LUMix paper, eq. 1): the per-thread bodies of the pair-mix kernels.
// pair_mix_thread, the general pair mix:
//   out[j, e] = W(self_j) x[j, e] + sum_{k in [offsets[j], offsets[j+1])} W(seg_k) x[sources[k], e], where W is a
//   term's weight inside its box (y0, y1, x0, x1; half-open) at e's spatial position, or its weight outside.
// mix_pairs_thread, the pair mix and its adjoint (the gradient) from one weight and one box per sample:
//   out[j, e] = W_j(e) x[j, e] + sum_k (1 - W_t(e)) x[s_k, e], W_t 0 inside box t and weight[t] outside, over the
//   terms s_k = sources[j] (offsets null) or sources[offsets[j]..offsets[j+1]), with t = j (the mix) or t = s_k
//   (the adjoint).
// No thread cooperates with another, so the CUDA kernels (mix.cu) and the CPU emulation of their launch grid
// (mix_cpu.cpp) run exactly this code.
#pragma once
#include <cmath>
#include "common.h"

namespace fastmix {

namespace mix {

constexpr int kThreads = 256;  // one element per thread

inline Grid pair_mix_grid(int64_t batch, int64_t features) {
  return {batch * ((features + kThreads - 1) / kThreads), kThreads};
}

// Spatial position of a canonical-row column: h = f / h_div % height, w = f / w_div % width.
struct Geometry {
  int64_t height, width, h_div, w_div;
  bool has_box;
};

// w * v rounded on its own: the compiler never fuses it with the following add into an FMA (nvcc contracts by
// default), so every term is rounded as the reference rounds it and uint8 results are bit-exact.
FASTMIX_HD float unfused_product(float w, float v) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(w, v);
#else
  return w * v;
#endif
}

FASTMIX_HD double unfused_product(double w, double v) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(w, v);
#else
  return w * v;
#endif
}

template <typename W>
FASTMIX_HD W term_weight(const int32_t* boxes, const W* weights, int64_t index, int64_t h, int64_t w,
                         const Geometry& g) {
  if (!g.has_box) return weights[2 * index + 1];
  const int32_t* box = boxes + 4 * index;
  const bool inside = h >= box[0] && h < box[1] && w >= box[2] && w < box[3];
  return weights[2 * index + (inside ? 0 : 1)];
}

// Blocks walk the columns of one sample, then the next sample; a zero weight skips its read.
template <typename T>
FASTMIX_HD void pair_mix_thread(int64_t block, int thread, const T* x, int64_t x_row_stride, T* out,
                                int64_t out_row_stride, int64_t features, const int32_t* self_boxes,
                                const typename Traits<T>::acc* self_weights, const int32_t* seg_boxes,
                                const typename Traits<T>::acc* seg_weights, const int64_t* sources,
                                const int64_t* offsets, Geometry g) {
  using Acc = typename Traits<T>::acc;
  const int64_t tiles = (features + kThreads - 1) / kThreads;
  const int64_t row = block / tiles;
  const int64_t f = (block - row * tiles) * kThreads + thread;
  if (f >= features) return;
  const int64_t h = g.has_box ? f / g.h_div % g.height : 0;  // no divisions for a pure mixup
  const int64_t w = g.has_box ? f / g.w_div % g.width : 0;
  Acc weight = term_weight(self_boxes, self_weights, row, h, w, g);
  Acc acc = weight != Acc(0) ? unfused_product(weight, Traits<T>::load(x[row * x_row_stride + f])) : Acc(0);
  for (int64_t k = offsets[row]; k < offsets[row + 1]; ++k) {
    weight = term_weight(seg_boxes, seg_weights, k, h, w, g);
    if (weight != Acc(0)) acc += unfused_product(weight, Traits<T>::load(x[sources[k] * x_row_stride + f]));
  }
  out[row * out_row_stride + f] = Traits<T>::store(acc);
}

// W_index at (h, w): 0 inside sample index's box, weight[index] outside.
template <typename W>
FASTMIX_HD W own_weight(const int32_t* boxes, const W* weight, int64_t index, int64_t h, int64_t w,
                        const Geometry& g) {
  if (g.has_box) {
    const int32_t* box = boxes + 4 * index;
    if (h >= box[0] && h < box[1] && w >= box[2] && w < box[3]) return W(0);
  }
  return weight[index];
}

template <typename T>
FASTMIX_HD void mix_pairs_thread(int64_t block, int thread, const T* x, int64_t x_row_stride, T* out,
                                 int64_t out_row_stride, int64_t features, const typename Traits<T>::acc* weight,
                                 const int32_t* boxes, const int64_t* sources, const int64_t* offsets, bool adjoint,
                                 Geometry g) {
  using Acc = typename Traits<T>::acc;
  const int64_t tiles = (features + kThreads - 1) / kThreads;
  const int64_t row = block / tiles;
  const int64_t f = (block - row * tiles) * kThreads + thread;
  if (f >= features) return;
  const int64_t h = g.has_box ? f / g.h_div % g.height : 0;
  const int64_t w = g.has_box ? f / g.w_div % g.width : 0;
  Acc term = own_weight(boxes, weight, row, h, w, g);
  Acc acc = term != Acc(0) ? unfused_product(term, Traits<T>::load(x[row * x_row_stride + f])) : Acc(0);
  const int64_t first = offsets ? offsets[row] : row;
  const int64_t last = offsets ? offsets[row + 1] : row + 1;
  for (int64_t k = first; k < last; ++k) {
    const int64_t source = sources[k];
    term = Acc(1) - own_weight(boxes, weight, adjoint ? source : row, h, w, g);
    if (term != Acc(0)) acc += unfused_product(term, Traits<T>::load(x[source * x_row_stride + f]));
  }
  out[row * out_row_stride + f] = Traits<T>::store(acc);
}

}  // namespace mix
}  // namespace fastmix
