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
}

TORCH_LIBRARY_IMPL(ponder, CPU, m) {
  m.impl("filtered_probs", &ponder::cpu::filtered_probs);
  m.impl("sample", &ponder::cpu::sample);
}

#ifdef PONDER_WITH_CUDA
TORCH_LIBRARY_IMPL(ponder, CUDA, m) {
  m.impl("filtered_probs", &ponder::cuda::filtered_probs);
  m.impl("sample", &ponder::cuda::sample);
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
