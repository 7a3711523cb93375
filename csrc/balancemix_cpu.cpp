// BalanceMix loss (BalanceMix paper, eq. 10) on CPU tensors: (1/B) sum_bk w_bk BCE(sigmoid(z_bk), t_bk) and, in the
// same pass, its gradient.
// Rows with unit column stride, OpenMP over rows; the loops over classes vectorise (exp_fast, log1p_unit). Targets
// and weights are in the accumulation type (float, double for fp64 logits); weights == 0 (null) means all ones.
#include <vector>
#include "common.h"
#include "loss_cpu.h"
#include "native.h"

namespace fastmix {
namespace {

// body(row, z row, t row, w row or null) for every row, with T and the weights' presence resolved once.
template <typename Body>
void for_rows(uintptr_t logits, int64_t logits_stride, uintptr_t targets, int64_t targets_stride, uintptr_t weights,
              int64_t weights_stride, int64_t batch, int64_t classes, int dtype, const char* what, Body&& body) {
  dispatch_dtype(dtype, what, [&](auto tag) {
    using T = decltype(tag);
    using Acc = Acc_t<T>;
    const auto run = [&](auto weighted_tag) {
      constexpr bool Weighted = decltype(weighted_tag)::value;
      for_each_row<Acc>(batch, classes, [&](int64_t row, Acc*) __attribute__((always_inline)) {
        body(row, reinterpret_cast<const T*>(logits) + row * logits_stride,
             reinterpret_cast<const Acc*>(targets) + row * targets_stride,
             Weighted ? reinterpret_cast<const Acc*>(weights) + row * weights_stride : nullptr, weighted_tag);
      });
    };
    if (weights != 0) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

}  // namespace

// BCE(sigmoid(z), t) = max(z, 0) - z t + log(1 + exp(-|z|)), stable for any z. Row sums in the accumulation type,
// then their sum in row order in double: the result does not depend on the thread count. With grad (not 0) the same
// pass writes d loss / d z = w (sigmoid(z) - t) / B, (B, K) contiguous in the accumulation type, sigmoid from the
// same exp(-|z|).
void balancemix_loss_forward_cpu(uintptr_t logits, int64_t logits_stride, uintptr_t targets, int64_t targets_stride,
                                 uintptr_t weights, int64_t weights_stride, int64_t batch, int64_t classes, int dtype,
                                 uintptr_t loss, uintptr_t grad) {
  std::vector<double> row_sums(static_cast<size_t>(batch));
  for_rows(logits, logits_stride, targets, targets_stride, weights, weights_stride, batch, classes, dtype,
           "balancemix_loss_forward_cpu",
           [&](int64_t row, const auto* z, const auto* t, const auto* w, auto weighted_tag)
               __attribute__((always_inline)) {
                 using T = std::remove_cv_t<std::remove_pointer_t<decltype(z)>>;
                 using Acc = Acc_t<T>;
                 constexpr bool Weighted = decltype(weighted_tag)::value;
                 Acc sum = 0;
                 if (grad == 0) {
#pragma omp simd reduction(+ : sum)
                   for (int64_t k = 0; k < classes; ++k) {
                     const Acc x = load_acc<T>(z[k]);
                     const Acc bce = (x > 0 ? x : Acc(0)) - x * t[k] + log1p_unit(exp_fast(x > 0 ? -x : x));
                     sum += Weighted ? w[k] * bce : bce;
                   }
                 } else {
                   const Acc scale = Acc(1) / static_cast<Acc>(batch);
                   Acc* out = reinterpret_cast<Acc*>(grad) + row * classes;
#pragma omp simd reduction(+ : sum)
                   for (int64_t k = 0; k < classes; ++k) {
                     const Acc x = load_acc<T>(z[k]);
                     const Acc e = exp_fast(x > 0 ? -x : x);  // exp(-|z|)
                     const Acc bce = (x > 0 ? x : Acc(0)) - x * t[k] + log1p_unit(e);
                     const Acc sigmoid = (x > 0 ? Acc(1) : e) / (Acc(1) + e);
                     Acc g = scale * (sigmoid - t[k]);
                     if constexpr (Weighted) g *= w[k];
                     out[k] = g;
                     sum += Weighted ? w[k] * bce : bce;
                   }
                 }
                 row_sums[row] = sum;
               });
  double total = 0;
  for (int64_t row = 0; row < batch; ++row) total += row_sums[row];
  if (dtype == kFloat64) {
    *reinterpret_cast<double*>(loss) = total / static_cast<double>(batch);
  } else {
    *reinterpret_cast<float*>(loss) = static_cast<float>(total / static_cast<double>(batch));
  }
}

}  // namespace fastmix
