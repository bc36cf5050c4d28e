// The llama block's projections that read one input — q/k/v of the attention, gate/up of the MLP —
// run as one grouped projection each (ops/grouped_projection.hpp): the weights (and biases, when
// every member has one) are packed once into one tensor per group, each Linear's tensor becoming a
// row-block view of it (nothing is duplicated, and everything that reads or writes a weight in
// place, such as merging an adapter or the optimizer's update, still works through the view).
// A frozen base runs grouped_projection (with the members' LoRA terms); trained weights (full
// fine-tuning) run grouped_linear, whose backward hands each member its row block of one
// weight-gradient GEMM.
#pragma once

#include <initializer_list>
#include <optional>

#include <ATen/ATen.h>

#include "model/model_impl.hpp"

namespace temper {

// Packs layer.q/k/v into layer.packed_qkv and layer.gate/up into layer.packed_gate_up, each group
// only when its members are dense, not (yet) requiring grad, contiguous and share dtype, device
// and input size; a group already packed or not eligible is left as it is. Call before any member
// is made trainable (the LoRA adapter and the Trainer do, for CUDA models). Costs one group's
// weights of transient memory.
void pack_projections(DecoderLayer& layer);

// x [..., in] -> [..., sum of the members' outs]: the members' outputs side by side, computed by
// one grouped projection over `packed`, or nullopt when that path does not apply now (not packed,
// a weight replaced since packing, members of which some train and some do not, a member
// quantized, a delta that is not a plain low-rank term (DoRA, LoRA with dropout while training)
// or any delta on a trained base, mixed biases). The caller then runs the members one by one,
// which computes the same function.
std::optional<at::Tensor> grouped_forward(std::initializer_list<const Linear*> members, const PackedGroup& packed,
                                          const at::Tensor& x);

}  // namespace temper
