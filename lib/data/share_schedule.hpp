// Which source the mixer draws from next.
//
// Each source has a target share w_i of the mixed tokens (its weight, or the schedule's weights
// at the current token count, normalised over the sources still in the mix). The mixer keeps a
// credit per source: when n tokens are mixed, every active source earns w_i * n and the source
// that supplied them pays n; the next document comes from the source with the most credit. This
// is smooth weighted round-robin over tokens: every source stays within about one document of
// its target at every point of the stream, so the shares hold over any window longer than a few
// documents, also when a schedule changes the shares or a source leaves the mix; and it is
// deterministic (ties broken by a seeded source order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "temper/data_mixer.hpp"

namespace temper {

class ShareSchedule {
 public:
  ShareSchedule(std::vector<std::string> names, std::vector<double> base_weights,
                std::vector<ShareSchedulePoint> points, uint64_t seed);

  // Normalised target shares at `tokens` mixed tokens over the sources where active[i].
  std::vector<double> shares(int64_t tokens, const std::vector<bool>& active) const;
  // The index of the active source with the most credit; -1 when none is active.
  int pick(const std::vector<double>& credits, const std::vector<bool>& active) const;

 private:
  std::vector<double> weights_at(int64_t tokens) const;

  std::vector<std::string> names_;
  std::vector<double> base_;
  std::vector<ShareSchedulePoint> points_;  // sorted by at_tokens
  std::vector<int> tie_order_;              // rank of each source for ties
};

}  // namespace temper
