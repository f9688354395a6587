// Argument checks shared by the CPU and CUDA glue of the scoring ops (shapes, dtypes,
// devices, the string and column arguments). The Python wrappers check the same things,
// and index values, with friendlier messages; these guard direct torch.ops.ponder.* calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <array>
#include <string>

#include "ponder/scoring.h"

namespace ponder {

// A 1-D tensor of `dtype` on `anchor`'s device; of `length` entries unless length < 0.
inline void check_vector(const at::Tensor& t, const char* name, at::ScalarType dtype, const at::Tensor& anchor,
                         int64_t length = -1) {
  TORCH_CHECK(t.dim() == 1 && (length < 0 || t.size(0) == length), name, " must be 1-D",
              length < 0 ? "" : " of length " + std::to_string(length), ", got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == anchor.device(), name, " is on ", t.device(), " but must be on ", anchor.device());
}

// The position of `value` among `choices` (the enum value it names), or an error that
// lists them.
template <size_t N>
int parse_choice(c10::string_view value, const char* name, const std::array<const char*, N>& choices) {
  for (size_t i = 0; i < N; ++i) {
    if (value == choices[i]) return static_cast<int>(i);
  }
  std::string expected;
  for (const char* choice : choices) expected += (expected.empty() ? "'" : ", '") + std::string(choice) + "'";
  TORCH_CHECK(false, name, " must be one of ", expected, ", got '", value, "'");
}

struct StepScoresOptions {
  scoring::Head head;
  scoring::Aggregate aggregate;
};

// head_logits: float32/float16/bfloat16 [T, C]; rows, solution: int64 [P]; prior_value:
// float32 [S]; prior_count: int64 [S]; head: 'pair' | 'sigmoid'; good (and, for a pair
// head, bad) columns in [0, C); aggregate: 'last' | 'min' | 'prod' | 'mean'.
inline StepScoresOptions check_step_scores_args(const at::Tensor& head_logits, const at::Tensor& rows,
                                                const at::Tensor& solution, const at::Tensor& prior_value,
                                                const at::Tensor& prior_count, c10::string_view head, int64_t good,
                                                int64_t bad, c10::string_view aggregate) {
  TORCH_CHECK(head_logits.dim() == 2, "head_logits must be 2-D [T, C], got shape ", head_logits.sizes());
  const auto dtype = head_logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "head_logits must be float32, float16 or bfloat16, got ", dtype);
  check_vector(rows, "rows", at::kLong, head_logits);
  check_vector(solution, "solution", at::kLong, head_logits, rows.size(0));
  check_vector(prior_value, "prior_value", at::kFloat, head_logits);
  check_vector(prior_count, "prior_count", at::kLong, head_logits, prior_value.size(0));
  const auto parsed_head = static_cast<scoring::Head>(parse_choice<2>(head, "head", {"pair", "sigmoid"}));
  const auto parsed_aggregate = static_cast<scoring::Aggregate>(
      parse_choice<4>(aggregate, "aggregate", {"last", "min", "prod", "mean"}));
  const int64_t columns = head_logits.size(1);
  TORCH_CHECK(good >= 0 && good < columns, "good = ", good, " is out of range: expected 0 <= good < ", columns,
              " (C)");
  if (parsed_head == scoring::Head::kPair) {
    TORCH_CHECK(bad >= 0 && bad < columns, "bad = ", bad, " is out of range: expected 0 <= bad < ", columns, " (C)");
    TORCH_CHECK(bad != good, "good and bad are both column ", good, ": a pair head needs two distinct columns");
  }
  return {parsed_head, parsed_aggregate};
}

// answers: int64 [N]; scores: float32 [N]; offsets: int64 [G + 1], G + 1 >= 1; method:
// 'max' | 'weighted' | 'majority'. Returns the parsed method.
inline scoring::VoteMethod check_vote_args(const at::Tensor& answers, const at::Tensor& scores,
                                           const at::Tensor& offsets, c10::string_view method) {
  check_vector(answers, "answers", at::kLong, answers);
  check_vector(scores, "scores", at::kFloat, answers, answers.size(0));
  check_vector(offsets, "offsets", at::kLong, answers);
  TORCH_CHECK(offsets.size(0) >= 1, "offsets must have G + 1 >= 1 entries, got none");
  return static_cast<scoring::VoteMethod>(parse_choice<3>(method, "method", {"max", "weighted", "majority"}));
}

}  // namespace ponder
