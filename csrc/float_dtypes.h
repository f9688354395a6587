// Dtype dispatch shared by the CPU and CUDA glue: torch's float dtypes as the kernels'
// element types.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ponder {

// Calls fn(static_cast<T*>(nullptr)) with T the kernels' element type for dtype: float,
// or the backend's 16-bit types with at::Half's and at::BFloat16's layouts (Half,
// BFloat16). `what` names the tensor in the error.
template <typename Half, typename BFloat16, typename Fn>
void dispatch_float_dtype(at::ScalarType dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case at::kFloat:
      return fn(static_cast<float*>(nullptr));
    case at::kHalf:
      return fn(static_cast<Half*>(nullptr));
    case at::kBFloat16:
      return fn(static_cast<BFloat16*>(nullptr));
    default:
      TORCH_CHECK(false, "unsupported ", what, " dtype ", dtype);
  }
}

}  // namespace ponder
