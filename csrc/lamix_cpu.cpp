// LaMix (LaMix paper, eq. 2 and 9-11) on CPU tensors: the target y = beta y~ + (1 - beta) softmax(sigmoid(t)) and its
// cross-entropy with softmax(z), fused per row (nothing of size (B, K) is stored), and the gradients to z and t.
// OpenMP over rows; the loops over classes vectorise (exp_fast). Labels are class indices (B,) int64 (Index) or
// dense rows in the accumulation type.
#include <limits>
#include "common.h"
#include "loss_cpu.h"
#include "native.h"

namespace fastmix {
namespace {

// y~_k = lam y_i,k + (1 - lam) y_j,k (eq. 2) for row i and its partner j. Index labels: y~ is 0 off the labelled
// classes, which `labelled` lists once each; the row loops skip y~ and visit them afterwards.
template <typename Acc, bool Index>
struct LocalLabel {
  int64_t own_class, partner_class;
  const Acc* own_row;
  const Acc* partner_row;
  Acc lam;
  static constexpr bool kIndex = Index;
  FASTMIX_LOSS_INLINE Acc at(int64_t k) const {
    if constexpr (Index) {
      return mixed_one_hot(k, own_class, partner_class, lam);
    } else {
      return lam * own_row[k] + (Acc(1) - lam) * partner_row[k];
    }
  }
  FASTMIX_LOSS_INLINE int labelled(int64_t out[2]) const {
    return labelled_classes(own_class, partner_class, out);
  }
};

template <typename Acc, bool Index>
FASTMIX_LOSS_INLINE LocalLabel<Acc, Index> local_label(uintptr_t labels, int64_t labels_stride, const Acc* lam,
                                                        const int64_t* partner, int64_t row) {
  const int64_t other = partner[row];
  if constexpr (Index) {
    const int64_t* classes = reinterpret_cast<const int64_t*>(labels);
    return {classes[row], classes[other], nullptr, nullptr, lam[row]};
  } else {
    const Acc* rows = reinterpret_cast<const Acc*>(labels);
    return {0, 0, rows + row * labels_stride, rows + other * labels_stride, lam[row]};
  }
}

template <typename Acc>
FASTMIX_LOSS_INLINE Acc sigmoid(Acc t) {
  return Acc(1) / (Acc(1) + exp_fast(-t));
}

// A row's sums: z_max, log_norm = log sum_k e^(z_k - z_max), s_norm = sum_k e^(s_k) with s = sigmoid(t) (in (0, 1):
// no running maximum needed), sum_k y~_k, sum_k y~_k (z_k - z_max) and sum_k e^(s_k) (z_k - z_max). Leaves e^(s_k)
// in scratch.
template <typename Acc>
struct RowSums {
  Acc z_max, log_norm, s_norm, local_sum, local_shifted, s_shifted;
};

template <typename T, bool Index>
FASTMIX_LOSS_INLINE RowSums<Acc_t<T>> row_sums(const T* z, const T* t, const LocalLabel<Acc_t<T>, Index>& local,
                                                int64_t classes, Acc_t<T>* scratch) {
  using Acc = Acc_t<T>;
  Acc z_max = -std::numeric_limits<Acc>::infinity(), s_norm = 0;
#pragma omp simd reduction(max : z_max) reduction(+ : s_norm)
  for (int64_t k = 0; k < classes; ++k) {
    const Acc zk = load_acc<T>(z[k]);
    z_max = zk > z_max ? zk : z_max;
    scratch[k] = exp_fast(sigmoid(load_acc<T>(t[k])));
    s_norm += scratch[k];
  }
  Acc z_norm = 0, local_sum = 0, local_shifted = 0, s_shifted = 0;
#pragma omp simd reduction(+ : z_norm, local_sum, local_shifted, s_shifted)
  for (int64_t k = 0; k < classes; ++k) {
    const Acc shifted = load_acc<T>(z[k]) - z_max;
    z_norm += exp_fast(shifted);
    s_shifted += scratch[k] * shifted;
    if constexpr (!Index) {
      const Acc y = local.at(k);
      local_sum += y;
      local_shifted += y * shifted;
    }
  }
  if constexpr (Index) {
    int64_t labelled[2];
    for (int i = 0, n = local.labelled(labelled); i < n; ++i) {
      const Acc y = local.at(labelled[i]);
      local_sum += y;
      local_shifted += y * (load_acc<T>(z[labelled[i]]) - z_max);
    }
  }
  return {z_max, std::log(z_norm), s_norm, local_sum, local_shifted, s_shifted};
}

// body(row, z row, t row, local label, scratch) for every row, with T and the labels' kind resolved once.
template <typename Body>
void for_rows(uintptr_t z, int64_t z_stride, uintptr_t t, int64_t t_stride, int64_t batch, int64_t classes,
              int dtype, bool index_labels, uintptr_t labels, int64_t labels_stride, uintptr_t lam, uintptr_t partner,
              const char* what, Body&& body) {
  if (index_labels) check_indices(labels, batch, classes, "y", "class");
  check_indices(partner, batch, batch, "partner", "sample");
  dispatch_dtype(dtype, what, [&](auto tag) {
    using T = decltype(tag);
    using Acc = Acc_t<T>;
    dispatch_index(index_labels, [&](auto index_tag) {
      constexpr bool Index = decltype(index_tag)::value;
      for_each_row<Acc>(batch, classes, [&](int64_t row, Acc* scratch) __attribute__((always_inline)) {
        const auto local = local_label<Acc, Index>(labels, labels_stride, reinterpret_cast<const Acc*>(lam),
                                                   reinterpret_cast<const int64_t*>(partner), row);
        body(row, reinterpret_cast<const T*>(z) + row * z_stride, reinterpret_cast<const T*>(t) + row * t_stride,
             local, scratch);
      });
    });
  });
}

}  // namespace

// loss_i = -sum_k y_k log q_k = (sum_k y_k) log_norm - sum_k y_k (z_k - z_max), q = softmax(z), sum_k p_k = 1.
void lamix_loss_forward_cpu(uintptr_t z, int64_t z_stride, uintptr_t t, int64_t t_stride, int64_t batch,
                            int64_t classes, int dtype, bool index_labels, uintptr_t labels, int64_t labels_stride,
                            uintptr_t lam, uintptr_t partner, double beta, uintptr_t loss) {
  for_rows(z, z_stride, t, t_stride, batch, classes, dtype, index_labels, labels, labels_stride, lam, partner,
           "lamix_loss_forward_cpu",
           [&](int64_t row, const auto* z_row, const auto* t_row, const auto& local, auto* scratch)
               __attribute__((always_inline)) {
                 using Acc = std::remove_pointer_t<decltype(scratch)>;
                 using T = std::remove_cv_t<std::remove_pointer_t<decltype(z_row)>>;
                 const auto s = row_sums<T>(z_row, t_row, local, classes, scratch);
                 const Acc b = static_cast<Acc>(beta);
                 const Acc target_sum = b * s.local_sum + (Acc(1) - b);
                 reinterpret_cast<Acc*>(loss)[row] =
                     target_sum * s.log_norm - b * s.local_shifted - (Acc(1) - b) * s.s_shifted / s.s_norm;
               });
}

// grad_z = g (q sum_k y_k - y), grad_t = g (1 - beta) p (P - log q) s (1 - s) with P = sum_k p_k log q_k
// (grad_t skipped when detach_target).
void lamix_loss_backward_cpu(uintptr_t grad_loss, int64_t grad_loss_stride, uintptr_t z, int64_t z_stride,
                             uintptr_t t, int64_t t_stride, int64_t batch, int64_t classes, int dtype,
                             bool index_labels, uintptr_t labels, int64_t labels_stride, uintptr_t lam,
                             uintptr_t partner, double beta, bool detach_target, uintptr_t grad_z,
                             uintptr_t grad_t) {
  for_rows(z, z_stride, t, t_stride, batch, classes, dtype, index_labels, labels, labels_stride, lam, partner,
           "lamix_loss_backward_cpu",
           [&](int64_t row, const auto* z_row, const auto* t_row, const auto& local, auto* scratch)
               __attribute__((always_inline)) {
                 using Acc = std::remove_pointer_t<decltype(scratch)>;
                 using T = std::remove_cv_t<std::remove_pointer_t<decltype(z_row)>>;
                 const auto s = row_sums<T>(z_row, t_row, local, classes, scratch);
                 const Acc b = static_cast<Acc>(beta);
                 const Acc g = reinterpret_cast<const Acc*>(grad_loss)[row * grad_loss_stride];
                 const Acc target_sum = b * s.local_sum + (Acc(1) - b);
                 const Acc inv_s_norm = Acc(1) / s.s_norm;
                 const Acc mean_log_q = s.s_shifted * inv_s_norm - s.log_norm;
                 T* out_z = reinterpret_cast<T*>(grad_z) + row * classes;
                 const auto gradient = [&](int64_t k, Acc y) __attribute__((always_inline)) {
                   const Acc log_q = load_acc<T>(z_row[k]) - s.z_max - s.log_norm;
                   const Acc target = b * y + (Acc(1) - b) * scratch[k] * inv_s_norm;
                   return store_from_acc<T>(g * (exp_fast(log_q) * target_sum - target));
                 };
                 constexpr bool kIndex = std::remove_reference_t<decltype(local)>::kIndex;
#pragma omp simd
                 for (int64_t k = 0; k < classes; ++k) out_z[k] = gradient(k, kIndex ? Acc(0) : local.at(k));
                 if constexpr (kIndex) {
                   int64_t labelled[2];
                   for (int i = 0, n = local.labelled(labelled); i < n; ++i) {
                     out_z[labelled[i]] = gradient(labelled[i], local.at(labelled[i]));
                   }
                 }
                 if (detach_target) return;
                 T* out_t = reinterpret_cast<T*>(grad_t) + row * classes;
                 const Acc scale = g * (Acc(1) - b) * inv_s_norm;
#pragma omp simd
                 for (int64_t k = 0; k < classes; ++k) {
                   const Acc log_q = load_acc<T>(z_row[k]) - s.z_max - s.log_norm;
                   const Acc sig = sigmoid(load_acc<T>(t_row[k]));
                   out_t[k] = store_from_acc<T>(scale * scratch[k] * (mean_log_q - log_q) * sig * (Acc(1) - sig));
                 }
               });
}

}  // namespace fastmix
