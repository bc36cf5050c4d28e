// A program built against the installed temper package: it may use only the public API.
#include <cstdio>

#include <temper/temper.hpp>

int main() {
  temper::ModelConfig config;
  config.model_type = "llama";
  config.vocab_size = 16;
  config.hidden_size = 8;
  config.intermediate_size = 8;
  config.num_layers = 1;
  config.num_attention_heads = 2;
  config.num_key_value_heads = 1;
  config.head_dim = 4;
  config.max_position_embeddings = 16;
  auto model = temper::Model::random(config);
  if (!model.ok()) return 1;
  temper::ForwardInput input;
  input.input_ids = at::zeros({1, 3}, at::kLong);
  auto out = model->forward(input);
  if (!out.ok() || out->logits.size(2) != 16) return 2;
  temper::LoraOptions lora;
  lora.rank = 2;
  auto adapter = temper::LoraAdapter::create(*model, lora);
  if (!adapter.ok() || adapter->named_parameters().size() != 14 || !adapter->merge().ok()) return 4;
  auto bad = temper::parse_model_config("{}", "consumer");
  if (bad.ok()) return 3;
  std::printf("%s\n", temper::build_info().c_str());
  return 0;
}
