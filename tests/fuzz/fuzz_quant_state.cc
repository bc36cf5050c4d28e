// bitsandbytes NF4 quant_state parsing (Nf4Quantizer::from_tensors, docs/quantization.md): the
// input is split (fuzz_support.hpp's TwoParts) into the quant_state JSON
// ("w.weight.quant_state.bitsandbytes__nf4") and a safetensors file with the other tensors
// ("w.weight", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"). A state that
// parses must be consistent with its shape, and dequantizes without reading out of bounds
// (codes index 16- and 256-entry maps) into a tensor of that shape.
#include <cstring>

#include "fuzz_support.hpp"
#include "io/safetensors.hpp"
#include "temper/nf4_quantizer.hpp"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::TwoParts parts = fuzz::split_two(data, size);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::from_bytes(parts.second, "fuzz.safetensors");
  if (!file.ok()) return 0;  // fuzz_safetensors covers the container
  const std::string json_name = "w.weight.quant_state.bitsandbytes__nf4";
  auto lookup = [&](const std::string& name) -> StatusOr<at::Tensor> {
    if (name == json_name) {
      at::Tensor bytes = at::empty({static_cast<int64_t>(parts.first.size())}, at::kByte);
      if (!parts.first.empty()) std::memcpy(bytes.data_ptr(), parts.first.data(), parts.first.size());
      return bytes;
    }
    return file->tensor(name);
  };
  StatusOr<QuantState> state = Nf4Quantizer::from_tensors(lookup, "w");
  if (!state.ok()) {
    fuzz::expect_code(state.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented,
                                       absl::StatusCode::kNotFound});
    return 0;
  }
  const int64_t n = state->numel();
  fuzz::expect(n > 0, "a parsed state has no elements");
  fuzz::expect(state->packed.numel() == (n + 1) / 2, "packed size differs from the shape");
  fuzz::expect(state->absmax.numel() == (n + state->blocksize - 1) / state->blocksize, "absmax size differs");
  StatusOr<at::Tensor> w = Nf4Quantizer::dequantize(*state, at::kFloat);
  if (!w.ok()) {
    fuzz::expect_code(w.status(), {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  fuzz::expect(w->sizes().vec() == state->shape, "dequantized shape differs from the quant_state's");
  return 0;
}
