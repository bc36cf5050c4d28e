#include "data/share_schedule.hpp"

#include <algorithm>
#include <numeric>
#include <random>

namespace temper {

ShareSchedule::ShareSchedule(std::vector<std::string> names, std::vector<double> base_weights,
                             std::vector<ShareSchedulePoint> points, uint64_t seed)
    : names_(std::move(names)), base_(std::move(base_weights)), points_(std::move(points)) {
  std::sort(points_.begin(), points_.end(),
            [](const ShareSchedulePoint& a, const ShareSchedulePoint& b) { return a.at_tokens < b.at_tokens; });
  std::vector<int> order(names_.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  tie_order_.assign(names_.size(), 0);
  for (size_t rank = 0; rank < order.size(); ++rank) tie_order_[order[rank]] = static_cast<int>(rank);
}

std::vector<double> ShareSchedule::weights_at(int64_t tokens) const {
  auto point_weights = [&](const ShareSchedulePoint& p) {
    std::vector<double> w = base_;
    for (size_t i = 0; i < names_.size(); ++i) {
      auto it = p.weights.find(names_[i]);
      if (it != p.weights.end()) w[i] = it->second;
    }
    return w;
  };
  if (points_.empty() || tokens < points_.front().at_tokens) return base_;
  for (size_t k = 0; k + 1 < points_.size(); ++k) {
    const ShareSchedulePoint& a = points_[k];
    const ShareSchedulePoint& b = points_[k + 1];
    if (tokens >= a.at_tokens && tokens < b.at_tokens) {
      const double f = static_cast<double>(tokens - a.at_tokens) / static_cast<double>(b.at_tokens - a.at_tokens);
      std::vector<double> wa = point_weights(a), wb = point_weights(b), w(wa.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = (1 - f) * wa[i] + f * wb[i];
      return w;
    }
  }
  return point_weights(points_.back());
}

std::vector<double> ShareSchedule::shares(int64_t tokens, const std::vector<bool>& active) const {
  std::vector<double> w = weights_at(tokens);
  double total = 0.0;
  for (size_t i = 0; i < w.size(); ++i) total += active[i] ? w[i] : 0.0;
  for (size_t i = 0; i < w.size(); ++i) w[i] = (active[i] && total > 0) ? w[i] / total : 0.0;
  return w;
}

int ShareSchedule::pick(const std::vector<double>& credits, const std::vector<bool>& active) const {
  int best = -1;
  for (size_t i = 0; i < credits.size(); ++i) {
    if (!active[i]) continue;
    if (best < 0 || credits[i] > credits[best] || (credits[i] == credits[best] && tie_order_[i] < tie_order_[best])) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace temper
