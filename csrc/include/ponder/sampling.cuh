// CUDA token sampling: temperature -> top-k -> top-p -> min-p, then Gumbel-max draws.
// Framework-free: raw device pointers, sizes and strides in, a cudaError_t out. The torch
// glue (csrc/cuda/sampling.cu) checks arguments, allocates outputs and launches.
//
// The semantics are those of python/ponder/reference/sampling.py, row by row. One thread
// block owns one row and re-reads it from global memory in every pass (after the first
// pass the row is in L2); nothing is sorted and nothing is copied:
//  * temperature: s = x / T with an IEEE division, clamped to the finite float range
//    (-inf stays -inf); T == 0 is greedy;
//  * top-k and top-p thresholds are found by a search over the order-preserving uint32
//    key of s (order_key): each round splits the remaining key interval into 16 and
//    takes, for the 15 inner boundaries u at once, the block-wide count (top-k) or mass
//    (top-p) of tokens with key >= u, so 8 rounds pin the threshold down exactly;
//  * draws: Gumbel-max with ponder's Philox counters, key (s - s_max) - log(-log(u)); a
//    token whose key cannot beat the best one found so far is skipped before its random
//    number is generated.
// No pass synchronises with the host, so per-row parameter values are not checked but
// clamped here: temperature NaN or < 0 -> 0 (greedy); top_k < 0 -> 0 (off); top_p NaN or
// >= 1 -> off, <= 0 -> FLT_MIN (only the largest tokens); min_p NaN or < 0 -> 0, >= 1 ->
// the largest float below 1.
//
// Where results can differ from the reference and from the CPU backend, within float
// rounding only:
//  * masses (top-p's mass above a token, its total Z, the kept mass) are float64 sums as
//    there, but in a thread-then-block order, and of weights from CUDA's expf, within
//    1-2 ulp of the CPU's exp: a top-p boundary token whose mass comparison is within
//    ~1e-9 relative of p * Z may flip; probabilities and logprobs differ in the last bits
//    of float32 (the softmax normaliser of raw_logprobs is float64 here, float32 in
//    torch's log_softmax);
//  * Gumbel keys use CUDA's logf, which may differ from the CPU's log in the last ulp, so
//    a draw whose two best keys agree to ~1e-7 may pick the other token.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "ponder/philox.h"

namespace ponder::cuda_sampling {

// Threads per block; each block owns one row. Every thread handles groups of 4
// consecutive columns (one Philox call yields the random words of 4 columns).
constexpr int kThreads = 512;

// A per-row parameter: value of row r at data[r * stride]. stride 0 broadcasts one value
// (an expanded tensor needs no copy).
template <typename T>
struct PerRow {
  const T* data;  // [batch]
  int64_t stride;

  __device__ __forceinline__ T operator[](int64_t row) const { return data[row * stride]; }
};

// Per-row filter parameters as the user gave them; the kernels clamp them into range.
struct FilterParams {
  PerRow<float> temperature;  // [batch] >= 0; 0 is greedy
  PerRow<int64_t> top_k;      // [batch] >= 0; 0 or >= vocab disables
  PerRow<float> top_p;        // [batch] in (0, 1]; 1 disables
  PerRow<float> min_p;        // [batch] in [0, 1); 0 disables
};

// Logits of element type T (float, __half or __nv_bfloat16), any strides (in elements).
template <typename T>
struct LogitsView {
  const T* data;  // [batch, vocab]: row r, column c at data[r * row_stride + c * col_stride]
  int64_t batch;
  int vocab;
  int64_t row_stride;
  int64_t col_stride;
};

// ---------------------------------------------------------------------------------------
// Element helpers

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// NaN never wins (-inf); +inf tokens share the mass (largest finite float).
__device__ __forceinline__ float clean_logit(float v) {
  if (isnan(v)) return -INFINITY;
  return v == INFINITY ? FLT_MAX : v;
}

// The float's bits as a uint32 whose unsigned order is the float order (-0 and +0 share
// the key of +0, so key equality is float equality; NaN never reaches here).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t bits = __float_as_uint(v);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The Gumbel noise -log(-log(u)) of ponder's uniforms lies in [-2.82, 16.64]
// (u in [2^-24, 1 - 2^-24]). Keys are relative to the row max, (s - s_max) + noise, so the
// largest-s token's key is at least kGumbelMin.
constexpr float kGumbelMin = -3.0f;

// One row of logits, read by the calling thread block.
template <typename T>
class RowReader {
 public:
  __device__ RowReader(const LogitsView<T>& logits, int64_t row)
      : data_(logits.data + row * logits.row_stride),
        col_stride_(logits.col_stride),
        vocab_(logits.vocab),
        num_groups_((logits.vocab - 1) / 4 + 1),
        vectorized_(logits.col_stride == 1 && reinterpret_cast<uintptr_t>(data_) % sizeof(Group) == 0) {}

  __device__ int vocab() const { return vocab_; }

  // Calls fn(group, x, count) for every group of 4 columns this thread owns, in
  // increasing order: x[i] is the cleaned logit of column 4 * group + i, for i < count.
  template <typename Fn>
  __device__ void for_each_group(Fn&& fn) const {
    int group = threadIdx.x;
    // kBatch groups at a time, all loads first, so that their latencies overlap.
    for (; group + (kBatch - 1) * kThreads < num_groups_; group += kBatch * kThreads) {
      float x[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) load_group(group + b * kThreads, x[b]);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) fn(group + b * kThreads, x[b], count(group + b * kThreads));
    }
    for (; group < num_groups_; group += kThreads) {
      float x[4];
      load_group(group, x);
      fn(group, x, count(group));
    }
  }

  // Calls fn(col, x) for every column this thread owns, in increasing order.
  template <typename Fn>
  __device__ void for_each(Fn&& fn) const {
    for_each_group([&](int group, const float (&x)[4], int count) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i < count) fn(4 * group + i, x[i]);
      }
    });
  }

  // The cleaned logit of one column.
  __device__ float load(int col) const { return clean_logit(to_float(data_[col * col_stride_])); }

 private:
  static constexpr int kBatch = 2;  // groups whose loads a thread issues together

  struct alignas(4 * sizeof(T)) Group {
    T v[4];
  };

  // Columns in the group: 4, or fewer in the last one.
  __device__ int count(int group) const { return min(4, vocab_ - 4 * group); }

  // x[i]: cleaned logit of column 4 * group + i; -inf past the last column.
  __device__ void load_group(int group, float (&x)[4]) const {
    const int n = count(group);
    if (vectorized_ && n == 4) {
      const Group g = reinterpret_cast<const Group*>(data_)[group];
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = clean_logit(to_float(g.v[i]));
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = i < n ? load(4 * group + i) : -INFINITY;
    }
  }

  const T* data_;
  int64_t col_stride_;
  int vocab_;
  int num_groups_;
  bool vectorized_;  // contiguous and aligned: one vector load per group
};

// ---------------------------------------------------------------------------------------
// Block-wide reductions (every thread of the block must call them; all get the result)

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

struct SumOp {
  template <typename V>
  __device__ V operator()(const V& a, const V& b) const {
    return a + b;
  }
};

// A token and its key; the better one has the larger key, then the lower column.
struct Candidate {
  float key;
  int col;
};

struct BetterCandidate {
  __device__ Candidate operator()(const Candidate& a, const Candidate& b) const {
    if (a.key != b.key) return a.key > b.key ? a : b;
    return a.col <= b.col ? a : b;
  }
};

template <typename V, typename Op>
__device__ V block_reduce(const V& value, Op op) {
  using Reduce = cub::BlockReduce<V, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ V result;
  const V total = Reduce(temp).Reduce(value, op);  // valid in thread 0 only
  if (threadIdx.x == 0) result = total;
  __syncthreads();
  const V broadcast = result;
  __syncthreads();  // temp and result are reused by the next call
  return broadcast;
}

// Masses are summed in float64, as in the reference: over a large vocab a float32 sum's
// rounding (up to ~1e-6 relative) is comparable to one tail token's share of the mass
// (~1 / vocab), enough to move a top-p boundary.
struct MassPair {
  double kept;  // sum of kept weights w
  double raw;   // sum of exp(x - x_max): the softmax(x) normaliser
};

__device__ __forceinline__ MassPair operator+(const MassPair& a, const MassPair& b) {
  return {a.kept + b.kept, a.raw + b.raw};
}

// ---------------------------------------------------------------------------------------
// Threshold search

constexpr int kDigitBits = 4;                   // key bits resolved per round
constexpr uint32_t kDigits = 1u << kDigitBits;  // sub-intervals per round

// Per round of the search: the total value of tokens above the current key interval,
// and for each digit d the total value of tokens inside it whose digit is >= d.
template <typename Acc>
struct DigitSums {
  Acc above;
  Acc at_least[kDigits];
};

template <typename Acc>
__device__ __forceinline__ DigitSums<Acc> operator+(const DigitSums<Acc>& a, const DigitSums<Acc>& b) {
  DigitSums<Acc> sum;
  sum.above = a.above + b.above;
#pragma unroll
  for (uint32_t d = 0; d < kDigits; ++d) sum.at_least[d] = a.at_least[d] + b.at_least[d];
  return sum;
}

// The largest key u with F(u) >= target, where F(u) is the total value_of(s, key) over the
// row's tokens with order_key(s) >= u (F falls as u rises) and target = target_of(F(0)).
// Tokens with key >= the result are the ones to keep:
//  * top-k: value 1, target k: u is the key of the k-th largest s (ties kept);
//  * top-p: value w, target p * Z: u is the smallest key with (mass strictly above u) <
//    p * Z, i.e. a token is kept iff the mass strictly above it is < p * Z.
// F(0) must be >= target. The search is exact; with float values, up to summation order.
template <typename Acc, typename T, typename ScaleFn, typename ValueFn, typename TargetFn>
__device__ uint32_t find_threshold(const RowReader<T>& row, ScaleFn scale, ValueFn value_of, TargetFn target_of) {
  constexpr int kFirstShift = 32 - kDigitBits;
  uint32_t prefix = 0;  // invariant: F(prefix) >= target > F(prefix + (kDigits << shift))
  Acc target = 0;
  for (int shift = kFirstShift; shift >= 0; shift -= kDigitBits) {
    const uint64_t interval_end = uint64_t{prefix} + (uint64_t{kDigits} << shift);
    DigitSums<Acc> sums{};
    row.for_each([&](int, float x) {
      const float s = scale(x);
      const uint32_t key = order_key(s);
      if (key < prefix) return;  // below the interval: counts for no boundary
      const Acc value = value_of(s, key);
      if (key >= interval_end) {
        sums.above += value;
        return;
      }
      const uint32_t digit = (key - prefix) >> shift;
#pragma unroll
      for (uint32_t d = 0; d < kDigits; ++d) sums.at_least[d] += digit >= d ? value : Acc{0};
    });
    sums = block_reduce(sums, SumOp{});
    // The first interval holds every token: at_least[0] is F(0).
    if (shift == kFirstShift) target = target_of(sums.at_least[0]);
    uint32_t digit = kDigits - 1;
    while (digit > 0 && !(sums.above + sums.at_least[digit] >= target)) --digit;
    prefix += digit << shift;
  }
  return prefix;
}

// ---------------------------------------------------------------------------------------
// Per-row preparation

// What prepare_row learns about a row: enough to write probabilities or draw tokens.
struct RowFilter {
  bool greedy;        // temperature == 0 (or not a positive number)
  bool has_mass;      // false: no finite logit, so no distribution
  float temperature;  // > 0 unless greedy
  float x_max;        // largest cleaned logit
  int argmax;         // greedy: first column of x_max
  float s_max;        // largest scaled logit (not greedy)
  uint32_t keep_from;  // kept: order_key(s) >= keep_from (finite, top-k, top-p) ...
  float min_p;         // ... and w = exp(s - s_max) >= min_p

  // s = x / T (an IEEE division) clamped to the finite range; -inf stays -inf. Cleaned
  // logits are finite or -inf, so with T == 1 (common) s is x.
  __device__ float scale(float x) const {
    if (temperature == 1.0f || x == -INFINITY) return x;
    return fminf(fmaxf(__fdiv_rn(x, temperature), -FLT_MAX), FLT_MAX);
  }

  // w = exp(s - s_max) for a kept token, 0 for a filtered one.
  __device__ float kept_weight(float s) const {
    if (order_key(s) < keep_from) return 0.0f;
    const float w = expf(s - s_max);
    return w >= min_p ? w : 0.0f;
  }
};

// Computes the row's filter: the maxima, then the top-k and top-p thresholds. Not inlined:
// both kernels call one copy (a call per row costs nothing; inlining doubled compile time).
template <typename T>
__device__ __noinline__ RowFilter prepare_row(const RowReader<T>& row, const FilterParams& params, int64_t r) {
  RowFilter f{};
  const float temperature = params.temperature[r];
  f.greedy = !(temperature > 0.0f);
  f.temperature = temperature;

  if (f.greedy) {
    Candidate best{-INFINITY, INT_MAX};
    row.for_each([&](int col, float x) {
      if (x > best.key) best = {x, col};  // columns come in increasing order: first max kept
    });
    best = block_reduce(best, BetterCandidate{});
    f.x_max = best.key;
    f.argmax = best.col;
    f.has_mass = f.x_max > -INFINITY;
    return f;
  }

  float x_max = -INFINITY;
  row.for_each([&](int, float x) { x_max = fmaxf(x_max, x); });
  f.x_max = block_reduce(x_max, MaxOp{});
  f.s_max = f.scale(f.x_max);  // scaling is monotone: the max of the scaled logits
  f.has_mass = f.s_max > -INFINITY;
  if (!f.has_mass) return f;

  const auto scale = [&](float x) { return f.scale(x); };
  f.keep_from = order_key(-INFINITY) + 1;  // -inf tokens are never kept
  const int64_t top_k = params.top_k[r];
  if (top_k > 0 && top_k < row.vocab()) {
    const uint32_t kth = find_threshold<int>(
        row, scale, [](float, uint32_t) { return 1; }, [&](int) { return static_cast<int>(top_k); });
    f.keep_from = max(f.keep_from, kth);
  }

  const float top_p = params.top_p[r];
  if (top_p < 1.0f) {  // NaN disables it too
    const float p = fmaxf(top_p, FLT_MIN);
    const uint32_t top_k_from = f.keep_from;
    const float s_max = f.s_max;
    const uint32_t nucleus = find_threshold<double>(  // float64 masses: see MassPair
        row, scale, [&](float s, uint32_t key) { return key >= top_k_from ? double{expf(s - s_max)} : 0.0; },
        [&](double total) { return p * total; });
    f.keep_from = max(f.keep_from, nucleus);
  }

  // The largest token (w = 1) always passes: min_p < 1.
  f.min_p = fminf(fmaxf(params.min_p[r], 0.0f), 0x1.fffffep-1f);
  return f;
}

// ---------------------------------------------------------------------------------------
// Kernels

// probs: float32 [batch, vocab], contiguous. One block per row.
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    filtered_probs_kernel(LogitsView<T> logits, FilterParams params, float* __restrict__ probs) {
  const int64_t r = blockIdx.x;
  const RowReader<T> row(logits, r);
  const RowFilter f = prepare_row(row, params, r);

  float kept_mass = 1.0f;
  if (f.has_mass && !f.greedy) {
    double partial = 0.0;  // float64: see MassPair
    row.for_each([&](int, float x) { partial += f.kept_weight(f.scale(x)); });
    kept_mass = static_cast<float>(block_reduce(partial, SumOp{}));
  }

  // prob(col, x): the filtered probability of a column with cleaned logit x.
  const auto prob = [&](int col, float x) -> float {
    if (!f.has_mass) return 0.0f;
    if (f.greedy) return col == f.argmax ? 1.0f : 0.0f;
    return __fdiv_rn(f.kept_weight(f.scale(x)), kept_mass);
  };
  float* out = probs + r * logits.vocab;
  const bool vectorized = reinterpret_cast<uintptr_t>(out) % sizeof(float4) == 0;
  row.for_each_group([&](int group, const float (&x)[4], int count) {
    const int col = 4 * group;
    if (vectorized && count == 4) {
      reinterpret_cast<float4*>(out)[group] =
          make_float4(prob(col, x[0]), prob(col + 1, x[1]), prob(col + 2, x[2]), prob(col + 3, x[3]));
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i < count) out[col + i] = prob(col + i, x[i]);
      }
    }
  });
}

// tokens: int64 [batch, num_samples]; logprobs, raw_logprobs: float32 [batch, num_samples];
// all contiguous. seeds: [batch]. One block per row; the draws loop inside the block.
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    sample_kernel(LogitsView<T> logits, FilterParams params, PerRow<int64_t> seeds, int num_samples,
                  int64_t* __restrict__ tokens, float* __restrict__ logprobs, float* __restrict__ raw_logprobs) {
  const int64_t r = blockIdx.x;
  const RowReader<T> row(logits, r);
  const RowFilter f = prepare_row(row, params, r);
  const int64_t out = r * num_samples;

  if (!f.has_mass) {
    for (int d = threadIdx.x; d < num_samples; d += kThreads) {
      tokens[out + d] = 0;
      logprobs[out + d] = -INFINITY;
      raw_logprobs[out + d] = -INFINITY;
    }
    return;
  }

  // Normalisers: kept mass (filtered distribution) and sum exp(x - x_max) (softmax(x)).
  MassPair partial{0.0, 0.0};
  row.for_each([&](int, float x) {
    partial.raw += expf(x - f.x_max);
    if (!f.greedy) partial.kept += f.kept_weight(f.scale(x));
  });
  const MassPair mass = block_reduce(partial, SumOp{});
  const float log_raw_mass = static_cast<float>(log(mass.raw));

  if (f.greedy) {
    // The token is x_max's column: logprob log(1) = 0, raw logprob 0 - log(raw mass).
    for (int d = threadIdx.x; d < num_samples; d += kThreads) {
      tokens[out + d] = f.argmax;
      logprobs[out + d] = 0.0f;
      raw_logprobs[out + d] = -log_raw_mass;
    }
    return;
  }

  const float log_kept_mass = static_cast<float>(log(mass.kept));
  const int64_t seed = seeds[r];
  const uint32_t seed_lo = static_cast<uint32_t>(seed);
  const uint32_t seed_hi = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  for (int draw = 0; draw < num_samples; ++draw) {
    Candidate best{-INFINITY, INT_MAX};
    row.for_each_group([&](int group, const float (&x)[4], int count) {
      Philox4 bits{};
      bool have_bits = false;
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // unrolled: bits.v[i] stays in registers
        if (i >= count) break;
        const float s = f.scale(x[i]);
        const float relative = s - f.s_max;
        // A key exceeds `relative` by less than kGumbelMax and rounding is monotone, so a
        // token with relative + kGumbelMax below the bar has a key strictly below it and
        // cannot win. The bar: the best key so far, and kGumbelMin, which the largest-s
        // token (always kept) reaches.
        if (relative + kGumbelMax < fmaxf(kGumbelMin, best.key)) continue;
        const float w = f.kept_weight(s);
        if (!(w > 0.0f)) continue;  // filtered, or weight underflowed (the reference skips both)
        if (!have_bits) {
          bits = philox4x32_10(static_cast<uint32_t>(group), static_cast<uint32_t>(draw), static_cast<uint32_t>(r), 0,
                               seed_lo, seed_hi);
          have_bits = true;
        }
        const float key = relative - logf(-logf(uniform_from_bits(bits.v[i])));
        if (key > best.key) best = {key, 4 * group + i};  // increasing columns: first max kept
      }
    });
    best = block_reduce(best, BetterCandidate{});
    if (threadIdx.x == 0) {
      const float x = row.load(best.col);
      tokens[out + draw] = best.col;
      logprobs[out + draw] = logf(f.kept_weight(f.scale(x))) - log_kept_mass;
      raw_logprobs[out + draw] = (x - f.x_max) - log_raw_mass;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Launchers (asynchronous on `stream`; batch 0 launches nothing)

// probs: float32 [batch, vocab], contiguous.
template <typename T>
cudaError_t launch_filtered_probs(const LogitsView<T>& logits, const FilterParams& params, float* probs,
                                  cudaStream_t stream) {
  if (logits.batch == 0) return cudaSuccess;
  if (logits.batch > INT_MAX) return cudaErrorInvalidValue;
  filtered_probs_kernel<T><<<static_cast<unsigned>(logits.batch), kThreads, 0, stream>>>(logits, params, probs);
  return cudaGetLastError();
}

// tokens: int64, logprobs / raw_logprobs: float32, each [batch, num_samples], contiguous.
template <typename T>
cudaError_t launch_sample(const LogitsView<T>& logits, const FilterParams& params, PerRow<int64_t> seeds,
                          int num_samples, int64_t* tokens, float* logprobs, float* raw_logprobs,
                          cudaStream_t stream) {
  if (logits.batch == 0) return cudaSuccess;
  if (logits.batch > INT_MAX || num_samples < 1) return cudaErrorInvalidValue;
  sample_kernel<T><<<static_cast<unsigned>(logits.batch), kThreads, 0, stream>>>(
      logits, params, seeds, num_samples, tokens, logprobs, raw_logprobs);
  return cudaGetLastError();
}

}  // namespace ponder::cuda_sampling
