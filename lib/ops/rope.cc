#include "ops/rope.hpp"

#ifdef TEMPER_WITH_CUDA
#include "ops/cuda_dispatch.hpp"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/rope.cuh"
#endif

namespace temper {

#ifdef TEMPER_WITH_CUDA
namespace {

RopeLayout layout_of(const at::Tensor& t) {  // t [B, H, T, D], stride(3) == 1
  return RopeLayout{t.stride(0), t.stride(1), t.stride(2)};
}

// Applies the forward rotation (transposed = false) or its transpose to `in` [B, H, T, D].
at::Tensor rotate(const at::Tensor& input, const at::Tensor& cos, const at::Tensor& sin, bool transposed) {
  TORCH_CHECK(rope_cuda_supports(input, cos, sin), "rope_cuda: unsupported operands: x ", input.sizes(), " ",
              input.scalar_type(), ", cos ", cos.sizes(), " ", cos.scalar_type(), ", sin ", sin.sizes());
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t batch = input.size(0), heads = input.size(1), seq = input.size(2), dim = input.size(3);
  // The kernel indexes B, H, T by stride but wants the last dim dense.
  const at::Tensor in = input.stride(3) == 1 ? input : input.contiguous();
  // cos/sin broadcast over the batch through a zero batch stride; both must share strides.
  at::Tensor c = cos.expand({batch, seq, dim});
  at::Tensor s = sin.expand({batch, seq, dim});
  if (c.stride(2) != 1 || s.strides() != c.strides()) {
    c = c.contiguous();
    s = s.contiguous();
  }
  // Output stored as [B, T, H, D], the layout of the projection the model feeds in, so the pass
  // walks both in memory order; SDPA's fused kernels take [B, T, H, D] storage natively.
  const at::Tensor out = at::empty({batch, seq, heads, dim}, in.options()).transpose(1, 2);
  const RopeShape shape{batch, heads, seq, dim};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(in.scalar_type(), "rope", [&](auto tag) {
    using T = decltype(tag);
    const auto launch = transposed ? launch_rope_backward<T> : launch_rope_forward<T>;
    check_cuda(launch(reinterpret_cast<T*>(out.data_ptr()), reinterpret_cast<const T*>(in.data_ptr()),
                      reinterpret_cast<const T*>(c.data_ptr()), reinterpret_cast<const T*>(s.data_ptr()), shape,
                      layout_of(out), layout_of(in), c.stride(0), c.stride(1), stream),
               transposed ? "rope backward kernel" : "rope forward kernel");
  });
  return out;
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rope_cuda_forward(x, cos, sin);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    // cos and sin are tables of constants (rope_cos_sin): no gradient.
    return {rope_cuda_backward(grads[0], saved[0], saved[1]), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool rope_cuda_supports(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const at::ScalarType type = x.scalar_type();
  if (!x.is_cuda() || x.dim() != 4 || cos.dim() != 3 || !cos.sizes().equals(sin.sizes())) return false;
  if (cos.device() != x.device() || sin.device() != x.device()) return false;
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf) return false;
  if (cos.scalar_type() != type || sin.scalar_type() != type) return false;
  if (cos.requires_grad() || sin.requires_grad()) return false;
  const int64_t dim = x.size(3);
  return dim > 0 && dim % 2 == 0 && cos.size(2) == dim && cos.size(1) == x.size(2) &&
         (cos.size(0) == 1 || cos.size(0) == x.size(0));
}

at::Tensor rope_cuda_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return rotate(x, cos, sin, /*transposed=*/false);
}

at::Tensor rope_cuda_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin) {
  return rotate(dy.to(cos.scalar_type()), cos, sin, /*transposed=*/true);
}

at::Tensor rope_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return RopeFunction::apply(x, cos, sin);
}
#endif

}  // namespace temper
