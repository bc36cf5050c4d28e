#include "ops/grouped_projection.hpp"

#include <torch/csrc/autograd/custom_function.h>

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The frozen part, kept out of autograd's inputs: the packed weight and bias, and where each
// adapted member sits (its rows of W, its columns of the stacked rank dimension).
struct GroupHolder : torch::CustomClassHolder {
  at::Tensor weight;  // [S, in]
  at::Tensor bias;    // [S] or undefined
  struct Adapted {
    int64_t row = 0, out = 0;   // rows [row, row + out) of W
    int64_t col = 0, rank = 0;  // columns [col, col + rank) of the stacked rank dimension
    double scale = 0.0;
    at::ScalarType a_dtype = at::kFloat, b_dtype = at::kFloat;
  };
  std::vector<Adapted> adapted;
  int64_t total_rank = 0;
};

at::Tensor rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }  // [..., n] -> [N, n]

at::Tensor scalar(double v) { return at::scalar_tensor(v, at::TensorOptions().dtype(at::kDouble)); }

// The stacked A [R, in] in `dtype`: one cat and, for fp32 masters, one cast.
at::Tensor stacked_a(at::TensorList as, at::ScalarType dtype) {
  bool one_dtype = true;
  for (const at::Tensor& a : as) one_dtype = one_dtype && a.scalar_type() == as[0].scalar_type();
  if (one_dtype) return at::cat(as, 0).to(dtype);
  std::vector<at::Tensor> cast;
  for (const at::Tensor& a : as) cast.push_back(a.to(dtype));
  return at::cat(cast, 0);
}

class GroupedProjectionFunction : public torch::autograd::Function<GroupedProjectionFunction> {
 public:
  // as[i], bs[i]: the i-th adapted member's A [r, in] and B [out, r].
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList as, at::TensorList bs,
                            c10::intrusive_ptr<GroupHolder> group) {
    const at::ScalarType dtype = x.scalar_type();
    const at::Tensor x2 = rows(x);
    const at::Tensor& w = group->weight;
    at::Tensor y2 = group->bias.defined() ? at::addmm(group->bias, x2, w.t()) : at::mm(x2, w.t());  // [N, S]
    at::Tensor a, b_diag, h;
    if (!group->adapted.empty()) {
      a = stacked_a(as, dtype);  // [R, in]
      // Block diagonal [S, R]: member i's s_i B_i at its rows and rank columns, zeros elsewhere.
      b_diag = at::zeros({w.size(0), group->total_rank}, x.options());
      for (size_t i = 0; i < group->adapted.size(); ++i) {
        const GroupHolder::Adapted& m = group->adapted[i];
        at::Tensor block = b_diag.narrow(0, m.row, m.out).narrow(1, m.col, m.rank);
        at::mul_out(block, bs[i], scalar(m.scale));
      }
      h = at::mm(x2, a.t());         // [N, R]
      y2.addmm_(h, b_diag.t());      // every adapter into the output, inside one GEMM
    }
    ctx->save_for_backward({x, h, a, b_diag});
    ctx->saved_data["group"] = c10::IValue::make_capsule(group);
    ctx->saved_data["weight_version"] = static_cast<int64_t>(w._version());
    auto sizes = x.sizes().vec();
    sizes.back() = y2.size(1);
    return y2.view(sizes);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& h = saved[1];
    const at::Tensor& a = saved[2];
    const at::Tensor& b_diag = saved[3];
    auto group = c10::static_intrusive_pointer_cast<GroupHolder>(ctx->saved_data["group"].toCapsule());
    TORCH_CHECK(static_cast<int64_t>(group->weight._version()) == ctx->saved_data["weight_version"].toInt(),
                "grouped_projection: the packed weight was modified in place between the forward and the backward");
    const at::Tensor g2 = rows(grads[0]);  // [N, S]
    const at::Tensor x2 = rows(x);
    const bool need_x = ctx->needs_input_grad(0);
    at::Tensor dx;
    if (need_x) dx = at::mm(g2, group->weight.to(g2.scalar_type()));  // [N, in]
    const size_t n = group->adapted.size();
    tensor_list out(1 + 2 * n + 1);
    if (n > 0) {
      const at::Tensor gh = at::mm(g2, b_diag);  // [N, R]: s_i g_i B_i for every member side by side
      if (need_x) dx.addmm_(gh, a);
      const at::Tensor da = at::mm(gh.t(), x2);  // [R, in]
      const at::Tensor gb = at::mm(g2.t(), h);   // [S, R]; member i's dB is its diagonal block
      for (size_t i = 0; i < n; ++i) {
        const GroupHolder::Adapted& m = group->adapted[i];
        out[1 + i] = da.narrow(0, m.col, m.rank).to(m.a_dtype);
        at::Tensor db = at::empty({m.out, m.rank}, g2.options().dtype(m.b_dtype));
        at::mul_out(db, gb.narrow(0, m.row, m.out).narrow(1, m.col, m.rank), scalar(m.scale));
        out[1 + n + i] = db;
      }
    }
    if (need_x) out[0] = dx.view(x.sizes());
    return out;
  }
};

// The packed tensors of grouped_linear and where each member's rows are.
struct LinearGroupHolder : torch::CustomClassHolder {
  at::Tensor weight;  // [S, in]
  at::Tensor bias;    // [S] or undefined
  std::vector<int64_t> outs;
};

class GroupedLinearFunction : public torch::autograd::Function<GroupedLinearFunction> {
 public:
  // weights / biases: the members' views, inputs only so that autograd routes their gradients;
  // the GEMMs read the packed tensors they are views of.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                            c10::intrusive_ptr<LinearGroupHolder> group) {
    const at::Tensor x2 = rows(x);
    const at::Tensor& w = group->weight;
    const at::Tensor y2 = group->bias.defined() ? at::addmm(group->bias, x2, w.t()) : at::mm(x2, w.t());  // [N, S]
    ctx->save_for_backward({x});
    ctx->saved_data["group"] = c10::IValue::make_capsule(group);
    ctx->saved_data["weight_version"] = static_cast<int64_t>(w._version());
    auto sizes = x.sizes().vec();
    sizes.back() = y2.size(1);
    return y2.view(sizes);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    auto group = c10::static_intrusive_pointer_cast<LinearGroupHolder>(ctx->saved_data["group"].toCapsule());
    TORCH_CHECK(static_cast<int64_t>(group->weight._version()) == ctx->saved_data["weight_version"].toInt(),
                "grouped_linear: the packed weight was modified in place between the forward and the backward");
    // grouped_linear takes a bias per member exactly when the packed bias is defined.
    const size_t n = group->outs.size();
    const size_t nb = group->bias.defined() ? n : 0;
    const at::Tensor g2 = rows(grads[0]);  // [N, S]
    tensor_list out(1 + n + nb + 1);
    if (ctx->needs_input_grad(0)) out[0] = at::mm(g2, group->weight).view(x.sizes());  // [N, in]
    bool need_w = false, need_b = false;
    for (size_t i = 0; i < n; ++i) need_w = need_w || ctx->needs_input_grad(1 + i);
    for (size_t i = 0; i < nb; ++i) need_b = need_b || ctx->needs_input_grad(1 + n + i);
    // One GEMM (one reduction) for the whole group; each member's gradient is its row block.
    const at::Tensor dw = need_w ? at::mm(g2.t(), rows(x)) : at::Tensor();  // [S, in]
    const at::Tensor db = need_b ? g2.sum(0) : at::Tensor();                // [S]
    int64_t row = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t out_i = group->outs[i];
      if (ctx->needs_input_grad(1 + i)) out[1 + i] = dw.narrow(0, row, out_i);
      if (nb > 0 && ctx->needs_input_grad(1 + n + i)) out[1 + n + i] = db.narrow(0, row, out_i);
      row += out_i;
    }
    return out;
  }
};

}  // namespace

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& packed_weight, const at::Tensor& packed_bias,
                          at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK(packed_weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == packed_weight.size(1), "grouped_linear: x ",
              x.sizes(), " does not match the packed weight ", packed_weight.sizes());
  TORCH_CHECK(!packed_weight.requires_grad() && (!packed_bias.defined() || !packed_bias.requires_grad()),
              "grouped_linear: the packed tensors carry no gradient (their members' views do)");
  TORCH_CHECK(packed_weight.scalar_type() == x.scalar_type() &&
                  (!packed_bias.defined() || packed_bias.scalar_type() == x.scalar_type()),
              "grouped_linear: x is ", x.scalar_type(), " but the packed weight is ", packed_weight.scalar_type());
  TORCH_CHECK(biases.empty() == !packed_bias.defined() && (biases.empty() || biases.size() == weights.size()),
              "grouped_linear: ", biases.size(), " biases for ", weights.size(), " members",
              packed_bias.defined() ? " with" : " without", " a packed bias");
  auto group = c10::make_intrusive<LinearGroupHolder>();
  group->weight = packed_weight;
  group->bias = packed_bias;
  // Each member must be the view it claims to be: the GEMMs read the packed tensors, so a member
  // that is a copy would be trained on values it does not hold.
  const int64_t in = packed_weight.size(1);
  int64_t row = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK(w.dim() == 2 && w.size(1) == in && w.is_contiguous() && w.scalar_type() == packed_weight.scalar_type() &&
                    w.data_ptr() == static_cast<char*>(packed_weight.data_ptr()) + row * in * w.element_size(),
                "grouped_linear: member ", i, " (", w.sizes(), ") is not rows [", row, ", ", row + w.size(0),
                ") of the packed weight ", packed_weight.sizes());
    if (!biases.empty()) {
      const at::Tensor& b = biases[i];
      TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0) && b.scalar_type() == packed_bias.scalar_type() &&
                      b.data_ptr() == static_cast<char*>(packed_bias.data_ptr()) + row * b.element_size(),
                  "grouped_linear: member ", i, "'s bias is not entries [", row, ", ", row + w.size(0),
                  ") of the packed bias");
    }
    group->outs.push_back(w.size(0));
    row += w.size(0);
  }
  TORCH_CHECK(row == packed_weight.size(0), "grouped_linear: the members' rows sum to ", row,
              " but the packed weight has ", packed_weight.size(0));
  return GroupedLinearFunction::apply(x, weights, biases, group);
}

at::Tensor grouped_projection(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const std::vector<ProjectionMember>& members) {
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), "grouped_projection: x ", x.sizes(),
              " does not match the packed weight ", weight.sizes());
  TORCH_CHECK(!weight.requires_grad() && (!bias.defined() || !bias.requires_grad()),
              "grouped_projection: the packed weight and bias must be frozen");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && (!bias.defined() || bias.scalar_type() == x.scalar_type()),
              "grouped_projection: x is ", x.scalar_type(), " but the packed weight is ", weight.scalar_type());
  auto group = c10::make_intrusive<GroupHolder>();
  group->weight = weight;
  group->bias = bias;
  std::vector<at::Tensor> as, bs;
  int64_t row = 0;
  for (const ProjectionMember& m : members) {
    if (m.a.defined()) {
      TORCH_CHECK(m.b.defined() && m.a.dim() == 2 && m.b.dim() == 2 && m.a.size(1) == weight.size(1) &&
                      m.b.size(0) == m.out && m.b.size(1) == m.a.size(0),
                  "grouped_projection: a member's low-rank term A ", m.a.sizes(), ", B ", m.b.sizes(),
                  " does not fit its ", m.out, " x ", weight.size(1), " block");
      GroupHolder::Adapted entry;
      entry.row = row;
      entry.out = m.out;
      entry.col = group->total_rank;
      entry.rank = m.a.size(0);
      entry.scale = m.scale;
      entry.a_dtype = m.a.scalar_type();
      entry.b_dtype = m.b.scalar_type();
      group->adapted.push_back(entry);
      group->total_rank += entry.rank;
      as.push_back(m.a);
      bs.push_back(m.b);
    }
    row += m.out;
  }
  TORCH_CHECK(row == weight.size(0), "grouped_projection: the members' outputs sum to ", row,
              " but the packed weight has ", weight.size(0), " rows");
  // As TensorLists (not vectors), so that autograd counts each A and B as an input.
  return GroupedProjectionFunction::apply(x, at::TensorList(as), at::TensorList(bs), group);
}

}  // namespace temper
