#include <ATen/core/grad_mode.h>
#include "model/activation_checkpoint.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

struct LayerHolder : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  at::Tensor rng_state;  // the CPU generator's state at the forward, replayed for the recomputation
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, c10::intrusive_ptr<LayerHolder> holder) {
    holder->rng_state = at::detail::getDefaultCPUGenerator().get_state();
    ctx->saved_data["holder"] = c10::IValue::make_capsule(holder);
    ctx->save_for_backward({h});
    at::NoGradGuard no_grad;
    return holder->fn(h);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<LayerHolder>(ctx->saved_data["holder"].toCapsule());
    const at::Tensor input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    const at::Tensor rng_now = gen.get_state();
    gen.set_state(holder->rng_state);
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      out = holder->fn(input);
    }
    gen.set_state(rng_now);
    torch::autograd::backward({out}, {grads[0]});
    return {input.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& h) {
  auto holder = c10::make_intrusive<LayerHolder>();
  holder->fn = layer;
  // The recomputation only reaches parameters if the checkpoint's output requires grad, which
  // needs an input that does; a frozen embedding (LoRA) gives none, so give h one.
  const at::Tensor input = h.requires_grad() ? h : h.detach().requires_grad_(true);
  return CheckpointFunction::apply(input, holder);
}

}  // namespace temper
