// Torch glue of the CUDA sampling ops: argument checks, dtype dispatch, launch on the
// current stream. The kernels are in csrc/include/ponder/sampling.cuh; the semantics in
// python/ponder/reference/sampling.py. Nothing here synchronises with the GPU: per-row
// parameter values are not checked (the kernels clamp them into range).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <tuple>
#include <type_traits>

#include "ponder/sampling.cuh"
#include "ponder_ops.h"
#include "sampling_checks.h"

namespace ponder::cuda {
namespace {

namespace kernels = ponder::cuda_sampling;

void check_cuda_args(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                     const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor* seeds) {
  check_sampling_args(logits, temperature, top_k, top_p, min_p, seeds);
  TORCH_CHECK(logits.is_cuda(), "logits must be a CUDA tensor for the cuda backend, got one on ", logits.device());
  TORCH_CHECK(logits.size(0) <= INT_MAX, "batch ", logits.size(0), " exceeds the supported maximum of 2^31 - 1");
}

template <typename T>
kernels::PerRow<T> per_row(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0)};
}

kernels::FilterParams filter_params(const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
                                    const at::Tensor& min_p) {
  return {per_row<float>(temperature), per_row<int64_t>(top_k), per_row<float>(top_p), per_row<float>(min_p)};
}

// Calls fn(view) with a LogitsView of logits' element type: float, __half or
// __nv_bfloat16 (the CUDA types with at::Half's and at::BFloat16's layout).
template <typename Fn>
void with_logits_view(const at::Tensor& logits, Fn&& fn) {
  const auto view = [&](auto* typed) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(typed)>>;
    return kernels::LogitsView<T>{typed, logits.size(0), static_cast<int>(logits.size(1)), logits.stride(0),
                                  logits.stride(1)};
  };
  const void* data = logits.const_data_ptr();
  switch (logits.scalar_type()) {
    case at::kFloat:
      return fn(view(static_cast<const float*>(data)));
    case at::kHalf:
      return fn(view(static_cast<const __half*>(data)));
    case at::kBFloat16:
      return fn(view(static_cast<const __nv_bfloat16*>(data)));
    default:
      TORCH_CHECK(false, "logits must be float32, float16 or bfloat16, got ", logits.scalar_type());
  }
}

}  // namespace

// logits: float32/float16/bfloat16 [batch, vocab], any strides; temperature, top_p,
// min_p: float32 [batch]; top_k: int64 [batch]. Returns float32 [batch, vocab].
at::Tensor filtered_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                          const at::Tensor& top_p, const at::Tensor& min_p) {
  check_cuda_args(logits, temperature, top_k, top_p, min_p, nullptr);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  at::Tensor probs = at::empty(logits.sizes(), logits.options().dtype(at::kFloat));
  const kernels::FilterParams params = filter_params(temperature, top_k, top_p, min_p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits_view(logits, [&](const auto& view) {
    C10_CUDA_CHECK(kernels::launch_filtered_probs(view, params, probs.data_ptr<float>(), stream));
  });
  return probs;
}

// As filtered_probs, plus seeds: int64 [batch]. Returns tokens int64 [batch, num_samples],
// logprobs and raw_logprobs float32 [batch, num_samples].
std::tuple<at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                      const at::Tensor& top_k, const at::Tensor& top_p,
                                                      const at::Tensor& min_p, const at::Tensor& seeds,
                                                      int64_t num_samples) {
  check_cuda_args(logits, temperature, top_k, top_p, min_p, &seeds);
  TORCH_CHECK(num_samples >= 1, "num_samples must be >= 1, got ", num_samples);
  TORCH_CHECK(num_samples <= INT_MAX, "num_samples ", num_samples, " exceeds the supported maximum of 2^31 - 1");
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const int64_t batch = logits.size(0);
  const at::TensorOptions options = logits.options();
  at::Tensor tokens = at::empty({batch, num_samples}, options.dtype(at::kLong));
  at::Tensor logprobs = at::empty({batch, num_samples}, options.dtype(at::kFloat));
  at::Tensor raw_logprobs = at::empty({batch, num_samples}, options.dtype(at::kFloat));
  const kernels::FilterParams params = filter_params(temperature, top_k, top_p, min_p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits_view(logits, [&](const auto& view) {
    C10_CUDA_CHECK(kernels::launch_sample(view, params, per_row<int64_t>(seeds), static_cast<int>(num_samples),
                                          tokens.data_ptr<int64_t>(), logprobs.data_ptr<float>(),
                                          raw_logprobs.data_ptr<float>(), stream));
  });
  return {tokens, logprobs, raw_logprobs};
}

}  // namespace ponder::cuda
