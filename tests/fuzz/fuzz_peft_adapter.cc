// A whole PEFT adapter directory (adapter_config.json + adapter_model.safetensors, split from one
// input by fuzz_support.hpp's TwoParts) loaded onto the llama_gqa parity model, then a forward
// pass through it. The seeds are PEFT's own adapters for that model (tests/fixtures/peft).
#include "fuzz_support.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"

using namespace temper;

namespace {

Model& base_model() {
  static Model* model = [] {
    StatusOr<Model> loaded = Model::load(std::filesystem::path(TEMPER_SOURCE_DIR) / "tests/fixtures/parity/llama_gqa");
    if (!loaded.ok()) fuzz::fail(std::string(loaded.status().ToString()));
    return new Model(std::move(*loaded));
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Model& model = base_model();
  const fuzz::TwoParts parts = fuzz::split_two(data, size);
  const std::filesystem::path dir = fuzz::scratch_dir() / "adapter";
  std::filesystem::create_directories(dir);
  fuzz::write_bytes(dir / "adapter_config.json", parts.first);
  fuzz::write_bytes(dir / "adapter_model.safetensors", parts.second);

  StatusOr<LoraAdapter> adapter = LoraAdapter::load(model, dir);
  if (!adapter.ok()) {
    // FAILED_PRECONDITION would mean a failed load left an adapter installed on the model.
    fuzz::expect_code(adapter.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented});
    return 0;
  }
  ForwardInput input;
  input.input_ids = at::arange(6, at::kLong).reshape({1, 6});
  input.labels = input.input_ids;
  StatusOr<ForwardOutput> out = model.forward(input);
  fuzz::expect(out.ok(), "forward failed with an adapter that loaded");
  return 0;
}
