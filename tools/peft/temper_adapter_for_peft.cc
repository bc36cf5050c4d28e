// The temper side of the PEFT round trip (tools/peft/peft_job.sh runs it on the GPU machine):
// creates a seeded LoRA adapter on a base model, gives B (and DoRA's magnitude) non-zero random
// values so that the adapter changes the output, saves it with LoraAdapter::save, and writes the
// logits temper computes with it. tools/peft/check_temper_adapter.py then loads the directory with
// PeftModel.from_pretrained and compares. With --export, the merged model is exported too and the
// logits temper computes from the exported directory are written beside it for
// tools/peft/check_merged_export.py.
//
//   temper_adapter_for_peft --out DIR [--base tests/fixtures/parity/llama_gqa]
//                           [--variant lora|rslora|dora] [--seed N] [--export DIR]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include "io/safetensors.hpp"
#include "temper/export.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"

namespace {

struct Args {
  std::string base = "tests/fixtures/parity/llama_gqa";
  std::string out;
  std::string variant = "lora";
  std::string export_dir;
  uint64_t seed = 1234;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: temper_adapter_for_peft --out DIR [--base DIR] [--variant lora|rslora|dora] [--seed N] "
               "[--export DIR]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
    const std::string value = argv[++i];
    if (flag == "--base") args.base = value;
    else if (flag == "--out") args.out = value;
    else if (flag == "--variant") args.variant = value;
    else if (flag == "--export") args.export_dir = value;
    else if (flag == "--seed") args.seed = std::strtoull(value.c_str(), nullptr, 10);
    else usage(("unknown flag " + flag).c_str());
  }
  if (args.out.empty()) usage("--out is required");
  if (args.variant != "lora" && args.variant != "rslora" && args.variant != "dora") usage("unknown --variant");
  return args;
}

// The same variants as tools/fixtures/make_peft_fixtures.py, so both directions cover the same features.
temper::LoraOptions options_for(const Args& args) {
  temper::LoraOptions options;
  options.rank = 4;
  options.alpha = 8.0;
  options.seed = args.seed;
  if (args.variant == "rslora") {
    options.use_rslora = true;
    options.rank_pattern = {{"q_proj", 8}, {"layers.1.mlp.down_proj", 2}};
    options.alpha_pattern = {{"v_proj", 3.0}};
  }
  if (args.variant == "dora") options.use_dora = true;
  return options;
}

int fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

absl::StatusOr<at::Tensor> logits_of(const temper::Model& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  temper::ForwardInput input;
  input.input_ids = ids;
  auto out = model.forward(input);
  if (!out.ok()) return out.status();
  return out->logits.to(at::kFloat).contiguous();
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  auto model = temper::Model::load(args.base);
  if (!model.ok()) return fail(model.status());
  auto reference = temper::SafetensorsFile::open(std::filesystem::path(args.base) / "expected.safetensors");
  if (!reference.ok()) return fail(reference.status());
  auto ids = reference->tensor("input_ids");
  if (!ids.ok()) return fail(ids.status());
  const at::Tensor input_ids = ids->clone();

  auto adapter = temper::LoraAdapter::create(*model, options_for(args));
  if (!adapter.ok()) return fail(adapter.status());
  {
    at::NoGradGuard no_grad;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(args.seed + 1);
    for (auto& [name, p] : adapter->named_parameters()) {
      if (name.find("lora_B") != std::string::npos) p.copy_(at::normal(0.0, 0.1, p.sizes(), gen));
      if (name.find("lora_magnitude_vector") != std::string::npos) {
        p.mul_(1.0 + 0.2 * at::rand(p.sizes(), gen));
      }
    }
  }
  auto logits = logits_of(*model, input_ids);
  if (!logits.ok()) return fail(logits.status());
  absl::Status status = adapter->save(args.out, args.base);
  if (!status.ok()) return fail(status);
  status = temper::write_safetensors(std::filesystem::path(args.out) / "temper_logits.safetensors",
                                     {{"input_ids", input_ids}, {"logits", *logits}});
  if (!status.ok()) return fail(status);
  std::printf("{\"adapter\": \"%s\", \"variant\": \"%s\", \"tensors\": %zu}\n", args.out.c_str(),
              args.variant.c_str(), adapter->named_parameters().size());

  if (!args.export_dir.empty()) {
    status = temper::export_merged_model(*model, &*adapter, args.export_dir, at::kFloat);
    if (!status.ok()) return fail(status);
    auto exported = temper::Model::load(args.export_dir);
    if (!exported.ok()) return fail(exported.status());
    auto merged_logits = logits_of(*exported, input_ids);
    if (!merged_logits.ok()) return fail(merged_logits.status());
    const double diff = (*merged_logits - *logits).abs().max().item<double>();
    status = temper::write_safetensors(std::filesystem::path(args.export_dir) / "temper_logits.safetensors",
                                       {{"input_ids", input_ids}, {"logits", *merged_logits}});
    if (!status.ok()) return fail(status);
    std::printf("{\"export\": \"%s\", \"max_abs_diff_vs_adapter\": %.3g}\n", args.export_dir.c_str(), diff);
    if (diff > 1e-4) return 1;
  }
  return 0;
}
