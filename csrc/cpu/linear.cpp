// Torch glue of the CPU dense layer (csrc/include/ponder/linear.h): checks, the
// transposed row blocks, and a parallel loop over tiles of columns.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "ponder/linear.h"
#include "ponder_ops.h"

namespace ponder::cpu {
namespace {

void check_float_cpu(const char* name, const at::Tensor& t, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), "linear: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "linear: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dims, "linear: ", name, " must be ", dims, "-D, got shape ", t.sizes());
}

// Multiply-adds per parallel task: below this, a second thread costs more than it saves.
constexpr int64_t kTaskFlops = 1 << 17;

// y = x weight^T + bias with rows of x in blocks of Lanes (see linear.h); bias may be undefined.
template <int64_t Lanes>
void run_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& y) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const int64_t row_blocks = (M + Lanes - 1) / Lanes;
  const int64_t tiles = (N + kLinearColumns - 1) / kLinearColumns;
  // The transposed rows, shared by every task; kept by the calling thread between calls
  // (a fresh buffer per call would be fresh pages to fault in at every step).
  thread_local std::vector<float> transposed;
  transposed.resize(static_cast<size_t>(row_blocks * K * Lanes));
  float* xt = transposed.data();
  const float* x_data = x.const_data_ptr<float>();
  const int64_t x_row_stride = x.stride(0), x_col_stride = x.stride(1);
  at::parallel_for(0, row_blocks, std::max<int64_t>(1, kTaskFlops / std::max<int64_t>(1, K * Lanes)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b)
                       transpose_row_block<Lanes>(x_data + b * Lanes * x_row_stride, x_row_stride, x_col_stride,
                                                  std::min(Lanes, M - b * Lanes), K, xt + b * K * Lanes);
                   });

  const float* w = weight.const_data_ptr<float>();
  const float* b = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  const int64_t tile_flops = std::max<int64_t>(1, row_blocks * Lanes * kLinearColumns * K);
  at::parallel_for(0, tiles, std::max<int64_t>(1, kTaskFlops / tile_flops), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n0 = t * kLinearColumns, columns = std::min(kLinearColumns, N - n0);
      for (int64_t rb = 0; rb < row_blocks; ++rb)  // the tile's weights stay in cache across row blocks
        linear_tile<Lanes>(xt + rb * K * Lanes, K, std::min(Lanes, M - rb * Lanes), w + n0 * weight.stride(0),
                           weight.stride(0), weight.stride(1), columns, b != nullptr ? b + n0 : nullptr,
                           out + rb * Lanes * N + n0, N);
    }
  });
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_float_cpu("x", x, 2);
  check_float_cpu("weight", weight, 2);
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "linear: weight must have shape [N, ", K, "] (K = x.shape[1]), got ",
              weight.sizes());
  at::Tensor bias_c;
  if (bias.has_value()) {
    check_float_cpu("bias", *bias, 1);
    TORCH_CHECK(bias->size(0) == N, "linear: bias must have shape [", N, "] (N = weight.shape[0]), got ",
                bias->sizes());
    bias_c = bias->contiguous();
  }
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;

  if (M <= 8) {
    run_linear<8>(x, weight, bias_c, y);
  } else {
    run_linear<16>(x, weight, bias_c, y);
  }
  return y;
}

}  // namespace ponder::cpu
