// Causal grouped-query attention with an optional sliding window and a KV cache offset.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

namespace temper {

// q [B, Hq, Tq, D] holds the positions past_length .. past_length+Tq-1; k/v [B, Hkv, Tk, D] hold
// positions 0 .. Tk-1 (Tk = past_length + Tq). A query at position i attends to keys j <= i,
// and with a window w only to j > i - w (transformers' Mistral rule). With segment_ids [B, T]
// (no cache), keys of another segment are hidden too (packed documents). Returns [B, Hq, Tq, D].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past_length,
                            std::optional<int64_t> sliding_window, const at::Tensor& segment_ids = at::Tensor());

}  // namespace temper
