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

void pack(const std::vector<Linear*>& members, at::Tensor& packed) {
  if (packed.defined() || !packable(members)) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> weights;
  for (const Linear* m : members) weights.push_back(m->weight);
  packed = at::cat(weights, 0);  // [S, in]
  int64_t row = 0;
  for (Linear* m : members) {
    const int64_t out = m->weight.size(0);
    m->weight = packed.narrow(0, row, out);
    row += out;
  }
}

}  // namespace

void pack_frozen_projections(DecoderLayer& layer) {
  // BLOOM's layers have no separate q/k/v or gate/up (their weights are undefined): nothing to pack.
  if (layer.q.weight.defined()) pack({&layer.q, &layer.k, &layer.v}, layer.packed_qkv);
  if (layer.gate.weight.defined()) pack({&layer.gate, &layer.up}, layer.packed_gate_up);
}

std::optional<at::Tensor> grouped_forward(std::initializer_list<const Linear*> members, const at::Tensor& packed,
                                          const at::Tensor& x) {
  if (!packed.defined() || packed.requires_grad() || packed.scalar_type() != x.scalar_type() ||
      packed.device() != x.device()) {
    return std::nullopt;
  }
  const int64_t in = packed.size(1);
  const int64_t row_bytes = in * static_cast<int64_t>(packed.element_size());
  const char* base = static_cast<const char*>(packed.data_ptr());
  std::vector<ProjectionMember> group;
  std::vector<at::Tensor> biases;
  int64_t row = 0;
  for (const Linear* m : members) {
    const at::Tensor& w = m->weight;
    // Still the view made by packing: same storage, same place, same shape, frozen.
    if (m->is_quantized() || !w.defined() || w.requires_grad() || w.dim() != 2 || w.size(1) != in ||
        !w.is_contiguous() || w.scalar_type() != packed.scalar_type() ||
        static_cast<const char*>(w.data_ptr()) != base + row * row_bytes) {
      return std::nullopt;
    }
    if (m->bias.defined() && m->bias.requires_grad()) return std::nullopt;
    ProjectionMember member;
    member.out = w.size(0);
    if (m->delta != nullptr) {
      std::optional<LowRankTerm> term = m->delta->low_rank_term();
      if (!term) return std::nullopt;
      member.a = term->a;
      member.b = term->b;
      member.scale = term->scale;
    }
    if (m->bias.defined()) biases.push_back(m->bias);
    group.push_back(std::move(member));
    row += w.size(0);
  }
  if (row != packed.size(0) || (!biases.empty() && biases.size() != group.size())) return std::nullopt;
  const at::Tensor bias = biases.empty() ? at::Tensor() : at::cat(biases, 0).to(x.scalar_type());
  return grouped_projection(x, packed, bias, group);
}

}  // namespace temper
