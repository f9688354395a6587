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
#include <type_traits>
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
  std::vector<float> chunk_max;      // max cleaned logit of each chunk of the row
  std::vector<double> bin_mass;      // top-p histogram: mass per bin
  std::vector<int32_t> bin_index;    // top-p histogram: bin of each value
  std::vector<float> bin_weight;     // top-p histogram: weight of each value
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

inline constexpr float kMaxFloat = std::numeric_limits<float>::max();
inline constexpr float kLowestFinite = -kMaxFloat;

// Loads n logits (src[j * col_stride]) into dst as float32, with NaN -> -inf and
// +inf -> float max.
template <typename T>
void load_clean(const T* src, int64_t col_stride, int64_t n, float* dst) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const auto clean = [](float x) { return (x != x) ? -kInf : (x == kInf ? std::numeric_limits<float>::max() : x); };
  if (col_stride == 1) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dst[j] = clean(to_float(src[j]));
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = clean(to_float(src[j * col_stride]));
  }
}

// sum_j exp(min(x[j], float max) - m) over j < n, for m >= every min(x[j], float max):
// one chunk's share of a softmax normaliser (+inf logits count as float max; NaN and
// -inf add 0). Accumulates in float32, so meant for chunks of a few hundred values. This
// is the one exp per logit that a sampling pass cannot avoid, hence the AVX-512 form.
inline float sum_exp_chunk(const float* x, int64_t n, float m) {
  constexpr float kMax = std::numeric_limits<float>::max();
#if defined(__AVX512F__)
  const __m512 max = _mm512_set1_ps(kMax), shift = _mm512_set1_ps(m);
  // min(max, x) keeps NaN (the second operand is returned when one is NaN).
  const auto term = [&](__m512 xs) { return exp_nonpositive(_mm512_sub_ps(_mm512_min_ps(max, xs), shift)); };
  __m512 acc = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc = _mm512_add_ps(acc, term(_mm512_loadu_ps(x + j)));
  if (j < n) {  // the tail, its missing lanes read as -inf: exp 0
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - j)) - 1u);
    acc = _mm512_add_ps(acc, term(_mm512_mask_loadu_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), tail, x + j)));
  }
  return _mm512_reduce_add_ps(acc);
#else
  float part = 0.0f;
#pragma omp simd reduction(+ : part)
  for (int64_t j = 0; j < n; ++j) part += exp_nonpositive(std::min(x[j], kMax) - m);  // std::min keeps NaN
  return part;
#endif
}

// Largest of v[0 .. n), vectorised (a float max reduction vectorises where a boolean
// "any" does not).
inline float max_of(const float* v, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = v[j] > m ? v[j] : m;
  return m;
}

// Sum of term(j) over j < n: float32 within blocks of 256 (so the loop vectorises),
// float64 across blocks. Relative error ~1e-7 against a float64 sum.
template <typename Term>
double blocked_sum(int64_t n, Term term) {
  constexpr int64_t kBlock = 256;
  double total = 0.0;
  for (int64_t base = 0; base < n; base += kBlock) {
    const int64_t end = std::min(n, base + kBlock);
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t j = base; j < end; ++j) part += term(j);
    total += part;
  }
  return total;
}

// sum_j exp(v[j] - v_max): float32 within chunks of 256, float64 across them.
inline double sum_exp(const float* v, int64_t n, float v_max) {
  constexpr int64_t kChunk = 256;
  double total = 0.0;
  for (int64_t base = 0; base < n; base += kChunk) total += sum_exp_chunk(v + base, std::min(kChunk, n - base), v_max);
  return total;
}

// s = x / T: an IEEE division (as the reference), clamped to the finite float range so
// that float-max logits (cleaned +inf) still share the mass at any temperature; -inf
// stays -inf.
inline float scale_logit(float x, float temperature) {
  constexpr float kMax = std::numeric_limits<float>::max();
  const float s = x / temperature;
  return x == -std::numeric_limits<float>::infinity() ? x : (s > kMax ? kMax : (s < -kMax ? -kMax : s));
}

inline void scale_in_place(float* v, int64_t n, float temperature) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = scale_logit(v[j], temperature);
}

// The smallest finite x with scale_logit(x, t) >= s, for a finite s: comparing raw
// logits against it is exactly comparing their scaled values against s, without
// dividing (scaling is monotone).
inline float smallest_logit_reaching(float s, float t) {
  if (t == 1.0f || s == kLowestFinite) return s;  // every finite x scales to >= kLowestFinite
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float x = std::max(s * t, kLowestFinite);  // within a few ulp of the answer
  while (x < std::numeric_limits<float>::max() && scale_logit(x, t) < s) x = std::nextafter(x, kInf);
  while (x > kLowestFinite && scale_logit(std::nextafter(x, -kInf), t) >= s) x = std::nextafter(x, -kInf);
  return x;
}

// Collects top-k candidates from chunks of a row: every column whose scaled value
// s = x / T is >= the k-th largest s (ties included). Keeps at most ~2k entries by
// selecting the k-th value with nth_element whenever the list fills up, and skips any
// chunk whose max is below the bar.
class TopKCollector {
 public:
  // The collector appends at most kMaxOffer columns per offer.
  static constexpr int64_t kMaxOffer = 256;

  TopKCollector(int64_t k, float temperature, std::vector<Candidate>& out)
      : k_(k), temperature_(temperature), capacity_(static_cast<size_t>(std::max<int64_t>(2 * k, k + 256))), out_(out) {
    out_.resize(capacity_ + kMaxOffer);  // room for one more offer; `size_` counts the used part
  }

  // Starts the bar at x_bar, a raw logit known not to exceed the k-th largest one.
  void raise_bar(float x_bar) {
    threshold_ = scale_logit(x_bar, temperature_);
    bar_ = smallest_logit_reaching(threshold_, temperature_);
  }

  // The raw-logit bar: chunks whose max is below it hold no candidate.
  float bar() const { return bar_; }

  // Offers columns base .. base + n (n <= kMaxOffer), whose cleaned logits are
  // x[0 .. n) and whose max is x_max.
  void offer(const float* x, int64_t n, int64_t base, float x_max) {
    if (x_max < bar_) return;
    // Once the bar is high, a qualifying chunk usually holds one or two qualifying
    // values: look at it 16 columns at a time.
    constexpr int64_t kBlock = 16;
    Candidate* out = out_.data();
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t end = std::min(n, start + kBlock);
      if (max_of(x + start, end - start) < bar_) continue;
      for (int64_t j = start; j < end; ++j) {  // branch-free append: write all, advance past the qualifying
        out[size_] = {x[j], static_cast<int32_t>(base + j)};
        size_ += x[j] >= bar_;
      }
    }
    if (size_ >= capacity_) {
      shrink();
      if (size_ * 2 > capacity_) {  // many ties at the threshold
        capacity_ *= 2;
        out_.resize(capacity_ + kMaxOffer);
      }
    }
  }

  // Ends the scan: leaves the candidates in `out`, their values now scaled values s;
  // returns the k-th largest s (kLowestFinite when fewer than k logits are finite: all
  // of them are candidates).
  float finish() {
    const bool enough = static_cast<int64_t>(size_) >= k_;
    if (enough) shrink();
    out_.resize(size_);
    for (Candidate& c : out_) c.value = scale_logit(c.value, temperature_);
    return enough ? threshold_ : kLowestFinite;
  }

 private:
  void shrink() {  // keep the k largest scaled values and their ties
    Candidate* begin = out_.data();
    Candidate* end = begin + size_;
    std::nth_element(begin, begin + (k_ - 1), end, [](const Candidate& a, const Candidate& b) { return a.value > b.value; });
    threshold_ = scale_logit(begin[k_ - 1].value, temperature_);  // scaling is monotone: k-th largest s
    bar_ = smallest_logit_reaching(threshold_, temperature_);
    size_ = static_cast<size_t>(std::remove_if(begin, end, [&](const Candidate& c) { return c.value < bar_; }) - begin);
  }

  int64_t k_;
  float temperature_;
  size_t capacity_;
  std::vector<Candidate>& out_;
  size_t size_ = 0;
  float bar_ = kLowestFinite;  // raw-logit bar: x >= bar_ <=> x / T >= threshold_
  float threshold_ = kLowestFinite;
};

// The top-p threshold over `values` [n]: the smallest value t such that the mass
// (weights exp(v - v_max)) of values strictly greater than t is below `target`
// (= top_p * total mass). Every value >= t is kept. Requires top_p < 1.
inline float top_p_threshold(const float* values, int64_t n, float v_max, double target, RowScratch& scratch) {
  constexpr int32_t kBins = 2048;
  constexpr int64_t kResolveDirectly = 256;  // sorting this few beats clearing the histogram
  // Values more than ~20 + log(n) below the max carry < e^-20 of the mass: they are never
  // kept for any float32 top_p < 1, so the search starts above them.
  float hi = v_max;
  float lo = v_max - (20.0f + std::log(static_cast<float>(n) + 1.0f));
  double above = 0.0;  // mass strictly above the current range
  const float* current = values;
  int64_t count = n;
  // Four interleaved histograms: neighbouring values often fall in the same bin, and
  // one histogram would serialise those additions through memory.
  constexpr int64_t kCopies = 4;
  constexpr int64_t kStride = kBins + 1;  // + the dump bin
  std::vector<double>& bin_mass = scratch.bin_mass;
  bin_mass.resize(kCopies * kStride);
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
    // Bin of every value (vectorised; out-of-range values go to a dump bin kBins), then
    // a scalar scatter of their weights into float64 bins. Bin 0 is nearest the max.
    const float inv_width = static_cast<float>(kBins) / (hi - lo);
    scratch.bin_index.resize(static_cast<size_t>(count));
    scratch.bin_weight.resize(static_cast<size_t>(count));
    int32_t* bin = scratch.bin_index.data();
    float* weight = scratch.bin_weight.data();
    // (Written with ternaries and split in two loops: that is what gcc vectorises.)
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      const float v = current[j];
      const float clamped = v < lo ? lo : (v > hi ? hi : v);
      const int32_t b = static_cast<int32_t>((hi - clamped) * inv_width);
      bin[j] = (v >= lo && v <= hi) ? (b < kBins ? b : kBins - 1) : kBins;
    }
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) weight[j] = exp_nonpositive(current[j] - v_max);
    std::fill(bin_mass.begin(), bin_mass.end(), 0.0);
    int64_t j = 0;
    for (; j + kCopies <= count; j += kCopies)
      for (int64_t c = 0; c < kCopies; ++c) bin_mass[c * kStride + bin[j + c]] += weight[j + c];
    for (; j < count; ++j) bin_mass[bin[j]] += weight[j];
    for (int64_t c = 1; c < kCopies; ++c)
      for (int32_t b = 0; b < kBins; ++b) bin_mass[b] += bin_mass[c * kStride + b];
    int32_t boundary = -1;
    for (int32_t b = 0; b < kBins; ++b) {
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
      if (bin[j] == boundary) {
        const float v = current[j];
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
//
// One streaming pass over the row does the memory-bound work: clean and convert each
// chunk of 256 logits, track the max and the softmax normaliser online (rescaling when
// the max grows), and note each chunk's max. When top-k is off, later passes need the
// whole row, so the pass also keeps it in scratch.values. When it is on, the k-th
// largest chunk max bounds the k-th largest logit from below (the top k chunk maxima
// are k logits), so the collector re-reads only the chunks that reach it: about k
// chunks, still in cache.
template <typename T>
RowFilter prepare_row(const T* src, int64_t col_stride, int64_t vocab, const SamplingParams& p, RowScratch& scratch) {
  constexpr int64_t kChunk = 256;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  RowFilter f;
  f.greedy = p.temperature == 0.0f;
  f.use_candidates = !f.greedy && p.top_k > 0 && p.top_k < vocab;
  if (!f.use_candidates) scratch.values.resize(static_cast<size_t>(vocab));
  float local[kChunk];
  const int64_t num_chunks = (vocab + kChunk - 1) / kChunk;
  scratch.chunk_max.resize(static_cast<size_t>(num_chunks));

  float row_max = -kInf;
  double row_sum = 0.0;  // sum of exp(x - row_max) so far
  int64_t max_chunk = 0;  // first chunk holding row_max
  for (int64_t base = 0; base < vocab; base += kChunk) {
    const int64_t n = std::min(kChunk, vocab - base);
    // Contiguous float32 logits are read in place when nothing needs the cleaned row:
    // the max ignores NaN by itself and the sum below cleans as it goes.
    const float* x = nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (f.use_candidates && col_stride == 1) x = src + base;
    }
    if (x == nullptr) {
      float* dst = f.use_candidates ? local : scratch.values.data() + base;
      load_clean(src + base * col_stride, col_stride, n, dst);
      x = dst;
    }
    const float chunk_max = std::min(max_of(x, n), kMaxFloat);  // +inf counts as float max
    scratch.chunk_max[base / kChunk] = chunk_max;
    if (chunk_max > row_max) {
      row_sum = row_max == -kInf ? 0.0 : row_sum * std::exp(static_cast<double>(row_max) - chunk_max);
      row_max = chunk_max;
      max_chunk = base;
    }
    if (row_max > -kInf) row_sum += sum_exp_chunk(x, n, row_max);
  }
  f.raw_max = row_max;
  f.raw_sum = row_sum;
  f.finite = row_max > -kInf;
  if (!f.finite) return f;
  if (f.greedy) {
    const float* chunk = scratch.values.data() + max_chunk;
    f.argmax = max_chunk + (std::find(chunk, chunk + std::min(kChunk, vocab - max_chunk), row_max) - chunk);
    return f;
  }
  float* v = scratch.values.data();
  f.s_max = scale_logit(row_max, p.temperature);  // scaling is monotone: the largest s
  f.min_p = p.min_p;
  f.threshold = kLowestFinite;
  if (f.use_candidates) {
    TopKCollector top_k(p.top_k, p.temperature, scratch.candidates);
    if (num_chunks >= p.top_k) {
      std::vector<float>& maxima = scratch.bin_next;  // free until the top-p search
      maxima.assign(scratch.chunk_max.begin(), scratch.chunk_max.end());
      std::nth_element(maxima.begin(), maxima.begin() + (p.top_k - 1), maxima.end(), std::greater<float>());
      if (maxima[p.top_k - 1] > -kInf) top_k.raise_bar(maxima[p.top_k - 1]);
    }
    for (int64_t c = 0; c < num_chunks; ++c) {
      if (scratch.chunk_max[c] < top_k.bar()) continue;
      const int64_t base = c * kChunk, n = std::min(kChunk, vocab - base);
      load_clean(src + base * col_stride, col_stride, n, local);
      top_k.offer(local, n, base, scratch.chunk_max[c]);
    }
    f.threshold = top_k.finish();
  } else if (p.temperature != 1.0f) {
    scale_in_place(v, vocab, p.temperature);
  }

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
    kept_mass = blocked_sum(vocab, [=](int64_t j) {
      const float w = exp_nonpositive(v[j] - s_max);
      return (v[j] >= threshold && w >= min_p) ? w : 0.0f;
    });
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

// Random words of kColumns consecutive columns starting at column 4 * group0 (counter
// (group, draw, row, 0), word column % 4), lanes laid out so the compiler vectorises
// the ten rounds across groups.
template <int64_t kColumns>
void philox_columns(uint32_t group0, uint32_t draw, uint32_t row, Seed seed, uint32_t* bits) {
  constexpr int64_t kGroups = kColumns / 4;
  uint32_t c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
#pragma omp simd
  for (int64_t g = 0; g < kGroups; ++g) {
    c0[g] = group0 + static_cast<uint32_t>(g);
    c1[g] = draw;
    c2[g] = row;
    c3[g] = 0;
  }
  uint32_t k0 = seed.lo, k1 = seed.hi;
  for (int round = 0; round < 10; ++round) {
#pragma omp simd
    for (int64_t g = 0; g < kGroups; ++g) {
      const uint64_t pa = static_cast<uint64_t>(0xD2511F53u) * c0[g];
      const uint64_t pb = static_cast<uint64_t>(0xCD9E8D57u) * c2[g];
      c0[g] = static_cast<uint32_t>(pb >> 32) ^ c1[g] ^ k0;
      c2[g] = static_cast<uint32_t>(pa >> 32) ^ c3[g] ^ k1;
      c1[g] = static_cast<uint32_t>(pb);
      c3[g] = static_cast<uint32_t>(pa);
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int64_t g = 0; g < kGroups; ++g) {
    bits[4 * g + 0] = c0[g];
    bits[4 * g + 1] = c1[g];
    bits[4 * g + 2] = c2[g];
    bits[4 * g + 3] = c3[g];
  }
}

// The Gumbel key of a token for one draw: (s - s_max) - log(-log(u)). Taken relative to
// the max so that keys of float-max logits (cleaned +inf) do not saturate and tie.
inline float gumbel_key(float s_rel, uint32_t bits) {
  return s_rel - log_positive(-log_positive(uniform_from_bits(bits)));
}

struct Draw {
  int64_t token;  // column
  float s;        // its scaled logit
};

// One Gumbel-max draw from a prepared, finite, non-greedy row: the kept column with
// the largest key (lowest index on ties).
inline Draw draw_token(const RowFilter& f, const RowScratch& scratch, int64_t vocab, Seed seed, uint32_t draw,
                       uint32_t row) {
  float best_key = -std::numeric_limits<float>::infinity();
  int64_t best = -1;
  if (f.use_candidates) {
    float best_s = 0.0f;
    for (const Candidate& c : scratch.candidates) {
      if (!f.kept(c.value)) continue;
      const uint32_t col = static_cast<uint32_t>(c.index);
      const Philox4 r = philox4x32_10(col >> 2, draw, row, 0, seed.lo, seed.hi);
      const float key = gumbel_key(c.value - f.s_max, r.v[col & 3]);
      if (key > best_key || (key == best_key && c.index < best)) {
        best_key = key;
        best = c.index;
        best_s = c.value;
      }
    }
    return {best, best_s};
  }
  // Whole row: 64 columns at a time. A chunk is skipped without drawing random numbers
  // when none of its tokens is kept or could beat the best key (a key exceeds s - s_max
  // by at most kGumbelMax).
  constexpr int64_t kChunk = 64;
  const float* v = scratch.values.data();
  float keys[kChunk];
  uint32_t bits[kChunk];
  for (int64_t base = 0; base < vocab; base += kChunk) {
    const int64_t width = std::min(kChunk, vocab - base);
    if (max_of(v + base, width) < std::max(f.threshold, f.s_max + (best_key - kGumbelMax))) continue;
    philox_columns<kChunk>(static_cast<uint32_t>(base >> 2), draw, row, seed, bits);
    // Keys for every lane, then the filter as a select, then the chunk's max: separate
    // loops, because gcc vectorises each of them but not their fusion.
    float weights[kChunk];
    const float threshold = f.threshold, s_max = f.s_max, min_p = f.min_p;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) keys[j] = gumbel_key(v[base + j] - s_max, bits[j]);
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) weights[j] = exp_nonpositive(v[base + j] - s_max);
    float chunk_best = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : chunk_best)
    for (int64_t j = 0; j < width; ++j) {
      keys[j] = (v[base + j] >= threshold && weights[j] >= min_p) ? keys[j] : -std::numeric_limits<float>::infinity();
      chunk_best = keys[j] > chunk_best ? keys[j] : chunk_best;
    }
    if (chunk_best > best_key) {  // strict: earlier chunks win ties
      best_key = chunk_best;
      best = base + (std::find(keys, keys + width, chunk_best) - keys);
    }
  }
  return {best, v[best]};
}

}  // namespace ponder::cpu
