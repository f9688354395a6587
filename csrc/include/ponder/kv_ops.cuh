// CUDA kernels of the paged KV cache ops: block copies, K/V writes, and causal attention
// through block tables. Framework-free: raw pointers and sizes in, a cudaError_t out.
//
// Layout (python/ponder/reference/kv_ops.py): a cache is [num_layers, num_blocks,
// block_size, num_kv_heads, head_dim], contiguous; token t of a sequence lives in slot
// (table[t / block_size], t % block_size). Index values are not checked on the host (that
// would synchronise): out-of-range block ids and slots are skipped, never dereferenced.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ponder::cuda_kv {

inline constexpr int kWarpSize = 32;
inline constexpr int kCopyThreads = 256;
inline constexpr int kWarpsPerBlock = 4;
// Attention keeps head_dim / 32 elements of q and of the accumulator per lane.
inline constexpr int kMaxPerLane = 8;
inline constexpr int kMaxHeadDim = kMaxPerLane * kWarpSize;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Block (pair, layer, cache z): copies block src[pair] to dst[pair] of one layer of K
// (z = 0) or V (z = 1), in words of type Word (the widest that divides a block).
template <typename Word>
__global__ void copy_blocks_kernel(Word* k_cache, Word* v_cache, const int64_t* src, const int64_t* dst,
                                   int64_t num_blocks, int64_t block_words, int64_t layer_words) {
  const int64_t from_block = src[blockIdx.x], to_block = dst[blockIdx.x];
  if (from_block < 0 || from_block >= num_blocks || to_block < 0 || to_block >= num_blocks) return;
  Word* layer = (blockIdx.z == 0 ? k_cache : v_cache) + static_cast<int64_t>(blockIdx.y) * layer_words;
  const Word* from = layer + from_block * block_words;
  Word* to = layer + to_block * block_words;
  for (int64_t i = threadIdx.x; i < block_words; i += blockDim.x) to[i] = from[i];
}

template <typename Word>
cudaError_t launch_copy_blocks_words(void* k_cache, void* v_cache, const int64_t* src, const int64_t* dst,
                                     int64_t pairs, int64_t num_layers, int64_t num_blocks, int64_t block_bytes,
                                     cudaStream_t stream) {
  const int64_t block_words = block_bytes / static_cast<int64_t>(sizeof(Word));
  const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(num_layers), 2);
  copy_blocks_kernel<Word><<<grid, kCopyThreads, 0, stream>>>(static_cast<Word*>(k_cache), static_cast<Word*>(v_cache),
                                                               src, dst, num_blocks, block_words,
                                                               num_blocks * block_words);
  return cudaGetLastError();
}

// Copies block src[i] -> dst[i] (int64 [pairs], device memory) in every layer of both
// caches. block_bytes: bytes of one block of one layer (a multiple of 2).
inline cudaError_t launch_copy_blocks(void* k_cache, void* v_cache, const int64_t* src, const int64_t* dst,
                                      int64_t pairs, int64_t num_layers, int64_t num_blocks, int64_t block_bytes,
                                      cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  const auto aligned = [&](int64_t bytes) {
    return block_bytes % bytes == 0 && reinterpret_cast<uintptr_t>(k_cache) % bytes == 0 &&
           reinterpret_cast<uintptr_t>(v_cache) % bytes == 0;
  };
  if (aligned(16)) return launch_copy_blocks_words<uint4>(k_cache, v_cache, src, dst, pairs, num_layers, num_blocks,
                                                          block_bytes, stream);
  if (aligned(4)) return launch_copy_blocks_words<uint32_t>(k_cache, v_cache, src, dst, pairs, num_layers,
                                                            num_blocks, block_bytes, stream);
  return launch_copy_blocks_words<uint16_t>(k_cache, v_cache, src, dst, pairs, num_layers, num_blocks, block_bytes,
                                            stream);
}

// New tokens' keys or values: element (t, h, d) at data[t * stride_t + h * stride_h + d * stride_d].
template <typename T>
struct TokenRows {
  const T* data;
  int64_t stride_t, stride_h, stride_d;
};

// Block (t, cache z): writes token t's [num_kv_heads, head_dim] keys (z = 0) or values
// (z = 1) into flat slot slots[t] of one layer (k_layer / v_layer); -1 (or any
// out-of-range slot) writes nothing.
template <typename T>
__global__ void write_kv_kernel(T* k_layer, T* v_layer, TokenRows<T> k, TokenRows<T> v, const int64_t* slots,
                                int64_t num_slots, int num_kv_heads, int head_dim) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= num_slots) return;
  const TokenRows<T> rows = blockIdx.y == 0 ? k : v;
  const int token_elems = num_kv_heads * head_dim;
  T* dst = (blockIdx.y == 0 ? k_layer : v_layer) + slot * token_elems;
  for (int i = threadIdx.x; i < token_elems; i += blockDim.x) {
    const int h = i / head_dim, d = i % head_dim;
    dst[i] = rows.data[t * rows.stride_t + h * rows.stride_h + d * rows.stride_d];
  }
}

template <typename T>
cudaError_t launch_write_kv(T* k_layer, T* v_layer, const TokenRows<T>& k, const TokenRows<T>& v,
                            const int64_t* slots, int64_t num_tokens, int64_t num_slots, int num_kv_heads,
                            int head_dim, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  write_kv_kernel<T><<<dim3(static_cast<unsigned>(num_tokens), 2), kCopyThreads, 0, stream>>>(
      k_layer, v_layer, k, v, slots, num_slots, num_kv_heads, head_dim);
  return cudaGetLastError();
}

// Arguments of the attention kernel. Element type T (float, __half, __nv_bfloat16),
// block table index type Index (int32_t or int64_t).
template <typename T, typename Index>
struct AttentionArgs {
  const T* q;  // [num_tokens, num_q_heads, head_dim], head_dim contiguous
  int64_t q_stride_t, q_stride_h;
  const T* k_layer;  // [num_blocks, block_size, num_kv_heads, head_dim] of the layer
  const T* v_layer;
  T* out;  // as q
  int64_t out_stride_t, out_stride_h;
  const Index* block_tables;  // [num_seqs, table_stride]
  int64_t table_stride;
  const int64_t* seq_lens;     // [num_seqs] tokens in the cache, new ones included
  const int64_t* query_lens;   // [num_seqs] new tokens
  const int64_t* query_start;  // [num_seqs] first row of each sequence in q
  const int64_t* token_seq;    // [num_tokens] sequence of each row of q
  int64_t num_tokens, num_blocks, block_size;
  int num_q_heads, num_kv_heads, head_dim;
  float scale;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One warp per (query token, query head): lane l holds elements l, l + 32, ... of q and
// of the output. Keys are visited one position at a time with an online softmax (running
// max and sum in float32, the accumulator rescaled when the max grows); every lane
// computes the same scalar softmax state, so the warp never diverges.
template <typename T, typename Index>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarpSize)
    paged_attention_kernel(const AttentionArgs<T, Index> args) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (item >= args.num_tokens * args.num_q_heads) return;  // whole warps leave together
  const int64_t t = item / args.num_q_heads;
  const int head = static_cast<int>(item % args.num_q_heads);
  const int kv_head = head / (args.num_q_heads / args.num_kv_heads);
  const int64_t seq = args.token_seq[t];
  const int64_t query_pos = args.seq_lens[seq] - args.query_lens[seq] + (t - args.query_start[seq]);

  float q[kMaxPerLane], acc[kMaxPerLane];
  const T* q_row = args.q + t * args.q_stride_t + head * args.q_stride_h;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    q[j] = d < args.head_dim ? to_float(q_row[d]) * args.scale : 0.0f;
    acc[j] = 0.0f;
  }
  float row_max = -INFINITY, row_sum = 0.0f;
  const int64_t token_stride = static_cast<int64_t>(args.num_kv_heads) * args.head_dim;
  const Index* table = args.block_tables + seq * args.table_stride;
  for (int64_t pos = 0; pos <= query_pos; ++pos) {
    const int64_t block = table[pos / args.block_size];
    if (block < 0 || block >= args.num_blocks) continue;  // unchecked id: the key is masked
    const int64_t offset = (block * args.block_size + pos % args.block_size) * token_stride +
                           static_cast<int64_t>(kv_head) * args.head_dim;
    float partial = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      if (d < args.head_dim) partial += q[j] * to_float(args.k_layer[offset + d]);
    }
    const float score = warp_sum(partial);
    const float new_max = fmaxf(row_max, score);
    const float rescale = expf(row_max - new_max);  // 0 for the first key (row_max = -inf)
    const float p = expf(score - new_max);
    row_sum = row_sum * rescale + p;
    row_max = new_max;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      if (d < args.head_dim) acc[j] = acc[j] * rescale + p * to_float(args.v_layer[offset + d]);
    }
  }
  const float inv = 1.0f / row_sum;  // a query always sees itself: row_sum >= 1
  T* out_row = args.out + t * args.out_stride_t + head * args.out_stride_h;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int d = lane + j * kWarpSize;
    if (d < args.head_dim) out_row[d] = from_float<T>(acc[j] * inv);
  }
}

// head_dim <= kMaxHeadDim; num_q_heads a multiple of num_kv_heads.
template <typename T, typename Index>
cudaError_t launch_paged_attention(const AttentionArgs<T, Index>& args, cudaStream_t stream) {
  const int64_t warps = args.num_tokens * args.num_q_heads;
  if (warps == 0) return cudaSuccess;
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  paged_attention_kernel<T, Index><<<static_cast<unsigned>(blocks), kWarpsPerBlock * kWarpSize, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace ponder::cuda_kv
