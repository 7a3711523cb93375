// zeta-mixup on CPU tensors (zeta-mixup paper, eq. 2-3): the weight matrix W from uniform keys, and the mixed labels
// W @ onehot(y) of class indices without the one-hot matrix. W @ x itself is a GEMM left to torch.mm.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>
#include "common.h"
#include "native.h"

namespace fastmix {
namespace {

// An unsigned integer that orders like the key: -0 and +0 equal, every NaN last (as torch's sort orders them).
inline uint32_t order_key(float v) {
  if (std::isnan(v)) return UINT32_MAX;
  uint32_t bits;
  const float canonical = v + 0.f;  // -0 becomes +0
  std::memcpy(&bits, &canonical, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

inline uint64_t order_key(double v) {
  if (std::isnan(v)) return UINT64_MAX;
  uint64_t bits;
  const double canonical = v + 0.;
  std::memcpy(&bits, &canonical, sizeof bits);
  return (bits & 0x8000000000000000ull) ? ~bits : (bits | 0x8000000000000000ull);
}

// Each row's keys with their columns, (order_key << 32 | column) for float keys and (order_key, column) pairs for
// double keys (B < 2^32): sorted ascending, they give the columns in rank order, ties to the lower column.
inline uint64_t ranked(float key, int64_t column) {
  return (static_cast<uint64_t>(order_key(key)) << 32) | static_cast<uint64_t>(column);
}

inline std::pair<uint64_t, int64_t> ranked(double key, int64_t column) { return {order_key(key), column}; }

inline int64_t column_of(uint64_t entry) { return static_cast<int64_t>(entry & 0xffffffffu); }
inline int64_t column_of(const std::pair<uint64_t, int64_t>& entry) { return entry.second; }

// One thread: B sorts of B keys cost well under 1% of the W @ x GEMM that follows at any batch, and an OpenMP team
// left spinning after its region takes cores from that GEMM's threads (B = 128, 2 threads, on a loaded 2-core host:
// 1.13x a lone torch.mm with OpenMP over rows, 1.02-1.04x without).
template <typename T>
void weights_from_keys(const T* keys, int64_t keys_stride, int64_t batch, const std::vector<double>& series,
                       bool self_dominant, T* weights) {
  using Entry = decltype(ranked(T{}, 0));
  std::vector<Entry> order(static_cast<size_t>(batch));
  for (int64_t row = 0; row < batch; ++row) {
    const T* key = keys + row * keys_stride;
    T* out = weights + row * batch;
    int64_t count = 0;
    for (int64_t column = 0; column < batch; ++column) {
      if (!(self_dominant && column == row)) order[count++] = ranked(key[column], column);
    }
    std::sort(order.begin(), order.begin() + count);
    int64_t rank = 0;
    if (self_dominant) out[row] = static_cast<T>(series[rank++]);
    for (int64_t i = 0; i < count; ++i) out[column_of(order[i])] = static_cast<T>(series[rank++]);
  }
}

}  // namespace

// W[p, i] = s^-gamma / C with s the rank (from 1) of keys[p, i] in row p, C = sum_{n=1..B} n^-gamma given as norm
// (eq. 3); with self_dominant the diagonal takes rank 1 and the other columns ranks 2..B by their keys.
// keys: (B, B) rows with unit column stride; weights: (B, B) contiguous, both float32 or float64 (dtype code).
void zeta_weights_cpu(uintptr_t keys, int64_t keys_stride, int64_t batch, double gamma, double norm,
                      bool self_dominant, int dtype, uintptr_t weights) {
  std::vector<double> series(static_cast<size_t>(batch));
  for (int64_t n = 0; n < batch; ++n) series[n] = std::pow(static_cast<double>(n + 1), -gamma) / norm;
  dispatch_float(dtype, "zeta_weights_cpu", [&](auto tag) {
    using T = decltype(tag);
    weights_from_keys(reinterpret_cast<const T*>(keys), keys_stride, batch, series, self_dominant,
                      reinterpret_cast<T*>(weights));
  });
}

// mixed[p, labels[i]] += W[p, i] over i: W @ onehot(labels), (B, K) float32 contiguous, from int64 class indices
// (B,) and W (B, B) contiguous in float32 or float64 (dtype code), each weight rounded to float32 first. The indices
// are checked before anything is written (std::invalid_argument).
void zeta_index_labels_cpu(uintptr_t weights, int dtype, uintptr_t labels, int64_t batch, int64_t classes,
                           uintptr_t mixed) {
  check_indices(labels, batch, classes, "y", "class");
  const int64_t* index = reinterpret_cast<const int64_t*>(labels);
  float* out = reinterpret_cast<float*>(mixed);
  std::fill(out, out + batch * classes, 0.f);
  dispatch_float(dtype, "zeta_index_labels_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* w = reinterpret_cast<const T*>(weights);
    for (int64_t row = 0; row < batch; ++row) {
      for (int64_t i = 0; i < batch; ++i) out[row * classes + index[i]] += static_cast<float>(w[row * batch + i]);
    }
  });
}

}  // namespace fastmix
