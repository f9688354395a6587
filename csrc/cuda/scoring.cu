// Torch glue of the CUDA scoring ops: argument checks (shapes, dtypes, devices; index
// values are not read, that would synchronise), dtype dispatch, launch on the current
// stream. The kernels are in csrc/include/ponder/scoring.cuh; the semantics in
// python/ponder/reference/scoring.py.
#include <ATen/ops/arange.h>
#include <ATen/ops/argsort.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/searchsorted.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <tuple>
#include <type_traits>

#include "float_dtypes.h"
#include "ponder/scoring.cuh"
#include "ponder_ops.h"
#include "scoring_checks.h"

namespace ponder::cuda {
namespace {

namespace kernels = ponder::cuda_scoring;

void check_cuda(const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), "the cuda scoring kernels need CUDA tensors, got ", t.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_scores(const at::Tensor& head_logits, const at::Tensor& rows,
                                                           const at::Tensor& solution, const at::Tensor& prior_value,
                                                           const at::Tensor& prior_count, c10::string_view head,
                                                           int64_t good, int64_t bad, c10::string_view aggregate) {
  const StepScoresOptions options = check_step_scores_args(head_logits, rows, solution, prior_value, prior_count, head,
                                                           good, bad, aggregate);
  check_cuda(head_logits);
  const int64_t num_steps = rows.size(0), num_solutions = prior_value.size(0);
  TORCH_CHECK(num_steps <= INT_MAX && num_solutions <= INT_MAX, "step_scores supports at most 2^31 - 1 steps and ",
              "solutions, got ", num_steps, " and ", num_solutions);
  const c10::cuda::CUDAGuard device_guard(head_logits.device());
  const at::Tensor rows_c = rows.contiguous();
  const at::Tensor prior_value_c = prior_value.contiguous(), prior_count_c = prior_count.contiguous();
  // Each solution's steps in step order, grouped on the device (no sync): a stable sort by
  // solution; a step with an out-of-range solution falls outside every group.
  const at::Tensor order = at::argsort(solution, /*stable=*/true);
  const at::Tensor offsets = at::searchsorted(at::index_select(solution, 0, order),
                                              at::arange(num_solutions + 1, solution.options()));
  at::Tensor scores = at::empty({num_steps}, prior_value.options());
  at::Tensor value = at::empty({num_solutions}, prior_value.options());
  at::Tensor count = at::empty({num_solutions}, prior_count.options());
  const int64_t col_stride = head_logits.stride(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float_dtype<__half, __nv_bfloat16>(head_logits.scalar_type(), "head_logits", [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const kernels::HeadLogits<T> logits{static_cast<const T*>(head_logits.const_data_ptr()), head_logits.size(0),
                                        head_logits.stride(0), good * col_stride, bad * col_stride};
    C10_CUDA_CHECK(kernels::launch_step_scores(
        logits, options.head, rows_c.const_data_ptr<int64_t>(), num_steps, order.const_data_ptr<int64_t>(),
        offsets.const_data_ptr<int64_t>(), prior_value_c.const_data_ptr<float>(),
        prior_count_c.const_data_ptr<int64_t>(), num_solutions, options.aggregate, scores.data_ptr<float>(),
        value.data_ptr<float>(), count.data_ptr<int64_t>(), stream));
  });
  return {scores, value, count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vote(const at::Tensor& answers, const at::Tensor& scores,
                                                    const at::Tensor& offsets, c10::string_view method) {
  const scoring::VoteMethod parsed = check_vote_args(answers, scores, offsets, method);
  check_cuda(answers);
  const int64_t num_prompts = offsets.size(0) - 1;
  TORCH_CHECK(num_prompts <= INT_MAX, "vote supports at most 2^31 - 1 prompts, got ", num_prompts);
  const c10::cuda::CUDAGuard device_guard(answers.device());
  const at::Tensor answers_c = answers.contiguous(), scores_c = scores.contiguous(), offsets_c = offsets.contiguous();
  at::Tensor winner = at::empty({num_prompts}, answers.options());
  at::Tensor answer = at::empty({num_prompts}, answers.options());
  at::Tensor weight = at::empty({num_prompts}, scores.options());
  C10_CUDA_CHECK(kernels::launch_vote(answers_c.const_data_ptr<int64_t>(), scores_c.const_data_ptr<float>(),
                                      offsets_c.const_data_ptr<int64_t>(), answers.size(0), num_prompts, parsed,
                                      winner.data_ptr<int64_t>(), answer.data_ptr<int64_t>(),
                                      weight.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return {winner, answer, weight};
}

}  // namespace ponder::cuda
