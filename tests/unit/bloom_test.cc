// BLOOM (model_type "bloom") against facts worked out by hand and an independent reference
// forward written here from transformers' BloomModel formulation (slope x key position added to
// the raw scores, an explicit causal mask, LayerNorm and GELU written out). The transformers
// fixtures are in tests/parity/bloom_parity_test.cc.
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "io/read_file.hpp"
#include "io/safetensors.hpp"
#include "model/bloom_block.hpp"
#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "temper/batch.hpp"
#include "temper/export.hpp"
#include "temper/generation.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

ModelConfig tiny_bloom(int64_t heads = 6, bool post_layernorm = false) {
  ModelConfig c;
  c.model_type = "bloom";
  c.family = ModelFamily::kBloom;
  c.vocab_size = 89;
  c.head_dim = 8;
  c.num_attention_heads = c.num_key_value_heads = heads;
  c.hidden_size = heads * c.head_dim;
  c.intermediate_size = 4 * c.hidden_size;
  c.num_layers = 2;
  c.max_position_embeddings = 64;
  c.layer_norm_eps = 1e-5;
  c.apply_residual_connection_post_layernorm = post_layernorm;
  c.tie_word_embeddings = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.eos_token_ids = {2};
  return c;
}

std::vector<double> hand_slopes(int64_t heads) {
  // 2^(-8/n) for the largest power of two n <= heads, then the odd powers of 2^(-8/(2n)).
  int64_t n = 1;
  while (2 * n <= heads) n *= 2;
  std::vector<double> out;
  for (int64_t i = 1; i <= n; ++i) out.push_back(std::pow(2.0, -8.0 * static_cast<double>(i) / static_cast<double>(n)));
  for (int64_t i = 0; i < heads - n; ++i) {
    out.push_back(std::pow(2.0, -8.0 * static_cast<double>(2 * i + 1) / static_cast<double>(2 * n)));
  }
  return out;
}

at::Tensor layer_norm_by_hand(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  const at::Tensor mean = x.mean(-1, /*keepdim=*/true);
  const at::Tensor var = (x - mean).pow(2).mean(-1, /*keepdim=*/true);
  return (x - mean) / at::sqrt(var + eps) * w + b;
}

// transformers' BloomForCausalLM forward, written from its formulation.
at::Tensor reference_logits(const Model& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  const ModelConfig& c = model.config();
  auto p = [&](const std::string& name) { return model.parameter(name).value(); };
  auto lin = [&](const at::Tensor& x, const std::string& module) {
    return at::matmul(x, p(module + ".weight").t()) + p(module + ".bias");
  };
  auto ln = [&](const at::Tensor& x, const std::string& prefix) {
    return layer_norm_by_hand(x, p(prefix + ".weight"), p(prefix + ".bias"), c.layer_norm_eps);
  };
  const int64_t batch = ids.size(0), seq = ids.size(1), heads = c.num_attention_heads, d = c.head_dim;
  std::vector<float> slope_values;
  for (double s : hand_slopes(heads)) slope_values.push_back(static_cast<float>(s));
  const at::Tensor slopes = at::tensor(slope_values);
  const at::Tensor alibi = slopes.view({1, heads, 1, 1}) * at::arange(seq, at::kFloat).view({1, 1, 1, seq});
  const at::Tensor future = at::ones({seq, seq}, at::kBool).triu(1);

  at::Tensor h = p("transformer.word_embeddings.weight").index_select(0, ids.flatten()).view({batch, seq, -1});
  h = ln(h, "transformer.word_embeddings_layernorm");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string pre = "transformer.h." + std::to_string(i) + ".";
    const at::Tensor x = ln(h, pre + "input_layernorm");
    const at::Tensor fused = lin(x, pre + "self_attention.query_key_value").view({batch, seq, heads, 3, d});
    const at::Tensor q = fused.select(3, 0).permute({0, 2, 1, 3});
    const at::Tensor k = fused.select(3, 1).permute({0, 2, 1, 3});
    const at::Tensor v = fused.select(3, 2).permute({0, 2, 1, 3});
    at::Tensor scores = alibi + at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
    scores = scores.masked_fill(future, -INFINITY);
    const at::Tensor ctx = at::matmul(at::softmax(scores, -1), v).permute({0, 2, 1, 3}).reshape({batch, seq, heads * d});
    const at::Tensor h1 = lin(ctx, pre + "self_attention.dense") + (c.apply_residual_connection_post_layernorm ? x : h);
    const at::Tensor y = ln(h1, pre + "post_attention_layernorm");
    const at::Tensor up = lin(y, pre + "mlp.dense_h_to_4h");
    const at::Tensor act = up * 0.5 * (1.0 + at::tanh(0.79788456 * up * (1.0 + 0.044715 * up * up)));
    h = lin(act, pre + "mlp.dense_4h_to_h") + (c.apply_residual_connection_post_layernorm ? y : h1);
  }
  h = ln(h, "transformer.ln_f");
  return at::matmul(h, p("transformer.word_embeddings.weight").t());
}

std::vector<std::vector<TokenId>> progressions(int count, int64_t vocab, uint64_t seed) {
  std::vector<std::vector<TokenId>> docs;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int n = 0; n < count; ++n) {
    const TokenId start = static_cast<TokenId>(rng() % vocab);
    std::vector<TokenId> doc;
    for (int i = 0; i < 24; ++i) doc.push_back(static_cast<TokenId>((start + 3 * i) % vocab));
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace

TEST_CASE("ALiBi slopes are BLOOM's for power-of-two and other head counts", "[unit]") {
  // Worked by hand: 4 heads 2^-2, 2^-4, 2^-6, 2^-8; 8 heads 2^-1 .. 2^-8; 6 heads the 4-head
  // slopes then 2^-1 and 2^-3 (odd powers of the 8-head base 2^-1); 1 head 2^-8.
  const std::vector<std::pair<int64_t, std::vector<double>>> cases = {
      {1, {1.0 / 256}},
      {4, {0.25, 0.0625, 0.015625, 0.00390625}},
      {6, {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125}},
      {8, {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625}},
      {12, hand_slopes(12)},
  };
  for (const auto& [heads, want] : cases) {
    INFO(heads << " heads");
    const at::Tensor got = alibi_slopes(heads);
    REQUIRE(got.scalar_type() == at::kFloat);
    REQUIRE(got.numel() == heads);
    for (int64_t i = 0; i < heads; ++i) CHECK(got[i].item<double>() == Approx(want[i]).epsilon(1e-6));
  }
  // 12 heads: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  CHECK(alibi_slopes(12)[8].item<double>() == Approx(std::sqrt(0.5)).epsilon(1e-6));
  CHECK(alibi_slopes(12)[11].item<double>() == Approx(std::pow(2.0, -3.5)).epsilon(1e-6));
}

TEST_CASE("the ALiBi bias holds key-query distances, a causal mask, segments and a cache offset", "[unit]") {
  const at::Tensor slopes = at::tensor({0.5f, 0.25f});
  const at::Tensor bias = alibi_attention_bias(slopes, /*past=*/0, /*tq=*/3, at::Tensor(), at::kFloat);
  REQUIRE(bias.sizes() == at::IntArrayRef({1, 2, 3, 3}));
  CHECK(bias[0][0][2][0].item<float>() == -1.0f);   // 0.5 x (0 - 2)
  CHECK(bias[0][1][2][1].item<float>() == -0.25f);  // 0.25 x (1 - 2)
  CHECK(bias[0][0][1][1].item<float>() == 0.0f);
  CHECK(std::isinf(bias[0][0][0][1].item<float>()));  // the future is hidden
  // With two cached positions the one new query (position 2) sees all three keys.
  const at::Tensor cached = alibi_attention_bias(slopes, 2, 1, at::Tensor(), at::kFloat);
  REQUIRE(cached.sizes() == at::IntArrayRef({1, 2, 1, 3}));
  CHECK(at::equal(cached[0][0][0], at::tensor({-1.0f, -0.5f, 0.0f})));
  // Segments [0, 0, 1]: position 2 starts a new document and sees only itself.
  const at::Tensor packed = alibi_attention_bias(slopes, 0, 3, at::tensor({0, 0, 1}, at::kLong).view({1, 3}), at::kFloat);
  REQUIRE(packed.sizes() == at::IntArrayRef({1, 2, 3, 3}));
  CHECK(std::isinf(packed[0][0][2][1].item<float>()));
  CHECK(packed[0][0][2][2].item<float>() == 0.0f);
  CHECK(packed[0][0][1][0].item<float>() == -0.5f);
}

TEST_CASE("query_key_value splits per head as (n_head, 3, head_dim)", "[unit]") {
  // Output feature f = ((head * 3) + part) * D + d carries the value 100 head + 10 part + d.
  const int64_t heads = 3, d = 4;
  at::Tensor fused = at::empty({2, 5, heads * 3 * d});
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t part = 0; part < 3; ++part) {
      for (int64_t i = 0; i < d; ++i) fused.select(2, (h * 3 + part) * d + i).fill_(100.0 * h + 10.0 * part + i);
    }
  }
  auto [q, k, v] = split_fused_qkv(fused, heads, d);
  REQUIRE(q.sizes() == at::IntArrayRef({2, heads, 5, d}));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < d; ++i) {
      CHECK(q[1][h][3][i].item<float>() == 100.0f * h + i);
      CHECK(k[0][h][4][i].item<float>() == 100.0f * h + 10.0f + i);
      CHECK(v[1][h][0][i].item<float>() == 100.0f * h + 20.0f + i);
    }
  }
}

TEST_CASE("bloom config.json: BigScience's and transformers' spellings, round trip, errors", "[unit]") {
  // As bigscience/bloom-560m writes it (n_embed, num_attention_heads, no max_position_embeddings).
  const char* bigscience = R"({"architectures": ["BloomForCausalLM"], "model_type": "bloom", "vocab_size": 250880,
    "n_embed": 1024, "n_layer": 24, "num_attention_heads": 16, "layer_norm_epsilon": 1e-05, "n_inner": null,
    "apply_residual_connection_post_layernorm": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
    "pretraining_tp": 1, "slow_but_exact": false, "seq_length": 2048, "offset_alibi": 100})";
  auto c = parse_model_config(bigscience, "bloom-560m");
  REQUIRE_OK(c);
  CHECK(c->family == ModelFamily::kBloom);
  CHECK(c->hidden_size == 1024);
  CHECK(c->num_layers == 24);
  CHECK(c->num_attention_heads == 16);
  CHECK(c->num_key_value_heads == 16);
  CHECK(c->head_dim == 64);
  CHECK(c->intermediate_size == 4096);
  CHECK(c->layer_norm_eps == 1e-5);
  CHECK(c->tie_word_embeddings);
  CHECK(c->qkv_bias);
  CHECK(c->o_bias);
  CHECK(c->mlp_bias);
  CHECK(c->eos_token_ids == std::vector<int64_t>{2});

  // As transformers' BloomConfig saves itself (hidden_size, n_head), post-norm residuals.
  const char* transformers_style = R"({"model_type": "bloom", "vocab_size": 1000, "hidden_size": 48, "n_layer": 2,
    "n_head": 6, "layer_norm_epsilon": 1e-6, "apply_residual_connection_post_layernorm": true})";
  auto t = parse_model_config(transformers_style, "t");
  REQUIRE_OK(t);
  CHECK(t->head_dim == 8);
  CHECK(t->apply_residual_connection_post_layernorm);
  CHECK(t->layer_norm_eps == 1e-6);

  auto json = model_config_to_json(*t);
  REQUIRE_OK(json);
  CHECK(nlohmann::json::parse(*json)["architectures"][0] == "BloomForCausalLM");
  auto back = parse_model_config(*json, "round trip");
  REQUIRE_OK(back);
  CHECK(back->hidden_size == 48);
  CHECK(back->num_layers == 2);
  CHECK(back->num_attention_heads == 6);
  CHECK(back->layer_norm_eps == 1e-6);
  CHECK(back->apply_residual_connection_post_layernorm);
  CHECK(back->intermediate_size == 192);

  auto disagree = parse_model_config(R"({"model_type": "bloom", "vocab_size": 10, "hidden_size": 48, "n_embed": 64,
    "n_layer": 2, "n_head": 6})", "x");
  REQUIRE_FALSE(disagree.ok());
  CHECK(message_of(disagree.status()).find("\"hidden_size\" (48) and \"n_embed\" (64) disagree") != std::string::npos);
  auto indivisible = parse_model_config(R"({"model_type": "bloom", "vocab_size": 10, "hidden_size": 50,
    "n_layer": 2, "n_head": 6})", "x");
  REQUIRE_FALSE(indivisible.ok());
  CHECK(message_of(indivisible.status()).find("not divisible by n_head") != std::string::npos);
  ModelConfig gqa = *t;
  gqa.num_key_value_heads = 2;
  CHECK(model_config_to_json(gqa).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("bloom forward equals transformers' formulation; LayerNorm equals its definition", "[unit]") {
  for (const bool post : {false, true}) {
    for (const int64_t heads : {4, 6}) {
      INFO("heads " << heads << ", post-layernorm residuals " << post);
      const Model model = tiny_model(tiny_bloom(heads, post), 5);
      const at::Tensor ids = random_ids(2, 11, model.config().vocab_size, 7);
      const at::Tensor got = logits_of(model, ids);
      REQUIRE(got.sizes() == at::IntArrayRef({2, 11, 89}));
      CHECK(max_abs_diff(got, reference_logits(model, ids)) < 2e-5);
      CHECK(got.abs().max().item<double>() > 0.5);  // the comparison is not between near-zeros
    }
  }
  const at::Tensor x = at::randn({3, 7, 16});
  const at::Tensor w = at::randn({16});
  const at::Tensor b = at::randn({16});
  CHECK(max_abs_diff(at::layer_norm(x, {16}, w, b, 1e-5), layer_norm_by_hand(x, w, b, 1e-5)) < 1e-5);
}

TEST_CASE("bloom: KV-cache decoding, packed segments and checkpointing agree with plain forwards", "[unit]") {
  const Model model = tiny_model(tiny_bloom(6), 9);
  const at::Tensor ids = random_ids(1, 10, 89, 3);
  const at::Tensor full = logits_of(model, ids);
  {
    at::NoGradGuard no_grad;
    KvCache cache;
    ForwardInput input;
    input.input_ids = ids.slice(1, 0, 6);
    auto first = model.forward(input, &cache);
    REQUIRE_OK(first);
    CHECK(max_abs_diff(first->logits, full.slice(1, 0, 6)) < 1e-5);
    for (int64_t t = 6; t < 10; ++t) {
      input.input_ids = ids.slice(1, t, t + 1);
      auto step = model.forward(input, &cache);
      REQUIRE_OK(step);
      CHECK(max_abs_diff(step->logits, full.slice(1, t, t + 1)) < 1e-5);
    }
  }
  {
    // Two documents packed into one row see only themselves, at their own distances.
    ForwardInput packed;
    packed.input_ids = ids;
    packed.segment_ids = at::tensor({0, 0, 0, 0, 1, 1, 1, 1, 1, 1}, at::kLong).view({1, 10});
    at::NoGradGuard no_grad;
    auto out = model.forward(packed);
    REQUIRE_OK(out);
    CHECK(max_abs_diff(out->logits.slice(1, 0, 4), logits_of(model, ids.slice(1, 0, 4))) < 1e-5);
    CHECK(max_abs_diff(out->logits.slice(1, 4, 10), logits_of(model, ids.slice(1, 4, 10))) < 1e-5);
  }
  {
    // Activation checkpointing changes memory, not gradients.
    Model trained = tiny_model(tiny_bloom(6, true), 9);
    ForwardInput input;
    input.input_ids = random_ids(2, 9, 89, 4);
    input.labels = input.input_ids;
    auto grads = [&](bool recompute) {
      trained.impl().gradient_checkpointing = recompute;
      std::vector<at::Tensor> out;
      for (auto& [name, p] : trained.named_parameters()) {
        p.requires_grad_(true);
        p.mutable_grad() = at::Tensor();
      }
      auto fwd = trained.forward(input);
      REQUIRE_OK(fwd);
      fwd->loss.backward();
      for (auto& [name, p] : trained.named_parameters()) out.push_back(p.grad().clone());
      return out;
    };
    const auto plain = grads(false);
    const auto recomputed = grads(true);
    REQUIRE(plain.size() == recomputed.size());
    for (size_t i = 0; i < plain.size(); ++i) CHECK(max_abs_diff(plain[i], recomputed[i]) < 1e-6);
  }
}

TEST_CASE("bloom checkpoints load with and without the transformer. prefix and export in BloomForCausalLM's names",
          "[unit]") {
  const Model model = tiny_model(tiny_bloom(4), 21);
  const at::Tensor ids = random_ids(1, 8, 89, 5);
  TempDir tmp;
  REQUIRE_OK(export_merged_model(model, nullptr, tmp / "bloom", at::kFloat));
  auto file = SafetensorsFile::open(tmp / "bloom" / "model.safetensors");
  REQUIRE_OK(file);
  CHECK(file->find("transformer.h.1.self_attention.query_key_value.weight") != nullptr);
  CHECK(file->find("transformer.word_embeddings_layernorm.bias") != nullptr);
  CHECK(file->find("transformer.ln_f.bias") != nullptr);
  CHECK(file->find("lm_head.weight") == nullptr);  // tied
  auto reloaded = Model::load(tmp / "bloom");
  REQUIRE_OK(reloaded);
  CHECK(max_abs_diff(logits_of(*reloaded, ids), logits_of(model, ids)) < 1e-6);

  // As BloomModel saves it: "word_embeddings.weight", "h.0....".
  NamedTensors stripped;
  for (const SafetensorsEntry& entry : file->entries()) {
    stripped.emplace_back(entry.name.substr(std::string("transformer.").size()), file->tensor(entry.name).value());
  }
  std::filesystem::create_directories(tmp / "bare");
  REQUIRE_OK(write_safetensors(tmp / "bare" / "model.safetensors", stripped));
  std::filesystem::copy_file(tmp / "bloom" / "config.json", tmp / "bare" / "config.json");
  auto bare = Model::load(tmp / "bare");
  REQUIRE_OK(bare);
  CHECK(bare->parameter("transformer.h.0.mlp.dense_4h_to_h.bias").ok());
  CHECK(max_abs_diff(logits_of(*bare, ids), logits_of(model, ids)) < 1e-6);

  // A missing tensor is named as the file would name it.
  stripped.erase(stripped.begin() + 5);
  REQUIRE_OK(write_safetensors(tmp / "bare" / "model.safetensors", stripped));
  auto broken = Model::load(tmp / "bare");
  REQUIRE_FALSE(broken.ok());
  CHECK(message_of(broken.status()).find("lacks 1 tensors: h.0.") != std::string::npos);
}

TEST_CASE("LoRA on bloom: default targets, PEFT names, round trip, merge, training lowers the loss", "[unit]") {
  const ModelConfig config = tiny_bloom(6);
  Model model = tiny_model(config, 31);
  const at::Tensor ids = random_ids(2, 12, 89, 6);
  LoraOptions options;
  options.rank = 4;
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  CHECK(adapter->target_modules() ==
        std::vector<std::string>{"transformer.h.0.self_attention.query_key_value", "transformer.h.0.self_attention.dense",
                                 "transformer.h.0.mlp.dense_h_to_4h", "transformer.h.0.mlp.dense_4h_to_h",
                                 "transformer.h.1.self_attention.query_key_value", "transformer.h.1.self_attention.dense",
                                 "transformer.h.1.mlp.dense_h_to_4h", "transformer.h.1.mlp.dense_4h_to_h"});
  const auto params = adapter->named_parameters();
  REQUIRE(params.size() == 16);
  CHECK(params[0].first == "base_model.model.transformer.h.0.self_attention.query_key_value.lora_A.weight");
  CHECK(params[0].second.sizes() == at::IntArrayRef({4, 48}));
  CHECK(params[1].second.sizes() == at::IntArrayRef({144, 4}));

  // Train a few steps on arithmetic progressions (the Trainer, gradient checkpointing on).
  PackedTextOptions packing;
  packing.batch_size = 4;
  packing.seq_len = 16;
  auto data = PackedTextSource::create(progressions(20, 89, 1), packing).value();
  TrainerOptions train;
  train.max_steps = 12;
  train.optimizer.lr = 1e-2;
  train.schedule = {ScheduleKind::kConstant, 0};
  train.gradient_checkpointing = true;
  std::vector<double> losses;
  train.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  auto trainer = Trainer::create(model, *data, train, &*adapter);
  REQUIRE_OK(trainer);
  REQUIRE_OK(trainer->train());
  REQUIRE(losses.size() == 12);
  CHECK(losses.back() < losses.front() - 0.5);

  const at::Tensor adapted = logits_of(model, ids);
  TempDir tmp;
  REQUIRE_OK(adapter->save(tmp / "adapter", "tiny-bloom"));
  const auto cfg = nlohmann::json::parse(read_file(tmp / "adapter" / "adapter_config.json").value());
  CHECK(cfg["target_modules"] == nlohmann::json({"dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"}));
  REQUIRE_OK(adapter->merge());
  CHECK(max_abs_diff(logits_of(model, ids), adapted) < 1e-4);
  REQUIRE_OK(adapter->unmerge());
  adapter->remove();
  CHECK(max_abs_diff(logits_of(model, ids), adapted) > 1e-3);
  auto loaded = LoraAdapter::load(model, tmp / "adapter");
  REQUIRE_OK(loaded);
  CHECK(max_abs_diff(logits_of(model, ids), adapted) < 1e-5);
  REQUIRE_OK(export_merged_model(model, &*loaded, tmp / "merged", at::kFloat));
  auto merged = Model::load(tmp / "merged");
  REQUIRE_OK(merged);
  CHECK(max_abs_diff(logits_of(*merged, ids), adapted) < 1e-4);
}

TEST_CASE("QLoRA on bloom: NF4 base layers, generation and perplexity run", "[unit]") {
  const ModelConfig config = tiny_bloom(4);
  const Model dense = tiny_model(config, 41);
  TempDir tmp;
  REQUIRE_OK(export_merged_model(dense, nullptr, tmp / "bloom", at::kFloat));
  ModelOptions options;
  options.quantize_nf4 = true;
  auto model = Model::load(tmp / "bloom", options);
  REQUIRE_OK(model);
  for (const DecoderLayer& layer : model->impl().layers) {
    for (LinearSlot slot : kBloomLinearSlots) CHECK(layer.linear(slot).is_quantized());
  }
  const at::Tensor ids = random_ids(1, 9, 89, 8);
  // NF4 keeps the model close to the dense one (4-bit error, not garbage).
  const double err = max_abs_diff(logits_of(*model, ids), logits_of(dense, ids));
  CHECK(err < 0.25 * logits_of(dense, ids).abs().max().item<double>());

  LoraOptions lora;
  lora.rank = 2;
  auto adapter = LoraAdapter::create(*model, lora);
  REQUIRE_OK(adapter);
  ForwardInput input;
  input.input_ids = random_ids(2, 12, 89, 2);
  input.labels = input.input_ids;
  auto out = model->forward(input);
  REQUIRE_OK(out);
  out->loss.backward();
  for (const auto& [name, t] : adapter->named_parameters()) {
    INFO(name);
    REQUIRE(t.grad().defined());
  }
  const auto b = adapter->named_parameters()[1];  // a copy (named_parameters() returns a temporary); lora_B starts at zero and is the one that gets a gradient
  CHECK(b.second.grad().abs().sum().item<double>() > 0.0);

  GenerationOptions gen;
  gen.max_new_tokens = 5;
  gen.stop_token_ids = {-1};
  auto generated = generate(*model, {5, 6, 7}, gen);
  REQUIRE_OK(generated);
  CHECK(generated->size() == 5);
  std::vector<TokenId> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(static_cast<TokenId>((i * 7) % 89));
  auto ppl = evaluate_perplexity(*model, tokens);
  REQUIRE_OK(ppl);
  CHECK(ppl->tokens == 39);
  CHECK(std::isfinite(ppl->perplexity));
}

TEST_CASE("bloom on CUDA: fp32 forward, backward (packed, checkpointed), bf16 training step and KV cache equal the CPU",
          "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const ModelConfig config = tiny_bloom(6, true);
  Model cpu = tiny_model(config, 51);
  Model gpu = Model::random(config, {at::kFloat, at::kCUDA}).value();
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : gpu.named_parameters()) p.copy_(cpu.parameter(name).value());
  }
  ForwardInput input;
  input.input_ids = random_ids(2, 40, config.vocab_size, 52);
  input.labels = input.input_ids;
  input.segment_ids = (at::arange(40, at::kLong) >= 17).to(at::kLong).unsqueeze(0).expand({2, 40}).contiguous();
  gpu.impl().gradient_checkpointing = true;
  for (auto& [name, p] : cpu.named_parameters()) p.requires_grad_(true);
  for (auto& [name, p] : gpu.named_parameters()) p.requires_grad_(true);
  auto a = cpu.forward(input);
  auto b = gpu.forward(input);
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  CHECK(max_abs_diff(a->logits, b->logits.cpu()) < 1e-3);
  a->loss.backward();
  b->loss.backward();
  for (const auto& [name, p] : cpu.named_parameters()) {
    INFO(name);
    CHECK(max_abs_diff(p.grad(), gpu.parameter(name).value().grad().cpu()) < 1e-3);
  }
  GenerationOptions gen;
  gen.max_new_tokens = 6;
  gen.stop_token_ids = {-1};
  CHECK(generate(cpu, {5, 6, 7, 8}, gen).value() == generate(gpu, {5, 6, 7, 8}, gen).value());

  // bf16 with LoRA: a training step runs through the memory-efficient kernel's backward with the bias.
  TempDir dir;
  REQUIRE_OK(export_merged_model(cpu, nullptr, dir / "bloom", at::kFloat));
  Model bf16 = Model::load(dir / "bloom", {at::kBFloat16, at::kCUDA}).value();
  auto adapter = LoraAdapter::create(bf16, LoraOptions{});
  REQUIRE_OK(adapter);
  auto out = bf16.forward(input);
  REQUIRE_OK(out);
  CHECK(std::abs(out->loss.item<double>() - a->loss.item<double>()) < 0.05 * a->loss.item<double>());
  out->loss.backward();
  for (const auto& [name, t] : adapter->named_parameters()) {
    INFO(name);
    REQUIRE(t.grad().defined());
    CHECK(at::isfinite(t.grad()).all().item<bool>());
  }
}

TEST_CASE("LoRA target \"dense\" selects bloom's attention output only, as PEFT's suffix rule does", "[unit]") {
  Model model = tiny_model(tiny_bloom(4), 3);
  LoraOptions options;
  options.rank = 2;
  options.target_modules = {"dense"};
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  CHECK(adapter->target_modules() ==
        std::vector<std::string>{"transformer.h.0.self_attention.dense", "transformer.h.1.self_attention.dense"});
  options.target_modules = {"q_proj"};
  adapter->remove();
  auto wrong = LoraAdapter::create(model, options);
  REQUIRE_FALSE(wrong.ok());
  CHECK(message_of(wrong.status()).find("query_key_value") != std::string::npos);  // lists bloom's module names
}
