// Argument checks shared by the CPU and CUDA glue of the KV cache ops (shapes, dtypes,
// devices). The Python wrappers check the same things, and the values of index tensors,
// with friendlier messages; these guard direct torch.ops.ponder.* calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ponder {

// k_cache, v_cache: float32/float16/bfloat16 [num_layers, num_blocks, block_size,
// num_kv_heads, head_dim], contiguous, same shape, dtype and device.
inline void check_caches(const at::Tensor& k_cache, const at::Tensor& v_cache) {
  TORCH_CHECK(k_cache.dim() == 5, "k_cache must be 5-D [num_layers, num_blocks, block_size, num_kv_heads, head_dim], ",
              "got shape ", k_cache.sizes());
  const auto dtype = k_cache.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "k_cache must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache has shape ", v_cache.sizes(), " but k_cache has ",
              k_cache.sizes());
  TORCH_CHECK(v_cache.scalar_type() == dtype, "v_cache is ", v_cache.scalar_type(), " but k_cache is ", dtype);
  TORCH_CHECK(v_cache.device() == k_cache.device(), "v_cache is on ", v_cache.device(), " but k_cache is on ",
              k_cache.device());
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "k_cache and v_cache must be contiguous");
}

// An index tensor: `dims`-D, on the caches' device, int64 (or int32 when allowed).
inline void check_index(const at::Tensor& t, const char* name, int64_t dims, const at::Tensor& k_cache,
                        bool allow_int32 = false) {
  TORCH_CHECK(t.dim() == dims, name, " must be ", dims, "-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong || (allow_int32 && t.scalar_type() == at::kInt), name, " must be int64",
              allow_int32 ? " or int32" : "", ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == k_cache.device(), name, " is on ", t.device(), " but k_cache is on ", k_cache.device());
}

inline void check_copy_blocks_args(const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& src,
                                   const at::Tensor& dst) {
  check_caches(k_cache, v_cache);
  check_index(src, "src", 1, k_cache);
  check_index(dst, "dst", 1, k_cache);
  TORCH_CHECK(src.size(0) == dst.size(0), "src and dst must have the same length, got ", src.size(0), " and ",
              dst.size(0));
}

inline void check_layer(int64_t layer, const at::Tensor& k_cache) {
  TORCH_CHECK(layer >= 0 && layer < k_cache.size(0), "layer = ", layer, " is out of range: expected 0 <= layer < ",
              k_cache.size(0), " (num_layers)");
}

// k, v: [T, num_kv_heads, head_dim] of the caches' dtype; slot_mapping: int64 [T].
inline void check_write_kv_args(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t layer,
                                const at::Tensor& k, const at::Tensor& v, const at::Tensor& slot_mapping) {
  check_caches(k_cache, v_cache);
  check_layer(layer, k_cache);
  check_index(slot_mapping, "slot_mapping", 1, k_cache);
  for (const at::Tensor* t : {&k, &v}) {
    const char* name = t == &k ? "k" : "v";
    TORCH_CHECK(t->dim() == 3 && t->size(0) == slot_mapping.size(0) && t->size(1) == k_cache.size(3) &&
                    t->size(2) == k_cache.size(4),
                name, " must have shape [", slot_mapping.size(0), ", ", k_cache.size(3), ", ", k_cache.size(4),
                "] ([T, num_kv_heads, head_dim]), got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == k_cache.scalar_type(), name, " is ", t->scalar_type(), " but the caches are ",
                k_cache.scalar_type());
    TORCH_CHECK(t->device() == k_cache.device(), name, " is on ", t->device(), " but k_cache is on ",
                k_cache.device());
  }
}

// q: [T, num_q_heads, head_dim] (num_q_heads a multiple of num_kv_heads, last dimension
// contiguous); block_tables: int32/int64 [S, max_blocks]; seq_lens, query_lens: int64 [S];
// out: contiguous, shaped and typed as q.
inline void check_paged_attention_args(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                       int64_t layer, const at::Tensor& block_tables, const at::Tensor& seq_lens,
                                       const at::Tensor& query_lens, const at::Tensor& out) {
  check_caches(k_cache, v_cache);
  check_layer(layer, k_cache);
  const int64_t num_kv_heads = k_cache.size(3), head_dim = k_cache.size(4);
  TORCH_CHECK(q.dim() == 3 && q.size(2) == head_dim && q.size(1) > 0 && q.size(1) % num_kv_heads == 0,
              "q must be [T_total, num_q_heads, ", head_dim, "] with num_q_heads a positive multiple of num_kv_heads = ",
              num_kv_heads, ", got shape ", q.sizes());
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type(), "q is ", q.scalar_type(), " but the caches are ",
              k_cache.scalar_type());
  TORCH_CHECK(q.device() == k_cache.device(), "q is on ", q.device(), " but k_cache is on ", k_cache.device());
  check_index(block_tables, "block_tables", 2, k_cache, /*allow_int32=*/true);
  check_index(seq_lens, "seq_lens", 1, k_cache);
  check_index(query_lens, "query_lens", 1, k_cache);
  TORCH_CHECK(seq_lens.size(0) == block_tables.size(0) && query_lens.size(0) == block_tables.size(0),
              "seq_lens and query_lens must have shape [", block_tables.size(0), "] (one per block table row), got ",
              seq_lens.sizes(), " and ", query_lens.sizes());
  TORCH_CHECK(out.sizes() == q.sizes() && out.scalar_type() == q.scalar_type() && out.device() == q.device() &&
                  out.is_contiguous(),
              "out must be a contiguous ", q.scalar_type(), " tensor of shape ", q.sizes(), " on ", q.device());
}

}  // namespace ponder
