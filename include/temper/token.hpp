#pragma once

#include <cstdint>

namespace temper {

// A token id. 32 bits hold every vocabulary in use (the largest are ~256k); tensors handed to
// the model carry int64 ids, as libtorch's embedding and loss ops expect.
using TokenId = int32_t;

}  // namespace temper
