// Torch-level entry points of every op, one declaration per backend. The schemas live
// in torch_bindings.cpp; shapes and dtypes are documented there.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace ponder {

// Every backend defines the same set of functions, each in its own namespace.
#define PONDER_BACKEND_OPS                                                                                       \
  at::Tensor filtered_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,   \
                            const at::Tensor& top_p, const at::Tensor& min_p);                                   \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature, \
                                                        const at::Tensor& top_k, const at::Tensor& top_p,        \
                                                        const at::Tensor& min_p, const at::Tensor& seeds,        \
                                                        int64_t num_samples);                                    \
  void copy_blocks(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& src, const at::Tensor& dst);      \
  void write_kv(at::Tensor& k_cache, at::Tensor& v_cache, int64_t layer, const at::Tensor& k,                    \
                const at::Tensor& v, const at::Tensor& slot_mapping);                                            \
  void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t layer, \
                       const at::Tensor& block_tables, const at::Tensor& seq_lens,                               \
                       const at::Tensor& query_lens, double scale, at::Tensor& out);                             \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> step_scores(                                                    \
      const at::Tensor& head_logits, const at::Tensor& rows, const at::Tensor& solution,                         \
      const at::Tensor& prior_value, const at::Tensor& prior_count, c10::string_view head, int64_t good,         \
      int64_t bad, c10::string_view aggregate);                                                                  \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> vote(const at::Tensor& answers, const at::Tensor& scores,       \
                                                      const at::Tensor& offsets, c10::string_view method);

namespace cpu {
PONDER_BACKEND_OPS
// CPU only: on GPUs the model runner's projections go to cuBLAS through F.linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
}  // namespace cpu

#ifdef PONDER_WITH_CUDA
namespace cuda {
PONDER_BACKEND_OPS
}  // namespace cuda
#endif

#undef PONDER_BACKEND_OPS

}  // namespace ponder
