// The C ABI's versioned options structs (capi/temper.h, "Options structs"): any struct_size, any
// bytes beyond the fields this library knows, any values in the scalar fields. Byte 0 picks the
// struct (model / generation / LoRA options), bytes 1-4 are struct_size, then the scalar fields
// in declaration order, then the tail bytes past sizeof. Pointer fields stay valid (a caller's
// garbage pointer is outside the contract). Every call must return a documented code, never
// TEMPER_INTERNAL, and a struct_size that is not a multiple of 8 in [8, 4096] or a non-zero
// unknown byte must be TEMPER_INVALID_ARGUMENT.
#include <cstring>

#include "fuzz_support.hpp"
#include "temper.h"

namespace {

struct Reader {
  const uint8_t* data;
  size_t size;
  template <typename T>
  T take() {
    T value{};
    const size_t n = std::min(sizeof(T), size);
    std::memcpy(&value, data, n);
    data += n;
    size -= n;
    return value;
  }
};

temper_model* fixture_model() {
  static temper_model* model = [] {
    temper_model* m = nullptr;
    const std::string dir = std::string(TEMPER_SOURCE_DIR) + "/tests/fixtures/parity/llama_gqa";
    if (temper_model_load(&m, dir.c_str(), nullptr) != TEMPER_OK) temper::fuzz::fail(temper_last_error());
    return m;
  }();
  return model;
}

void expect_documented(int32_t code, bool size_ok) {
  if (code == TEMPER_INTERNAL) temper::fuzz::fail(std::string("TEMPER_INTERNAL: ") + temper_last_error());
  if (code < 0 || code > TEMPER_INTERNAL + 3) temper::fuzz::fail("an undocumented status code");
  if (!size_ok && code != TEMPER_INVALID_ARGUMENT) temper::fuzz::fail("a bad struct_size was not INVALID_ARGUMENT");
}

// The struct in a zeroed buffer as large as any struct_size the library accepts.
template <typename T>
T* prepare(unsigned char* buffer, size_t buffer_size, uint32_t struct_size, int32_t (*defaults)(T*, size_t),
           bool* size_ok, bool* tail_zero) {
  std::memset(buffer, 0, buffer_size);
  T* options = reinterpret_cast<T*>(buffer);
  if (defaults(options, sizeof(T)) != TEMPER_OK) temper::fuzz::fail("defaults failed");
  *size_ok = struct_size >= 8 && struct_size % 8 == 0 && struct_size <= 4096;
  *tail_zero = true;
  return options;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  Reader in{data + 5, size - 5};
  const uint8_t kind = data[0] % 3;
  uint32_t struct_size;
  std::memcpy(&struct_size, data + 1, 4);
  alignas(8) static unsigned char buffer[8192];
  bool size_ok = false;
  bool tail_zero = true;
  auto fill_tail = [&](size_t known) {
    // Bytes past this library's struct, up to struct_size: from the input (zero when it ends).
    for (size_t i = known; i < std::min<size_t>(struct_size, sizeof buffer); ++i) {
      buffer[i] = in.take<uint8_t>();
      tail_zero = tail_zero && buffer[i] == 0;
    }
  };
  if (kind == 0) {
    auto* o = prepare<temper_model_options>(buffer, sizeof buffer, struct_size, temper_model_options_default,
                                            &size_ok, &tail_zero);
    o->dtype = in.take<int32_t>();
    o->device_type = in.take<int32_t>();
    o->device_index = in.take<int32_t>();
    o->quantize = in.take<int32_t>();
    o->reserved = in.take<int32_t>();
    fill_tail(sizeof *o);
    o->struct_size = struct_size;
    temper_model* model = nullptr;
    const std::string dir = std::string(TEMPER_SOURCE_DIR) + "/tests/fixtures/parity/llama_gqa";
    const int32_t code = temper_model_load(&model, dir.c_str(), o);
    expect_documented(code, size_ok && tail_zero);
    if (code == TEMPER_OK) temper_model_destroy(model);
  } else if (kind == 1) {
    auto* o = prepare<temper_generation_options>(buffer, sizeof buffer, struct_size,
                                                 temper_generation_options_default, &size_ok, &tail_zero);
    o->reserved = in.take<uint32_t>();
    // Bounded so that one input stays fast; negative and zero values stay possible.
    o->max_new_tokens = in.take<int64_t>();
    if (o->max_new_tokens > 8) o->max_new_tokens %= 9;
    o->temperature = in.take<double>();
    o->top_p = in.take<double>();
    o->seed = in.take<uint64_t>();
    const uint8_t stops = in.take<uint8_t>() % 4;
    static int32_t stop_ids[3];
    for (uint8_t i = 0; i < stops && i < 3; ++i) stop_ids[i] = in.take<int32_t>();
    o->stop_token_ids = stops == 0 ? nullptr : stop_ids;
    o->num_stop_token_ids = stops == 0 ? 0 : std::min<size_t>(stops, 3);
    fill_tail(sizeof *o);
    o->struct_size = struct_size;
    const int32_t prompt[3] = {1, 5, 9};
    int32_t tokens[16];
    size_t count = 0;
    const size_t capacity = in.take<uint8_t>() % 17;
    const int32_t code = temper_model_generate(tokens, capacity, &count, fixture_model(), prompt, 3, o);
    expect_documented(code, size_ok && tail_zero);
  } else {
    auto* o = prepare<temper_lora_options>(buffer, sizeof buffer, struct_size, temper_lora_options_default,
                                           &size_ok, &tail_zero);
    o->init = in.take<int32_t>();
    o->rank = in.take<int64_t>() % 64;  // bounded: a rank of 2^40 is a legitimate out-of-memory
    o->alpha = in.take<double>();
    o->dropout = in.take<double>();
    o->use_rslora = in.take<int32_t>();
    o->use_dora = in.take<int32_t>();
    static const char* const names[] = {"q_proj", "v_proj", "mlp.down_proj", "nothing", ".*", "layers.0.self_attn.o_proj"};
    const uint8_t n = in.take<uint8_t>() % 4;
    static const char* chosen[3];
    for (uint8_t i = 0; i < n && i < 3; ++i) chosen[i] = names[in.take<uint8_t>() % 6];
    o->target_modules = n == 0 ? nullptr : chosen;
    o->num_target_modules = n == 0 ? 0 : std::min<size_t>(n, 3);
    o->seed = in.take<uint64_t>();
    o->dtype = in.take<int32_t>();
    o->reserved = in.take<int32_t>();
    fill_tail(sizeof *o);
    o->struct_size = struct_size;
    temper_lora_adapter* adapter = nullptr;
    const int32_t code = temper_lora_adapter_create(&adapter, fixture_model(), o);
    expect_documented(code, size_ok && tail_zero);
    if (code == TEMPER_OK) temper_lora_adapter_destroy(adapter);
  }
  return 0;
}
