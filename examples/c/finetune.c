/* Fine-tunes a model with LoRA on a text file through temper's C ABI, checks that the held-out
   loss fell, and saves the adapter in PEFT's format.

     finetune <model dir> <text file, one document per line> <output dir>

   Build against an installed temper:  cc -std=c99 finetune.c $(pkg-config --cflags --libs temper_c)
   The bundled model and notes:        finetune assets/model examples/data/clinical_notes.txt out */
#include <stdio.h>
#include <stdlib.h>

#include "temper.h"

/* Prints the failed call with its status and this thread's last error, then exits. */
#define TRY(call)                                                                                  \
  do {                                                                                             \
    int32_t status_ = (call);                                                                      \
    if (status_ != TEMPER_OK) {                                                                    \
      fprintf(stderr, "%s failed: %s: %s\n", #call, temper_status_name(status_), temper_last_error()); \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static void print_step(void* user_data, const temper_step_metrics* m) {
  (void)user_data;
  printf("step %2lld  loss %.4f  lr %.2g  %.0f tokens/s\n", (long long)m->step, m->loss, m->lr, m->tokens_per_second);
}

static void print_eval(void* user_data, const temper_eval_result* r, size_t index, size_t count) {
  (void)user_data, (void)index, (void)count;
  printf("eval at step %lld: %s loss %.4f (%+.4f from the base model)\n", (long long)r->step, r->name, r->loss,
         r->loss_delta_from_base);
}

/* A mixer over one text file: batches of 4 rows of 64 tokens. */
static temper_data_mixer* text_mixer(const temper_tokenizer* tokenizer, const char* name, const char* path,
                                     int32_t on_exhausted) {
  temper_source_options so;
  temper_data_mixer_options mo;
  temper_source* source = NULL;
  temper_data_mixer* mixer = NULL;
  TRY(temper_source_options_default(&so, sizeof so));
  so.name = name;
  so.format = TEMPER_FORMAT_TEXT_LINES;
  TRY(temper_source_create_files(&source, &so, &path, 1));
  TRY(temper_data_mixer_options_default(&mo, sizeof mo));
  mo.batch_size = 4;
  mo.seq_len = 64;
  mo.on_exhausted = on_exhausted;
  TRY(temper_data_mixer_create(&mixer, tokenizer, &mo, &source, 1));
  temper_source_destroy(source); /* the mixer keeps what it needs */
  return mixer;
}

int main(int argc, char** argv) {
  temper_model* model = NULL;
  temper_model* missing = NULL;
  temper_tokenizer* tokenizer = NULL;
  temper_data_mixer *train_data, *held_out_data;
  temper_eval_set* held_out = NULL;
  temper_lora_adapter* adapter = NULL;
  temper_trainer* trainer = NULL;
  temper_lora_options lo;
  temper_trainer_options to;
  temper_train_result result;
  temper_eval_result first, last;
  size_t evaluations = 0;
  char adapter_dir[4096];
  int32_t status;

  if (argc != 4) {
    fprintf(stderr, "usage: %s <model dir> <text file> <output dir>\n", argv[0]);
    return 2;
  }
  if (temper_version_number() / 100 != TEMPER_C_VERSION_NUMBER / 100) {
    fprintf(stderr, "built against temper %s but running with %s\n", TEMPER_C_VERSION_STRING, temper_version());
    return 1;
  }
  printf("%s\n", temper_build_info());

  /* An error path: a model directory that does not exist is NOT_FOUND, with the path in the message. */
  status = temper_model_load(&missing, "no/such/model", NULL);
  if (status != TEMPER_NOT_FOUND || missing != NULL) {
    fprintf(stderr, "expected NOT_FOUND for a missing model, got %s\n", temper_status_name(status));
    return 1;
  }
  printf("as expected: %s: %s\n", temper_status_name(status), temper_last_error());

  TRY(temper_model_load(&model, argv[1], NULL));
  TRY(temper_tokenizer_load(&tokenizer, argv[1]));
  train_data = text_mixer(tokenizer, "notes", argv[2], TEMPER_EXHAUSTION_RESTART);
  /* Held out: one pass over the file (a real run would hold out other documents). */
  held_out_data = text_mixer(tokenizer, "notes", argv[2], TEMPER_EXHAUSTION_STOP);
  TRY(temper_eval_set_create(&held_out, "held_out", held_out_data, 4));

  TRY(temper_lora_options_default(&lo, sizeof lo));
  lo.rank = 8;
  TRY(temper_lora_adapter_create(&adapter, model, &lo));

  TRY(temper_trainer_options_default(&to, sizeof to));
  to.max_steps = 10;
  to.lr = 3e-3;
  to.schedule = TEMPER_SCHEDULE_CONSTANT;
  to.eval_sets = (const temper_eval_set* const*)&held_out;
  to.num_eval_sets = 1;
  to.on_step = print_step;
  to.on_eval = print_eval;
  TRY(temper_trainer_create(&trainer, model, train_data, adapter, &to));
  result.struct_size = sizeof result;
  TRY(temper_trainer_train(&result, trainer));

  /* The held-out loss at the start (the base model) and at the end. */
  TRY(temper_trainer_evaluation_count(&evaluations, trainer));
  first.struct_size = sizeof first;
  last.struct_size = sizeof last;
  TRY(temper_trainer_eval_result(&first, trainer, 0, 0));
  TRY(temper_trainer_eval_result(&last, trainer, evaluations - 1, 0));
  printf("held-out loss %.4f -> %.4f after %lld steps\n", first.loss, last.loss, (long long)result.steps);
  if (!(last.loss < first.loss)) {
    fprintf(stderr, "the held-out loss did not fall\n");
    return 1;
  }

  snprintf(adapter_dir, sizeof adapter_dir, "%s/adapter", argv[3]);
  TRY(temper_lora_adapter_save(adapter, adapter_dir, argv[1]));
  printf("adapter saved to %s\n", adapter_dir);

  /* Handles may be released in any order. */
  temper_model_destroy(model);
  temper_trainer_destroy(trainer);
  temper_lora_adapter_destroy(adapter);
  temper_eval_set_destroy(held_out);
  temper_data_mixer_destroy(held_out_data);
  temper_data_mixer_destroy(train_data);
  temper_tokenizer_destroy(tokenizer);
  return 0;
}
