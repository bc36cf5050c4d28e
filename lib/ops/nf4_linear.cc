#include "ops/nf4_linear.hpp"

#include <torch/csrc/autograd/custom_function.h>

#include "quant/nf4_ops.hpp"

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

struct StateHolder : torch::CustomClassHolder {
  std::shared_ptr<const QuantState> state;
};

at::Tensor dense(const QuantState& s, at::ScalarType dtype) {
  if (s.double_quant()) {  // one fused kernel on CUDA (absmax decoded inside)
    return nf4_dequantize_nested_blocks(s.packed, s.absmax, s.nested_absmax, s.nested_quant_map,
                                        static_cast<float>(s.nested_offset), s.quant_map, s.blocksize,
                                        s.nested_blocksize, s.numel(), dtype)
        .view(s.shape);
  }
  return nf4_dequantize_blocks(s.packed, s.absmax, s.quant_map, s.blocksize, s.numel(), dtype).view(s.shape);
}

class Nf4LinearFunction : public torch::autograd::Function<Nf4LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<StateHolder> holder) {
    ctx->saved_data["state"] = c10::IValue::make_capsule(holder);
    return at::linear(x, dense(*holder->state, x.scalar_type()));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<StateHolder>(ctx->saved_data["state"].toCapsule());
    const at::Tensor& grad = grads[0];  // [..., out]
    return {at::matmul(grad, dense(*holder->state, grad.scalar_type())), at::Tensor()};
  }
};

}  // namespace

at::Tensor nf4_linear(const at::Tensor& x, const std::shared_ptr<const QuantState>& weight, const at::Tensor& bias) {
  auto holder = c10::make_intrusive<StateHolder>();
  holder->state = weight;
  // The bias stays outside the function (an undefined tensor cannot be an autograd input) and
  // autograd differentiates the addition itself.
  const at::Tensor y = Nf4LinearFunction::apply(x, holder);
  return bias.defined() ? y + bias : y;
}

}  // namespace temper
