// CPU kernels of the paged KV cache ops: block copies, K/V writes, and causal attention
// through block tables. Framework-free: raw pointers and sizes in. Callers check the
// arguments and parallelise (over block pairs, tokens, or (sequence, KV head)).
//
// Layout (python/ponder/reference/kv_ops.py): a cache is
// [num_layers, num_blocks, block_size, num_kv_heads, head_dim], contiguous; token t of a
// sequence lives in slot (table[t / block_size], t % block_size).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "ponder/linear.h"
#include "ponder/vec_math.h"

namespace ponder::cpu {

// Geometry of one cache tensor, in elements.
struct CacheShape {
  int64_t num_layers, num_blocks, block_size, num_kv_heads, head_dim;

  int64_t token_elems() const { return num_kv_heads * head_dim; }       // one slot
  int64_t block_elems() const { return block_size * token_elems(); }   // one block of one layer
  int64_t layer_elems() const { return num_blocks * block_elems(); }   // one layer
};

// Copies block src to block dst in every layer of one cache: [num_layers, num_blocks, ...]
// viewed as bytes. elem_bytes is the size of one element.
inline void copy_block(unsigned char* cache, const CacheShape& shape, int64_t elem_bytes, int64_t src, int64_t dst) {
  const int64_t block_bytes = shape.block_elems() * elem_bytes, layer_bytes = shape.layer_elems() * elem_bytes;
  for (int64_t layer = 0; layer < shape.num_layers; ++layer) {
    unsigned char* base = cache + layer * layer_bytes;
    std::memcpy(base + dst * block_bytes, base + src * block_bytes, static_cast<size_t>(block_bytes));
  }
}

// One sequence's view of a layer for attention: its block table and lengths.
template <typename Index>
struct SequenceView {
  const Index* block_table;  // [max_blocks]
  int64_t seq_len;           // tokens in the cache, new ones included
  int64_t query_len;         // new tokens: queries at positions seq_len - query_len ...
};

// Per-worker buffers, reused across work items so the loops allocate nothing.
struct AttentionScratch {
  std::vector<float> q;       // [rows, head_dim] scaled queries
  std::vector<float> acc;     // [rows, head_dim] unnormalised outputs
  std::vector<float> row_max;  // [rows] running max of the scores
  std::vector<float> row_sum;  // [rows] running sum of exp(score - row_max)
  std::vector<float> k, v;    // [block_size, head_dim] one block of 16-bit K / V as float
  std::vector<float> scores;  // [block_size]
  std::vector<float> q_t;           // [row blocks, head_dim, 16] scaled queries, rows in lanes
  std::vector<float> block_scores;  // [16, block_size] scores of one row block against one block
};

// From this many query rows (query tokens x group) on, a block's scores are computed 16
// rows at a time with the rows in the lanes of a vector (linear_tile), instead of one
// horizontal sum per (row, key): prefill and extend, where every block meets many rows.
inline constexpr int64_t kRowsInLanesFrom = 16;
inline constexpr int64_t kRowLanes = 16;  // rows per row block (one 512-bit vector of float32)

// scores[j] = dot(q, k + j * k_stride) over dim elements, for j < n. Four keys at a time:
// four independent accumulators hide the latency of the multiply-adds and share the
// loads of q.
inline void dot_keys(const float* q, const float* k, int64_t k_stride, int64_t dim, int64_t n, float* scores) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float *k0 = k + j * k_stride, *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t d = 0; d < dim; ++d) {
      s0 += q[d] * k0[d];
      s1 += q[d] * k1[d];
      s2 += q[d] * k2[d];
      s3 += q[d] * k3[d];
    }
    scores[j] = s0, scores[j + 1] = s1, scores[j + 2] = s2, scores[j + 3] = s3;
  }
  for (; j < n; ++j) {
    const float* kj = k + j * k_stride;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t d = 0; d < dim; ++d) total += q[d] * kj[d];
    scores[j] = total;
  }
}

// acc = acc * rescale + sum_j p[j] * (v + j * v_stride) over dim elements, for j < n.
// Four values at a time, so the accumulator is loaded and stored once per four keys.
inline void add_weighted_values(const float* p, const float* v, int64_t v_stride, int64_t dim, int64_t n,
                                float rescale, float* acc) {
#pragma omp simd
  for (int64_t d = 0; d < dim; ++d) acc[d] *= rescale;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float *v0 = v + j * v_stride, *v1 = v0 + v_stride, *v2 = v1 + v_stride, *v3 = v2 + v_stride;
    const float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) acc[d] += (p0 * v0[d] + p1 * v1[d]) + (p2 * v2[d] + p3 * v3[d]);
  }
  for (; j < n; ++j) {
    const float pj = p[j];
    const float* vj = v + j * v_stride;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) acc[d] += pj * vj[d];
  }
}

// Causal attention of one sequence's new queries for the query heads of one KV head.
//
// q: the sequence's first query row, element (i, g, d) at q[i * q_token_stride +
// g * q_head_stride + d] for query i and head g of the group; k_layer, v_layer: the layer's
// cache (first element of block 0, KV head 0); kv_head: which KV head; out: float
// [query_len, group, head_dim] with the same row layout as q's token/head strides in
// out_token_stride / out_head_stride. The score of query i and key j is
// scale * dot(q_i, k_j) over positions j <= seq_len - query_len + i, softmax in float32
// with an online (block by block) maximum: each block of K/V is read once (16-bit blocks
// converted to float once) for every query of the group and of the sequence; nothing
// larger than a block is gathered.
template <typename T, typename Index>
void attend_sequence(const T* q, int64_t q_token_stride, int64_t q_head_stride, const T* k_layer, const T* v_layer,
                     const CacheShape& shape, int64_t kv_head, int64_t group, const SequenceView<Index>& seq,
                     float scale, float* out, int64_t out_token_stride, int64_t out_head_stride,
                     AttentionScratch& scratch) {
  const int64_t dim = shape.head_dim, rows = seq.query_len * group, block_size = shape.block_size;
  if (rows == 0) return;
  scratch.q.resize(rows * dim);
  scratch.acc.assign(rows * dim, 0.0f);
  scratch.row_max.assign(rows, -std::numeric_limits<float>::infinity());
  scratch.row_sum.assign(rows, 0.0f);
  scratch.k.resize(block_size * dim);
  scratch.v.resize(block_size * dim);
  scratch.scores.resize(block_size);
  // Row r = i * group + g: query i, head g of the group.
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = q + (r / group) * q_token_stride + (r % group) * q_head_stride;
    float* dst = scratch.q.data() + r * dim;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) dst[d] = to_float(src[d]) * scale;
  }
  const bool rows_in_lanes = rows >= kRowsInLanesFrom;
  if (rows_in_lanes) {
    const int64_t row_blocks = (rows + kRowLanes - 1) / kRowLanes;
    scratch.q_t.resize(row_blocks * dim * kRowLanes);
    scratch.block_scores.resize(kRowLanes * block_size);
    for (int64_t b = 0; b < row_blocks; ++b)
      transpose_row_block<kRowLanes>(scratch.q.data() + b * kRowLanes * dim, dim, 1,
                                     std::min(kRowLanes, rows - b * kRowLanes), dim,
                                     scratch.q_t.data() + b * dim * kRowLanes);
  }

  const int64_t first_query_pos = seq.seq_len - seq.query_len;
  for (int64_t start = 0; start < seq.seq_len; start += block_size) {
    const int64_t n = std::min(block_size, seq.seq_len - start);
    const int64_t offset = static_cast<int64_t>(seq.block_table[start / block_size]) * shape.block_elems() +
                           kv_head * dim;
    // The block's keys and values of this KV head: n rows of dim floats, kv_stride apart.
    // float32 caches are read in place; 16-bit ones are converted into the scratch once.
    const float *keys, *values;
    int64_t kv_stride;
    if constexpr (std::is_same_v<T, float>) {
      keys = k_layer + offset, values = v_layer + offset, kv_stride = shape.token_elems();
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const T* k_src = k_layer + offset + j * shape.token_elems();
        const T* v_src = v_layer + offset + j * shape.token_elems();
        float* k_dst = scratch.k.data() + j * dim;
        float* v_dst = scratch.v.data() + j * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          k_dst[d] = to_float(k_src[d]);
          v_dst[d] = to_float(v_src[d]);
        }
      }
      keys = scratch.k.data(), values = scratch.v.data(), kv_stride = dim;
    }
    // Queries before this block's first position see none of it; rows are ordered by
    // query, so the first visible row is where the scan starts.
    const int64_t first_row = std::max<int64_t>(0, start - first_query_pos) * group;
    for (int64_t r = first_row; r < rows; ++r) {
      const int64_t visible = std::min(n, first_query_pos + r / group - start + 1);
      float* scores;
      if (rows_in_lanes) {
        const int64_t lane = r % kRowLanes;
        if (r == first_row || lane == 0) {  // this row block's scores against the whole block
          const int64_t b = r / kRowLanes, block_rows = std::min(kRowLanes, rows - b * kRowLanes);
          for (int64_t j0 = 0; j0 < n; j0 += kLinearColumns)
            linear_tile<kRowLanes>(scratch.q_t.data() + b * dim * kRowLanes, dim, block_rows, keys + j0 * kv_stride,
                                   kv_stride, 1, std::min(kLinearColumns, n - j0), nullptr,
                                   scratch.block_scores.data() + j0, block_size);
        }
        scores = scratch.block_scores.data() + lane * block_size;  // the row's own slice, used in place below
      } else {
        scores = scratch.scores.data();
        dot_keys(scratch.q.data() + r * dim, keys, kv_stride, dim, visible, scores);
      }
      float block_max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < visible; ++j) block_max = std::max(block_max, scores[j]);
      const float new_max = std::max(scratch.row_max[r], block_max);
      const float rescale = exp_nonpositive(scratch.row_max[r] - new_max);  // 0 on the first block (-inf)
      float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
      for (int64_t j = 0; j < visible; ++j) {
        scores[j] = exp_nonpositive(scores[j] - new_max);
        block_sum += scores[j];
      }
      scratch.row_max[r] = new_max;
      scratch.row_sum[r] = scratch.row_sum[r] * rescale + block_sum;
      add_weighted_values(scores, values, kv_stride, dim, visible, rescale, scratch.acc.data() + r * dim);
    }
  }
  // Every query sees at least itself, so row_sum > 0.
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / scratch.row_sum[r];
    const float* acc = scratch.acc.data() + r * dim;
    float* dst = out + (r / group) * out_token_stride + (r % group) * out_head_stride;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) dst[d] = acc[d] * inv;
  }
}

}  // namespace ponder::cpu
