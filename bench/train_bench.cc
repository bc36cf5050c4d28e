// Training-step benchmark on the GPU: temper's Trainer on the "1B" / "7B" shapes of
// ../shared/baselines.md with random weights and random tokens, bf16. Prints one JSON line:
// median step time over steps 3..N, tokens/s, peak allocated GPU memory, MFU.
//
//   train_bench --shape 1b --mode lora|qlora|full --batch 4 --seq 2048 --steps 6 [--ckpt] [--profile] [--zero]
//               [--local-reducer]
// qlora: the decoder blocks' linear weights in NF4 with double quantization (bitsandbytes'
// defaults, blocksize 64), LoRA as in lora mode.
// --profile: one extra step, the third, runs under the Kineto profiler (CPU + CUDA activities)
// and is left out of the timing. Its device time is attributed to the innermost ATen op that
// launched each kernel (the kernel's linked correlation id, as torch.profiler's tables do) and
// printed before the summary line: the top 25 ops ({"bench":"profile",...}), the top 15 kernels
// ({"bench":"profile_kernel",...}) and the step's wall time beside the device's busy time
// ({"bench":"profile_summary",...}: a busy fraction well below 1 means launch overhead or host
// syncs leave the GPU idle).
//
// Data parallel (docs/distributed.md): under tools/temper-launch or torchrun (WORLD_SIZE > 1)
// each process drives GPU LOCAL_RANK through an NCCL Communicator; --batch stays the per-GPU
// batch, so the global batch is world_size x batch and tokens/s counts every rank's tokens.
// --zero shards the optimizer state. Rank 0 prints the line (with "world_size").
//
// --local-reducer (one process): the data-parallel step's own work without a second GPU. A
// GradientReducer over the trained tensors, on a world of one (no collective), armed for every
// step: its hooks copy each gradient into its bucket and hand autograd the bucket view as .grad,
// as on two GPUs. Against the same run without it, step time and peak memory say what data
// parallelism costs besides NCCL's transfers (the time of the hooks and copies, and whatever the
// buckets add at the step's peak).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include "dist/gradient_reducer.hpp"
#include "ops/compat.hpp"
#include "temper/distributed.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/trainer.hpp"
#include "util/cli_args.hpp"

namespace {

using temper::cli::arg;
using temper::cli::flag;

temper::ModelConfig shape(const std::string& name) {
  temper::ModelConfig c;
  c.model_type = "llama";
  c.family = temper::ModelFamily::kLlama;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 4096;
  if (name == "7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32, c.head_dim = 128, c.tie_word_embeddings = false;
  } else {
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64, c.tie_word_embeddings = true;
    c.rope_theta = 500000.0;
  }
  return c;
}

class RandomTokens final : public temper::BatchSource {
 public:
  // Seeded on the host: every rank of a data-parallel run draws the same global batch (the
  // Trainer checks that), whatever the devices' generators hold.
  RandomTokens(int64_t batch, int64_t seq, int64_t vocab, at::Device device)
      : batch_(batch), seq_(seq), vocab_(vocab), device_(device), generator_(at::detail::createCPUGenerator(1234)) {}
  temper::StatusOr<temper::Batch> next() override {
    at::Tensor ids = at::randint(0, vocab_, {batch_, seq_}, generator_, at::TensorOptions().dtype(at::kLong));
    ids = ids.to(device_);
    return temper::Batch{ids, ids, {}};
  }
  int64_t epochs_completed() const override { return 0; }
  temper::Objective objective() const override { return temper::Objective::kContinuedPretraining; }
  std::string save_state() const override { return "{}"; }
  temper::Status restore_state(const std::string&) override { return absl::OkStatus(); }

 private:
  int64_t batch_, seq_, vocab_;
  at::Device device_;
  at::Generator generator_;
};

std::string json_escape(const std::string& in, size_t max_chars) {
  std::string out;
  for (char c : in.substr(0, max_chars)) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

namespace prof = torch::autograd::profiler;

void start_profiler() {
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<torch::profiler::impl::ActivityType> activities = {torch::profiler::impl::ActivityType::CPU,
                                                                    torch::profiler::impl::ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
}

// The ATen op that launched a device event (by its linked correlation id), or the kernel's own
// name marked "(no op)" for kernels launched outside any op.
std::string launching_op(const prof::KinetoEvent& e, const std::unordered_map<uint64_t, std::string>& op_names) {
  const auto op = op_names.find(e.linkedCorrelationId());
  return op != op_names.end() ? op->second : "(no op) " + e.name();
}

// Where the device idles within the profiled step: the kernels' busy intervals merged on the
// profiler's clock, the lead from the step's first host op to its first kernel, and the largest
// gaps between kernels, each with the ops that launched the kernels on either side and how late
// the host issued the next one (its launching op's start relative to the gap's start: positive
// means the host was still busy elsewhere when the device ran dry). Prints JSON lines.
void report_gaps(const prof::ProfilerResult& result, const std::unordered_map<uint64_t, std::string>& op_names) {
  struct Span {
    double start, end;
    std::string op;
    double op_start;  // the launching op's host start, or NaN
  };
  std::unordered_map<uint64_t, double> op_starts;
  struct HostOp {
    double start, us;
    std::string name;
  };
  std::vector<HostOp> host_ops;
  double host_first = std::numeric_limits<double>::infinity();
  for (const prof::KinetoEvent& e : result.events()) {
    if (e.deviceType() != c10::DeviceType::CPU) continue;
    const double start = temper::compat::profiler_event_start_us(e);
    host_first = std::min(host_first, start);
    host_ops.push_back({start, temper::compat::profiler_event_duration_us(e), e.name()});
    if (op_names.count(e.correlationId()) != 0) op_starts[e.correlationId()] = start;
  }
  // The longest host events that began within [from, to): what the host was doing meanwhile.
  auto host_during = [&](double from, double to) {
    std::vector<const HostOp*> in;
    for (const HostOp& h : host_ops) {
      if (h.start >= from && h.start < to) in.push_back(&h);
    }
    std::sort(in.begin(), in.end(), [](const HostOp* a, const HostOp* b) { return a->us > b->us; });
    std::string out = "[";
    for (size_t i = 0; i < std::min<size_t>(in.size(), 6); ++i) {
      out += (i ? ",\"" : "\"") + json_escape(in[i]->name, 60) + " " + std::to_string(in[i]->us / 1e3).substr(0, 6) +
             " ms @" + std::to_string((in[i]->start - from) / 1e3).substr(0, 6) + "\"";
    }
    return out + "]";
  };
  std::vector<Span> spans;
  for (const prof::KinetoEvent& e : result.events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    const double start = temper::compat::profiler_event_start_us(e);
    const auto op_start = op_starts.find(e.linkedCorrelationId());
    spans.push_back({start, start + temper::compat::profiler_event_duration_us(e), launching_op(e, op_names),
                     op_start != op_starts.end() ? op_start->second : std::nan("")});
  }
  if (spans.empty()) return;
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
  struct Gap {
    double us, at;
    size_t before, after;
  };
  std::vector<Gap> gaps;
  double end = spans[0].end, idle_us = 0;
  size_t last = 0;  // the span whose end is `end`
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].start > end) {
      gaps.push_back({spans[i].start - end, end - spans[0].start, last, i});
      idle_us += spans[i].start - end;
    }
    if (spans[i].end > end) {
      end = spans[i].end;
      last = i;
    }
  }
  std::printf("{\"bench\":\"profile_idle\",\"lead_ms\":%.3f,\"first_to_last_kernel_ms\":%.3f,"
              "\"idle_between_kernels_ms\":%.3f,\"gaps\":%zu,\"host_in_lead\":%s}\n",
              (spans[0].start - host_first) / 1e3, (end - spans[0].start) / 1e3, idle_us / 1e3, gaps.size(),
              host_during(host_first, spans[0].start).c_str());
  std::sort(gaps.begin(), gaps.end(), [](const Gap& a, const Gap& b) { return a.us > b.us; });
  for (size_t g = 0; g < std::min<size_t>(gaps.size(), 12); ++g) {
    const Span& after = spans[gaps[g].after];
    const double late = after.op_start - (spans[gaps[g].before].end);
    std::printf("{\"bench\":\"profile_gap\",\"gap_ms\":%.3f,\"at_ms\":%.3f,\"before\":\"%s\",\"after\":\"%s\","
                "\"host_late_ms\":%s,\"host_meanwhile\":%s}\n",
                gaps[g].us / 1e3, gaps[g].at / 1e3, json_escape(spans[gaps[g].before].op, 100).c_str(),
                json_escape(after.op, 100).c_str(),
                std::isnan(late) ? "null" : std::to_string(late / 1e3).c_str(),
                g < 4 ? host_during(spans[gaps[g].before].end, after.start).c_str() : "[]");
  }
}

// Aggregates the profiled step's device events by launching op and by kernel; prints JSON lines.
void report_profile(const prof::ProfilerResult& result, double step_wall_s) {
  // CPU-side ATen ops by correlation id. CUDA runtime calls (cudaLaunchKernel, ...) are CPU
  // events too, with CUPTI's own correlation ids and a link to their op: left out.
  std::unordered_map<uint64_t, std::string> op_names;
  for (const prof::KinetoEvent& e : result.events()) {
    const std::string name = e.name();
    if (e.deviceType() == c10::DeviceType::CPU && e.linkedCorrelationId() == 0 && e.correlationId() != 0 &&
        name.rfind("cu", 0) != 0) {
      op_names[e.correlationId()] = name;
    }
  }
  struct Stat {
    std::set<uint64_t> calls;  // distinct launching op invocations
    int64_t kernels = 0;
    double device_us = 0;
  };
  std::map<std::string, Stat> by_op, by_kernel;
  double total_us = 0;
  int64_t kernels = 0;
  for (const prof::KinetoEvent& e : result.events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    const double us = temper::compat::profiler_event_duration_us(e);
    const uint64_t link = e.linkedCorrelationId();
    Stat& s = by_op[launching_op(e, op_names)];
    s.calls.insert(link);
    s.kernels += 1;
    s.device_us += us;
    Stat& k = by_kernel[e.name()];
    k.kernels += 1;
    k.device_us += us;
    total_us += us;
    kernels += 1;
  }
  auto top = [](const std::map<std::string, Stat>& stats, size_t n) {
    std::vector<std::pair<std::string, const Stat*>> v;
    for (const auto& [name, s] : stats) v.emplace_back(name, &s);
    std::sort(v.begin(), v.end(),
              [](const auto& a, const auto& b) { return a.second->device_us > b.second->device_us; });
    if (v.size() > n) v.resize(n);
    return v;
  };
  for (const auto& [name, s] : top(by_op, 25)) {
    std::printf("{\"bench\":\"profile\",\"op\":\"%s\",\"calls\":%zu,\"kernels\":%lld,\"device_ms\":%.3f,"
                "\"share\":%.4f}\n",
                json_escape(name, 200).c_str(), s->calls.size(), static_cast<long long>(s->kernels),
                s->device_us / 1e3, total_us > 0 ? s->device_us / total_us : 0.0);
  }
  for (const auto& [name, s] : top(by_kernel, 15)) {
    std::printf("{\"bench\":\"profile_kernel\",\"kernel\":\"%s\",\"calls\":%lld,\"device_ms\":%.3f,"
                "\"share\":%.4f}\n",
                json_escape(name, 160).c_str(), static_cast<long long>(s->kernels), s->device_us / 1e3,
                total_us > 0 ? s->device_us / total_us : 0.0);
  }
  report_gaps(result, op_names);
  std::printf("{\"bench\":\"profile_summary\",\"step_wall_ms\":%.3f,\"device_ms\":%.3f,\"device_busy_fraction\":%.3f,"
              "\"kernels\":%lld,\"ops_with_kernels\":%zu}\n",
              step_wall_s * 1e3, total_us / 1e3, step_wall_s > 0 ? total_us / 1e3 / (step_wall_s * 1e3) : 0.0,
              static_cast<long long>(kernels), by_op.size());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape_name = arg(argc, argv, "--shape", "1b");
  const std::string mode = arg(argc, argv, "--mode", "lora");
  const int64_t batch = std::stoll(arg(argc, argv, "--batch", "4"));
  const int64_t seq = std::stoll(arg(argc, argv, "--seq", "2048"));
  const bool ckpt = flag(argc, argv, "--ckpt");
  const bool profile = flag(argc, argv, "--profile");
  // Steps before the profiled one (and before the timed ones): allocator, cuBLAS and CUPTI warm-up.
  constexpr size_t kWarmup = 2;
  const int64_t steps = std::stoll(arg(argc, argv, "--steps", "6")) + (profile ? 1 : 0);

  const bool zero = flag(argc, argv, "--zero");
  const bool local_reducer = flag(argc, argv, "--local-reducer");

  auto env = temper::DistributedEnvironment::from_environment();
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", std::string(env.status().ToString()).c_str());
    return 1;
  }
  const int world = env->world_size;
  if (local_reducer && world > 1) {
    std::fprintf(stderr, "--local-reducer runs on one process (WORLD_SIZE is %d)\n", world);
    return 1;
  }
  const auto gpu = static_cast<c10::DeviceIndex>(env->local_rank);
  const at::Device device(at::kCUDA, gpu);
  c10::cuda::set_device(gpu);
  std::shared_ptr<temper::Communicator> communicator;
  if (world > 1) {
    auto made = temper::Communicator::create(*env, temper::DistributedOptions{}, device);
    if (!made.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", env->rank, std::string(made.status().ToString()).c_str());
      return 1;
    }
    communicator = *std::move(made);
  }

  const temper::ModelConfig config = shape(shape_name);
  temper::ModelOptions model_options;
  model_options.dtype = at::kBFloat16;
  model_options.device = device;
  model_options.quantize_nf4 = mode == "qlora";
  auto model = temper::Model::random(config, model_options, 0);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().ToString()).c_str());
    return 1;
  }
  std::optional<temper::LoraAdapter> adapter;
  if (mode == "lora" || mode == "qlora") {
    temper::LoraOptions lora;
    lora.rank = 16;
    lora.alpha = 32.0;  // baselines.md: r=16, alpha=32, dropout 0, all seven projections (temper's default targets)
    auto created = temper::LoraAdapter::create(*model, lora);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", std::string(created.status().ToString()).c_str());
      return 1;
    }
    adapter.emplace(std::move(*created));
  }
  RandomTokens data(batch * world, seq, config.vocab_size, device);
  temper::TrainerOptions options;
  options.communicator = communicator;
  options.shard_optimizer_state = zero;
  options.max_steps = steps;
  options.optimizer.lr = 1e-4;
  options.gradient_checkpointing = ckpt;
  std::vector<double> times;
  auto last = std::chrono::steady_clock::now();
  bool profiling = false;
  int exit_code = 0;
  std::unique_ptr<temper::GradientReducer> reducer;  // --local-reducer
  options.on_step = [&](const temper::StepMetrics&) {
    if (reducer != nullptr) {
      // The step's reduction ends (nothing to wait for in a world of one); the next one's starts.
      if (auto reduced = reducer->finish(); !reduced.ok()) {
        std::fprintf(stderr, "%s\n", std::string(reduced.status().ToString()).c_str());
        exit_code = 1;
      }
      reducer->arm();
    }
    cudaDeviceSynchronize();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - last).count());
    // The profiler works on this thread's ops (autograd's device threads inherit its state).
    try {
      // With several ranks only rank 0 profiles (every rank still runs the extra step).
      if (profile && env->rank == 0 && times.size() == kWarmup) {
        start_profiler();
        profiling = true;
      } else if (profiling) {
        profiling = false;
        const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
        report_profile(*result, times.back());
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "train_bench --profile: %s\n", e.what());
      profiling = false;
      exit_code = 1;
    }
    last = std::chrono::steady_clock::now();  // profiler start/stop and the report stay out of the timing
  };
  auto trainer = temper::Trainer::create(*model, data, options, adapter ? &*adapter : nullptr);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(trainer.status().ToString()).c_str());
    return 1;
  }
  if (local_reducer) {
    // The tensors the Trainer trains (it froze the rest and, for full fine-tuning on a GPU, packed
    // q/k/v and gate/up first), in its order, hence its buckets.
    std::vector<std::pair<std::string, at::Tensor>> trained;
    for (auto& named : adapter ? adapter->named_parameters() : model->named_parameters()) {
      if (named.second.requires_grad()) trained.push_back(named);
    }
    auto comm = temper::Communicator::create(temper::DistributedEnvironment{}, temper::DistributedOptions{}, device);
    if (!comm.ok()) {
      std::fprintf(stderr, "%s\n", std::string(comm.status().ToString()).c_str());
      return 1;
    }
    communicator = *std::move(comm);
    reducer = std::make_unique<temper::GradientReducer>(*communicator, std::move(trained), options.gradient_bucket_bytes);
    reducer->arm();
  }
  c10::cuda::CUDACachingAllocator::resetPeakStats(gpu);
  cudaDeviceSynchronize();
  last = std::chrono::steady_clock::now();
  auto result = trainer->train();
  if (!result.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", env->rank, std::string(result.status().ToString()).c_str());
    return 1;
  }
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(gpu);
  const double peak_gib = static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0 * 1024.0);
  // Steps after the warm-up, less the profiled one (index kWarmup) when --profile.
  std::vector<double> timed;
  for (size_t i = kWarmup; i < times.size(); ++i) {
    if (!(profile && i == kWarmup)) timed.push_back(times[i]);
  }
  std::sort(timed.begin(), timed.end());
  const double median = timed.empty() ? 0.0 : timed[timed.size() / 2];
  const double tokens_per_s = median > 0 ? static_cast<double>(world * batch * seq) / median : 0.0;
  const double n = static_cast<double>(model->num_parameters());
  const double attention = 12.0 * config.num_layers * seq * config.hidden_size;
  const double flops_per_token = (mode == "full" ? 6.0 : 4.0) * n + attention;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, gpu);
  if (env->rank != 0) return exit_code;
  // MFU per GPU: the world's tokens/s over world x 790 TFLOP/s.
  std::printf("{\"bench\":\"train_step\",\"impl\":\"temper\",\"device\":\"%s\",\"shape\":\"%s\",\"mode\":\"%s\","
              "\"batch\":%lld,\"seq\":%lld,\"ckpt\":%s,\"world_size\":%d,\"zero\":%s,\"local_reducer\":%s,\"median_step_s\":%.4f,"
              "\"tokens_per_s\":%.0f,\"peak_gib\":%.2f,\"mfu_vs_790tflops\":%.3f}\n",
              prop.name, shape_name.c_str(), mode.c_str(), static_cast<long long>(batch), static_cast<long long>(seq),
              ckpt ? "true" : "false", world, zero ? "true" : "false", local_reducer ? "true" : "false", median, tokens_per_s, peak_gib,
              tokens_per_s * flops_per_token / (790e12 * world));
  return exit_code;
}
