#include <algorithm>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include "util/strings.hpp"

#include "io/checkpoint.hpp"
#include "io/read_file.hpp"
#include "model/activation_checkpoint.hpp"
#include "model/bloom_block.hpp"
#include "model/decoder_block.hpp"
#include "model/loss.hpp"
#include "model/model_impl.hpp"
#include "model/rope.hpp"
#include "ops/linear_cross_entropy.hpp"
#include "ops/nf4_linear.hpp"
#include "ops/rms_norm.hpp"
#include "quant/bnb_checkpoint.hpp"
#include "temper/runtime.hpp"
#include "util/status_macros.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

std::string shape_string(at::IntArrayRef shape) { return str_cat("[", fmt::format("{}", fmt::join(shape, ", ")), "]"); }

// Lists at most `limit` names, then how many more.
std::string name_list(const std::vector<std::string>& names, size_t limit = 8) {
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(limit, names.size()));
  std::string out = fmt::format("{}", fmt::join(shown, ", "));
  if (names.size() > limit) out += str_cat(", ... (", names.size() - limit, " more)");
  return out;
}

absl::Status check_options(const ModelOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 && options.dtype != at::kHalf) {
    return absl::InvalidArgumentError(str_cat("model dtype must be float32, bfloat16 or float16, not ",
                                                   c10::toString(options.dtype)));
  }
  // Asked for a CUDA device this process does not have: a clear status rather than libtorch's
  // exception from the first allocation (found by fuzz_capi_options on the CPU build).
  if (options.device.is_cuda()) {
    const int64_t devices = cuda_device_count();
    const int64_t index = options.device.has_index() ? options.device.index() : 0;
    if (index < 0 || index >= devices) {
      return absl::FailedPreconditionError(str_cat("model device cuda:", index, " requested, but this process sees ",
                                                   devices, " CUDA device(s)", devices == 0 ? " (CPU-only libtorch or no GPU)" : ""));
    }
  }
  return absl::OkStatus();
}

// Fills the derived state once the parameters are in place.
void finish(Model::Impl& impl) {
  if (impl.config.tie_word_embeddings) impl.lm_head = impl.embed;
  if (impl.config.family == ModelFamily::kBloom) {
    impl.alibi_slopes = alibi_slopes(impl.config.num_attention_heads).to(impl.options.device);
  } else {
    impl.inv_freq = rope_inv_freq(impl.config).to(impl.options.device);
  }
}

// Validates ids/labels/positions and returns input_ids as int64.
absl::StatusOr<at::Tensor> checked_ids(const ForwardInput& input, const ModelConfig& config) {
  const at::Tensor& ids = input.input_ids;
  if (!ids.defined() || ids.dim() != 2 || ids.size(0) == 0 || ids.size(1) == 0) {
    return absl::InvalidArgumentError(
        str_cat("forward: input_ids must be a non-empty [batch, seq] tensor, got ",
                     ids.defined() ? shape_string(ids.sizes()) : std::string("an undefined tensor")));
  }
  if (ids.scalar_type() != at::kLong && ids.scalar_type() != at::kInt) {
    return absl::InvalidArgumentError(
        str_cat("forward: input_ids must be int64 or int32, got ", c10::toString(ids.scalar_type())));
  }
  const at::Tensor out_of_range = (ids < 0) | (ids >= config.vocab_size);
  if (out_of_range.any().item<bool>()) {
    const at::Tensor where = out_of_range.nonzero()[0].cpu();
    const int64_t b = where[0].item<int64_t>();
    const int64_t t = where[1].item<int64_t>();
    return absl::InvalidArgumentError(str_cat("forward: input_ids[", b, ", ", t, "] = ", ids[b][t].item<int64_t>(),
                                                   " is outside the vocabulary [0, ", config.vocab_size, ")"));
  }
  if (input.labels.defined()) {
    const at::Tensor& labels = input.labels;
    if (labels.sizes() != ids.sizes() || labels.scalar_type() != at::kLong) {
      return absl::InvalidArgumentError(str_cat("forward: labels must be int64 of the input_ids' shape ",
                                                     shape_string(ids.sizes()), ", got ", c10::toString(labels.scalar_type()),
                                                     " ", shape_string(labels.sizes())));
    }
    const at::Tensor bad = (labels != kIgnoreIndex) & ((labels < 0) | (labels >= config.vocab_size));
    if (bad.any().item<bool>()) {
      const at::Tensor where = bad.nonzero()[0].cpu();
      return absl::InvalidArgumentError(str_cat("forward: labels[", where[0].item<int64_t>(), ", ",
                                                     where[1].item<int64_t>(), "] is neither -100 nor a token id"));
    }
  }
  if (input.position_ids.defined() &&
      (input.position_ids.sizes() != ids.sizes() || !at::isIntegralType(input.position_ids.scalar_type(), false) ||
       (input.position_ids < 0).any().item<bool>())) {
    return absl::InvalidArgumentError(str_cat("forward: position_ids must be non-negative integers of shape ",
                                                   shape_string(ids.sizes())));
  }
  if (input.segment_ids.defined() &&
      (input.segment_ids.sizes() != ids.sizes() || !at::isIntegralType(input.segment_ids.scalar_type(), false))) {
    return absl::InvalidArgumentError(str_cat("forward: segment_ids must be integers of shape ", shape_string(ids.sizes())));
  }
  return ids.to(at::kLong);
}

// Reads the bitsandbytes NF4 weight `name` (P.weight and its quant-state tensors) into `linear`.
absl::Status load_bnb_linear(const CheckpointReader& reader, const std::string& name, const ParamSpec& spec,
                             at::Device device, Linear& linear) {
  const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
  TEMPER_ASSIGN_OR_RETURN(
      QuantState state,
      Nf4Quantizer::from_tensors([&](const std::string& tensor) { return reader.tensor(tensor); }, prefix));
  if (state.shape != spec.shape) {
    return absl::InvalidArgumentError(str_cat(reader.file_of(name).string(), ": ", name, " quant_state says shape ",
                                              shape_string(state.shape), ", this config expects ",
                                              shape_string(spec.shape)));
  }
  return guarded(str_cat("loading ", name), [&]() -> absl::Status {
    for (at::Tensor* t : {&state.packed, &state.absmax, &state.quant_map, &state.nested_absmax,
                          &state.nested_quant_map}) {
      if (t->defined()) *t = t->to(device).contiguous();
    }
    linear.quantized = std::make_shared<const QuantState>(std::move(state));
    linear.weight = at::Tensor();
    return absl::OkStatus();
  });
}

}  // namespace

at::Tensor Linear::dense_weight(at::ScalarType dtype) const {
  if (!is_quantized()) return weight.to(dtype);
  absl::StatusOr<at::Tensor> dense = Nf4Quantizer::dequantize(*quantized, dtype);
  TORCH_CHECK(dense.ok(), std::string(dense.status().message()));  // becomes a status in guarded()
  return *dense;
}

at::Tensor Linear::base_forward(const at::Tensor& x) const {
  return is_quantized() ? nf4_linear(x, quantized, bias) : at::linear(x, weight, bias);
}

Linear& DecoderLayer::linear(LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kQ: return q;
    case LinearSlot::kK: return k;
    case LinearSlot::kV: return v;
    case LinearSlot::kO: return o;
    case LinearSlot::kGate: return gate;
    case LinearSlot::kUp: return up;
    case LinearSlot::kDown: return down;
    case LinearSlot::kQkv: return qkv;
  }
  return q;
}

const Linear& DecoderLayer::linear(LinearSlot slot) const { return const_cast<DecoderLayer*>(this)->linear(slot); }

const Linear* Model::Impl::linear_of_weight(const std::string& name) const {
  const ArchitectureNames& names = architecture_names(config.family);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    if (name.compare(0, names.layer_prefix(i).size(), names.layer_prefix(i)) != 0) continue;
    for (LinearSlot slot : linear_slots(config.family)) {
      if (names.linear_module(i, slot) + ".weight" == name) return &layers[i].linear(slot);
    }
  }
  return nullptr;
}

void Model::Impl::for_each_dense_parameter(const std::function<void(const ParamSpec&, const at::Tensor&)>& fn) {
  for_each_parameter([&](const ParamSpec& spec, at::Tensor& slot) {
    if (slot.defined()) {
      fn(spec, slot);
      return;
    }
    fn(spec, linear_of_weight(spec.name)->dense_weight(options.dtype));
  });
}

absl::Status Model::Impl::quantize_linears(const Nf4Options& nf4) {
  for (DecoderLayer& layer : layers) {
    for (LinearSlot slot : linear_slots(config.family)) {
      Linear& linear = layer.linear(slot);
      if (linear.is_quantized()) continue;
      TEMPER_ASSIGN_OR_RETURN(QuantState state, Nf4Quantizer::quantize(linear.weight, nf4));
      linear.quantized = std::make_shared<const QuantState>(std::move(state));
      linear.weight = at::Tensor();  // the dense weight is released here
    }
  }
  return absl::OkStatus();
}

void Model::Impl::for_each_parameter(const std::function<void(const ParamSpec&, at::Tensor&)>& fn) {
  const ArchitectureNames& names = architecture_names(config.family);
  // parameter_specs() is the single list of names and shapes; this maps each to its slot.
  std::map<std::string, at::Tensor*> slots;
  slots[names.embed] = &embed;
  slots[names.final_norm] = &final_norm;
  slots[names.lm_head] = &lm_head;
  if (norms_have_bias(config.family)) {
    slots[names.embed_norm] = &embed_norm;
    slots[norm_bias_name(names.embed_norm)] = &embed_norm_bias;
    slots[norm_bias_name(names.final_norm)] = &final_norm_bias;
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    DecoderLayer& layer = layers[i];
    slots[names.attn_norm(i)] = &layer.attn_norm;
    slots[names.mlp_norm(i)] = &layer.mlp_norm;
    slots[norm_bias_name(names.attn_norm(i))] = &layer.attn_norm_bias;
    slots[norm_bias_name(names.mlp_norm(i))] = &layer.mlp_norm_bias;
    for (LinearSlot slot : linear_slots(config.family)) {
      const std::string module = names.linear_module(i, slot);
      slots[module + ".weight"] = &layer.linear(slot).weight;
      slots[module + ".bias"] = &layer.linear(slot).bias;
    }
  }
  for (const ParamSpec& spec : parameter_specs(config)) fn(spec, *slots.at(spec.name));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->config; }
const ModelOptions& Model::options() const { return impl_->options; }

StatusOr<Model> Model::load(const std::filesystem::path& dir, const ModelOptions& options) {
  TEMPER_RETURN_IF_ERROR(check_options(options));
  TEMPER_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir));
  TEMPER_ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::open(dir));

  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->options = options;
  impl->layers.resize(config.num_layers);
  TEMPER_ASSIGN_OR_RETURN(impl->config_json, read_file(dir / "config.json"));
  impl->source_dir = dir;

  // A BLOOM checkpoint saved from BloomModel names its tensors without "transformer."; the model
  // keeps BloomForCausalLM's names either way.
  const std::string drop = optional_checkpoint_prefix(config.family);
  const std::string& embed_name = architecture_names(config.family).embed;
  const bool dropped = !drop.empty() && reader.entry(embed_name) == nullptr &&
                       reader.entry(embed_name.substr(drop.size())) != nullptr;
  auto stored_name = [&](const std::string& name) {
    return dropped && name.rfind(drop, 0) == 0 ? name.substr(drop.size()) : name;
  };

  // A checkpoint quantized by bitsandbytes (QLoRA base) keeps its 4-bit linears as they are: a
  // linear weight is read quantized when its quant_state tensor is present; everything else is
  // dense. Such a model is quantized whatever options.quantize_nf4 says.
  TEMPER_ASSIGN_OR_RETURN(std::optional<BnbQuantizationConfig> bnb,
                          parse_bnb_quantization_config(impl->config_json, (dir / "config.json").string()));
  std::set<std::string> quantized;
  if (bnb) {
    for (const ParamSpec& spec : parameter_specs(config)) {
      if (impl->linear_of_weight(spec.name) != nullptr &&
          reader.entry(bnb_quant_state_name(stored_name(spec.name))) != nullptr) {
        quantized.insert(spec.name);
      }
    }
    if (!quantized.empty()) impl->options.quantize_nf4 = true;
  }

  // Check names and shapes of everything before converting anything.
  std::vector<std::string> missing;
  std::vector<std::string> wrong_shape;
  std::set<std::string> expected;
  for (const ParamSpec& spec : parameter_specs(config)) {
    const std::string name = stored_name(spec.name);
    expected.insert(name);
    const SafetensorsEntry* entry = reader.entry(name);
    if (entry == nullptr) {
      missing.push_back(name);
    } else if (entry->shape != spec.shape && !quantized.count(spec.name)) {  // NF4: checked against its quant_state
      wrong_shape.push_back(str_cat(name, " is ", shape_string(entry->shape), ", expected ",
                                         shape_string(spec.shape)));
    }
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : reader.names()) {
    const bool tied_head = config.tie_word_embeddings && name == architecture_names(config.family).lm_head;
    if (!expected.count(name) && !tied_head && !is_ignorable_checkpoint_tensor(name) &&
        !(!quantized.empty() && is_bnb_quant_state_tensor(name))) {
      unexpected.push_back(name);
    }
  }
  const std::string where = dir.string();
  if (!wrong_shape.empty()) {
    return absl::InvalidArgumentError(str_cat(where, ": tensors with the wrong shape for this config.json: ",
                                                   name_list(wrong_shape)));
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(str_cat(where, ": checkpoint lacks ", missing.size(), " tensors: ",
                                                   name_list(missing)));
  }
  if (!unexpected.empty()) {
    return absl::InvalidArgumentError(str_cat(where, ": checkpoint holds ", unexpected.size(),
                                                   " tensors this ", config.model_type,
                                                   " config does not use: ", name_list(unexpected)));
  }

  absl::Status status = absl::OkStatus();
  impl->for_each_parameter([&](const ParamSpec& spec, at::Tensor& slot) {
    if (!status.ok()) return;
    const std::string name = stored_name(spec.name);
    if (quantized.count(spec.name)) {
      status = load_bnb_linear(reader, name, spec, options.device,
                               const_cast<Linear&>(*impl->linear_of_weight(spec.name)));
      return;
    }
    absl::StatusOr<at::Tensor> stored = reader.tensor(name);
    if (!stored.ok()) {
      status = stored.status();
      return;
    }
    if (!at::isFloatingType(stored->scalar_type())) {
      status = absl::InvalidArgumentError(str_cat(reader.file_of(name).string(), ": tensor ", name,
                                                       " has dtype ", c10::toString(stored->scalar_type()),
                                                       "; model weights must be floating point"));
      return;
    }
    status = guarded(str_cat("loading ", spec.name), [&]() -> absl::Status {
      // .to() returns the mapped tensor itself when dtype and device already match: zero-copy.
      slot = stored->to(options.device, options.dtype);
      return absl::OkStatus();
    });
  });
  TEMPER_RETURN_IF_ERROR(status);
  if (options.quantize_nf4) TEMPER_RETURN_IF_ERROR(impl->quantize_linears(options.nf4));
  finish(*impl);
  return Model(std::move(impl));
}

StatusOr<Model> Model::random(const ModelConfig& config, const ModelOptions& options, uint64_t seed) {
  TEMPER_RETURN_IF_ERROR(check_options(options));
  return guarded("initialising a random model", [&]() -> StatusOr<Model> {
    auto impl = std::make_unique<Impl>();
    impl->config = config;
    impl->options = options;
    impl->layers.resize(config.num_layers);
    impl->config_json = model_config_to_json(config).value_or("");
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    impl->for_each_parameter([&](const ParamSpec& spec, at::Tensor& slot) {
      at::Tensor value;
      switch (spec.role) {
        case ParamRole::kNorm: value = at::ones(spec.shape, at::kFloat); break;
        case ParamRole::kNormBias:
        case ParamRole::kLinearBias: value = at::zeros(spec.shape, at::kFloat); break;
        default: value = at::normal(0.0, 0.02, spec.shape, gen); break;
      }
      slot = value.to(options.device, options.dtype);
    });
    if (options.quantize_nf4) TEMPER_RETURN_IF_ERROR(impl->quantize_linears(options.nf4));
    finish(*impl);
    return Model(std::move(impl));
  });
}

StatusOr<ForwardOutput> Model::forward(const ForwardInput& input, KvCache* cache) const {
  const ModelConfig& config = impl_->config;
  // The checks run tensor ops too (a comparison over every id): guarded like the forward itself.
  TEMPER_ASSIGN_OR_RETURN(at::Tensor ids, guarded("forward: checking the input", [&]() -> StatusOr<at::Tensor> {
                            return checked_ids(input, config);
                          }));
  if (cache != nullptr && cache->length > 0 && (cache->keys.size() != static_cast<size_t>(config.num_layers) ||
                                                cache->keys[0].size(0) != ids.size(0))) {
    return absl::InvalidArgumentError("forward: the KV cache belongs to another model or batch; clear() it first");
  }
  if (cache != nullptr && input.segment_ids.defined()) {
    return absl::InvalidArgumentError("forward: segment_ids (packed sequences) cannot be combined with a KV cache");
  }
  return guarded("forward", [&]() -> StatusOr<ForwardOutput> {
    const at::Device device = impl_->options.device;
    ids = ids.to(device);
    const int64_t batch = ids.size(0);
    const int64_t seq = ids.size(1);
    const int64_t past = cache != nullptr ? cache->length : 0;
    if (cache != nullptr && cache->length == 0) {
      cache->keys.assign(config.num_layers, at::Tensor());
      cache->values.assign(config.num_layers, at::Tensor());
    }
    at::Tensor h = at::embedding(impl_->embed, ids);  // [B, T, hidden]
    const at::Tensor segments = input.segment_ids.defined() ? input.segment_ids.to(device) : at::Tensor();
    const bool recompute = impl_->gradient_checkpointing && cache == nullptr && at::GradMode::is_enabled();
    if (config.family == ModelFamily::kBloom) {
      // ALiBi: no positions enter the model, only key-query distances (position_ids are ignored,
      // as transformers' BLOOM ignores them).
      h = at::layer_norm(h, {config.hidden_size}, impl_->embed_norm, impl_->embed_norm_bias, config.layer_norm_eps);
      const at::Tensor bias = alibi_attention_bias(impl_->alibi_slopes, past, seq, segments, impl_->options.dtype);
      for (int64_t i = 0; i < config.num_layers; ++i) {
        const DecoderLayer& layer = impl_->layers[i];
        if (recompute) {
          h = checkpointed([&layer, &config, bias](const at::Tensor& x) {
            return bloom_layer_forward(layer, config, x, bias, nullptr, nullptr);
          }, h);
        } else {
          h = bloom_layer_forward(layer, config, h, bias, cache ? &cache->keys[i] : nullptr,
                                  cache ? &cache->values[i] : nullptr);
        }
      }
      h = at::layer_norm(h, {config.hidden_size}, impl_->final_norm, impl_->final_norm_bias, config.layer_norm_eps);
    } else {
      at::Tensor positions = input.position_ids.defined()
                                 ? input.position_ids.to(device, at::kLong)
                                 : at::arange(past, past + seq, at::TensorOptions().dtype(at::kLong).device(device))
                                       .unsqueeze(0)
                                       .expand({batch, seq});
      auto [cos, sin] = rope_cos_sin(impl_->inv_freq, positions, impl_->options.dtype);
      for (int64_t i = 0; i < config.num_layers; ++i) {
        const DecoderLayer& layer = impl_->layers[i];
        if (recompute) {
          h = checkpointed([&layer, &config, cos = cos, sin = sin, segments](const at::Tensor& x) {
            return decoder_layer_forward(layer, config, x, cos, sin, nullptr, nullptr, segments);
          }, h);
        } else {
          h = decoder_layer_forward(layer, config, h, cos, sin, cache ? &cache->keys[i] : nullptr,
                                    cache ? &cache->values[i] : nullptr, segments);
        }
      }
      h = rms_norm(h, impl_->final_norm, config.rms_norm_eps);
    }
    if (cache != nullptr) cache->length = past + seq;

    ForwardOutput out;
    if (input.labels.defined() && !input.return_logits) {
      // Position t is scored on labels[t + 1], as causal_lm_loss shifts.
      const int64_t hidden = h.size(-1);
      const at::Tensor scored = h.narrow(1, 0, h.size(1) - 1).reshape({-1, hidden});
      const at::Tensor shifted = input.labels.narrow(1, 1, h.size(1) - 1).reshape({-1});
      const at::Tensor targets = shifted.to(device);
      out.loss_sum = linear_cross_entropy_sum(scored, impl_->lm_head, targets);
      // Counted where the labels came from: for host labels (the Trainer's) no wait for the device.
      out.num_tokens = shifted.ne(kIgnoreIndex).sum().item<int64_t>();
      out.loss = out.loss_sum / static_cast<double>(std::max<int64_t>(out.num_tokens, 1));
      return out;
    }
    out.logits = at::linear(h, impl_->lm_head);  // [B, T, vocab]
    if (input.labels.defined()) {
      TokenLoss loss = causal_lm_loss(out.logits, input.labels.to(device));
      out.loss_sum = loss.sum;
      out.num_tokens = loss.num_tokens;
      out.loss = loss.sum / static_cast<double>(std::max<int64_t>(loss.num_tokens, 1));
    }
    return out;
  });
}

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  impl_->for_each_parameter([&](const ParamSpec& spec, at::Tensor& slot) {
    if (slot.defined()) out.emplace_back(spec.name, slot);  // quantized weights are not parameters
  });
  return out;
}

StatusOr<at::Tensor> Model::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters()) {
    if (n == name) return t;
  }
  return absl::NotFoundError(str_cat("model has no parameter \"", name, "\""));
}

int64_t Model::num_parameters() const {
  int64_t total = 0;
  for (const ParamSpec& spec : parameter_specs(impl_->config)) {
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    total += n;
  }
  return total;
}

}  // namespace temper
