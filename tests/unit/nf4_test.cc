// NF4 (bitsandbytes layout) on the CPU reference: code assignment, packing, double
// quantization, serialisation, the QLoRA linear, and QLoRA training on the bundled model.
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "ops/nf4_linear.hpp"
#include "quant/nf4_codebook.hpp"
#include "quant/nf4_ops.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/nf4_quantizer.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::vector<int> codes_of(const QuantState& s) {
  const at::Tensor bytes = s.packed.flatten().to(at::kInt);
  std::vector<int> out;
  for (int64_t i = 0; i < bytes.numel(); ++i) {
    out.push_back(bytes[i].item<int>() >> 4);
    out.push_back(bytes[i].item<int>() & 15);
  }
  out.resize(static_cast<size_t>(s.numel()));
  return out;
}

Nf4Options plain(int64_t blocksize = 64) {
  Nf4Options o;
  o.blocksize = blocksize;
  o.double_quant = false;
  return o;
}

}  // namespace

TEST_CASE("NF4 thresholds are bitsandbytes' float literals, within one ulp of the level midpoints", "[unit]") {
  const auto thresholds = nf4_thresholds();
  const auto& levels = kNf4Levels;
  for (int k = 0; k < 15; ++k) {
    INFO("threshold " << k);
    const float midpoint = static_cast<float>((static_cast<double>(levels[k]) + levels[k + 1]) / 2.0);
    CHECK((thresholds[k] == midpoint || std::nextafter(midpoint, 2.0f) == thresholds[k] ||
           std::nextafter(midpoint, -2.0f) == thresholds[k]));
  }
  // Where bitsandbytes' decimal literal (parsed straight to float) is not the rounded double
  // midpoint; exact values worked out by hand from the literals, as hex floats.
  CHECK(thresholds[0] == -0x1.b239b2p-1f);   // -0.8480964004993439f
  CHECK(thresholds[8] == 0x1.ec90c6p-4f);    // 0.1202552504837513f
  CHECK(thresholds[12] == 0x1.00da06p-1f);   // 0.5016634166240692f
  CHECK(thresholds[14] == 0x1.b913b2p-1f);   // 0.8614784181118011f
}

TEST_CASE("NF4 codes follow the midpoint thresholds, ties to the lower level", "[unit]") {
  const auto thresholds = nf4_thresholds();
  // One block of 64 with absmax exactly 1: each threshold, and the next float above it.
  std::vector<float> values = {1.0f};
  for (float t : thresholds) {
    values.push_back(t);
    values.push_back(std::nextafter(t, 2.0f));
  }
  while (values.size() < 64) values.push_back(0.0f);
  auto state = Nf4Quantizer::quantize(at::tensor(values), plain());
  REQUIRE_OK(state);
  const std::vector<int> codes = codes_of(*state);
  CHECK(codes[0] == 15);
  for (int k = 0; k < 15; ++k) {
    INFO("threshold " << k);
    CHECK(codes[1 + 2 * k] == k);
    CHECK(codes[2 + 2 * k] == k + 1);
  }
  CHECK(codes[40] == 7);  // 0.0
  // Every level itself maps to its own code.
  auto levels = Nf4Quantizer::quantize(Nf4Quantizer::nf4_levels(), plain(32));
  REQUIRE_OK(levels);
  const std::vector<int> level_codes = codes_of(*levels);
  for (int k = 0; k < 16; ++k) CHECK(level_codes[k] == k);
  CHECK(at::equal(Nf4Quantizer::dequantize(*levels, at::kFloat).value(), Nf4Quantizer::nf4_levels()));
}

TEST_CASE("NF4 packs the first value of a pair in the high nibble", "[unit]") {
  auto state = Nf4Quantizer::quantize(at::tensor({1.0f, -1.0f, 0.0f}), plain());
  REQUIRE_OK(state);
  CHECK(state->packed.sizes() == at::IntArrayRef({2, 1}));
  CHECK(state->packed[0][0].item<int>() == 0xF0);
  CHECK(state->packed[1][0].item<int>() == 0x70);  // odd count: the last byte's low nibble is padding
  CHECK(state->absmax.sizes() == at::IntArrayRef({1}));
  CHECK(state->absmax.item<float>() == 1.0f);
}

TEST_CASE("NF4 round trip stays within half a level gap of each block's absmax", "[unit]") {
  at::manual_seed(1);
  for (int64_t blocksize : {32, 64, 256, 4096}) {
    for (bool double_quant : {false, true}) {
      INFO("blocksize " << blocksize << " double " << double_quant);
      const at::Tensor w = at::randn({37, 129}) * 0.05;  // not a multiple of any block size
      Nf4Options options;
      options.blocksize = blocksize;
      options.double_quant = double_quant;
      auto state = Nf4Quantizer::quantize(w, options);
      REQUIRE_OK(state);
      const at::Tensor back = Nf4Quantizer::dequantize(*state, at::kFloat).value();
      REQUIRE(back.sizes() == w.sizes());
      // Reference bound: half the largest gap between neighbouring levels (-1 to -0.696).
      double half_gap = 0.0;
      for (size_t k = 0; k + 1 < kNf4Levels.size(); ++k) half_gap = std::max(half_gap, (kNf4Levels[k + 1] - kNf4Levels[k]) / 2.0);
      const int64_t n = w.numel();
      const at::Tensor flat = w.flatten();
      const int64_t blocks = (n + blocksize - 1) / blocksize;
      const at::Tensor padded = at::cat({flat, at::zeros({blocks * blocksize - n})}).view({blocks, blocksize});
      const at::Tensor absmax = padded.abs().amax(1);
      const at::Tensor bound = absmax.repeat_interleave(blocksize).narrow(0, 0, n) * half_gap;
      // Double quantization perturbs absmax by at most a little of its 8-bit resolution.
      const double slack = double_quant ? 0.02 * absmax.max().item<double>() : 1e-7;
      CHECK(((back.flatten() - flat).abs() - bound).max().item<double>() <= slack);
    }
  }
}

TEST_CASE("all-zero blocks and tiny or huge magnitudes round trip", "[unit]") {
  at::Tensor w = at::zeros({2, 64});
  w[1] = at::linspace(-1e30, 1e30, 64);
  auto state = Nf4Quantizer::quantize(w, plain());
  REQUIRE_OK(state);
  const at::Tensor back = Nf4Quantizer::dequantize(*state, at::kFloat).value();
  CHECK(at::equal(back[0], at::zeros({64})));
  CHECK(back[1][0].item<double>() == Approx(-1e30).epsilon(1e-6));
  CHECK(back[1][63].item<double>() == Approx(1e30).epsilon(1e-6));
  const at::Tensor tiny = at::full({64}, 1e-38f);
  auto tiny_state = Nf4Quantizer::quantize(tiny, plain());
  REQUIRE_OK(tiny_state);
  CHECK(at::allclose(Nf4Quantizer::dequantize(*tiny_state, at::kFloat).value(), tiny));
}

TEST_CASE("the dynamic 8-bit map is bitsandbytes' signed map", "[unit]") {
  const at::Tensor map = Nf4Quantizer::dynamic_map();
  REQUIRE(map.numel() == 256);
  CHECK(at::equal(map, std::get<0>(map.sort())));
  CHECK(map[255].item<float>() == 1.0f);
  CHECK((map == 0).sum().item<int64_t>() == 1);
  // Exponent 0: linspace(0.1, 1, 2) = [0.1, 1], one mean 0.55, scaled by 1e-6, both signs.
  const at::Tensor positive = map.masked_select(map > 0);
  CHECK(positive.numel() == 128);
  CHECK(positive[0].item<float>() == Approx(0.55e-6).epsilon(1e-6));
  // The largest magnitude below 1: the last mean of linspace(0.1, 1, 65).
  CHECK(map[0].item<float>() == Approx(-(1.0 - 0.9 / 128.0)).epsilon(1e-6));
}

TEST_CASE("double quantization stores 8-bit absmax around their mean", "[unit]") {
  at::manual_seed(2);
  const at::Tensor w = at::randn({64, 256});
  auto state = Nf4Quantizer::quantize(w);  // QLoRA defaults: block 64, double quant
  REQUIRE_OK(state);
  CHECK(state->double_quant());
  CHECK(state->absmax.scalar_type() == at::kByte);
  CHECK(state->absmax.numel() == 256);
  CHECK(state->nested_absmax.numel() == 1);
  auto single = Nf4Quantizer::quantize(w, plain());
  CHECK(state->nested_offset == Approx(single->absmax.mean().item<double>()).epsilon(1e-6));
  // Memory: 0.5 byte per value + 1/64 byte of absmax codes + 4/(64*256) bytes of nested scales
  // + the maps, i.e. ~4.127 bits per value.
  const double bits = 8.0 * static_cast<double>(state->nbytes() - (16 + 256) * 4) / static_cast<double>(w.numel());
  CHECK(bits == Approx(4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0)).epsilon(1e-6));
}

TEST_CASE("quant states serialise with bitsandbytes' names and load back", "[unit]") {
  at::manual_seed(3);
  const at::Tensor w = at::randn({48, 80}).to(at::kBFloat16);
  for (bool double_quant : {true, false}) {
    Nf4Options options;
    options.double_quant = double_quant;
    auto state = Nf4Quantizer::quantize(w, options);
    REQUIRE_OK(state);
    const auto tensors = Nf4Quantizer::to_tensors(*state, "model.layers.0.mlp.up_proj");
    std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
    CHECK(by_name.count("model.layers.0.mlp.up_proj.weight"));
    CHECK(by_name.count("model.layers.0.mlp.up_proj.weight.quant_map"));
    CHECK(by_name.count("model.layers.0.mlp.up_proj.weight.nested_absmax") == (double_quant ? 1u : 0u));
    const at::Tensor json_bytes = by_name.at("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4");
    const auto meta = nlohmann::json::parse(std::string(static_cast<const char*>(json_bytes.data_ptr()), json_bytes.numel()));
    CHECK(meta["quant_type"] == "nf4");
    CHECK(meta["dtype"] == "bfloat16");
    CHECK(meta["shape"] == nlohmann::json::array({48, 80}));
    CHECK(meta.contains("nested_offset") == double_quant);
    auto lookup = [&](const std::string& name) -> StatusOr<at::Tensor> {
      auto it = by_name.find(name);
      if (it == by_name.end()) return absl::NotFoundError(name);
      return it->second;
    };
    auto loaded = Nf4Quantizer::from_tensors(lookup, "model.layers.0.mlp.up_proj");
    REQUIRE_OK(loaded);
    CHECK(at::equal(Nf4Quantizer::dequantize(*loaded).value(), Nf4Quantizer::dequantize(*state).value()));
    CHECK(loaded->dtype == at::kBFloat16);

    // Disagreements between the JSON and the tensors are named.
    by_name["model.layers.0.mlp.up_proj.weight"] = at::zeros({7, 1}, at::kByte);
    auto bad = Nf4Quantizer::from_tensors(lookup, "model.layers.0.mlp.up_proj");
    CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains("up_proj.weight"));
  }
}

TEST_CASE("bad quantization input gets clear statuses", "[unit]") {
  at::Tensor w = at::randn({4, 64});
  w[2][5] = std::numeric_limits<float>::infinity();
  CHECK(Nf4Quantizer::quantize(w).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(Nf4Quantizer::quantize(w).status().message()), Catch::Contains("index 133"));
  CHECK(Nf4Quantizer::quantize(at::randn({64}), plain(48)).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Nf4Quantizer::quantize(at::ones({4}, at::kLong)).status().code() == absl::StatusCode::kInvalidArgument);
  std::map<std::string, at::Tensor> fp4 = {{"p.weight.quant_state.bitsandbytes__fp4", at::zeros({2}, at::kByte)}};
  auto lookup = [&](const std::string& name) -> StatusOr<at::Tensor> {
    auto it = fp4.find(name);
    if (it == fp4.end()) return absl::NotFoundError(name);
    return it->second;
  };
  CHECK(Nf4Quantizer::from_tensors(lookup, "p").status().code() == absl::StatusCode::kUnimplemented);
  const std::string bad_json = R"({"quant_type":"nf4","blocksize":48,"dtype":"bfloat16","shape":[4,4]})";
  at::Tensor bytes = at::empty({static_cast<int64_t>(bad_json.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), bad_json.data(), bad_json.size());
  fp4 = {{"p.weight.quant_state.bitsandbytes__nf4", bytes}};
  CHECK(Nf4Quantizer::from_tensors(lookup, "p").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the NF4 linear computes with the dequantized weight and trains only its input", "[unit]") {
  at::manual_seed(4);
  const at::Tensor w = at::randn({24, 40});
  auto state = Nf4Quantizer::quantize(w);
  REQUIRE_OK(state);
  const auto shared = std::make_shared<const QuantState>(*state);
  const at::Tensor dense = Nf4Quantizer::dequantize(*state, at::kFloat).value();
  const at::Tensor x = at::randn({3, 5, 40}).requires_grad_(true);
  const at::Tensor bias = at::randn({24}).requires_grad_(true);
  const at::Tensor y = nf4_linear(x, shared, bias);
  const at::Tensor xr = x.detach().clone().requires_grad_(true);
  const at::Tensor br = bias.detach().clone().requires_grad_(true);
  const at::Tensor yr = at::linear(xr, dense, br);
  CHECK(max_abs_diff(y, yr) < 1e-5);
  const at::Tensor g = at::randn_like(y);
  y.backward(g);
  yr.backward(g);
  CHECK(max_abs_diff(x.grad(), xr.grad()) < 1e-5);
  CHECK(max_abs_diff(bias.grad(), br.grad()) < 1e-5);
}

TEST_CASE("a QLoRA model holds NF4 weights and a LoRA step on it lowers the loss", "[unit]") {
  ModelOptions options;
  options.quantize_nf4 = true;
  auto model = Model::load(bundled_model_dir(), options);
  REQUIRE_OK(model);
  auto dense_model = Model::load(bundled_model_dir());
  REQUIRE_OK(dense_model);
  // Linear weights are gone from the parameters; norms and the embedding stay.
  for (const auto& [name, p] : model->named_parameters()) CHECK(name.find("_proj") == std::string::npos);
  CHECK(model->num_parameters() == dense_model->num_parameters());
  int64_t quantized_bytes = 0, values = 0;
  for (const DecoderLayer& layer : model->impl().layers) {
    for (LinearSlot slot : kLinearSlots) {
      REQUIRE(layer.linear(slot).is_quantized());
      quantized_bytes += layer.linear(slot).quantized->nbytes() - (16 + 256) * 4;
      values += layer.linear(slot).quantized->numel();
    }
  }
  CHECK(8.0 * quantized_bytes / values < 4.2);  // ~4.127 bits per weight

  // The quantized model's logits stay close to the dense model's.
  const at::Tensor ids = random_ids(1, 24, model->config().vocab_size, 5);
  const at::Tensor a = logits_of(*model, ids), b = logits_of(*dense_model, ids);
  CHECK((a - b).abs().mean().item<double>() < 0.1 * b.abs().mean().item<double>());

  LoraOptions lora;
  lora.rank = 4;
  auto adapter = LoraAdapter::create(*model, lora);
  REQUIRE_OK(adapter);
  PackedTextOptions packing;
  packing.batch_size = 2;
  packing.seq_len = 32;
  std::vector<std::vector<TokenId>> docs;
  for (int d = 0; d < 8; ++d) {
    std::vector<TokenId> doc;
    for (int i = 0; i < 40; ++i) doc.push_back(static_cast<TokenId>(100 + (d * 7 + i * 3) % 500));
    docs.push_back(doc);
  }
  auto data = PackedTextSource::create(docs, packing);
  TrainerOptions train;
  train.max_steps = 6;
  train.optimizer.lr = 5e-3;
  train.schedule = {ScheduleKind::kConstant, 0};
  std::vector<double> losses;
  train.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  auto trainer = Trainer::create(*model, **data, train, &*adapter);
  REQUIRE_OK(trainer);
  REQUIRE_OK(trainer->train());
  CHECK(losses.back() < losses.front());
  // Merging into NF4 in place is refused; the merged weights fold into the dequantized weight.
  CHECK(adapter->merge().code() == absl::StatusCode::kFailedPrecondition);
  auto merged = adapter->merged_weights();
  REQUIRE_OK(merged);
  CHECK(merged->size() == static_cast<size_t>(parameter_specs(model->config()).size()));
}
