#include "quant/nf4_codebook.hpp"

namespace temper {

std::array<float, 15> nf4_thresholds() {
  std::array<float, 15> t{};
  for (size_t k = 0; k < t.size(); ++k) {
    t[k] = static_cast<float>((static_cast<double>(kNf4Levels[k]) + static_cast<double>(kNf4Levels[k + 1])) / 2.0);
  }
  return t;
}

}  // namespace temper
