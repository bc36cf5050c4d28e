#include "model/attention.hpp"

#include <cmath>

#include "ops/compat.hpp"

namespace temper {

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past_length,
                            std::optional<int64_t> sliding_window, const at::Tensor& segment_ids) {
  const int64_t tq = q.size(2);
  const int64_t tk = k.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const bool window_bites = sliding_window && tk > *sliding_window;

  // The fused kernels' is_causal aligns the mask top-left, which is right only without a cache;
  // a single new token without a window sees every key and needs no mask at all.
  if (!window_bites && past_length == 0 && !segment_ids.defined()) {
    return compat::scaled_dot_product_attention(q, k, v, std::nullopt, /*is_causal=*/true, scale);
  }
  if (!window_bites && tq == 1 && !segment_ids.defined()) {
    return compat::scaled_dot_product_attention(q, k, v, std::nullopt, /*is_causal=*/false, scale);
  }
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor qpos = at::arange(past_length, past_length + tq, long_options).unsqueeze(1);  // [Tq, 1]
  const at::Tensor kpos = at::arange(0, tk, long_options).unsqueeze(0);                          // [1, Tk]
  at::Tensor allowed = kpos <= qpos;
  if (window_bites) allowed = allowed & (kpos > qpos - *sliding_window);
  if (segment_ids.defined()) {
    // [B, 1, T, T]: same segment, broadcast over heads.
    const at::Tensor same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1);
    allowed = (allowed.unsqueeze(0) & same).unsqueeze(1);
  }
  return compat::scaled_dot_product_attention(q, k, v, allowed, /*is_causal=*/false, scale);
}

}  // namespace temper
