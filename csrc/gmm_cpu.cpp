// The C++ CPU kernels of the two-component GMM EM (gmm.h), OpenMP-parallel:
//   gmm2_segments_cpu       validates groups and values, copies the finite values into group order (a stable
//                           parallel counting sort) and takes per-group count/min/max as it copies, once per fit;
//   gmm2_split_statistics_cpu, gmm2_race_cpu (the inits' passes), gmm2_estep_cpu and gmm2_em_cpu
//                           work on fixed blocks of one group's segment, each block's statistics reduced in block
//                           order, so results do not depend on the thread count or the schedule;
//   gmm2_kmeans_cpu         the k-means init, one group per thread (its segment hot in cache).
// The passes are explicitly vectorised (GCC/Clang vector extensions, and AVX-512 intrinsics or inline assembly where
// they save instructions); they are compiled for AVX-512 (F + DQ), AVX2+FMA and the baseline ISA and the best one
// the CPU has runs (kernel_for_isa; the FASTMIX_CPU_ISA environment variable forces one). Precision, the policy of
// every backend (docs/design.md, "Conventions every op follows"): the E-step of float32 values computes each value's
// terms (exp, the log's factors) and the lanes' running sums in float32 (FloatEStep), everything else is float64
// (the E-step of float64 values: exp accurate to 1 ulp). The lane count is fixed per ISA, so a fit is bitwise
// reproducible on one machine; across CPU kinds the sums' rounding differs in the last bits.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include "gmm.h"
#include "native.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inlined helpers: no ABI boundary is crossed

#define FASTMIX_INLINE inline __attribute__((always_inline))

namespace fastmix {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr double kLn2 = 0.6931471805599453;
constexpr double kLog2E = 1.4426950408889634;
constexpr float kInfinityFloat = std::numeric_limits<float>::infinity();

// The kernel built for the instruction set gmm2_cpu_isa() picks: name_avx512, name_avx2 (x86-64 only) or
// name_baseline, instantiated with the template arguments given.
template <typename Kernel>
Kernel kernel_for_isa(Kernel avx512, Kernel avx2, Kernel baseline) {
  const std::string isa = gmm2_cpu_isa();
  return isa == "avx512" ? avx512 : isa == "avx2" ? avx2 : baseline;
}

#if defined(__x86_64__)
#define FASTMIX_KERNEL_FOR_THIS_CPU(name, ...) \
  kernel_for_isa(name##_avx512<__VA_ARGS__>, name##_avx2<__VA_ARGS__>, name##_baseline<__VA_ARGS__>)
#else
#define FASTMIX_KERNEL_FOR_THIS_CPU(name, ...) name##_baseline<__VA_ARGS__>
#endif

// ---------------------------------------------------------------------------------------------------------------
// Group order: the values of group g at sorted[offsets[g]:offsets[g + 1]].

constexpr int64_t kChunk = 1 << 17;
constexpr int64_t kMaxBufferDoubles = int64_t(1) << 22;

// Fixed chunks of [0, n) for per-chunk buffers of `width` entries, at most kMaxBufferDoubles in all.
struct Chunks {
  int64_t size;
  int64_t count;
  Chunks(int64_t n, int64_t width) {
    const int64_t max_chunks = std::max<int64_t>(1, kMaxBufferDoubles / std::max<int64_t>(width, 1));
    size = std::max<int64_t>(kChunk, (n + max_chunks - 1) / max_chunks);
    count = std::max<int64_t>(1, (n + size - 1) / size);
  }
  int64_t begin(int64_t c) const { return c * size; }
  int64_t end(int64_t c, int64_t n) const { return std::min(n, (c + 1) * size); }  // hoist out of loops
};

template <typename T>
FASTMIX_INLINE double as_double(T v) {
  return static_cast<double>(Traits<T>::load(v));
}

// A software prefetch kPrefetchBytes ahead of a sequential read. The hardware prefetchers stop at every 4 KB page;
// without this, passes over arrays beyond the second-level TLB's reach ran at half speed (measured, 1 thread: one
// E-step over 9.6M float32 values 22.7 -> 12.7 ms; over 1.6M values, 2.3 ms either way). A prefetch never faults,
// so reading ahead past an array's end is harmless.
constexpr int64_t kPrefetchBytes = 4096;

template <typename T>
FASTMIX_INLINE void prefetch_ahead(const T* p) {
  __builtin_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes);
}

// What pass 1 of the grouping met: a group outside [0, n_groups), a value that is not finite (in a valid group).
struct Flaws {
  bool bad_groups = false, not_finite = false;
};

// One value's key, checked exactly: its group, or n_groups (the omitted values' key) for a group out of range or a
// value that is not finite, either noted in flaws.
template <typename T, typename Group>
FASTMIX_INLINE int64_t checked_key(T value, Group group, int64_t n_groups, Flaws& flaws) {
  const int64_t g = static_cast<int64_t>(group);
  if (static_cast<uint64_t>(g) >= static_cast<uint64_t>(n_groups)) {
    flaws.bad_groups = true;
    return n_groups;
  }
  if (!gmm::is_finite(as_double(value))) {
    flaws.not_finite = true;
    return n_groups;
  }
  return g;
}

// Adds the number of each key among keys[0:n] to tallies: kTallies tables of `stride` counts used in turn, so
// that the increments of equal neighbouring keys (group ids in group order) do not wait for each other.
constexpr int kTallies = 4;

template <typename Key>
FASTMIX_INLINE void tally(const Key* keys, int64_t n, int64_t stride, int64_t* tallies) {
  int64_t i = 0;
  for (; i + kTallies <= n; i += kTallies) {
    for (int t = 0; t < kTallies; ++t) ++tallies[t * stride + keys[i + t]];
  }
  for (; i < n; ++i) ++tallies[keys[i]];
}

// Pass 1 over values[0:n]: checked_key of each value into keys, one by one (the baseline ISA's), then the keys
// tallied.
template <typename T, typename Group, typename Key>
void checked_keys_baseline(const T* values, const Group* groups, int64_t n, int64_t n_groups, Key* keys,
                           int64_t* tallies, Flaws& flaws) {
  for (int64_t i = 0; i < n; ++i) {
    prefetch_ahead(groups + i);
    prefetch_ahead(values + i);
    keys[i] = static_cast<Key>(checked_key(values[i], groups[i], n_groups, flaws));
  }
  tally(keys, n, n_groups + 1, tallies);
}

// Pass 1 over values[0:n] with one ISA's vectors (Isa: Avx512Keys or Avx2Keys): checked_key of kWidth values at a
// time into keys, each kWidth keys tallied at once (the tally's scalar work overlaps the loads); the last
// n % kWidth as the baseline does.
template <typename Isa, typename T, typename Group, typename Key>
inline void checked_keys_vectors(const T* values, const Group* groups, int64_t n, int64_t n_groups, Key* keys,
                                 int64_t* tallies, Flaws& flaws) {
  typename Isa::Mask outside_any = Isa::none(), not_finite_any = Isa::none();
  int64_t i = 0;
  for (; i + Isa::kWidth <= n; i += Isa::kWidth) {
    prefetch_ahead(groups + i);
    prefetch_ahead(values + i);
    const typename Isa::Mask not_finite = Isa::not_finite(values + i);
    const typename Isa::Mask outside = Isa::keys(groups + i, n_groups, not_finite, keys + i);
    outside_any = Isa::either(outside_any, outside);
    not_finite_any = Isa::either(not_finite_any, Isa::but(not_finite, outside));
    tally(keys + i, Isa::kWidth, n_groups + 1, tallies);
  }
  flaws.bad_groups |= Isa::any(outside_any);
  flaws.not_finite |= Isa::any(not_finite_any);
  checked_keys_baseline(values + i, groups + i, n - i, n_groups, keys + i, tallies, flaws);
}

#if defined(__x86_64__)
// Not always_inline: checked_keys_vectors, compiled for the baseline ISA, calls them; the kernels below are
// flattened, which inlines all of it into code of their ISA.
#define FASTMIX_AVX512 __attribute__((target("avx512f"))) inline
#define FASTMIX_AVX2 __attribute__((target("avx2"))) inline

// AVX-512, 16 values at a time, lane masks in a mask register: not_finite (magnitude bits above the largest finite
// value's: NaN and +-inf), and keys: the lanes whose group is outside [0, n_groups) (an unsigned compare), the
// keys written (the groups narrowed in one conversion; n_groups in the lanes of either flaw).
struct Avx512Keys {
  using Mask = __mmask16;
  static constexpr int kWidth = 16;
  FASTMIX_AVX512 static Mask none() { return 0; }
  FASTMIX_AVX512 static Mask either(Mask a, Mask b) { return a | b; }
  FASTMIX_AVX512 static Mask but(Mask a, Mask b) { return a & ~b; }
  FASTMIX_AVX512 static bool any(Mask a) { return a != 0; }

  FASTMIX_AVX512 static Mask not_finite(const float* values) {
    const __m512i magnitude = _mm512_and_si512(_mm512_loadu_si512(values), _mm512_set1_epi32(INT32_MAX));
    return _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f7fffff));
  }

  FASTMIX_AVX512 static Mask not_finite(const double* values) {
    const __m512i sign_off = _mm512_set1_epi64(INT64_MAX), largest = _mm512_set1_epi64(0x7fefffffffffffff);
    const __mmask8 low = _mm512_cmpgt_epi64_mask(_mm512_and_si512(_mm512_loadu_si512(values), sign_off), largest);
    const __mmask8 high =
        _mm512_cmpgt_epi64_mask(_mm512_and_si512(_mm512_loadu_si512(values + 8), sign_off), largest);
    return static_cast<Mask>(low | (high << 8));
  }

  template <typename Key>
  FASTMIX_AVX512 static Mask keys(const int32_t* groups, int64_t n_groups, Mask not_finite, Key* keys) {
    const __m512i limit = _mm512_set1_epi32(static_cast<int32_t>(n_groups)), ids = _mm512_loadu_si512(groups);
    const Mask outside = _mm512_cmpge_epu32_mask(ids, limit);
    const __m512i own = _mm512_mask_mov_epi32(ids, outside | not_finite, limit);
    if constexpr (sizeof(Key) == 1) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(keys), _mm512_cvtepi32_epi8(own));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys), _mm512_cvtepi32_epi16(own));
    }
    return outside;
  }

  template <typename Key>
  FASTMIX_AVX512 static Mask keys(const int64_t* groups, int64_t n_groups, Mask not_finite, Key* keys) {
    const __m512i limit = _mm512_set1_epi64(n_groups);
    Mask outside = 0;
    for (int half = 0; half < 2; ++half) {
      const __m512i ids = _mm512_loadu_si512(groups + 8 * half);
      const __mmask8 mine = _mm512_cmpge_epu64_mask(ids, limit);
      const __m512i own = _mm512_mask_mov_epi64(ids, mine | static_cast<__mmask8>(not_finite >> (8 * half)), limit);
      if constexpr (sizeof(Key) == 1) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(keys + 8 * half), _mm512_cvtepi64_epi8(own));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(keys + 8 * half), _mm512_cvtepi64_epi16(own));
      }
      outside |= static_cast<Mask>(mine << (8 * half));
    }
    return outside;
  }
};

// AVX2, 8 values at a time, lane masks as all-ones 32-bit lanes: as Avx512Keys, with unsigned compares as signed
// ones of sign-flipped operands, and 64-bit lanes narrowed to 32-bit ones in order (low_halves).
struct Avx2Keys {
  using Mask = __m256i;
  static constexpr int kWidth = 8;
  FASTMIX_AVX2 static Mask none() { return _mm256_setzero_si256(); }
  FASTMIX_AVX2 static Mask either(Mask a, Mask b) { return _mm256_or_si256(a, b); }
  FASTMIX_AVX2 static Mask but(Mask a, Mask b) { return _mm256_andnot_si256(b, a); }
  FASTMIX_AVX2 static bool any(Mask a) { return !_mm256_testz_si256(a, a); }

  // The low 32 bits of the 64-bit lanes of a, then of b.
  FASTMIX_AVX2 static __m256i low_halves(__m256i a, __m256i b) {
    const __m256i interleaved = _mm256_blend_epi32(a, _mm256_slli_epi64(b, 32), 0xaa);  // a0 b0 a1 b1 ...
    return _mm256_permutevar8x32_epi32(interleaved, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  }

  FASTMIX_AVX2 static Mask not_finite(const float* values) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values));
    return _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(INT32_MAX)), _mm256_set1_epi32(0x7f7fffff));
  }

  FASTMIX_AVX2 static Mask not_finite(const double* values) {
    const __m256i sign_off = _mm256_set1_epi64x(INT64_MAX), largest = _mm256_set1_epi64x(0x7fefffffffffffff);
    __m256i halves[2];
    for (int half = 0; half < 2; ++half) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + 4 * half));
      halves[half] = _mm256_cmpgt_epi64(_mm256_and_si256(bits, sign_off), largest);
    }
    return low_halves(halves[0], halves[1]);
  }

  // ids (8 x 32 bits, or truncated from 64, `inside` computed before the truncation) to keys.
  template <typename Key>
  FASTMIX_AVX2 static Mask store_keys(__m256i ids, __m256i inside, int64_t n_groups, Mask not_finite, Key* keys) {
    const Mask outside = _mm256_andnot_si256(inside, _mm256_set1_epi32(-1));
    const __m256i own = _mm256_blendv_epi8(ids, _mm256_set1_epi32(static_cast<int32_t>(n_groups)),
                                           _mm256_or_si256(outside, not_finite));
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(own, own), 0x08);  // 8 x 16 bits, low half
    if constexpr (sizeof(Key) == 1) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(keys), _mm_packus_epi16(_mm256_castsi256_si128(words),
                                                                          _mm256_castsi256_si128(words)));
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(keys), _mm256_castsi256_si128(words));
    }
    return outside;
  }

  template <typename Key>
  FASTMIX_AVX2 static Mask keys(const int32_t* groups, int64_t n_groups, Mask not_finite, Key* keys) {
    const __m256i sign = _mm256_set1_epi32(INT32_MIN);
    const __m256i ids = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(groups));
    const __m256i inside = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32(static_cast<int32_t>(n_groups)), sign),
                                              _mm256_xor_si256(ids, sign));
    return store_keys(ids, inside, n_groups, not_finite, keys);
  }

  template <typename Key>
  FASTMIX_AVX2 static Mask keys(const int64_t* groups, int64_t n_groups, Mask not_finite, Key* keys) {
    const __m256i sign = _mm256_set1_epi64x(INT64_MIN), limit = _mm256_xor_si256(_mm256_set1_epi64x(n_groups), sign);
    __m256i ids[2], inside[2];
    for (int half = 0; half < 2; ++half) {
      ids[half] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(groups + 4 * half));
      inside[half] = _mm256_cmpgt_epi64(limit, _mm256_xor_si256(ids[half], sign));
    }
    return store_keys(low_halves(ids[0], ids[1]), low_halves(inside[0], inside[1]), n_groups, not_finite, keys);
  }
};

template <typename T, typename Group, typename Key>
__attribute__((target("avx512f"), flatten)) void checked_keys_avx512(const T* values, const Group* groups, int64_t n,
                                                            int64_t n_groups, Key* keys, int64_t* tallies,
                                                            Flaws& flaws) {
  checked_keys_vectors<Avx512Keys>(values, groups, n, n_groups, keys, tallies, flaws);
}

template <typename T, typename Group, typename Key>
__attribute__((target("avx2"), flatten)) void checked_keys_avx2(const T* values, const Group* groups, int64_t n,
                                                                int64_t n_groups, Key* keys, int64_t* tallies,
                                                                Flaws& flaws) {
  checked_keys_vectors<Avx2Keys>(values, groups, n, n_groups, keys, tallies, flaws);
}
#undef FASTMIX_AVX512
#undef FASTMIX_AVX2
#endif

// The pass 1 kernel for this CPU.
template <typename T, typename Group, typename Key>
using KeysFn = void (*)(const T*, const Group*, int64_t, int64_t, Key*, int64_t*, Flaws&);

template <typename T, typename Group, typename Key>
KeysFn<T, Group, Key> keys_for_this_cpu() {
  return FASTMIX_KERNEL_FOR_THIS_CPU(checked_keys, T, Group, Key);
}

// Copies from[0:m] (m >= 1) to `to` and returns their min and max in range[0:2]: one vector of kBytes at a time
// (vector extensions; as wide as the ISA's, or GCC leaves the selects scalar) with running extremes per lane (a
// loop-carried min does not vectorise without fast-math), then over the lanes; the last values one by one. Pass 2's
// copy of a run out of its chunk's buffer.
template <int kBytes, typename T>
FASTMIX_INLINE void copy_with_range(const T* __restrict from, int64_t m, T* __restrict to, T* range) {
  constexpr int kLanes = kBytes / sizeof(T);
  typedef T V __attribute__((vector_size(kBytes)));
  V low = V{} + from[0], high = low;
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes) {
    V v;
    std::memcpy(&v, from + i, sizeof v);
    std::memcpy(to + i, &v, sizeof v);
    low = v < low ? v : low;
    high = v > high ? v : high;
  }
  T lowest = from[0], highest = from[0];
  for (int l = 0; l < kLanes; ++l) {
    lowest = std::min(lowest, low[l]);
    highest = std::max(highest, high[l]);
  }
  for (; i < m; ++i) {
    to[i] = from[i];
    lowest = std::min(lowest, from[i]);
    highest = std::max(highest, from[i]);
  }
  range[0] = lowest;
  range[1] = highest;
}

// copy_with_range compiled per ISA: 16-, 32- or 64-byte vectors; the best for this CPU.
template <typename T>
using CopyFn = void (*)(const T*, int64_t, T*, T*);

template <typename T>
void copy_with_range_baseline(const T* from, int64_t m, T* to, T* range) {
  copy_with_range<16>(from, m, to, range);
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2"))) void copy_with_range_avx2(const T* from, int64_t m, T* to, T* range) {
  copy_with_range<32>(from, m, to, range);
}

template <typename T>
__attribute__((target("avx512f"))) void copy_with_range_avx512(const T* from, int64_t m, T* to, T* range) {
  copy_with_range<64>(from, m, to, range);
}
#endif

template <typename T>
CopyFn<T> copy_for_this_cpu() {
  return FASTMIX_KERNEL_FOR_THIS_CPU(copy_with_range, T);
}

// Values per step of pass 2's scatter: one cache line of float32 values.
constexpr int64_t kScatterStep = 16;

// Validation, the stable counting sort and per-group count, min and max: pass 1 checks each chunk's values and
// writes each value's key (its group, or n_groups for an omitted non-finite value) in the narrowest type that
// holds n_groups (Key: uint8_t or uint16_t), vectorised where the ISA allows (checked_keys_vectors), and counts the
// keys per chunk, so pass 2 reads 1 or 2 bytes per value instead of the 4- or 8-byte group (Group: int32_t or
// int64_t; with more groups, Key = int64_t: both passes take each key from the group and the value, one by one);
// pass 2 sorts each chunk in a cache-resident buffer, branch-free (the omitted values go after the chunk's finite
// ones), and copies its runs to their places, taking each run's min and max as it goes (a direct scatter into 2G
// far-apart streams is several times slower: a TLB miss per value).
template <typename T, typename Group, typename Key>
void sort_by_group(const T* values, const Group* groups, int64_t n, int64_t n_groups, bool omit_nonfinite,
                   T* sorted, int64_t* offsets, double* count, double* lo, double* hi) {
  constexpr bool kCompact = !std::is_same_v<Key, int64_t>;
  const int64_t stride = n_groups + 1;  // counts per chunk: the groups', then the omitted values'
  const Chunks chunks(n, stride);
  std::vector<int64_t> counts(chunks.count * stride, 0);
  std::vector<Flaws> flaws(chunks.count);
  std::unique_ptr<Key[]> keys(kCompact ? new Key[n] : nullptr);
  const KeysFn<T, Group, Key> checked_keys_here = kCompact ? keys_for_this_cpu<T, Group, Key>() : nullptr;
#pragma omp parallel
  {
    std::vector<int64_t> tallies(kCompact ? kTallies * stride : 0);
#pragma omp for schedule(dynamic)
    for (int64_t c = 0; c < chunks.count; ++c) {
      int64_t* own = counts.data() + c * stride;
      const int64_t begin = chunks.begin(c), end = chunks.end(c, n);
      if constexpr (kCompact) {
        std::fill(tallies.begin(), tallies.end(), 0);
        checked_keys_here(values + begin, groups + begin, end - begin, n_groups, keys.get() + begin, tallies.data(),
                          flaws[c]);
        for (int64_t t = 0; t < kTallies; ++t) {
          for (int64_t g = 0; g < stride; ++g) own[g] += tallies[t * stride + g];
        }
      } else {
        for (int64_t i = begin; i < end; ++i) {
          prefetch_ahead(groups + i);
          prefetch_ahead(values + i);
          ++own[checked_key(values[i], groups[i], n_groups, flaws[c])];
        }
      }
    }
  }
  // The groups first, as the reference checks them (check_data), then the values.
  if (std::any_of(flaws.begin(), flaws.end(), [](const Flaws& f) { return f.bad_groups; })) {
    throw std::invalid_argument("groups holds indices outside [0, n_groups=" + std::to_string(n_groups) + ")");
  }
  if (!omit_nonfinite && std::any_of(flaws.begin(), flaws.end(), [](const Flaws& f) { return f.not_finite; })) {
    throw std::invalid_argument("values contains NaN or infinity; pass nan_policy='omit' to ignore those values");
  }
  std::vector<int64_t> run_starts(chunks.count * n_groups);  // where chunk c's run of group g goes
  std::vector<T> ranges(2 * chunks.count * n_groups);  // the min and max of that run, taken as it is copied
  const CopyFn<T> copy_run = copy_for_this_cpu<T>();
  // A cache line between the runs in a chunk's buffer, where that adds at most 1/8 to it: runs that start at the
  // same offsets modulo 4 KB (groups of equal counts) made the scatter's stores collide in the L1 cache (measured,
  // the scatter alone, 131,072 values in 32 groups of equal counts: 5.2 -> 0.66 ns per value; 118,287 x 80:
  // 1.03 -> 0.69).
  constexpr int64_t kLineValues = 64 / sizeof(T);
  const int64_t gap = stride * kLineValues <= chunks.size / 8 ? kLineValues : 0;
  offsets[0] = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    int64_t end = offsets[g];
    for (int64_t c = 0; c < chunks.count; ++c) {
      run_starts[c * n_groups + g] = end;
      end += counts[c * stride + g];
    }
    offsets[g + 1] = end;
  }
#pragma omp parallel
  {
    std::vector<T> local(chunks.size + stride * gap);
    std::vector<int64_t> cursor(stride);
#pragma omp for schedule(dynamic)
    for (int64_t c = 0; c < chunks.count; ++c) {
      const int64_t* own = counts.data() + c * stride;
      int64_t* __restrict next = cursor.data();
      T* __restrict buffer = local.data();
      int64_t at = 0;
      for (int64_t g = 0; g < stride; at += own[g] + gap, ++g) next[g] = at;
      const int64_t end = chunks.end(c, n);
      if constexpr (kCompact) {
        const Key* __restrict own_keys = keys.get();
        int64_t i = chunks.begin(c);
        for (; i + kScatterStep <= end; i += kScatterStep) {  // a prefetch per step, not per value
          prefetch_ahead(values + i);
          prefetch_ahead(own_keys + i);
          for (int64_t j = i; j < i + kScatterStep; ++j) buffer[next[own_keys[j]]++] = values[j];
        }
        for (; i < end; ++i) buffer[next[own_keys[i]]++] = values[i];
      } else {
        for (int64_t i = chunks.begin(c); i < end; ++i) {
          prefetch_ahead(values + i);
          prefetch_ahead(groups + i);
          buffer[next[gmm::is_finite(as_double(values[i])) ? groups[i] : n_groups]++] = values[i];
        }
      }
      at = 0;
      for (int64_t g = 0; g < n_groups; at += own[g] + gap, ++g) {
        const int64_t run = c * n_groups + g;
        if (own[g] > 0) copy_run(buffer + at, own[g], sorted + run_starts[run], &ranges[2 * run]);
      }
    }
  }
  std::fill(sorted + offsets[n_groups], sorted + n, T{});  // the omitted values' places: defined, never read
  for (int64_t g = 0; g < n_groups; ++g) {
    count[g] = static_cast<double>(offsets[g + 1] - offsets[g]);
    lo[g] = count[g] > 0 ? kInfinity : 0.0;
    hi[g] = count[g] > 0 ? -kInfinity : 0.0;
    for (int64_t c = 0; c < chunks.count; ++c) {
      const int64_t run = c * n_groups + g;
      if (counts[c * stride + g] == 0) continue;
      lo[g] = std::min(lo[g], as_double(ranges[2 * run]));
      hi[g] = std::max(hi[g], as_double(ranges[2 * run + 1]));
    }
  }
}

// Asks for transparent huge pages over the 2 MB-aligned part of a fresh output buffer (where the kernel honours
// such advice): its first touch then costs one page fault per 2 MB instead of one per 4 KB (~4 ms of 30 for the
// 38 MB of values at 118,287 x 80). Advice only: nothing changes where it is not taken.
void advise_huge_pages(void* buffer, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(1) << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(buffer) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(buffer) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)buffer;
  (void)bytes;
#endif
}

// Fixed blocks of the group segments: every statistic is summed per block, then per group in block order.
constexpr int64_t kBlock = 1 << 14;

struct Block {
  int64_t group, begin, end;
};

std::vector<Block> blocks_of(const int64_t* offsets, int64_t n_groups) {
  std::vector<Block> blocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    for (int64_t begin = offsets[g]; begin < offsets[g + 1]; begin += kBlock) {
      blocks.push_back({g, begin, std::min(begin + kBlock, offsets[g + 1])});
    }
  }
  return blocks;
}

// body(block, own) fills `width` doubles per block, in parallel; out[g * width + s] = the sum over g's blocks.
template <typename Body>
void per_group_sum(const std::vector<Block>& blocks, int64_t n_groups, int64_t width, double* out, Body body) {
  const int64_t n_blocks = static_cast<int64_t>(blocks.size());
  std::vector<double> partial(n_blocks * width);
#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < n_blocks; ++b) body(blocks[b], partial.data() + b * width);
  std::fill(out, out + n_groups * width, 0.0);
  for (int64_t b = 0; b < n_blocks; ++b) {
    double* own = out + blocks[b].group * width;
    for (int64_t s = 0; s < width; ++s) own[s] += partial[b * width + s];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The block passes, vectorised (GCC/Clang vector extensions): L values of one group at a time, float64 throughout,
// the last partial vector zero-padded and masked: the inits' hard split and the E-step
// (gmm::accumulate). Every pass normalises as gmm::normalised does, so the inits' split decisions are the
// reference's bit for bit.

template <int L>
struct Lanes {
  typedef double D __attribute__((vector_size(8 * L)));
  typedef int64_t I __attribute__((vector_size(8 * L)));
  typedef int32_t I32 __attribute__((vector_size(4 * L)));
};

template <typename D>
FASTMIX_INLINE D splat(double x) {
  return D{} + x;
}

// One group's constants for the block passes.
struct GroupConstants {
  double lo, inv_scale;
  double split, shift[2];                                // the inits' hard split (fastmix/methods/gmm.py)
  double half_precision[2], offset[2], mean[2];         // E-step, see EStepSums
  double origin;                                         // float32 E-step (FloatEStep): a float32 value
  int accumulated;                                       // of FloatEStep: a component
  bool with_totals;
};

enum class Pass { kSplit, kLloyd, kEStep };

template <int L, typename T>
FASTMIX_INLINE typename Lanes<L>::D load_lanes(const T* values, int64_t available) {
  typename Lanes<L>::D x{};
  if (available >= L) {
    if constexpr (std::is_same_v<T, float>) {
      for (int l = 0; l < L; ++l) x[l] = values[l];  // one vcvtps2pd (GCC splits __builtin_convertvector in two)
      return x;
    } else {
      std::memcpy(&x, values, sizeof x);
      return x;
    }
  }
  for (int l = 0; l < available; ++l) x[l] = static_cast<double>(values[l]);
  return x;
}

// sums.add<masked>(x, keep) over the block's normalised values x = (v - lo) * (1 / scale) (gmm::normalised).
// sums.flush() runs every Sums::kVectorsPerFlush vectors, outside the hot loop: a call in the hot loop (the E-step's
// log) would make the compiler store every accumulator to memory on every iteration.
template <int L, typename T, typename Sums>
FASTMIX_INLINE void run_lanes(const T* values, int64_t n, const GroupConstants& c, Sums& sums) {
  using D = typename Lanes<L>::D;
  auto normalise = [&c](D v) __attribute__((always_inline)) { return (v - c.lo) * c.inv_scale; };
  const int64_t whole = n - n % L;
  int64_t i = 0;
  while (i < whole) {
    const int64_t stop = std::min(whole, i + Sums::kVectorsPerFlush * L);
    for (; i < stop; i += L) {
      prefetch_ahead(values + i);
      sums.template add<false>(normalise(load_lanes<L>(values + i, L)), D{});
    }
    sums.flush();
  }
  if (i < n) {
    D keep{};  // 1 in the lanes holding values, 0 in the padding (multiplied in: GCC 12 miscompiles mask selects)
    for (int l = 0; l < n - i; ++l) keep[l] = 1.0;
    sums.template add<true>(normalise(load_lanes<L>(values + i, n - i)), keep);
  }
}

// The init's hard split: x >= split goes to component 1, the rest to 0, stats around the shifts.
template <int L>
struct SplitSums {
  using D = typename Lanes<L>::D;
  using I = typename Lanes<L>::I;
  static constexpr int64_t kVectorsPerFlush = int64_t(1) << 40;
  const GroupConstants c;  // a copy: the compiler need not reload it after every store to the sums
  D resp[2] = {}, shifted[2] = {}, squared[2] = {};

  template <bool kMasked>
  FASTMIX_INLINE void add(D x, D keep) {
    const I upper = x >= c.split;
    D r[2] = {upper ? splat<D>(0.0) : splat<D>(1.0), upper ? splat<D>(1.0) : splat<D>(0.0)};
    for (int k = 0; k < 2; ++k) {
      if constexpr (kMasked) r[k] *= keep;
      const D d = x - c.shift[k];
      const D rd = r[k] * d;
      resp[k] += r[k];
      shifted[k] += rd;
      squared[k] += rd * d;
    }
  }

  FASTMIX_INLINE void flush() {}

  FASTMIX_INLINE void store(double* stats) const { store_lanes(nullptr, resp, shifted, squared, stats); }

  static FASTMIX_INLINE void store_lanes(const D* log_p, const D* resp, const D* shifted, const D* squared,
                                         double* stats) {
    for (int s = 0; s < gmm::kStats; ++s) stats[s] = 0.0;
    for (int l = 0; l < L; ++l) {
      if (log_p != nullptr) stats[0] += (*log_p)[l];
      for (int k = 0; k < 2; ++k) {
        stats[1 + k] += resp[k][l];
        stats[3 + k] += shifted[k][l];
        stats[5 + k] += squared[k][l];
      }
    }
  }
};

// The k-means init's Lloyd steps need of a hard split only each side's count and mean: per side the count and the
// sum of x, masked adds (the select as a bit mask: GCC compiles a select here to branches); store: out[1 + k] = the
// count, out[3 + k] = sum (x - shift_k) = sum x - count shift_k, as SplitSums lays them out.
template <int L>
struct LloydSums {
  using D = typename Lanes<L>::D;
  using I = typename Lanes<L>::I;
  static constexpr int64_t kVectorsPerFlush = int64_t(1) << 40;
  const GroupConstants c;
  D count[2] = {}, sum[2] = {};

  template <bool kMasked>
  FASTMIX_INLINE void add(D x, D keep) {
    D upper = reinterpret_cast<D>((x >= c.split) & reinterpret_cast<I>(splat<D>(1.0)));
    D lower = 1.0 - upper;
    if constexpr (kMasked) {
      upper *= keep;
      lower *= keep;
    }
    count[0] += lower;
    count[1] += upper;
    sum[0] += lower * x;
    sum[1] += upper * x;
  }

  FASTMIX_INLINE void flush() {}

  FASTMIX_INLINE void store(double* stats) const {
    for (int s = 0; s < gmm::kStats; ++s) stats[s] = 0.0;
    for (int k = 0; k < 2; ++k) {
      double total = 0.0;
      for (int l = 0; l < L; ++l) {
        stats[1 + k] += count[k][l];
        total += sum[k][l];
      }
      stats[3 + k] = total - stats[1 + k] * c.shift[k];
    }
  }
};

// exp(a) for a <= 0, within 1 ulp for a >= -708 (below, the result is clamped at exp(-708) ~ 3e-308, which adds
// nothing next to the other component's 1): a = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite, two-part ln2), e^r by the
// degree-11 polynomial interpolating it at the Chebyshev nodes of that interval (relative error < 2e-17, computed
// in 40-digit arithmetic) evaluated as even + r odd in r^2 (two 5-step chains: the loop is latency-bound), 2^n put
// in the exponent bits. Branch-free and IEEE-only (the 1.5 * 2^52 + 1023 shifter rounds
// to the nearest n without fast-math).
template <int L>
FASTMIX_INLINE typename Lanes<L>::D exp_nonpositive(typename Lanes<L>::D a) {
  using D = typename Lanes<L>::D;
  using I = typename Lanes<L>::I;
  constexpr double kShifter = 0x1.8p52 + 1023;  // adding it rounds to an integer n and puts n + 1023 in the low bits
  a = a > -708.0 ? a : splat<D>(-708.0);
  D n = a * 1.4426950408889634 + kShifter;  // log2(e)
  const I n_bits = reinterpret_cast<I>(n);  // the low bits hold n + 1023 (the exponent bias)
  n -= kShifter;
  const D r = (a - n * 0.6931471803691238) - n * 1.9082149292705877e-10;  // ln2 = hi + lo, n * hi exact
  const D r2 = r * r;
  D even = splat<D>(2.763263963904103e-07), odd = splat<D>(2.5110037605963777e-08);
  even = even * r2 + 2.4801485482328494e-05;
  odd = odd * r2 + 2.755724091857897e-06;
  even = even * r2 + 0.0013888888952314775;
  odd = odd * r2 + 0.00019841269890047113;
  even = even * r2 + 0.0416666666664881;
  odd = odd * r2 + 0.008333333333319601;
  even = even * r2 + 0.5000000000000019;
  odd = odd * r2 + 0.1666666666666668;
  even = even * r2 + 1.0;
  odd = odd * r2 + 1.0;
  const D p = even + odd * r;
  const I two_to_n = n_bits << 52;  // n + 1023 in the exponent field (the shifter's higher bits shift out)
  return p * reinterpret_cast<D>(two_to_n);
}

// gmm::accumulate: log w_k N(x) = offset_k - d_k^2 / (2 var_k) with d_k = x - mu_k (gmm::Prepared's z^2 / 2); d_k
// and d_k^2 also serve the sums around the means. log p(x) = top + log(1 + e) with e = exp(-|w1 - w0|): the tops
// are summed, the factors (1 + e) in [1, 2] multiplied, and the product's log taken every kVectorsPerFlush vectors
// (2^256 cannot overflow): one log per 256 values per lane instead of one per value.
template <int L>
struct EStepSums {
  using D = typename Lanes<L>::D;
  using I = typename Lanes<L>::I;
  static constexpr int64_t kVectorsPerFlush = 256;
  const GroupConstants c;
  D log_p = {}, resp[2] = {}, shifted[2] = {}, squared[2] = {};
  D product = splat<D>(1.0);

  // One vector: from each component's log-weight w_k, d_k = x - mu_k and d_k^2, adds the responsibilities r_k
  // (BalanceMix eq. 7), r_k d_k, r_k d_k^2, the larger log-weight and the factor 1 + e with e = exp(-|w1 - w0|)
  // (-|.| by the sign bit: -0 for +-0); lanes with keep = 0 add nothing when kMasked.
  template <bool kMasked>
  FASTMIX_INLINE void add(D x, D keep) {
    D d[2], squares[2], w[2];
    for (int k = 0; k < 2; ++k) {
      d[k] = x - c.mean[k];
      squares[k] = d[k] * d[k];
      w[k] = c.offset[k] - c.half_precision[k] * squares[k];
    }
    const D one = splat<D>(1.0);
    const D gap = w[1] - w[0];
    const I one_on_top = gap > 0;
    const D e = exp_nonpositive<L>(reinterpret_cast<D>(reinterpret_cast<I>(gap) | reinterpret_cast<I>(-D{})));
    const D sum = one + e;
    const D r_top = one / sum;
    const D r_other = e * r_top;
    D r[2] = {one_on_top ? r_other : r_top, one_on_top ? r_top : r_other};
    D top = one_on_top ? w[1] : w[0];
    D factor = sum;
    if constexpr (kMasked) {
      r[0] *= keep;
      r[1] *= keep;
      top *= keep;
      factor = factor * keep + (one - keep);
    }
    log_p += top;
    product *= factor;
    for (int k = 0; k < 2; ++k) {
      resp[k] += r[k];
      shifted[k] += r[k] * d[k];
      squared[k] += r[k] * squares[k];
    }
  }

  FASTMIX_INLINE void flush() {
    for (int l = 0; l < L; ++l) log_p[l] += std::log(product[l]);
    product = splat<D>(1.0);
  }

  FASTMIX_INLINE void store(double* stats) {
    flush();
    SplitSums<L>::store_lanes(&log_p, resp, shifted, squared, stats);
  }
};

// The E-step of float32 values, 2L float32 lanes (twice the float64 lanes of the same ISA), under the precision
// policy every backend shares: each value's arithmetic (normalisation, exp, the log's factors) and the lanes'
// running sums are float32; every kVectorsPerFlush vectors the running sums are added into float64 lane sums and
// the product of the factors (1 + e) is renormalised to [1, 2) with its exponent kept as an integer, so one log
// per block at the end is exact to float64 rounding. Everything per group is float64. Per value it computes only
// what one component's statistics and the log-likelihood need (FloatEStep); the other component's statistics
// follow from the group's totals (complete_float_estep).
template <int M>
struct FloatLanes {
  typedef float F __attribute__((vector_size(4 * M)));
  typedef int32_t I __attribute__((vector_size(4 * M)));
};

// 2^a for a in [-64, 0] (clamped_minus_distance) in float32, within 2 ulp, K vectors at a time, the statements
// interleaved (see FloatEStep::add): a = n + r, n an integer, |r| <= 1/2 (exact), 2^r by the degree-6 polynomial
// interpolating it at the 7 Chebyshev nodes of [-1/2, 1/2] (relative error < 2.6e-9, below float32's rounding; one
// FMA fewer than the degree-7 Taylor polynomial, whose truncation error was 50 times smaller than needed), 2^n put in
// the exponent bits. With AVX-512 (16 lanes), r by vreduceps (a - its nearest integer, one uop; vrndscaleps for n
// was two on port 0, and an E-step ran ~8% slower), n = a - r, and 2^n applied by vscalefps (inline
// assembly: an intrinsic would need the callers compiled for AVX-512).
template <int M, int K>
FASTMIX_INLINE void exp2_nonpositive_float(typename FloatLanes<M>::F (&a)[K], typename FloatLanes<M>::F (&out)[K]) {
  using F = typename FloatLanes<M>::F;
  using I = typename FloatLanes<M>::I;
#if defined(__x86_64__)
  constexpr bool kScale = M == 16;
#else
  constexpr bool kScale = false;
#endif
  constexpr float kShifter = 0x1.8p23f + 127;  // adding it rounds to an integer n and puts n + 127 in the low bits
  constexpr float kCoefficients[] = {0.0013400428177566465f, 0.00961805667854805f, 0.05550327226670292f,
                                     0.2402265092228862f, 0.6931472067028327f, 1.0f};
  F n[K], p[K];
  I n_bits[K];
  if constexpr (kScale) {
    for (int j = 0; j < K; ++j) {
      F r;
      asm("vreduceps $8, %1, %0" : "=v"(r) : "v"(a[j]));  // a - nearest integer, no exceptions (exact)
      n[j] = a[j] - r;
      a[j] = r;
    }
  } else {
    for (int j = 0; j < K; ++j) n[j] = a[j] + kShifter;
    for (int j = 0; j < K; ++j) n_bits[j] = reinterpret_cast<I>(n[j]);  // the low bits hold n + 127 (the bias)
    for (int j = 0; j < K; ++j) n[j] -= kShifter;
    for (int j = 0; j < K; ++j) a[j] -= n[j];  // r
  }
  for (int j = 0; j < K; ++j) p[j] = F{} + 0.00015461444691130264f;
  for (float coefficient : kCoefficients) {
    for (int j = 0; j < K; ++j) p[j] = p[j] * a[j] + coefficient;
  }
  if constexpr (kScale) {
    for (int j = 0; j < K; ++j) asm("vscalefps %2, %1, %0" : "=v"(out[j]) : "v"(p[j]), "v"(n[j]));
  } else {
    for (int j = 0; j < K; ++j) {  // n + 127 in the exponent field (the shifter's higher bits shift out)
      out[j] = p[j] * reinterpret_cast<F>(n_bits[j] << 23);
    }
  }
}

// -min(|g|, 64) (exp2_nonpositive_float's range; 2^-64 ~ 5e-20 adds nothing next to the other component's 1):
// with AVX-512 one vrangeps (AVX512DQ: the smaller magnitude, its sign set), else the sign bit set and a signed
// integer min of the bit patterns (for negative floats their order reverses that of the values). The clamp keeps
// the bottom responsibility 2^-|g| / (1 + e) >= 2^-65 and its products with d and d^2 out of float32's subnormal
// range (below 2^-126), whose arithmetic costs a microcode assist per operation on x86: at the clamp of 126 (the
// exponent's whole range) a fit's E-steps at 118,287 x 80 took 55 ms instead of 41 (measured).
template <int M>
FASTMIX_INLINE typename FloatLanes<M>::F clamped_minus_distance(typename FloatLanes<M>::F g) {
  using F = typename FloatLanes<M>::F;
  using I = typename FloatLanes<M>::I;
#if defined(__x86_64__)
  if constexpr (M == 16) {
    const F limit = F{} + 64.0f;
    F out;
    asm("vrangeps $14, %2, %1, %0" : "=v"(out) : "v"(g), "v"(limit));
    return out;
  }
#endif
  constexpr int32_t kLowest = -1031798784;  // the bits of -64.0f as int32
  const I bits = reinterpret_cast<I>(g) | reinterpret_cast<I>(-F{});
  return reinterpret_cast<F>(bits < kLowest ? bits : I{} + kLowest);
}

// 1 / x for x in [1, 2] in float32: a division, or with AVX-512 (16 lanes) the 14-bit reciprocal estimate and one
// Newton step (relative error < 2^-23 before the last rounding; faster than the division per E-step). The estimate
// is inline assembly: an intrinsic would need this helper's callers compiled for AVX-512 too.
template <int M>
FASTMIX_INLINE typename FloatLanes<M>::F reciprocal_one_to_two(typename FloatLanes<M>::F x) {
#if defined(__x86_64__)
  if constexpr (M == 16) {
    typename FloatLanes<M>::F y;
    asm("vrcp14ps %1, %0" : "=v"(y) : "v"(x));
    return y * (2.0f - x * y);
  }
#endif
  return 1.0f / x;
}

// The float32 constants of FloatEStep for one group. The totals are taken around origin, a float32 near the group's
// values (so v - origin is exact or nearly, whatever the values' range). Each value's d_k = x - mean_k is taken as
// (v - own origin) inv_scale_f32 - shift_k, the own origin the raw value at the accumulated component's mean rounded
// to float32 and shift_k = mean_k - the own origin's x (small for k = accumulated): for the values near that mean,
// which carry its sums, v - own origin is exact and the product is rounded relative to d itself, with or without
// FMA. (Rounding x = (v - origin) inv_scale first, then subtracting the mean, carried x's rounding, up to 2^-25 x,
// into the sums the other component's are derived from, where no FMA fused the two.) complete_float_estep moves the
// sums from the float32 mean they are taken around to the exact one.
FASTMIX_INLINE double origin_of(const GroupConstants& c) { return (c.origin - c.lo) * c.inv_scale; }

FASTMIX_INLINE float own_origin(const GroupConstants& c) {
  const float at_mean = static_cast<float>(c.lo + c.mean[c.accumulated] / c.inv_scale);
  return std::isfinite(at_mean) ? at_mean : static_cast<float>(c.origin);
}

FASTMIX_INLINE double own_origin_x(const GroupConstants& c) { return (own_origin(c) - c.lo) * c.inv_scale; }

// inv_scale rounded to float32 over inv_scale: (v - own origin) inv_scale_f32 is this times the exact x - own
// origin's x.
FASTMIX_INLINE double scale_ratio(const GroupConstants& c) {
  const double ratio = static_cast<float>(c.inv_scale) / c.inv_scale;
  return std::isfinite(ratio) && ratio > 0.0 ? ratio : 1.0;
}

// FloatEStep's shift_k, in its scale: (mean_k - the own origin's x) ratio, rounded to float32.
FASTMIX_INLINE float float_shift(const GroupConstants& c, int k) {
  return static_cast<float>((c.mean[k] - own_origin_x(c)) * scale_ratio(c));
}

// One block's float32 E-step, in log2 units (the log-weights scaled by log2 e: exp becomes 2^, whose range
// reduction is exact). Per value: d_k = x - mean_k (as above: (v - own origin) inv_scale_f32 - shift_k), the gap
// g = w_other - w_accumulated between the log-weights
// (w_k = offset_k - half_precision_k d_k^2, BalanceMix eq. 7), e = 2^-|g|, the responsibilities 1 / (1 + e) (the
// component on top) and e / (1 + e) (the other). It sums the accumulated component's r, r d, r d^2, the factors
// 1 + e and the bottom responsibility times |g|: with log p(x) = sum_k r_k (w_k - log r_k) (as r_k = w_k N_k / p),
// sum log p = sum_k (offset_k sum r_k - half_precision_k sum r_k d_k^2) + sum [log(1 + e) + r_bottom |g| ln 2],
// whose float32 terms are the bounded entropies (at most ln 2 each), the rest float64 (complete_float_estep).
// out: [0] sum log(1 + e) + r_bottom |g| ln 2 (natural units), [1] sum r, [2] sum r d, [3] sum r d^2 (around the
// float32 mean: the own origin's x + shift_0), with c.with_totals [4] sum (v - origin), [5] sum (v - origin)^2 in
// float64 (raw units, around c.origin), [6] 0.
template <int M>
struct FloatEStep {
  using F = typename FloatLanes<M>::F;
  using I = typename FloatLanes<M>::I;
  static constexpr int64_t kVectorsPerFlush = 64;  // a product of 64 factors in [1, 2) stays below 2^64
  static constexpr int kSums = 4;
  static constexpr int kInterleave = M == 16 ? 4 : 2;  // AVX2's 16 registers: K = 4 spilled, 70% slower
  float origin, inv_scale, shift[2], half_precision[2], gap_offset;  // [0] the accumulated component, [1] the other
  F uncertainty{}, resp{}, shifted{}, squared{};  // uncertainty: sum r_bottom (-|g|)
  F product = F{} + 1.0f;
  I product_exponent{};
  using D = typename Lanes<M / 2>::D;
  D total[kSums][2] = {};  // lanes [0, M/2) and [M/2, M); in memory: registers would push the loop's constants out

  explicit FloatEStep(const GroupConstants& c)
      : origin(own_origin(c)), inv_scale(static_cast<float>(c.inv_scale)) {
    const int order[2] = {c.accumulated, 1 - c.accumulated};
    for (int j = 0; j < 2; ++j) {
      shift[j] = float_shift(c, order[j]);
      half_precision[j] = static_cast<float>(c.half_precision[order[j]] * kLog2E);
    }
    gap_offset = static_cast<float>((c.offset[order[1]] - c.offset[order[0]]) * kLog2E);
  }

  // K vectors at a time, each statement for all K before the next: one value's chain of ~25 dependent operations
  // is long, and the out-of-order core overlaps independent chains only as far as its scheduler reaches (with
  // AVX-512, K = 2 measured ~8% faster than K = 1, K = 4 ~7% faster than K = 2; see kInterleave). Lanes with
  // keep = 0 add nothing when kMasked (K = 1).
  template <int K, bool kMasked>
  FASTMIX_INLINE void add(const F (&v)[K], F keep) {
    F x[K], d[K], d_other[K], square[K], gap[K], minus_distance[K], e[K], factor[K], r_top[K], r[K], entropy[K];
    for (int j = 0; j < K; ++j) x[j] = (v[j] - origin) * inv_scale;  // around the own origin
    for (int j = 0; j < K; ++j) d[j] = x[j] - shift[0];
    for (int j = 0; j < K; ++j) d_other[j] = x[j] - shift[1];
    for (int j = 0; j < K; ++j) square[j] = d[j] * d[j];
    for (int j = 0; j < K; ++j) {
      gap[j] = (gap_offset + half_precision[0] * square[j]) - half_precision[1] * (d_other[j] * d_other[j]);
    }
    for (int j = 0; j < K; ++j) minus_distance[j] = clamped_minus_distance<M>(gap[j]);
    F a[K];  // exp2_nonpositive_float's scratch
    std::copy(minus_distance, minus_distance + K, a);
    exp2_nonpositive_float<M, K>(a, e);
    for (int j = 0; j < K; ++j) factor[j] = 1.0f + e[j];
    for (int j = 0; j < K; ++j) r_top[j] = reciprocal_one_to_two<M>(factor[j]);
    for (int j = 0; j < K; ++j) e[j] *= r_top[j];  // the bottom responsibility
    for (int j = 0; j < K; ++j) r[j] = gap[j] > 0 ? e[j] : r_top[j];
    for (int j = 0; j < K; ++j) entropy[j] = e[j] * minus_distance[j];
    if constexpr (kMasked) {
      r[0] *= keep;
      entropy[0] *= keep;
      factor[0] = factor[0] * keep + (1.0f - keep);
    }
    for (int j = 0; j < K; ++j) {
      uncertainty += entropy[j];
      product *= factor[j];
      resp += r[j];
      shifted += r[j] * d[j];
      squared += r[j] * square[j];
    }
  }

  FASTMIX_INLINE void flush() {
    const I bits = reinterpret_cast<I>(product);
    product_exponent += (bits >> 23) - 127;
    product = reinterpret_cast<F>((bits & 0x007fffff) | (int32_t(127) << 23));
    F* sums[kSums] = {&uncertainty, &resp, &shifted, &squared};
    for (int s = 0; s < kSums; ++s) {
      for (int h = 0; h < 2; ++h) {  // each half one conversion and one add (a lane at a time was ~8% of a pass)
        D half;
        for (int l = 0; l < M / 2; ++l) half[l] = (*sums[s])[h * (M / 2) + l];
        total[s][h] += half;
      }
      *sums[s] = F{};
    }
  }

  FASTMIX_INLINE void store(double* out) {
    flush();
    double product_of_lanes = 1.0;  // M factors in [1, 2): exact to float64 rounding, one log per block
    for (int s = 0; s < gmm::kStats; ++s) out[s] = 0.0;
    for (int l = 0; l < M; ++l) {
      product_of_lanes *= product[l];
      out[0] += product_exponent[l] - total[0][l / (M / 2)][l % (M / 2)];
      for (int s = 1; s < kSums; ++s) out[s] += total[s][l / (M / 2)][l % (M / 2)];
    }
    out[0] = out[0] * kLn2 + std::log(product_of_lanes);
  }
};

// out[4] = sum (v - origin), out[5] = sum (v - origin)^2 over a block, float64 (each float32 difference exact in
// float64), two vectors of M / 2 lanes at a time, each into its own sums (one chain of adds was latency-bound).
template <int M>
FASTMIX_INLINE void float_totals(const float* values, int64_t n, double origin, double* out) {
  using D = typename Lanes<M / 2>::D;
  D sum[2] = {}, squares[2] = {};
  const int64_t whole = n - n % M;
  for (int64_t i = 0; i < whole; i += M) {
    for (int h = 0; h < 2; ++h) {
      D v;
      for (int l = 0; l < M / 2; ++l) v[l] = values[i + h * (M / 2) + l];  // one vcvtps2pd
      const D d = v - origin;
      sum[h] += d;
      squares[h] += d * d;
    }
  }
  out[4] = out[5] = 0.0;
  for (int l = 0; l < M / 2; ++l) {
    out[4] += sum[0][l] + sum[1][l];
    out[5] += squares[0][l] + squares[1][l];
  }
  for (int64_t i = whole; i < n; ++i) {
    const double d = static_cast<double>(values[i]) - origin;
    out[4] += d;
    out[5] += d * d;
  }
}

// run_lanes for float32 values kept in float32: sums.add<K, masked>(v, keep) over the raw values, K vectors of M
// at a time (then one at a time, the last one masked).
template <int M, typename Sums>
FASTMIX_INLINE void run_float_lanes(const float* values, int64_t n, Sums& sums) {
  using F = typename FloatLanes<M>::F;
  constexpr int K = Sums::kInterleave;
  static_assert(Sums::kVectorsPerFlush % K == 0);
  const int64_t whole = n - n % (K * M);
  int64_t i = 0;
  while (i < whole) {
    const int64_t stop = std::min(whole, i + Sums::kVectorsPerFlush * M);
    for (; i < stop; i += K * M) {
      F v[K];
      for (int j = 0; j < K; ++j) {
        prefetch_ahead(values + i + j * M);
        std::memcpy(&v[j], values + i + j * M, sizeof v[j]);
      }
      sums.template add<K, false>(v, F{});
    }
    sums.flush();
  }
  for (; i + M <= n; i += M) {
    F v[1];
    std::memcpy(&v[0], values + i, sizeof v[0]);
    sums.template add<1, false>(v, F{});
  }
  if (i < n) {
    F v[1] = {}, keep{};
    for (int l = 0; l < n - i; ++l) {
      v[0][l] = values[i + l];
      keep[l] = 1.0f;
    }
    sums.template add<1, true>(v, keep);
  }
}

// The k-means init's passes compare the raw values with a threshold: the smallest T v whose normalised value is
// >= the split (gmm::normalised is monotone in v for a positive scale), found by bisection over the Ts in order,
// so each value lands on the side of the float64 comparison. NaN when no T qualifies (then no value is above).
// The Lloyd steps' zone passes (LloydBand) compare the values' order keys with such thresholds' keys.
template <typename T>
using OrderKey = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

template <typename T>
FASTMIX_INLINE OrderKey<T> order_of(T v) {  // monotone in v over the non-NaN values, branch-free
  using U = OrderKey<T>;
  constexpr int kSignBit = 8 * sizeof(U) - 1;
  U bits;
  std::memcpy(&bits, &v, sizeof bits);
  const U negative = static_cast<U>(static_cast<std::make_signed_t<U>>(bits) >> kSignBit);  // all ones if v < 0
  return bits ^ (negative | (U(1) << kSignBit));
}

template <typename T>
FASTMIX_INLINE T value_of_order(OrderKey<T> key) {
  using U = OrderKey<T>;
  constexpr U kSign = U(1) << (8 * sizeof(U) - 1);
  const U bits = (key & kSign) ? (key & ~kSign) : ~key;
  T v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// The key of the smallest T whose normalised value is >= split, or one past +inf's key when none is.
template <typename T>
OrderKey<T> threshold_order(const GroupConstants& c, double split) {
  using U = OrderKey<T>;
  auto above = [&](U key) { return gmm::normalised(as_double(value_of_order<T>(key)), c.lo, c.inv_scale) >= split; };
  U low = order_of(-std::numeric_limits<T>::infinity()), high = order_of(std::numeric_limits<T>::infinity());
  if (!above(high)) return high + 1;
  while (low < high) {  // the smallest key in [low, high] above the split
    const U middle = low + (high - low) / 2;
    if (above(middle)) {
      high = middle;
    } else {
      low = middle + 1;
    }
  }
  return low;
}

// The T of a threshold's order key, or NaN past +inf's key (no value reaches it).
template <typename T>
T value_of_threshold(OrderKey<T> key) {
  return key > order_of(std::numeric_limits<T>::infinity()) ? std::numeric_limits<T>::quiet_NaN()
                                                            : value_of_order<T>(key);
}

// The smallest T whose normalised value is >= split (v >= it exactly when normalised(v) >= split), or NaN.
template <typename T>
T threshold_value(const GroupConstants& c, double split) {
  return value_of_threshold<T>(threshold_order<T>(c, split));
}

float float_threshold(const GroupConstants& c) { return threshold_value<float>(c, c.split); }

// out as LloydSums<L> stores it: per side the count and the sum of (x - shift_k), the values' float64 sum per side
// normalised after summing (x = (v - lo) / scale is affine): two vectors of M / 2 float64 lanes at a time (each
// float32 value converted exactly, compared with the threshold converted exactly).
template <int M>
FASTMIX_INLINE void float_split_pass(const float* values, int64_t n, const GroupConstants& c, double* out) {
  using D = typename Lanes<M / 2>::D;
  using I64 = typename Lanes<M / 2>::I;
  const float threshold = float_threshold(c);
  int64_t above = 0;
  double sum[2] = {0.0, 0.0};
  const int64_t whole = n - n % M;
  D sums[2][2] = {};  // [side][half]
  I64 lanes_above[2] = {};
  for (int64_t i = 0; i < whole; i += M) {
    prefetch_ahead(values + i);
    for (int h = 0; h < 2; ++h) {
      D v;
      for (int l = 0; l < M / 2; ++l) v[l] = values[i + h * (M / 2) + l];  // one vcvtps2pd
      const I64 upper = v >= static_cast<double>(threshold);
      const D v_upper = reinterpret_cast<D>(reinterpret_cast<I64>(v) & upper);
      lanes_above[h] -= upper;
      sums[1][h] += v_upper;
      sums[0][h] += v - v_upper;  // exact: v - v or v - 0
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < M / 2; ++l) {
      above += lanes_above[h][l];
      sum[0] += sums[0][h][l];
      sum[1] += sums[1][h][l];
    }
  }
  for (int64_t i = whole; i < n; ++i) {
    const bool upper = values[i] >= threshold;
    above += upper;
    sum[upper] += values[i];
  }
  for (int s = 0; s < gmm::kStats; ++s) out[s] = 0.0;
  const double count[2] = {static_cast<double>(n - above), static_cast<double>(above)};
  for (int k = 0; k < 2; ++k) {
    out[1 + k] = count[k];
    out[3 + k] = (sum[k] - count[k] * c.lo) * c.inv_scale - count[k] * c.shift[k];
  }
}

// The median bisection's passes each decide several of its bits, from the counts at the 2^bits - 1 grid points
// inside the interval left: kFirstGridBits in the group's first pass (which brings its values from memory, slow
// enough to hide 7 compares per vector), kGridBits in each later one (from L2; measured at 118,287 x 80, 1 thread:
// 8 one-bit passes 5.1 ms, passes of 3 + 2 + 2 + 1 bits 4.4 ms). count_above: above[j] = the count of values >=
// thresholds[j] (threshold_value of a split, so each count is a full count pass's) for j < K, N raw values at a
// time (lane counts compared as masks: the vector extensions' generic form).
constexpr int kFirstGridBits = 3;
constexpr int kGridBits = 2;
constexpr int kMaxGridThresholds = (1 << kFirstGridBits) - 1;

template <int N, int K, typename T>
FASTMIX_INLINE void count_above(const T* values, int64_t n, const T* thresholds, int64_t* above) {
  typedef T V __attribute__((vector_size(sizeof(T) * N)));
  using I = decltype(V{} >= V{});
  constexpr int64_t kVectorsPerFlush = int64_t(1) << 24;  // int32 lane counts cannot overflow
  V threshold[K];
  for (int j = 0; j < K; ++j) {
    threshold[j] = V{} + thresholds[j];
    above[j] = 0;
  }
  const int64_t whole = n - n % N;
  for (int64_t i = 0; i < whole;) {
    const int64_t stop = std::min(whole, i + kVectorsPerFlush * N);
    I lanes_above[K] = {};
    for (; i < stop; i += N) {
      prefetch_ahead(values + i);
      V v;
      std::memcpy(&v, values + i, sizeof v);
      for (int j = 0; j < K; ++j) lanes_above[j] -= v >= threshold[j];
    }
    for (int j = 0; j < K; ++j) {
      for (int l = 0; l < N; ++l) above[j] += lanes_above[j][l];
    }
  }
  for (int64_t i = whole; i < n; ++i) {
    for (int j = 0; j < K; ++j) above[j] += values[i] >= thresholds[j];
  }
}

template <int M>
FASTMIX_INLINE void run_float_estep(const float* values, int64_t n, const GroupConstants& c, double* out) {
  FloatEStep<M> sums(c);
  run_float_lanes<M>(values, n, sums);
  sums.store(out);
  if (c.with_totals) float_totals<M>(values, n, c.origin, out);
}

template <int L, typename T>
FASTMIX_INLINE void run_pass(Pass pass, const T* values, int64_t n, const GroupConstants& c, double* out) {
  if constexpr (std::is_same_v<T, float>) {  // twice the lanes in float32: FloatEStep, float_split_pass
    if (pass == Pass::kEStep) return run_float_estep<2 * L>(values, n, c, out);
    const bool monotone = c.inv_scale > 0.0 && c.inv_scale < kInfinity;  // always, for a usable normalisation
    if (pass == Pass::kLloyd && monotone) return float_split_pass<2 * L>(values, n, c, out);
  }
  if (pass == Pass::kSplit) {
    SplitSums<L> sums{c};
    run_lanes<L>(values, n, c, sums);
    sums.store(out);
  } else if (pass == Pass::kLloyd) {
    LloydSums<L> sums{c};
    run_lanes<L>(values, n, c, sums);
    sums.store(out);
  } else {
    EStepSums<L> sums{c};
    run_lanes<L>(values, n, c, sums);
    sums.store(out);
  }
}

// The passes compiled per ISA: 2 lanes (SSE2 / NEON), 4 (AVX2 + FMA), 8 (AVX-512).
template <typename T>
using PassFn = void (*)(Pass, const T*, int64_t, const GroupConstants&, double*);

template <typename T>
void run_pass_baseline(Pass pass, const T* values, int64_t n, const GroupConstants& c, double* out) {
  run_pass<2>(pass, values, n, c, out);
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma"))) void run_pass_avx2(Pass pass, const T* values, int64_t n,
                                                       const GroupConstants& c, double* out) {
  run_pass<4>(pass, values, n, c, out);
}

// SplitSums with AVX-512: the same per-value terms, each side's sums added under the comparison's mask (SplitSums
// multiplies them by 0 or 1 and adds the responsibilities), the counts the masks' popcounts; 8 float64 lanes at a
// time (float32 values: 16 at a time, converted in two halves).
template <typename T>
__attribute__((target("avx512f"))) void split_sums_avx512(const T* values, int64_t n, const GroupConstants& c,
                                                          double* stats) {
  const __m512d lo = _mm512_set1_pd(c.lo), inv_scale = _mm512_set1_pd(c.inv_scale), split = _mm512_set1_pd(c.split);
  const __m512d shift[2] = {_mm512_set1_pd(c.shift[0]), _mm512_set1_pd(c.shift[1])};
  __m512d shifted[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()}, squared[2] = {shifted[0], shifted[1]};
  int64_t above = 0;
  auto add = [&](__m512d v) __attribute__((always_inline, target("avx512f"))) {
    const __m512d x = _mm512_mul_pd(_mm512_sub_pd(v, lo), inv_scale);
    const __mmask8 upper = _mm512_cmp_pd_mask(x, split, _CMP_GE_OQ);
    const __mmask8 side[2] = {static_cast<__mmask8>(~upper), upper};
    above += __builtin_popcount(upper);
    for (int k = 0; k < 2; ++k) {
      const __m512d d = _mm512_sub_pd(x, shift[k]);
      shifted[k] = _mm512_mask_add_pd(shifted[k], side[k], shifted[k], d);
      squared[k] = _mm512_mask3_fmadd_pd(d, d, squared[k], side[k]);
    }
  };
  constexpr int64_t kLanes = 64 / sizeof(T);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    prefetch_ahead(values + i);
    if constexpr (sizeof(T) == 4) {
      const __m512 v = _mm512_loadu_ps(values + i);
      add(_mm512_cvtps_pd(_mm512_castps512_ps256(v)));
      add(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    } else {
      add(_mm512_loadu_pd(values + i));
    }
  }
  double tail[gmm::kStats];
  run_pass<8>(Pass::kSplit, values + i, n - i, c, tail);
  stats[0] = 0.0;
  stats[1] = static_cast<double>(i - above) + tail[1];
  stats[2] = static_cast<double>(above) + tail[2];
  for (int k = 0; k < 2; ++k) {
    stats[3 + k] = _mm512_reduce_add_pd(shifted[k]) + tail[3 + k];
    stats[5 + k] = _mm512_reduce_add_pd(squared[k]) + tail[5 + k];
  }
}

template <typename T>
__attribute__((target("avx512f"))) void run_pass_avx512(Pass pass, const T* values, int64_t n,
                                                        const GroupConstants& c, double* out) {
  if (pass == Pass::kSplit) return split_sums_avx512(values, n, c, out);
  run_pass<8>(pass, values, n, c, out);
}
#endif

template <typename T>
PassFn<T> pass_for_this_cpu() {
  return FASTMIX_KERNEL_FOR_THIS_CPU(run_pass, T);
}

// A Lloyd step's pass over a group or its band (LloydBand): the values in three zones by their order keys k
// (zone 0: k < from, zone 1: from <= k < to, zone 2: k >= to; from <= to), per zone the count (count[z]) and the sum
// of v - lo (sum[z], float64), zone 1's values copied out in order to kept (room for n + kBandSlack values; kept may
// be `values` itself: each value is written at or before where it was read). Branch-free; with AVX-512, a vector
// of keys at a time whose zone-1 lanes are compressed into one full-width store (hence the slack), each zone's sum
// added under its mask.
constexpr int64_t kBandSlack = 16;

template <typename T>
using ZoneFn = void (*)(const T*, int64_t, double, OrderKey<T>, OrderKey<T>, T*, int64_t*, double*);

// The portable form: L float64 lanes (each value converted exactly) compared with the zone ends' values (the same
// zones as their keys: order_of and the values' order agree but for -0 and +0, which normalise alike).
template <int L, typename T>
FASTMIX_INLINE void zone_pass(const T* values, int64_t n, double lo, OrderKey<T> from, OrderKey<T> to, T* kept,
                              int64_t* count, double* sum) {
  using D = typename Lanes<L>::D;
  using I = typename Lanes<L>::I;
  const double low = value_of_threshold<T>(from), high = value_of_threshold<T>(to);
  I counts[3] = {};
  D sums[3] = {};
  int64_t kept_count = 0;
  for (int64_t i = 0; i < n; i += L) {
    prefetch_ahead(values + i);
    const int64_t available = std::min<int64_t>(L, n - i);
    const D v = load_lanes<L>(values + i, available);
    I padding{};  // all ones in the lanes past the end
    for (int l = static_cast<int>(available); l < L; ++l) padding[l] = -1;
    const I lower = ~(v >= low) & ~padding, upper = (v >= high) & ~padding, inside = ~(lower | upper) & ~padding;
    const D d = v - lo;
    const I zone[3] = {lower, inside, upper};
    for (int z = 0; z < 3; ++z) {
      counts[z] -= zone[z];
      sums[z] += reinterpret_cast<D>(reinterpret_cast<I>(d) & zone[z]);
    }
    for (int l = 0; l < available; ++l) {
      kept[kept_count] = values[i + l];
      kept_count -= inside[l];
    }
  }
  for (int z = 0; z < 3; ++z) {
    count[z] = 0;
    sum[z] = 0.0;
    for (int l = 0; l < L; ++l) {
      count[z] += counts[z][l];
      sum[z] += sums[z][l];
    }
  }
}

template <typename T>
void zone_pass_baseline(const T* values, int64_t n, double lo, OrderKey<T> from, OrderKey<T> to, T* kept,
                        int64_t* count, double* sum) {
  zone_pass<2>(values, n, lo, from, to, kept, count, sum);
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma"))) void zone_pass_avx2(const T* values, int64_t n, double lo, OrderKey<T> from,
                                                       OrderKey<T> to, T* kept, int64_t* count, double* sum) {
  zone_pass<4>(values, n, lo, from, to, kept, count, sum);
}

__attribute__((target("avx512f"))) FASTMIX_INLINE void add_zones(__m512d* sums, __m512d d, unsigned lower,
                                                                unsigned inside, unsigned upper) {
  sums[0] = _mm512_mask_add_pd(sums[0], static_cast<__mmask8>(lower), sums[0], d);
  sums[1] = _mm512_mask_add_pd(sums[1], static_cast<__mmask8>(inside), sums[1], d);
  sums[2] = _mm512_mask_add_pd(sums[2], static_cast<__mmask8>(upper), sums[2], d);
}

template <typename T>
__attribute__((target("avx512f"))) void zone_pass_avx512(const T* values, int64_t n, double lo, OrderKey<T> from,
                                                         OrderKey<T> to, T* kept, int64_t* count, double* sum) {
  int64_t counts[3] = {};
  __m512d sums[3] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
  const __m512d shift = _mm512_set1_pd(lo);
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    const __m512i sign = _mm512_set1_epi32(INT32_MIN);
    const __m512i low = _mm512_set1_epi32(static_cast<int32_t>(from));
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(to));
    for (; i + 16 <= n; i += 16) {
      prefetch_ahead(values + i);
      const __m512i bits = _mm512_loadu_si512(values + i);
      const __m512i key = _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32(bits, 31), sign));
      const __mmask16 lower = _mm512_cmplt_epu32_mask(key, low);
      const __mmask16 upper = _mm512_cmpge_epu32_mask(key, high);
      const __mmask16 inside = static_cast<__mmask16>(~(lower | upper));
      _mm512_storeu_si512(kept + counts[1], _mm512_maskz_compress_epi32(inside, bits));
      counts[0] += __builtin_popcount(lower);
      counts[1] += __builtin_popcount(inside);
      const __m512 v = _mm512_castsi512_ps(bits);
      add_zones(sums, _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), shift), lower, inside, upper);
      add_zones(sums, _mm512_sub_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))),
                                    shift), lower >> 8, inside >> 8, upper >> 8);
    }
  } else {
    const __m512i sign = _mm512_set1_epi64(INT64_MIN);
    const __m512i low = _mm512_set1_epi64(static_cast<int64_t>(from));
    const __m512i high = _mm512_set1_epi64(static_cast<int64_t>(to));
    for (; i + 8 <= n; i += 8) {
      prefetch_ahead(values + i);
      const __m512i bits = _mm512_loadu_si512(values + i);
      const __m512i key = _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi64(bits, 63), sign));
      const __mmask8 lower = _mm512_cmplt_epu64_mask(key, low);
      const __mmask8 upper = _mm512_cmpge_epu64_mask(key, high);
      const __mmask8 inside = static_cast<__mmask8>(~(lower | upper));
      _mm512_storeu_si512(kept + counts[1], _mm512_maskz_compress_epi64(inside, bits));
      counts[0] += __builtin_popcount(lower);
      counts[1] += __builtin_popcount(inside);
      add_zones(sums, _mm512_sub_pd(_mm512_castsi512_pd(bits), shift), lower, inside, upper);
    }
  }
  int64_t tail_count[3];
  double tail_sum[3];
  zone_pass<1>(values + i, n - i, lo, from, to, kept + counts[1], tail_count, tail_sum);
  for (int z = 0; z < 3; ++z) {
    count[z] = (z == 2 ? i - counts[0] - counts[1] : counts[z]) + tail_count[z];
    sum[z] = _mm512_reduce_add_pd(sums[z]) + tail_sum[z];
  }
}
#endif

template <typename T>
ZoneFn<T> zone_pass_for_this_cpu() {
  return FASTMIX_KERNEL_FOR_THIS_CPU(zone_pass, T);
}

// count_above per ISA over 2^bits - 1 thresholds: a 16- or 32-byte vector of values at a time, or with AVX-512 a
// 64-byte vector compared into a mask per threshold, added to the lane counts under that mask.
template <typename T>
using CountFn = void (*)(const T*, int64_t, int, const T*, int64_t*);

template <int N, typename T>
FASTMIX_INLINE void count_above_thresholds(const T* values, int64_t n, int bits, const T* thresholds,
                                           int64_t* above) {
  static_assert(kFirstGridBits <= 3 && kGridBits <= 3);
  if (bits == 1) return count_above<N, 1>(values, n, thresholds, above);
  if (bits == 2) return count_above<N, 3>(values, n, thresholds, above);
  count_above<N, 7>(values, n, thresholds, above);
}

template <typename T>
void count_above_baseline(const T* values, int64_t n, int bits, const T* thresholds, int64_t* above) {
  count_above_thresholds<16 / sizeof(T)>(values, n, bits, thresholds, above);
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma"))) void count_above_avx2(const T* values, int64_t n, int bits, const T* thresholds,
                                                          int64_t* above) {
  count_above_thresholds<32 / sizeof(T)>(values, n, bits, thresholds, above);
}

template <int K, typename T>
__attribute__((target("avx512f"))) FASTMIX_INLINE void count_above_masks(const T* values, int64_t n,
                                                                        const T* thresholds, int64_t* above) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  constexpr int64_t kVectorsPerFlush = int64_t(1) << 24;  // int32 lane counts cannot overflow
  int64_t counts[K] = {};
  int64_t i = 0;
  if constexpr (sizeof(T) == 4) {
    __m512 threshold[K];
    for (int j = 0; j < K; ++j) threshold[j] = _mm512_set1_ps(thresholds[j]);
    const __m512i one = _mm512_set1_epi32(1);
    while (i + kLanes <= n) {
      const int64_t stop = std::min(n - kLanes, i + kVectorsPerFlush * kLanes);
      __m512i lanes_above[K];
      for (int j = 0; j < K; ++j) lanes_above[j] = _mm512_setzero_si512();
      for (; i <= stop; i += kLanes) {
        prefetch_ahead(values + i);
        const __m512 v = _mm512_loadu_ps(values + i);
        for (int j = 0; j < K; ++j) {
          const __mmask16 upper = _mm512_cmp_ps_mask(v, threshold[j], _CMP_GE_OQ);
          lanes_above[j] = _mm512_mask_add_epi32(lanes_above[j], upper, lanes_above[j], one);
        }
      }
      for (int j = 0; j < K; ++j) counts[j] += _mm512_reduce_add_epi32(lanes_above[j]);
    }
  } else {
    __m512d threshold[K];
    __m512i lanes_above[K];
    for (int j = 0; j < K; ++j) {
      threshold[j] = _mm512_set1_pd(thresholds[j]);
      lanes_above[j] = _mm512_setzero_si512();
    }
    const __m512i one = _mm512_set1_epi64(1);
    for (; i + kLanes <= n; i += kLanes) {
      prefetch_ahead(values + i);
      const __m512d v = _mm512_loadu_pd(values + i);
      for (int j = 0; j < K; ++j) {
        const __mmask8 upper = _mm512_cmp_pd_mask(v, threshold[j], _CMP_GE_OQ);
        lanes_above[j] = _mm512_mask_add_epi64(lanes_above[j], upper, lanes_above[j], one);
      }
    }
    for (int j = 0; j < K; ++j) counts[j] = _mm512_reduce_add_epi64(lanes_above[j]);
  }
  for (; i < n; ++i) {
    for (int j = 0; j < K; ++j) counts[j] += values[i] >= thresholds[j];
  }
  std::copy(counts, counts + K, above);
}

template <typename T>
__attribute__((target("avx512f"))) void count_above_avx512(const T* values, int64_t n, int bits, const T* thresholds,
                                                          int64_t* above) {
  static_assert(kFirstGridBits <= 3 && kGridBits <= 3);
  if (bits == 1) return count_above_masks<1>(values, n, thresholds, above);
  if (bits == 2) return count_above_masks<3>(values, n, thresholds, above);
  count_above_masks<7>(values, n, thresholds, above);
}
#endif

template <typename T>
CountFn<T> count_for_this_cpu() {
  return FASTMIX_KERNEL_FOR_THIS_CPU(count_above, T);
}

// pass over every block of the groups with `constants`, in parallel; out = (G, width) per-group sums.
template <typename T>
void per_group_pass(PassFn<T> run, Pass pass, const T* sorted, const std::vector<Block>& blocks, int64_t n_groups,
                    const std::vector<GroupConstants>& constants, const uint8_t* active, int64_t width, double* out) {
  per_group_sum(blocks, n_groups, width, out, [&](const Block& block, double* own) {
    if (active == nullptr || active[block.group]) {
      run(pass, sorted + block.begin, block.end - block.begin, constants[block.group], own);
    } else {
      std::fill(own, own + width, 0.0);
    }
  });
}

std::vector<GroupConstants> normalisation(int64_t n_groups, const double* lo, const double* scale) {
  std::vector<GroupConstants> constants(n_groups);
  for (int64_t g = 0; g < n_groups; ++g) {
    constants[g].lo = lo[g];
    constants[g].inv_scale = 1.0 / scale[g];
  }
  return constants;
}

// ---------------------------------------------------------------------------------------------------------------

// The inits' pass (their steps between passes are torch, fastmix/methods/gmm.py): per group the statistics (G, 7)
// of the hard split x >= split around the shifts.
template <typename T>
void split_statistics(const T* sorted, const int64_t* offsets, int64_t n_groups, const double* lo,
                      const double* scale, const double* split, const double* shifts, double* stats) {
  std::vector<GroupConstants> constants = normalisation(n_groups, lo, scale);
  for (int64_t g = 0; g < n_groups; ++g) {
    constants[g].split = split[g];
    constants[g].shift[0] = shifts[2 * g];
    constants[g].shift[1] = shifts[2 * g + 1];
  }
  per_group_pass(pass_for_this_cpu<T>(), Pass::kSplit, sorted, blocks_of(offsets, n_groups), n_groups, constants,
                 nullptr, gmm::kStats, stats);
}

// A Lloyd step's statistics (LloydSums' layout) from those of the same split taken around zero: out[3 + k] =
// sum x - count_k centre_k.
FASTMIX_INLINE void around_centres(const double* around_zero, const double* centre, double* out) {
  for (int s = 0; s < gmm::kStats; ++s) out[s] = 0.0;
  for (int k = 0; k < 2; ++k) {
    out[1 + k] = around_zero[1 + k];
    out[3 + k] = around_zero[3 + k] - around_zero[1 + k] * centre[k];
  }
}

// The values of one group whose normalised x lies in [low, high) (their order keys in [threshold_order(low),
// threshold_order(high))), with the count and the sum of x of the group's values below low and of those at or
// above high: for a split s in [low, high] every value outside the band lies on the side of s it lies on of the
// band's ends, so a Lloyd step at s needs a pass over the band alone. Holds no split until built.
template <typename T>
struct LloydBand {
  std::vector<T> values;  // the first `size` hold the band
  int64_t size = 0;
  double low = kInfinity, high = -kInfinity;
  double below[2] = {}, above[2] = {};  // count, sum of x

  bool holds(double split) const { return low <= split && split <= high; }

  // The Lloyd step at `split` around zero (around_centres' input: per side the count and the sum of x), from one
  // zone pass over the band (over the whole group when the band does not hold the split), which also leaves as the
  // band the values between split and split + reach (reach > 0: the splits move up; < 0: down; none when reach is
  // 0 or not finite) within the old band.
  void step(ZoneFn<T> zones, const GroupConstants& c, const T* group, int64_t n, double split, double reach,
            double* out) {
    const bool inside = holds(split);
    double from_x = split, to_x = split;
    if (std::isfinite(split + reach) && reach > 0.0) to_x = inside ? std::min(split + reach, high) : split + reach;
    if (std::isfinite(split + reach) && reach < 0.0) from_x = inside ? std::max(split + reach, low) : split + reach;
    if (!inside) {
      if (static_cast<int64_t>(values.size()) < n + kBandSlack) values.resize(n + kBandSlack);
      for (int k = 0; k < 2; ++k) below[k] = above[k] = 0.0;
    }
    int64_t count[3];
    double sum[3];
    zones(inside ? values.data() : group, inside ? size : n, c.lo, threshold_order<T>(c, from_x),
          threshold_order<T>(c, to_x), values.data(), count, sum);
    below[0] += static_cast<double>(count[0]);
    below[1] += sum[0] * c.inv_scale;
    above[0] += static_cast<double>(count[2]);
    above[1] += sum[2] * c.inv_scale;
    size = count[1];
    low = from_x;
    high = to_x;
    const bool band_below = to_x == split;  // the new band lies below the split (moving down, or empty)
    for (int s = 0; s < gmm::kStats; ++s) out[s] = 0.0;
    out[1] = below[0] + (band_below ? static_cast<double>(count[1]) : 0.0);
    out[2] = above[0] + (band_below ? 0.0 : static_cast<double>(count[1]));
    out[3] = below[1] + (band_below ? sum[1] * c.inv_scale : 0.0);
    out[4] = above[1] + (band_below ? 0.0 : sum[1] * c.inv_scale);
  }
};

// The k-means inits in one call (fastmix/methods/gmm.py: median_seeds, kmeans_centres, then the final split's
// statistics), one group per thread with its segment hot in cache instead of one pass over all values per step.
// Without seeds: the median split by bisection over the 2^bisections-step grid of [low, high] and the means of its
// halves.
// Then Lloyd steps, stopping early once the centres stop moving (a fixed point: further steps change nothing) or
// once a step's split leaves as many values below it as the previous step's: the splits are nested, so that is the
// same partition, and further steps only recompute its means (c + sum (x - c) / n from the moved c can move c by
// an ulp back and forth without end: 21% of the values at 118,287 x 80 were in groups that ran all 30 steps so);
// then the statistics (G, 7) of the final split around the final centres (G, 2). The bisection takes only counts
// (count_above), the halves and the Lloyd steps counts and sums of x (LloydSums or float_split_pass; the zone
// passes), all at the same splits; the final split's statistics a full SplitSums pass. The splits of 1-D 2-means
// Lloyd steps move one way (each side's mean grows with the split), mostly by less each step: each step's zone pass
// also keeps as the group's LloydBand the values between its split and twice its move ahead, so a step whose split
// the band holds passes over the band alone, and the bands shrink with the moves (a step outside the band passes
// over the whole segment). At 118,287 x 80 the Lloyd steps of a large group pass over its values once and then
// over about as many again in all its bands (was once plus 16% of them per step); the count below each split is a
// full pass's, the sums are added in another order. Every pass's sums are rounded differently from the blocked
// passes' (to the last bits).
FASTMIX_INLINE void lloyd_update(const double* stats, double* centres) {
  for (int k = 0; k < 2; ++k) {
    if (stats[1 + k] > 0.0) centres[k] += stats[3 + k] / std::max(stats[1 + k], 1.0);
  }
}

template <typename T>
void kmeans(const T* sorted, const int64_t* offsets, int64_t n_groups, const double* count, const double* lo,
            const double* scale, const double* low, const double* high, const double* seeds, int64_t bisections,
            int64_t steps, double* centres, double* stats) {
  const PassFn<T> run = pass_for_this_cpu<T>();
  const ZoneFn<T> zones = zone_pass_for_this_cpu<T>();
  const CountFn<T> count_thresholds = count_for_this_cpu<T>();
  const double grid_steps = std::ldexp(1.0, static_cast<int>(bisections));
#pragma omp parallel
  {
    LloydBand<T> band;
#pragma omp for schedule(dynamic)
    for (int64_t g = 0; g < n_groups; ++g) {
      const T* values = sorted + offsets[g];
      const int64_t n = offsets[g + 1] - offsets[g];
      double* out = stats + g * gmm::kStats;
      double* centre = centres + 2 * g;
      GroupConstants c{};
      c.lo = lo[g];
      c.inv_scale = 1.0 / scale[g];
      const bool monotone = c.inv_scale > 0.0 && c.inv_scale < kInfinity;  // always, for a usable normalisation
      auto grid_split = [&](int64_t step) {  // the split at step `step` of the grid
        return low[g] + static_cast<double>(step) / grid_steps * (high[g] - low[g]);
      };
      auto split_pass = [&](double split, double shift0, double shift1, Pass pass = Pass::kLloyd) {
        c.split = split;
        c.shift[0] = shift0;
        c.shift[1] = shift1;
        run(pass, values, n, c, out);
      };
      double previous_split = std::numeric_limits<double>::quiet_NaN();
      if (seeds == nullptr) {
        int64_t below = 0, above = int64_t(1) << bisections;
        for (int64_t decided = 0; decided < bisections;) {
          const int64_t most = decided == 0 ? kFirstGridBits : kGridBits;
          const int bits = static_cast<int>(std::min<int64_t>(most, bisections - decided));
          const int64_t step = (above - below) >> bits;
          const int candidates = (1 << bits) - 1;
          T thresholds[kMaxGridThresholds];
          int64_t counted_above[kMaxGridThresholds];
          for (int m = 0; m < candidates; ++m) {
            const double split = grid_split(below + (m + 1) * step);
            thresholds[m] = monotone ? threshold_value<T>(c, split) : T(0);
            if (!monotone) {
              split_pass(split, split, split);
              counted_above[m] = n - static_cast<int64_t>(out[1]);
            }
          }
          if (monotone) count_thresholds(values, n, bits, thresholds, counted_above);
          int m = 0;  // the first candidate with at least half the values below it, else the interval's top
          while (m < candidates && static_cast<double>(n - counted_above[m]) < count[g] / 2.0) ++m;
          above = below + (m + 1) * step;
          below += m * step;
          decided += bits;
        }
        const double split = grid_split(above);
        centre[0] = 0.5 * (low[g] + split);
        centre[1] = 0.5 * (split + high[g]);
        split_pass(split, centre[0], centre[1]);
        lloyd_update(out, centre);
        previous_split = split;
      } else {
        centre[0] = seeds[2 * g];
        centre[1] = seeds[2 * g + 1];
      }
      band.low = kInfinity;  // holds no split
      band.high = -kInfinity;
      double previous_below = -1.0;  // the count below the previous step's split
      for (int64_t step = 0; step < steps; ++step) {
        const double before[2] = {centre[0], centre[1]};
        const double split = (centre[0] + centre[1]) / 2.0;
        double around_zero[gmm::kStats];
        if (monotone) {
          band.step(zones, c, values, n, split, 2.0 * (split - previous_split), around_zero);
        } else {
          split_pass(split, 0.0, 0.0);
          std::copy(out, out + gmm::kStats, around_zero);
        }
        around_centres(around_zero, centre, out);
        lloyd_update(out, centre);
        previous_split = split;
        if ((centre[0] == before[0] && centre[1] == before[1]) || out[1] == previous_below) break;
        previous_below = out[1];
      }
      split_pass((centre[0] + centre[1]) / 2.0, centre[0], centre[1], Pass::kSplit);
    }
  }
}

// The k-means++ seeding's race (reference.race_statistics): per group the smallest finite key, the sum of the
// normalised values that hold it and their count, (G, 3); a weighted race divides each key by (x - centre[g])^2.
template <typename T>
void race(const T* sorted, const int64_t* offsets, int64_t n_groups, const double* lo, const double* scale,
          const double* keys, const double* centre, double* out) {
  const std::vector<Block> blocks = blocks_of(offsets, n_groups);
  std::vector<double> partial(3 * blocks.size());
#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < static_cast<int64_t>(blocks.size()); ++b) {
    const Block block = blocks[b];
    const double inv_scale = 1.0 / scale[block.group];
    double best = kInfinity, sum = 0.0, hits = 0.0;
    for (int64_t i = block.begin; i < block.end; ++i) {
      const double x = gmm::normalised(as_double(sorted[i]), lo[block.group], inv_scale);
      const double d = centre == nullptr ? 1.0 : x - centre[block.group];
      const double key = centre == nullptr ? keys[i] : keys[i] / (d * d);
      if (!(key <= best) || !gmm::is_finite(key)) continue;
      if (key < best) {
        best = key;
        sum = 0.0;
        hits = 0.0;
      }
      sum += x;
      hits += 1.0;
    }
    partial[3 * b] = best;
    partial[3 * b + 1] = sum;
    partial[3 * b + 2] = hits;
  }
  for (int64_t g = 0; g < n_groups; ++g) {
    out[3 * g] = kInfinity;
    out[3 * g + 1] = out[3 * g + 2] = 0.0;
  }
  for (size_t b = 0; b < blocks.size(); ++b) {
    double* own = out + 3 * blocks[b].group;
    if (partial[3 * b] < own[0]) {
      own[0] = partial[3 * b];
      own[1] = own[2] = 0.0;
    }
    if (partial[3 * b] == own[0] && partial[3 * b + 2] > 0.0) {
      own[1] += partial[3 * b + 1];
      own[2] += partial[3 * b + 2];
    }
  }
}

// The E-step constants of every group (see EStepSums, FloatEStep) from its current parameters. FloatEStep
// accumulates the component whose statistics, taken from the group's totals, leave the other's with the least
// cancellation: the smaller w_k (var_k + (mu_0 - mu_1)^2) / (w_other var_other), the factor by which the subtraction
// amplifies the accumulated sums' rounding.
void set_estep_constants(int64_t n_groups, const double* weights, const double* means, const double* variances,
                         std::vector<GroupConstants>& constants) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const gmm::Prepared p = gmm::prepare(weights + 2 * g, means + 2 * g, variances + 2 * g);
    for (int k = 0; k < 2; ++k) {
      constants[g].half_precision[k] = 0.5 / variances[2 * g + k];
      constants[g].offset[k] = p.offset[k];
      constants[g].mean[k] = p.mean[k];
    }
    const double* w = weights + 2 * g;
    const double* var = variances + 2 * g;
    const double apart = (means[2 * g] - means[2 * g + 1]) * (means[2 * g] - means[2 * g + 1]);
    const bool first = w[0] * w[0] * var[0] * (var[0] + apart) <= w[1] * w[1] * var[1] * (var[1] + apart);
    constants[g].accumulated = first ? 0 : 1;
  }
}

// FloatEStep's origin of every group, fixed for a fit: the float32 nearest the mixture's mean in raw units,
// lo + (w_0 mu_0 + w_1 mu_1) scale (lo when that is not finite), with the group's totals around it.
void set_origins(int64_t n_groups, const double* lo, const double* scale, const double* weights, const double* means,
                 std::vector<GroupConstants>& constants) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const double centre = lo[g] + (weights[2 * g] * means[2 * g] + weights[2 * g + 1] * means[2 * g + 1]) * scale[g];
    const float origin = static_cast<float>(std::isfinite(centre) ? centre : lo[g]);
    constants[g].origin = std::isfinite(origin) ? origin : 0.0f;
    constants[g].with_totals = true;
  }
}

// A group's E-step statistics (gmm.h layout, around the exact means) from FloatEStep's sums over its n values
// (sums[0..3]) and its totals around the origin (t1 = sum (v - origin), t2 = sum (v - origin)^2, raw units): the
// accumulated component's sums moved from its float32 mean to the exact one; the other's as the group's sums around
// its mean minus the accumulated component's share (r_other = 1 - r); sum log p = sum_k (offset_k sum r_k -
// half_precision_k sum r_k (x - mu_k)^2) + sums[0] (FloatEStep). Counts and sums of squares clamped at 0.
void complete_float_estep(const double* sums, double n, double t1, double t2, const GroupConstants& c,
                          double* stats) {
  std::fill(stats, stats + gmm::kStats, 0.0);
  if (n == 0.0) return;
  const int a = c.accumulated, o = 1 - a;
  const double mean_x = origin_of(c) + c.inv_scale * t1 / n;  // the group's mean of x, its spread around it:
  const double spread = std::max(c.inv_scale * c.inv_scale * (t2 - t1 * t1 / n), 0.0);
  double first[2], second[2];  // sum (x - mu_k), sum (x - mu_k)^2
  for (int k = 0; k < 2; ++k) {
    first[k] = n * (mean_x - c.mean[k]);
    second[k] = spread + n * (mean_x - c.mean[k]) * (mean_x - c.mean[k]);
  }
  // FloatEStep's d = (v - own origin) inv_scale_f32 - shift_a = ratio (x - kernel_mean), ratio = inv_scale_f32 /
  // inv_scale, kernel_mean = own origin's x + shift_a / ratio: its sums scaled back by ratio and moved from
  // kernel_mean to the mean (the scale's rounding would otherwise reach the other component's sums amplified by the
  // subtraction).
  const double ratio = scale_ratio(c);
  const double moved = c.mean[a] - (own_origin_x(c) + float_shift(c, a) / ratio);
  const double r = sums[1], shifted = sums[2] / ratio, squared = sums[3] / (ratio * ratio);
  const double rd = shifted - moved * r;
  const double rd2 = std::max(squared - 2.0 * moved * shifted + moved * moved * r, 0.0);
  const double apart = c.mean[a] - c.mean[o];  // x - mu_o = (x - mu_a) + apart
  stats[1 + a] = r;
  stats[3 + a] = rd;
  stats[5 + a] = rd2;
  stats[1 + o] = std::max(n - r, 0.0);
  stats[3 + o] = first[o] - (rd + apart * r);
  stats[5 + o] = std::max(second[o] - (rd2 + 2.0 * apart * rd + apart * apart * r), 0.0);
  stats[0] = sums[0];
  for (int k = 0; k < 2; ++k) stats[0] += c.offset[k] * stats[1 + k] - c.half_precision[k] * stats[5 + k];
}

FASTMIX_INLINE double group_size(const int64_t* offsets, int64_t g) {
  return static_cast<double>(offsets[g + 1] - offsets[g]);
}

// One E-step over the groups (those `active`, or all for nullptr) into stats, (G, kStats) in gmm.h's layout around
// the constants' means. With float32 values FloatEStep's sums are completed (complete_float_estep) from the
// groups' totals, which the first E-step after set_origins takes (with_totals) and `totals` keeps for the next.
template <typename T>
void estep_statistics(PassFn<T> run, const T* sorted, const int64_t* offsets, const std::vector<Block>& blocks,
                      int64_t n_groups, std::vector<GroupConstants>& constants, const uint8_t* active,
                      std::vector<double>& totals, double* stats) {
  per_group_pass(run, Pass::kEStep, sorted, blocks, n_groups, constants, active, gmm::kStats, stats);
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t g = 0; g < n_groups; ++g) {
      if (active != nullptr && !active[g]) continue;
      double* own = stats + g * gmm::kStats;
      if (constants[g].with_totals) {
        totals[2 * g] = own[4];
        totals[2 * g + 1] = own[5];
        constants[g].with_totals = false;
      }
      double completed[gmm::kStats];
      complete_float_estep(own, group_size(offsets, g), totals[2 * g], totals[2 * g + 1], constants[g], completed);
      std::copy(completed, completed + gmm::kStats, own);
    }
  }
}

// The constants of every group's float64 or float32 E-step (set_estep_constants sets the parameters' part).
template <typename T>
std::vector<GroupConstants> estep_constants(int64_t n_groups, const double* lo, const double* scale,
                                            const double* weights, const double* means) {
  std::vector<GroupConstants> constants = normalisation(n_groups, lo, scale);
  if constexpr (std::is_same_v<T, float>) set_origins(n_groups, lo, scale, weights, means, constants);
  return constants;
}

// One E-step's statistics (gmm.h layout, around the given means) of every group: (G, kStats).
template <typename T>
void estep(const T* sorted, const int64_t* offsets, int64_t n_groups, const double* lo, const double* scale,
           const double* weights, const double* means, const double* variances, double* stats) {
  std::vector<GroupConstants> constants = estep_constants<T>(n_groups, lo, scale, weights, means);
  set_estep_constants(n_groups, weights, means, variances, constants);
  std::vector<double> totals(2 * n_groups);
  estep_statistics(pass_for_this_cpu<T>(), sorted, offsets, blocks_of(offsets, n_groups), n_groups, constants, nullptr,
                   totals, stats);
}

// The EM loop; with float32 values the first E-step also takes the groups' totals (FloatEStep), which the later
// ones reuse.
template <typename T>
void em(const T* sorted, const int64_t* offsets, int64_t n_groups, const double* count, const double* lo,
        const double* scale, double* weights, double* means, double* variances, double* log_likelihood,
        int64_t* n_iter, uint8_t* converged, int64_t max_iter, double tol, double reg_covar, double eps) {
  const PassFn<T> run = pass_for_this_cpu<T>();
  const std::vector<Block> blocks = blocks_of(offsets, n_groups);
  std::vector<GroupConstants> constants = estep_constants<T>(n_groups, lo, scale, weights, means);
  std::vector<double> stats(n_groups * gmm::kStats), totals(2 * n_groups);
  std::vector<uint8_t> active(n_groups, 1);
  std::vector<double> previous(n_groups, -kInfinity);
  int64_t n_active = n_groups;
  for (int64_t iteration = 0; iteration < max_iter && n_active > 0; ++iteration) {
    set_estep_constants(n_groups, weights, means, variances, constants);
    estep_statistics(run, sorted, offsets, blocks, n_groups, constants, active.data(), totals, stats.data());
    for (int64_t g = 0; g < n_groups; ++g) {
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

// CPU emulation of gmm.cu: every block (group) in turn, each phase run for every thread of the block in turn,
// with the kernel's barriers between phases.
template <typename T>
void emulate_em(const T* sorted_values, const int64_t* offsets, int64_t n_groups, const double* count,
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
        gmm::thread_pass<T>(thread, sorted_values, offsets[g], offsets[g + 1], lo[g], 1.0 / scale[g], prepared,
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

template <typename T>
const T* in(uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}

template <typename T>
T* out(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

std::vector<std::string> gmm2_cpu_isas() {
  std::vector<std::string> isas;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) isas.push_back("avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back("avx2");
#endif
  isas.push_back("baseline");
  return isas;
}

std::string gmm2_cpu_isa() {
  const std::vector<std::string> isas = gmm2_cpu_isas();
  const char* wanted = std::getenv("FASTMIX_CPU_ISA");
  if (wanted == nullptr || *wanted == '\0') return isas.front();
  if (std::find(isas.begin(), isas.end(), wanted) != isas.end()) return wanted;
  std::string names;
  for (const std::string& isa : isas) names += (names.empty() ? "" : ", ") + isa;
  throw std::invalid_argument("FASTMIX_CPU_ISA=" + std::string(wanted) + " is not one this CPU runs: " + names);
}

void gmm2_segments_cpu(uintptr_t values, uintptr_t groups, bool int32_groups, int64_t n, int dtype, int64_t n_groups,
                       bool omit_nonfinite, uintptr_t sorted, uintptr_t offsets, uintptr_t count, uintptr_t lo,
                       uintptr_t hi) {
  dispatch_float(dtype, "gmm2_segments_cpu", [&](auto tag) {
    using T = decltype(tag);
    advise_huge_pages(out<T>(sorted), n * sizeof(T));
    auto sort = [&](auto group_tag) {
      using Group = decltype(group_tag);
      const auto sort_with_keys = n_groups < 256     ? sort_by_group<T, Group, uint8_t>
                                  : n_groups < 65536 ? sort_by_group<T, Group, uint16_t>
                                                     : sort_by_group<T, Group, int64_t>;  // keys 0..n_groups
      sort_with_keys(in<T>(values), in<Group>(groups), n, n_groups, omit_nonfinite, out<T>(sorted),
                     out<int64_t>(offsets), out<double>(count), out<double>(lo), out<double>(hi));
    };
    if (int32_groups) {
      sort(int32_t{});
    } else {
      sort(int64_t{});
    }
  });
}

void gmm2_split_statistics_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo,
                               uintptr_t scale, uintptr_t split, uintptr_t shifts, uintptr_t stats) {
  dispatch_float(dtype, "gmm2_split_statistics_cpu", [&](auto tag) {
    using T = decltype(tag);
    split_statistics(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(lo), in<double>(scale),
                     in<double>(split), in<double>(shifts), out<double>(stats));
  });
}

void gmm2_em_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                 uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances, uintptr_t log_likelihood,
                 uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol, double reg_covar, double eps) {
  dispatch_float(dtype, "gmm2_em_cpu", [&](auto tag) {
    using T = decltype(tag);
    em(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(count), in<double>(lo), in<double>(scale),
       out<double>(weights), out<double>(means), out<double>(variances), out<double>(log_likelihood),
       out<int64_t>(n_iter), out<uint8_t>(converged), max_iter, tol, reg_covar, eps);
  });
}

void gmm2_kmeans_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                     uintptr_t scale, uintptr_t low, uintptr_t high, uintptr_t seeds, int64_t bisections, int64_t steps,
                     uintptr_t centres, uintptr_t stats) {
  dispatch_float(dtype, "gmm2_kmeans_cpu", [&](auto tag) {
    using T = decltype(tag);
    kmeans(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(count), in<double>(lo), in<double>(scale),
           in<double>(low), in<double>(high), seeds == 0 ? nullptr : in<double>(seeds), bisections, steps,
           out<double>(centres), out<double>(stats));
  });
}

void gmm2_race_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo, uintptr_t scale,
                   uintptr_t keys, uintptr_t centre, uintptr_t out_stats) {
  dispatch_float(dtype, "gmm2_race_cpu", [&](auto tag) {
    using T = decltype(tag);
    race(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(lo), in<double>(scale), in<double>(keys),
         centre == 0 ? nullptr : in<double>(centre), out<double>(out_stats));
  });
}

void gmm2_estep_cpu(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t lo, uintptr_t scale,
                    uintptr_t weights, uintptr_t means, uintptr_t variances, uintptr_t stats) {
  dispatch_float(dtype, "gmm2_estep_cpu", [&](auto tag) {
    using T = decltype(tag);
    estep(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(lo), in<double>(scale), in<double>(weights),
          in<double>(means), in<double>(variances), out<double>(stats));
  });
}

void gmm2_em_emulate(uintptr_t sorted, uintptr_t offsets, int dtype, int64_t n_groups, uintptr_t count, uintptr_t lo,
                     uintptr_t scale, uintptr_t weights, uintptr_t means, uintptr_t variances,
                     uintptr_t log_likelihood, uintptr_t n_iter, uintptr_t converged, int64_t max_iter, double tol,
                     double reg_covar, double eps) {
  dispatch_float(dtype, "gmm2_em_emulate", [&](auto tag) {
    using T = decltype(tag);
    emulate_em(in<T>(sorted), in<int64_t>(offsets), n_groups, in<double>(count), in<double>(lo), in<double>(scale),
               out<double>(weights), out<double>(means), out<double>(variances), out<double>(log_likelihood),
               out<int64_t>(n_iter), out<uint8_t>(converged), max_iter, tol, reg_covar, eps);
  });
}

}  // namespace fastmix
