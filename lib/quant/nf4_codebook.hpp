// The value tables of bitsandbytes' NF4 format.
#pragma once

#include <array>

namespace temper {

// NF4 levels, index 0..15, as bitsandbytes lists them (functional.py get_4bit_type("nf4"), the
// same values as the CUDA lookup table). The literal values are used: recomputing them from the
// normal quantiles differs in the last bits.
inline constexpr std::array<float, 16> kNf4Levels = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// Decision thresholds: the midpoints between neighbouring levels, computed in double and rounded
// to float (bitsandbytes' kernel compares against these constants). A value strictly above
// threshold k is coded k + 1 or higher; a value equal to a threshold takes the lower level.
std::array<float, 15> nf4_thresholds();

}  // namespace temper
