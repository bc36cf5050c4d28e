/* A whole LoRA fine-tuning run through the C ABI alone, on the bundled model (assets/model):
   sources of all three kinds (a file, records in memory, host callbacks), a mixer, a held-out
   set, an adapter, a trainer with callbacks, checkpoint and exact resume, adapter save and load,
   merge, merged export, and handles destroyed in an order other than creation's.

   The references are independent of the code under test: a trainer resumed from a checkpoint
   must reproduce the uninterrupted run's next loss bit for bit; a saved and reloaded adapter, a
   merged adapter and an exported merged model must all score a text as the trained adapter does;
   the held-out loss must fall below the base model's. Usage: capi_run_test <repo root> <scratch dir> */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"

static char model_dir[4096];
static char notes_path[4096];
static char scratch[4096];
static char checkpoint_dir[4200], adapter_dir[4200], merged_dir[4200], file_path[4400];

/* dir + "/" + name in a buffer of its own (each call site passes one). */
static const char* join(char* out, size_t size, const char* dir, const char* name) {
  int n = snprintf(out, size, "%s/%s", dir, name);
  CHECK(n > 0 && (size_t)n < size);
  return out;
}

static int exists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The bundled clinical notes, one record per line. */
static char* notes_text;
static const char* notes[64];
static size_t num_notes;

static void read_notes(void) {
  FILE* f = fopen(notes_path, "rb");
  long size;
  char* line;
  CHECK(f != NULL);
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  notes_text = (char*)malloc((size_t)size + 1);
  CHECK(fread(notes_text, 1, (size_t)size, f) == (size_t)size);
  notes_text[size] = '\0';
  fclose(f);
  for (line = strtok(notes_text, "\n"); line != NULL && num_notes < 64; line = strtok(NULL, "\n")) notes[num_notes++] = line;
  CHECK(num_notes >= 30);
}

/* ---- a host-implemented source: the notes backwards, with positions ------------------------- */

typedef struct {
  size_t next;         /* index into the reversed notes */
  char position[32];
  int destroyed;       /* set by destroy; checked after every owner is gone */
} reversed_notes;

static int32_t reversed_next(void* user_data, const char** record, size_t* length, int32_t* end_of_pass) {
  reversed_notes* r = (reversed_notes*)user_data;
  if (r->next >= num_notes) {
    *end_of_pass = 1;
    return TEMPER_OK;
  }
  *record = notes[num_notes - 1 - r->next];
  *length = strlen(*record);
  r->next++;
  return TEMPER_OK;
}

static int32_t reversed_rewind(void* user_data) {
  ((reversed_notes*)user_data)->next = 0;
  return TEMPER_OK;
}

static int32_t reversed_get_position(void* user_data, const char** position, size_t* length) {
  reversed_notes* r = (reversed_notes*)user_data;
  snprintf(r->position, sizeof r->position, "%zu", r->next);
  *position = r->position;
  *length = strlen(r->position);
  return TEMPER_OK;
}

static int32_t reversed_seek(void* user_data, const char* position, size_t length) {
  char text[32];
  if (length == 0 || length >= sizeof text) return TEMPER_INVALID_ARGUMENT;
  memcpy(text, position, length);
  text[length] = '\0';
  ((reversed_notes*)user_data)->next = (size_t)strtoul(text, NULL, 10);
  return TEMPER_OK;
}

static void reversed_destroy(void* user_data) { ((reversed_notes*)user_data)->destroyed++; }

/* ---- callbacks ------------------------------------------------------------------------------ */

typedef struct {
  double losses[64];
  int64_t steps[64];
  int count;
  int64_t stop_at;              /* request a stop after this step (0: never) */
  temper_trainer* trainer;      /* for request_stop and readouts inside the callback */
  int eval_calls;
  double last_eval_delta;
  /* request_stop from another thread at this step (0: never): the step callback hands over to
     `stopper` and waits until it has called temper_trainer_request_stop. */
  int64_t stop_from_thread_at;
  pthread_t stopper;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int stage; /* 0 waiting, 1 the step is done, 2 the stop is requested */
} progress;

static void* stop_from_thread(void* arg) {
  progress* p = (progress*)arg;
  pthread_mutex_lock(&p->lock);
  while (p->stage < 1) pthread_cond_wait(&p->changed, &p->lock);
  pthread_mutex_unlock(&p->lock);
  CHECK(temper_trainer_request_stop(p->trainer) == TEMPER_OK);
  pthread_mutex_lock(&p->lock);
  p->stage = 2;
  pthread_cond_broadcast(&p->changed);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static void on_step(void* user_data, const temper_step_metrics* m) {
  progress* p = (progress*)user_data;
  temper_step_metrics again;
  CHECK(m->struct_size == sizeof *m);
  CHECK(!m->skipped && isfinite(m->loss) && m->tokens > 0 && m->lr > 0);
  if (p->count < 64) {
    p->losses[p->count] = m->loss;
    p->steps[p->count] = m->step;
    p->count++;
  }
  /* Readouts work from inside a callback and agree with what the callback is told. */
  if (p->trainer != NULL) {
    again.struct_size = sizeof again;
    CHECK_OK(temper_trainer_last_step_metrics(&again, p->trainer));
    CHECK(again.step == m->step && again.loss == m->loss);
    if (p->stop_at > 0 && m->step == p->stop_at) CHECK_OK(temper_trainer_request_stop(p->trainer));
    if (p->stop_from_thread_at > 0 && m->step == p->stop_from_thread_at) {
      pthread_mutex_lock(&p->lock);
      p->stage = 1;
      pthread_cond_broadcast(&p->changed);
      while (p->stage < 2) pthread_cond_wait(&p->changed, &p->lock);
      pthread_mutex_unlock(&p->lock);
    }
  }
}

static void on_eval(void* user_data, const temper_eval_result* r, size_t index, size_t count) {
  progress* p = (progress*)user_data;
  CHECK(count == 1 && index == 0);
  CHECK(strcmp(r->name, "held_out") == 0);
  CHECK(isfinite(r->loss) && r->perplexity > 1.0 && r->tokens > 0);
  p->eval_calls++;
  p->last_eval_delta = r->loss_delta_from_base;
}

static int log_messages;
static void on_log(void* user_data, int32_t level, const char* message) {
  (void)user_data;
  CHECK(level == TEMPER_LOG_INFO || level == TEMPER_LOG_WARNING);
  CHECK(message != NULL && message[0] != '\0');
  log_messages++;
}

/* ---- building blocks ------------------------------------------------------------------------ */

static temper_source* records_source(const char* name, const char* role, double weight) {
  temper_source_options o;
  temper_source* source = NULL;
  CHECK_OK(temper_source_options_default(&o, sizeof o));
  o.name = name;
  o.role = role;
  o.weight = weight;
  CHECK_OK(temper_source_create_records(&source, &o, notes, NULL, num_notes));
  return source;
}

/* The three training sources at 1 : 1 : 2 from the first token on (their own weights are 1 each). */
static const char* schedule_names[3] = {"notes_file", "notes_memory", "notes_reversed"};
static const double schedule_weights[3] = {1.0, 1.0, 2.0};
static const temper_share_schedule_point schedule = {0, schedule_names, schedule_weights, 3};

static temper_data_mixer* make_mixer(const temper_tokenizer* tokenizer, temper_source* const* sources, size_t n,
                                     int32_t on_exhausted) {
  temper_data_mixer_options o;
  temper_data_mixer* mixer = NULL;
  CHECK_OK(temper_data_mixer_options_default(&o, sizeof o));
  if (n == 3) {
    o.schedule = &schedule;
    o.num_schedule_points = 1;
  }
  o.batch_size = 4;
  o.seq_len = 64;
  o.on_exhausted = on_exhausted;
  /* One list feeds several sources here: duplicates across sources are the point, not noise. */
  o.dedup_across_sources = 0;
  CHECK_OK(temper_data_mixer_create(&mixer, tokenizer, &o, sources, n));
  return mixer;
}

static temper_trainer_options trainer_options(const temper_eval_set* const* eval_sets, size_t n, progress* p) {
  temper_trainer_options o;
  CHECK_OK(temper_trainer_options_default(&o, sizeof o));
  o.max_steps = 8;
  o.lr = 3e-3;
  o.schedule = TEMPER_SCHEDULE_CONSTANT;
  o.eval_sets = eval_sets;
  o.num_eval_sets = n;
  o.on_step = on_step;
  o.on_eval = on_eval;
  o.callback_user_data = p;
  return o;
}

static temper_lora_adapter* make_adapter(temper_model* model) {
  temper_lora_options o;
  temper_lora_adapter* adapter = NULL;
  CHECK_OK(temper_lora_options_default(&o, sizeof o));
  o.rank = 8;
  o.seed = 7;
  CHECK_OK(temper_lora_adapter_create(&adapter, model, &o));
  return adapter;
}

static temper_model* load_model(const char* dir) {
  temper_model* model = NULL;
  CHECK_OK(temper_model_load(&model, dir, NULL));
  return model;
}

static double perplexity_of(const temper_model* model, const int32_t* ids, size_t n) {
  temper_perplexity_result r;
  r.struct_size = sizeof r;
  CHECK_OK(temper_model_perplexity(&r, model, ids, n, NULL));
  CHECK(r.struct_size == sizeof r && r.tokens == (int64_t)n - 1);
  CHECK(fabs(exp(r.mean_nll) - r.perplexity) < 1e-9 * r.perplexity);
  return r.mean_nll;
}

/* The mix report (JSON with sorted keys) gives source `name` the target share `share`. */
static void check_share(const char* report, const char* name, const char* share) {
  char expected[256], compact[8192];
  size_t i, n = 0;
  for (i = 0; report[i] != '\0' && n + 1 < sizeof compact; ++i) {
    if (report[i] != ' ' && report[i] != '\n') compact[n++] = report[i];
  }
  compact[n] = '\0';
  CHECK(snprintf(expected, sizeof expected, "\"name\":\"%s\",\"role\":\"domain\",\"target_share\":%s,", name, share) <
        (int)sizeof expected);
  if (strstr(compact, expected) == NULL) {
    fprintf(stderr, "the mix report lacks %s:\n%s\n", expected, report);
    exit(1);
  }
}

/* The mixer's state through the buffer protocol: ask for the size, then fetch. */
static char* mixer_state(const temper_data_mixer* mixer) {
  size_t needed = 0;
  char* state;
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_data_mixer_save_state(NULL, 0, &needed, mixer));
  CHECK(needed > 2);
  state = (char*)malloc(needed);
  CHECK_OK(temper_data_mixer_save_state(state, needed, &needed, mixer));
  CHECK(strlen(state) + 1 == needed);
  return state;
}

int main(int argc, char** argv) {
  temper_model* model;
  temper_tokenizer* tokenizer = NULL;
  temper_source* sources[3];
  temper_source *file_source = NULL, *callback_source = NULL, *held_source;
  temper_data_mixer *mixer, *held_mixer;
  temper_eval_set* held_out = NULL;
  const temper_eval_set* eval_sets[1];
  temper_lora_adapter* adapter;
  temper_trainer* trainer = NULL;
  temper_trainer_options topts;
  temper_train_result result;
  temper_step_metrics metrics;
  temper_eval_result eval;
  progress p;
  reversed_notes reversed;
  temper_source_callbacks callbacks;
  temper_source_options so;
  const char* paths[1];
  int32_t ids[256], bos = -1;
  size_t num_ids = 0, needed = 0, count = 0;
  char text[1024], report[8192];
  int64_t step = 0, lora_params = 0;
  int32_t merged = -1, vocab = 0, gpus = -1;
  double trained_nll, base_nll;
  char* state_at_checkpoint;
  const char* probe = "The nurse cleaned the wound with saline and covered it with a sterile dressing.";

  if (argc != 3) {
    fprintf(stderr, "usage: %s <repo root> <scratch dir>\n", argv[0]);
    return 2;
  }
  join(model_dir, sizeof model_dir, argv[1], "assets/model");
  join(notes_path, sizeof notes_path, argv[1], "examples/data/clinical_notes.txt");
  CHECK(strlen(argv[2]) < sizeof scratch);
  strcpy(scratch, argv[2]);
  mkdir(scratch, 0755);
  join(checkpoint_dir, sizeof checkpoint_dir, scratch, "checkpoint");
  join(adapter_dir, sizeof adapter_dir, scratch, "adapter");
  join(merged_dir, sizeof merged_dir, scratch, "merged");
  read_notes();

  /* Versions: the header and the library agree. */
  CHECK(temper_version_number() == TEMPER_C_VERSION_NUMBER);
  CHECK(strcmp(temper_version(), TEMPER_C_VERSION_STRING) == 0);
  CHECK(strstr(temper_build_info(), TEMPER_C_VERSION_STRING) != NULL);
  CHECK_OK(temper_cuda_device_count(&gpus));
  CHECK(gpus >= 0);
  CHECK_OK(temper_set_log_callback(on_log, NULL));

  /* Tokenizer: BOS from the flags, a round trip, a buffer too small. */
  CHECK_OK(temper_tokenizer_load(&tokenizer, model_dir));
  CHECK_OK(temper_tokenizer_vocab_size(&vocab, tokenizer));
  CHECK(vocab == 8000);
  CHECK_OK(temper_tokenizer_special_token(&bos, tokenizer, TEMPER_TOKEN_BOS));
  CHECK_OK(temper_tokenizer_encode(ids, 256, &num_ids, tokenizer, probe, strlen(probe), TEMPER_ENCODE_MODEL_DEFAULTS));
  CHECK(num_ids > 10 && ids[0] == bos);
  CHECK_OK(temper_tokenizer_decode(text, sizeof text, &needed, tokenizer, ids, num_ids));
  CHECK(strcmp(text, probe) == 0 && needed == strlen(probe) + 1);
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_tokenizer_decode(text, 8, &needed, tokenizer, ids, num_ids));
  CHECK(needed == strlen(probe) + 1 && strlen(text) == 7 && strncmp(text, probe, 7) == 0);
  CHECK(temper_last_error_code() == TEMPER_OUT_OF_RANGE && strstr(temper_last_error(), "temper_tokenizer_decode") != NULL);
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_tokenizer_encode(ids, 3, &count, tokenizer, probe, strlen(probe), 0));
  CHECK(count == num_ids - 1);
  CHECK_OK(temper_tokenizer_encode(ids, 256, &num_ids, tokenizer, probe, strlen(probe), TEMPER_ENCODE_MODEL_DEFAULTS));
  CHECK(temper_last_error()[0] == '\0' && temper_last_error_code() == TEMPER_OK);

  /* Sources: the notes file, the same notes in memory, and reversed through host callbacks. */
  CHECK_OK(temper_source_options_default(&so, sizeof so));
  so.name = "notes_file";
  paths[0] = notes_path;
  CHECK_OK(temper_source_create_files(&file_source, &so, paths, 1));
  memset(&reversed, 0, sizeof reversed);
  memset(&callbacks, 0, sizeof callbacks);
  callbacks.struct_size = sizeof callbacks;
  callbacks.user_data = &reversed;
  callbacks.next = reversed_next;
  callbacks.rewind = reversed_rewind;
  callbacks.get_position = reversed_get_position;
  callbacks.seek = reversed_seek;
  callbacks.destroy = reversed_destroy;
  so.name = "notes_reversed";
  CHECK_OK(temper_source_create_callbacks(&callback_source, &so, &callbacks));
  sources[0] = file_source;
  sources[1] = records_source("notes_memory", "domain", 1.0);
  sources[2] = callback_source;
  mixer = make_mixer(tokenizer, sources, 3, TEMPER_EXHAUSTION_RESTART);
  /* The mixer keeps what it needs: the caller's source handles can go now. */
  temper_source_destroy(sources[1]);
  temper_source_destroy(file_source);

  held_source = records_source("held_out", "domain", 1.0);
  held_mixer = make_mixer(tokenizer, &held_source, 1, TEMPER_EXHAUSTION_STOP);
  temper_source_destroy(held_source);
  CHECK_OK(temper_eval_set_create(&held_out, "held_out", held_mixer, 2));
  CHECK_OK(temper_eval_set_num_batches(&step, held_out));
  CHECK(step == 2);
  temper_data_mixer_destroy(held_mixer);

  /* The model, an adapter, a trainer; the model handle is released before training. */
  model = load_model(model_dir);
  adapter = make_adapter(model);
  CHECK_OK(temper_lora_adapter_num_parameters(&lora_params, adapter));
  /* r (in + out) per projection; 6 blocks of q, k, v, o (256 -> 256, 256 -> 128 twice, 256 -> 256)
     and gate, up, down (256 <-> 704). */
  CHECK(lora_params == 6 * 8 * ((256 + 256) + 2 * (256 + 128) + (256 + 256) + 3 * (256 + 704)));
  memset(&p, 0, sizeof p);
  eval_sets[0] = held_out;
  topts = trainer_options(eval_sets, 1, &p);
  CHECK_OK(temper_trainer_create(&trainer, model, mixer, adapter, &topts));
  temper_eval_set_destroy(held_out); /* the trainer holds its own copy */
  p.trainer = trainer;

  result.struct_size = sizeof result;
  CHECK_OK(temper_trainer_train(&result, trainer));
  CHECK(result.stop_reason == TEMPER_STOP_MAX_STEPS && result.steps == 8 && result.skipped_steps == 0);
  CHECK(p.count == 8 && p.steps[0] == 1 && p.steps[7] == 8);
  CHECK(p.eval_calls == 2); /* the base model at step 0, and the end */
  CHECK(p.last_eval_delta < -0.05);
  CHECK(p.losses[7] < p.losses[0]);
  CHECK_OK(temper_trainer_evaluation_count(&count, trainer));
  CHECK(count == 2);
  eval.struct_size = sizeof eval;
  CHECK_OK(temper_trainer_eval_result(&eval, trainer, 0, 0));
  CHECK(eval.step == 0 && eval.loss_delta_from_base == 0.0 && strcmp(eval.name, "held_out") == 0);
  base_nll = eval.loss;
  CHECK_OK(temper_trainer_eval_result(&eval, trainer, 1, 0));
  CHECK(eval.step == 8 && fabs(eval.loss - base_nll - eval.loss_delta_from_base) < 1e-9);
  CHECK(eval.loss_delta_from_base == p.last_eval_delta);
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_trainer_eval_result(&eval, trainer, 2, 0));
  CHECK_STATUS(TEMPER_OUT_OF_RANGE, temper_trainer_eval_result(&eval, trainer, 1, 1));
  printf("loss %.4f -> %.4f; held-out %.4f -> %.4f\n", p.losses[0], p.losses[7], base_nll, eval.loss);
  /* Evaluating again without a step in between gives the same loss. */
  CHECK_OK(temper_trainer_evaluate(trainer));
  CHECK_OK(temper_trainer_evaluation_count(&count, trainer));
  CHECK(count == 3 && p.eval_calls == 3);
  {
    temper_eval_result again;
    again.struct_size = sizeof again;
    CHECK_OK(temper_trainer_eval_result(&again, trainer, 2, 0));
    CHECK(again.step == 8 && again.loss == eval.loss);
  }

  CHECK(temper_data_mixer_report(report, sizeof report, &needed, mixer) == TEMPER_OK);
  /* The schedule's shares, normalised: 1/4, 1/4, 1/2 (the report's JSON has sorted keys). */
  check_share(report, "notes_file", "0.25");
  check_share(report, "notes_memory", "0.25");
  check_share(report, "notes_reversed", "0.5");

  /* Checkpoint, then one more step; a second trainer resumed from the checkpoint (fresh model,
     adapter and mixer over the same sources) must take exactly the same step. */
  CHECK_OK(temper_trainer_save_checkpoint(trainer, checkpoint_dir));
  state_at_checkpoint = mixer_state(mixer);
  CHECK(exists(checkpoint_dir));
  metrics.struct_size = sizeof metrics;
  CHECK_OK(temper_trainer_step(&metrics, trainer));
  CHECK(metrics.step == 9 && metrics.struct_size == sizeof metrics);
  {
    temper_model* model2 = load_model(model_dir);
    temper_lora_adapter* adapter2 = make_adapter(model2);
    temper_source* sources2[3];
    temper_data_mixer* mixer2;
    temper_trainer* trainer2 = NULL;
    temper_step_metrics metrics2;
    progress p2;
    reversed_notes reversed2;
    temper_source_callbacks callbacks2 = callbacks;
    memset(&reversed2, 0, sizeof reversed2);
    callbacks2.user_data = &reversed2;
    so.name = "notes_file";
    CHECK_OK(temper_source_create_files(&sources2[0], &so, paths, 1));
    sources2[1] = records_source("notes_memory", "domain", 1.0);
    so.name = "notes_reversed";
    CHECK_OK(temper_source_create_callbacks(&sources2[2], &so, &callbacks2));
    mixer2 = make_mixer(tokenizer, sources2, 3, TEMPER_EXHAUSTION_RESTART);
    memset(&p2, 0, sizeof p2);
    topts = trainer_options(eval_sets, 0, &p2);
    topts.on_eval = NULL;
    CHECK_OK(temper_trainer_create(&trainer2, model2, mixer2, adapter2, &topts));
    CHECK_STATUS(TEMPER_NOT_FOUND, temper_trainer_last_step_metrics(&metrics2, trainer2));
    CHECK_OK(temper_trainer_resume(trainer2, checkpoint_dir));
    CHECK_OK(temper_trainer_global_step(&step, trainer2));
    CHECK(step == 8);
    CHECK(reversed2.next > 0); /* the host source was sought to its saved position */
    {
      char* resumed_state = mixer_state(mixer2);
      CHECK(strcmp(resumed_state, state_at_checkpoint) == 0);
      free(resumed_state);
    }
    metrics2.struct_size = sizeof metrics2;
    CHECK_OK(temper_trainer_step(&metrics2, trainer2));
    CHECK(metrics2.step == 9 && metrics2.loss == metrics.loss && metrics2.grad_norm == metrics.grad_norm);
    {
      /* A mixer's state restores on its own too. */
      char* later = mixer_state(mixer2);
      char* restored;
      CHECK(strcmp(later, state_at_checkpoint) != 0);
      CHECK_OK(temper_data_mixer_restore_state(mixer2, state_at_checkpoint, strlen(state_at_checkpoint)));
      restored = mixer_state(mixer2);
      CHECK(strcmp(restored, state_at_checkpoint) == 0);
      free(later);
      free(restored);
    }
    /* Destroyed out of order: sources, model and mixer before the trainer that uses them. */
    temper_source_destroy(sources2[0]);
    temper_source_destroy(sources2[1]);
    temper_source_destroy(sources2[2]);
    temper_model_destroy(model2);
    temper_data_mixer_destroy(mixer2);
    temper_lora_adapter_destroy(adapter2);
    CHECK(reversed2.destroyed == 0);
    temper_trainer_destroy(trainer2);
    CHECK(reversed2.destroyed == 1);
  }

  /* The trained adapter: save it in PEFT's format, load it onto a fresh model, score a text. */
  CHECK_OK(temper_lora_adapter_save(adapter, adapter_dir, "temper-bundled"));
  CHECK(exists(join(file_path, sizeof file_path, adapter_dir, "adapter_config.json")));
  CHECK(exists(join(file_path, sizeof file_path, adapter_dir, "adapter_model.safetensors")));
  CHECK_OK(temper_tokenizer_encode(ids, 256, &num_ids, tokenizer, probe, strlen(probe), TEMPER_ENCODE_MODEL_DEFAULTS));
  trained_nll = perplexity_of(model, ids, num_ids);
  temper_model_destroy(model); /* kept alive by the adapter and the trainer */
  {
    temper_model* base = load_model(model_dir);
    temper_model* reloaded = load_model(model_dir);
    temper_model* exported = NULL;
    temper_lora_adapter* loaded = NULL;
    temper_lora_adapter* trained_view = NULL;
    double loaded_nll, merged_nll, exported_nll;
    int32_t greedy_a[16], greedy_b[16];
    size_t na = 0, nb = 0;
    temper_generation_options g;

    base_nll = perplexity_of(base, ids, num_ids);
    CHECK_OK(temper_lora_adapter_load(&loaded, reloaded, adapter_dir));
    loaded_nll = perplexity_of(reloaded, ids, num_ids);
    CHECK(fabs(loaded_nll - trained_nll) < 1e-5);
    CHECK(loaded_nll < base_nll - 0.05); /* the probe is a training note */

    /* The same adapter merged into the weights scores the same; unmerge restores it. */
    CHECK_OK(temper_lora_adapter_merge(loaded));
    CHECK_OK(temper_lora_adapter_is_merged(&merged, loaded));
    CHECK(merged == 1);
    merged_nll = perplexity_of(reloaded, ids, num_ids);
    CHECK(fabs(merged_nll - loaded_nll) < 1e-4);
    CHECK_OK(temper_lora_adapter_unmerge(loaded));
    CHECK_OK(temper_lora_adapter_is_merged(&merged, loaded));
    CHECK(merged == 0);

    /* Greedy generation is deterministic and the same with the adapter merged or not. */
    CHECK_OK(temper_generation_options_default(&g, sizeof g));
    g.max_new_tokens = 12;
    g.stop_token_ids = NULL;
    CHECK_OK(temper_model_generate(greedy_a, 16, &na, reloaded, ids, 6, &g));
    CHECK_OK(temper_lora_adapter_merge(loaded));
    CHECK_OK(temper_model_generate(greedy_b, 16, &nb, reloaded, ids, 6, &g));
    CHECK(na == nb && na >= 1 && na <= 12 && memcmp(greedy_a, greedy_b, na * sizeof *greedy_a) == 0);
    CHECK_OK(temper_lora_adapter_unmerge(loaded));

    /* A merged export is a plain model that scores as the adapter did. */
    CHECK_OK(temper_model_export_merged(reloaded, loaded, merged_dir, TEMPER_DTYPE_FLOAT32));
    CHECK(exists(join(file_path, sizeof file_path, merged_dir, "config.json")));
    CHECK(exists(join(file_path, sizeof file_path, merged_dir, "tokenizer.model")));
    CHECK_OK(temper_model_load(&exported, merged_dir, NULL));
    exported_nll = perplexity_of(exported, ids, num_ids);
    CHECK(fabs(exported_nll - loaded_nll) < 1e-4);

    /* One adapter per model. */
    CHECK_STATUS(TEMPER_FAILED_PRECONDITION, temper_lora_adapter_create(&trained_view, reloaded, NULL));
    CHECK(trained_view == NULL);
    printf("probe nll: base %.4f, adapter %.4f, merged %.4f, exported %.4f\n", base_nll, trained_nll, merged_nll,
           exported_nll);
    temper_model_destroy(exported);
    temper_model_destroy(reloaded);
    temper_lora_adapter_destroy(loaded);
    temper_model_destroy(base);
  }

  /* QLoRA: an NF4 base trains an adapter through the same calls. request_stop from inside a step
     callback, then from another thread, makes train return after that step; train again and it
     runs until the finite data ends, with a notice to the log callback. */
  {
    temper_model_options mo;
    temper_model* q = NULL;
    temper_lora_adapter* qa;
    temper_trainer* qt = NULL;
    temper_trainer_options qo;
    progress qp;
    CHECK_OK(temper_model_options_default(&mo, sizeof mo));
    mo.quantize = TEMPER_QUANTIZE_NF4;
    CHECK_OK(temper_model_load(&q, model_dir, &mo));
    qa = make_adapter(q);
    memset(&qp, 0, sizeof qp);
    CHECK(pthread_mutex_init(&qp.lock, NULL) == 0 && pthread_cond_init(&qp.changed, NULL) == 0);
    qo = trainer_options(eval_sets, 0, &qp);
    qo.max_steps = 50;
    held_source = records_source("once", "domain", 1.0);
    held_mixer = make_mixer(tokenizer, &held_source, 1, TEMPER_EXHAUSTION_STOP);
    temper_source_destroy(held_source);
    CHECK_OK(temper_trainer_create(&qt, q, held_mixer, qa, &qo));
    temper_data_mixer_destroy(held_mixer);
    qp.trainer = qt;
    qp.stop_at = 2;
    result.struct_size = sizeof result;
    CHECK_OK(temper_trainer_train(&result, qt));
    CHECK(result.stop_reason == TEMPER_STOP_REQUESTED && result.steps == 2 && qp.count == 2);
    CHECK(log_messages == 0);
    /* From another thread: step 3's callback waits until that thread has asked for the stop. */
    qp.stop_at = 0;
    qp.stop_from_thread_at = 3;
    CHECK(pthread_create(&qp.stopper, NULL, stop_from_thread, &qp) == 0);
    CHECK_OK(temper_trainer_train(&result, qt));
    CHECK(pthread_join(qp.stopper, NULL) == 0);
    CHECK(result.stop_reason == TEMPER_STOP_REQUESTED && result.steps == 3 && qp.count == 3);
    CHECK_OK(temper_trainer_train(&result, qt));
    /* 40 notes of about 25 tokens fill 3 batches of 4 x 64 tokens; the 4th is partial. */
    CHECK(result.stop_reason == TEMPER_STOP_DATA_EXHAUSTED && result.steps == 3 && qp.count == 3);
    CHECK(log_messages == 1);
    pthread_cond_destroy(&qp.changed);
    pthread_mutex_destroy(&qp.lock);
    temper_trainer_destroy(qt);
    temper_lora_adapter_destroy(qa);
    temper_model_destroy(q);
  }

  /* Release in creation order: the mixer, then the adapter, the trainer last. */
  CHECK(reversed.destroyed == 0);
  temper_data_mixer_destroy(mixer);
  temper_source_destroy(callback_source);
  CHECK(reversed.destroyed == 0); /* the trainer's mixer still reads it */
  temper_lora_adapter_destroy(adapter);
  temper_trainer_destroy(trainer);
  CHECK(reversed.destroyed == 1);
  temper_tokenizer_destroy(tokenizer);
  CHECK_OK(temper_set_log_callback(NULL, NULL));
  free(state_at_checkpoint);
  free(notes_text);
  printf("capi_run_test: OK (%d log messages)\n", log_messages);
  return 0;
}
