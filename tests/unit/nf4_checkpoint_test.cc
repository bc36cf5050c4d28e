// bitsandbytes NF4 checkpoints: export_quantized_model writes one (quantization_config + quant
// states in bitsandbytes' names), Model::load reads it back quantized, and the per-layer
// re-quantization report measures what merging an adapter and quantizing again costs.
#include <fstream>

#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include "io/checkpoint.hpp"
#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "temper/export.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/nf4_quantizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

// An adapter whose B is `scale` * N(0, 1) (a fresh adapter is the identity).
LoraAdapter adapter_with_update(Model& model, double scale, uint64_t seed) {
  LoraOptions options;
  options.rank = 4;
  LoraAdapter adapter = LoraAdapter::create(model, options).value();
  at::NoGradGuard no_grad;
  at::manual_seed(static_cast<int64_t>(seed));
  for (auto& [name, p] : adapter.named_parameters()) {
    if (name.find("lora_B") != std::string::npos) p.normal_(0.0, scale);
  }
  return adapter;
}

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_json(const std::filesystem::path& path, const nlohmann::json& value) {
  std::ofstream(path) << value.dump(2);
}

// Rewrites the checkpoint in `dir` with `edit` applied to its tensors.
void edit_checkpoint(const std::filesystem::path& dir, const std::function<void(NamedTensors&)>& edit) {
  NamedTensors tensors;
  {
    CheckpointReader reader = CheckpointReader::open(dir).value();
    for (const std::string& name : reader.names()) tensors.emplace_back(name, reader.tensor(name).value().clone());
  }
  edit(tensors);
  REQUIRE_OK(write_checkpoint(dir, tensors, uint64_t{1} << 40));
}

const std::string kQ = "model.layers.0.self_attn.q_proj.weight";

}  // namespace

TEST_CASE("a merged model exported as bitsandbytes NF4 loads back quantized with exactly the exported weights",
          "[unit]") {
  TempDir tmp;
  Model model = tiny_model(tiny_config());
  LoraAdapter adapter = adapter_with_update(model, 0.05, 3);
  QuantizedExportOptions options;
  options.dtype = at::kFloat;
  auto report = export_quantized_model(model, &adapter, tmp.path() / "q", options);
  REQUIRE_OK(report);
  CHECK(report->layers.size() == 2 * 7);

  const nlohmann::json config = read_json(tmp.path() / "q" / "config.json");
  CHECK(config["quantization_config"]["quant_method"] == "bitsandbytes");
  CHECK(config["quantization_config"]["bnb_4bit_quant_type"] == "nf4");
  CHECK(config["quantization_config"]["bnb_4bit_use_double_quant"] == true);
  CheckpointReader reader = CheckpointReader::open(tmp.path() / "q").value();
  CHECK(reader.contains(kQ + ".quant_state.bitsandbytes__nf4"));
  CHECK(reader.contains(kQ + ".nested_absmax"));
  CHECK(reader.entry("model.embed_tokens.weight")->shape == std::vector<int64_t>{97, 32});

  auto loaded = Model::load(tmp.path() / "q");
  REQUIRE_OK(loaded);
  CHECK(loaded->options().quantize_nf4);
  CHECK(loaded->impl().layers[0].q.is_quantized());
  CHECK(loaded->parameter("model.embed_tokens.weight").ok());

  // The reference: the merged weights quantized and dequantized independently of the export.
  auto merged = adapter.merged_weights();
  REQUIRE_OK(merged);
  std::map<std::string, at::Tensor> expected;
  for (auto& [name, w] : *merged) {
    if (model.impl().linear_of_weight(name) == nullptr) continue;  // embeddings, norms, lm_head stay dense
    QuantState state = Nf4Quantizer::quantize(w.to(at::kFloat)).value();
    expected[name] = Nf4Quantizer::dequantize(state, at::kFloat).value();
  }
  int compared = 0;
  loaded->impl().for_each_dense_parameter([&](const ParamSpec& spec, const at::Tensor& t) {
    auto it = expected.find(spec.name);
    if (it == expected.end()) {
      CHECK(at::equal(t, model.parameter(spec.name).value()));  // dense tensors as they were
      return;
    }
    INFO(spec.name);
    CHECK(at::equal(t, it->second));
    ++compared;
  });
  CHECK(compared == 14);
}

TEST_CASE("the re-quantization report measures the lost part of the adapter's update", "[unit]") {
  TempDir tmp;
  Model model = tiny_model(tiny_config());
  QuantizedExportOptions options;
  options.dtype = at::kFloat;

  // No adapter update: nothing to lose, no warning, and the error is that of quantizing W itself.
  LoraAdapter identity = adapter_with_update(model, 0.0, 1);
  auto none = export_quantized_model(model, &identity, tmp.path() / "none", options);
  REQUIRE_OK(none);
  for (const RequantizationError& e : none->layers) {
    CHECK(e.delta_norm == 0);
    CHECK(e.relative_error == 0);
    CHECK(e.error_norm > 0);
  }
  CHECK(none->warnings.empty());
  identity.remove();

  // A tiny update (far below the NF4 step, ~0.15 * 0.1 here) is rounded away almost entirely:
  // relative error near 1 or above, every layer warned about.
  LoraAdapter tiny = adapter_with_update(model, 1e-5, 2);
  auto lost = export_quantized_model(model, &tiny, tmp.path() / "tiny", options);
  REQUIRE_OK(lost);
  for (const RequantizationError& e : lost->layers) {
    INFO(e.name);
    CHECK(e.delta_norm > 0);
    CHECK(e.relative_error > 0.5);
  }
  CHECK(lost->warnings.size() == lost->layers.size());
  tiny.remove();

  // An update much larger than the weights: the quantization error is a small part of it.
  LoraAdapter big = adapter_with_update(model, 5.0, 3);
  auto kept = export_quantized_model(model, &big, tmp.path() / "big", options);
  REQUIRE_OK(kept);
  for (const RequantizationError& e : kept->layers) {
    INFO(e.name);
    CHECK(e.relative_error < 0.5);
    CHECK(e.relative_error == Approx(e.error_norm / e.delta_norm));
  }
  CHECK(kept->warnings.empty());
}

TEST_CASE("bitsandbytes checkpoints with unsupported settings or inconsistent quant states are refused", "[unit]") {
  TempDir tmp;
  Model model = tiny_model(tiny_config());
  QuantizedExportOptions options;
  options.dtype = at::kFloat;
  REQUIRE_OK(export_quantized_model(model, nullptr, tmp.path() / "q", options).status());
  const std::filesystem::path dir = tmp.path() / "q";
  const nlohmann::json good = read_json(dir / "config.json");

  auto with_config = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json c = good;
    edit(c);
    write_json(dir / "config.json", c);
    return Model::load(dir).status();
  };
  CHECK(with_config([](nlohmann::json& c) { c["quantization_config"]["quant_method"] = "gptq"; }).code() ==
        absl::StatusCode::kUnimplemented);
  CHECK(with_config([](nlohmann::json& c) { c["quantization_config"]["bnb_4bit_quant_type"] = "fp4"; }).code() ==
        absl::StatusCode::kUnimplemented);
  CHECK(with_config([](nlohmann::json& c) {
          c["quantization_config"]["load_in_4bit"] = false;
          c["quantization_config"]["load_in_8bit"] = true;
        }).code() == absl::StatusCode::kUnimplemented);
  CHECK(with_config([](nlohmann::json& c) { c["quantization_config"] = 7; }).code() ==
        absl::StatusCode::kInvalidArgument);
  // Without quantization_config the quant-state tensors are foreign and the packed shapes wrong.
  CHECK(with_config([](nlohmann::json& c) { c.erase("quantization_config"); }).code() ==
        absl::StatusCode::kInvalidArgument);
  write_json(dir / "config.json", good);
  REQUIRE_OK(Model::load(dir).status());

  SECTION("a quant_state whose shape lies") {
    edit_checkpoint(dir, [](NamedTensors& tensors) {
      for (auto& [name, t] : tensors) {
        if (name != kQ + ".quant_state.bitsandbytes__nf4") continue;
        std::string text(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()));
        nlohmann::json meta = nlohmann::json::parse(text);
        meta["shape"] = {16, 64};  // same element count, another shape
        const std::string lie = meta.dump();
        t = at::from_blob(const_cast<char*>(lie.data()), {static_cast<int64_t>(lie.size())}, at::kByte).clone();
      }
    });
    auto status = Model::load(dir).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(status.message()), Catch::Contains("q_proj.weight"));
  }
  SECTION("a missing absmax") {
    edit_checkpoint(dir, [](NamedTensors& tensors) {
      tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                   [](const auto& e) { return e.first == kQ + ".absmax"; }),
                    tensors.end());
    });
    CHECK(!Model::load(dir).ok());
  }
  SECTION("an unsupported export blocksize") {
    options.nf4.blocksize = 48;
    CHECK(export_quantized_model(model, nullptr, tmp.path() / "b", options).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a bitsandbytes checkpoint computes what the same model quantized in memory computes, and takes LoRA",
          "[unit]") {
  TempDir tmp;
  Model model = tiny_model(tiny_config());
  QuantizedExportOptions options;
  options.dtype = at::kFloat;
  REQUIRE_OK(export_quantized_model(model, nullptr, tmp.path() / "q", options).status());
  Model loaded = Model::load(tmp.path() / "q").value();
  Model reference = tiny_model(tiny_config());
  REQUIRE_OK(reference.impl().quantize_linears(Nf4Options{}));
  const at::Tensor ids = random_ids(2, 12, 97, 5);
  CHECK(at::equal(logits_of(loaded, ids), logits_of(reference, ids)));

  // QLoRA on the loaded checkpoint: the adapter's tensors get gradients, the NF4 base none.
  LoraAdapter adapter = adapter_with_update(loaded, 0.01, 4);
  ForwardInput input;
  input.input_ids = ids;
  input.labels = ids;
  auto out = loaded.forward(input);
  REQUIRE_OK(out);
  out->loss.backward();
  for (auto& [name, p] : adapter.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().abs().sum().item<double>() > 0);
  }
}
