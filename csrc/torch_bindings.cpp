// The one place where ponder's op schemas are declared (TORCH_LIBRARY(ponder, m)) and
// their CPU / CUDA kernels registered. Fake (meta) implementations for torch.compile are
// registered in Python next to each public op (python/ponder/ops/).
#include <Python.h>
#include <torch/library.h>

#include "ponder_ops.h"

TORCH_LIBRARY(ponder, m) {
  // logits: float32/float16/bfloat16 [B, V], any strides. temperature, top_p, min_p:
  // float32 [B]; top_k: int64 [B]. Returns float32 [B, V].
  m.def("filtered_probs(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p) -> Tensor");
  // As filtered_probs, plus seeds: int64 [B]. Returns tokens int64 [B, S], logprobs
  // float32 [B, S] (filtered distribution), raw_logprobs float32 [B, S] (softmax(logits)).
  m.def(
      "sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, Tensor seeds, "
      "int num_samples) -> (Tensor, Tensor, Tensor)");
  // KV cache layout (python/ponder/reference/kv_ops.py): k_cache, v_cache float32/float16/
  // bfloat16 [num_layers, num_blocks, block_size, num_kv_heads, head_dim], contiguous.
  // src, dst: int64 [N] block ids. Copies block src[i] to dst[i] in every layer, in place.
  m.def("copy_blocks(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor src, Tensor dst) -> ()");
  // k, v: [T, num_kv_heads, head_dim]; slot_mapping: int64 [T] flat slots (-1: skip).
  m.def("write_kv(Tensor(a!) k_cache, Tensor(b!) v_cache, int layer, Tensor k, Tensor v, Tensor slot_mapping) -> ()");
  // q: [T_total, num_q_heads, head_dim]; block_tables: int32/int64 [S, max_blocks];
  // seq_lens, query_lens: int64 [S]. Writes out: [T_total, num_q_heads, head_dim], q's dtype.
  m.def(
      "paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, int layer, Tensor block_tables, Tensor seq_lens, "
      "Tensor query_lens, float scale, Tensor(a!) out) -> ()");
  // PRM scoring (python/ponder/reference/scoring.py). head_logits: float32/float16/bfloat16
  // [T, C], any strides; rows, solution: int64 [P]; prior_value: float32 [S]; prior_count:
  // int64 [S]; head: 'pair' | 'sigmoid'; aggregate: 'last' | 'min' | 'prod' | 'mean'.
  // Returns scores float32 [P], value float32 [S], count int64 [S].
  m.def(
      "step_scores(Tensor head_logits, Tensor rows, Tensor solution, Tensor prior_value, Tensor prior_count, "
      "str head, int good, int bad, str aggregate) -> (Tensor, Tensor, Tensor)");
  // answers: int64 [N] (-1: none); scores: float32 [N]; offsets: int64 [G + 1]; method:
  // 'max' | 'weighted' | 'majority'. Returns winner int64 [G], answer int64 [G], weight float32 [G].
  m.def("vote(Tensor answers, Tensor scores, Tensor offsets, str method) -> (Tensor, Tensor, Tensor)");
  // Dense layer, CPU only (on GPUs cuBLAS through F.linear is the fast path). x: float32
  // [M, K], weight: float32 [N, K], bias: float32 [N] or None; any strides. Returns
  // float32 [M, N] = x @ weight.T + bias.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(ponder, CPU, m) {
  m.impl("filtered_probs", &ponder::cpu::filtered_probs);
  m.impl("sample", &ponder::cpu::sample);
  m.impl("copy_blocks", &ponder::cpu::copy_blocks);
  m.impl("write_kv", &ponder::cpu::write_kv);
  m.impl("paged_attention", &ponder::cpu::paged_attention);
  m.impl("step_scores", &ponder::cpu::step_scores);
  m.impl("vote", &ponder::cpu::vote);
  m.impl("linear", &ponder::cpu::linear);
}

#ifdef PONDER_WITH_CUDA
TORCH_LIBRARY_IMPL(ponder, CUDA, m) {
  m.impl("filtered_probs", &ponder::cuda::filtered_probs);
  m.impl("sample", &ponder::cuda::sample);
  m.impl("copy_blocks", &ponder::cuda::copy_blocks);
  m.impl("write_kv", &ponder::cuda::write_kv);
  m.impl("paged_attention", &ponder::cuda::paged_attention);
  m.impl("step_scores", &ponder::cuda::step_scores);
  m.impl("vote", &ponder::cuda::vote);
}
#endif

// `import ponder._C` loads this library (and so runs the registrations above). The
// module itself only says whether the CUDA kernels were built.
static PyModuleDef ponder_module = {PyModuleDef_HEAD_INIT, "_C", "ponder's compiled kernels", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&ponder_module);
  if (module == nullptr) return nullptr;
#ifdef PONDER_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
