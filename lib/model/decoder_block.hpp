// One decoder layer of the llama family: pre-norm attention and SwiGLU MLP, each added back to
// the residual stream.
#pragma once

#include <ATen/ATen.h>

#include "model/model_impl.hpp"
#include "temper/config.hpp"

namespace temper {

// h [B, T, hidden] -> [B, T, hidden]. cos/sin [B, T, head_dim]. With cache slots (may be null),
// the layer's new keys/values are appended to *cache_k / *cache_v ([B, Hkv, past, D]) and
// attention covers past and new positions.
// segment_ids [B, T] (optional, no cache): packed documents, see causal_attention().
at::Tensor decoder_layer_forward(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                                 const at::Tensor& cos, const at::Tensor& sin, at::Tensor* cache_k,
                                 at::Tensor* cache_v, const at::Tensor& segment_ids = at::Tensor());

}  // namespace temper
