// Prints exp_nonpositive (csrc/include/ponder/vec_math.h) and sum_exp_chunk
// (csrc/include/ponder/sampling.h) on inputs
// read from stdin, for tests/ops/test_vec_math.py, which builds it with and without
// AVX-512 so that both code paths are checked against float64.
//   stdin:  lines "exp <n> <x_0> ... <x_n-1>" and "sum <m> <n> <x_0> ... <x_n-1>", each
//           float given by its IEEE bits as a decimal integer (NaN and inf included)
//   stdout: for an exp line, n values from the scalar form and, where AVX-512 is on, n
//           from the 16-lane form; for a sum line, one value; each as its bits
#include <bit>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "ponder/sampling.h"

namespace {
float read_float() {
  uint32_t bits;
  std::cin >> bits;
  return std::bit_cast<float>(bits);
}
void print_float(float x) { std::printf("%u\n", std::bit_cast<uint32_t>(x)); }
}  // namespace

int main() {
  std::string kind;
  while (std::cin >> kind) {
    if (kind == "exp") {
      int64_t n;
      std::cin >> n;
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = read_float();
      for (float v : x) print_float(ponder::exp_nonpositive(v));
#if defined(__AVX512F__)
      for (float v : x) {
        float lanes[16];
        _mm512_storeu_ps(lanes, ponder::exp_nonpositive(_mm512_set1_ps(v)));
        print_float(lanes[0]);
      }
#endif
    } else if (kind == "sum") {
      const float m = read_float();
      int64_t n;
      std::cin >> n;
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = read_float();
      print_float(ponder::cpu::sum_exp_chunk(x.data(), n, m));
    }
  }
}
