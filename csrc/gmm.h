// Two-component 1-D GMM EM (BalanceMix paper, eq. 6-8) with scikit-learn's semantics: the per-value E-step and the
// per-group M-step shared by the C++ CPU kernel (gmm_cpu.cpp) and the CUDA kernel (gmm.cu).
// All math is float64. A group's sufficient statistics are taken around its current means (the shift makes
// the one-pass variance as accurate as scikit-learn's two-pass one):
//   stats[0] = sum log p(x),  stats[1 + k] = sum r_k,  stats[3 + k] = sum r_k (x - mu_k),
//   stats[5 + k] = sum r_k (x - mu_k)^2.
#pragma once
#include <cmath>
#include <cstdint>
#include "common.h"

namespace fastmix {
namespace gmm {

constexpr int kStats = 7;
constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

// E-step constants of one group: log w_k + log N(x) = offset_k - 0.5 (x p_k - mu_k p_k)^2, p_k = 1 / sqrt(var_k).
struct Prepared {
  double offset[2];
  double precision_chol[2];
  double scaled_mean[2];
  double mean[2];
};

FASTMIX_HD Prepared prepare(const double* weights, const double* means, const double* variances) {
  Prepared p;
  for (int k = 0; k < 2; ++k) {
    p.precision_chol[k] = 1.0 / sqrt(variances[k]);
    p.offset[k] = -0.5 * kLog2Pi + log(p.precision_chol[k]) + log(weights[k]);
    p.scaled_mean[k] = means[k] * p.precision_chol[k];
    p.mean[k] = means[k];
  }
  return p;
}

// Adds one normalised value's E-step to stats (log p(x) by a max-shifted log-sum-exp, as scikit-learn). The
// larger of the two terms is picked by selects, not by a runtime array index (which puts arrays in local memory
// on a GPU).
FASTMIX_HD void accumulate(double x, const Prepared& p, double* stats) {
  const double z0 = x * p.precision_chol[0] - p.scaled_mean[0];
  const double z1 = x * p.precision_chol[1] - p.scaled_mean[1];
  const double weighted0 = p.offset[0] - 0.5 * z0 * z0;
  const double weighted1 = p.offset[1] - 0.5 * z1 * z1;
  const bool second_on_top = weighted1 > weighted0;
  const double top = second_on_top ? weighted1 : weighted0;
  const double other = exp((second_on_top ? weighted0 : weighted1) - top);
  const double sum = 1.0 + other;
  stats[0] += top + log(sum);
  const double resp_top = 1.0 / sum;
  const double resp_other = other * resp_top;
  const double resp[2] = {second_on_top ? resp_other : resp_top, second_on_top ? resp_top : resp_other};
  for (int k = 0; k < 2; ++k) {
    const double d = x - p.mean[k];
    stats[1 + k] += resp[k];
    stats[3 + k] += resp[k] * d;
    stats[5 + k] += resp[k] * d * d;
  }
}

// Min-max normalisation as every backend computes it (reference.normalise): (value - min) * (1 / (max - min)).
FASTMIX_HD double normalised(double value, double lo, double inv_scale) { return (value - lo) * inv_scale; }

FASTMIX_HD bool is_finite(double value) { return fabs(value) < INFINITY; }  // false for NaN and +-inf

// Component k's new mean and variance from stats taken around ``means[k]`` (scikit-learn: nk = sum r + 10 eps,
// mean = sum r x / nk, variance = sum r (x - mean)^2 / nk + reg_covar); returns nk.
FASTMIX_HD double update_component(const double* stats, int k, double reg_covar, double eps, double* means,
                                   double* variances) {
  const double nk = stats[1 + k] + 10.0 * eps;
  const double shift = means[k];
  const double mean = (stats[3 + k] + shift * stats[1 + k]) / nk;
  const double d = mean - shift;
  const double spread = stats[5 + k] - 2.0 * d * stats[3 + k] + d * d * stats[1 + k];
  means[k] = mean;
  variances[k] = (spread > 0.0 ? spread : 0.0) / nk + reg_covar;
  return nk;
}

// M-step of one group from its stats (w = nk / sum nk), then the convergence test |lb - previous| < tol.
// Returns true when converged.
FASTMIX_HD bool m_step(const double* stats, double count, double reg_covar, double eps, double tol, double* weights,
                       double* means, double* variances, double* previous_lb, double* lb_out) {
  const double nk0 = update_component(stats, 0, reg_covar, eps, means, variances);
  const double nk1 = update_component(stats, 1, reg_covar, eps, means, variances);
  weights[0] = nk0 / (nk0 + nk1);
  weights[1] = nk1 / (nk0 + nk1);
  const double lb = stats[0] / (count > 1.0 ? count : 1.0);
  *lb_out = lb;
  const bool converged = fabs(lb - *previous_lb) < tol;
  *previous_lb = lb;
  return converged;
}

// The CUDA kernel (gmm.cu): one block per group over the group's contiguous segment of the values sorted by group,
// the whole fit in one launch. An iteration: each thread sums its strided share of the segment (thread_pass), a
// fixed tree reduces the block's partials (reduce_step, deterministic), thread 0 runs the M-step (GroupState). The
// CPU emulation (gmm_cpu.cpp) runs these same phases for every thread of a block in turn.
constexpr int kEmThreads = 256;

struct GroupState {
  double weights[2];
  double means[2];
  double variances[2];
  double previous_lb;
  int64_t iterations;
  int done;
};

FASTMIX_HD GroupState begin_group(int64_t g, const double* weights, const double* means, const double* variances) {
  GroupState state;
  for (int k = 0; k < 2; ++k) {
    state.weights[k] = weights[2 * g + k];
    state.means[k] = means[2 * g + k];
    state.variances[k] = variances[2 * g + k];
  }
  state.previous_lb = -INFINITY;
  state.iterations = 0;
  state.done = 0;
  return state;
}

template <typename T>
FASTMIX_HD void thread_pass(int thread, const T* sorted_values, int64_t start, int64_t end, double lo,
                            double inv_scale, const Prepared& prepared, double* own) {
  for (int s = 0; s < kStats; ++s) own[s] = 0.0;
  for (int64_t i = start + thread; i < end; i += kEmThreads) {
    const double v = static_cast<double>(Traits<T>::load(sorted_values[i]));
    if (is_finite(v)) accumulate(normalised(v, lo, inv_scale), prepared, own);
  }
}

FASTMIX_HD void reduce_step(double* partials, int thread, int stride) {
  if (thread >= stride) return;
  for (int s = 0; s < kStats; ++s) partials[thread * kStats + s] += partials[(thread + stride) * kStats + s];
}

FASTMIX_HD void step_group(GroupState& state, const double* stats, double count, double reg_covar, double eps,
                           double tol, double* log_likelihood_row) {
  double lb;
  const bool converged = m_step(stats, count, reg_covar, eps, tol, state.weights, state.means, state.variances,
                                &state.previous_lb, &lb);
  log_likelihood_row[state.iterations] = lb;
  state.iterations += 1;
  state.done = converged ? 1 : 0;
}

FASTMIX_HD void end_group(const GroupState& state, int64_t g, double* weights, double* means, double* variances,
                          int64_t* n_iter, uint8_t* converged) {
  for (int k = 0; k < 2; ++k) {
    weights[2 * g + k] = state.weights[k];
    means[2 * g + k] = state.means[k];
    variances[2 * g + k] = state.variances[k];
  }
  n_iter[g] = state.iterations;
  converged[g] = static_cast<uint8_t>(state.done);
}

}  // namespace gmm
}  // namespace fastmix
