// The mix parameter kernel on the CPU (fastmix/kernels/triton/mix.py _mix_params_kernel, in C++): one call's
// gates, mixer switches, lam (Beta), CutMix boxes (timm 1.0.31's rand_bbox / rand_bbox_minmax), partners (a random
// permutation by the ranks of iid keys, or the flipped batch) and mixed labels, from the same Philox streams
// (philox.h), so the kernel backends draw one random stream for a given seed. Serial: a batch is a few hundred
// draws.
#include <algorithm>
#include <numeric>
#include <vector>
#include "common.h"
#include "native.h"
#include "philox.h"

namespace fastmix {
namespace {

// The parameter kernel's streams, one per quantity.
constexpr uint32_t kGateStream = 0;  // the gate (mix_prob) and the mixer switch (switch_prob)
constexpr uint32_t kBoxStream = 1;
constexpr uint32_t kCutmixStream = 2;  // CutMix's Beta draw
constexpr uint32_t kMixupStream = 3;   // Mixup's Beta draw
constexpr uint32_t kPermStream = 4;

// How drawn rows map to samples (fastmix/kernels/triton/mix.py DRAW_MODES).
enum Draws : int { kBatch = 0, kPair = 1, kElem = 2, kHalf = 3 };
// The labels mixed: none, int64 class indices (B,), dense (B, K) rows in the label type.
enum LabelKind : int { kNoLabels = 0, kIndexLabels = 1, kDenseLabels = 2 };

struct Draw {
  double lam;  // the weight of the sample's own label, before the float32 rounding
  bool cutmix;
  bool mixed;
  double box[4];  // (y0, y1, x0, x1), zero unless cutmix
};

struct Settings {
  int64_t seed, height, width, low_h, span_h, low_w, span_w;
  double mixup_alpha, cutmix_alpha, mix_prob, switch_prob;
  bool minmax, correct_lam;
};

// Draw `index`'s parameters, as the Triton kernel does for one row (only the Beta draws a row's result uses).
Draw draw_one(const Settings& s, uint64_t index) {
  const bool mixup = s.mixup_alpha > 0, cutmix_on = s.cutmix_alpha > 0;
  const philox::Pair gate = philox::uniform_pair(s.seed, index, 0, kGateStream, 0);
  Draw d{1.0, false, s.mix_prob < 1 ? gate.first < s.mix_prob : true, {0.0, 0.0, 0.0, 0.0}};
  if (!d.mixed) return d;
  d.cutmix = cutmix_on && (!mixup || gate.second < s.switch_prob);
  if (!d.cutmix) {
    d.lam = philox::symmetric_beta(s.seed, s.mixup_alpha, index, kMixupStream, 0);
    return d;
  }
  const double side_h = static_cast<double>(s.height), side_w = static_cast<double>(s.width);
  const philox::Pair u = philox::uniform_pair(s.seed, index, 0, kBoxStream, 0);
  if (s.minmax) {  // timm rand_bbox_minmax: sides uniform integers, the origin uniform over every fitting position
    const philox::Pair origin = philox::uniform_pair(s.seed, index, 1, kBoxStream, 0);
    const double cut_h = std::floor(u.first * static_cast<double>(s.span_h)) + static_cast<double>(s.low_h);
    const double cut_w = std::floor(u.second * static_cast<double>(s.span_w)) + static_cast<double>(s.low_w);
    const double y0 = std::floor(origin.first * (side_h - cut_h + 1.0));
    const double x0 = std::floor(origin.second * (side_w - cut_w + 1.0));
    d.box[0] = y0, d.box[1] = y0 + cut_h, d.box[2] = x0, d.box[3] = x0 + cut_w;
  } else {  // timm rand_bbox: sides int(S sqrt(1 - lam)), centre uniform over the pixels, clipped
    d.lam = philox::symmetric_beta(s.seed, s.cutmix_alpha, index, kCutmixStream, 0);
    const double ratio = std::sqrt(1.0 - d.lam);
    const double cut_h = std::floor(side_h * ratio), cut_w = std::floor(side_w * ratio);
    const double start_y = std::floor(u.first * side_h) - std::floor(cut_h * 0.5);  // centre - cut // 2
    const double start_x = std::floor(u.second * side_w) - std::floor(cut_w * 0.5);
    d.box[0] = std::max(start_y, 0.0), d.box[1] = std::min(start_y + cut_h, side_h);  // centre + (cut + 1) // 2
    d.box[2] = std::max(start_x, 0.0), d.box[3] = std::min(start_x + cut_w, side_w);
  }
  if (s.correct_lam || s.minmax) {  // CutMix eq. 2 with the clipped box: the kept fraction
    d.lam = 1.0 - (d.box[1] - d.box[0]) * (d.box[3] - d.box[2]) / (side_h * side_w);
  }
  return d;
}

// lam y + (1 - lam) y[partner] of the smoothed labels (y keep + add), in the label type T, as the Triton kernel
// rounds it: own and other smoothed apart, then other + lam (own - other).
template <typename T>
void mix_labels(int kind, const void* labels, int64_t label_row_stride, T* out, int64_t classes, int64_t batch,
                const float* lam, const int64_t* partner, double keep_value, double add_value) {
  const T keep = static_cast<T>(keep_value), add = static_cast<T>(add_value);
  const T off = T(0) * keep + add, on = T(1) * keep + add;
  for (int64_t i = 0; i < batch; ++i) {
    const T weight = static_cast<T>(lam[i]);
    T* row = out + i * classes;
    if (kind == kIndexLabels) {
      const int64_t* index = static_cast<const int64_t*>(labels);
      const int64_t own = index[i], other = index[partner[i]];
      std::fill(row, row + classes, off + weight * (off - off));
      if (own == other) {
        row[own] = on + weight * (on - on);
      } else {
        row[own] = off + weight * (on - off);
        row[other] = on + weight * (off - on);
      }
    } else {
      const T* own = static_cast<const T*>(labels) + i * label_row_stride;
      const T* other = static_cast<const T*>(labels) + partner[i] * label_row_stride;
      for (int64_t k = 0; k < classes; ++k) {
        const T a = own[k] * keep + add, b = other[k] * keep + add;
        row[k] = b + weight * (a - b);
      }
    }
  }
}

}  // namespace

void mix_params_cpu(uintptr_t seed_ptr, uintptr_t lam_ptr, uintptr_t weight_ptr, int weight_dtype, uintptr_t boxes_ptr,
                    uintptr_t partner_ptr, uintptr_t inverse_ptr, uintptr_t cutmix_ptr, int label_kind,
                    uintptr_t labels_ptr, int64_t label_row_stride, int label_dtype, uintptr_t mixed_labels_ptr,
                    int64_t classes, int64_t batch, int64_t height, int64_t width, int64_t low_h, int64_t span_h,
                    int64_t low_w, int64_t span_w, int draws, bool permute, double mixup_alpha, double cutmix_alpha,
                    double mix_prob, double switch_prob, bool minmax, bool correct_lam, double keep, double add) {
  const int64_t seed = *reinterpret_cast<const int64_t*>(seed_ptr);
  if (label_kind == kIndexLabels) check_indices(labels_ptr, batch, classes, "y", "class");  // before any write
  const Settings s{seed, height, width, low_h, span_h, low_w, span_w, mixup_alpha, cutmix_alpha, mix_prob,
                   switch_prob, minmax, correct_lam};
  // Each distinct draw once: one for the batch, one per pair (i, B-1-i), one per sample (of the first half).
  const int64_t count = draws == kBatch ? std::min<int64_t>(batch, 1)
                        : draws == kPair ? (batch + 1) / 2
                        : draws == kHalf ? batch / 2
                                         : batch;
  std::vector<Draw> drawn(static_cast<size_t>(count));
  for (int64_t index = 0; index < count; ++index) drawn[index] = draw_one(s, static_cast<uint64_t>(index));
  const Draw unmixed{1.0, false, false, {0.0, 0.0, 0.0, 0.0}};
  float* lam = reinterpret_cast<float*>(lam_ptr);
  int32_t* boxes = reinterpret_cast<int32_t*>(boxes_ptr);
  bool* cutmix = reinterpret_cast<bool*>(cutmix_ptr);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t index = draws == kBatch ? 0 : (draws == kPair ? std::min(i, batch - 1 - i) : i);
    const Draw& d = index < count ? drawn[index] : unmixed;
    lam[i] = static_cast<float>(d.mixed ? d.lam : 1.0);
    const float weight = d.cutmix ? 1.0f : lam[i];
    if (weight_dtype == kFloat64) {
      reinterpret_cast<double*>(weight_ptr)[i] = weight;
    } else {
      reinterpret_cast<float*>(weight_ptr)[i] = weight;
    }
    cutmix[i] = d.cutmix;
    for (int k = 0; k < 4; ++k) boxes[4 * i + k] = static_cast<int32_t>(d.box[k]);
  }
  int64_t* partner = reinterpret_cast<int64_t*>(partner_ptr);
  int64_t* inverse = reinterpret_cast<int64_t*>(inverse_ptr);
  if (permute) {  // partner[i] = the rank of key i among iid uniform keys, ties broken by index
    std::vector<double> keys(static_cast<size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) {
      keys[i] = philox::uniform_pair(seed, static_cast<uint64_t>(i), 0, kPermStream, 0).first;
    }
    std::iota(inverse, inverse + batch, int64_t(0));
    std::stable_sort(inverse, inverse + batch, [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
    for (int64_t rank = 0; rank < batch; ++rank) partner[inverse[rank]] = rank;
  } else {
    for (int64_t i = 0; i < batch; ++i) partner[i] = inverse[i] = batch - 1 - i;
  }
  if (label_kind == kNoLabels) return;
  const void* labels = reinterpret_cast<const void*>(labels_ptr);
  if (label_dtype == kFloat64) {
    mix_labels(label_kind, labels, label_row_stride, reinterpret_cast<double*>(mixed_labels_ptr), classes, batch, lam,
               partner, keep, add);
  } else {
    mix_labels(label_kind, labels, label_row_stride, reinterpret_cast<float*>(mixed_labels_ptr), classes, batch, lam,
               partner, keep, add);
  }
}

}  // namespace fastmix
