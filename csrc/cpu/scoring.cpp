// Torch glue of the CPU scoring ops (csrc/include/ponder/scoring.h): checks (shapes and,
// since CPU tensors are cheap to read, index values), dtype dispatch, and parallel loops.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "float_dtypes.h"
#include "ponder/scoring.h"
#include "ponder_ops.h"
#include "scoring_checks.h"

namespace ponder::cpu {
namespace {

using scoring::NewSteps;
using scoring::Ranked;

void check_cpu(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "the cpu scoring kernels need CPU tensors, got ", t.device());
}

// Steps per task: a step is two loads and an exp, so small batches run on one thread.
constexpr int64_t kStepGrain = 4096;
// Candidates per task, on average, for the votes (a few ns a candidate).
constexpr int64_t kCandidateGrain = 4096;

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_scores(const at::Tensor& head_logits, const at::Tensor& rows,
                                                           const at::Tensor& solution, const at::Tensor& prior_value,
                                                           const at::Tensor& prior_count, c10::string_view head,
                                                           int64_t good, int64_t bad, c10::string_view aggregate) {
  const StepScoresOptions options = check_step_scores_args(head_logits, rows, solution, prior_value, prior_count, head,
                                                           good, bad, aggregate);
  check_cpu(head_logits);
  const at::Tensor rows_c = rows.contiguous(), solution_c = solution.contiguous();
  const at::Tensor prior_value_c = prior_value.contiguous(), prior_count_c = prior_count.contiguous();
  const int64_t* row_ids = rows_c.const_data_ptr<int64_t>();
  const int64_t* solution_ids = solution_c.const_data_ptr<int64_t>();
  const float* prior = prior_value_c.const_data_ptr<float>();
  const int64_t* prior_n = prior_count_c.const_data_ptr<int64_t>();
  const int64_t num_steps = rows.size(0), num_solutions = prior_value.size(0), num_rows = head_logits.size(0);
  for (int64_t p = 0; p < num_steps; ++p) {
    TORCH_CHECK(row_ids[p] >= 0 && row_ids[p] < num_rows, "rows[", p, "] = ", row_ids[p],
                " is out of range: expected 0 <= row < ", num_rows, " (T)");
    TORCH_CHECK(solution_ids[p] >= 0 && solution_ids[p] < num_solutions, "solution[", p, "] = ", solution_ids[p],
                " is out of range: expected 0 <= solution < ", num_solutions, " (S)");
  }
  for (int64_t s = 0; s < num_solutions; ++s) {
    TORCH_CHECK(prior_n[s] >= 0, "prior_count[", s, "] = ", prior_n[s], " is out of range: expected >= 0");
  }

  at::Tensor scores = at::empty({num_steps}, prior_value.options());
  at::Tensor value = at::empty({num_solutions}, prior_value.options());
  at::Tensor count = at::empty({num_solutions}, prior_count.options());
  float* score_data = scores.data_ptr<float>();
  // Only two columns of a row are read: the logits stay strided, whatever the layout.
  dispatch_float_dtype<Float16Bits, BFloat16Bits>(head_logits.scalar_type(), "head_logits", [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const T* logits = static_cast<const T*>(head_logits.const_data_ptr());
    at::parallel_for(0, num_steps, kStepGrain, [&](int64_t begin, int64_t end) {
      scoring::score_steps(logits, head_logits.stride(0), head_logits.stride(1), row_ids, options.head,
                           good, bad, begin, end, score_data);
    });
  });
  // Folding a step into its solution is a few flops: one pass in step order (which is
  // also the order "last" needs) costs less than grouping the steps for threads would.
  std::vector<NewSteps> added(num_solutions);
  for (int64_t p = 0; p < num_steps; ++p) scoring::add_step(added[solution_ids[p]], options.aggregate, score_data[p]);
  float* value_data = value.data_ptr<float>();
  int64_t* count_data = count.data_ptr<int64_t>();
  for (int64_t s = 0; s < num_solutions; ++s) {
    value_data[s] = scoring::finish_value(added[s], options.aggregate, prior[s], prior_n[s]);
    count_data[s] = prior_n[s] + added[s].count;
  }
  return {scores, value, count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vote(const at::Tensor& answers, const at::Tensor& scores,
                                                    const at::Tensor& offsets, c10::string_view method) {
  const scoring::VoteMethod parsed = check_vote_args(answers, scores, offsets, method);
  check_cpu(answers);
  const at::Tensor answers_c = answers.contiguous(), scores_c = scores.contiguous(), offsets_c = offsets.contiguous();
  const int64_t* answer_ids = answers_c.const_data_ptr<int64_t>();
  const float* score_data = scores_c.const_data_ptr<float>();
  const int64_t* bounds = offsets_c.const_data_ptr<int64_t>();
  const int64_t num_candidates = answers.size(0), num_prompts = offsets.size(0) - 1;
  TORCH_CHECK(bounds[0] == 0 && bounds[num_prompts] == num_candidates, "offsets must start at 0 and end at N = ",
              num_candidates, ", got offsets[0] = ", bounds[0], " and offsets[-1] = ", bounds[num_prompts]);
  for (int64_t g = 0; g < num_prompts; ++g) {
    TORCH_CHECK(bounds[g] <= bounds[g + 1], "offsets must be nondecreasing, got offsets[", g, "] = ", bounds[g],
                " > offsets[", g + 1, "] = ", bounds[g + 1]);
  }
  for (int64_t i = 0; i < num_candidates; ++i) {
    TORCH_CHECK(answer_ids[i] >= -1, "answers[", i, "] = ", answer_ids[i],
                " is out of range: expected >= 0, or -1 for no answer");
  }

  const at::TensorOptions long_options = answers.options();
  at::Tensor winner = at::empty({num_prompts}, long_options), answer = at::empty({num_prompts}, long_options);
  at::Tensor weight = at::empty({num_prompts}, scores.options());
  int64_t* winner_data = winner.data_ptr<int64_t>();
  int64_t* answer_data = answer.data_ptr<int64_t>();
  float* weight_data = weight.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kCandidateGrain * num_prompts / std::max<int64_t>(1, num_candidates));
  at::parallel_for(0, num_prompts, grain, [&](int64_t begin, int64_t end) {
    scoring::VoteScratch scratch;
    for (int64_t g = begin; g < end; ++g) {
      const Ranked best = scoring::vote_prompt(answer_ids, score_data, bounds[g], bounds[g + 1], parsed, scratch);
      winner_data[g] = best.winner;
      answer_data[g] = best.winner >= 0 ? answer_ids[best.winner] : -1;
      weight_data[g] = best.weight;
    }
  });
  return {winner, answer, weight};
}

}  // namespace ponder::cpu
