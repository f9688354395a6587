// Torch glue of the CPU KV cache ops (csrc/include/ponder/kv_ops.h): checks (shapes
// and, since CPU tensors are cheap to read, index values: nothing is written when one
// fails), dtype dispatch, and parallel loops.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "float_dtypes.h"
#include "kv_checks.h"
#include "ponder/kv_ops.h"
#include "ponder_ops.h"

namespace ponder::cpu {
namespace {

void check_cpu(const at::Tensor& k_cache) {
  TORCH_CHECK(k_cache.device().is_cpu(), "the cpu KV cache kernels need CPU tensors, got ", k_cache.device());
}

CacheShape cache_shape(const at::Tensor& cache) {
  return {cache.size(0), cache.size(1), cache.size(2), cache.size(3), cache.size(4)};
}

template <typename T>
const T* typed(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}

}  // namespace

void copy_blocks(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& src, const at::Tensor& dst) {
  check_copy_blocks_args(k_cache, v_cache, src, dst);
  check_cpu(k_cache);
  const at::Tensor src_c = src.contiguous(), dst_c = dst.contiguous();
  const int64_t* src_ids = src_c.const_data_ptr<int64_t>();
  const int64_t* dst_ids = dst_c.const_data_ptr<int64_t>();
  const int64_t pairs = src.size(0), num_blocks = k_cache.size(1);
  // role[b]: 1 when b is a source, 2 when it is a destination (3: both).
  std::vector<unsigned char> role(num_blocks, 0);
  for (int64_t i = 0; i < pairs; ++i) {
    TORCH_CHECK(src_ids[i] >= 0 && src_ids[i] < num_blocks, "src[", i, "] = ", src_ids[i],
                " is out of range: expected 0 <= block < ", num_blocks, " (num_blocks)");
    TORCH_CHECK(dst_ids[i] >= 0 && dst_ids[i] < num_blocks, "dst[", i, "] = ", dst_ids[i],
                " is out of range: expected 0 <= block < ", num_blocks, " (num_blocks)");
    TORCH_CHECK(!(role[dst_ids[i]] & 2), "dst holds ", dst_ids[i], " more than once: expected distinct values");
    role[src_ids[i]] |= 1;
    role[dst_ids[i]] |= 2;
  }
  for (int64_t i = 0; i < pairs; ++i) {
    TORCH_CHECK(role[dst_ids[i]] != 3, "block ", dst_ids[i], " is both a src and a dst: a copy's source must not be ",
                "overwritten by another copy of the same call");
  }
  const CacheShape shape = cache_shape(k_cache);
  const int64_t elem_bytes = k_cache.element_size();
  auto* k_bytes = static_cast<unsigned char*>(k_cache.data_ptr());
  auto* v_bytes = static_cast<unsigned char*>(v_cache.data_ptr());
  at::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      copy_block(k_bytes, shape, elem_bytes, src_ids[i], dst_ids[i]);
      copy_block(v_bytes, shape, elem_bytes, src_ids[i], dst_ids[i]);
    }
  });
}

void write_kv(at::Tensor& k_cache, at::Tensor& v_cache, int64_t layer, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& slot_mapping) {
  check_write_kv_args(k_cache, v_cache, layer, k, v, slot_mapping);
  check_cpu(k_cache);
  const at::Tensor slots_c = slot_mapping.contiguous();
  const int64_t* slots = slots_c.const_data_ptr<int64_t>();
  const int64_t num_tokens = slot_mapping.size(0), num_slots = k_cache.size(1) * k_cache.size(2);
  std::vector<int64_t> used;
  used.reserve(num_tokens);
  for (int64_t t = 0; t < num_tokens; ++t) {
    TORCH_CHECK(slots[t] >= -1 && slots[t] < num_slots, "slot_mapping[", t, "] = ", slots[t],
                " is out of range: expected -1 (skip) or 0 <= slot < ", num_slots, " (num_blocks * block_size)");
    if (slots[t] >= 0) used.push_back(slots[t]);
  }
  std::sort(used.begin(), used.end());
  const auto repeat = std::adjacent_find(used.begin(), used.end());
  TORCH_CHECK(repeat == used.end(), "slot_mapping holds ", repeat == used.end() ? 0 : *repeat,
              " more than once: expected distinct values");

  const CacheShape shape = cache_shape(k_cache);
  const int64_t token_bytes = shape.token_elems() * k_cache.element_size();
  const int64_t layer_offset = layer * shape.layer_elems() * k_cache.element_size();
  const at::Tensor k_c = k.contiguous(), v_c = v.contiguous();  // [T, heads, dim] rows, one per token
  const auto* k_src = static_cast<const unsigned char*>(k_c.const_data_ptr());
  const auto* v_src = static_cast<const unsigned char*>(v_c.const_data_ptr());
  auto* k_dst = static_cast<unsigned char*>(k_cache.data_ptr()) + layer_offset;
  auto* v_dst = static_cast<unsigned char*>(v_cache.data_ptr()) + layer_offset;
  at::parallel_for(0, num_tokens, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (slots[t] < 0) continue;  // padding
      std::memcpy(k_dst + slots[t] * token_bytes, k_src + t * token_bytes, static_cast<size_t>(token_bytes));
      std::memcpy(v_dst + slots[t] * token_bytes, v_src + t * token_bytes, static_cast<size_t>(token_bytes));
    }
  });
}

void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t layer,
                     const at::Tensor& block_tables, const at::Tensor& seq_lens, const at::Tensor& query_lens,
                     double scale, at::Tensor& out) {
  check_paged_attention_args(q, k_cache, v_cache, layer, block_tables, seq_lens, query_lens, out);
  check_cpu(k_cache);
  const CacheShape shape = cache_shape(k_cache);
  const int64_t num_seqs = block_tables.size(0), max_blocks = block_tables.size(1);
  const at::Tensor seq_lens_c = seq_lens.contiguous(), query_lens_c = query_lens.contiguous();
  const int64_t* seq_len = seq_lens_c.const_data_ptr<int64_t>();
  const int64_t* query_len = query_lens_c.const_data_ptr<int64_t>();
  const at::Tensor tables = block_tables.contiguous();
  const at::Tensor tables_long = tables.to(at::kLong);  // for the checks below: [S, max_blocks] is small
  const int64_t* table_ids = tables_long.const_data_ptr<int64_t>();

  // Index values, and each sequence's first query row.
  std::vector<int64_t> query_start(num_seqs + 1, 0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    TORCH_CHECK(query_len[s] >= 0, "query_lens[", s, "] = ", query_len[s], " is out of range: expected >= 0");
    TORCH_CHECK(seq_len[s] >= query_len[s] && seq_len[s] <= max_blocks * shape.block_size, "seq_lens[", s, "] = ",
                seq_len[s], " is out of range: expected query_lens[s] = ", query_len[s], " <= seq_lens[s] <= ",
                max_blocks * shape.block_size, " (max_blocks * block_size)");
    const int64_t used_blocks = (seq_len[s] + shape.block_size - 1) / shape.block_size;
    for (int64_t b = 0; b < used_blocks; ++b) {
      const int64_t block = table_ids[s * max_blocks + b];
      TORCH_CHECK(block >= 0 && block < shape.num_blocks, "block_tables[", s, ", ", b, "] = ", block,
                  " is out of range: expected 0 <= block < ", shape.num_blocks, " (num_blocks)");
    }
    query_start[s + 1] = query_start[s] + query_len[s];
  }
  TORCH_CHECK(query_start[num_seqs] == q.size(0), "query_lens sums to ", query_start[num_seqs], " but q has ",
              q.size(0), " tokens: expected sum(query_lens) == q.shape[0]");

  // The kernel reads rows of head_dim contiguous elements and writes float32; 16-bit
  // outputs are rounded by torch's copy from a float32 buffer.
  const at::Tensor q_rows = q.stride(2) == 1 ? q : q.contiguous();
  at::Tensor out_float = out.scalar_type() == at::kFloat ? out : at::empty(out.sizes(), out.options().dtype(at::kFloat));
  float* out_data = out_float.data_ptr<float>();
  const int64_t num_kv_heads = shape.num_kv_heads, group = q.size(1) / num_kv_heads;
  const int64_t out_token_stride = out_float.stride(0), out_head_stride = out_float.stride(1);
  const auto attend = [&](const auto* elem_type, const auto* index_type) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(elem_type)>>;
    using Index = std::remove_const_t<std::remove_pointer_t<decltype(index_type)>>;
    const T* q_data = typed<T>(q_rows);
    const T* k_layer = typed<T>(k_cache) + layer * shape.layer_elems();
    const T* v_layer = typed<T>(v_cache) + layer * shape.layer_elems();
    const Index* table_data = typed<Index>(tables);
    at::parallel_for(0, num_seqs * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
      AttentionScratch scratch;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t s = item / num_kv_heads, kv_head = item % num_kv_heads;
        const SequenceView<Index> seq{table_data + s * max_blocks, seq_len[s], query_len[s]};
        const int64_t first_head = kv_head * group;
        attend_sequence(q_data + query_start[s] * q_rows.stride(0) + first_head * q_rows.stride(1), q_rows.stride(0),
                        q_rows.stride(1), k_layer, v_layer, shape, kv_head, group, seq, static_cast<float>(scale),
                        out_data + query_start[s] * out_token_stride + first_head * out_head_stride, out_token_stride,
                        out_head_stride, scratch);
      }
    });
  };
  dispatch_float_dtype<Float16Bits, BFloat16Bits>(q.scalar_type(), "cache", [&](const auto* elem_type) {
    if (tables.scalar_type() == at::kInt) {
      attend(elem_type, static_cast<const int32_t*>(nullptr));
    } else {
      attend(elem_type, static_cast<const int64_t*>(nullptr));
    }
  });
  if (!out_float.is_same(out)) out.copy_(out_float);
}

}  // namespace ponder::cpu
