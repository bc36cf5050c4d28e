#include "lora/lora_projection.hpp"

#include <torch/csrc/autograd/custom_function.h>

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The base layer as the functions need it between forward and backward: frozen, so it is not an
// autograd input. A copy of the Linear (tensor handles; a quantized base keeps its NF4 state,
// and Linear::dense_weight dequantizes afresh in each direction, never kept).
struct BaseHolder : torch::CustomClassHolder {
  Linear layer;
};

// The adapter's operands in the compute dtype: A as is, B with the scale folded in (both tiny),
// so neither direction spends an elementwise pass over activations on the scale.
struct Operands {
  at::Tensor a;         // [r, in] compute dtype
  at::Tensor b_scaled;  // [out, r] compute dtype, s * B
};

Operands operands(const at::Tensor& a, const at::Tensor& b, double scale, at::ScalarType dtype) {
  Operands o;
  o.a = a.to(dtype);
  if (at::promote_types(b.scalar_type(), dtype) == b.scalar_type()) {
    // Masters at least as wide as the compute dtype (fp32 -> bf16): scaled in the masters'
    // precision and cast in the same pass.
    o.b_scaled = at::empty(b.sizes(), b.options().dtype(dtype));
    at::mul_out(o.b_scaled, b, at::scalar_tensor(scale, at::TensorOptions().dtype(at::kDouble)));
  } else {
    o.b_scaled = b.to(dtype) * scale;
  }
  return o;
}

at::Tensor rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }  // [..., n] -> [N, n]

// h = x A^T [N, r]; then y2 [N, out] += h (s B)^T inside the GEMM.
at::Tensor accumulate_adapter(at::Tensor& y2, const at::Tensor& x2, const Operands& o) {
  at::Tensor h = at::mm(x2, o.a.t());
  y2.addmm_(h, o.b_scaled.t());
  return h;
}

// Gradients of y = ... + h (s B)^T, h = x A^T, for upstream g2 [N, out]:
//   dA = (g2 s B)^T x   [r, in],   dB = s g2^T h   [out, r],   dx += (g2 s B) A   [N, in].
// `grad_x2` [N, in] (compute dtype) receives the input gradient's adapter part when defined, or
// is set to it when undefined and the input needs one.
struct AdapterGrads {
  at::Tensor a, b;
};

AdapterGrads adapter_backward(const at::Tensor& g2, const at::Tensor& x2, const at::Tensor& h, const Operands& o,
                              at::ScalarType a_dtype, at::ScalarType b_dtype, double scale, bool need_x,
                              at::Tensor& grad_x2) {
  const at::Tensor gh = at::mm(g2, o.b_scaled);  // [N, r] = s g2 B
  if (need_x) {
    if (grad_x2.defined()) {
      grad_x2.addmm_(gh, o.a);
    } else {
      grad_x2 = at::mm(gh, o.a);
    }
  }
  AdapterGrads grads;
  grads.a = at::mm(gh.t(), x2).to(a_dtype);
  grads.b = at::empty(o.b_scaled.sizes(), o.b_scaled.options().dtype(b_dtype));
  at::mul_out(grads.b, at::mm(g2.t(), h), at::scalar_tensor(scale, at::TensorOptions().dtype(at::kDouble)));
  return grads;
}

// The gradients of A and B are returned in the masters' dtypes (their shapes are the operands').
void save_adapter(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h, const Operands& o,
                  const at::Tensor& a, const at::Tensor& b, double scale) {
  ctx->save_for_backward({x, h, o.a, o.b_scaled});
  ctx->saved_data["scale"] = scale;
  ctx->saved_data["a_dtype"] = static_cast<int64_t>(a.scalar_type());
  ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
}

struct SavedAdapter {
  at::Tensor x, h;
  Operands o;
  at::ScalarType a_dtype, b_dtype;
  double scale;
};

SavedAdapter load_adapter(AutogradContext* ctx) {
  const auto saved = ctx->get_saved_variables();
  SavedAdapter s;
  s.x = saved[0];
  s.h = saved[1];
  s.o.a = saved[2];
  s.o.b_scaled = saved[3];
  s.a_dtype = static_cast<at::ScalarType>(ctx->saved_data["a_dtype"].toInt());
  s.b_dtype = static_cast<at::ScalarType>(ctx->saved_data["b_dtype"].toInt());
  s.scale = ctx->saved_data["scale"].toDouble();
  return s;
}

// base(x) + adapter, the base frozen (BaseHolder). Inputs x, a, b.
class LoraProjectionFunction : public torch::autograd::Function<LoraProjectionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                            c10::intrusive_ptr<BaseHolder> base, double scale) {
    const at::ScalarType dtype = x.scalar_type();
    const at::Tensor x2 = rows(x);
    const Linear& layer = base->layer;
    const at::Tensor w = layer.dense_weight(dtype);  // [out, in]; for NF4 a transient copy
    at::Tensor y2 = layer.bias.defined() ? at::addmm(layer.bias.to(dtype), x2, w.t()) : at::mm(x2, w.t());
    const Operands o = operands(a, b, scale, dtype);
    const at::Tensor h = accumulate_adapter(y2, x2, o);
    save_adapter(ctx, x, h, o, a, b, scale);
    ctx->saved_data["base"] = c10::IValue::make_capsule(base);
    // As autograd does for saved tensors: an in-place change of the dense weight before the
    // backward (a merge mid-step) must fail loudly, not give gradients of another weight.
    ctx->saved_data["weight_version"] = static_cast<int64_t>(layer.weight.defined() ? layer.weight._version() : 0);
    auto sizes = x.sizes().vec();
    sizes.back() = y2.size(1);
    return y2.view(sizes);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const SavedAdapter s = load_adapter(ctx);
    auto base = c10::static_intrusive_pointer_cast<BaseHolder>(ctx->saved_data["base"].toCapsule());
    const Linear& layer = base->layer;
    TORCH_CHECK(!layer.weight.defined() ||
                    static_cast<int64_t>(layer.weight._version()) == ctx->saved_data["weight_version"].toInt(),
                "lora_projection: the base weight was modified in place between the forward and the backward");
    const at::Tensor g2 = rows(grads[0]);
    const bool need_x = ctx->needs_input_grad(0);
    at::Tensor grad_x2;
    if (need_x) grad_x2 = at::mm(g2, layer.dense_weight(g2.scalar_type()));  // [N, in]
    const AdapterGrads g = adapter_backward(g2, rows(s.x), s.h, s.o, s.a_dtype, s.b_dtype, s.scale, need_x, grad_x2);
    return {need_x ? grad_x2.view(s.x.sizes()) : at::Tensor(), g.a, g.b, at::Tensor(), at::Tensor()};
  }
};

// y + adapter(x) into a new tensor (in place would turn a view-returning base, linear with a bias
// on 3-D input, into a CopySlices whose backward clones the gradient). Inputs y, x, a, b.
class LoraAddFunction : public torch::autograd::Function<LoraAddFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& x, const at::Tensor& a,
                            const at::Tensor& b, double scale) {
    at::Tensor out = y.clone(at::MemoryFormat::Contiguous);  // [..., out]
    at::Tensor out2 = out.view({-1, out.size(-1)});
    const Operands o = operands(a, b, scale, x.scalar_type());
    const at::Tensor h = accumulate_adapter(out2, rows(x), o);
    save_adapter(ctx, x, h, o, a, b, scale);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const SavedAdapter s = load_adapter(ctx);
    const at::Tensor& g = grads[0];
    const bool need_x = ctx->needs_input_grad(1);
    at::Tensor grad_x2;
    const AdapterGrads ga = adapter_backward(rows(g), rows(s.x), s.h, s.o, s.a_dtype, s.b_dtype, s.scale, need_x, grad_x2);
    return {g, need_x ? grad_x2.view(s.x.sizes()) : at::Tensor(), ga.a, ga.b, at::Tensor()};
  }
};

}  // namespace

bool lora_projection_fusable(const Linear& base) {
  return (!base.weight.defined() || !base.weight.requires_grad()) &&
         (!base.bias.defined() || !base.bias.requires_grad()) && (base.weight.defined() || base.is_quantized());
}

at::Tensor lora_projection(const at::Tensor& x, const Linear& base, const at::Tensor& a, const at::Tensor& b,
                           double scale) {
  TORCH_CHECK(lora_projection_fusable(base), "lora_projection: the base layer must be frozen");
  auto holder = c10::make_intrusive<BaseHolder>();
  holder->layer = base;
  return LoraProjectionFunction::apply(x, a, b, holder, scale);
}

at::Tensor lora_add(const at::Tensor& y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, double scale) {
  return LoraAddFunction::apply(y, x, a, b, scale);
}

}  // namespace temper
