// CPU dense layer y = x W^T (+ b), float32, for the model runner's projections.
// Framework-free: raw pointers, sizes and strides in; callers parallelise over tiles of
// columns.
//
// Why not the BLAS: a decoding step multiplies a handful of rows (one per live
// sequence) by every weight matrix, and the BLAS's small-M path runs far below the
// machine's FMA rate while streaming the weights. Here the rows go into the lanes of a
// vector instead: x is transposed into blocks of `Lanes` rows (xt[k][lane]; 16 lanes, one
// 512-bit vector of float32, or 8 for up to 8 rows, so that a single sequence does not
// pay for 15 empty lanes), and a tile walks kLinearColumns weight rows along k,
// broadcasting one weight per (column, k) and accumulating all the block's rows at once. Each weight is read once per row block,
// in its nn.Linear layout [N, K], so nothing is repacked and the FMA units, not the
// memory, bound the loop from a few rows up.
//
// Batch-invariant: y[m, n] is one sequential chain of fused multiply-adds over
// k = 0 .. K-1, then + b[n], whatever the number of rows, the lane width and wherever
// row m sits (lanes never mix), so a sequence's activations do not depend on what else
// is in the batch.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ponder::cpu {

inline constexpr int64_t kLinearColumns = 8;  // weight rows per tile: accumulators kept in registers

// xt[k * Lanes + lane] = x[lane * row_stride + k * col_stride] for lane < rows
// (rows <= Lanes), 0 for the lanes past `rows`. xt: [K, Lanes].
template <int64_t Lanes>
void transpose_row_block(const float* x, int64_t row_stride, int64_t col_stride, int64_t rows, int64_t K, float* xt) {
  for (int64_t k = 0; k < K; ++k) {
    float* out = xt + k * Lanes;
    for (int64_t lane = 0; lane < Lanes; ++lane)
      out[lane] = lane < rows ? x[lane * row_stride + k * col_stride] : 0.0f;
  }
}

// One tile: y[m * y_stride + j] = sum_k xt[k][m] * w[j * w_row_stride + k * w_col_stride]
// (+ bias[j]) for m < rows (<= Lanes), j < columns (<= kLinearColumns); bias may be null.
template <int64_t Lanes>
void linear_tile(const float* __restrict xt, int64_t K, int64_t rows, const float* w, int64_t w_row_stride,
                 int64_t w_col_stride, int64_t columns, const float* bias, float* y, int64_t y_stride) {
  float acc[kLinearColumns][Lanes] = {};
  const float* row[kLinearColumns];
  for (int64_t j = 0; j < kLinearColumns; ++j) row[j] = w + std::min(j, columns - 1) * w_row_stride;  // tail: repeat
  for (int64_t k = 0; k < K; ++k) {
    const float* xk = xt + k * Lanes;
#pragma GCC unroll 8
    for (int64_t j = 0; j < kLinearColumns; ++j) {
      const float wjk = row[j][k * w_col_stride];
#pragma omp simd
      for (int64_t lane = 0; lane < Lanes; ++lane) acc[j][lane] += xk[lane] * wjk;  // contracted to an FMA
    }
  }
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t j = 0; j < columns; ++j) y[m * y_stride + j] = acc[j][m] + (bias != nullptr ? bias[j] : 0.0f);
}

}  // namespace ponder::cpu
