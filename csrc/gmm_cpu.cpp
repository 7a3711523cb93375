// The C++ CPU kernels of the two-component GMM EM (gmm.h): OpenMP over fixed chunks of values, each chunk
// accumulating per-group statistics in its own buffer, then a reduction over chunks in chunk order, so results do
// not depend on the thread count or the schedule. Values that are not finite are skipped.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#include "gmm.h"
#include "native.h"

namespace fastmix {
namespace {

constexpr int64_t kChunk = 1 << 15;
constexpr int64_t kMaxBufferDoubles = int64_t(1) << 22;

// Fixed chunks of [0, n) for per-chunk buffers of `width` doubles, at most kMaxBufferDoubles in all.
struct Chunks {
  int64_t size;
  int64_t count;
  Chunks(int64_t n, int64_t width) {
    const int64_t max_chunks = std::max<int64_t>(1, kMaxBufferDoubles / std::max<int64_t>(width, 1));
    size = std::max<int64_t>(kChunk, (n + max_chunks - 1) / max_chunks);
    count = std::max<int64_t>(1, (n + size - 1) / size);
  }
};

// body(i, buffer) for every i in [0, n), chunk by chunk in parallel, each chunk into its own zeroed buffer of
// `width` doubles; out[s] = the sum of the buffers in chunk order.
template <typename Body>
void chunked_sum(int64_t n, int64_t width, double* out, Body body) {
  const Chunks chunks(n, width);
  std::vector<double> partial(chunks.count * width, 0.0);
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < chunks.count; ++c) {
    double* own = partial.data() + c * width;
    const int64_t end = std::min(n, (c + 1) * chunks.size);
    for (int64_t i = c * chunks.size; i < end; ++i) body(i, own);
  }
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < width; ++s) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks.count; ++c) sum += partial[c * width + s];
    out[s] = sum;
  }
}

template <typename T>
struct Input {
  const T* values;
  const int64_t* groups;
  int64_t n;
  int64_t n_groups;
  double value(int64_t i) const { return static_cast<double>(Traits<T>::load(values[i])); }
};

template <typename T>
void range(const Input<T>& in, double* count, double* lo, double* hi) {
  const Chunks chunks(in.n, 3 * in.n_groups);
  const int64_t g_count = in.n_groups;
  std::vector<double> counts(chunks.count * g_count, 0.0);
  std::vector<double> lows(chunks.count * g_count, std::numeric_limits<double>::infinity());
  std::vector<double> highs(chunks.count * g_count, -std::numeric_limits<double>::infinity());
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < chunks.count; ++c) {
    double* own_count = counts.data() + c * g_count;
    double* own_lo = lows.data() + c * g_count;
    double* own_hi = highs.data() + c * g_count;
    const int64_t end = std::min(in.n, (c + 1) * chunks.size);
    for (int64_t i = c * chunks.size; i < end; ++i) {
      const double v = in.value(i);
      if (!std::isfinite(v)) continue;
      const int64_t g = in.groups[i];
      own_count[g] += 1.0;
      own_lo[g] = std::min(own_lo[g], v);
      own_hi[g] = std::max(own_hi[g], v);
    }
  }
  for (int64_t g = 0; g < g_count; ++g) {
    double total = 0.0, low = std::numeric_limits<double>::infinity(), high = -low;
    for (int64_t c = 0; c < chunks.count; ++c) {
      total += counts[c * g_count + g];
      low = std::min(low, lows[c * g_count + g]);
      high = std::max(high, highs[c * g_count + g]);
    }
    count[g] = total;
    lo[g] = total > 0.0 ? low : 0.0;
    hi[g] = total > 0.0 ? high : 0.0;
  }
}

template <typename T>
void quantile_init(const Input<T>& in, const double* count, const double* lo, const double* scale, double reg_covar,
                   double eps, double* weights, double* means, double* variances) {
  const int64_t bins = gmm::kQuantileBins;
  std::vector<double> histogram(in.n_groups * bins);
  chunked_sum(in.n, in.n_groups * bins, histogram.data(), [&](int64_t i, double* own) {
    const double v = in.value(i);
    if (!std::isfinite(v)) return;
    const int64_t g = in.groups[i];
    own[g * bins + gmm::histogram_bin(gmm::normalised(v, lo[g], scale[g]))] += 1.0;
  });
  std::vector<double> split(in.n_groups), shifts(2 * in.n_groups);
  for (int64_t g = 0; g < in.n_groups; ++g) {
    split[g] = gmm::split_point(histogram.data() + g * bins, count[g]);
    gmm::split_shifts(split[g], shifts.data() + 2 * g);
  }
  std::vector<double> stats(in.n_groups * gmm::kStats);
  chunked_sum(in.n, in.n_groups * gmm::kStats, stats.data(), [&](int64_t i, double* own) {
    const double v = in.value(i);
    if (!std::isfinite(v)) return;
    const int64_t g = in.groups[i];
    gmm::accumulate_split(gmm::normalised(v, lo[g], scale[g]), split[g], shifts.data() + 2 * g,
                          own + g * gmm::kStats);
  });
  for (int64_t g = 0; g < in.n_groups; ++g) {
    means[2 * g] = shifts[2 * g];
    means[2 * g + 1] = shifts[2 * g + 1];
    gmm::split_params(stats.data() + g * gmm::kStats, count[g], reg_covar, eps, weights + 2 * g, means + 2 * g,
                      variances + 2 * g);
  }
}

template <typename T>
void em(const Input<T>& in, const double* count, const double* lo, const double* scale, double* weights,
        double* means, double* variances, double* log_likelihood, int64_t* n_iter, uint8_t* converged,
        int64_t max_iter, double tol, double reg_covar, double eps) {
  std::vector<double> stats(in.n_groups * gmm::kStats);
  std::vector<gmm::Prepared> prepared(in.n_groups);
  std::vector<uint8_t> active(in.n_groups, 1);
  std::vector<double> previous(in.n_groups, -std::numeric_limits<double>::infinity());
  int64_t n_active = in.n_groups;
  for (int64_t iteration = 0; iteration < max_iter && n_active > 0; ++iteration) {
    for (int64_t g = 0; g < in.n_groups; ++g) {
      prepared[g] = gmm::prepare(weights + 2 * g, means + 2 * g, variances + 2 * g);
    }
    chunked_sum(in.n, in.n_groups * gmm::kStats, stats.data(), [&](int64_t i, double* own) {
      const int64_t g = in.groups[i];
      const double v = in.value(i);
      if (!active[g] || !std::isfinite(v)) return;
      gmm::accumulate(gmm::normalised(v, lo[g], scale[g]), prepared[g], own + g * gmm::kStats);
    });
    for (int64_t g = 0; g < in.n_groups; ++g) {
      if (!active[g]) continue;
      const bool done = gmm::m_step(stats.data() + g * gmm::kStats, count[g], reg_covar, eps, tol, weights + 2 * g,
                                    means + 2 * g, variances + 2 * g, previous.data() + g,
                                    log_likelihood + g * max_iter + iteration);
      n_iter[g] += 1;
      if (done) {
        converged[g] = 1;
        active[g] = 0;
        --n_active;
      }
    }
  }
}

template <typename F>
void dispatch(int dtype, const char* what, F f) {
  if (dtype == kFloat32) {
    f(float{});
  } else if (dtype == kFloat64) {
    f(double{});
  } else {
    throw std::invalid_argument(std::string(what) + ": values must be float32 or float64, got dtype code " +
                                std::to_string(dtype));
  }
}

template <typename T>
Input<T> input(uintptr_t values, uintptr_t groups, int64_t n, int64_t n_groups) {
  return {reinterpret_cast<const T*>(values), reinterpret_cast<const int64_t*>(groups), n, n_groups};
}

double* f64(uintptr_t p) { return reinterpret_cast<double*>(p); }

}  // namespace

void gmm2_range_cpu(uintptr_t values, uintptr_t groups, int64_t n, int dtype, int64_t n_groups, uintptr_t count,
                    uintptr_t lo, uintptr_t hi) {
  dispatch(dtype, "gmm2_range_cpu", [&](auto tag) {
    range(input<decltype(tag)>(values, groups, n, n_groups), f64(count), f64(lo), f64(hi));
  });
}

void gmm2_quantile_init_cpu(uintptr_t values, uintptr_t groups, int64_t n, int dtype, int64_t n_groups,
                            uintptr_t count, uintptr_t lo, uintptr_t scale, double reg_covar, double eps,
                            uintptr_t weights, uintptr_t means, uintptr_t variances) {
  dispatch(dtype, "gmm2_quantile_init_cpu", [&](auto tag) {
    quantile_init(input<decltype(tag)>(values, groups, n, n_groups), f64(count), f64(lo), f64(scale), reg_covar, eps,
                  f64(weights), f64(means), f64(variances));
  });
}

void gmm2_em_cpu(uintptr_t values, uintptr_t groups, int64_t n, int dtype, int64_t n_groups, uintptr_t count,
                 uintptr_t lo, uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                 uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                 double reg_covar, double eps) {
  dispatch(dtype, "gmm2_em_cpu", [&](auto tag) {
    em(input<decltype(tag)>(values, groups, n, n_groups), f64(count), f64(lo), f64(scale), f64(weights), f64(means),
       f64(variances), f64(log_likelihood), reinterpret_cast<int64_t*>(n_iter), reinterpret_cast<uint8_t*>(converged),
       max_iter, tol, reg_covar, eps);
  });
}

}  // namespace fastmix

namespace fastmix {

// CPU emulation of gmm.cu: every block (group) in turn, each phase run for every thread of the block in turn,
// with the kernel's barriers between phases.
template <typename T>
static void emulate_em(const T* sorted_values, const int64_t* offsets, int64_t n_groups, const double* count,
                       const double* lo, const double* scale, double* weights, double* means, double* variances,
                       double* log_likelihood, int64_t* n_iter, uint8_t* converged, int64_t max_iter, double tol,
                       double reg_covar, double eps) {
  std::vector<double> partials(gmm::kEmThreads * gmm::kStats);
  for (int64_t g = 0; g < n_groups; ++g) {
    gmm::GroupState state = gmm::begin_group(g, weights, means, variances);
    for (int64_t iteration = 0; iteration < max_iter; ++iteration) {
      if (state.done) break;
      const gmm::Prepared prepared = gmm::prepare(state.weights, state.means, state.variances);
      for (int thread = 0; thread < gmm::kEmThreads; ++thread) {
        gmm::thread_pass<T>(thread, sorted_values, offsets[g], offsets[g + 1], lo[g], scale[g], prepared,
                            partials.data() + thread * gmm::kStats);
      }
      for (int stride = gmm::kEmThreads / 2; stride > 0; stride >>= 1) {
        for (int thread = 0; thread < gmm::kEmThreads; ++thread) gmm::reduce_step(partials.data(), thread, stride);
      }
      gmm::step_group(state, partials.data(), count[g], reg_covar, eps, tol, log_likelihood + g * max_iter);
    }
    gmm::end_group(state, g, weights, means, variances, n_iter, converged);
  }
}

void gmm2_em_emulate(uintptr_t sorted_values, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count,
                     uintptr_t lo, uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                     uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                     double reg_covar, double eps) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    emulate_em<T>(reinterpret_cast<const T*>(sorted_values), reinterpret_cast<const int64_t*>(offsets), n_groups,
                  reinterpret_cast<const double*>(count), reinterpret_cast<const double*>(lo),
                  reinterpret_cast<const double*>(scale), reinterpret_cast<double*>(weights),
                  reinterpret_cast<double*>(means), reinterpret_cast<double*>(variances),
                  reinterpret_cast<double*>(log_likelihood), reinterpret_cast<int64_t*>(n_iter),
                  reinterpret_cast<uint8_t*>(converged), max_iter, tol, reg_covar, eps);
  };
  if (dtype == kFloat32) {
    run(float{});
  } else if (dtype == kFloat64) {
    run(double{});
  } else {
    throw std::invalid_argument("gmm2_em_emulate: values must be float32 or float64, got dtype code " +
                                std::to_string(dtype));
  }
}

}  // namespace fastmix
