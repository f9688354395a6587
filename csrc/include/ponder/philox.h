// Counter-based Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), the one source of randomness of every ponder backend.
//
// The same function is compiled for the CPU, for CUDA (through PONDER_HOST_DEVICE) and
// written again in Triton (kernels/philox.py) and PyTorch (reference/philox.py); the
// tests check that all four give the same bits.
//
// Sampling uses it as: key = the row's 64-bit seed (low word, high word);
// counter = (column / 4, draw, row, 0); the column's random word is output[column % 4].
#pragma once

#include <cstdint>

#include "ponder/host_device.h"

namespace ponder {

struct Philox4 {
  uint32_t v[4];
};

PONDER_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                         uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMulA = 0xD2511F53u, kMulB = 0xCD9E8D57u;
  constexpr uint32_t kWeylA = 0x9E3779B9u, kWeylB = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t pa = static_cast<uint64_t>(kMulA) * c0;
    const uint64_t pb = static_cast<uint64_t>(kMulB) * c2;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += kWeylA;
    k1 += kWeylB;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// A uniform float in [2^-24, 1 - 2^-24] from 32 random bits: the top 24 bits with the
// lowest forced to 1, so the value is an odd multiple of 2^-24, exact in float32, and
// never 0 or 1 (both would make the Gumbel key infinite).
PONDER_HOST_DEVICE float uniform_from_bits(uint32_t bits) {
  return static_cast<float>((bits >> 8) | 1u) * 5.9604644775390625e-08f;  // 2^-24
}

// Largest Gumbel noise -log(-log(u)) over the uniforms above, rounded up: a token whose
// scaled logit is more than this below the best key found so far can never win.
constexpr float kGumbelMax = 17.0f;

}  // namespace ponder
