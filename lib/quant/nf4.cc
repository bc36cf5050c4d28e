// NF4 quantization: the ATen reference (CPU, and any device ATen runs on) and the serialised
// form. CUDA tensors go to the kernels in lib/kernels/nf4.cu when temper is built with CUDA.
#include <ATen/core/grad_mode.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "io/json_file.hpp"
#include "quant/nf4_codebook.hpp"
#include "quant/nf4_ops.hpp"
#include "temper/nf4_quantizer.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

bool supported_blocksize(int64_t b) {
  for (int64_t ok : {32, 64, 128, 256, 512, 1024, 2048, 4096}) {
    if (b == ok) return true;
  }
  return false;
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kFloat: return "float32";
    default: return nullptr;
  }
}

std::optional<at::ScalarType> dtype_from_name(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32") return at::kFloat;
  return std::nullopt;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t QuantState::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t QuantState::nbytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&packed, &absmax, &quant_map, &nested_absmax, &nested_quant_map}) {
    if (t->defined()) total += t->numel() * t->element_size();
  }
  return total;
}

at::Tensor Nf4Quantizer::nf4_levels() { return at::tensor(std::vector<float>(kNf4Levels.begin(), kNf4Levels.end())); }

at::Tensor Nf4Quantizer::dynamic_map() {
  // bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each
  // exponent i, the midpoints of linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), both signs, plus
  // 0 and 1, sorted. ATen's linspace and fp32 arithmetic give the same fp32 values as torch.
  at::NoGradGuard no_grad;
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const at::Tensor boundaries = at::linspace(0.1, 1.0, (int64_t{1} << i) + 1, at::kFloat);
    const at::Tensor means = (boundaries.narrow(0, 0, boundaries.size(0) - 1) + boundaries.narrow(0, 1, boundaries.size(0) - 1)) / 2.0;
    const double scale = std::pow(10.0, -6 + i);
    const at::Tensor pos = means * scale;
    const at::Tensor neg = means * -scale;
    for (const at::Tensor* t : {&pos, &neg}) {
      const float* p = t->data_ptr<float>();
      data.insert(data.end(), p, p + t->numel());
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  return at::tensor(data);
}

StatusOr<QuantState> Nf4Quantizer::quantize(const at::Tensor& w, const Nf4Options& options) {
  if (!w.defined() || !at::isFloatingType(w.scalar_type()) || w.numel() == 0) {
    return absl::InvalidArgumentError("Nf4Quantizer: the weight must be a non-empty floating-point tensor");
  }
  if (!dtype_name(w.scalar_type())) {
    return absl::InvalidArgumentError(str_cat("Nf4Quantizer: dtype ", c10::toString(w.scalar_type()),
                                              " (use float32, bfloat16 or float16)"));
  }
  if (!supported_blocksize(options.blocksize)) {
    return absl::InvalidArgumentError(str_cat("Nf4Quantizer: block size ", options.blocksize,
                                              " is not one bitsandbytes supports (32, 64, ..., 4096)"));
  }
  if (options.double_quant && options.nested_blocksize != 256) {
    return absl::UnimplementedError("Nf4Quantizer: double quantization uses bitsandbytes' block of 256");
  }
  return guarded("Nf4Quantizer::quantize", [&]() -> StatusOr<QuantState> {
    at::NoGradGuard no_grad;
    const at::Tensor finite = at::isfinite(w);
    if (!finite.all().item<bool>()) {
      const int64_t index = finite.logical_not().flatten().nonzero()[0].item<int64_t>();
      return absl::InvalidArgumentError(str_cat("Nf4Quantizer: the weight holds a non-finite value at flat index ",
                                                index, "; quantization would spread it over its whole block"));
    }
    QuantState state;
    state.blocksize = options.blocksize;
    state.shape = w.sizes().vec();
    state.dtype = w.scalar_type();
    state.quant_map = nf4_levels().to(w.device());
    at::Tensor absmax;
    std::tie(state.packed, absmax) = nf4_quantize_blocks(w.detach(), options.blocksize);
    if (!options.double_quant) {
      state.absmax = absmax;
      return state;
    }
    state.nested_blocksize = options.nested_blocksize;
    state.nested_offset = absmax.mean().item<double>();
    state.nested_quant_map = dynamic_map().to(w.device());
    std::tie(state.absmax, state.nested_absmax) = quantize_blockwise_8bit(
        absmax - static_cast<float>(state.nested_offset), state.nested_quant_map, options.nested_blocksize);
    return state;
  });
}

StatusOr<at::Tensor> Nf4Quantizer::dequantize(const QuantState& state, std::optional<at::ScalarType> dtype) {
  const at::ScalarType out = dtype.value_or(state.dtype);
  if (!dtype_name(out)) return absl::InvalidArgumentError("Nf4Quantizer::dequantize: dtype must be fp32, bf16 or fp16");
  return guarded("Nf4Quantizer::dequantize", [&]() -> StatusOr<at::Tensor> {
    at::NoGradGuard no_grad;
    if (state.double_quant()) {
      return nf4_dequantize_nested_blocks(state.packed, state.absmax, state.nested_absmax, state.nested_quant_map,
                                          static_cast<float>(state.nested_offset), state.quant_map, state.blocksize,
                                          state.nested_blocksize, state.numel(), out)
          .view(state.shape);
    }
    return nf4_dequantize_blocks(state.packed, state.absmax, state.quant_map, state.blocksize, state.numel(), out)
        .view(state.shape);
  });
}

std::vector<std::pair<std::string, at::Tensor>> Nf4Quantizer::to_tensors(const QuantState& state, const std::string& prefix) {
  nlohmann::ordered_json meta = {{"quant_type", "nf4"}, {"blocksize", state.blocksize},
                                 {"dtype", dtype_name(state.dtype)}, {"shape", state.shape}};
  std::vector<std::pair<std::string, at::Tensor>> out = {{prefix + ".weight", state.packed},
                                                         {prefix + ".weight.absmax", state.absmax},
                                                         {prefix + ".weight.quant_map", state.quant_map}};
  if (state.double_quant()) {
    meta["nested_blocksize"] = state.nested_blocksize;
    meta["nested_dtype"] = "float32";
    meta["nested_offset"] = state.nested_offset;
    out.emplace_back(prefix + ".weight.nested_absmax", state.nested_absmax);
    out.emplace_back(prefix + ".weight.nested_quant_map", state.nested_quant_map);
  }
  const std::string json = meta.dump();
  at::Tensor bytes = at::empty({static_cast<int64_t>(json.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), json.data(), json.size());
  out.emplace_back(prefix + ".weight.quant_state.bitsandbytes__nf4", bytes);
  return out;
}

StatusOr<QuantState> Nf4Quantizer::from_tensors(const std::function<StatusOr<at::Tensor>(const std::string&)>& lookup,
                                                const std::string& prefix) {
  const std::string base = prefix + ".weight";
  absl::StatusOr<at::Tensor> meta_bytes = lookup(base + ".quant_state.bitsandbytes__nf4");
  if (!meta_bytes.ok()) {
    absl::StatusOr<at::Tensor> fp4 = lookup(base + ".quant_state.bitsandbytes__fp4");
    if (fp4.ok()) return absl::UnimplementedError(str_cat(base, ": bitsandbytes fp4 is not supported (nf4 only)"));
    return meta_bytes.status();
  }
  if (meta_bytes->scalar_type() != at::kByte || meta_bytes->dim() != 1) {
    return absl::InvalidArgumentError(str_cat(base, ".quant_state.bitsandbytes__nf4 must be uint8 bytes of JSON"));
  }
  const at::Tensor contiguous = meta_bytes->contiguous().cpu();
  const std::string text(static_cast<const char*>(contiguous.data_ptr()), static_cast<size_t>(contiguous.numel()));
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json meta, parse_json(text, base + ".quant_state"));
  const std::string where = base + " quant_state";
  TEMPER_ASSIGN_OR_RETURN(std::string quant_type, json_string(meta, "quant_type", where));
  if (quant_type != "nf4") return absl::UnimplementedError(str_cat(where, ": quant_type \"", quant_type, "\" (nf4 only)"));
  QuantState s;
  TEMPER_ASSIGN_OR_RETURN(s.blocksize, json_int(meta, "blocksize", where));
  if (!supported_blocksize(s.blocksize)) return absl::InvalidArgumentError(str_cat(where, ": unsupported blocksize ", s.blocksize));
  TEMPER_ASSIGN_OR_RETURN(std::string dtype, json_string(meta, "dtype", where));
  const std::optional<at::ScalarType> type = dtype_from_name(dtype);
  if (!type) return absl::InvalidArgumentError(str_cat(where, ": unsupported dtype \"", dtype, "\""));
  s.dtype = *type;
  if (!meta.contains("shape") || !meta["shape"].is_array() || meta["shape"].empty()) {
    return absl::InvalidArgumentError(str_cat(where, ": missing shape"));
  }
  int64_t n = 1;
  for (const auto& d : meta["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(str_cat(where, ": invalid shape ", json_preview(meta["shape"])));
    }
    // Bounded as it grows, so the product never overflows (2^40 x 2^40 would).
    if (n > (int64_t{1} << 40) / d.get<int64_t>()) {
      return absl::InvalidArgumentError(str_cat(where, ": shape ", json_preview(meta["shape"]), " too large"));
    }
    n *= d.get<int64_t>();
    s.shape.push_back(d.get<int64_t>());
  }
  const int64_t blocks = ceil_div(n, s.blocksize);
  const bool nested = meta.contains("nested_offset");

  auto fetch = [&](const std::string& name, at::ScalarType want, int64_t numel) -> StatusOr<at::Tensor> {
    TEMPER_ASSIGN_OR_RETURN(at::Tensor t, lookup(name));
    if (t.scalar_type() != want || t.numel() != numel) {
      return absl::InvalidArgumentError(str_cat(name, ": expected ", c10::toString(want), " with ", numel,
                                                " elements for shape ", json_preview(meta["shape"]), ", found ",
                                                c10::toString(t.scalar_type()), " with ", t.numel()));
    }
    return t;
  };
  TEMPER_ASSIGN_OR_RETURN(s.packed, fetch(base, at::kByte, ceil_div(n, 2)));
  s.packed = s.packed.reshape({ceil_div(n, 2), 1});
  TEMPER_ASSIGN_OR_RETURN(s.quant_map, fetch(base + ".quant_map", at::kFloat, 16));
  if (!nested) {
    TEMPER_ASSIGN_OR_RETURN(s.absmax, fetch(base + ".absmax", at::kFloat, blocks));
    return s;
  }
  TEMPER_ASSIGN_OR_RETURN(s.nested_offset, json_number(meta, "nested_offset", where));
  TEMPER_ASSIGN_OR_RETURN(s.nested_blocksize, json_int(meta, "nested_blocksize", where));
  if (s.nested_blocksize != 256) return absl::UnimplementedError(str_cat(where, ": nested_blocksize must be 256"));
  TEMPER_ASSIGN_OR_RETURN(s.absmax, fetch(base + ".absmax", at::kByte, blocks));
  TEMPER_ASSIGN_OR_RETURN(s.nested_absmax, fetch(base + ".nested_absmax", at::kFloat, ceil_div(blocks, s.nested_blocksize)));
  TEMPER_ASSIGN_OR_RETURN(s.nested_quant_map, fetch(base + ".nested_quant_map", at::kFloat, 256));
  return s;
}

}  // namespace temper
