// Argument checks shared by the CPU and CUDA glue of the sampling ops. The Python
// wrappers check the same things with friendlier messages; these guard direct
// torch.ops.ponder.* calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <limits>

namespace ponder {

inline void check_per_row(const at::Tensor& t, const char* name, at::ScalarType dtype, const at::Tensor& logits) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == logits.size(0), name, " must have shape [", logits.size(0),
              "] (one value per row), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == logits.device(), name, " is on ", t.device(), " but logits are on ", logits.device());
}

// logits: float32/float16/bfloat16 [B, V]; temperature, top_p, min_p: float32 [B];
// top_k: int64 [B]; seeds (optional): int64 [B].
inline void check_sampling_args(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                                const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor* seeds) {
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D [batch, vocab], got shape ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(logits.size(1) > 0, "logits has an empty vocab: shape ", logits.sizes());
  TORCH_CHECK(logits.size(1) <= std::numeric_limits<int32_t>::max(), "vocab ", logits.size(1),
              " exceeds the supported maximum of 2^31 - 1");
  check_per_row(temperature, "temperature", at::kFloat, logits);
  check_per_row(top_k, "top_k", at::kLong, logits);
  check_per_row(top_p, "top_p", at::kFloat, logits);
  check_per_row(min_p, "min_p", at::kFloat, logits);
  if (seeds != nullptr) check_per_row(*seeds, "seeds", at::kLong, logits);
}

}  // namespace ponder
