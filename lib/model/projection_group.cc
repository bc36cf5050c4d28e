#include "model/projection_group.hpp"

#include <vector>

#include <ATen/core/grad_mode.h>

#include "ops/grouped_projection.hpp"

namespace temper {
namespace {

bool packable(const std::vector<Linear*>& members) {
  const at::Tensor& first = members.front()->weight;
  for (const Linear* m : members) {
    const at::Tensor& w = m->weight;
    if (m->is_quantized() || !w.defined() || w.requires_grad() || w.dim() != 2 || !w.is_contiguous() ||
        w.scalar_type() != first.scalar_type() || w.device() != first.device() || w.size(1) != first.size(1)) {
      return false;
    }
  }
  return true;
}

// The members' biases packed too when every member has one of one dtype, frozen (Qwen2's q/k/v):
// the grouped GEMM then adds them without a per-call concatenation, and trained biases get
// their gradients from one reduction.
bool biases_packable(const std::vector<Linear*>& members) {
  const at::Tensor& first = members.front()->bias;
  for (const Linear* m : members) {
    const at::Tensor& b = m->bias;
    if (!b.defined() || b.requires_grad() || b.dim() != 1 || !b.is_contiguous() ||
        b.scalar_type() != first.scalar_type() || b.device() != first.device()) {
      return false;
    }
  }
  return true;
}

// Concatenates the members' tensors (selected by `field`) into `packed` and makes each member's
// tensor its block of it.
void pack_rows(const std::vector<Linear*>& members, at::Tensor Linear::*field, at::Tensor& packed) {
  std::vector<at::Tensor> parts;
  for (const Linear* m : members) parts.push_back(m->*field);
  packed = at::cat(parts, 0);
  int64_t row = 0;
  for (Linear* m : members) {
    const int64_t out = (m->*field).size(0);
    m->*field = packed.narrow(0, row, out);
    row += out;
  }
}

void pack(const std::vector<Linear*>& members, PackedGroup& group) {
  if (group.weight.defined() || !packable(members)) return;
  at::NoGradGuard no_grad;
  pack_rows(members, &Linear::weight, group.weight);  // [S, in]
  if (biases_packable(members)) pack_rows(members, &Linear::bias, group.bias);  // [S]
}

// Whether `t` is still rows [row, row + t.size(0)) of `packed` (the view packing made): same
// storage, same place, contiguous.
bool is_block_of(const at::Tensor& t, const at::Tensor& packed, int64_t row) {
  const int64_t row_numel = packed.dim() == 2 ? packed.size(1) : 1;
  return t.defined() && t.dim() == packed.dim() && t.is_contiguous() && t.scalar_type() == packed.scalar_type() &&
         (t.dim() == 1 || t.size(1) == packed.size(1)) &&
         static_cast<const char*>(t.data_ptr()) ==
             static_cast<const char*>(packed.data_ptr()) + row * row_numel * static_cast<int64_t>(t.element_size());
}

}  // namespace

void pack_projections(DecoderLayer& layer) {
  // BLOOM's layers have no separate q/k/v or gate/up (their weights are undefined): nothing to pack.
  if (layer.q.weight.defined()) pack({&layer.q, &layer.k, &layer.v}, layer.packed_qkv);
  if (layer.gate.weight.defined()) pack({&layer.gate, &layer.up}, layer.packed_gate_up);
}

std::optional<at::Tensor> grouped_forward(std::initializer_list<const Linear*> members, const PackedGroup& packed,
                                          const at::Tensor& x) {
  const at::Tensor& pw = packed.weight;
  if (!pw.defined() || pw.requires_grad() || pw.scalar_type() != x.scalar_type() || pw.device() != x.device() ||
      (packed.bias.defined() && packed.bias.requires_grad())) {
    return std::nullopt;
  }
  // Trained (full fine-tuning) or frozen: every member alike, else the members run one by one.
  const bool trained = (*members.begin())->weight.defined() && (*members.begin())->weight.requires_grad();
  std::vector<ProjectionMember> group;
  std::vector<at::Tensor> weights, biases;
  bool biases_are_blocks = true;  // every bias is its block of the packed bias
  int64_t row = 0;
  for (const Linear* m : members) {
    const at::Tensor& w = m->weight;
    if (m->is_quantized() || !is_block_of(w, pw, row) || w.requires_grad() != trained) return std::nullopt;
    if (m->bias.defined()) {
      // A bias is either its block of the packed bias or, unpacked, frozen (concatenated below).
      const bool block = packed.bias.defined() && is_block_of(m->bias, packed.bias, row);
      if (block ? m->bias.requires_grad() != trained : (trained || m->bias.requires_grad())) return std::nullopt;
      biases_are_blocks = biases_are_blocks && block;
      biases.push_back(m->bias);
    }
    ProjectionMember member;
    member.out = w.size(0);
    if (m->delta != nullptr) {
      std::optional<LowRankTerm> term = m->delta->low_rank_term();
      if (!term || trained) return std::nullopt;  // a trained base with an adapter: the members' path
      member.a = term->a;
      member.b = term->b;
      member.scale = term->scale;
    }
    weights.push_back(w);
    group.push_back(std::move(member));
    row += w.size(0);
  }
  if (row != pw.size(0) || (!biases.empty() && biases.size() != group.size())) return std::nullopt;
  const bool bias_packed = !biases.empty() && biases_are_blocks;
  if (trained) {  // (an unpacked bias of a trained member returned above)
    return grouped_linear(x, pw, biases.empty() ? at::Tensor() : packed.bias, weights, biases);
  }
  const at::Tensor bias = biases.empty() ? at::Tensor()
                          : bias_packed  ? packed.bias.to(x.scalar_type())
                                         : at::cat(biases, 0).to(x.scalar_type());
  return grouped_projection(x, pw, bias, group);
}

}  // namespace temper
