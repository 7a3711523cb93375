// The in-kernel sampler of the parameter kernels (fastmix/kernels/triton/random.py), in C++: the same
// Philox4x32-10 words under the key `seed` and the counter (index, attempt * kRoles + role, stream, offset), and the
// same distributions built on them, step for step, so a C++ parameter call draws what the Triton kernel draws for
// the same seed (floats to the last bits of the math library's log/exp/sin/cos, integers exactly).
#pragma once
#include <cmath>
#include <cstdint>

namespace fastmix {
namespace philox {

constexpr uint32_t kRoles = 4;
constexpr uint32_t kGammaNormal = 0;
constexpr uint32_t kGammaAccept = 1;
constexpr uint32_t kBetaBoost = 2;

struct Words {
  uint32_t w0, w1, w2, w3;
};

inline uint32_t mul_high(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Philox4x32-10 with key (low, high) = seed's two 32-bit halves and counter (c0, c1, c2, c3), as tl.philox.
inline Words words(int64_t seed, uint64_t index, uint32_t attempt_role, uint32_t stream, uint32_t offset) {
  const uint64_t key = static_cast<uint64_t>(seed);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  uint32_t c0 = static_cast<uint32_t>(index), c1 = attempt_role, c2 = stream, c3 = offset;
  for (int round = 0; round < 10; ++round) {
    const uint32_t old0 = c0, old2 = c2;
    c0 = mul_high(0xCD9E8D57u, old2) ^ c1 ^ k0;
    c2 = mul_high(0xD2511F53u, old0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * old2;
    c3 = 0xD2511F53u * old0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// A float64 in [0, 1) from 27 bits of `high` and 26 of `low`: k / 2^53, every k equally likely.
inline double unit_float64(uint32_t high, uint32_t low) {
  return (static_cast<double>(high >> 5) * 67108864.0 + static_cast<double>(low >> 6)) * 1.1102230246251565e-16;
}

struct Pair {
  double first, second;
};

inline Pair uniform_pair(int64_t seed, uint64_t index, uint32_t attempt_role, uint32_t stream, uint32_t offset) {
  const Words w = words(seed, index, attempt_role, stream, offset);
  return {unit_float64(w.w0, w.w1), unit_float64(w.w2, w.w3)};
}

// Box-Muller: sqrt(-2 log(1 - u0)) (cos, sin)(2 pi u1).
inline Pair normal_pair(int64_t seed, uint64_t index, uint32_t attempt_role, uint32_t stream, uint32_t offset) {
  const Pair u = uniform_pair(seed, index, attempt_role, stream, offset);
  const double radius = std::sqrt(-2.0 * std::log(1.0 - u.first));
  const double angle = 6.283185307179586 * u.second;
  return {radius * std::cos(angle), radius * std::sin(angle)};
}

// One Marsaglia-Tsang (2000) attempt for Gamma(d + 1/3): whether it is accepted, and the log of the draw d v.
inline bool marsaglia_tsang(double d, double c, double normal, double uniform, double* log_draw) {
  double v = 1.0 + c * normal;
  v = v * v * v;
  if (!(v > 0.0)) return false;
  const double log_v = std::log(v);
  *log_draw = std::log(d) + log_v;
  return std::log(1.0 - uniform) < 0.5 * normal * normal + d - d * v + d * log_v;
}

// The logs of two independent Gamma(shape, 1) draws, shape >= 1: attempt a draws on fresh counters (attempt = a)
// until both are accepted, each keeping its first accepted attempt.
inline Pair log_gamma_pair(int64_t seed, double shape, uint64_t index, uint32_t stream, uint32_t offset) {
  const double d = shape - 0.3333333333333333;
  const double c = 1.0 / std::sqrt(9.0 * d);
  Pair log_g{0.0, 0.0};
  bool pending0 = true, pending1 = true;
  for (uint32_t attempt = 0; pending0 || pending1; ++attempt) {
    const Pair n = normal_pair(seed, index, attempt * kRoles + kGammaNormal, stream, offset);
    const Pair u = uniform_pair(seed, index, attempt * kRoles + kGammaAccept, stream, offset);
    double draw;
    if (pending0 && marsaglia_tsang(d, c, n.first, u.first, &draw)) {
      log_g.first = draw;
      pending0 = false;
    }
    if (pending1 && marsaglia_tsang(d, c, n.second, u.second, &draw)) {
      log_g.second = draw;
      pending1 = false;
    }
  }
  return log_g;
}

// Beta(alpha, alpha): sigmoid(log G1 - log G2), log G = log Gamma(alpha + 1) + log(U) / alpha.
inline double symmetric_beta(int64_t seed, double alpha, uint64_t index, uint32_t stream, uint32_t offset) {
  const Pair log_g = log_gamma_pair(seed, alpha + 1.0, index, stream, offset);
  const Pair u = uniform_pair(seed, index, kBetaBoost, stream, offset);
  const double logit = log_g.first - log_g.second + (std::log(1.0 - u.first) - std::log(1.0 - u.second)) / alpha;
  return 1.0 / (1.0 + std::exp(-logit));
}

}  // namespace philox
}  // namespace fastmix
