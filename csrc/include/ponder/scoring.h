// PRM scoring kernels: step scores from head logits, folded into each solution's running
// aggregate, and votes across the candidates of a prompt. Framework-free: raw pointers
// and sizes in. Callers check the arguments and parallelise.
//
// Semantics: python/ponder/reference/scoring.py. The PONDER_HOST_DEVICE functions are
// the arithmetic and the ranking rules, shared with the CUDA kernels (scoring.cuh) so
// that both backends round and break ties the same way; the rest is for the CPU.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ponder/host_device.h"
#include "ponder/vec_math.h"

namespace ponder::scoring {

// The values of the ops' string arguments.
enum class Head : int { kPair = 0, kSigmoid = 1 };
enum class Aggregate : int { kLast = 0, kMin = 1, kProd = 2, kMean = 3 };
enum class VoteMethod : int { kMax = 0, kWeighted = 1, kMajority = 2 };

// A step's score from its logits (float32): pair: sigmoid(good - bad), the softmax
// probability of good over the two; sigmoid: sigmoid(good). 1 / (1 + exp(-x)) is exact
// at the infinities (exp(-inf) = 0, exp(inf) = inf) and NaN in, NaN out; +inf - +inf is NaN.
PONDER_HOST_DEVICE float step_score(Head head, float good, float bad) {
  const float x = head == Head::kPair ? good - bad : good;
  return 1.0f / (1.0f + expf(-x));
}

// min that returns NaN when either side is NaN (fminf and std::min drop it).
PONDER_HOST_DEVICE float min_keeping_nan(float a, float b) { return (a < b || a != a) ? a : b; }

// The new steps of one solution folded in order: the last score, or their min, product
// or sum. The prior joins only at the end (finish_value), in the reference's order.
struct NewSteps {
  float total = 0.0f;
  int64_t count = 0;
};

PONDER_HOST_DEVICE void add_step(NewSteps& steps, Aggregate aggregate, float score) {
  if (steps.count == 0 || aggregate == Aggregate::kLast) {
    steps.total = score;
  } else if (aggregate == Aggregate::kMin) {
    steps.total = min_keeping_nan(steps.total, score);
  } else if (aggregate == Aggregate::kProd) {
    steps.total *= score;
  } else {
    steps.total += score;
  }
  ++steps.count;
}

// A solution's value after its new steps: the prior combined with them when its count
// is positive; the prior itself, untouched, when there is no new step.
PONDER_HOST_DEVICE float finish_value(const NewSteps& steps, Aggregate aggregate, float prior_value,
                                      int64_t prior_count) {
  if (steps.count == 0) return prior_value;
  const bool has_prior = prior_count > 0;
  switch (aggregate) {
    case Aggregate::kMin:
      return has_prior ? min_keeping_nan(prior_value, steps.total) : steps.total;
    case Aggregate::kProd:
      return has_prior ? prior_value * steps.total : steps.total;
    case Aggregate::kMean:
      return ((has_prior ? prior_value * static_cast<float>(prior_count) : 0.0f) + steps.total) /
             static_cast<float>((has_prior ? prior_count : 0) + steps.count);
    default:
      return steps.total;
  }
}

// Votes rank entries (candidates, or the answer groups of a prompt) by a float key, ties
// to the smaller order (a candidate's index, a group's first candidate). Keys are never
// NaN: comparable() reads a NaN score as -inf.
struct Ranked {
  float key = -INFINITY;
  int64_t order = INT64_MAX;  // INT64_MAX: no entry yet
  int64_t winner = -1;        // the candidate this entry stands for
  float weight = 0.0f;        // what is reported for it
};

PONDER_HOST_DEVICE float comparable(float score) { return score != score ? -INFINITY : score; }

PONDER_HOST_DEVICE Ranked better_of(const Ranked& a, const Ranked& b) {
  return b.key > a.key || (b.key == a.key && b.order < a.order) ? b : a;
}

// A candidate's entry: its score (NaN read as -inf), which is also what "max" reports.
PONDER_HOST_DEVICE Ranked candidate_entry(float score, int64_t index) {
  const float key = comparable(score);
  return {key, index, index, key};
}

// The candidates of one answer, added in index order: their sum (each score, NaN adding
// 0, or 1 each for a count) and their best candidate. Index order makes the first of
// equal scores stay best: only a strictly larger score replaces it.
struct AnswerGroup {
  float sum = 0.0f;
  float best_key = -INFINITY;
  int64_t best = -1;

  PONDER_HOST_DEVICE void add(VoteMethod method, float score, int64_t index) {
    sum += method == VoteMethod::kMajority ? 1.0f : (score != score ? 0.0f : score);
    const float key = comparable(score);
    if (key > best_key || best < 0) best_key = key, best = index;
  }

  // The group's entry in its prompt's ranking, ordered by its first candidate; a NaN
  // sum ranks lowest.
  PONDER_HOST_DEVICE Ranked entry(int64_t first) const { return {comparable(sum), first, best, sum}; }
};

// ---- CPU ----

// scores[p] for steps p in [begin, end): logits element (row, column) at
// logits[row * row_stride + column * col_stride]; rows[p] in range (checked by the caller).
template <typename T>
void score_steps(const T* logits, int64_t row_stride, int64_t col_stride, const int64_t* rows, Head head,
                 int64_t good, int64_t bad, int64_t begin, int64_t end, float* scores) {
  for (int64_t p = begin; p < end; ++p) {
    const T* row = logits + rows[p] * row_stride;
    const float bad_logit = head == Head::kPair ? to_float(row[bad * col_stride]) : 0.0f;
    scores[p] = step_score(head, to_float(row[good * col_stride]), bad_logit);
  }
}

// Per-thread buffers of vote_prompt, reused across prompts so the loop allocates nothing.
struct VoteScratch {
  std::vector<int64_t> slot_answer;  // open-addressing table: the answer in each slot, -1 when empty
  std::vector<int64_t> slot_group;   // the slot's group, an index into groups
  std::vector<AnswerGroup> groups;   // in the order of their first candidates
  std::vector<int64_t> first;        // each group's first candidate
};

// The vote of one prompt over candidates [begin, end): "max" is one scan; "weighted" and
// "majority" find each candidate's answer group in a hash table (expected O(1) a
// candidate), so groups are summed in candidate order, as the reference sums them.
inline Ranked vote_prompt(const int64_t* answers, const float* scores, int64_t begin, int64_t end, VoteMethod method,
                          VoteScratch& scratch) {
  if (method == VoteMethod::kMax) {
    // One group of every candidate, by score alone (scalar state: a Ranked select per
    // candidate is ten times slower).
    AnswerGroup all;
    for (int64_t i = begin; i < end; ++i) all.add(method, scores[i], i);
    return all.best < 0 ? Ranked{} : candidate_entry(scores[all.best], all.best);
  }
  size_t capacity = 16;  // a power of two, at least twice the candidates: short probes
  while (capacity < 2 * static_cast<size_t>(end - begin)) capacity *= 2;
  scratch.slot_answer.assign(capacity, -1);
  scratch.slot_group.resize(capacity);
  scratch.groups.clear();
  scratch.first.clear();
  const int shift = 64 - std::countr_zero(capacity);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t answer = answers[i];
    if (answer < 0) continue;
    // Fibonacci hashing: the top bits of answer * 2^64 / phi, then linear probing.
    size_t slot = static_cast<size_t>((static_cast<uint64_t>(answer) * 0x9E3779B97F4A7C15ull) >> shift);
    while (scratch.slot_answer[slot] >= 0 && scratch.slot_answer[slot] != answer) slot = (slot + 1) & (capacity - 1);
    if (scratch.slot_answer[slot] < 0) {
      scratch.slot_answer[slot] = answer;
      scratch.slot_group[slot] = static_cast<int64_t>(scratch.groups.size());
      scratch.groups.emplace_back();
      scratch.first.push_back(i);
    }
    scratch.groups[scratch.slot_group[slot]].add(method, scores[i], i);
  }
  Ranked best;
  for (size_t g = 0; g < scratch.groups.size(); ++g) best = better_of(best, scratch.groups[g].entry(scratch.first[g]));
  return best;
}

}  // namespace ponder::scoring
