// One rank of a data-parallel test run (tests/unit/distributed_test.cc starts one or several of
// these with torchrun's environment; the GPU proof runs it under tools/temper-launch).
//
//   temper_dist_worker --out <prefix> [--mode full|lora|reducer] [--steps N] [--batch B] [--seq T]
//       [--accum G] [--zero] [--device cpu|cuda] [--dtype f32|bf16|f16] [--fp32-reduce]
//       [--ckpt-dir D --ckpt-every K] [--resume D] [--die-at-step K] [--data-seed S]
//       [--timeout-ms MS] [--layers L] [--hidden H] [--tied]
//
// Every rank builds the same tiny LLaMA model and the same list of batches (from --data-seed),
// trains, and rank 0 writes <prefix>.jsonl (one line per step: loss and grad norm as exact hex
// floats) and <prefix>.safetensors (the trained tensors). --die-at-step makes rank 1 exit with
// _exit(3) at the start of that step, as a killed process would vanish. --fp32-reduce sets
// TrainerOptions::reduce_gradients_in_fp32. Exit status: 0, or 10 + the absl status code of the
// first error (its message on stderr).
//
// --mode reducer drives a GradientReducer alone (no model): each rank gives a few tensors of
// --dtype (and one fp32 tensor, and one that gets no gradient) gradients of its own over two
// micro-batches, reduces them, and writes <prefix>.rank<r>.safetensors with "micro<m>.<name>"
// (its gradient in micro-batch m; zeros for the unused tensor) and "reduced.<name>" (what
// finish() returned, in the dtype returned), so that the test can redo the sum.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "dist/gradient_reducer.hpp"
#include "io/safetensors.hpp"
#include "list_source.hpp"
#include "temper/distributed.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/trainer.hpp"
#include "util/cli_args.hpp"

using namespace temper;

namespace {

using temper::cli::arg;
using temper::cli::flag;

int fail(const Status& status) {
  std::fprintf(stderr, "worker: %s\n", status.ToString().c_str());
  return 10 + static_cast<int>(status.code());
}

std::string hex(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

// --mode reducer (see the top of the file).
int reduce_only(Communicator& comm, at::ScalarType dtype, BucketDtype bucket_dtype, const std::string& out) {
  const at::TensorOptions on = at::TensorOptions().device(comm.device());
  std::vector<std::pair<std::string, at::Tensor>> params;
  // Creation order; the reducer buckets them in reverse. The fp32 tensor between the others
  // splits the run of --dtype tensors (a bucket holds one dtype); it is small enough that a
  // reducer mixing dtypes would put it in one bucket with b.
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"a", {5, 7}}, {"b", {13}}, {"mixed_fp32", {3}}, {"c", {3, 4}}, {"unused", {6}}, {"d", {9}}};
  for (const auto& [name, shape] : shapes) {
    const at::ScalarType type = name == "mixed_fp32" ? at::kFloat : dtype;
    params.emplace_back(name, at::zeros(shape, on.dtype(type)).requires_grad_(true));
  }
  // 40 bytes: a few tensors per bucket, so buckets both of one and of several tensors occur.
  GradientReducer reducer(comm, params, 40, bucket_dtype);
  // Gradients drawn on the CPU, from a seed per rank: the ranks' gradients differ.
  at::manual_seed(100 + comm.rank());
  NamedTensors written;
  for (int micro = 0; micro < 2; ++micro) {
    if (micro == 1) reducer.arm();  // the step's last backward reduces
    for (const auto& [name, p] : params) {
      const at::Tensor g = at::randn(p.sizes(), at::kFloat).to(p.device(), p.scalar_type());
      written.emplace_back("micro" + std::to_string(micro) + "." + name, name == "unused" ? at::zeros_like(p) : g);
      if (name != "unused") (p * 1).backward(g);  // d(p * 1)/dp = 1: the gradient is g as drawn
    }
  }
  absl::StatusOr<std::vector<at::Tensor>> reduced = reducer.finish();
  if (!reduced.ok()) return fail(reduced.status());
  for (size_t k = 0; k < params.size(); ++k) written.emplace_back("reduced." + params[k].first, (*reduced)[k]);
  if (Status s = write_safetensors(out + ".rank" + std::to_string(comm.rank()) + ".safetensors", written); !s.ok()) {
    return fail(s);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out = arg(argc, argv, "--out", "");
  const std::string mode = arg(argc, argv, "--mode", "full");
  const int64_t steps = std::stoll(arg(argc, argv, "--steps", "4"));
  const int64_t batch = std::stoll(arg(argc, argv, "--batch", "4"));
  const int64_t seq = std::stoll(arg(argc, argv, "--seq", "16"));
  const int64_t accum = std::stoll(arg(argc, argv, "--accum", "1"));
  const int64_t die_at = std::stoll(arg(argc, argv, "--die-at-step", "0"));
  uint64_t data_seed = std::stoull(arg(argc, argv, "--data-seed", "11"));
  const bool cuda = arg(argc, argv, "--device", "cpu") == "cuda";
  const std::string dtype = arg(argc, argv, "--dtype", "f32");
  const bool bf16 = dtype == "bf16";
  const bool fp32_reduce = flag(argc, argv, "--fp32-reduce");
  if (out.empty()) {
    std::fprintf(stderr, "usage: temper_dist_worker --out <prefix> [options]\n");
    return 2;
  }

  absl::StatusOr<DistributedEnvironment> env = DistributedEnvironment::from_environment();
  if (!env.ok()) return fail(env.status());
  DistributedOptions dist;
  dist.timeout = std::chrono::milliseconds(std::stoll(arg(argc, argv, "--timeout-ms", "60000")));
  const at::Device device = cuda ? at::Device(at::kCUDA, static_cast<at::DeviceIndex>(env->local_rank)) : at::Device(at::kCPU);
  // For the test of ranks given different data: rank 1 alone takes another seed.
  if (const char* seed1 = std::getenv("TEMPER_TEST_DATA_SEED_RANK1"); seed1 != nullptr && env->rank == 1) {
    data_seed = std::stoull(seed1);
  }
  auto comm = Communicator::create(*env, dist, device);
  if (!comm.ok()) return fail(comm.status());
  std::fprintf(stderr, "worker: rank %d of %d, backend %s, device %s\n", (*comm)->rank(), (*comm)->world_size(),
               (*comm)->backend_name().c_str(), device.str().c_str());
  if (mode == "reducer") {
    const at::ScalarType type = bf16 ? at::kBFloat16 : dtype == "f16" ? at::kHalf : at::kFloat;
    return reduce_only(**comm, type, fp32_reduce ? BucketDtype::kFloat32 : BucketDtype::kGradient, out);
  }

  ModelConfig config;
  config.model_type = "llama";
  config.family = ModelFamily::kLlama;
  config.vocab_size = 97;
  config.hidden_size = std::stoll(arg(argc, argv, "--hidden", "32"));
  config.intermediate_size = config.hidden_size * 3 / 2;
  config.num_layers = std::stoll(arg(argc, argv, "--layers", "2"));
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = config.hidden_size / 4;
  config.max_position_embeddings = 512;
  config.rms_norm_eps = 1e-5;
  config.eos_token_ids = {2};
  config.tie_word_embeddings = flag(argc, argv, "--tied");  // one tensor, two gradients per backward
  ModelOptions model_options;
  model_options.device = device;
  model_options.dtype = bf16 ? at::kBFloat16 : at::kFloat;
  auto model = Model::random(config, model_options, 7);
  if (!model.ok()) return fail(model.status());
  {
    // Larger weights than transformers' init, drawn on the CPU so every device gets the same.
    at::NoGradGuard no_grad;
    at::manual_seed(8);
    for (auto& [name, p] : model->named_parameters()) {
      const at::Tensor noise = at::randn(p.sizes(), at::kFloat) * (p.dim() == 2 ? 0.15 : 0.1);
      if (p.dim() == 2) {
        p.copy_(noise);
      } else {
        p.add_(noise.to(p.device(), p.scalar_type()));
      }
    }
  }
  std::optional<LoraAdapter> adapter;
  if (mode == "lora") {
    LoraOptions lora;
    lora.rank = 4;
    lora.init = LoraOptions::Init::kGaussian;
    lora.seed = 5;
    auto made = LoraAdapter::create(*model, lora);
    if (!made.ok()) return fail(made.status());
    adapter.emplace(*std::move(made));
    // B starts at zero; a nonzero B makes the first steps' gradients reach A as well.
    at::NoGradGuard no_grad;
    at::manual_seed(9);
    for (auto& [name, p] : adapter->named_parameters()) {
      if (name.find("lora_B") != std::string::npos) p.copy_(at::randn(p.sizes(), at::kFloat) * 0.05);
    }
  }

  std::vector<Batch> batches;
  at::manual_seed(static_cast<int64_t>(data_seed));
  for (int i = 0; i < 6; ++i) {
    Batch b;
    b.input_ids = at::randint(3, config.vocab_size, {batch, seq}, at::kLong);
    b.labels = b.input_ids.clone();
    b.labels.narrow(1, 0, 3).fill_(-100);  // an unscored prefix, as SFT prompts are
    batches.push_back(b);
  }
  testing::ListSource data(batches);

  TrainerOptions options;
  options.max_steps = steps;
  options.gradient_accumulation_steps = accum;
  options.optimizer.lr = 2e-3;
  options.optimizer.weight_decay = 0.01;
  options.schedule = {ScheduleKind::kLinear, 1};
  options.max_grad_norm = 1.0;
  options.communicator = *comm;
  options.shard_optimizer_state = flag(argc, argv, "--zero");
  options.gradient_bucket_bytes = 4096;  // several buckets even for the tiny model
  options.reduce_gradients_in_fp32 = fp32_reduce;
  options.checkpoint_dir = arg(argc, argv, "--ckpt-dir", "");
  options.checkpoint_every = std::stoll(arg(argc, argv, "--ckpt-every", "0"));
  options.keep_last_checkpoints = 10;
  std::ofstream log;
  if ((*comm)->rank() == 0) log.open(out + ".jsonl");
  options.on_step = [&](const StepMetrics& m) {
    if (log.is_open()) {
      log << "{\"step\":" << m.step << ",\"loss\":\"" << hex(m.loss) << "\",\"grad_norm\":\"" << hex(m.grad_norm)
          << "\",\"tokens\":" << m.tokens << "}\n";
      log.flush();
    }
  };
  auto trainer = Trainer::create(*model, data, options, adapter ? &*adapter : nullptr);
  if (!trainer.ok()) return fail(trainer.status());
  const std::string resume = arg(argc, argv, "--resume", "");
  if (!resume.empty()) {
    if (Status s = trainer->resume(resume); !s.ok()) return fail(s);
  }
  while (trainer->global_step() < steps) {
    if (die_at > 0 && trainer->global_step() + 1 == die_at && (*comm)->rank() == 1) _exit(3);
    auto step = trainer->step();
    if (!step.ok()) return fail(step.status());
    if (!options.checkpoint_dir.empty() && options.checkpoint_every > 0 &&
        trainer->global_step() % options.checkpoint_every == 0) {
      const Status saved = trainer->save_checkpoint(options.checkpoint_dir /
                                                    ("step-" + std::to_string(trainer->global_step())));
      if (!saved.ok()) return fail(saved);
    }
  }
  if ((*comm)->rank() == 0) {
    NamedTensors trained;
    for (auto& [name, p] : adapter ? adapter->named_parameters() : model->named_parameters()) {
      trained.emplace_back(name, p.detach().to(at::kCPU, at::kFloat).contiguous());
    }
    if (Status s = write_safetensors(out + ".safetensors", trained); !s.ok()) return fail(s);
  }
  return 0;
}
