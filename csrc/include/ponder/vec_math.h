// Float math of the CPU kernels. Scalar forms written so that the compiler vectorises
// loops that call them: branch-free exp/log and 16-bit float conversions, no libm calls
// (glibc's vector libm is only used under -ffast-math, which ponder does not build with:
// NaN and inf handling must stay exact). Where the build targets AVX-512, exp has a
// 16-lane form written with intrinsics, for the hottest loop (sum_exp_chunk in
// sampling.h); both forms are tested against float64 by tests/ops/test_vec_math.py.
// No OpenMP pragmas here: the CUDA headers include this file too.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ponder {

// exp(r) = 1 + r + r^2 * P(r) for |r| <= ln(2) / 2: P's coefficients, lowest first (a
// minimax fit of degree 4; in float32 arithmetic the whole exp_nonpositive is within
// 1.02 ulp of the exact exp for every float in [-87, 0], as close as a degree-5 fit).
inline constexpr float kExpPoly[5] = {0.4999999404f, 0.1666652113f, 0.04166838899f, 0.008368710056f,
                                      0.001381461276f};
// Cody-Waite split of ln 2: kLn2High has trailing zero bits, so k * kLn2High is exact.
inline constexpr float kLn2High = 0.693359375f;
inline constexpr float kLn2Low = -2.12194440e-4f;
inline constexpr float kLog2E = 1.44269504088896341f;

// exp(x) for x <= 0 (softmax weights exp(s - max)), within 1.02 ulp of the exact value;
// exactly 0 for x < -87, -inf and NaN, 1 for x = 0.
inline float exp_nonpositive(float x) {
  const bool underflow = !(x >= -87.0f);  // also true for NaN and -inf
  x = underflow ? -87.0f : x;
  // exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln(2) / 2.
  const float k = (x * kLog2E + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (x - k * kLn2High) - k * kLn2Low;
  float p = kExpPoly[4];
  for (int i = 3; i >= 0; --i) p = p * r + kExpPoly[i];
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<int32_t>((static_cast<int32_t>(k) + 127) << 23));
  return underflow ? 0.0f : p * scale;
}

#if defined(__AVX512F__)
// exp_nonpositive on 16 lanes: the same reduction and polynomial, with AVX-512's scalef
// for the 2^k scaling and a zero mask for underflow, NaN and -inf: about 40% fewer
// instructions than what the compiler makes of the scalar form.
inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 in_range = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);  // false for NaN
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2E)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2High), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Low), r);
  __m512 p = _mm512_set1_ps(kExpPoly[4]);
  for (int i = 3; i >= 0; --i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(in_range, p, k);
}
#endif

// log(x) for positive normal x, within ~1 ulp of logf.
inline float log_positive(float x) {
  // x = 2^e * m with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(t), t = (m - 1) / (m + 1).
  const int32_t bits = std::bit_cast<int32_t>(x);
  const int32_t shifted = bits - 0x3f3504f3;  // bits of sqrt(1/2)
  const int32_t e = shifted >> 23;
  const float m = std::bit_cast<float>(bits - (e << 23));
  const float t = (m - 1.0f) / (m + 1.0f);
  const float t2 = t * t;
  float q = 0.11111111f;          // 1/9
  q = q * t2 + 0.14285715f;       // 1/7
  q = q * t2 + 0.2f;              // 1/5
  q = q * t2 + 0.33333334f;       // 1/3
  const float log_m = 2.0f * t + 2.0f * t * t2 * q;
  return static_cast<float>(e) * 0.693147180559945f + log_m;
}

// 16-bit floats as stored in torch tensors.
struct BFloat16Bits {
  uint16_t bits;
};
struct Float16Bits {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(BFloat16Bits x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }
inline float to_float(Float16Bits x) {
  // Branch-free IEEE half -> float: rebias the exponent; subnormals via a float
  // subtraction; inf/NaN keep an all-ones exponent.
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t magnitude = (h & 0x7fffu) << 13;  // exponent+mantissa aligned to float
  const float normal = std::bit_cast<float>(magnitude + 0x38000000u);  // rebias 15 -> 127
  const float subnormal = std::bit_cast<float>(magnitude + 0x38800000u) - 6.103515625e-05f;
  const bool is_subnormal = (h & 0x7c00u) == 0;
  const bool is_special = (h & 0x7c00u) == 0x7c00u;
  const uint32_t special = 0x7f800000u | magnitude;  // inf or NaN (payload kept)
  const uint32_t out = is_special ? special : std::bit_cast<uint32_t>(is_subnormal ? subnormal : normal);
  return std::bit_cast<float>(out | sign);
}

}  // namespace ponder
