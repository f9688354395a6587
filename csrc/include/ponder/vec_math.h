// Scalar math written so that the compiler vectorises loops that call it: branch-free
// float exp/log and 16-bit float conversions, no libm calls (glibc's vector libm is
// only used under -ffast-math, which ponder does not build with: NaN and inf handling
// must stay exact).
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace ponder {

// exp(x) for x <= 0 (softmax weights exp(s - max)), within ~2 ulp of expf; exactly 0 for
// x < -87 and for x = -inf, 1 for x = 0.
inline float exp_nonpositive(float x) {
  const bool underflow = !(x >= -87.0f);  // also true for NaN and -inf
  x = underflow ? -87.0f : x;
  // exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln(2) / 2.
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;              // Cody-Waite ln 2 split
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<int32_t>((static_cast<int32_t>(k) + 127) << 23));
  return underflow ? 0.0f : p * scale;
}

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
