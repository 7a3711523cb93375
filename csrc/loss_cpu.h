// Shared by the C++ CPU loss kernels (lumix_cpu.cpp, lamix_cpu.cpp, balancemix_cpu.cpp): the logits' and labels'
// layout, the vectorisable exp/log1p, the per-ISA row loop (the index check is common.h's). Host code only.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>
#include "common.h"

namespace fastmix {

template <typename T>
using Acc_t = typename Traits<T>::acc;

// Every function a vectorised loop calls is inlined into the ISA-specific caller (run_vectorised): a call that
// stays a call, or a callee compiled for the baseline ISA, stops the loop from vectorising.
#define FASTMIX_LOSS_INLINE inline __attribute__((always_inline))

template <typename T>
FASTMIX_LOSS_INLINE Acc_t<T> load_acc(T v) {
  if constexpr (std::is_same_v<T, Acc_t<T>>) {
    return v;
  } else {
    return Traits<T>::load(v);
  }
}

template <typename T>
FASTMIX_LOSS_INLINE T store_from_acc(Acc_t<T> v) {
  if constexpr (std::is_same_v<T, Acc_t<T>>) {
    return v;
  } else {
    return Traits<T>::store(v);
  }
}

// exp and log1p for the loss kernels' inner loops. std::exp is a scalar libm call that stops the compiler from
// vectorising a loop; these float versions are plain arithmetic (Cephes' expf and logf polynomials, within 2 ulp of
// the exact value), so loops over classes vectorise. exp_fast flushes results below 2^-125 (x < -87) to 0 and
// clamps x > 88 to exp(88); NaN propagates. The double versions are the libm functions (fp64 is for gradcheck).
FASTMIX_LOSS_INLINE float exp_fast(float x) {
  const float clamped = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const float shifted = clamped * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  const int32_t n_int = __builtin_bit_cast(int32_t, shifted) - __builtin_bit_cast(int32_t, shifter);
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const float result = p * __builtin_bit_cast(float, (n_int + 127) << 23);
  return x < -87.f ? 0.f : (x != x ? x : result);
}
FASTMIX_LOSS_INLINE double exp_fast(double x) { return std::exp(x); }

// log(1 + x) for x in [0, 1] (the softplus of a BCE): log(u) x / (u - 1) with u = 1 + x rounded, which cancels
// the rounding of u, and log(u) = log(1 + f) (+ ln 2 above sqrt 2, where u / 2 is taken) by Cephes' logf polynomial.
FASTMIX_LOSS_INLINE float log1p_unit(float x) {
  const float u = 1.f + x;
  const bool halve = u > 1.41421356f;
  const float f = (halve ? 0.5f * u : u) - 1.f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float f2 = f * f;
  const float log_u = f + f2 * (f * p - 0.5f) + (halve ? 0.693147180559945f : 0.f);
  const float d = u - 1.f;
  return d == 0.f ? x : log_u * (x / d);
}
FASTMIX_LOSS_INLINE double log1p_unit(double x) { return std::log1p(x); }

// A row's two labels given as class indices: lam on class `first` plus (1 - lam) on class `second`, at class k.
template <typename Acc>
FASTMIX_LOSS_INLINE Acc mixed_one_hot(int64_t k, int64_t first, int64_t second, Acc lam) {
  return (k == first ? lam : Acc(0)) + (k == second ? Acc(1) - lam : Acc(0));
}

// The classes those two labels name, each once (row loops visit them after the dense part); returns their count.
FASTMIX_LOSS_INLINE int labelled_classes(int64_t first, int64_t second, int64_t out[2]) {
  out[0] = first;
  out[1] = second;
  return first == second ? 1 : 2;
}

// Runs fn() with its whole call tree inlined (flatten) and compiled for the widest vector ISA this CPU has:
// AVX-512, AVX2 with FMA, or the x86-64 baseline (SSE2); the loops over classes are then as wide as the CPU allows.
#if defined(__x86_64__) && defined(__GNUC__)
template <typename Fn>
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"), flatten)) void run_avx512(Fn& fn) { fn(); }
template <typename Fn>
__attribute__((target("avx2,fma"), flatten)) void run_avx2(Fn& fn) { fn(); }
template <typename Fn>
__attribute__((flatten)) void run_baseline(Fn& fn) { fn(); }

template <typename Fn>
void run_vectorised(Fn&& fn) {
  static const int isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0);
  if (isa == 2) {
    run_avx512(fn);
  } else if (isa == 1) {
    run_avx2(fn);
  } else {
    run_baseline(fn);
  }
}
#else
template <typename Fn>
void run_vectorised(Fn&& fn) {
  fn();
}
#endif

// Below this many logits one thread runs the whole batch: OpenMP's fork costs more than it saves.
constexpr int64_t kParallelElements = 1 << 16;

// body(row, scratch) for row = 0 .. batch - 1, OpenMP over rows, each call compiled for the widest ISA
// (run_vectorised; the dispatch sits inside the parallel loop because OpenMP's outlined loop body would not inherit
// the ISA). scratch holds `classes` values of Acc, private to the thread.
template <typename Acc, typename Body>
void for_each_row(int64_t batch, int64_t classes, Body&& body) {
#pragma omp parallel if (batch * classes >= kParallelElements)
  {
    std::vector<Acc> scratch(static_cast<size_t>(classes));
#pragma omp for schedule(static)
    for (int64_t row = 0; row < batch; ++row) {
      run_vectorised([&]() __attribute__((always_inline)) { body(row, scratch.data()); });
    }
  }
}

// (B, K) logits with unit column stride; dtype is a DType code.
struct LogitArgs {
  uintptr_t data;
  int64_t row_stride, batch, classes;
  int dtype;
};

// Two label tensors of one kind: int64 class indices (B,) (index), or dense rows in the accumulation type.
struct LabelArgs {
  bool index;
  uintptr_t a;
  int64_t a_stride;
  uintptr_t b;
  int64_t b_stride;
};

// fn(std::true_type{}) for class-index labels, fn(std::false_type{}) for dense label rows.
template <typename Fn>
void dispatch_index(bool index, Fn&& fn) {
  if (index) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

}  // namespace fastmix
