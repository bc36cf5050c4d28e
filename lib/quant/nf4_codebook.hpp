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

// Decision thresholds: the midpoints between neighbouring levels as bitsandbytes writes them in
// its quantize kernels (dQuantizeNF4): decimal literals parsed to float. These are the contract,
// not (level[k] + level[k+1]) / 2 recomputed: for k = 0, 8, 12, 14 the double midpoint rounded to
// float lies one ulp away from the literal, so a value exactly on one of those thresholds would
// get another code than bitsandbytes gives it. A value strictly above threshold k is coded k + 1
// or higher; a value equal to a threshold takes the lower level.
inline constexpr std::array<float, 15> kNf4Thresholds = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,  -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,  0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,  0.8614784181118011f};

inline std::array<float, 15> nf4_thresholds() { return kNf4Thresholds; }

}  // namespace temper
