// CPU token sampling: temperature -> top-k -> top-p -> min-p, then Gumbel-max draws.
// Framework-free: raw pointers and sizes in. One call handles one row; callers
// parallelise over rows (each worker owns a RowScratch).
//
// The semantics are those of python/ponder/reference/sampling.py. Sorting-free:
//  * top-k keeps a bounded candidate list while scanning the row and selects the k-th
//    value with nth_element on it (linear time; ties at the threshold kept);
//  * top-p finds its threshold with a mass histogram over the distance to the max,
//    refined inside the one bin that holds the threshold until a handful of values
//    remain;
//  * draws evaluate Philox only for tokens that pass the filters and could still beat
//    the best Gumbel key so far.
// Where results can differ from the reference: mass sums are float64 in both, but in
// another order, so a top-p boundary token whose mass comparison is within rounding
// (~1e-15 relative) may flip; exp/log here are within ~2 ulp of torch's, so a draw
// whose two best Gumbel keys agree to ~1e-7 may pick the other token.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ponder/philox.h"
#include "ponder/vec_math.h"

namespace ponder::cpu {

struct SamplingParams {
  float temperature;  // >= 0; 0 is greedy
  int64_t top_k;      // 0 (or >= vocab) disables
  float top_p;        // (0, 1]; 1 disables
  float min_p;        // [0, 1); 0 disables
};

struct Candidate {
  float value;    // scaled logit s
  int32_t index;  // column
};

// Per-worker buffers, reused across rows so the hot loop allocates nothing.
struct RowScratch {
  std::vector<float> values;         // [vocab] cleaned (then scaled) logits of the row
  std::vector<Candidate> candidates;  // top-k survivors
  std::vector<float> candidate_values;  // their values, for the top-p search
  std::vector<double> bin_mass;      // top-p histogram
  std::vector<float> bin_values;     // top-p refinement: values of the boundary bin
  std::vector<float> bin_next;
};

// What prepare_row learns about a row: enough to write probabilities or draw tokens.
struct RowFilter {
  bool finite = false;           // the row has a finite logit
  bool greedy = false;           // temperature == 0
  bool use_candidates = false;   // kept tokens are exactly scratch.candidates (top-k on)
  int64_t argmax = 0;            // first index of the largest logit (greedy token)
  float raw_max = 0.0f;          // max cleaned logit x
  double raw_sum = 0.0;          // sum exp(x - raw_max): softmax(x) normaliser
  float s_max = 0.0f;            // max scaled logit s = x / T
  float threshold = 0.0f;        // kept: s >= threshold (top-k and top-p) ...
  float min_p = 0.0f;            // ... and exp(s - s_max) >= min_p
  double kept_mass = 0.0;        // sum of exp(s - s_max) over kept tokens

  bool kept(float s) const { return s >= threshold && exp_nonpositive(s - s_max) >= min_p; }
};

inline constexpr float kLowestFinite = -std::numeric_limits<float>::max();

// Copies one row into `dst` as float32 with NaN -> -inf and +inf -> float max; returns
// the max. src[j * col_stride] is column j.
template <typename T>
float load_clean_row(const T* src, int64_t col_stride, int64_t vocab, float* dst) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float row_max = -kInf;
  if (col_stride == 1) {
#pragma omp simd reduction(max : row_max)
    for (int64_t j = 0; j < vocab; ++j) {
      float x = to_float(src[j]);
      x = (x != x) ? -kInf : (x == kInf ? std::numeric_limits<float>::max() : x);
      dst[j] = x;
      row_max = std::max(row_max, x);
    }
  } else {
    for (int64_t j = 0; j < vocab; ++j) {
      float x = to_float(src[j * col_stride]);
      x = (x != x) ? -kInf : (x == kInf ? std::numeric_limits<float>::max() : x);
      dst[j] = x;
      row_max = std::max(row_max, x);
    }
  }
  return row_max;
}

// sum_j exp(v[j] - v_max) in float64.
inline double sum_exp(const float* v, int64_t n, float v_max) {
  double total = 0.0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < n; ++j) total += exp_nonpositive(v[j] - v_max);
  return total;
}

inline void divide_in_place(float* v, int64_t n, float divisor) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = v[j] / divisor;  // IEEE division, as the reference
}

// Fills `out` with every (value, index) whose value is >= the k-th largest finite value
// (ties included) and returns that threshold; kLowestFinite when fewer than k values are
// finite. 0 < k < n.
inline float collect_top_k(const float* v, int64_t n, int64_t k, std::vector<Candidate>& out) {
  constexpr int64_t kChunk = 16;
  const auto larger = [](const Candidate& a, const Candidate& b) { return a.value > b.value; };
  size_t capacity = static_cast<size_t>(std::max<int64_t>(2 * k, k + 256));
  float threshold = kLowestFinite;
  out.clear();
  const auto shrink = [&] {  // keep the k largest (and their ties) in `out`
    std::nth_element(out.begin(), out.begin() + (k - 1), out.end(), larger);
    threshold = out[k - 1].value;
    out.erase(std::remove_if(out.begin(), out.end(), [&](const Candidate& c) { return c.value < threshold; }),
              out.end());
  };
  for (int64_t base = 0; base < n; base += kChunk) {
    const int64_t end = std::min(n, base + kChunk);
    bool any = false;
#pragma omp simd reduction(| : any)
    for (int64_t j = base; j < end; ++j) any |= v[j] >= threshold;
    if (!any) continue;
    for (int64_t j = base; j < end; ++j)
      if (v[j] >= threshold) out.push_back({v[j], static_cast<int32_t>(j)});
    if (out.size() >= capacity) {
      shrink();
      if (out.size() * 2 > capacity) capacity *= 2;  // many ties at the threshold
    }
  }
  if (static_cast<int64_t>(out.size()) < k) return kLowestFinite;
  shrink();
  return threshold;
}

// The top-p threshold over `values` [n]: the smallest value t such that the mass
// (weights exp(v - v_max)) of values strictly greater than t is below `target`
// (= top_p * total mass). Every value >= t is kept. Requires top_p < 1.
inline float top_p_threshold(const float* values, int64_t n, float v_max, double target, RowScratch& scratch) {
  constexpr int kBins = 2048;
  constexpr int64_t kResolveDirectly = 32;
  // Values more than ~20 + log(n) below the max carry < e^-20 of the mass: they are never
  // kept for any float32 top_p < 1, so the search starts above them.
  float hi = v_max;
  float lo = v_max - (20.0f + std::log(static_cast<float>(n) + 1.0f));
  double above = 0.0;  // mass strictly above the current range
  const float* current = values;
  int64_t count = n;
  std::vector<double>& bin_mass = scratch.bin_mass;
  bin_mass.resize(kBins);
  for (int level = 0;; ++level) {
    if (count <= kResolveDirectly || hi <= lo || level == 8) {
      // A few values left (or all equal): walk them from the largest, ties together.
      std::vector<float>& rest = scratch.bin_values;  // `current` is never this buffer here
      rest.assign(current, current + count);
      std::sort(rest.begin(), rest.end(), std::greater<float>());
      float t = lo;
      for (size_t i = 0; i < rest.size() && rest[i] >= lo && above < target;) {
        t = rest[i];
        for (; i < rest.size() && rest[i] == t; ++i) above += exp_nonpositive(t - v_max);
      }
      return t;
    }
    const float inv_width = static_cast<float>(kBins) / (hi - lo);
    const auto bin_of = [&](float v) { return std::min(kBins - 1, static_cast<int>((hi - v) * inv_width)); };
    std::fill(bin_mass.begin(), bin_mass.end(), 0.0);
    for (int64_t j = 0; j < count; ++j) {
      const float v = current[j];
      if (v >= lo && v <= hi) bin_mass[bin_of(v)] += exp_nonpositive(v - v_max);
    }
    int boundary = -1;
    for (int b = 0; b < kBins; ++b) {
      if (above + bin_mass[b] >= target) {
        boundary = b;
        break;
      }
      above += bin_mass[b];
    }
    if (boundary < 0) return lo;  // rounding left the target unreached: keep the whole range
    // Recurse into the boundary bin: its values become the new, narrower range.
    scratch.bin_values.clear();
    float new_hi = lo, new_lo = hi;
    for (int64_t j = 0; j < count; ++j) {
      const float v = current[j];
      if (v >= lo && v <= hi && bin_of(v) == boundary) {
        scratch.bin_values.push_back(v);
        new_hi = std::max(new_hi, v);
        new_lo = std::min(new_lo, v);
      }
    }
    scratch.bin_values.swap(scratch.bin_next);
    current = scratch.bin_next.data();
    count = static_cast<int64_t>(scratch.bin_next.size());
    hi = new_hi;
    lo = new_lo;
  }
}

// Loads a row and computes its filter. `src` points at column 0 of the row.
template <typename T>
RowFilter prepare_row(const T* src, int64_t col_stride, int64_t vocab, const SamplingParams& p, RowScratch& scratch) {
  RowFilter f;
  scratch.values.resize(static_cast<size_t>(vocab));
  float* v = scratch.values.data();
  f.raw_max = load_clean_row(src, col_stride, vocab, v);
  f.finite = f.raw_max > -std::numeric_limits<float>::infinity();
  if (!f.finite) return f;
  f.raw_sum = sum_exp(v, vocab, f.raw_max);
  if (p.temperature == 0.0f) {
    f.greedy = true;
    f.argmax = std::find(v, v + vocab, f.raw_max) - v;
    return f;
  }
  f.s_max = f.raw_max;
  if (p.temperature != 1.0f) {
    divide_in_place(v, vocab, p.temperature);
    f.s_max = f.raw_max / p.temperature;  // division is monotone: max of quotients
  }
  f.threshold = kLowestFinite;
  f.min_p = p.min_p;
  f.use_candidates = p.top_k > 0 && p.top_k < vocab;
  if (f.use_candidates) f.threshold = collect_top_k(v, vocab, p.top_k, scratch.candidates);

  if (p.top_p < 1.0f) {
    if (f.use_candidates) {
      std::vector<float>& cand_values = scratch.candidate_values;
      cand_values.clear();
      double mass = 0.0;
      for (const Candidate& c : scratch.candidates) {
        cand_values.push_back(c.value);
        mass += exp_nonpositive(c.value - f.s_max);
      }
      f.threshold = std::max(f.threshold, top_p_threshold(cand_values.data(), static_cast<int64_t>(cand_values.size()),
                                                         f.s_max, p.top_p * mass, scratch));
    } else {
      const double mass = p.temperature == 1.0f ? f.raw_sum : sum_exp(v, vocab, f.s_max);
      f.threshold = std::max(f.threshold, top_p_threshold(v, vocab, f.s_max, p.top_p * mass, scratch));
    }
  }

  double kept_mass = 0.0;
  if (f.use_candidates) {
    for (const Candidate& c : scratch.candidates)
      if (f.kept(c.value)) kept_mass += exp_nonpositive(c.value - f.s_max);
  } else {
    const float threshold = f.threshold, s_max = f.s_max, min_p = f.min_p;
#pragma omp simd reduction(+ : kept_mass)
    for (int64_t j = 0; j < vocab; ++j) {
      const float w = exp_nonpositive(v[j] - s_max);
      kept_mass += (v[j] >= threshold && w >= min_p) ? w : 0.0f;
    }
  }
  f.kept_mass = kept_mass;
  return f;
}

// Writes the filtered distribution of a prepared row: out[j * out_stride], float32 [vocab].
inline void write_probs(const RowFilter& f, const RowScratch& scratch, int64_t vocab, float* out) {
  std::fill(out, out + vocab, 0.0f);
  if (!f.finite) return;
  if (f.greedy) {
    out[f.argmax] = 1.0f;
    return;
  }
  const double inv_mass = 1.0 / f.kept_mass;
  if (f.use_candidates) {
    for (const Candidate& c : scratch.candidates)
      if (f.kept(c.value)) out[c.index] = static_cast<float>(exp_nonpositive(c.value - f.s_max) * inv_mass);
    return;
  }
  const float* v = scratch.values.data();
  const float threshold = f.threshold, s_max = f.s_max, min_p = f.min_p;
#pragma omp simd
  for (int64_t j = 0; j < vocab; ++j) {
    const float w = exp_nonpositive(v[j] - s_max);
    out[j] = (v[j] >= threshold && w >= min_p) ? static_cast<float>(w * inv_mass) : 0.0f;
  }
}

struct Seed {
  uint32_t lo, hi;
};

// The Gumbel key of column `col` for one draw: s - log(-log(u)).
inline float gumbel_key(float s, uint32_t bits) { return s - log_positive(-log_positive(uniform_from_bits(bits))); }

// One Gumbel-max draw from a prepared, finite, non-greedy row: the kept column with
// the largest key (lowest index on ties).
inline int64_t draw_token(const RowFilter& f, const RowScratch& scratch, int64_t vocab, Seed seed, uint32_t draw,
                          uint32_t row) {
  float best_key = -std::numeric_limits<float>::infinity();
  int64_t best = -1;
  const auto offer = [&](float key, int64_t col) {
    if (key > best_key || (key == best_key && col < best)) {
      best_key = key;
      best = col;
    }
  };
  if (f.use_candidates) {
    for (const Candidate& c : scratch.candidates) {
      if (!f.kept(c.value)) continue;
      const uint32_t col = static_cast<uint32_t>(c.index);
      const Philox4 r = philox4x32_10(col >> 2, draw, row, 0, seed.lo, seed.hi);
      offer(gumbel_key(c.value, r.v[col & 3]), c.index);
    }
    return best;
  }
  // Whole row: 64 columns at a time. A chunk is skipped without drawing random numbers
  // when none of its tokens is kept or could beat the best key (keys exceed s by at most
  // kGumbelMax).
  constexpr int64_t kChunk = 64;
  const float* v = scratch.values.data();
  float keys[kChunk];
  uint32_t bits[kChunk];
  for (int64_t base = 0; base < vocab; base += kChunk) {
    const int64_t width = std::min(kChunk, vocab - base);
    const float bar = std::max(f.threshold, best_key - kGumbelMax);
    bool any = false;
#pragma omp simd reduction(| : any)
    for (int64_t j = 0; j < width; ++j) any |= v[base + j] >= bar;
    if (!any) continue;
    const uint32_t group0 = static_cast<uint32_t>(base >> 2);
#pragma omp simd
    for (int64_t g = 0; g < kChunk / 4; ++g) {
      const Philox4 r = philox4x32_10(group0 + static_cast<uint32_t>(g), draw, row, 0, seed.lo, seed.hi);
      bits[4 * g + 0] = r.v[0];
      bits[4 * g + 1] = r.v[1];
      bits[4 * g + 2] = r.v[2];
      bits[4 * g + 3] = r.v[3];
    }
    const float threshold = f.threshold, s_max = f.s_max, min_p = f.min_p;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const float s = v[base + j];
      const bool kept = s >= threshold && exp_nonpositive(s - s_max) >= min_p;
      keys[j] = kept ? gumbel_key(s, bits[j]) : -std::numeric_limits<float>::infinity();
    }
    for (int64_t j = 0; j < width; ++j)
      if (keys[j] > best_key) {  // strict: earlier columns win ties
        best_key = keys[j];
        best = base + j;
      }
  }
  return best;
}

}  // namespace ponder::cpu
