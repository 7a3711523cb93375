// Per-sample Mixup/CutMix on the CPU (LUMix paper, eq. 1), C++ with OpenMP:
//   mix_pairs_cpu     the unified pair mix at the memory floor: out[i, e] = x[p[i], e] inside box i, else
//                     w[i] x[i, e] + (1 - w[i]) x[p[i], e]; out of place, or in place when out == x;
//   pair_mix_emulate  the CUDA kernel's per-thread body (mix.h) over its launch grid, which tests the CUDA index
//                     arithmetic without a GPU and runs the general pair mix;
//   mix_pairs_emulate the same for mix_pairs_thread: the pair mix and its adjoint (the gradients of mix_pairs);
//   mix_pairs_adjoint_cpu  the adjoint for a partner permutation at the memory floor, on the same lines:
//                     grad[j, e] = W_j(e) g[j, e] + (1 - W_i(e)) g[i, e], i = inverse[j] (the gradient of a call).
//
// mix_pairs_cpu splits each canonical row into lines: one line per coordinate of the outer spatial dim (the box's
// rows lie in a line as one contiguous run per repetition of the inner spatial dim), or fixed chunks without a box.
// A line is at most three runs per repetition (own values, partner's box, own values): a run is a memcpy (weight 1
// or 0, or inside the box) or one vectorised lerp, so every element is read once from one or two inputs; lines
// that miss the box merge into one run. Tasks are blocks of whole lines of one sample (about 64 KiB), so that a
// batch of one uses every core.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include "mix.h"
#include "native.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastmix {
namespace {

constexpr int64_t kChunk = 4096;          // elements per line without a box
constexpr int64_t kBlockBytes = 1 << 16;  // a task: whole lines of one sample, about this many bytes
constexpr int64_t kParallelMin = 1 << 15;  // fewer elements than this run on one thread

// The instruction sets of the uint8 lerp: the one the GMM passes pick (gmm2_cpu_isa: the best this CPU has, or
// the one FASTMIX_CPU_ISA names).
enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa uint8_isa() {
  const std::string isa = gmm2_cpu_isa();
  return isa == "avx512" ? Isa::kAvx512 : (isa == "avx2" ? Isa::kAvx2 : Isa::kBaseline);
}

// The line structure of a canonical row (see the file comment).
struct Lines {
  int64_t length;      // elements per line (the last chunk of a row without a box may be shorter)
  int64_t count;       // lines per row
  int64_t outer_size;  // line l lies at outer coordinate l % outer_size
  int64_t period;      // the inner spatial dim repeats every `period` elements of a line
  int64_t inner_div;   // elements per inner coordinate
  int outer_lo, inner_lo;  // where the outer/inner range starts in a box (y0, y1, x0, x1); the end follows it
  bool has_box;
  Isa isa;  // the uint8 lerp's instruction set
};

Lines make_lines(int64_t features, int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box) {
  if (!has_box) {
    const int64_t length = std::max<int64_t>(1, std::min(features, kChunk));
    return {length, (features + length - 1) / length, 1, length, 1, 0, 0, false, uint8_isa()};
  }
  const bool height_outer = w_div * width <= h_div;  // the inner dim's span nests in one outer step
  const int64_t outer_div = height_outer ? h_div : w_div;
  const int64_t inner_div = height_outer ? w_div : h_div;
  const int64_t outer_size = height_outer ? height : width;
  const int64_t inner_size = height_outer ? width : height;
  return {outer_div, features / outer_div, outer_size, inner_div * inner_size, inner_div,
          height_outer ? 0 : 2, height_outer ? 2 : 0, true, uint8_isa()};
}

// Element range [lo, hi) of box `box` inside each period of line l, or lo == hi when the line misses the box.
struct Run {
  int64_t lo, hi;
};

Run box_run(const int32_t* box, const Lines& g, int64_t line) {
  if (!g.has_box) return {0, 0};
  const int64_t outer = line % g.outer_size;
  if (outer < box[g.outer_lo] || outer >= box[g.outer_lo + 1]) return {0, 0};
  return {box[g.inner_lo] * g.inner_div, box[g.inner_lo + 1] * g.inner_div};
}

template <typename T>
void copy(T* dst, const T* src, int64_t n) {
  if (dst != src && n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
}

// uint8: saturate, then round half to even with the float32 magic number 1.5 * 2^23 (exact below 2^22).
inline uint8_t store_uint8(float v) {
  v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
  return static_cast<uint8_t>((v + 12582912.f) - 12582912.f);
}

#if defined(__x86_64__)
// 16 uint8 lanes of w a + v b: widen to float32, mix, saturate, convert with the default rounding mode (to nearest
// even), narrow with saturating packs. Written with SSE2 intrinsics: the compiler does not vectorise the scalar form.
inline void lerp_uint8x16(uint8_t* dst, const uint8_t* a, const uint8_t* b, __m128 w, __m128 v) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i a8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  const __m128i b8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  const __m128i a16[2] = {_mm_unpacklo_epi8(a8, zero), _mm_unpackhi_epi8(a8, zero)};
  const __m128i b16[2] = {_mm_unpacklo_epi8(b8, zero), _mm_unpackhi_epi8(b8, zero)};
  __m128i packed[2];
  for (int half = 0; half < 2; ++half) {
    __m128i rounded[2];
    for (int quarter = 0; quarter < 2; ++quarter) {
      const __m128i a32 = quarter ? _mm_unpackhi_epi16(a16[half], zero) : _mm_unpacklo_epi16(a16[half], zero);
      const __m128i b32 = quarter ? _mm_unpackhi_epi16(b16[half], zero) : _mm_unpacklo_epi16(b16[half], zero);
      __m128 mixed = _mm_add_ps(_mm_mul_ps(w, _mm_cvtepi32_ps(a32)), _mm_mul_ps(v, _mm_cvtepi32_ps(b32)));
      mixed = _mm_min_ps(_mm_max_ps(mixed, _mm_setzero_ps()), _mm_set1_ps(255.f));
      rounded[quarter] = _mm_cvtps_epi32(mixed);
    }
    packed[half] = _mm_packs_epi32(rounded[0], rounded[1]);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(packed[0], packed[1]));
}

// The AVX2 form of lerp_uint8x16 (without FMA, so the products stay rounded apart): twice the lanes per instruction.
__attribute__((target("avx2"))) void lerp_uint8_avx2(uint8_t* dst, const uint8_t* a, const uint8_t* b, int64_t n,
                                                     float w, float v) {
  const __m256 w8 = _mm256_set1_ps(w), v8 = _mm256_set1_ps(v), zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.f);
  for (int64_t k = 0; k + 16 <= n; k += 16) {
    __m256i rounded[2];
    for (int half = 0; half < 2; ++half) {
      const __m128i a8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + k + 8 * half));
      const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + k + 8 * half));
      __m256 mixed = _mm256_add_ps(_mm256_mul_ps(w8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(a8))),
                                   _mm256_mul_ps(v8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b8))));
      rounded[half] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(mixed, zero), top));
    }
    // packs works per 128-bit lane: reorder the quarters to the first half's 8 values, then the second's.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(rounded[0], rounded[1]), 0xD8);
    const __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), bytes);
  }
}

// The AVX-512 form: 16 lanes per instruction, and a saturating narrow to bytes.
__attribute__((target("avx512f"))) void lerp_uint8_avx512(uint8_t* dst, const uint8_t* a, const uint8_t* b,
                                                           int64_t n, float w, float v) {
  const __m512 w16 = _mm512_set1_ps(w), v16 = _mm512_set1_ps(v), zero = _mm512_setzero_ps();
  const __m512 top = _mm512_set1_ps(255.f);
  for (int64_t k = 0; k + 16 <= n; k += 16) {
    const __m128i a16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k));
    const __m128i b16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + k));
    // An add with an explicit rounding mode: the compiler cannot fuse it with a product into an FMA (AVX-512F
    // has FMA, and GCC contracts a plain add there), so both products stay rounded as in the reference.
    const __m512 mixed = _mm512_add_round_ps(_mm512_mul_ps(w16, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(a16))),
                                             _mm512_mul_ps(v16, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b16))),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i rounded = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(mixed, zero), top));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm512_cvtusepi32_epi8(rounded));
  }
}
#endif

// dst = w a + v b as two rounded products and a rounded sum in the accumulation type (no fused multiply-add:
// this build targets the baseline ISA), bit-exact with the reference's weighted sum.
template <typename T, typename Acc>
void lerp(T* dst, const T* a, const T* b, int64_t n, Acc w, Acc v, Isa isa) {
  if constexpr (std::is_same_v<T, uint8_t>) {
    int64_t k = 0;
#if defined(__x86_64__)
    if (isa != Isa::kBaseline) {
      (isa == Isa::kAvx512 ? lerp_uint8_avx512 : lerp_uint8_avx2)(dst, a, b, n, w, v);
      k = n / 16 * 16;
    }
    for (; k + 16 <= n; k += 16) lerp_uint8x16(dst + k, a + k, b + k, _mm_set1_ps(w), _mm_set1_ps(v));
#endif
    for (; k < n; ++k) dst[k] = store_uint8(w * static_cast<float>(a[k]) + v * static_cast<float>(b[k]));
  } else {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) dst[k] = Traits<T>::store(w * Traits<T>::load(a[k]) + v * Traits<T>::load(b[k]));
  }
}

// Elements outside the box: w a + (1 - w) b, where a zero weight skips its input (a copy, or nothing in place).
template <typename T, typename Acc>
void outside(T* dst, const T* a, const T* b, int64_t n, Acc w, Isa isa) {
  if (n <= 0) return;
  if (w == Acc(1)) {
    copy(dst, a, n);
  } else if (w == Acc(0)) {
    copy(dst, b, n);
  } else {
    lerp(dst, a, b, n, w, Acc(1) - w, isa);
  }
}

// One line of one sample: `own` and `partner` point at the line's first element in their rows.
template <typename T, typename Acc>
void mix_line(T* dst, const T* own, const T* partner, int64_t n, Acc w, Run run, const Lines& g) {
  if (run.lo >= run.hi) {
    outside(dst, own, partner, n, w, g.isa);
    return;
  }
  for (int64_t s = 0; s < n; s += g.period) {
    outside(dst + s, own + s, partner + s, run.lo, w, g.isa);
    copy(dst + s + run.lo, partner + s + run.lo, run.hi - run.lo);
    outside(dst + s + run.hi, own + s + run.hi, partner + s + run.hi, g.period - run.hi, w, g.isa);
  }
}

// Lines [l0, l1) of one sample, pointers at line l0's first element in their rows. Everything outside the box
// between two box runs is one run: one memcpy or one lerp, however short the lines (a uint8 NCHW line is 224
// bytes): the lines that miss the box, and, where a line holds one period (an image's row), the part of a line
// after its box run with the part of the next line before it (B = 32 CutMix at 224 x 224: 2 memcpy calls per box
// row instead of 3).
template <typename T, typename Acc>
void mix_block(T* dst, const T* own, const T* partner, int64_t l0, int64_t l1, int64_t features, Acc w,
               const int32_t* box, const Lines& g) {
  const int64_t origin = l0 * g.length;
  int64_t plain = origin;  // where the pending run outside the box starts
  for (int64_t l = l0; box && l < l1; ++l) {
    const Run run = box_run(box, g, l);
    if (run.lo >= run.hi) continue;
    const int64_t start = l * g.length;
    if (g.period == g.length) {
      outside(dst + (plain - origin), own + (plain - origin), partner + (plain - origin), start + run.lo - plain, w,
              g.isa);
      copy(dst + (start + run.lo - origin), partner + (start + run.lo - origin), run.hi - run.lo);
      plain = start + run.hi;
      continue;
    }
    outside(dst + (plain - origin), own + (plain - origin), partner + (plain - origin), start - plain, w, g.isa);
    mix_line(dst + (start - origin), own + (start - origin), partner + (start - origin), g.length, w, run, g);
    plain = start + g.length;
  }
  const int64_t end = std::min(l1 * g.length, features);
  outside(dst + (plain - origin), own + (plain - origin), partner + (plain - origin), end - plain, w, g.isa);
}

// Copies into `saved` (laid out like the block) what a sample with weight w and box `box` reads from its partner
// `source` in lines [l0, l1): the whole block, or for w = 1 only the box's runs. Returns whether it reads anything
// (otherwise in place leaves the sample's lines as they are); a null `saved` only asks.
template <typename T, typename Acc>
bool save_reads(T* saved, const T* source, int64_t l0, int64_t l1, int64_t features, Acc w, const int32_t* box,
                const Lines& g) {
  const int64_t origin = l0 * g.length;
  if (w != Acc(1)) {
    if (saved) copy(saved, source, std::min(l1 * g.length, features) - origin);
    return true;
  }
  bool reads = false;
  for (int64_t l = l0; box && l < l1; ++l) {
    const Run run = box_run(box, g, l);
    if (run.lo >= run.hi) continue;
    reads = true;
    if (!saved) return true;
    for (int64_t s = l * g.length - origin; s < (l + 1) * g.length - origin; s += g.period) {
      copy(saved + s + run.lo, source + s + run.lo, run.hi - run.lo);
    }
  }
  return reads;
}

// In place, x[i] may be overwritten only after every sample that reads it. The order: samples nobody still to come
// reads first (Kahn's order on the partner graph), then the cycles that remain (each of length >= 2), one after
// the other. A cycle's last member reads a copy of what it reads of the first one (for a CutMix sample only its
// box), saved before the first one is written.
struct InplaceOrder {
  std::vector<int64_t> samples;
  std::vector<int64_t> cycle_end;  // per position: where the cycle it starts ends (-1 if it starts none)
  std::vector<char> closes;        // per position: the last member of a cycle (reads the saved copy)
};

InplaceOrder inplace_order(const int64_t* partner, int64_t batch) {
  InplaceOrder o;
  std::vector<int64_t> readers(batch, 0);
  for (int64_t i = 0; i < batch; ++i) {
    if (partner[i] != i) ++readers[partner[i]];
  }
  std::vector<char> done(batch, 0);
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t j = i; !done[j] && readers[j] == 0;) {  // j is read by nobody still to come: write it
      done[j] = 1;
      o.samples.push_back(j);
      if (partner[j] == j) break;
      j = partner[j];
      --readers[j];
    }
  }
  o.cycle_end.assign(batch, -1);
  o.closes.assign(batch, 0);
  for (int64_t i = 0; i < batch; ++i) {
    if (done[i]) continue;
    const int64_t first = static_cast<int64_t>(o.samples.size());
    for (int64_t j = i; !done[j]; j = partner[j]) {
      done[j] = 1;
      o.samples.push_back(j);
    }
    const int64_t last = static_cast<int64_t>(o.samples.size()) - 1;
    o.cycle_end[first] = last;
    o.closes[last] = 1;
  }
  return o;
}

template <typename T>
void mix_pairs(T* x, int64_t x_row_stride, T* out, int64_t out_row_stride, int64_t batch, int64_t features,
               const typename Traits<T>::acc* weight, const int32_t* boxes, const int64_t* partner, const Lines& g) {
  const bool parallel = batch * features >= kParallelMin;
  const int64_t per_block = std::max<int64_t>(1, kBlockBytes / static_cast<int64_t>(sizeof(T)) / g.length);
  const int64_t blocks = (g.count + per_block - 1) / per_block;
  auto box_of = [&](int64_t i) { return boxes ? boxes + 4 * i : nullptr; };
  if (x != out) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t t = 0; t < batch * blocks; ++t) {
      const int64_t i = t / blocks, l0 = t % blocks * per_block, l1 = std::min(l0 + per_block, g.count);
      const int64_t start = l0 * g.length;
      mix_block(out + i * out_row_stride + start, x + i * x_row_stride + start, x + partner[i] * x_row_stride + start,
                l0, l1, features, weight[i], box_of(i), g);
    }
    return;
  }
  const InplaceOrder order = inplace_order(partner, batch);
#pragma omp parallel if (parallel)
  {
    std::vector<T> saved(static_cast<size_t>(per_block * g.length));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t l0 = b * per_block, l1 = std::min(l0 + per_block, g.count);
      const int64_t start = l0 * g.length;
      for (int64_t k = 0; k < batch; ++k) {
        const int64_t i = order.samples[k];
        T* own = x + i * x_row_stride + start;
        const int64_t end = order.cycle_end[k];
        if (end >= 0) {  // the cycle's last member reads this sample: save what it reads
          const int64_t last = order.samples[end];
          save_reads(saved.data(), static_cast<const T*>(own), l0, l1, features, weight[last], box_of(last), g);
        }
        if (!save_reads<T>(nullptr, nullptr, l0, l1, features, weight[i], box_of(i), g)) continue;
        const T* source = order.closes[k] ? saved.data() : x + partner[i] * x_row_stride + start;
        mix_block(own, own, source, l0, l1, features, weight[i], box_of(i), g);
      }
    }
  }
}

template <typename T>
void emulate_pair_mix(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride,
                             int64_t batch, int64_t features, uintptr_t self_boxes, uintptr_t self_weights,
                             uintptr_t seg_boxes, uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets,
                             const mix::Geometry& g) {
  using Acc = typename Traits<T>::acc;
  const Grid grid = mix::pair_mix_grid(batch, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      mix::pair_mix_thread<T>(block, thread, reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<T*>(out),
                              out_row_stride, features, reinterpret_cast<const int32_t*>(self_boxes),
                              reinterpret_cast<const Acc*>(self_weights), reinterpret_cast<const int32_t*>(seg_boxes),
                              reinterpret_cast<const Acc*>(seg_weights), reinterpret_cast<const int64_t*>(sources),
                              reinterpret_cast<const int64_t*>(offsets), g);
    }
  }
}

// dst = a own + b src, where a zero weight skips its input (a NaN there does not leak) and a weight of 1 copies.
template <typename T, typename Acc>
void weighted_sum(T* dst, const T* own, const T* src, int64_t n, Acc a, Acc b, Isa isa) {
  if (n <= 0) return;
  if (a != Acc(0) && b != Acc(0)) {
    lerp(dst, own, src, n, a, b, isa);
    return;
  }
  const T* from = a != Acc(0) ? own : src;
  const Acc w = a != Acc(0) ? a : b;
  if (w == Acc(1)) {
    copy(dst, from, n);
    return;
  }
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) dst[k] = Traits<T>::store(w * Traits<T>::load(from[k]));
}

// One line of the adjoint: every stretch between the two boxes' run ends has constant weights (0 or w_j on own
// values, 1 or 1 - w_i on the source's).
template <typename T, typename Acc>
void adjoint_line(T* dst, const T* own, const T* src, int64_t n, Acc w_own, Acc w_src, Run own_run, Run src_run,
                  const Lines& g) {
  if (own_run.lo >= own_run.hi && src_run.lo >= src_run.hi) {
    weighted_sum(dst, own, src, n, w_own, Acc(1) - w_src, g.isa);
    return;
  }
  int64_t ends[6] = {0, own_run.lo, own_run.hi, src_run.lo, src_run.hi, g.period};
  std::sort(ends, ends + 6);
  for (int64_t s = 0; s < n; s += g.period) {
    for (int k = 0; k < 5; ++k) {
      const int64_t lo = ends[k], hi = ends[k + 1];
      if (lo >= hi) continue;
      const bool in_own = lo >= own_run.lo && lo < own_run.hi, in_src = lo >= src_run.lo && lo < src_run.hi;
      weighted_sum(dst + s + lo, own + s + lo, src + s + lo, hi - lo, in_own ? Acc(0) : w_own,
                   in_src ? Acc(1) : Acc(1) - w_src, g.isa);
    }
  }
}

template <typename T>
void mix_pairs_adjoint(const T* grad, int64_t grad_row_stride, T* out, int64_t out_row_stride, int64_t batch,
                       int64_t features, const typename Traits<T>::acc* weight, const int32_t* boxes,
                       const int64_t* inverse, const Lines& g) {
  const bool parallel = batch * features >= kParallelMin;
  const int64_t per_block = std::max<int64_t>(1, kBlockBytes / static_cast<int64_t>(sizeof(T)) / g.length);
  const int64_t blocks = (g.count + per_block - 1) / per_block;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < batch * blocks; ++t) {
    const int64_t j = t / blocks, i = inverse[j], l0 = t % blocks * per_block, l1 = std::min(l0 + per_block, g.count);
    for (int64_t l = l0; l < l1; ++l) {
      const int64_t start = l * g.length, n = std::min(g.length, features - start);
      adjoint_line(out + j * out_row_stride + start, grad + j * grad_row_stride + start,
                   grad + i * grad_row_stride + start, n, weight[j], weight[i], box_run(boxes + 4 * j, g, l),
                   box_run(boxes + 4 * i, g, l), g);
    }
  }
}

template <typename T>
void emulate_mix_pairs(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                       int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t sources, uintptr_t offsets,
                       bool adjoint, const mix::Geometry& g) {
  using Acc = typename Traits<T>::acc;
  const Grid grid = mix::pair_mix_grid(batch, features);
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < grid.blocks; ++block) {
    for (int thread = 0; thread < grid.threads; ++thread) {
      mix::mix_pairs_thread<T>(block, thread, reinterpret_cast<const T*>(x), x_row_stride, reinterpret_cast<T*>(out),
                               out_row_stride, features, reinterpret_cast<const Acc*>(weight),
                               reinterpret_cast<const int32_t*>(boxes), reinterpret_cast<const int64_t*>(sources),
                               reinterpret_cast<const int64_t*>(offsets), adjoint, g);
    }
  }
}

}  // namespace

void mix_pairs_cpu(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                   int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t partner, int64_t height,
                   int64_t width, int64_t h_div, int64_t w_div, bool has_box, int dtype) {
  // The Python op checks these first (with messages naming the argument); this guard keeps a direct call from
  // reading out of bounds.
  const auto* partners = reinterpret_cast<const int64_t*>(partner);
  const auto* box = reinterpret_cast<const int32_t*>(boxes);
  for (int64_t i = 0; i < batch; ++i) {
    if (partners[i] < 0 || partners[i] >= batch) throw std::invalid_argument("mix_pairs_cpu: partner out of range");
    if (has_box && !(0 <= box[4 * i] && box[4 * i] <= box[4 * i + 1] && box[4 * i + 1] <= height &&
                     0 <= box[4 * i + 2] && box[4 * i + 2] <= box[4 * i + 3] && box[4 * i + 3] <= width)) {
      throw std::invalid_argument("mix_pairs_cpu: box outside the image");
    }
  }
  if (features == 0) return;  // nothing to mix (and an empty dim makes the spatial divisors 0)
  const Lines g = make_lines(features, height, width, h_div, w_div, has_box);
  dispatch_dtype<true>(dtype, "mix_pairs_cpu", [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename Traits<T>::acc;
    mix_pairs<T>(reinterpret_cast<T*>(x), x_row_stride, reinterpret_cast<T*>(out), out_row_stride, batch, features,
                 reinterpret_cast<const Acc*>(weight), has_box ? box : nullptr, partners, g);
  });
}

void pair_mix_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                      int64_t features, uintptr_t self_boxes, uintptr_t self_weights, uintptr_t seg_boxes,
                      uintptr_t seg_weights, uintptr_t sources, uintptr_t offsets, int64_t height, int64_t width,
                      int64_t h_div, int64_t w_div, bool has_box, int dtype) {
  const mix::Geometry g{height, width, h_div, w_div, has_box};
  dispatch_dtype<true>(dtype, "pair_mix_emulate", [&](auto tag) {
    using T = decltype(tag);
    emulate_pair_mix<T>(x, x_row_stride, out, out_row_stride, batch, features, self_boxes, self_weights,
                        seg_boxes, seg_weights, sources, offsets, g);
  });
}

void mix_pairs_adjoint_cpu(uintptr_t grad, int64_t grad_row_stride, uintptr_t out, int64_t out_row_stride,
                           int64_t batch, int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t inverse,
                           int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, int dtype) {
  if (features == 0) return;  // nothing to mix (and an empty dim makes the spatial divisors 0)
  const Lines g = make_lines(features, height, width, h_div, w_div, has_box);
  dispatch_dtype<false>(dtype, "mix_pairs_adjoint_cpu", [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename Traits<T>::acc;
    mix_pairs_adjoint<T>(reinterpret_cast<const T*>(grad), grad_row_stride, reinterpret_cast<T*>(out),
                         out_row_stride, batch, features, reinterpret_cast<const Acc*>(weight),
                         reinterpret_cast<const int32_t*>(boxes), reinterpret_cast<const int64_t*>(inverse), g);
  });
}

void mix_pairs_emulate(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, int64_t batch,
                       int64_t features, uintptr_t weight, uintptr_t boxes, uintptr_t sources, uintptr_t offsets,
                       int64_t height, int64_t width, int64_t h_div, int64_t w_div, bool has_box, bool adjoint,
                       int dtype) {
  const mix::Geometry g{height, width, h_div, w_div, has_box};
  dispatch_dtype<true>(dtype, "mix_pairs_emulate", [&](auto tag) {
    using T = decltype(tag);
    emulate_mix_pairs<T>(x, x_row_stride, out, out_row_stride, batch, features, weight, boxes, sources, offsets,
                         adjoint, g);
  });
}

}  // namespace fastmix
