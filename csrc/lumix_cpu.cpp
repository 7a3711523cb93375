// LUMix (LUMix paper, eq. 3-8) on CPU tensors: the loss L0 + eta R per row, its closed-form gradient and the label
// weight lam of eq. 3. One row per loop iteration, OpenMP over rows; the loops over classes vectorise (exp_fast).
// Labels are class indices (B,) int64 (Index) or dense rows in the accumulation type (float for fp32/fp16/bf16
// logits, double for fp64).
#include <limits>
#include "common.h"
#include "loss_cpu.h"
#include "native.h"

namespace fastmix {
namespace {

// y_a and y_b of one row, from two class indices or two dense rows.
template <typename Acc, bool Index>
struct LabelPair {
  int64_t class_a, class_b;
  const Acc* row_a;
  const Acc* row_b;
  FASTMIX_LOSS_INLINE Acc a(int64_t k) const { return row_a[k]; }
  FASTMIX_LOSS_INLINE Acc b(int64_t k) const { return row_b[k]; }
  // Index labels: the labelled classes, each once (y_a's, then y_b's if it differs), and their mixed target.
  FASTMIX_LOSS_INLINE int labelled(int64_t out[2]) const { return labelled_classes(class_a, class_b, out); }
  FASTMIX_LOSS_INLINE Acc target(int64_t k, Acc lam) const { return mixed_one_hot(k, class_a, class_b, lam); }
};

template <typename Acc, bool Index>
FASTMIX_LOSS_INLINE LabelPair<Acc, Index> label_pair(const LabelArgs& labels, int64_t row) {
  if constexpr (Index) {
    return {reinterpret_cast<const int64_t*>(labels.a)[row], reinterpret_cast<const int64_t*>(labels.b)[row],
            nullptr, nullptr};
  } else {
    return {0, 0, reinterpret_cast<const Acc*>(labels.a) + row * labels.a_stride,
            reinterpret_cast<const Acc*>(labels.b) + row * labels.b_stride};
  }
}

template <typename T>
FASTMIX_LOSS_INLINE Acc_t<T> row_max(const T* z, int64_t classes) {
  Acc_t<T> z_max = -std::numeric_limits<Acc_t<T>>::infinity();
#pragma omp simd reduction(max : z_max)
  for (int64_t k = 0; k < classes; ++k) {
    const Acc_t<T> zk = load_acc<T>(z[k]);
    z_max = zk > z_max ? zk : z_max;
  }
  return z_max;
}

// Row i: loss = sum_k y_k (lse - z_k) + eta sum_k y_k max(0, b_k - p_k) (eq. 6-7), y = lam y_a + (1 - lam) y_b,
// b_k = [y_a,k > min y_a or y_b,k > min y_b] (Algorithm 1), and the backward's statistics
// (log-sum-exp, sum_k y_k, sum_k y_k p_k [b_k > p_k], min y_a, min y_b). `scores` holds K values of scratch. Index
// labels touch only their two classes after the log-sum-exp: a one-hot row's minimum is 0 (1 when K = 1, where no
// class lies above it), so b marks the labelled classes.
template <typename T, bool Index>
FASTMIX_LOSS_INLINE void forward_row(const T* z, const LabelPair<Acc_t<T>, Index>& y, Acc_t<T> lam, Acc_t<T> eta,
                                     int64_t classes, Acc_t<T>* scores, Acc_t<T>* loss, Acc_t<T>* stats) {
  using Acc = Acc_t<T>;
  const Acc z_max = row_max<T>(z, classes);
  Acc sum_exp = 0;
#pragma omp simd reduction(+ : sum_exp)
  for (int64_t k = 0; k < classes; ++k) {
    scores[k] = exp_fast(load_acc<T>(z[k]) - z_max);
    sum_exp += scores[k];
  }
  const Acc inv_sum = Acc(1) / sum_exp;
  Acc min_a, min_b, label_sum = 0, target_shifted = 0, hinge = 0, hinge_mass = 0;
  if constexpr (Index) {
    min_a = min_b = classes > 1 ? Acc(0) : Acc(1);
    int64_t labelled[2];
    for (int i = 0, n = y.labelled(labelled); i < n; ++i) {
      const int64_t k = labelled[i];
      const Acc target = y.target(k, lam), p = scores[k] * inv_sum;
      label_sum += target;
      target_shifted += target * (load_acc<T>(z[k]) - z_max);
      const bool active = classes > 1 && p < Acc(1);
      hinge += active ? target * (Acc(1) - p) : Acc(0);
      hinge_mass += active ? target * p : Acc(0);
    }
  } else {
    min_a = min_b = std::numeric_limits<Acc>::infinity();
#pragma omp simd reduction(min : min_a, min_b) reduction(+ : label_sum, target_shifted)
    for (int64_t k = 0; k < classes; ++k) {
      const Acc target = lam * y.a(k) + (Acc(1) - lam) * y.b(k);
      min_a = y.a(k) < min_a ? y.a(k) : min_a;
      min_b = y.b(k) < min_b ? y.b(k) : min_b;
      label_sum += target;
      target_shifted += target * (load_acc<T>(z[k]) - z_max);
    }
#pragma omp simd reduction(+ : hinge, hinge_mass)
    for (int64_t k = 0; k < classes; ++k) {
      const Acc p = scores[k] * inv_sum;
      const Acc target = lam * y.a(k) + (Acc(1) - lam) * y.b(k);
      const bool active = (y.a(k) > min_a || y.b(k) > min_b) && p < Acc(1);
      hinge += active ? target * (Acc(1) - p) : Acc(0);
      hinge_mass += active ? target * p : Acc(0);
    }
  }
  const Acc log_norm = std::log(sum_exp);
  *loss = label_sum * log_norm - target_shifted + eta * hinge;
  stats[0] = z_max + log_norm;
  stats[1] = label_sum;
  stats[2] = hinge_mass;
  stats[3] = min_a;
  stats[4] = min_b;
}

// grad_k = g (p_k sum_j y_j - y_k + eta p_k (sum_j h_j p_j - h_k)), h_k = y_k [b_k > p_k]. Index labels: y_k = h_k = 0
// off the two labelled classes, which are then rewritten with the full formula.
template <typename T, bool Index>
FASTMIX_LOSS_INLINE void backward_row(const T* z, const LabelPair<Acc_t<T>, Index>& y, Acc_t<T> lam, Acc_t<T> eta,
                                      int64_t classes, const Acc_t<T>* stats, Acc_t<T> g, T* grad) {
  using Acc = Acc_t<T>;
  const Acc log_sum_exp = stats[0], label_sum = stats[1], hinge_mass = stats[2], min_a = stats[3], min_b = stats[4];
  const auto gradient = [&](Acc p, Acc target, bool union_k) __attribute__((always_inline)) {
    const Acc hinge_weight = union_k && p < Acc(1) ? target : Acc(0);
    return store_from_acc<T>(g * (p * label_sum - target + eta * p * (hinge_mass - hinge_weight)));
  };
  if constexpr (Index) {
#pragma omp simd
    for (int64_t k = 0; k < classes; ++k) {
      grad[k] = gradient(exp_fast(load_acc<T>(z[k]) - log_sum_exp), Acc(0), false);
    }
    int64_t labelled[2];
    for (int i = 0, n = y.labelled(labelled); i < n; ++i) {
      const int64_t k = labelled[i];
      grad[k] = gradient(exp_fast(load_acc<T>(z[k]) - log_sum_exp), y.target(k, lam), classes > 1);
    }
  } else {
#pragma omp simd
    for (int64_t k = 0; k < classes; ++k) {
      grad[k] = gradient(exp_fast(load_acc<T>(z[k]) - log_sum_exp), lam * y.a(k) + (Acc(1) - lam) * y.b(k),
                         y.a(k) > min_a || y.b(k) > min_b);
    }
  }
}

// lam_s = p_a / (p_a + p_b) (eq. 4-5; 1/2 when both are 0), p_y = sum_k y_k p_k / sum_k y_k (0 for an all-zero
// row), then lam = (1 - r1 - r2) lam0 + r1 lam_r + r2 lam_s (eq. 3).
template <typename T, bool Index>
FASTMIX_LOSS_INLINE void lambda_row(const T* z, const LabelPair<Acc_t<T>, Index>& y, int64_t classes, Acc_t<T> r1,
                                    Acc_t<T> r2, Acc_t<T> lam0, Acc_t<T> lam_r, Acc_t<T>* lam, Acc_t<T>* lam_s) {
  using Acc = Acc_t<T>;
  const Acc z_max = row_max<T>(z, classes);
  Acc sum_exp = 0, weighted_a = 0, weighted_b = 0, mass_a = 1, mass_b = 1;
  if constexpr (Index) {
#pragma omp simd reduction(+ : sum_exp)
    for (int64_t k = 0; k < classes; ++k) sum_exp += exp_fast(load_acc<T>(z[k]) - z_max);
    weighted_a = exp_fast(load_acc<T>(z[y.class_a]) - z_max);
    weighted_b = exp_fast(load_acc<T>(z[y.class_b]) - z_max);
  } else {
    mass_a = mass_b = 0;
#pragma omp simd reduction(+ : sum_exp, weighted_a, weighted_b, mass_a, mass_b)
    for (int64_t k = 0; k < classes; ++k) {
      const Acc e = exp_fast(load_acc<T>(z[k]) - z_max);
      sum_exp += e;
      weighted_a += y.a(k) * e;
      weighted_b += y.b(k) * e;
      mass_a += y.a(k);
      mass_b += y.b(k);
    }
  }
  const Acc p_a = mass_a > 0 ? weighted_a / sum_exp / mass_a : Acc(0);
  const Acc p_b = mass_b > 0 ? weighted_b / sum_exp / mass_b : Acc(0);
  const Acc total = p_a + p_b;
  const Acc score = total > 0 ? p_a / total : Acc(0.5);
  *lam_s = score;
  *lam = (Acc(1) - r1 - r2) * lam0 + r1 * lam_r + r2 * score;
}

// body(row, logits row, label pair, scratch of K accumulators) for every row, OpenMP over rows, with T the logits'
// storage type and the labels' kind resolved once.
template <typename Body>
void for_rows(const LogitArgs& logits, const LabelArgs& labels, const char* what, Body&& body) {
  if (labels.index) {
    check_indices(labels.a, logits.batch, logits.classes, "y_a", "class");
    check_indices(labels.b, logits.batch, logits.classes, "y_b", "class");
  }
  dispatch_dtype(logits.dtype, what, [&](auto tag) {
    using T = decltype(tag);
    using Acc = Acc_t<T>;
    const T* base = reinterpret_cast<const T*>(logits.data);
    dispatch_index(labels.index, [&](auto index_tag) {
      constexpr bool Index = decltype(index_tag)::value;
      for_each_row<Acc>(logits.batch, logits.classes, [&](int64_t row, Acc* scratch) __attribute__((always_inline)) {
        body(row, base + row * logits.row_stride, label_pair<Acc, Index>(labels, row), scratch);
      });
    });
  });
}

}  // namespace

void lumix_loss_forward_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype,
                            bool index_labels, uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride,
                            uintptr_t lam, double eta, uintptr_t loss, uintptr_t stats) {
  for_rows({z, z_stride, batch, classes, dtype}, {index_labels, y_a, y_a_stride, y_b, y_b_stride},
           "lumix_loss_forward_cpu",
           [&](int64_t row, const auto* logits_row, const auto& y, auto* scratch) __attribute__((always_inline)) {
             using Acc = std::remove_pointer_t<decltype(scratch)>;
             using T = std::remove_cv_t<std::remove_pointer_t<decltype(logits_row)>>;
             forward_row<T>(logits_row, y, reinterpret_cast<const Acc*>(lam)[row], static_cast<Acc>(eta), classes,
                            scratch, reinterpret_cast<Acc*>(loss) + row, reinterpret_cast<Acc*>(stats) + 5 * row);
           });
}

void lumix_loss_backward_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype,
                             bool index_labels, uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride,
                             uintptr_t lam, double eta, uintptr_t stats, uintptr_t grad_rows,
                             int64_t grad_rows_stride, uintptr_t grad) {
  for_rows({z, z_stride, batch, classes, dtype}, {index_labels, y_a, y_a_stride, y_b, y_b_stride},
           "lumix_loss_backward_cpu",
           [&](int64_t row, const auto* logits_row, const auto& y, auto* scratch) __attribute__((always_inline)) {
             using Acc = std::remove_pointer_t<decltype(scratch)>;
             using T = std::remove_cv_t<std::remove_pointer_t<decltype(logits_row)>>;
             backward_row<T>(logits_row, y, reinterpret_cast<const Acc*>(lam)[row], static_cast<Acc>(eta), classes,
                             reinterpret_cast<const Acc*>(stats) + 5 * row,
                             reinterpret_cast<const Acc*>(grad_rows)[row * grad_rows_stride],
                             reinterpret_cast<T*>(grad) + row * classes);
           });
}

void lumix_lambda_cpu(uintptr_t z, int64_t z_stride, int64_t batch, int64_t classes, int dtype, bool index_labels,
                      uintptr_t y_a, int64_t y_a_stride, uintptr_t y_b, int64_t y_b_stride, uintptr_t lam0,
                      uintptr_t lam_r, double r1, double r2, uintptr_t lam, uintptr_t lam_s) {
  for_rows({z, z_stride, batch, classes, dtype}, {index_labels, y_a, y_a_stride, y_b, y_b_stride},
           "lumix_lambda_cpu",
           [&](int64_t row, const auto* logits_row, const auto& y, auto* scratch) __attribute__((always_inline)) {
             using Acc = std::remove_pointer_t<decltype(scratch)>;
             using T = std::remove_cv_t<std::remove_pointer_t<decltype(logits_row)>>;
             lambda_row<T>(logits_row, y, classes, static_cast<Acc>(r1), static_cast<Acc>(r2),
                           reinterpret_cast<const Acc*>(lam0)[row], reinterpret_cast<const Acc*>(lam_r)[row],
                           reinterpret_cast<Acc*>(lam) + row, reinterpret_cast<Acc*>(lam_s) + row);
           });
}

}  // namespace fastmix
