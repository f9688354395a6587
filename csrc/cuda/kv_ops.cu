// Torch glue of the CUDA KV cache ops: argument checks (shapes, dtypes, devices; index
// values are not read, that would synchronise), dtype dispatch, launch on the current
// stream. The kernels are in csrc/include/ponder/kv_ops.cuh; the semantics in
// python/ponder/reference/kv_ops.py.
#include <ATen/ops/arange.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sub.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>

#include "float_dtypes.h"
#include "kv_checks.h"
#include "ponder/kv_ops.cuh"
#include "ponder_ops.h"

namespace ponder::cuda {
namespace {

namespace kernels = ponder::cuda_kv;

void check_cuda(const at::Tensor& k_cache) {
  TORCH_CHECK(k_cache.is_cuda(), "the cuda KV cache kernels need CUDA tensors, got ", k_cache.device());
}

template <typename T>
T* typed(const at::Tensor& t) {
  return static_cast<T*>(const_cast<void*>(t.const_data_ptr()));
}

}  // namespace

void copy_blocks(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& src, const at::Tensor& dst) {
  check_copy_blocks_args(k_cache, v_cache, src, dst);
  check_cuda(k_cache);
  TORCH_CHECK(src.size(0) <= INT_MAX && k_cache.size(0) <= 65535, "copy_blocks supports at most 2^31 - 1 pairs and ",
              "65535 layers, got ", src.size(0), " and ", k_cache.size(0));
  const c10::cuda::CUDAGuard device_guard(k_cache.device());
  const at::Tensor src_c = src.contiguous(), dst_c = dst.contiguous();
  const int64_t block_bytes = k_cache[0][0].numel() * k_cache.element_size();
  C10_CUDA_CHECK(kernels::launch_copy_blocks(k_cache.data_ptr(), v_cache.data_ptr(), src_c.const_data_ptr<int64_t>(),
                                             dst_c.const_data_ptr<int64_t>(), src.size(0), k_cache.size(0),
                                             k_cache.size(1), block_bytes, c10::cuda::getCurrentCUDAStream()));
}

void write_kv(at::Tensor& k_cache, at::Tensor& v_cache, int64_t layer, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& slot_mapping) {
  check_write_kv_args(k_cache, v_cache, layer, k, v, slot_mapping);
  check_cuda(k_cache);
  TORCH_CHECK(slot_mapping.size(0) <= INT_MAX && k_cache.size(3) * k_cache.size(4) <= INT_MAX,
              "write_kv supports at most 2^31 - 1 tokens and elements per token");
  const c10::cuda::CUDAGuard device_guard(k_cache.device());
  const at::Tensor slots = slot_mapping.contiguous();
  const int64_t layer_elems = k_cache[0].numel();
  dispatch_float_dtype<__half, __nv_bfloat16>(k_cache.scalar_type(), "cache", [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const auto rows = [](const at::Tensor& t) {
      return kernels::TokenRows<T>{typed<T>(t), t.stride(0), t.stride(1), t.stride(2)};
    };
    C10_CUDA_CHECK(kernels::launch_write_kv<T>(
        typed<T>(k_cache) + layer * layer_elems, typed<T>(v_cache) + layer * layer_elems, rows(k), rows(v),
        slots.const_data_ptr<int64_t>(), slots.size(0), k_cache.size(1) * k_cache.size(2),
        static_cast<int>(k_cache.size(3)), static_cast<int>(k_cache.size(4)), c10::cuda::getCurrentCUDAStream()));
  });
}

void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t layer,
                     const at::Tensor& block_tables, const at::Tensor& seq_lens, const at::Tensor& query_lens,
                     double scale, at::Tensor& out) {
  check_paged_attention_args(q, k_cache, v_cache, layer, block_tables, seq_lens, query_lens, out);
  check_cuda(k_cache);
  TORCH_CHECK(k_cache.size(4) <= kernels::kMaxHeadDim, "head_dim ", k_cache.size(4),
              " exceeds the cuda kernel's maximum of ", kernels::kMaxHeadDim);
  TORCH_CHECK(q.size(1) <= INT_MAX && q.size(0) * q.size(1) <= INT_MAX * int64_t{kernels::kWarpsPerBlock},
              "paged_attention: too many query rows: ", q.sizes());
  const c10::cuda::CUDAGuard device_guard(q.device());
  const int64_t num_tokens = q.size(0);
  const at::Tensor q_rows = q.stride(2) == 1 ? q : q.contiguous();
  const at::Tensor tables = block_tables.contiguous();
  const at::Tensor seq_lens_c = seq_lens.contiguous(), query_lens_c = query_lens.contiguous();
  // Each sequence's first row and each row's sequence, on the device (no sync).
  const at::Tensor query_end = at::cumsum(query_lens_c, 0);
  const at::Tensor query_start = at::sub(query_end, query_lens_c);
  const at::Tensor token_seq = at::searchsorted(query_end, at::arange(num_tokens, query_end.options()),
                                                /*out_int32=*/false, /*right=*/true);
  const int64_t layer_elems = k_cache[0].numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float_dtype<__half, __nv_bfloat16>(q.scalar_type(), "cache", [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const auto launch = [&](auto* index_tag) {
      using Index = std::remove_pointer_t<decltype(index_tag)>;
      const kernels::AttentionArgs<T, Index> args{
          typed<T>(q_rows), q_rows.stride(0), q_rows.stride(1),
          typed<T>(k_cache) + layer * layer_elems, typed<T>(v_cache) + layer * layer_elems,
          typed<T>(out), out.stride(0), out.stride(1),
          typed<Index>(tables), tables.stride(0),
          seq_lens_c.const_data_ptr<int64_t>(), query_lens_c.const_data_ptr<int64_t>(),
          query_start.const_data_ptr<int64_t>(), token_seq.const_data_ptr<int64_t>(),
          num_tokens, k_cache.size(1), k_cache.size(2),
          static_cast<int>(q.size(1)), static_cast<int>(k_cache.size(3)), static_cast<int>(k_cache.size(4)),
          static_cast<float>(scale)};
      C10_CUDA_CHECK(kernels::launch_paged_attention(args, stream));
    };
    if (tables.scalar_type() == at::kInt) {
      launch(static_cast<int32_t*>(nullptr));
    } else {
      launch(static_cast<int64_t*>(nullptr));
    }
  });
}

}  // namespace ponder::cuda
