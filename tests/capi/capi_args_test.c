/* Every function of temper.h called with NULL and invalid arguments: each returns the documented
   status, sets a last error naming the function and the argument, writes no output, and never
   crashes. Also: the struct_size rules (an old, smaller options struct takes the defaults for the
   fields it lacks; a newer, larger one is accepted only when the unknown tail is zero), the
   buffer rules, the status names, and the last error per thread.
   Usage: capi_args_test <repo root> */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* `call` must fail with `code`, and the last error must name both the function and `word`. */
#define CHECK_FAILS(code, word, call)                                                              \
  do {                                                                                             \
    CHECK_STATUS(code, call);                                                                      \
    CHECK(temper_last_error_code() == (code));                                                     \
    if (strstr(temper_last_error(), word) == NULL || strncmp(temper_last_error(), "temper_", 7) != 0) { \
      fprintf(stderr, "%s:%d: last error \"%s\" should start with the function and name \"%s\"\n", \
              __FILE__, __LINE__, temper_last_error(), word);                                      \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

#define CHECK_NULL_ARG(word, call) CHECK_FAILS(TEMPER_INVALID_ARGUMENT, word, call)

static void* poison = (void*)0x1; /* an output that must stay untouched */

/* A loopback TCP port nobody listens on now (the kernel's pick for port 0). */
static int free_port(void) {
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  int port;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, (struct sockaddr*)&addr, sizeof addr) == 0);
  CHECK(getsockname(fd, (struct sockaddr*)&addr, &len) == 0);
  port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

static void* other_thread(void* arg) {
  (void)arg;
  /* A fresh thread has no error, whatever the main thread's is. */
  return (void*)(temper_last_error_code() == TEMPER_OK && temper_last_error()[0] == '\0' ? (void*)1 : NULL);
}

static int32_t dummy_next(void* u, const char** r, size_t* l, int32_t* e) {
  (void)u, (void)r, (void)l;
  *e = 1;
  return TEMPER_OK;
}
static int32_t dummy_rewind(void* u) { (void)u; return TEMPER_OK; }
static int32_t failing_next(void* u, const char** r, size_t* l, int32_t* e) {
  (void)u, (void)r, (void)l, (void)e;
  return TEMPER_DATA_LOSS;
}
static int32_t dummy_get_position(void* u, const char** p, size_t* l) {
  (void)u, (void)p, (void)l;
  return TEMPER_OK;
}

int main(int argc, char** argv) {
  char model_dir[4096], buffer[64];
  temper_model* model = NULL;
  temper_model* out_model = (temper_model*)poison;
  temper_tokenizer* tokenizer = NULL;
  temper_tokenizer* out_tokenizer = (temper_tokenizer*)poison;
  temper_lora_adapter* adapter = NULL;
  temper_lora_adapter* out_adapter = (temper_lora_adapter*)poison;
  temper_source* source = NULL;
  temper_source* out_source = (temper_source*)poison;
  temper_data_mixer* mixer = NULL;
  temper_data_mixer* out_mixer = (temper_data_mixer*)poison;
  temper_eval_set* eval_set = NULL;
  temper_eval_set* out_eval_set = (temper_eval_set*)poison;
  temper_trainer* trainer = NULL;
  temper_trainer* out_trainer = (temper_trainer*)poison;
  temper_model_options mo;
  temper_generation_options go;
  temper_perplexity_options po;
  temper_perplexity_result pr;
  temper_lora_options lo;
  temper_filter_options fo;
  temper_source_options so;
  temper_source_callbacks cb;
  temper_data_mixer_options dmo;
  temper_trainer_options to;
  temper_step_metrics sm;
  temper_eval_result er;
  temper_train_result tr;
  temper_share_schedule_point point;
  const char* record = "The patient rested for a week and the cough slowly cleared without any medicine.";
  const char* null_record[1] = {NULL};
  const char* name_list[1] = {"nope"};
  double weight_list[1] = {1.0};
  int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8}, id = -7, i32 = -7;
  int64_t i64 = -7;
  size_t n = 777;
  pthread_t thread;
  void* thread_ok = NULL;
  unsigned char big[512];

  if (argc != 2) {
    fprintf(stderr, "usage: %s <repo root>\n", argv[0]);
    return 2;
  }
  CHECK(snprintf(model_dir, sizeof model_dir, "%s/assets/model", argv[1]) < (int)sizeof model_dir);

  /* ---- errors, versions, logging: never fail, or fail only on their own arguments ---------- */
  CHECK(strcmp(temper_status_name(TEMPER_OK), "OK") == 0);
  CHECK(strcmp(temper_status_name(TEMPER_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  CHECK(strcmp(temper_status_name(TEMPER_UNAUTHENTICATED), "UNAUTHENTICATED") == 0);
  CHECK(strcmp(temper_status_name(-1), "") == 0 && strcmp(temper_status_name(17), "") == 0);
  CHECK(temper_version() != NULL && temper_version_number() > 0 && temper_build_info()[0] != '\0');
  CHECK_NULL_ARG("count", temper_cuda_device_count(NULL));
  CHECK_OK(temper_set_log_callback(NULL, NULL));

  /* temper_last_error_copy reports through its return value and leaves the last error alone. */
  CHECK_NULL_ARG("count", temper_cuda_device_count(NULL));
  CHECK_STATUS(TEMPER_INVALID_ARGUMENT, temper_last_error_copy(NULL, 4, &n));
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_last_error_copy(NULL, 0, &n));
  CHECK(n == strlen(temper_last_error()) + 1);
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_last_error_copy(buffer, 5, NULL));
  CHECK(strlen(buffer) == 4 && strncmp(buffer, temper_last_error(), 4) == 0);
  CHECK_OK(temper_last_error_copy(buffer, sizeof buffer, NULL));
  CHECK(strcmp(buffer, temper_last_error()) == 0);
  CHECK(temper_last_error_code() == TEMPER_INVALID_ARGUMENT);
  CHECK(pthread_create(&thread, NULL, other_thread, NULL) == 0 && pthread_join(thread, &thread_ok) == 0);
  CHECK(thread_ok != NULL);

  /* ---- destroying NULL does nothing ------------------------------------------------------------ */
  temper_model_destroy(NULL);
  temper_tokenizer_destroy(NULL);
  temper_lora_adapter_destroy(NULL);
  temper_source_destroy(NULL);
  temper_data_mixer_destroy(NULL);
  temper_eval_set_destroy(NULL);
  temper_trainer_destroy(NULL);

  /* ---- *_options_default: NULL, and struct sizes out of the rules -------------------------------- */
  CHECK_NULL_ARG("options", temper_model_options_default(NULL, sizeof mo));
  CHECK_NULL_ARG("options", temper_generation_options_default(NULL, sizeof go));
  CHECK_NULL_ARG("options", temper_perplexity_options_default(NULL, sizeof po));
  CHECK_NULL_ARG("options", temper_lora_options_default(NULL, sizeof lo));
  CHECK_NULL_ARG("options", temper_filter_options_default(NULL, sizeof fo));
  CHECK_NULL_ARG("options", temper_source_options_default(NULL, sizeof so));
  CHECK_NULL_ARG("options", temper_data_mixer_options_default(NULL, sizeof dmo));
  CHECK_NULL_ARG("options", temper_trainer_options_default(NULL, sizeof to));
  CHECK_NULL_ARG("struct_size", temper_model_options_default(&mo, 0));
  CHECK_NULL_ARG("struct_size", temper_model_options_default(&mo, 12));
  CHECK_NULL_ARG("struct_size", temper_trainer_options_default(&to, 8192));
  CHECK_NULL_ARG("struct_size", temper_generation_options_default(&go, 3));
  CHECK_NULL_ARG("struct_size", temper_perplexity_options_default(&po, 1));
  CHECK_NULL_ARG("struct_size", temper_lora_options_default(&lo, 7));
  CHECK_NULL_ARG("struct_size", temper_filter_options_default(&fo, 4));
  CHECK_NULL_ARG("struct_size", temper_source_options_default(&so, 9));
  CHECK_NULL_ARG("struct_size", temper_data_mixer_options_default(&dmo, 4100));

  /* A newer header's larger struct: the unknown tail is zeroed by _default and accepted. */
  memset(big, 0xAB, sizeof big);
  CHECK_OK(temper_lora_options_default((temper_lora_options*)(void*)big, sizeof big));
  CHECK(((temper_lora_options*)(void*)big)->struct_size == sizeof big && ((temper_lora_options*)(void*)big)->rank == 16);
  for (n = sizeof(temper_lora_options); n < sizeof big; ++n) CHECK(big[n] == 0);

  /* ---- model --------------------------------------------------------------------------------- */
  CHECK_NULL_ARG("model", temper_model_load(NULL, model_dir, NULL));
  CHECK_NULL_ARG("dir", temper_model_load(&out_model, NULL, NULL));
  CHECK(out_model == poison);
  CHECK_FAILS(TEMPER_NOT_FOUND, "no_such_model", temper_model_load(&out_model, "/nonexistent/no_such_model", NULL));
  CHECK(out_model == poison);
  CHECK_OK(temper_model_options_default(&mo, sizeof mo));
  mo.dtype = 9;
  CHECK_NULL_ARG("dtype", temper_model_load(&out_model, model_dir, &mo));
  mo.dtype = TEMPER_DTYPE_FLOAT32;
  mo.device_type = 5;
  CHECK_NULL_ARG("device_type", temper_model_load(&out_model, model_dir, &mo));
  mo.device_type = TEMPER_DEVICE_CUDA;
  mo.device_index = -1;
  CHECK_NULL_ARG("device_index", temper_model_load(&out_model, model_dir, &mo));
  mo.device_type = TEMPER_DEVICE_CPU;
  mo.device_index = 0;
  mo.quantize = 3;
  CHECK_NULL_ARG("quantize", temper_model_load(&out_model, model_dir, &mo));
  mo.quantize = TEMPER_QUANTIZE_NONE;
  mo.reserved = 1;
  CHECK_NULL_ARG("reserved", temper_model_load(&out_model, model_dir, &mo));
  mo.reserved = 0;
  mo.struct_size = 20;
  CHECK_NULL_ARG("struct_size", temper_model_load(&out_model, model_dir, &mo));
  CHECK(out_model == poison);
  /* An old header's model options (struct_size and dtype only): the rest take their defaults,
     whatever the bytes beyond struct_size hold. */
  memset(&mo, 0x7F, sizeof mo);
  mo.struct_size = 8;
  mo.dtype = TEMPER_DTYPE_FLOAT32;
  CHECK_OK(temper_model_load(&model, model_dir, &mo));

  CHECK_NULL_ARG("count", temper_model_num_parameters(NULL, model));
  CHECK_NULL_ARG("model", temper_model_num_parameters(&i64, NULL));
  CHECK(i64 == -7);
  CHECK_OK(temper_model_num_parameters(&i64, model));
  CHECK(i64 > 1000000);

  CHECK_OK(temper_generation_options_default(&go, sizeof go));
  CHECK_NULL_ARG("count", temper_model_generate(ids, 8, NULL, model, ids, 3, NULL));
  CHECK_NULL_ARG("tokens", temper_model_generate(NULL, 8, &n, model, ids, 3, NULL));
  CHECK_NULL_ARG("model", temper_model_generate(ids, 8, &n, NULL, ids, 3, NULL));
  CHECK_NULL_ARG("prompt", temper_model_generate(ids, 8, &n, model, NULL, 3, NULL));
  go.reserved = 2;
  CHECK_NULL_ARG("reserved", temper_model_generate(ids, 8, &n, model, ids, 3, &go));
  go.reserved = 0;
  go.num_stop_token_ids = 2;
  CHECK_NULL_ARG("stop_token_ids", temper_model_generate(ids, 8, &n, model, ids, 3, &go));
  go.num_stop_token_ids = 0;
  go.max_new_tokens = 2;
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "prompt", temper_model_generate(ids, 8, &n, model, ids, 0, &go));
  ids[0] = 9000; /* outside the vocabulary */
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "9000", temper_model_generate(ids, 8, &n, model, ids, 3, &go));
  ids[0] = 1;
  CHECK_OK(temper_model_generate(NULL, 0, &n, model, ids, 3, &go) == TEMPER_OUT_OF_RANGE ? TEMPER_OK : TEMPER_UNKNOWN);
  CHECK(n == 2); /* no stop token within two greedy steps of this model: *count says what it takes */

  CHECK_OK(temper_perplexity_options_default(&po, sizeof po));
  pr.struct_size = sizeof pr;
  CHECK_NULL_ARG("result", temper_model_perplexity(NULL, model, ids, 8, NULL));
  CHECK_NULL_ARG("model", temper_model_perplexity(&pr, NULL, ids, 8, NULL));
  CHECK_NULL_ARG("tokens", temper_model_perplexity(&pr, model, NULL, 8, NULL));
  pr.struct_size = 3;
  CHECK_NULL_ARG("struct_size", temper_model_perplexity(&pr, model, ids, 8, NULL));
  pr.struct_size = sizeof pr;
  po.reserved = 1;
  CHECK_NULL_ARG("reserved", temper_model_perplexity(&pr, model, ids, 8, &po));
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "token", temper_model_perplexity(&pr, model, ids, 1, NULL));
  /* An old caller's result struct (struct_size, reserved, mean_nll): filled that far only. */
  memset(&pr, 0x55, sizeof pr);
  pr.struct_size = 16;
  CHECK_OK(temper_model_perplexity(&pr, model, ids, 8, NULL));
  CHECK(pr.struct_size == 16 && pr.mean_nll > 0);
  {
    const unsigned char* bytes = (const unsigned char*)&pr;
    for (n = 16; n < sizeof pr; ++n) CHECK(bytes[n] == 0x55);
  }

  CHECK_NULL_ARG("model", temper_model_export_merged(NULL, NULL, "/tmp/x", TEMPER_DTYPE_FLOAT32));
  CHECK_NULL_ARG("dir", temper_model_export_merged(model, NULL, NULL, TEMPER_DTYPE_FLOAT32));
  CHECK_NULL_ARG("dtype", temper_model_export_merged(model, NULL, "/tmp/x", 42));

  /* ---- tokenizer ----------------------------------------------------------------------------- */
  CHECK_NULL_ARG("tokenizer", temper_tokenizer_load(NULL, model_dir));
  CHECK_NULL_ARG("model_dir", temper_tokenizer_load(&out_tokenizer, NULL));
  CHECK_FAILS(TEMPER_NOT_FOUND, "nowhere", temper_tokenizer_load(&out_tokenizer, "/nowhere"));
  CHECK(out_tokenizer == poison);
  CHECK_OK(temper_tokenizer_load(&tokenizer, model_dir));
  CHECK_NULL_ARG("count", temper_tokenizer_encode(ids, 8, NULL, tokenizer, "a", 1, 0));
  CHECK_NULL_ARG("tokenizer", temper_tokenizer_encode(ids, 8, &n, NULL, "a", 1, 0));
  CHECK_NULL_ARG("text", temper_tokenizer_encode(ids, 8, &n, tokenizer, NULL, 1, 0));
  CHECK_NULL_ARG("capacity", temper_tokenizer_encode(NULL, 8, &n, tokenizer, "a", 1, 0));
  CHECK_NULL_ARG("flags", temper_tokenizer_encode(ids, 8, &n, tokenizer, "a", 1, 8));
  CHECK_NULL_ARG("flags", temper_tokenizer_encode(ids, 8, &n, tokenizer, "a", 1,
                                                  TEMPER_ENCODE_MODEL_DEFAULTS | TEMPER_ENCODE_ADD_BOS));
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "UTF-8", temper_tokenizer_encode(ids, 8, &n, tokenizer, "a\xff", 2, 0));
  CHECK_OK(temper_tokenizer_encode(NULL, 0, &n, tokenizer, NULL, 0, 0));
  CHECK(n == 0);
  CHECK_NULL_ARG("tokenizer", temper_tokenizer_decode(buffer, 8, &n, NULL, ids, 2));
  CHECK_NULL_ARG("ids", temper_tokenizer_decode(buffer, 8, &n, tokenizer, NULL, 2));
  CHECK_NULL_ARG("size", temper_tokenizer_decode(NULL, 8, &n, tokenizer, ids, 2));
  ids[1] = -3;
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "-3", temper_tokenizer_decode(buffer, 8, &n, tokenizer, ids, 2));
  ids[1] = 2;
  CHECK_NULL_ARG("size", temper_tokenizer_vocab_size(NULL, tokenizer));
  CHECK_NULL_ARG("tokenizer", temper_tokenizer_vocab_size(&i32, NULL));
  CHECK(i32 == -7);
  CHECK_NULL_ARG("id", temper_tokenizer_special_token(NULL, tokenizer, TEMPER_TOKEN_BOS));
  CHECK_NULL_ARG("tokenizer", temper_tokenizer_special_token(&id, NULL, TEMPER_TOKEN_BOS));
  CHECK_NULL_ARG("which", temper_tokenizer_special_token(&id, tokenizer, 4));
  CHECK_FAILS(TEMPER_NOT_FOUND, "special token", temper_tokenizer_special_token(&id, tokenizer, TEMPER_TOKEN_PAD));
  CHECK(id == -7);

  /* ---- LoRA ---------------------------------------------------------------------------------- */
  CHECK_NULL_ARG("adapter", temper_lora_adapter_create(NULL, model, NULL));
  CHECK_NULL_ARG("model", temper_lora_adapter_create(&out_adapter, NULL, NULL));
  CHECK_OK(temper_lora_options_default(&lo, sizeof lo));
  lo.init = 2;
  CHECK_NULL_ARG("init", temper_lora_adapter_create(&out_adapter, model, &lo));
  lo.init = TEMPER_LORA_INIT_PEFT;
  lo.dtype = -1;
  CHECK_NULL_ARG("dtype", temper_lora_adapter_create(&out_adapter, model, &lo));
  lo.dtype = TEMPER_DTYPE_FLOAT32;
  lo.num_target_modules = 1;
  CHECK_NULL_ARG("target_modules", temper_lora_adapter_create(&out_adapter, model, &lo));
  lo.target_modules = null_record;
  CHECK_NULL_ARG("target_modules[0]", temper_lora_adapter_create(&out_adapter, model, &lo));
  lo.target_modules = name_list;
  CHECK_NULL_ARG("nope", temper_lora_adapter_create(&out_adapter, model, &lo));
  lo.num_target_modules = 0;
  lo.rank = 0;
  CHECK_NULL_ARG("rank", temper_lora_adapter_create(&out_adapter, model, &lo));
  CHECK(out_adapter == poison);
  CHECK_NULL_ARG("adapter", temper_lora_adapter_load(NULL, model, "/tmp"));
  CHECK_NULL_ARG("model", temper_lora_adapter_load(&out_adapter, NULL, "/tmp"));
  CHECK_NULL_ARG("dir", temper_lora_adapter_load(&out_adapter, model, NULL));
  CHECK_FAILS(TEMPER_NOT_FOUND, "no_adapter_here", temper_lora_adapter_load(&out_adapter, model, "/tmp/no_adapter_here"));
  CHECK(out_adapter == poison);
  /* An old header's LoRA options: struct_size, init and rank only. use_dora and dtype hold
     garbage beyond struct_size, which must not be read: the adapter is a plain fp32 LoRA. */
  memset(&lo, 0x01, sizeof lo);
  lo.struct_size = (uint32_t)offsetof(temper_lora_options, alpha);
  lo.init = TEMPER_LORA_INIT_PEFT;
  lo.rank = 4;
  CHECK_OK(temper_lora_adapter_create(&adapter, model, &lo));
  CHECK_OK(temper_lora_adapter_num_parameters(&i64, adapter));
  CHECK(i64 == 6 * 4 * ((256 + 256) + 2 * (256 + 128) + (256 + 256) + 3 * (256 + 704)));
  CHECK_NULL_ARG("adapter", temper_lora_adapter_save(NULL, "/tmp/x", NULL));
  CHECK_NULL_ARG("dir", temper_lora_adapter_save(adapter, NULL, NULL));
  CHECK_NULL_ARG("adapter", temper_lora_adapter_merge(NULL));
  CHECK_NULL_ARG("adapter", temper_lora_adapter_unmerge(NULL));
  CHECK_NULL_ARG("merged", temper_lora_adapter_is_merged(NULL, adapter));
  CHECK_NULL_ARG("adapter", temper_lora_adapter_is_merged(&i32, NULL));
  CHECK_NULL_ARG("count", temper_lora_adapter_num_parameters(NULL, adapter));
  CHECK_NULL_ARG("adapter", temper_lora_adapter_num_parameters(&i64, NULL));

  /* ---- sources ------------------------------------------------------------------------------- */
  CHECK_OK(temper_source_options_default(&so, sizeof so));
  CHECK_NULL_ARG("source", temper_source_create_records(NULL, &so, &record, NULL, 1));
  CHECK_NULL_ARG("options", temper_source_create_records(&out_source, NULL, &record, NULL, 1));
  CHECK_NULL_ARG("name", temper_source_create_records(&out_source, &so, &record, NULL, 1));
  so.name = "notes";
  CHECK_NULL_ARG("records", temper_source_create_records(&out_source, &so, NULL, NULL, 1));
  CHECK_NULL_ARG("records[0]", temper_source_create_records(&out_source, &so, null_record, NULL, 1));
  so.format = 7;
  CHECK_NULL_ARG("format", temper_source_create_records(&out_source, &so, &record, NULL, 1));
  so.format = TEMPER_FORMAT_TEXT_LINES;
  so.on_malformed = -1;
  CHECK_NULL_ARG("on_malformed", temper_source_create_records(&out_source, &so, &record, NULL, 1));
  so.on_malformed = TEMPER_MALFORMED_SKIP;
  so.reserved = 1;
  CHECK_NULL_ARG("reserved", temper_source_create_records(&out_source, &so, &record, NULL, 1));
  so.reserved = 0;
  fo.struct_size = 2;
  so.filters = &fo;
  CHECK_NULL_ARG("temper_filter_options", temper_source_create_records(&out_source, &so, &record, NULL, 1));
  so.filters = NULL;
  CHECK_NULL_ARG("source", temper_source_create_files(NULL, &so, &record, 1));
  CHECK_NULL_ARG("options", temper_source_create_files(&out_source, NULL, &record, 1));
  CHECK_NULL_ARG("paths", temper_source_create_files(&out_source, &so, NULL, 1));
  CHECK_NULL_ARG("paths", temper_source_create_files(&out_source, &so, &record, 0));
  CHECK_NULL_ARG("paths[0]", temper_source_create_files(&out_source, &so, null_record, 1));
  memset(&cb, 0, sizeof cb);
  cb.struct_size = sizeof cb;
  CHECK_NULL_ARG("source", temper_source_create_callbacks(NULL, &so, &cb));
  CHECK_NULL_ARG("options", temper_source_create_callbacks(&out_source, NULL, &cb));
  CHECK_NULL_ARG("callbacks", temper_source_create_callbacks(&out_source, &so, NULL));
  CHECK_NULL_ARG("next", temper_source_create_callbacks(&out_source, &so, &cb));
  cb.next = dummy_next;
  cb.rewind = dummy_rewind;
  cb.get_position = dummy_get_position;
  CHECK_NULL_ARG("seek", temper_source_create_callbacks(&out_source, &so, &cb));
  cb.get_position = NULL;
  cb.reserved = 1;
  CHECK_NULL_ARG("reserved", temper_source_create_callbacks(&out_source, &so, &cb));
  CHECK(out_source == poison);
  cb.reserved = 0;
  cb.next = failing_next;
  CHECK_OK(temper_source_create_callbacks(&source, &so, &cb));

  /* ---- mixer and eval sets ------------------------------------------------------------------- */
  CHECK_OK(temper_data_mixer_options_default(&dmo, sizeof dmo));
  dmo.batch_size = 1;
  dmo.seq_len = 16;
  CHECK_NULL_ARG("mixer", temper_data_mixer_create(NULL, tokenizer, &dmo, &source, 1));
  CHECK_NULL_ARG("tokenizer", temper_data_mixer_create(&out_mixer, NULL, &dmo, &source, 1));
  CHECK_NULL_ARG("sources", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, NULL, 1));
  CHECK_NULL_ARG("sources[0]", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, (temper_source* const*)null_record, 1));
  CHECK_NULL_ARG("source", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, &source, 0));
  dmo.objective = 2;
  CHECK_NULL_ARG("objective", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, &source, 1));
  dmo.objective = TEMPER_OBJECTIVE_CONTINUED_PRETRAINING;
  dmo.on_exhausted = 3;
  CHECK_NULL_ARG("on_exhausted", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, &source, 1));
  dmo.on_exhausted = TEMPER_EXHAUSTION_STOP;
  dmo.num_schedule_points = 1;
  CHECK_NULL_ARG("schedule", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, &source, 1));
  point.at_tokens = 10;
  point.source_names = name_list;
  point.weights = weight_list;
  point.num_weights = 1;
  dmo.schedule = &point;
  CHECK_NULL_ARG("nope", temper_data_mixer_create(&out_mixer, tokenizer, &dmo, &source, 1));
  CHECK(out_mixer == poison);
  dmo.num_schedule_points = 0;
  CHECK_OK(temper_data_mixer_create(&mixer, tokenizer, &dmo, &source, 1));
  CHECK_NULL_ARG("mixer", temper_data_mixer_report(buffer, sizeof buffer, &n, NULL));
  CHECK_NULL_ARG("size", temper_data_mixer_report(NULL, 5, &n, mixer));
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_data_mixer_report(buffer, sizeof buffer, &n, mixer));
  CHECK(n > sizeof buffer && strlen(buffer) == sizeof buffer - 1);
  CHECK_NULL_ARG("mixer", temper_data_mixer_save_state(buffer, sizeof buffer, &n, NULL));
  CHECK_NULL_ARG("mixer", temper_data_mixer_restore_state(NULL, "{}", 2));
  CHECK_NULL_ARG("state", temper_data_mixer_restore_state(mixer, NULL, 2));
  CHECK_FAILS(TEMPER_INVALID_ARGUMENT, "state", temper_data_mixer_restore_state(mixer, "not json", 8));
  CHECK_NULL_ARG("eval_set", temper_eval_set_create(NULL, "x", mixer, 1));
  CHECK_NULL_ARG("name", temper_eval_set_create(&out_eval_set, NULL, mixer, 1));
  CHECK_NULL_ARG("mixer", temper_eval_set_create(&out_eval_set, "x", NULL, 1));
  CHECK_NULL_ARG("max_batches", temper_eval_set_create(&out_eval_set, "x", mixer, 0));
  /* A host callback's failure becomes the status of the call that asked, naming the callback. */
  CHECK_FAILS(TEMPER_DATA_LOSS, "next callback", temper_eval_set_create(&out_eval_set, "x", mixer, 1));
  CHECK(out_eval_set == poison);
  CHECK_NULL_ARG("count", temper_eval_set_num_batches(NULL, eval_set));
  CHECK_NULL_ARG("eval_set", temper_eval_set_num_batches(&i64, NULL));

  /* ---- trainer ------------------------------------------------------------------------------- */
  CHECK_OK(temper_trainer_options_default(&to, sizeof to));
  CHECK_NULL_ARG("trainer", temper_trainer_create(NULL, model, mixer, adapter, &to));
  CHECK_NULL_ARG("model", temper_trainer_create(&out_trainer, NULL, mixer, adapter, &to));
  CHECK_NULL_ARG("data", temper_trainer_create(&out_trainer, model, NULL, adapter, &to));
  to.optimizer = 2;
  CHECK_NULL_ARG("optimizer", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.optimizer = TEMPER_OPTIMIZER_ADAMW;
  to.schedule = 3;
  CHECK_NULL_ARG("schedule", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.schedule = TEMPER_SCHEDULE_COSINE;
  to.num_trainable_patterns = 1;
  CHECK_NULL_ARG("trainable_patterns", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.num_trainable_patterns = 0;
  to.num_eval_sets = 1;
  CHECK_NULL_ARG("eval_sets", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.eval_sets = (const temper_eval_set* const*)null_record;
  CHECK_NULL_ARG("eval_sets[0]", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.num_eval_sets = 0;
  to.max_steps = -1;
  CHECK_NULL_ARG("max_steps", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.max_steps = 100;
  to.distributed = 2;
  CHECK_NULL_ARG("distributed", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.distributed = 0;
  CHECK(to.reduce_gradients_in_fp32 == 0); /* the default: buckets in the gradients' dtype */
  to.reduce_gradients_in_fp32 = 2;
  CHECK_NULL_ARG("reduce_gradients_in_fp32", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.reduce_gradients_in_fp32 = 0;
  to.reserved = 7;
  CHECK_NULL_ARG("reserved", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  to.reserved = 0;
  to.distributed = 1;
  to.distributed_timeout_ms = 0;
  CHECK_NULL_ARG("distributed_timeout_ms", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  /* torchrun's environment half set: WORLD_SIZE without RANK. */
  to.distributed_timeout_ms = 1500;
  setenv("WORLD_SIZE", "2", 1);
  unsetenv("RANK");
  CHECK_NULL_ARG("RANK", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
  {
    /* Rank 0 of 2 whose peer never arrives: c10d's rendezvous failure reaches the C caller as
       DEADLINE_EXCEEDED naming the rendezvous, after about the timeout, not a hang. */
    char port[16];
    time_t started = time(NULL);
    snprintf(port, sizeof port, "%d", free_port());
    setenv("RANK", "0", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", port, 1);
    CHECK_FAILS(TEMPER_DEADLINE_EXCEEDED, "rendezvous", temper_trainer_create(&out_trainer, model, mixer, adapter, &to));
    CHECK(time(NULL) - started < 30);
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    unsetenv("MASTER_ADDR");
    unsetenv("MASTER_PORT");
  }
  to.distributed = 0;
  CHECK(out_trainer == poison);
  /* An old header's trainer options: up to lr; the rest (callbacks, paths) beyond struct_size are
     garbage that must be ignored. */
  memset(&to, 0x3C, sizeof to);
  CHECK_OK(temper_trainer_options_default(&to, offsetof(temper_trainer_options, beta1)));
  CHECK(to.struct_size == offsetof(temper_trainer_options, beta1) && to.max_steps == 100);
  CHECK(((const unsigned char*)&to)[offsetof(temper_trainer_options, beta1)] == 0x3C);
  to.max_steps = 3;
  CHECK_OK(temper_trainer_create(&trainer, model, mixer, adapter, &to));
  CHECK_NULL_ARG("trainer", temper_trainer_step(&sm, NULL));
  sm.struct_size = 0;
  CHECK_NULL_ARG("struct_size", temper_trainer_step(&sm, trainer));
  CHECK_NULL_ARG("trainer", temper_trainer_train(&tr, NULL));
  tr.struct_size = 1;
  CHECK_NULL_ARG("struct_size", temper_trainer_train(&tr, trainer));
  CHECK_NULL_ARG("trainer", temper_trainer_evaluate(NULL));
  CHECK_NULL_ARG("trainer", temper_trainer_save_checkpoint(NULL, "/tmp/x"));
  CHECK_NULL_ARG("dir", temper_trainer_save_checkpoint(trainer, NULL));
  CHECK_NULL_ARG("trainer", temper_trainer_resume(NULL, "/tmp/x"));
  CHECK_NULL_ARG("dir", temper_trainer_resume(trainer, NULL));
  CHECK_FAILS(TEMPER_NOT_FOUND, "no_checkpoint", temper_trainer_resume(trainer, "/tmp/no_checkpoint"));
  CHECK_NULL_ARG("trainer", temper_trainer_request_stop(NULL));
  CHECK_NULL_ARG("step", temper_trainer_global_step(NULL, trainer));
  CHECK_NULL_ARG("trainer", temper_trainer_global_step(&i64, NULL));
  CHECK_NULL_ARG("metrics", temper_trainer_last_step_metrics(NULL, trainer));
  CHECK_NULL_ARG("trainer", temper_trainer_last_step_metrics(&sm, NULL));
  CHECK_FAILS(TEMPER_NOT_FOUND, "step", temper_trainer_last_step_metrics(&sm, trainer));
  CHECK_NULL_ARG("count", temper_trainer_evaluation_count(NULL, trainer));
  CHECK_NULL_ARG("trainer", temper_trainer_evaluation_count(&n, NULL));
  CHECK_NULL_ARG("result", temper_trainer_eval_result(NULL, trainer, 0, 0));
  CHECK_NULL_ARG("trainer", temper_trainer_eval_result(&er, NULL, 0, 0));
  CHECK_FAILS(TEMPER_OUT_OF_RANGE, "evaluation", temper_trainer_eval_result(&er, trainer, 0, 0));
  /* The failing host source surfaces through step(), with the callback named. */
  sm.struct_size = sizeof sm;
  CHECK_FAILS(TEMPER_DATA_LOSS, "next callback", temper_trainer_step(&sm, trainer));
  CHECK_OK(temper_trainer_request_stop(trainer));
  CHECK_OK(temper_trainer_global_step(&i64, trainer));
  CHECK(i64 == 0);

  temper_trainer_destroy(trainer);
  temper_data_mixer_destroy(mixer);
  temper_source_destroy(source);
  temper_lora_adapter_destroy(adapter);
  temper_tokenizer_destroy(tokenizer);
  temper_model_destroy(model);
  printf("capi_args_test: OK\n");
  return 0;
}
