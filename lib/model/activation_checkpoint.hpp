// Activation (gradient) checkpointing of one decoder layer: the forward pass keeps only the
// layer's input; the backward pass runs the layer again with autograd on and backpropagates
// through that recomputation (the "reentrant" scheme of torch.utils.checkpoint). Memory per layer
// drops from every intermediate activation to one [B, T, hidden] tensor, for one extra forward.
#pragma once

#include <functional>

#include <ATen/ATen.h>

namespace temper {

// `layer(h)` -> [B, T, hidden] must be a pure function of h and of parameters (no dropout
// randomness that differs between the two runs: the CPU generator's state is saved and replayed
// for the recomputation; CUDA generators are not, so dropout on CUDA tensors must stay 0 under
// checkpointing). h [B, T, hidden]; parameters receive their gradients during the backward.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& h);

}  // namespace temper
