// CUDA kernels of the PRM scoring ops: step scores, their fold into each solution's
// aggregate, and votes. Framework-free: raw pointers and sizes in, a cudaError_t out.
//
// Semantics: python/ponder/reference/scoring.py. The arithmetic and the ranking rules
// are scoring.h's PONDER_HOST_DEVICE functions, the CPU kernels' own. Index values are
// not checked on the host (that would synchronise): an out-of-range row scores NaN, a
// step outside every solution's group is not folded, offsets are clamped into [0, N], and
// a negative answer is no answer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "ponder/scoring.h"

namespace ponder::cuda_scoring {

using scoring::Aggregate;
using scoring::Head;
using scoring::Ranked;
using scoring::VoteMethod;

inline constexpr int kStepThreads = 256;
inline constexpr int kSolutionThreads = 128;
inline constexpr int kVoteThreads = 128;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// head_logits [num_rows, C]: element (row, column) at logits[row * row_stride + column *
// col_stride]; the launcher passes good_offset = good * col_stride (and bad's likewise).
template <typename T>
struct HeadLogits {
  const T* data;
  int64_t num_rows, row_stride, good_offset, bad_offset;
};

// Thread p: the score of step p.
template <typename T>
__global__ void step_scores_kernel(const HeadLogits<T> logits, Head head, const int64_t* rows, int64_t num_steps,
                                   float* scores) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= num_steps) return;
  const int64_t row = rows[p];
  if (row < 0 || row >= logits.num_rows) {
    scores[p] = NAN;
    return;
  }
  const T* base = logits.data + row * logits.row_stride;
  const float bad = head == Head::kPair ? to_float(base[logits.bad_offset]) : 0.0f;
  scores[p] = scoring::step_score(head, to_float(base[logits.good_offset]), bad);
}

// Thread s: folds solution s's steps order[offsets[s]:offsets[s + 1]] (in step order) into
// its prior. A solution has a handful of new steps: one thread walks them in order.
__global__ void aggregate_kernel(const float* scores, const int64_t* order, const int64_t* offsets,
                                 const float* prior_value, const int64_t* prior_count, int64_t num_solutions,
                                 Aggregate aggregate, float* value, int64_t* count) {
  const int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= num_solutions) return;
  scoring::NewSteps steps;
  for (int64_t i = offsets[s]; i < offsets[s + 1]; ++i) scoring::add_step(steps, aggregate, scores[order[i]]);
  value[s] = scoring::finish_value(steps, aggregate, prior_value[s], prior_count[s]);
  count[s] = prior_count[s] + steps.count;
}

// Scores the steps, then folds each solution's: `order` lists the steps grouped by
// solution in step order, solution s's at order[offsets[s]:offsets[s + 1]].
template <typename T>
cudaError_t launch_step_scores(const HeadLogits<T>& logits, Head head, const int64_t* rows, int64_t num_steps,
                               const int64_t* order, const int64_t* offsets, const float* prior_value,
                               const int64_t* prior_count, int64_t num_solutions, Aggregate aggregate, float* scores,
                               float* value, int64_t* count, cudaStream_t stream) {
  if (num_steps > 0) {
    const auto blocks = static_cast<unsigned>((num_steps + kStepThreads - 1) / kStepThreads);
    step_scores_kernel<T><<<blocks, kStepThreads, 0, stream>>>(logits, head, rows, num_steps, scores);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return error;
  }
  if (num_solutions > 0) {
    const auto blocks = static_cast<unsigned>((num_solutions + kSolutionThreads - 1) / kSolutionThreads);
    aggregate_kernel<<<blocks, kSolutionThreads, 0, stream>>>(scores, order, offsets, prior_value, prior_count,
                                                               num_solutions, aggregate, value, count);
  }
  return cudaGetLastError();
}

struct BetterOf {
  __device__ Ranked operator()(const Ranked& a, const Ranked& b) const { return scoring::better_of(a, b); }
};

// Whether candidate i is the first of [start, i] with its answer.
__device__ __forceinline__ bool first_of_answer(const int64_t* answers, int64_t start, int64_t i) {
  for (int64_t j = start; j < i; ++j) {
    if (answers[j] == answers[i]) return false;
  }
  return true;
}

// Block g: the vote of prompt g. Each thread takes every kVoteThreads-th candidate; for
// "weighted" and "majority" a candidate that is the first of its answer sums that
// answer's candidates in index order (the CPU's order, so sums match it bit for bit).
// The work is quadratic in a prompt's candidates, spread over the block's threads.
__global__ void __launch_bounds__(kVoteThreads)
    vote_kernel(const int64_t* answers, const float* scores, const int64_t* offsets, int64_t num_candidates,
                VoteMethod method, int64_t* winner, int64_t* answer, float* weight) {
  const int64_t g = blockIdx.x;
  const auto clamp = [](int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); };
  const int64_t start = clamp(offsets[g], 0, num_candidates);
  const int64_t end = clamp(offsets[g + 1], start, num_candidates);
  Ranked mine;
  for (int64_t i = start + threadIdx.x; i < end; i += kVoteThreads) {
    if (method == VoteMethod::kMax) {
      mine = scoring::better_of(mine, scoring::candidate_entry(scores[i], i));
      continue;
    }
    if (answers[i] < 0 || !first_of_answer(answers, start, i)) continue;
    scoring::AnswerGroup group;
    for (int64_t j = i; j < end; ++j) {
      if (answers[j] == answers[i]) group.add(method, scores[j], j);
    }
    mine = scoring::better_of(mine, group.entry(i));
  }
  using Reduce = cub::BlockReduce<Ranked, kVoteThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const Ranked best = Reduce(storage).Reduce(mine, BetterOf{});
  if (threadIdx.x == 0) {
    winner[g] = best.winner;
    answer[g] = best.winner >= 0 ? answers[best.winner] : -1;
    weight[g] = best.weight;
  }
}

// offsets: int64 [num_prompts + 1]; winner, answer: int64 [num_prompts]; weight: float [num_prompts].
inline cudaError_t launch_vote(const int64_t* answers, const float* scores, const int64_t* offsets,
                               int64_t num_candidates, int64_t num_prompts, VoteMethod method, int64_t* winner,
                               int64_t* answer, float* weight, cudaStream_t stream) {
  if (num_prompts == 0) return cudaSuccess;
  vote_kernel<<<static_cast<unsigned>(num_prompts), kVoteThreads, 0, stream>>>(answers, scores, offsets,
                                                                               num_candidates, method, winner,
                                                                               answer, weight);
  return cudaGetLastError();
}

}  // namespace ponder::cuda_scoring
