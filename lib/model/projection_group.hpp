// The llama block's projections that read one input — q/k/v of the attention, gate/up of the MLP —
// run as one grouped projection each (ops/grouped_projection.hpp) when their base weights are
// frozen: the weights are packed once into one tensor per group, each Linear's weight becoming a
// row-block view of it (nothing is duplicated, and everything that reads or writes a weight in
// place, such as merging an adapter, still works through the view).
#pragma once

#include <initializer_list>
#include <optional>

#include <ATen/ATen.h>

#include "model/model_impl.hpp"

namespace temper {

// Packs layer.q/k/v into layer.packed_qkv and layer.gate/up into layer.packed_gate_up, each group
// only when its members are dense, frozen (no requires_grad), contiguous and share dtype, device
// and input size; a group already packed or not eligible is left as it is. Call once the base is
// frozen (the LoRA adapter does, for CUDA models). Costs one group's weights of transient memory.
void pack_frozen_projections(DecoderLayer& layer);

// x [..., in] -> [..., sum of the members' outs]: the members' outputs side by side, computed by
// one grouped projection over `packed`, or nullopt when that path does not apply now (not packed,
// a weight replaced or made trainable since packing, a member quantized, a delta that is not a
// plain low-rank term, such as DoRA or LoRA with dropout while training, or mixed biases). The
// caller then runs the members one by one, which computes the same function.
std::optional<at::Tensor> grouped_forward(std::initializer_list<const Linear*> members, const at::Tensor& packed,
                                          const at::Tensor& x);

}  // namespace temper
