// The C ABI (temper.h) over the C++ API. Nothing here decides anything about models, data or
// training: each function checks its arguments, converts C values to C++ ones and back, calls
// one C++ function and turns its absl::Status into a code and this thread's last error.
//
// Three pieces of glue exist only because C hosts need them:
// - Shared ownership. The C++ API holds references whose targets must outlive their users (an
//   adapter its model, a trainer its model, data and adapter); C hosts, and garbage collectors
//   above them, destroy handles in any order. So every object lives in a shared block that also
//   holds its parents (own()), and a handle is one shared_ptr to it.
// - Versioned structs: read_options() and write_struct() implement the struct_size rules.
// - The barrier: TEMPER_C_BARRIER wraps every body, so no exception ever reaches C.
#include "temper.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "temper/temper.hpp"
#include "util/strings.hpp"

static_assert(TEMPER_C_VERSION_MAJOR == TEMPER_VERSION_MAJOR && TEMPER_C_VERSION_MINOR == TEMPER_VERSION_MINOR &&
                  TEMPER_C_VERSION_PATCH == TEMPER_VERSION_PATCH,
              "capi/temper.h's TEMPER_C_VERSION_* must follow the project version (CMakeLists.txt)");

// The C enums are the C++ enums' values, so conversion is a range check and a cast.
static_assert(TEMPER_FORMAT_TEXT_LINES == static_cast<int>(temper::SourceFormat::kTextLines) &&
              TEMPER_FORMAT_TEXT_BLOCKS == static_cast<int>(temper::SourceFormat::kTextBlocks) &&
              TEMPER_FORMAT_TEXT_FILES == static_cast<int>(temper::SourceFormat::kTextFiles) &&
              TEMPER_FORMAT_JSONL_TEXT == static_cast<int>(temper::SourceFormat::kJsonlText) &&
              TEMPER_FORMAT_JSONL_INSTRUCTION == static_cast<int>(temper::SourceFormat::kJsonlInstruction) &&
              TEMPER_FORMAT_JSONL_CHAT == static_cast<int>(temper::SourceFormat::kJsonlChat) &&
              TEMPER_FORMAT_TOKEN_SHARD == static_cast<int>(temper::SourceFormat::kTokenShard));
static_assert(TEMPER_MALFORMED_SKIP == static_cast<int>(temper::MalformedPolicy::kSkip) &&
              TEMPER_MALFORMED_FAIL == static_cast<int>(temper::MalformedPolicy::kFail));
static_assert(TEMPER_OBJECTIVE_CONTINUED_PRETRAINING == static_cast<int>(temper::Objective::kContinuedPretraining) &&
              TEMPER_OBJECTIVE_SFT == static_cast<int>(temper::Objective::kSft));
static_assert(TEMPER_EXHAUSTION_RESTART == static_cast<int>(temper::ExhaustionPolicy::kRestart) &&
              TEMPER_EXHAUSTION_RENORMALIZE == static_cast<int>(temper::ExhaustionPolicy::kRenormalize) &&
              TEMPER_EXHAUSTION_STOP == static_cast<int>(temper::ExhaustionPolicy::kStop));
static_assert(TEMPER_OPTIMIZER_ADAMW == static_cast<int>(temper::OptimizerKind::kAdamW) &&
              TEMPER_OPTIMIZER_SGD == static_cast<int>(temper::OptimizerKind::kSgd));
static_assert(TEMPER_SCHEDULE_CONSTANT == static_cast<int>(temper::ScheduleKind::kConstant) &&
              TEMPER_SCHEDULE_LINEAR == static_cast<int>(temper::ScheduleKind::kLinear) &&
              TEMPER_SCHEDULE_COSINE == static_cast<int>(temper::ScheduleKind::kCosine));
static_assert(TEMPER_LORA_INIT_PEFT == static_cast<int>(temper::LoraOptions::Init::kPeft) &&
              TEMPER_LORA_INIT_GAUSSIAN == static_cast<int>(temper::LoraOptions::Init::kGaussian));
static_assert(TEMPER_LOG_INFO == static_cast<int>(temper::LogLevel::kInfo) &&
              TEMPER_LOG_WARNING == static_cast<int>(temper::LogLevel::kWarning));
static_assert(TEMPER_UNAUTHENTICATED == static_cast<int>(absl::StatusCode::kUnauthenticated));

// Handles. Each is one reference to an object kept in a block with its parents.
struct temper_model {
  std::shared_ptr<temper::Model> model;
};
struct temper_tokenizer {
  std::shared_ptr<const temper::Tokenizer> tokenizer;
};
struct temper_lora_adapter {
  std::shared_ptr<temper::LoraAdapter> adapter;  // its block holds the model it is installed on
};
struct temper_source {
  temper::SourceSpec spec;  // holds the records or stream it reads, shared
};
struct temper_data_mixer {
  std::shared_ptr<temper::DataMixer> mixer;
};
struct temper_eval_set {
  temper::EvalSet set;
};
struct temper_trainer {
  std::shared_ptr<temper::Trainer> trainer;
};

namespace temper::capi {
namespace {

// ---- last error and the barrier ----------------------------------------------------------------

thread_local std::string last_message;
thread_local int32_t last_code = TEMPER_OK;
// The C function being run on this thread, prefixed to messages. Nested calls (a callback that
// calls back into the library) restore the outer name when they return.
thread_local const char* current_function = "temper";

int32_t ok() {
  last_code = TEMPER_OK;
  last_message.clear();
  return TEMPER_OK;
}

int32_t fail(const absl::Status& status) {
  if (status.ok()) return ok();
  last_code = static_cast<int32_t>(status.code());
  last_message = str_cat(current_function, ": ", std::string(status.message()));
  return last_code;
}

int32_t fail(absl::StatusCode code, const std::string& message) { return fail(absl::Status(code, message)); }
int32_t invalid(const std::string& message) { return fail(absl::StatusCode::kInvalidArgument, message); }
int32_t null_argument(const char* name) { return invalid(str_cat(name, " is NULL")); }

// What an exception that reached the barrier becomes. Allocation failures must not allocate.
void record_exception() noexcept {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    last_code = TEMPER_RESOURCE_EXHAUSTED;
    last_message.clear();
  } catch (const std::exception& e) {
    last_code = TEMPER_INTERNAL;
    try {
      last_message = str_cat(current_function, ": unexpected exception: ", e.what());
    } catch (...) {
      last_message.clear();
    }
  } catch (...) {
    last_code = TEMPER_INTERNAL;
    try {
      last_message = str_cat(current_function, ": unexpected exception of unknown type");
    } catch (...) {
      last_message.clear();
    }
  }
}

// Runs `body` as C function `function`: a status-returning function answers the code of an
// exception; other functions answer a neutral value (nothing, "", 0).
template <typename R, typename Body>
R barrier(const char* function, Body&& body) noexcept {
  const char* outer = current_function;
  current_function = function;
  struct Restore {
    const char* name;
    ~Restore() { current_function = name; }
  } restore{outer};
  try {
    return body();
  } catch (...) {
    record_exception();
  }
  if constexpr (std::is_same_v<R, int32_t>) {
    return last_code;
  } else if constexpr (std::is_same_v<R, const char*>) {
    return "";
  } else if constexpr (!std::is_void_v<R>) {
    return R{};
  }
}

}  // namespace
}  // namespace temper::capi

// The one barrier: every function of temper.h is `{ TEMPER_C_BARRIER(return_type, { body }); }`.
#define TEMPER_C_BARRIER(R, ...) return ::temper::capi::barrier<R>(__func__, [&]() -> R __VA_ARGS__)

namespace temper::capi {
namespace {

// ---- versioned structs ------------------------------------------------------------------------

constexpr uint32_t kMaxStructSize = 4096;

absl::Status check_struct_size(uint64_t size, const char* type) {
  if (size < 8 || size % 8 != 0 || size > kMaxStructSize) {
    return absl::InvalidArgumentError(str_cat(type, ".struct_size is ", size, "; it must be a multiple of 8 between 8 and ",
                                              kMaxStructSize, " (set it with sizeof, or fill the struct with ",
                                              "its _options_default function)"));
  }
  return absl::OkStatus();
}

// The caller's struct as this library's version: fields within struct_size come from the caller,
// the rest from `defaults`. A newer caller's fields beyond ours must be zero (not asked for).
template <typename T>
absl::StatusOr<T> read_options(const T* in, const char* type, void (*defaults)(T*)) {
  T out;
  defaults(&out);
  if (in == nullptr) return out;
  const uint32_t size = in->struct_size;
  absl::Status status = check_struct_size(size, type);
  if (!status.ok()) return status;
  std::memcpy(&out, in, std::min<size_t>(size, sizeof(T)));
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (size_t i = sizeof(T); i < size; ++i) {
    if (bytes[i] != 0) {
      return absl::InvalidArgumentError(str_cat(type, " has struct_size ", size, " and a non-zero byte at offset ", i,
                                                ": a field this library (", TEMPER_VERSION_STRING, ", ", sizeof(T),
                                                " bytes) does not know is set; use a library at least as new as the header"));
    }
  }
  out.struct_size = sizeof(T);
  return out;
}

// *_options_default: the defaults within struct_size, zeros beyond this library's fields.
template <typename T>
int32_t fill_defaults(T* options, size_t struct_size, const char* type, void (*defaults)(T*)) {
  if (options == nullptr) return null_argument("options");
  absl::Status status = check_struct_size(struct_size, type);
  if (!status.ok()) return fail(status);
  T full;
  defaults(&full);
  std::memcpy(options, &full, std::min(struct_size, sizeof(T)));
  if (struct_size > sizeof(T)) std::memset(reinterpret_cast<unsigned char*>(options) + sizeof(T), 0, struct_size - sizeof(T));
  options->struct_size = static_cast<uint32_t>(struct_size);
  return ok();
}

// An output struct: the fields of `value` that fit the caller's struct_size; fields the caller
// knows and this library does not are zeroed; struct_size becomes what was filled.
template <typename T>
int32_t write_struct(T* out, T value, const char* type) {
  const uint32_t size = out->struct_size;
  absl::Status status = check_struct_size(size, type);
  if (!status.ok()) return fail(status);
  const size_t filled = std::min<size_t>(size, sizeof(T));
  value.struct_size = static_cast<uint32_t>(filled);
  std::memcpy(out, &value, filled);
  if (size > sizeof(T)) std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(T), 0, size - sizeof(T));
  return ok();
}

absl::Status check_reserved(int64_t value, const char* field) {
  if (value != 0) return absl::InvalidArgumentError(str_cat(field, " is reserved and must be 0, not ", value));
  return absl::OkStatus();
}

// ---- buffers ----------------------------------------------------------------------------------

int32_t too_small(size_t size, size_t needed, const char* unit) {
  return fail(absl::StatusCode::kOutOfRange,
              str_cat("the buffer holds ", size, " ", unit, "; ", needed, " needed (see *needed, call again)"));
}

int32_t write_text(char* buffer, size_t size, size_t* needed, std::string_view text) {
  if (buffer == nullptr && size > 0) return invalid(str_cat("buffer is NULL but size is ", size));
  if (needed != nullptr) *needed = text.size() + 1;
  if (size > 0) {
    const size_t n = std::min(size - 1, text.size());
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
  }
  if (size < text.size() + 1) return too_small(size, text.size() + 1, "bytes");
  return ok();
}

int32_t write_ids(int32_t* ids, size_t capacity, size_t* count, const std::vector<TokenId>& values) {
  if (count == nullptr) return null_argument("count");
  if (ids == nullptr && capacity > 0) return invalid(str_cat("the id buffer is NULL but its capacity is ", capacity));
  *count = values.size();
  std::copy_n(values.begin(), std::min(capacity, values.size()), ids);
  if (capacity < values.size()) return too_small(capacity, values.size(), "ids");
  return ok();
}

// ---- conversions ------------------------------------------------------------------------------

std::string string_or(const char* text, const char* fallback) { return text != nullptr ? text : fallback; }

absl::StatusOr<std::vector<std::string>> strings(const char* const* items, size_t count, const char* field) {
  std::vector<std::string> out;
  if (count > 0 && items == nullptr) return absl::InvalidArgumentError(str_cat(field, " is NULL but its count is ", count));
  for (size_t i = 0; i < count; ++i) {
    if (items[i] == nullptr) return absl::InvalidArgumentError(str_cat(field, "[", i, "] is NULL"));
    out.emplace_back(items[i]);
  }
  return out;
}

template <typename Enum>
absl::StatusOr<Enum> enum_from(int32_t value, int32_t last, const char* field) {
  if (value < 0 || value > last) {
    return absl::InvalidArgumentError(str_cat(field, " is ", value, "; it must be between 0 and ", last));
  }
  return static_cast<Enum>(value);
}

absl::StatusOr<at::ScalarType> dtype_from(int32_t dtype, const char* field) {
  switch (dtype) {
    case TEMPER_DTYPE_FLOAT32:
      return at::kFloat;
    case TEMPER_DTYPE_BFLOAT16:
      return at::kBFloat16;
    case TEMPER_DTYPE_FLOAT16:
      return at::kHalf;
    default:
      return absl::InvalidArgumentError(str_cat(field, " is ", dtype, "; use a temper_dtype value"));
  }
}

int32_t dtype_to_c(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? TEMPER_DTYPE_BFLOAT16 : dtype == at::kHalf ? TEMPER_DTYPE_FLOAT16 : TEMPER_DTYPE_FLOAT32;
}

absl::Status status_from_callback(int32_t code, const std::string& what) {
  const absl::StatusCode status_code =
      code > 0 && code <= TEMPER_UNAUTHENTICATED ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(status_code, str_cat(what, " returned ", code, " (", absl::StatusCodeToString(status_code), ")"));
}

// Shared ownership: `value` lives in a block with `parents`, which are released after it.
template <typename T>
struct WithParents {
  std::vector<std::shared_ptr<const void>> parents;
  T value;
};

template <typename T>
std::shared_ptr<T> own(T value, std::vector<std::shared_ptr<const void>> parents = {}) {
  auto block = std::make_shared<WithParents<T>>(WithParents<T>{std::move(parents), std::move(value)});
  return std::shared_ptr<T>(block, &block->value);
}

template <typename T>
std::shared_ptr<T> own(std::unique_ptr<T> value, std::vector<std::shared_ptr<const void>> parents = {}) {
  auto block = std::make_shared<WithParents<std::unique_ptr<T>>>(
      WithParents<std::unique_ptr<T>>{std::move(parents), std::move(value)});
  return std::shared_ptr<T>(block, block->value.get());
}

// A host's callback table as a RecordStream.
class CallbackStream final : public RecordStream {
 public:
  explicit CallbackStream(const temper_source_callbacks& callbacks) : c_(callbacks) {}
  ~CallbackStream() override {
    if (c_.destroy != nullptr) c_.destroy(c_.user_data);
  }
  CallbackStream(const CallbackStream&) = delete;
  CallbackStream& operator=(const CallbackStream&) = delete;

  StatusOr<std::optional<std::string_view>> next() override {
    const char* record = nullptr;
    size_t length = 0;
    int32_t end_of_pass = 0;
    const int32_t code = c_.next(c_.user_data, &record, &length, &end_of_pass);
    if (code != TEMPER_OK) return status_from_callback(code, "the next callback");
    if (end_of_pass != 0) return std::optional<std::string_view>();
    if (record == nullptr && length > 0) return absl::InvalidArgumentError("the next callback gave a NULL record of non-zero length");
    return std::optional<std::string_view>(std::string_view(record == nullptr ? "" : record, length));
  }

  Status rewind() override {
    const int32_t code = c_.rewind(c_.user_data);
    return code == TEMPER_OK ? absl::OkStatus() : status_from_callback(code, "the rewind callback");
  }

  StatusOr<std::optional<std::string>> position() const override {
    if (c_.get_position == nullptr) return std::optional<std::string>();
    const char* text = nullptr;
    size_t length = 0;
    const int32_t code = c_.get_position(c_.user_data, &text, &length);
    if (code != TEMPER_OK) return status_from_callback(code, "the get_position callback");
    return std::optional<std::string>(std::string(text == nullptr ? "" : text, text == nullptr ? 0 : length));
  }

  Status seek(const std::string& position) override {
    const int32_t code = c_.seek(c_.user_data, position.data(), position.size());
    return code == TEMPER_OK ? absl::OkStatus() : status_from_callback(code, "the seek callback");
  }

 private:
  temper_source_callbacks c_;
};

// ---- defaults, from the C++ API's own ---------------------------------------------------------

void model_defaults(temper_model_options* o) {
  const ModelOptions cpp;
  *o = temper_model_options{};
  o->struct_size = sizeof *o;
  o->dtype = dtype_to_c(cpp.dtype);
  o->device_type = cpp.device.is_cuda() ? TEMPER_DEVICE_CUDA : TEMPER_DEVICE_CPU;
  o->quantize = cpp.quantize_nf4 ? TEMPER_QUANTIZE_NF4 : TEMPER_QUANTIZE_NONE;
}

void generation_defaults(temper_generation_options* o) {
  const GenerationOptions cpp;
  *o = temper_generation_options{};
  o->struct_size = sizeof *o;
  o->max_new_tokens = cpp.max_new_tokens;
  o->temperature = cpp.temperature;
  o->top_p = cpp.top_p;
  o->seed = cpp.seed;
}

void perplexity_defaults(temper_perplexity_options* o) {
  const PerplexityOptions cpp;
  *o = temper_perplexity_options{};
  o->struct_size = sizeof *o;
  o->window = cpp.window;
  o->batch_size = cpp.batch_size;
}

void lora_defaults(temper_lora_options* o) {
  const LoraOptions cpp;
  *o = temper_lora_options{};
  o->struct_size = sizeof *o;
  o->init = static_cast<int32_t>(cpp.init);
  o->rank = cpp.rank;
  o->alpha = 0.0;  // = 2 * rank, as the C++ default (an empty optional) means
  o->dropout = cpp.dropout;
  o->use_rslora = cpp.use_rslora;
  o->use_dora = cpp.use_dora;
  o->seed = cpp.seed;
  o->dtype = dtype_to_c(cpp.dtype);
}

void filter_defaults(temper_filter_options* o) {
  const FilterOptions cpp;
  *o = temper_filter_options{};
  o->struct_size = sizeof *o;
  o->check_utf8 = cpp.check_utf8;
  o->check_length = cpp.check_length;
  o->check_repetition = cpp.check_repetition;
  o->check_non_word = cpp.check_non_word;
  o->check_boilerplate = cpp.check_boilerplate;
  o->min_chars = cpp.min_chars;
  o->max_chars = cpp.max_chars;
  o->min_tokens = cpp.min_tokens;
  o->max_tokens = cpp.max_tokens;
  o->max_char_run = cpp.max_char_run;
  o->max_word_run = cpp.max_word_run;
  o->max_top_ngram_fraction = cpp.max_top_ngram_fraction;
  o->max_duplicate_ngram_fraction = cpp.max_duplicate_ngram_fraction;
  o->min_letter_fraction = cpp.min_letter_fraction;
  o->max_symbol_word_ratio = cpp.max_symbol_word_ratio;
  o->max_duplicate_line_fraction = cpp.max_duplicate_line_fraction;
}

void source_defaults(temper_source_options* o) {
  const SourceSpec cpp;
  *o = temper_source_options{};
  o->struct_size = sizeof *o;
  o->format = static_cast<int32_t>(cpp.format);
  o->weight = cpp.weight;
  o->on_malformed = static_cast<int32_t>(cpp.on_malformed);
}

void mixer_defaults(temper_data_mixer_options* o) {
  const MixerOptions cpp;
  *o = temper_data_mixer_options{};
  o->struct_size = sizeof *o;
  o->objective = static_cast<int32_t>(cpp.objective);
  o->batch_size = cpp.batch_size;
  o->seq_len = cpp.seq_len;
  o->on_exhausted = static_cast<int32_t>(cpp.on_exhausted);
  o->add_bos = cpp.add_bos;
  o->add_eos = cpp.add_eos;
  o->dedup_exact = cpp.dedup.exact;
  o->dedup_near = cpp.dedup.near;
  o->dedup_across_sources = cpp.dedup.across_sources;
  o->dedup_shingle_words = cpp.dedup.shingle_words;
  o->dedup_num_permutations = cpp.dedup.num_permutations;
  o->dedup_bands = cpp.dedup.bands;
  o->dedup_threshold = cpp.dedup.threshold;
  o->seed = cpp.seed;
}

void callbacks_defaults(temper_source_callbacks* c) {
  *c = temper_source_callbacks{};
  c->struct_size = sizeof *c;
}

void trainer_defaults(temper_trainer_options* o) {
  const TrainerOptions cpp;
  *o = temper_trainer_options{};
  o->struct_size = sizeof *o;
  o->optimizer = static_cast<int32_t>(cpp.optimizer.kind);
  o->max_steps = cpp.max_steps;
  o->gradient_accumulation_steps = cpp.gradient_accumulation_steps;
  o->lr = cpp.optimizer.lr;
  o->beta1 = cpp.optimizer.beta1;
  o->beta2 = cpp.optimizer.beta2;
  o->eps = cpp.optimizer.eps;
  o->momentum = cpp.optimizer.momentum;
  o->weight_decay = cpp.optimizer.weight_decay;
  o->schedule = static_cast<int32_t>(cpp.schedule.kind);
  o->gradient_checkpointing = cpp.gradient_checkpointing;
  o->warmup_steps = cpp.schedule.warmup_steps;
  o->max_grad_norm = cpp.max_grad_norm;
  o->seed = cpp.seed;
  o->eval_every = cpp.eval_every;
  o->early_stopping_patience = cpp.early_stopping.patience;
  o->early_stopping_min_delta = cpp.early_stopping.min_delta;
  o->max_consecutive_nonfinite = cpp.max_consecutive_nonfinite;
  o->checkpoint_every = cpp.checkpoint_every;
  o->keep_last_checkpoints = cpp.keep_last_checkpoints;
  o->distributed_timeout_ms = temper::DistributedOptions{}.timeout.count();
  o->reduce_gradients_in_fp32 = cpp.reduce_gradients_in_fp32 ? 1 : 0;
}

// ---- C options -> C++ options -----------------------------------------------------------------

absl::StatusOr<SourceSpec> source_spec(const temper_source_options* c_options) {
  absl::StatusOr<temper_source_options> c = read_options(c_options, "temper_source_options", source_defaults);
  if (!c.ok()) return c.status();
  if (c->name == nullptr || c->name[0] == '\0') return absl::InvalidArgumentError("temper_source_options.name is required");
  absl::Status status = check_reserved(c->reserved, "temper_source_options.reserved");
  if (!status.ok()) return status;
  SourceSpec spec;
  spec.name = c->name;
  spec.role = string_or(c->role, spec.role.c_str());
  spec.weight = c->weight;
  absl::StatusOr<SourceFormat> format =
      enum_from<SourceFormat>(c->format, TEMPER_FORMAT_TOKEN_SHARD, "temper_source_options.format");
  if (!format.ok()) return format.status();
  spec.format = *format;
  spec.text_field = string_or(c->text_field, spec.text_field.c_str());
  absl::StatusOr<MalformedPolicy> policy =
      enum_from<MalformedPolicy>(c->on_malformed, TEMPER_MALFORMED_FAIL, "temper_source_options.on_malformed");
  if (!policy.ok()) return policy.status();
  spec.on_malformed = *policy;
  absl::StatusOr<temper_filter_options> f = read_options(c->filters, "temper_filter_options", filter_defaults);
  if (!f.ok()) return f.status();
  FilterOptions& filters = spec.filters;
  filters.check_utf8 = f->check_utf8 != 0;
  filters.check_length = f->check_length != 0;
  filters.check_repetition = f->check_repetition != 0;
  filters.check_non_word = f->check_non_word != 0;
  filters.check_boilerplate = f->check_boilerplate != 0;
  filters.min_chars = f->min_chars;
  filters.max_chars = f->max_chars;
  filters.min_tokens = f->min_tokens;
  filters.max_tokens = f->max_tokens;
  filters.max_char_run = f->max_char_run;
  filters.max_word_run = f->max_word_run;
  filters.max_top_ngram_fraction = f->max_top_ngram_fraction;
  filters.max_duplicate_ngram_fraction = f->max_duplicate_ngram_fraction;
  filters.min_letter_fraction = f->min_letter_fraction;
  filters.max_symbol_word_ratio = f->max_symbol_word_ratio;
  filters.max_duplicate_line_fraction = f->max_duplicate_line_fraction;
  return spec;
}

temper_step_metrics step_to_c(const StepMetrics& m) {
  temper_step_metrics out{};
  out.struct_size = sizeof out;
  out.skipped = m.skipped ? 1 : 0;
  out.step = m.step;
  out.loss = m.loss;
  out.lr = m.lr;
  out.grad_norm = m.grad_norm;
  out.tokens = m.tokens;
  out.tokens_per_second = m.tokens_per_second;
  out.epoch = m.epoch;
  return out;
}

temper_eval_result eval_to_c(const EvalResult& r, int64_t step, const char* name) {
  temper_eval_result out{};
  out.struct_size = sizeof out;
  out.step = step;
  out.name = name;
  out.loss = r.loss;
  out.perplexity = r.perplexity;
  out.loss_delta_from_base = r.loss_delta_from_base;
  out.tokens = r.tokens;
  return out;
}

int32_t stop_reason_to_c(const std::string& reason) {
  if (reason == "early_stopping") return TEMPER_STOP_EARLY_STOPPING;
  if (reason == "requested") return TEMPER_STOP_REQUESTED;
  if (reason == "data_exhausted") return TEMPER_STOP_DATA_EXHAUSTED;
  return TEMPER_STOP_MAX_STEPS;
}

}  // namespace
}  // namespace temper::capi

using namespace temper::capi;  // NOLINT: the C functions below are this file's only content
using temper::str_cat;

// ---- errors, version, logging, devices ---------------------------------------------------------

const char* temper_last_error(void) {
  TEMPER_C_BARRIER(const char*, { return last_message.c_str(); });
}

int32_t temper_last_error_code(void) {
  TEMPER_C_BARRIER(int32_t, { return last_code; });
}

int32_t temper_last_error_copy(char* buffer, size_t size, size_t* needed) {
  // Reports through its return value only: copying the last error must not replace it.
  TEMPER_C_BARRIER(int32_t, {
    if (buffer == nullptr && size > 0) return TEMPER_INVALID_ARGUMENT;
    if (needed != nullptr) *needed = last_message.size() + 1;
    if (size > 0) {
      const size_t n = std::min(size - 1, last_message.size());
      std::memcpy(buffer, last_message.data(), n);
      buffer[n] = '\0';
    }
    return size < last_message.size() + 1 ? TEMPER_OUT_OF_RANGE : TEMPER_OK;
  });
}

const char* temper_status_name(int32_t code) {
  TEMPER_C_BARRIER(const char*, {
    static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                         "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                         "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                         "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    return code >= 0 && code <= TEMPER_UNAUTHENTICATED ? kNames[code] : "";
  });
}

const char* temper_version(void) {
  TEMPER_C_BARRIER(const char*, { return temper::version(); });
}

uint32_t temper_version_number(void) {
  TEMPER_C_BARRIER(uint32_t, { return TEMPER_VERSION_MAJOR * 10000 + TEMPER_VERSION_MINOR * 100 + TEMPER_VERSION_PATCH; });
}

const char* temper_build_info(void) {
  TEMPER_C_BARRIER(const char*, {
    static const std::string info = temper::build_info();
    return info.c_str();
  });
}

int32_t temper_set_log_callback(temper_log_callback callback, void* user_data) {
  TEMPER_C_BARRIER(int32_t, {
    if (callback == nullptr) {
      temper::set_log_sink(nullptr);
    } else {
      temper::set_log_sink([callback, user_data](temper::LogLevel level, std::string_view message) {
        const std::string text(message);
        callback(user_data, static_cast<int32_t>(level), text.c_str());
      });
    }
    return ok();
  });
}

int32_t temper_cuda_device_count(int32_t* count) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    *count = static_cast<int32_t>(temper::cuda_device_count());
    return ok();
  });
}

// ---- model -------------------------------------------------------------------------------------

int32_t temper_model_options_default(temper_model_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_model_options", model_defaults); });
}

int32_t temper_model_load(temper_model** model, const char* dir, const temper_model_options* options) {
  TEMPER_C_BARRIER(int32_t, {
    if (model == nullptr) return null_argument("model");
    if (dir == nullptr) return null_argument("dir");
    auto c = read_options(options, "temper_model_options", model_defaults);
    if (!c.ok()) return fail(c.status());
    if (auto s = check_reserved(c->reserved, "temper_model_options.reserved"); !s.ok()) return fail(s);
    if (c->quantize != TEMPER_QUANTIZE_NONE && c->quantize != TEMPER_QUANTIZE_NF4) {
      return invalid(str_cat("temper_model_options.quantize is ", c->quantize, "; use a temper_quantization value"));
    }
    temper::ModelOptions cpp;
    cpp.quantize_nf4 = c->quantize == TEMPER_QUANTIZE_NF4;  // with bitsandbytes' (QLoRA's) NF4 defaults
    auto dtype = dtype_from(c->dtype, "temper_model_options.dtype");
    if (!dtype.ok()) return fail(dtype.status());
    cpp.dtype = *dtype;
    if (c->device_type == TEMPER_DEVICE_CUDA) {
      // libtorch's device index is 8 bits: a larger one would wrap (found by fuzz_capi_options).
      if (c->device_index < 0 || c->device_index > std::numeric_limits<c10::DeviceIndex>::max()) {
        return invalid(str_cat("temper_model_options.device_index is ", c->device_index));
      }
      cpp.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(c->device_index));
    } else if (c->device_type != TEMPER_DEVICE_CPU) {
      return invalid(str_cat("temper_model_options.device_type is ", c->device_type, "; use a temper_device_type value"));
    }
    auto loaded = temper::Model::load(dir, cpp);
    if (!loaded.ok()) return fail(loaded.status());
    *model = new temper_model{own(std::move(*loaded))};
    return ok();
  });
}

void temper_model_destroy(temper_model* model) {
  TEMPER_C_BARRIER(void, { delete model; });
}

int32_t temper_model_num_parameters(int64_t* count, const temper_model* model) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (model == nullptr) return null_argument("model");
    *count = model->model->num_parameters();
    return ok();
  });
}

int32_t temper_generation_options_default(temper_generation_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_generation_options", generation_defaults); });
}

int32_t temper_model_generate(int32_t* tokens, size_t capacity, size_t* count, const temper_model* model,
                              const int32_t* prompt, size_t prompt_length, const temper_generation_options* options) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (tokens == nullptr && capacity > 0) return invalid(str_cat("tokens is NULL but capacity is ", capacity));
    if (model == nullptr) return null_argument("model");
    if (prompt == nullptr && prompt_length > 0) return null_argument("prompt");
    auto c = read_options(options, "temper_generation_options", generation_defaults);
    if (!c.ok()) return fail(c.status());
    if (auto s = check_reserved(c->reserved, "temper_generation_options.reserved"); !s.ok()) return fail(s);
    if (c->stop_token_ids == nullptr && c->num_stop_token_ids > 0) return null_argument("stop_token_ids");
    temper::GenerationOptions cpp;
    cpp.max_new_tokens = c->max_new_tokens;
    cpp.temperature = c->temperature;
    cpp.top_p = c->top_p;
    cpp.seed = c->seed;
    if (c->num_stop_token_ids > 0) cpp.stop_token_ids.assign(c->stop_token_ids, c->stop_token_ids + c->num_stop_token_ids);
    auto out = temper::generate(*model->model, std::vector<temper::TokenId>(prompt, prompt + prompt_length), cpp);
    if (!out.ok()) return fail(out.status());
    return write_ids(tokens, capacity, count, *out);
  });
}

int32_t temper_perplexity_options_default(temper_perplexity_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_perplexity_options", perplexity_defaults); });
}

int32_t temper_model_perplexity(temper_perplexity_result* result, const temper_model* model, const int32_t* tokens,
                                size_t count, const temper_perplexity_options* options) {
  TEMPER_C_BARRIER(int32_t, {
    if (result == nullptr) return null_argument("result");
    if (model == nullptr) return null_argument("model");
    if (tokens == nullptr && count > 0) return null_argument("tokens");
    auto c = read_options(options, "temper_perplexity_options", perplexity_defaults);
    if (!c.ok()) return fail(c.status());
    if (auto s = check_reserved(c->reserved, "temper_perplexity_options.reserved"); !s.ok()) return fail(s);
    temper::PerplexityOptions cpp;
    cpp.window = c->window;
    cpp.batch_size = c->batch_size;
    if (auto s = check_struct_size(result->struct_size, "temper_perplexity_result"); !s.ok()) return fail(s);
    auto out = temper::evaluate_perplexity(*model->model, std::vector<temper::TokenId>(tokens, tokens + count), cpp);
    if (!out.ok()) return fail(out.status());
    temper_perplexity_result r{};
    r.mean_nll = out->mean_nll;
    r.perplexity = out->perplexity;
    r.tokens = out->tokens;
    return write_struct(result, r, "temper_perplexity_result");
  });
}

int32_t temper_model_export_merged(const temper_model* model, const temper_lora_adapter* adapter, const char* dir,
                                   int32_t dtype) {
  TEMPER_C_BARRIER(int32_t, {
    if (model == nullptr) return null_argument("model");
    if (dir == nullptr) return null_argument("dir");
    auto type = dtype_from(dtype, "dtype");
    if (!type.ok()) return fail(type.status());
    return fail(temper::export_merged_model(*model->model, adapter != nullptr ? adapter->adapter.get() : nullptr, dir, *type));
  });
}

// ---- tokenizer ---------------------------------------------------------------------------------

int32_t temper_tokenizer_load(temper_tokenizer** tokenizer, const char* model_dir) {
  TEMPER_C_BARRIER(int32_t, {
    if (tokenizer == nullptr) return null_argument("tokenizer");
    if (model_dir == nullptr) return null_argument("model_dir");
    auto loaded = temper::load_tokenizer(model_dir);
    if (!loaded.ok()) return fail(loaded.status());
    *tokenizer = new temper_tokenizer{std::shared_ptr<const temper::Tokenizer>(std::move(*loaded))};
    return ok();
  });
}

void temper_tokenizer_destroy(temper_tokenizer* tokenizer) {
  TEMPER_C_BARRIER(void, { delete tokenizer; });
}

int32_t temper_tokenizer_encode(int32_t* ids, size_t capacity, size_t* count, const temper_tokenizer* tokenizer,
                                const char* text, size_t length, uint32_t flags) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (tokenizer == nullptr) return null_argument("tokenizer");
    if (text == nullptr && length > 0) return null_argument("text");
    constexpr uint32_t kKnown = TEMPER_ENCODE_ADD_BOS | TEMPER_ENCODE_ADD_EOS | TEMPER_ENCODE_MODEL_DEFAULTS;
    if ((flags & ~kKnown) != 0 ||
        ((flags & TEMPER_ENCODE_MODEL_DEFAULTS) != 0 && (flags & (TEMPER_ENCODE_ADD_BOS | TEMPER_ENCODE_ADD_EOS)) != 0)) {
      return invalid(str_cat("flags 0x", fmt::format("{:x}", flags),
                             ": use ADD_BOS and/or ADD_EOS, or MODEL_DEFAULTS alone (temper_encode_flags)"));
    }
    const std::string_view view(text == nullptr ? "" : text, length);
    const temper::Tokenizer& t = *tokenizer->tokenizer;
    auto out = (flags & TEMPER_ENCODE_MODEL_DEFAULTS) != 0
                   ? t.encode_for_model(view)
                   : t.encode_with(view, (flags & TEMPER_ENCODE_ADD_BOS) != 0, (flags & TEMPER_ENCODE_ADD_EOS) != 0);
    if (!out.ok()) return fail(out.status());
    return write_ids(ids, capacity, count, *out);
  });
}

int32_t temper_tokenizer_decode(char* text, size_t size, size_t* needed, const temper_tokenizer* tokenizer,
                                const int32_t* ids, size_t count) {
  TEMPER_C_BARRIER(int32_t, {
    if (tokenizer == nullptr) return null_argument("tokenizer");
    if (ids == nullptr && count > 0) return null_argument("ids");
    if (text == nullptr && size > 0) return invalid(str_cat("text is NULL but size is ", size));
    auto out = tokenizer->tokenizer->decode(std::vector<temper::TokenId>(ids, ids + count));
    if (!out.ok()) return fail(out.status());
    return write_text(text, size, needed, *out);
  });
}

int32_t temper_tokenizer_vocab_size(int32_t* size, const temper_tokenizer* tokenizer) {
  TEMPER_C_BARRIER(int32_t, {
    if (size == nullptr) return null_argument("size");
    if (tokenizer == nullptr) return null_argument("tokenizer");
    *size = tokenizer->tokenizer->vocab_size();
    return ok();
  });
}

int32_t temper_tokenizer_special_token(int32_t* id, const temper_tokenizer* tokenizer, int32_t which) {
  TEMPER_C_BARRIER(int32_t, {
    if (id == nullptr) return null_argument("id");
    if (tokenizer == nullptr) return null_argument("tokenizer");
    const temper::SpecialTokens& special = tokenizer->tokenizer->special_tokens();
    const std::optional<temper::TokenId>* token = nullptr;
    switch (which) {
      case TEMPER_TOKEN_BOS: token = &special.bos; break;
      case TEMPER_TOKEN_EOS: token = &special.eos; break;
      case TEMPER_TOKEN_PAD: token = &special.pad; break;
      case TEMPER_TOKEN_UNK: token = &special.unk; break;
      default: return invalid(str_cat("which is ", which, "; use a temper_special_token value"));
    }
    if (!token->has_value()) {
      return fail(absl::StatusCode::kNotFound, str_cat("the tokenizer has no special token ", which, " (temper_special_token)"));
    }
    *id = **token;
    return ok();
  });
}

// ---- LoRA --------------------------------------------------------------------------------------

int32_t temper_lora_options_default(temper_lora_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_lora_options", lora_defaults); });
}

int32_t temper_lora_adapter_create(temper_lora_adapter** adapter, temper_model* model, const temper_lora_options* options) {
  TEMPER_C_BARRIER(int32_t, {
    if (adapter == nullptr) return null_argument("adapter");
    if (model == nullptr) return null_argument("model");
    auto c = read_options(options, "temper_lora_options", lora_defaults);
    if (!c.ok()) return fail(c.status());
    if (auto s = check_reserved(c->reserved, "temper_lora_options.reserved"); !s.ok()) return fail(s);
    temper::LoraOptions cpp;
    cpp.rank = c->rank;
    if (c->alpha != 0.0) cpp.alpha = c->alpha;
    cpp.dropout = c->dropout;
    cpp.use_rslora = c->use_rslora != 0;
    cpp.use_dora = c->use_dora != 0;
    auto targets = strings(c->target_modules, c->num_target_modules, "temper_lora_options.target_modules");
    if (!targets.ok()) return fail(targets.status());
    cpp.target_modules = std::move(*targets);
    auto init = enum_from<temper::LoraOptions::Init>(c->init, TEMPER_LORA_INIT_GAUSSIAN, "temper_lora_options.init");
    if (!init.ok()) return fail(init.status());
    cpp.init = *init;
    cpp.seed = c->seed;
    auto dtype = dtype_from(c->dtype, "temper_lora_options.dtype");
    if (!dtype.ok()) return fail(dtype.status());
    cpp.dtype = *dtype;
    auto created = temper::LoraAdapter::create(*model->model, cpp);
    if (!created.ok()) return fail(created.status());
    *adapter = new temper_lora_adapter{own(std::move(*created), {model->model})};
    return ok();
  });
}

int32_t temper_lora_adapter_load(temper_lora_adapter** adapter, temper_model* model, const char* dir) {
  TEMPER_C_BARRIER(int32_t, {
    if (adapter == nullptr) return null_argument("adapter");
    if (model == nullptr) return null_argument("model");
    if (dir == nullptr) return null_argument("dir");
    auto loaded = temper::LoraAdapter::load(*model->model, dir);
    if (!loaded.ok()) return fail(loaded.status());
    *adapter = new temper_lora_adapter{own(std::move(*loaded), {model->model})};
    return ok();
  });
}

void temper_lora_adapter_destroy(temper_lora_adapter* adapter) {
  TEMPER_C_BARRIER(void, { delete adapter; });
}

int32_t temper_lora_adapter_save(const temper_lora_adapter* adapter, const char* dir, const char* base_model_name_or_path) {
  TEMPER_C_BARRIER(int32_t, {
    if (adapter == nullptr) return null_argument("adapter");
    if (dir == nullptr) return null_argument("dir");
    return fail(adapter->adapter->save(dir, base_model_name_or_path != nullptr ? base_model_name_or_path : ""));
  });
}

int32_t temper_lora_adapter_merge(temper_lora_adapter* adapter) {
  TEMPER_C_BARRIER(int32_t, {
    if (adapter == nullptr) return null_argument("adapter");
    return fail(adapter->adapter->merge());
  });
}

int32_t temper_lora_adapter_unmerge(temper_lora_adapter* adapter) {
  TEMPER_C_BARRIER(int32_t, {
    if (adapter == nullptr) return null_argument("adapter");
    return fail(adapter->adapter->unmerge());
  });
}

int32_t temper_lora_adapter_is_merged(int32_t* merged, const temper_lora_adapter* adapter) {
  TEMPER_C_BARRIER(int32_t, {
    if (merged == nullptr) return null_argument("merged");
    if (adapter == nullptr) return null_argument("adapter");
    *merged = adapter->adapter->merged() ? 1 : 0;
    return ok();
  });
}

int32_t temper_lora_adapter_num_parameters(int64_t* count, const temper_lora_adapter* adapter) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (adapter == nullptr) return null_argument("adapter");
    *count = adapter->adapter->num_parameters();
    return ok();
  });
}

// ---- sources and the mixer ---------------------------------------------------------------------

int32_t temper_filter_options_default(temper_filter_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_filter_options", filter_defaults); });
}

int32_t temper_source_options_default(temper_source_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_source_options", source_defaults); });
}

int32_t temper_source_create_files(temper_source** source, const temper_source_options* options, const char* const* paths,
                                   size_t num_paths) {
  TEMPER_C_BARRIER(int32_t, {
    if (source == nullptr) return null_argument("source");
    if (options == nullptr) return null_argument("options");
    auto spec = source_spec(options);
    if (!spec.ok()) return fail(spec.status());
    auto list = strings(paths, num_paths, "paths");
    if (!list.ok()) return fail(list.status());
    if (list->empty()) return invalid(str_cat("source \"", spec->name, "\": no paths given"));
    spec->paths.assign(list->begin(), list->end());
    *source = new temper_source{std::move(*spec)};
    return ok();
  });
}

int32_t temper_source_create_records(temper_source** source, const temper_source_options* options,
                                     const char* const* records, const size_t* lengths, size_t num_records) {
  TEMPER_C_BARRIER(int32_t, {
    if (source == nullptr) return null_argument("source");
    if (options == nullptr) return null_argument("options");
    if (records == nullptr && num_records > 0) return null_argument("records");
    auto spec = source_spec(options);
    if (!spec.ok()) return fail(spec.status());
    auto copies = std::make_shared<std::vector<std::string>>();
    copies->reserve(num_records);
    for (size_t i = 0; i < num_records; ++i) {
      if (records[i] == nullptr) return invalid(str_cat("records[", i, "] is NULL"));
      copies->emplace_back(records[i], lengths != nullptr ? lengths[i] : std::strlen(records[i]));
    }
    spec->records = std::move(copies);
    *source = new temper_source{std::move(*spec)};
    return ok();
  });
}

int32_t temper_source_create_callbacks(temper_source** source, const temper_source_options* options,
                                       const temper_source_callbacks* callbacks) {
  TEMPER_C_BARRIER(int32_t, {
    if (source == nullptr) return null_argument("source");
    if (options == nullptr) return null_argument("options");
    if (callbacks == nullptr) return null_argument("callbacks");
    auto spec = source_spec(options);
    if (!spec.ok()) return fail(spec.status());
    auto table = read_options(callbacks, "temper_source_callbacks", callbacks_defaults);
    if (!table.ok()) return fail(table.status());
    if (auto s = check_reserved(table->reserved, "temper_source_callbacks.reserved"); !s.ok()) return fail(s);
    if (table->next == nullptr || table->rewind == nullptr) return invalid("temper_source_callbacks needs next and rewind");
    if ((table->get_position == nullptr) != (table->seek == nullptr)) {
      return invalid("temper_source_callbacks: give get_position and seek together, or neither");
    }
    // Made last: from here on the stream owns user_data (its destructor calls destroy).
    spec->stream = std::make_shared<CallbackStream>(*table);
    *source = new temper_source{std::move(*spec)};
    return ok();
  });
}

void temper_source_destroy(temper_source* source) {
  TEMPER_C_BARRIER(void, { delete source; });
}

int32_t temper_data_mixer_options_default(temper_data_mixer_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_data_mixer_options", mixer_defaults); });
}

int32_t temper_data_mixer_create(temper_data_mixer** mixer, const temper_tokenizer* tokenizer,
                                 const temper_data_mixer_options* options, temper_source* const* sources,
                                 size_t num_sources) {
  TEMPER_C_BARRIER(int32_t, {
    if (mixer == nullptr) return null_argument("mixer");
    if (tokenizer == nullptr) return null_argument("tokenizer");
    if (sources == nullptr && num_sources > 0) return null_argument("sources");
    auto c = read_options(options, "temper_data_mixer_options", mixer_defaults);
    if (!c.ok()) return fail(c.status());
    temper::MixerOptions cpp;
    for (size_t i = 0; i < num_sources; ++i) {
      if (sources[i] == nullptr) return invalid(str_cat("sources[", i, "] is NULL"));
      cpp.sources.push_back(sources[i]->spec);
    }
    auto objective = enum_from<temper::Objective>(c->objective, TEMPER_OBJECTIVE_SFT, "temper_data_mixer_options.objective");
    if (!objective.ok()) return fail(objective.status());
    cpp.objective = *objective;
    cpp.batch_size = c->batch_size;
    cpp.seq_len = c->seq_len;
    auto exhausted = enum_from<temper::ExhaustionPolicy>(c->on_exhausted, TEMPER_EXHAUSTION_STOP,
                                                         "temper_data_mixer_options.on_exhausted");
    if (!exhausted.ok()) return fail(exhausted.status());
    cpp.on_exhausted = *exhausted;
    cpp.add_bos = c->add_bos != 0;
    cpp.add_eos = c->add_eos != 0;
    cpp.dedup.exact = c->dedup_exact != 0;
    cpp.dedup.near = c->dedup_near != 0;
    cpp.dedup.across_sources = c->dedup_across_sources != 0;
    cpp.dedup.shingle_words = c->dedup_shingle_words;
    cpp.dedup.num_permutations = c->dedup_num_permutations;
    cpp.dedup.bands = c->dedup_bands;
    cpp.dedup.threshold = c->dedup_threshold;
    cpp.chat_template = string_or(c->chat_template, "");
    cpp.model_dir = string_or(c->model_dir, "");
    cpp.seed = c->seed;
    if (c->schedule == nullptr && c->num_schedule_points > 0) return null_argument("temper_data_mixer_options.schedule");
    for (size_t p = 0; p < c->num_schedule_points; ++p) {
      const temper_share_schedule_point& in = c->schedule[p];
      const std::string field = str_cat("temper_data_mixer_options.schedule[", p, "]");
      if (in.num_weights > 0 && (in.source_names == nullptr || in.weights == nullptr)) {
        return invalid(str_cat(field, ": source_names or weights is NULL but num_weights is ", in.num_weights));
      }
      temper::ShareSchedulePoint point;
      point.at_tokens = in.at_tokens;
      for (size_t i = 0; i < in.num_weights; ++i) {
        if (in.source_names[i] == nullptr) return invalid(str_cat(field, ".source_names[", i, "] is NULL"));
        point.weights[in.source_names[i]] = in.weights[i];
      }
      cpp.schedule.push_back(std::move(point));
    }
    auto created = temper::DataMixer::create(cpp, *tokenizer->tokenizer);
    if (!created.ok()) return fail(created.status());
    *mixer = new temper_data_mixer{own(std::move(*created), {tokenizer->tokenizer})};
    return ok();
  });
}

void temper_data_mixer_destroy(temper_data_mixer* mixer) {
  TEMPER_C_BARRIER(void, { delete mixer; });
}

int32_t temper_data_mixer_report(char* buffer, size_t size, size_t* needed, const temper_data_mixer* mixer) {
  TEMPER_C_BARRIER(int32_t, {
    if (mixer == nullptr) return null_argument("mixer");
    return write_text(buffer, size, needed, mixer->mixer->report().to_json());
  });
}

int32_t temper_data_mixer_save_state(char* buffer, size_t size, size_t* needed, const temper_data_mixer* mixer) {
  TEMPER_C_BARRIER(int32_t, {
    if (mixer == nullptr) return null_argument("mixer");
    return write_text(buffer, size, needed, mixer->mixer->save_state());
  });
}

int32_t temper_data_mixer_restore_state(temper_data_mixer* mixer, const char* state, size_t length) {
  TEMPER_C_BARRIER(int32_t, {
    if (mixer == nullptr) return null_argument("mixer");
    if (state == nullptr) return null_argument("state");
    return fail(mixer->mixer->restore_state(std::string(state, length)));
  });
}

int32_t temper_eval_set_create(temper_eval_set** eval_set, const char* name, temper_data_mixer* mixer, int64_t max_batches) {
  TEMPER_C_BARRIER(int32_t, {
    if (eval_set == nullptr) return null_argument("eval_set");
    if (name == nullptr) return null_argument("name");
    if (mixer == nullptr) return null_argument("mixer");
    auto set = temper::collect_eval_set(name, *mixer->mixer, max_batches);
    if (!set.ok()) return fail(set.status());
    *eval_set = new temper_eval_set{std::move(*set)};
    return ok();
  });
}

int32_t temper_eval_set_num_batches(int64_t* count, const temper_eval_set* eval_set) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (eval_set == nullptr) return null_argument("eval_set");
    *count = static_cast<int64_t>(eval_set->set.batches.size());
    return ok();
  });
}

void temper_eval_set_destroy(temper_eval_set* eval_set) {
  TEMPER_C_BARRIER(void, { delete eval_set; });
}

// ---- trainer -----------------------------------------------------------------------------------

int32_t temper_trainer_options_default(temper_trainer_options* options, size_t struct_size) {
  TEMPER_C_BARRIER(int32_t, { return fill_defaults(options, struct_size, "temper_trainer_options", trainer_defaults); });
}

int32_t temper_trainer_create(temper_trainer** trainer, temper_model* model, temper_data_mixer* data,
                              temper_lora_adapter* adapter, const temper_trainer_options* options) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    if (model == nullptr) return null_argument("model");
    if (data == nullptr) return null_argument("data");
    auto c = read_options(options, "temper_trainer_options", trainer_defaults);
    if (!c.ok()) return fail(c.status());
    temper::TrainerOptions cpp;
    cpp.max_steps = c->max_steps;
    cpp.gradient_accumulation_steps = c->gradient_accumulation_steps;
    auto optimizer = enum_from<temper::OptimizerKind>(c->optimizer, TEMPER_OPTIMIZER_SGD, "temper_trainer_options.optimizer");
    if (!optimizer.ok()) return fail(optimizer.status());
    cpp.optimizer.kind = *optimizer;
    cpp.optimizer.lr = c->lr;
    cpp.optimizer.beta1 = c->beta1;
    cpp.optimizer.beta2 = c->beta2;
    cpp.optimizer.eps = c->eps;
    cpp.optimizer.momentum = c->momentum;
    cpp.optimizer.weight_decay = c->weight_decay;
    auto schedule = enum_from<temper::ScheduleKind>(c->schedule, TEMPER_SCHEDULE_COSINE, "temper_trainer_options.schedule");
    if (!schedule.ok()) return fail(schedule.status());
    cpp.schedule.kind = *schedule;
    cpp.schedule.warmup_steps = c->warmup_steps;
    cpp.max_grad_norm = c->max_grad_norm;
    auto patterns = strings(c->trainable_patterns, c->num_trainable_patterns, "temper_trainer_options.trainable_patterns");
    if (!patterns.ok()) return fail(patterns.status());
    cpp.trainable_patterns = std::move(*patterns);
    cpp.gradient_checkpointing = c->gradient_checkpointing != 0;
    cpp.seed = c->seed;
    if (c->eval_sets == nullptr && c->num_eval_sets > 0) return null_argument("temper_trainer_options.eval_sets");
    for (size_t i = 0; i < c->num_eval_sets; ++i) {
      if (c->eval_sets[i] == nullptr) return invalid(str_cat("temper_trainer_options.eval_sets[", i, "] is NULL"));
      cpp.eval_sets.push_back(c->eval_sets[i]->set);
    }
    cpp.eval_every = c->eval_every;
    cpp.early_stopping.eval_set = string_or(c->early_stopping_eval_set, "");
    cpp.early_stopping.patience = c->early_stopping_patience;
    cpp.early_stopping.min_delta = c->early_stopping_min_delta;
    cpp.max_consecutive_nonfinite = c->max_consecutive_nonfinite;
    cpp.checkpoint_dir = string_or(c->checkpoint_dir, "");
    cpp.checkpoint_every = c->checkpoint_every;
    cpp.keep_last_checkpoints = c->keep_last_checkpoints;
    cpp.metrics_jsonl = string_or(c->metrics_jsonl, "");
    void* user_data = c->callback_user_data;
    if (temper_step_callback on_step = c->on_step) {
      cpp.on_step = [on_step, user_data](const temper::StepMetrics& m) {
        const temper_step_metrics out = step_to_c(m);
        on_step(user_data, &out);
      };
    }
    if (temper_eval_callback on_eval = c->on_eval) {
      // Names the callback sees live as long as the trainer (the function is kept in its options).
      auto names = std::make_shared<std::vector<std::string>>();
      for (const temper::EvalSet& set : cpp.eval_sets) names->push_back(set.name);
      cpp.on_eval = [on_eval, user_data, names](const temper::EvalMetrics& m) {
        for (size_t i = 0; i < m.sets.size(); ++i) {
          const temper_eval_result out = eval_to_c(m.sets[i], m.step, i < names->size() ? (*names)[i].c_str() : "");
          on_eval(user_data, &out, i, m.sets.size());
        }
      };
    }
    if (c->distributed != 0 && c->distributed != 1) {
      return invalid(str_cat("temper_trainer_options.distributed is ", c->distributed, "; expected 0 or 1"));
    }
    if (c->distributed_timeout_ms < 1) {
      return invalid(str_cat("temper_trainer_options.distributed_timeout_ms is ", c->distributed_timeout_ms,
                             "; expected >= 1"));
    }
    if (auto s = check_reserved(c->reserved, "temper_trainer_options.reserved"); !s.ok()) return fail(s);
    if (c->reduce_gradients_in_fp32 != 0 && c->reduce_gradients_in_fp32 != 1) {
      return invalid(str_cat("temper_trainer_options.reduce_gradients_in_fp32 is ", c->reduce_gradients_in_fp32,
                             "; expected 0 or 1"));
    }
    cpp.shard_optimizer_state = c->shard_optimizer_state != 0;
    cpp.reduce_gradients_in_fp32 = c->reduce_gradients_in_fp32 == 1;
    if (c->distributed == 1) {
      temper::DistributedOptions dist;
      dist.timeout = std::chrono::milliseconds(c->distributed_timeout_ms);
      auto comm = temper::Communicator::from_environment(dist, model->model->options().device);
      if (!comm.ok()) return fail(comm.status());
      cpp.communicator = std::move(*comm);
    }
    temper::LoraAdapter* lora = adapter != nullptr ? adapter->adapter.get() : nullptr;
    auto created = temper::Trainer::create(*model->model, *data->mixer, cpp, lora);
    if (!created.ok()) return fail(created.status());
    std::vector<std::shared_ptr<const void>> parents = {model->model, data->mixer};
    if (adapter != nullptr) parents.push_back(adapter->adapter);
    *trainer = new temper_trainer{own(std::move(*created), std::move(parents))};
    return ok();
  });
}

void temper_trainer_destroy(temper_trainer* trainer) {
  TEMPER_C_BARRIER(void, { delete trainer; });
}

int32_t temper_trainer_step(temper_step_metrics* metrics, temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    if (metrics != nullptr) {
      if (auto s = check_struct_size(metrics->struct_size, "temper_step_metrics"); !s.ok()) return fail(s);
    }
    auto step = trainer->trainer->step();
    if (!step.ok()) return fail(step.status());
    return metrics != nullptr ? write_struct(metrics, step_to_c(*step), "temper_step_metrics") : ok();
  });
}

int32_t temper_trainer_train(temper_train_result* result, temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    if (result != nullptr) {
      if (auto s = check_struct_size(result->struct_size, "temper_train_result"); !s.ok()) return fail(s);
    }
    auto trained = trainer->trainer->train();
    if (!trained.ok()) return fail(trained.status());
    if (result == nullptr) return ok();
    temper_train_result out{};
    out.stop_reason = stop_reason_to_c(trained->stop_reason);
    out.steps = trained->steps;
    out.skipped_steps = trained->skipped_steps;
    return write_struct(result, out, "temper_train_result");
  });
}

int32_t temper_trainer_evaluate(temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    return fail(trainer->trainer->evaluate().status());
  });
}

int32_t temper_trainer_save_checkpoint(temper_trainer* trainer, const char* dir) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    if (dir == nullptr) return null_argument("dir");
    return fail(trainer->trainer->save_checkpoint(dir));
  });
}

int32_t temper_trainer_resume(temper_trainer* trainer, const char* dir) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    if (dir == nullptr) return null_argument("dir");
    return fail(trainer->trainer->resume(dir));
  });
}

int32_t temper_trainer_request_stop(temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (trainer == nullptr) return null_argument("trainer");
    trainer->trainer->request_stop();
    return ok();
  });
}

int32_t temper_trainer_global_step(int64_t* step, const temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (step == nullptr) return null_argument("step");
    if (trainer == nullptr) return null_argument("trainer");
    *step = trainer->trainer->global_step();
    return ok();
  });
}

int32_t temper_trainer_last_step_metrics(temper_step_metrics* metrics, const temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (metrics == nullptr) return null_argument("metrics");
    if (trainer == nullptr) return null_argument("trainer");
    const auto& last = trainer->trainer->last_step_metrics();
    if (!last.has_value()) return fail(absl::StatusCode::kNotFound, "no step has been taken yet");
    return write_struct(metrics, step_to_c(*last), "temper_step_metrics");
  });
}

int32_t temper_trainer_evaluation_count(size_t* count, const temper_trainer* trainer) {
  TEMPER_C_BARRIER(int32_t, {
    if (count == nullptr) return null_argument("count");
    if (trainer == nullptr) return null_argument("trainer");
    *count = trainer->trainer->evaluations().size();
    return ok();
  });
}

int32_t temper_trainer_eval_result(temper_eval_result* result, const temper_trainer* trainer, size_t evaluation_index,
                                   size_t set_index) {
  TEMPER_C_BARRIER(int32_t, {
    if (result == nullptr) return null_argument("result");
    if (trainer == nullptr) return null_argument("trainer");
    const std::vector<temper::EvalMetrics>& evaluations = trainer->trainer->evaluations();
    if (evaluation_index >= evaluations.size()) {
      return fail(absl::StatusCode::kOutOfRange,
                  str_cat("evaluation ", evaluation_index, " of ", evaluations.size(), " evaluations"));
    }
    const temper::EvalMetrics& evaluation = evaluations[evaluation_index];
    const std::vector<temper::EvalSet>& sets = trainer->trainer->options().eval_sets;
    if (set_index >= evaluation.sets.size() || set_index >= sets.size()) {
      return fail(absl::StatusCode::kOutOfRange, str_cat("set ", set_index, " of ", evaluation.sets.size(), " eval sets"));
    }
    // The name from the trainer's options: stable while the trainer lives, unlike the copies in
    // the evaluations, which move as the list grows.
    return write_struct(result, eval_to_c(evaluation.sets[set_index], evaluation.step, sets[set_index].name.c_str()),
                        "temper_eval_result");
  });
}
