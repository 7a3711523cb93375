// Shared by the CUDA kernels and the C++ CPU code: storage types, dtype codes, conversions.
// Torch-free on purpose (see docs/design.md, "The native core").
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FASTMIX_HD __host__ __device__ __forceinline__
#else
#define FASTMIX_HD inline
#endif

namespace fastmix {

// Dtype codes passed from Python (fastmix/_native.py keeps the same table).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3, kUInt8 = 4 };

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

FASTMIX_HD float u32_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

FASTMIX_HD uint32_t float_as_u32(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// IEEE binary16 -> float, exact.
FASTMIX_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return u32_as_float(sign | 0x7f800000u | (mantissa << 13));
  return u32_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// float -> IEEE binary16, round to nearest even, overflow to inf, NaN kept quiet.
FASTMIX_HD uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_as_u32(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) return static_cast<uint16_t>(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {                                               // below 2^-14: subnormal or zero
    if (magnitude < 0x33000000u) return static_cast<uint16_t>(sign);            // <= 2^-25 rounds to zero
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;
    uint32_t q = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (magnitude - 0x38000000u) >> 13;
  const uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

FASTMIX_HD float bf16_bits_to_float(uint16_t b) { return u32_as_float(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16, round to nearest even, NaN kept quiet.
FASTMIX_HD uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = float_as_u32(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Storage type -> accumulation type, load and store.
template <typename T> struct Traits;
template <> struct Traits<float> {
  using acc = float;
  static FASTMIX_HD float load(float v) { return v; }
  static FASTMIX_HD float store(float v) { return v; }
};
template <> struct Traits<double> {
  using acc = double;
  static FASTMIX_HD double load(double v) { return v; }
  static FASTMIX_HD double store(double v) { return v; }
};
template <> struct Traits<Half> {
  using acc = float;
  static FASTMIX_HD float load(Half v) { return half_bits_to_float(v.bits); }
  static FASTMIX_HD Half store(float v) { return Half{float_to_half_bits(v)}; }
};
template <> struct Traits<BFloat16> {
  using acc = float;
  static FASTMIX_HD float load(BFloat16 v) { return bf16_bits_to_float(v.bits); }
  static FASTMIX_HD BFloat16 store(float v) { return BFloat16{float_to_bf16_bits(v)}; }
};

// uint8 images: saturate to [0, 255], round half to even (like torch.round then the cast).
template <> struct Traits<uint8_t> {
  using acc = float;
  static FASTMIX_HD float load(uint8_t v) { return static_cast<float>(v); }
  static FASTMIX_HD uint8_t store(float v) {
    v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
    float rounded = floorf(v + 0.5f);
    if (rounded - v == 0.5f && rounded - 2.f * floorf(rounded * 0.5f) == 1.f) rounded -= 1.f;
    return static_cast<uint8_t>(rounded);
  }
};

// Calls fn(T{}) with the storage type T of a dtype code (uint8 only for kernels instantiated WithUInt8), and
// throws std::invalid_argument naming `what` for any other code. Host code only.
template <bool WithUInt8 = false, typename Fn>
void dispatch_dtype(int dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case kFloat32: fn(float{}); return;
    case kFloat64: fn(double{}); return;
    case kFloat16: fn(Half{}); return;
    case kBFloat16: fn(BFloat16{}); return;
    case kUInt8:
      if constexpr (WithUInt8) {
        fn(uint8_t{});
        return;
      }
      break;
    default: break;
  }
  throw std::invalid_argument(std::string(what) + ": unsupported dtype code " + std::to_string(dtype));
}

// fn(float{}) or fn(double{}) for the float32/float64 codes (the GMM kernels take only these).
template <typename Fn>
void dispatch_float(int dtype, const char* what, Fn&& fn) {
  if (dtype == kFloat32) {
    fn(float{});
  } else if (dtype == kFloat64) {
    fn(double{});
  } else {
    throw std::invalid_argument(std::string(what) + ": values must be float32 or float64, got dtype code " +
                                std::to_string(dtype));
  }
}

// Throws std::invalid_argument (a ValueError in Python), "<what> holds <kind> indices outside [0, limit)", if one of
// the int64 `indices` is outside [0, limit). Host code only.
inline void check_indices(uintptr_t indices, int64_t count, int64_t limit, const char* what, const char* kind) {
  const int64_t* values = reinterpret_cast<const int64_t*>(indices);
  bool inside = true;
  for (int64_t i = 0; i < count; ++i) inside &= values[i] >= 0 && values[i] < limit;
  if (!inside) {
    throw std::invalid_argument(std::string(what) + " holds " + kind + " indices outside [0, " +
                                std::to_string(limit) + ")");
  }
}

// Launch geometry shared by a launcher and its CPU emulation.
struct Grid {
  int64_t blocks;
  int threads;
};

}  // namespace fastmix
