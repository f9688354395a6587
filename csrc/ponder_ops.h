// Torch-level entry points of every op, one declaration per backend. The schemas live
// in torch_bindings.cpp; shapes and dtypes are documented there.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace ponder {

namespace cpu {
at::Tensor filtered_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                          const at::Tensor& top_p, const at::Tensor& min_p);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                      const at::Tensor& top_k, const at::Tensor& top_p,
                                                      const at::Tensor& min_p, const at::Tensor& seeds,
                                                      int64_t num_samples);
}  // namespace cpu

#ifdef PONDER_WITH_CUDA
namespace cuda {
at::Tensor filtered_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                          const at::Tensor& top_p, const at::Tensor& min_p);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                      const at::Tensor& top_k, const at::Tensor& top_p,
                                                      const at::Tensor& min_p, const at::Tensor& seeds,
                                                      int64_t num_samples);
}  // namespace cuda
#endif

}  // namespace ponder
