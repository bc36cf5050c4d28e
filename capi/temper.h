/*
 * temper.h: the stable C ABI of temper, for C, Rust, Go and any language with a C FFI.
 *
 * This is the only header a host program needs. It wraps temper's C++ API (include/temper/)
 * one function to one call; docs/c-api.md has a quick start per language and the reasons behind
 * the rules below.
 *
 * Rules that hold for every function:
 *
 * - Status codes. A function that can fail returns an int32_t status code with Abseil's numbers
 *   (enum temper_status_code; 0 is TEMPER_OK). It also sets this thread's last error: the message
 *   on failure (temper_last_error), empty on success. Functions that cannot fail (getters of
 *   static values, *_destroy) leave the last error alone. No C++ exception ever leaves a
 *   function of this header.
 * - Out-parameters come first. They are written only on success, except the buffer outputs below.
 * - Handles are opaque and created by *_create / *_load, released by *_destroy. Destroying NULL
 *   does nothing. A handle keeps alive what it depends on (an adapter its model, a trainer its
 *   model, data and adapter), so handles may be destroyed in any order, e.g. by a garbage
 *   collector's finalizers. Using a handle after destroying it is undefined, as with free().
 * - Buffers. Functions that return text or token ids fill a caller buffer (buffer, size) and set
 *   *needed to what the whole result takes (bytes including the terminating NUL, or ids). When it
 *   does not fit, as much as fits is written (text stays NUL-terminated when size > 0) and
 *   TEMPER_OUT_OF_RANGE is returned; call again with *needed. buffer may be NULL when size is 0.
 * - Options structs are versioned by their first field, struct_size. Fill one with its
 *   temper_<x>_options_default(&opts, sizeof opts), then set fields. Fields are only ever appended,
 *   so a program built against an older header passes a smaller struct_size and the fields it does
 *   not know take their defaults. A program built against a newer header than the library passes
 *   a larger struct_size: accepted when the fields the library does not know are zero (what
 *   *_options_default leaves there), TEMPER_INVALID_ARGUMENT otherwise. struct_size must be a
 *   multiple of 8 between 8 and 4096. A NULL options pointer means all defaults. Output structs
 *   (metrics, results) work the same way in reverse: set struct_size to sizeof, the library fills
 *   the fields it knows within it and sets struct_size to what it filled.
 * - Layout: fields are 4 or 8 bytes wide, 4-byte fields come in pairs, no struct has padding
 *   (tests/capi/abi_layout.h freezes every size and offset). LP64 platforms only.
 * - Threading. A handle, and the handles that share its objects (a model, its adapter, a trainer
 *   on them, a data mixer and its sources), are used by one thread at a time. The functions marked
 *   thread-safe may be called from any thread at any time: the error, version and build getters,
 *   temper_set_log_callback, temper_cuda_device_count and temper_trainer_request_stop.
 * - Callbacks run on the thread that made the call that triggers them (the training thread) and
 *   must return normally: never unwind (longjmp, C++ exception, Rust panic) through the library.
 * - Strings are UTF-8 and NUL-terminated unless a length is given.
 */
#ifndef TEMPER_H_
#define TEMPER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TEMPER_C_API
#else
#define TEMPER_C_API __attribute__((visibility("default")))
#endif

/* The version of this header. temper_version_number() gives the library's. */
#define TEMPER_C_VERSION_MAJOR 0
#define TEMPER_C_VERSION_MINOR 1
#define TEMPER_C_VERSION_PATCH 0
#define TEMPER_C_VERSION_STRING "0.1.0"
#define TEMPER_C_VERSION_NUMBER (TEMPER_C_VERSION_MAJOR * 10000 + TEMPER_C_VERSION_MINOR * 100 + TEMPER_C_VERSION_PATCH)

/* ------------------------------------------------------------------------------------------ */
/* Status codes and errors                                                                      */
/* ------------------------------------------------------------------------------------------ */

/** Status codes: Abseil's (and gRPC's) numbers, so they map one to one on the C++ API's. */
typedef enum temper_status_code {
  TEMPER_OK = 0,
  TEMPER_CANCELLED = 1,
  TEMPER_UNKNOWN = 2,
  TEMPER_INVALID_ARGUMENT = 3,     /**< a bad argument or option; the message names it */
  TEMPER_DEADLINE_EXCEEDED = 4,
  TEMPER_NOT_FOUND = 5,            /**< a missing file or directory, an undefined special token */
  TEMPER_ALREADY_EXISTS = 6,
  TEMPER_PERMISSION_DENIED = 7,
  TEMPER_RESOURCE_EXHAUSTED = 8,   /**< out of memory (try a smaller batch) or disk space */
  TEMPER_FAILED_PRECONDITION = 9,  /**< the objects are not in a state for this (e.g. a checkpoint of another run) */
  TEMPER_ABORTED = 10,             /**< training stopped: too many non-finite steps in a row */
  TEMPER_OUT_OF_RANGE = 11,        /**< a buffer too small (see *needed), an index past the end, data exhausted */
  TEMPER_UNIMPLEMENTED = 12,       /**< a feature temper does not have (yet) */
  TEMPER_INTERNAL = 13,            /**< a bug or a libtorch error; the message says what was being done */
  TEMPER_UNAVAILABLE = 14,
  TEMPER_DATA_LOSS = 15,           /**< a damaged file (checksum mismatch) */
  TEMPER_UNAUTHENTICATED = 16
} temper_status_code;

/**
 * This thread's last error message: "" after a successful call.
 * Threading: thread-safe (each thread has its own). Ownership: the library's; valid until this
 * thread's next call of a function that returns a status.
 */
TEMPER_C_API const char* temper_last_error(void);

/** This thread's last status code (TEMPER_OK after a successful call). Thread-safe. */
TEMPER_C_API int32_t temper_last_error_code(void);

/**
 * Copies this thread's last error message into buffer (see "Buffers"). Does not change the last
 * error itself. Returns TEMPER_OK, TEMPER_OUT_OF_RANGE when truncated, TEMPER_INVALID_ARGUMENT
 * when buffer is NULL with size > 0. needed may be NULL. Thread-safe.
 */
TEMPER_C_API int32_t temper_last_error_copy(char* buffer, size_t size, size_t* needed);

/** "INVALID_ARGUMENT" for TEMPER_INVALID_ARGUMENT and so on; "" for an unknown code. Static; thread-safe. */
TEMPER_C_API const char* temper_status_name(int32_t code);

/* ------------------------------------------------------------------------------------------ */
/* Version, build, logging, devices                                                             */
/* ------------------------------------------------------------------------------------------ */

/** "MAJOR.MINOR.PATCH" of the loaded library. Static; thread-safe. */
TEMPER_C_API const char* temper_version(void);

/** MAJOR * 10000 + MINOR * 100 + PATCH of the loaded library (compare with TEMPER_C_VERSION_NUMBER). Thread-safe. */
TEMPER_C_API uint32_t temper_version_number(void);

/** One line: temper version, libtorch version, whether CUDA kernels are compiled in. Static; thread-safe. */
TEMPER_C_API const char* temper_build_info(void);

typedef enum temper_log_level {
  TEMPER_LOG_INFO = 0,     /**< progress notices: early stopping, data exhausted */
  TEMPER_LOG_WARNING = 1   /**< something to look at: skipped steps, too many SFT epochs */
} temper_log_level;

/** Receives a message (NUL-terminated, no trailing newline, valid during the call). */
typedef void (*temper_log_callback)(void* user_data, int32_t level, const char* message);

/**
 * Sends temper's notices and warnings to callback (NULL: nowhere, the default) with user_data.
 * Threading: thread-safe. The callback runs on the thread that logs, possibly on several at once;
 * a message being delivered while the callback is replaced still reaches the old one, so keep
 * the old user_data valid until the calls that might log have returned.
 */
TEMPER_C_API int32_t temper_set_log_callback(temper_log_callback callback, void* user_data);

/**
 * Number of CUDA devices the library can use: 0 with a CPU-only build, without a driver or a GPU.
 * Thread-safe.
 */
TEMPER_C_API int32_t temper_cuda_device_count(int32_t* count);

/* ------------------------------------------------------------------------------------------ */
/* Opaque handles                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct temper_model temper_model;               /**< a decoder-only language model */
typedef struct temper_tokenizer temper_tokenizer;       /**< text <-> token ids */
typedef struct temper_lora_adapter temper_lora_adapter; /**< a LoRA/DoRA adapter installed on a model */
typedef struct temper_source temper_source;             /**< one data source of a mixer (files, records, callbacks) */
typedef struct temper_data_mixer temper_data_mixer;     /**< mixes sources into training batches */
typedef struct temper_eval_set temper_eval_set;         /**< a held-out set of batches */
typedef struct temper_trainer temper_trainer;           /**< trains a model (full or LoRA) on a mixer */

/* ------------------------------------------------------------------------------------------ */
/* Model                                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef enum temper_dtype {
  TEMPER_DTYPE_FLOAT32 = 0,
  TEMPER_DTYPE_BFLOAT16 = 1,
  TEMPER_DTYPE_FLOAT16 = 2
} temper_dtype;

typedef enum temper_device_type {
  TEMPER_DEVICE_CPU = 0,
  TEMPER_DEVICE_CUDA = 1
} temper_device_type;

typedef enum temper_quantization {
  TEMPER_QUANTIZE_NONE = 0,
  TEMPER_QUANTIZE_NF4 = 1  /**< QLoRA: decoder-block linear weights held in NF4 (blocks of 64, double quantization) */
} temper_quantization;

typedef struct temper_model_options {
  uint32_t struct_size;
  int32_t dtype;         /**< temper_dtype of parameters and compute; default FLOAT32 (use BFLOAT16 on GPUs) */
  int32_t device_type;   /**< temper_device_type; default CPU */
  int32_t device_index;  /**< CUDA device ordinal (see temper_cuda_device_count); default 0; ignored on CPU */
  int32_t quantize;      /**< temper_quantization; default NONE */
  int32_t reserved;      /**< must be 0 */
} temper_model_options;

/** Fills *options with the defaults; struct_size = sizeof *options (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_model_options_default(temper_model_options* options, size_t struct_size);

/**
 * Loads a Hugging Face checkpoint directory (config.json + *.safetensors). Every tensor's name and
 * shape is checked; errors name the file and tensor (NOT_FOUND for a missing directory or file).
 * options may be NULL (defaults). Ownership: *model is the caller's; release with
 * temper_model_destroy.
 */
TEMPER_C_API int32_t temper_model_load(temper_model** model, const char* dir, const temper_model_options* options);

/** Releases the caller's reference; the model lives on while adapters or trainers use it. NULL-safe. */
TEMPER_C_API void temper_model_destroy(temper_model* model);

/** Number of parameter elements (tied weights counted once). */
TEMPER_C_API int32_t temper_model_num_parameters(int64_t* count, const temper_model* model);

typedef struct temper_generation_options {
  uint32_t struct_size;
  uint32_t reserved;               /**< must be 0 */
  int64_t max_new_tokens;          /**< default 32 */
  double temperature;              /**< 0 (default) = greedy; otherwise logits / temperature are sampled */
  double top_p;                    /**< nucleus sampling; default 1 */
  uint64_t seed;                   /**< sampling seed; default 0 */
  const int32_t* stop_token_ids;   /**< NULL (default): the model config's eos ids */
  size_t num_stop_token_ids;
} temper_generation_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_generation_options_default(temper_generation_options* options, size_t struct_size);

/**
 * Continues prompt (prompt_length >= 1 ids) and writes only the new tokens to tokens (see
 * "Buffers": capacity >= max_new_tokens always suffices). The stop token is included when one
 * ended the generation. Deterministic for a given seed. options may be NULL.
 */
TEMPER_C_API int32_t temper_model_generate(int32_t* tokens, size_t capacity, size_t* count, const temper_model* model,
                                           const int32_t* prompt, size_t prompt_length,
                                           const temper_generation_options* options);

typedef struct temper_perplexity_options {
  uint32_t struct_size;
  uint32_t reserved;   /**< must be 0 */
  int64_t window;      /**< tokens per window; 0 (default) = max_position_embeddings, at most 1024 */
  int64_t batch_size;  /**< windows per forward pass; default 8 */
} temper_perplexity_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_perplexity_options_default(temper_perplexity_options* options, size_t struct_size);

typedef struct temper_perplexity_result {
  uint32_t struct_size;
  uint32_t reserved;
  double mean_nll;     /**< mean negative log-likelihood per scored token (nats) */
  double perplexity;   /**< exp(mean_nll) */
  int64_t tokens;      /**< scored tokens */
} temper_perplexity_result;

/**
 * Perplexity of a token stream (count >= 2) cut into non-overlapping windows; the first token of
 * each window is context only. result->struct_size must be set (output struct). options may be NULL.
 */
TEMPER_C_API int32_t temper_model_perplexity(temper_perplexity_result* result, const temper_model* model,
                                             const int32_t* tokens, size_t count,
                                             const temper_perplexity_options* options);

/**
 * Writes model, with adapter's deltas folded in when adapter is not NULL (it must be installed on
 * model), as a Hugging Face model directory (safetensors, config.json, tokenizer files) in dtype
 * (temper_dtype). Neither is modified. The directory appears whole or not at all; an existing one
 * is replaced only when it is empty or a model directory (FAILED_PRECONDITION otherwise).
 */
TEMPER_C_API int32_t temper_model_export_merged(const temper_model* model, const temper_lora_adapter* adapter,
                                                const char* dir, int32_t dtype);

/* ------------------------------------------------------------------------------------------ */
/* Tokenizer                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/** Loads the tokenizer of a Hugging Face model directory (tokenizer.model + tokenizer_config.json). */
TEMPER_C_API int32_t temper_tokenizer_load(temper_tokenizer** tokenizer, const char* model_dir);

/** Releases the caller's reference; mixers using the tokenizer keep it alive. NULL-safe. */
TEMPER_C_API void temper_tokenizer_destroy(temper_tokenizer* tokenizer);

/** Flags of temper_tokenizer_encode. */
typedef enum temper_encode_flags {
  TEMPER_ENCODE_PLAIN = 0,           /**< no special tokens */
  TEMPER_ENCODE_ADD_BOS = 1,         /**< BOS first (when the tokenizer has one) */
  TEMPER_ENCODE_ADD_EOS = 2,         /**< EOS last (when the tokenizer has one) */
  TEMPER_ENCODE_MODEL_DEFAULTS = 4   /**< BOS/EOS as tokenizer_config.json says; not combinable with the two above */
} temper_encode_flags;

/**
 * UTF-8 text (length bytes; text may be NULL when length is 0) -> ids (see "Buffers").
 * Invalid UTF-8 is INVALID_ARGUMENT naming the byte offset.
 */
TEMPER_C_API int32_t temper_tokenizer_encode(int32_t* ids, size_t capacity, size_t* count,
                                             const temper_tokenizer* tokenizer, const char* text, size_t length,
                                             uint32_t flags);

/**
 * ids -> UTF-8 text (see "Buffers"; *needed counts the terminating NUL). Special tokens decode to
 * nothing; an id outside the vocabulary is INVALID_ARGUMENT naming its position.
 */
TEMPER_C_API int32_t temper_tokenizer_decode(char* text, size_t size, size_t* needed, const temper_tokenizer* tokenizer,
                                             const int32_t* ids, size_t count);

/** The number of ids the tokenizer knows. */
TEMPER_C_API int32_t temper_tokenizer_vocab_size(int32_t* size, const temper_tokenizer* tokenizer);

typedef enum temper_special_token {
  TEMPER_TOKEN_BOS = 0,
  TEMPER_TOKEN_EOS = 1,
  TEMPER_TOKEN_PAD = 2,
  TEMPER_TOKEN_UNK = 3
} temper_special_token;

/** The id of a special token (temper_special_token); NOT_FOUND when the tokenizer has none. */
TEMPER_C_API int32_t temper_tokenizer_special_token(int32_t* id, const temper_tokenizer* tokenizer, int32_t which);

/* ------------------------------------------------------------------------------------------ */
/* LoRA adapters                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef enum temper_lora_init {
  TEMPER_LORA_INIT_PEFT = 0,     /**< A kaiming-uniform, B zeros (PEFT's default) */
  TEMPER_LORA_INIT_GAUSSIAN = 1  /**< A normal(0, 1/r), B zeros */
} temper_lora_init;

typedef struct temper_lora_options {
  uint32_t struct_size;
  int32_t init;                        /**< temper_lora_init; default PEFT */
  int64_t rank;                        /**< default 16 */
  double alpha;                        /**< 0 (default) = 2 * rank */
  double dropout;                      /**< on the adapter's input while training; default 0 */
  int32_t use_rslora;                  /**< s = alpha / sqrt(r); default 0 */
  int32_t use_dora;                    /**< weight-decomposed LoRA; default 0 */
  const char* const* target_modules;   /**< NULL/0 (default): every linear projection of every block */
  size_t num_target_modules;
  uint64_t seed;                       /**< A's initial values; default 0 */
  int32_t dtype;                       /**< temper_dtype of the adapter's parameters; default FLOAT32 */
  int32_t reserved;                    /**< must be 0 */
} temper_lora_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_lora_options_default(temper_lora_options* options, size_t struct_size);

/**
 * Installs a fresh adapter on every targeted projection of model and freezes the model's own
 * parameters. FAILED_PRECONDITION when the model already carries an adapter. options may be NULL.
 * Ownership: *adapter keeps model alive. Destroying the last reference to the adapter uninstalls
 * it (a merged adapter's weights stay merged).
 */
TEMPER_C_API int32_t temper_lora_adapter_create(temper_lora_adapter** adapter, temper_model* model,
                                                const temper_lora_options* options);

/**
 * Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) onto model.
 * An adapter for another base is INVALID_ARGUMENT naming the first mismatching tensor; PEFT features
 * temper lacks are UNIMPLEMENTED naming the field.
 */
TEMPER_C_API int32_t temper_lora_adapter_load(temper_lora_adapter** adapter, temper_model* model, const char* dir);

/** Releases the caller's reference (see temper_lora_adapter_create). NULL-safe. */
TEMPER_C_API void temper_lora_adapter_destroy(temper_lora_adapter* adapter);

/**
 * Writes dir in PEFT's format (the PEFT adapter export); base_model_name_or_path goes into
 * adapter_config.json (may be NULL: ""). The directory appears whole or not at all.
 */
TEMPER_C_API int32_t temper_lora_adapter_save(const temper_lora_adapter* adapter, const char* dir,
                                              const char* base_model_name_or_path);

/** Folds the adapter into the base weights; a no-op when merged. */
TEMPER_C_API int32_t temper_lora_adapter_merge(temper_lora_adapter* adapter);

/** The inverse of merge (up to rounding); a no-op when not merged. */
TEMPER_C_API int32_t temper_lora_adapter_unmerge(temper_lora_adapter* adapter);

/** *merged = 1 while the adapter is folded into the base weights, else 0. */
TEMPER_C_API int32_t temper_lora_adapter_is_merged(int32_t* merged, const temper_lora_adapter* adapter);

/** Trainable parameter elements of the adapter. */
TEMPER_C_API int32_t temper_lora_adapter_num_parameters(int64_t* count, const temper_lora_adapter* adapter);

/* ------------------------------------------------------------------------------------------ */
/* Data: sources and the mixer                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef enum temper_source_format {
  TEMPER_FORMAT_TEXT_LINES = 0,         /**< one document per line */
  TEMPER_FORMAT_TEXT_BLOCKS = 1,        /**< documents separated by blank lines */
  TEMPER_FORMAT_TEXT_FILES = 2,         /**< one document per file */
  TEMPER_FORMAT_JSONL_TEXT = 3,         /**< JSONL, the document in text_field */
  TEMPER_FORMAT_JSONL_INSTRUCTION = 4,  /**< JSONL {"instruction", "input"?, "output"} */
  TEMPER_FORMAT_JSONL_CHAT = 5,         /**< JSONL {"messages": [{"role", "content"}, ...]} */
  TEMPER_FORMAT_TOKEN_SHARD = 6         /**< pre-tokenized files (path + path.idx); files only */
} temper_source_format;

typedef enum temper_malformed_policy {
  TEMPER_MALFORMED_SKIP = 0,  /**< count it, keep examples in the report, go on */
  TEMPER_MALFORMED_FAIL = 1   /**< stop with INVALID_ARGUMENT naming the record */
} temper_malformed_policy;

/** Noise filters of one source (docs/data.md gives the reasons for each default). */
typedef struct temper_filter_options {
  uint32_t struct_size;
  int32_t check_utf8;                   /**< default 1 */
  int32_t check_length;                 /**< default 1 */
  int32_t check_repetition;             /**< default 1 */
  int32_t check_non_word;               /**< default 1 */
  int32_t check_boilerplate;            /**< default 1 */
  int64_t min_chars;                    /**< default 20 */
  int64_t max_chars;                    /**< default 200000 */
  int64_t min_tokens;                   /**< default 8 */
  int64_t max_tokens;                   /**< default 0 = no bound */
  int64_t max_char_run;                 /**< default 30 */
  int64_t max_word_run;                 /**< default 8 */
  double max_top_ngram_fraction;        /**< default 0.20 */
  double max_duplicate_ngram_fraction;  /**< default 0.15 */
  double min_letter_fraction;           /**< default 0.55 */
  double max_symbol_word_ratio;         /**< default 0.10 */
  double max_duplicate_line_fraction;   /**< default 0.30 */
} temper_filter_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_filter_options_default(temper_filter_options* options, size_t struct_size);

typedef struct temper_source_options {
  uint32_t struct_size;
  int32_t format;                        /**< temper_source_format; default TEXT_LINES */
  const char* name;                      /**< required; unique within a mixer; names the source in reports */
  const char* role;                      /**< a tag ("domain", "general"); NULL (default) = "domain" */
  double weight;                         /**< target share of tokens (normalised over sources); default 1 */
  const char* text_field;                /**< JSONL_TEXT: the field; NULL (default) = "text" */
  int32_t on_malformed;                  /**< temper_malformed_policy; default SKIP */
  int32_t reserved;                      /**< must be 0 */
  const temper_filter_options* filters;  /**< NULL (default) = default filters */
} temper_source_options;

/** Fills *options with the defaults (see "Options structs"); name stays NULL and must be set. Thread-safe. */
TEMPER_C_API int32_t temper_source_options_default(temper_source_options* options, size_t struct_size);

/**
 * A source reading files (num_paths >= 1). Every file must exist (NOT_FOUND naming it). The strings
 * are copied. Ownership: *source is the caller's; mixers created from it keep what they need.
 */
TEMPER_C_API int32_t temper_source_create_files(temper_source** source, const temper_source_options* options,
                                                const char* const* paths, size_t num_paths);

/**
 * A source over records held by the host, copied now: one document per record, read as the format
 * reads one line (text formats: the text as it is; JSONL formats: one JSON object; TOKEN_SHARD is
 * refused). lengths may be NULL (records NUL-terminated). Malformed records are reported as
 * "<name>#<index>". The copy is shared: one source may feed several mixers, each with its own cursor.
 */
TEMPER_C_API int32_t temper_source_create_records(temper_source** source, const temper_source_options* options,
                                                  const char* const* records, const size_t* lengths,
                                                  size_t num_records);

/**
 * A host-implemented source. Each function returns TEMPER_OK or a status code, which becomes the
 * status of the library call that asked (with the source and callback named in the message).
 *
 * Positions: a trainer checkpoint records where each source is. With get_position and seek set,
 * the host's own position text is saved and handed back to seek on resume. Without them (NULL),
 * resuming rewinds and skips the records read before, which is exact when the host yields the same
 * records in the same order on every pass.
 */
typedef struct temper_source_callbacks {
  uint32_t struct_size; /**< sizeof(temper_source_callbacks); zero the whole table first (memset or = {0}) */
  uint32_t reserved;   /**< must be 0 */
  void* user_data;     /**< passed to every callback */
  /**
   * Required. The next record: set *record and *length (the bytes stay valid until the next call
   * of any callback of this source), or set *end_of_pass to 1 at the end of a pass (the library
   * then calls rewind before asking again).
   */
  int32_t (*next)(void* user_data, const char** record, size_t* length, int32_t* end_of_pass);
  /** Required. Starts the next pass at the first record. */
  int32_t (*rewind)(void* user_data);
  /** Optional. Where the next record comes from, as text (valid until the next call of any callback). */
  int32_t (*get_position)(void* user_data, const char** position, size_t* length);
  /** Optional (required with get_position). Returns to a position get_position gave. */
  int32_t (*seek)(void* user_data, const char* position, size_t length);
  /** Optional. Called once, when the library no longer needs user_data (after the last mixer using it). */
  void (*destroy)(void* user_data);
} temper_source_callbacks;

/**
 * A source whose records come from callbacks (read like temper_source_create_records' records).
 * The table is copied. On success the library owns user_data's lifetime (destroy is called once
 * when the source and every mixer made from it are gone); on failure it does not touch it.
 * Threading: the callbacks run on the thread driving the mixer (the training thread). One mixer
 * reads a callback source at a time.
 */
TEMPER_C_API int32_t temper_source_create_callbacks(temper_source** source, const temper_source_options* options,
                                                    const temper_source_callbacks* callbacks);

/** Releases the caller's reference. NULL-safe. */
TEMPER_C_API void temper_source_destroy(temper_source* source);

typedef enum temper_objective {
  TEMPER_OBJECTIVE_CONTINUED_PRETRAINING = 0,  /**< every token of packed text is scored */
  TEMPER_OBJECTIVE_SFT = 1                     /**< instruction/chat records; only responses are scored */
} temper_objective;

typedef enum temper_exhaustion_policy {
  TEMPER_EXHAUSTION_RESTART = 0,      /**< a source that runs out starts a new epoch */
  TEMPER_EXHAUSTION_RENORMALIZE = 1,  /**< it leaves the mix; all out -> the stream ends */
  TEMPER_EXHAUSTION_STOP = 2          /**< the first source to run out ends the stream (held-out sets) */
} temper_exhaustion_policy;

/**
 * A point of a share schedule: from at_tokens mixed tokens on, source source_names[i] has target
 * weight weights[i]; between two points the weights are interpolated linearly, and before the first
 * point the sources' own weights hold. Not versioned (it travels in arrays): its layout is frozen.
 */
typedef struct temper_share_schedule_point {
  int64_t at_tokens;
  const char* const* source_names;  /**< num_weights names of the mixer's sources */
  const double* weights;            /**< num_weights weights */
  size_t num_weights;
} temper_share_schedule_point;

typedef struct temper_data_mixer_options {
  uint32_t struct_size;
  int32_t objective;               /**< temper_objective; default CONTINUED_PRETRAINING */
  int64_t batch_size;              /**< default 8 */
  int64_t seq_len;                 /**< packed row length, or SFT maximum example length; default 512 */
  int32_t on_exhausted;            /**< temper_exhaustion_policy; default RESTART */
  int32_t add_bos;                 /**< pre-training: BOS before each document; default 1 */
  int32_t add_eos;                 /**< pre-training: EOS after each document; default 1 */
  int32_t dedup_exact;             /**< normalised-text dedup; default 1 */
  int32_t dedup_near;              /**< MinHash/LSH near-duplicate dedup; default 1 */
  int32_t dedup_across_sources;    /**< one index for all sources; default 1 */
  int64_t dedup_shingle_words;     /**< default 5 */
  int64_t dedup_num_permutations;  /**< default 128 */
  int64_t dedup_bands;             /**< default 16 */
  double dedup_threshold;          /**< estimated Jaccard for a near duplicate; default 0.8 */
  const char* chat_template;       /**< SFT: "chatml", "llama2", "llama3", "alpaca", "plain"; NULL/"" = detect from model_dir */
  const char* model_dir;           /**< SFT template detection; NULL (default) = none ("plain") */
  uint64_t seed;                   /**< breaks ties between sources; default 0 */
  const temper_share_schedule_point* schedule;  /**< points in increasing at_tokens; copied; NULL/0 (default) = none */
  size_t num_schedule_points;
} temper_data_mixer_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_data_mixer_options_default(temper_data_mixer_options* options, size_t struct_size);

/**
 * A mixer over num_sources >= 1 sources: streams documents, filters noise and duplicates,
 * tokenizes, mixes at the sources' token shares, formats SFT records, packs, and yields batches
 * to a trainer. Every source's files are checked now. options may be NULL.
 * Ownership: *mixer keeps tokenizer and the sources' data alive.
 */
TEMPER_C_API int32_t temper_data_mixer_create(temper_data_mixer** mixer, const temper_tokenizer* tokenizer,
                                              const temper_data_mixer_options* options,
                                              temper_source* const* sources, size_t num_sources);

/** Releases the caller's reference; a trainer using the mixer keeps it alive. NULL-safe. */
TEMPER_C_API void temper_data_mixer_destroy(temper_data_mixer* mixer);

/** The mix report as JSON (see "Buffers"): per source shares, documents, drops by filter, epochs. */
TEMPER_C_API int32_t temper_data_mixer_report(char* buffer, size_t size, size_t* needed, const temper_data_mixer* mixer);

/** The mixer's whole state (positions, counters, dedup index) as JSON text (see "Buffers"). */
TEMPER_C_API int32_t temper_data_mixer_save_state(char* buffer, size_t size, size_t* needed,
                                                  const temper_data_mixer* mixer);

/** Restores a state saved from a mixer over the same sources (FAILED_PRECONDITION otherwise). */
TEMPER_C_API int32_t temper_data_mixer_restore_state(temper_data_mixer* mixer, const char* state, size_t length);

/**
 * A held-out set named name: up to max_batches (>= 1) batches drawn from mixer, which advances.
 * Use a mixer of its own over held-out data, typically with TEMPER_EXHAUSTION_STOP so the set is
 * one pass (its last partial batch is not drawn). FAILED_PRECONDITION when the mixer yields no
 * batch. Ownership: *eval_set holds its own copy of the batches.
 */
TEMPER_C_API int32_t temper_eval_set_create(temper_eval_set** eval_set, const char* name, temper_data_mixer* mixer,
                                            int64_t max_batches);

/** The number of batches the set holds (at most its max_batches). */
TEMPER_C_API int32_t temper_eval_set_num_batches(int64_t* count, const temper_eval_set* eval_set);

/** NULL-safe; trainers created with the set hold their own copy. */
TEMPER_C_API void temper_eval_set_destroy(temper_eval_set* eval_set);

/* ------------------------------------------------------------------------------------------ */
/* Trainer                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum temper_optimizer {
  TEMPER_OPTIMIZER_ADAMW = 0,
  TEMPER_OPTIMIZER_SGD = 1
} temper_optimizer;

typedef enum temper_schedule {
  TEMPER_SCHEDULE_CONSTANT = 0,
  TEMPER_SCHEDULE_LINEAR = 1,
  TEMPER_SCHEDULE_COSINE = 2
} temper_schedule;

typedef enum temper_stop_reason {
  TEMPER_STOP_MAX_STEPS = 0,
  TEMPER_STOP_EARLY_STOPPING = 1,
  TEMPER_STOP_REQUESTED = 2,
  TEMPER_STOP_DATA_EXHAUSTED = 3
} temper_stop_reason;

/** One optimizer step. An output struct (see "Options structs"). */
typedef struct temper_step_metrics {
  uint32_t struct_size;
  int32_t skipped;            /**< 1: non-finite loss or gradient, no update */
  int64_t step;               /**< optimizer steps completed */
  double loss;                /**< token-normalised over the step's micro-batches */
  double lr;
  double grad_norm;           /**< before clipping */
  int64_t tokens;             /**< scored tokens in the step */
  double tokens_per_second;
  int64_t epoch;              /**< epochs the data completed */
} temper_step_metrics;

/** One held-out set at one evaluation. An output struct. */
typedef struct temper_eval_result {
  uint32_t struct_size;
  uint32_t reserved;
  int64_t step;                  /**< the step it was evaluated at (0: the base model) */
  const char* name;              /**< the set's name; owned by the trainer, valid while it lives */
  double loss;
  double perplexity;
  double loss_delta_from_base;   /**< loss now minus loss at step 0 */
  int64_t tokens;
} temper_eval_result;

/** What temper_trainer_train did. An output struct. */
typedef struct temper_train_result {
  uint32_t struct_size;
  int32_t stop_reason;    /**< temper_stop_reason */
  int64_t steps;          /**< the trainer's step count at the end */
  int64_t skipped_steps;  /**< steps skipped as non-finite, in all */
} temper_train_result;

/** Called after every optimizer step with its metrics (valid during the call). */
typedef void (*temper_step_callback)(void* user_data, const temper_step_metrics* metrics);

/**
 * Called after an evaluation once per held-out set: index of count (the sets in the order given);
 * result is valid during the call.
 */
typedef void (*temper_eval_callback)(void* user_data, const temper_eval_result* result, size_t index, size_t count);

typedef struct temper_trainer_options {
  uint32_t struct_size;
  int32_t optimizer;                        /**< temper_optimizer; default ADAMW */
  int64_t max_steps;                        /**< optimizer steps; default 100 */
  int64_t gradient_accumulation_steps;      /**< micro-batches per step; default 1 */
  double lr;                                /**< peak learning rate; default 2e-4 */
  double beta1;                             /**< AdamW; default 0.9 */
  double beta2;                             /**< AdamW; default 0.999 */
  double eps;                               /**< AdamW; default 1e-8 */
  double momentum;                          /**< SGD; default 0.9 */
  double weight_decay;                      /**< on linear and embedding weights only; default 0 */
  int32_t schedule;                         /**< temper_schedule; default COSINE */
  int32_t gradient_checkpointing;           /**< recompute blocks in backward; default 0 */
  int64_t warmup_steps;                     /**< linear warm-up; default 0 */
  double max_grad_norm;                     /**< global-norm clipping, 0 = off; default 1 */
  const char* const* trainable_patterns;    /**< full fine-tuning: globs over parameter names; NULL/0 = all */
  size_t num_trainable_patterns;
  uint64_t seed;                            /**< dropout and sampling in training; default 0 */
  const temper_eval_set* const* eval_sets;  /**< held-out sets, copied at creation; NULL/0 = none */
  size_t num_eval_sets;
  int64_t eval_every;                       /**< steps between evaluations; 0 (default) = start and end only */
  const char* early_stopping_eval_set;      /**< the set that decides; NULL/"" (default) = off */
  int64_t early_stopping_patience;          /**< evaluations without improvement; default 3 */
  double early_stopping_min_delta;          /**< default 0 */
  int64_t max_consecutive_nonfinite;        /**< then training stops with ABORTED; default 5 */
  const char* checkpoint_dir;               /**< NULL/"" (default) = no automatic checkpoints */
  int64_t checkpoint_every;                 /**< steps; 0 (default) = at the end only (with a dir) */
  int64_t keep_last_checkpoints;            /**< default 2 */
  const char* metrics_jsonl;                /**< one JSON object per step/eval appended; NULL (default) = none */
  temper_step_callback on_step;             /**< NULL (default) = none */
  temper_eval_callback on_eval;             /**< NULL (default) = none */
  void* callback_user_data;                 /**< passed to on_step and on_eval */
  /* Data parallelism (appended last: a caller built with a smaller struct_size gets the defaults). */
  int32_t distributed;                      /**< 1 = data parallel over the torchrun environment
                                                 (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
                                                 MASTER_PORT; docs/distributed.md): NCCL for a
                                                 CUDA model, Gloo for a CPU one; default 0 */
  int32_t shard_optimizer_state;            /**< ZeRO-1 with distributed; default 0 */
  int64_t distributed_timeout_ms;           /**< rendezvous and each collective; default 600000 */
  int32_t reduce_gradients_in_fp32;         /**< with distributed: sum gradients over ranks in fp32
                                                 buckets instead of their own dtype (bf16 sums round
                                                 once more; fp32 costs twice the bytes); default 0 */
  int32_t reserved;                         /**< must be 0 */
} temper_trainer_options;

/** Fills *options with the defaults (see "Options structs"). Thread-safe. */
TEMPER_C_API int32_t temper_trainer_options_default(temper_trainer_options* options, size_t struct_size);

/**
 * A trainer of model on data: LoRA when adapter is not NULL (only the adapter trains; it must be
 * installed on model), full fine-tuning otherwise (trainable_patterns choose). The strings and
 * eval sets of options are copied. options may be NULL.
 * Ownership: *trainer keeps model, data and adapter alive. Threading: the trainer, its model,
 * adapter and mixer are used by one thread at a time, except temper_trainer_request_stop.
 */
TEMPER_C_API int32_t temper_trainer_create(temper_trainer** trainer, temper_model* model, temper_data_mixer* data,
                                           temper_lora_adapter* adapter, const temper_trainer_options* options);

/** Releases the caller's reference. NULL-safe; not while another thread uses the trainer. */
TEMPER_C_API void temper_trainer_destroy(temper_trainer* trainer);

/**
 * One optimizer step; metrics (may be NULL; an output struct) receives its metrics. OUT_OF_RANGE
 * when finite data is exhausted.
 */
TEMPER_C_API int32_t temper_trainer_step(temper_step_metrics* metrics, temper_trainer* trainer);

/**
 * Evaluates at the start (when at step 0), then steps until max_steps, early stopping, exhausted
 * data or temper_trainer_request_stop, evaluating and checkpointing as configured; the callbacks run
 * on this thread. result may be NULL (an output struct).
 */
TEMPER_C_API int32_t temper_trainer_train(temper_train_result* result, temper_trainer* trainer);

/** Evaluates every held-out set now; read the results with temper_trainer_eval_result. */
TEMPER_C_API int32_t temper_trainer_evaluate(temper_trainer* trainer);

/**
 * Writes a checkpoint directory (trained weights, optimizer, schedule, RNG, data position with the
 * sources' positions, guard state, checksums); it appears whole or not at all.
 */
TEMPER_C_API int32_t temper_trainer_save_checkpoint(temper_trainer* trainer, const char* dir);

/**
 * Restores a checkpoint of the same model, adapter shapes, data and options (FAILED_PRECONDITION
 * otherwise, NOT_FOUND when dir does not exist, DATA_LOSS when damaged or incomplete); training then continues exactly as if never stopped.
 */
TEMPER_C_API int32_t temper_trainer_resume(temper_trainer* trainer, const char* dir);

/**
 * Asks temper_trainer_train to return after the current step (stop reason REQUESTED).
 * Threading: thread-safe, from any thread or from a callback, while the trainer lives.
 */
TEMPER_C_API int32_t temper_trainer_request_stop(temper_trainer* trainer);

/** Optimizer steps completed. */
TEMPER_C_API int32_t temper_trainer_global_step(int64_t* step, const temper_trainer* trainer);

/**
 * The metrics of the last step (an output struct); NOT_FOUND before the first step (and right after
 * resume). May be called from the callbacks.
 */
TEMPER_C_API int32_t temper_trainer_last_step_metrics(temper_step_metrics* metrics, const temper_trainer* trainer);

/** Evaluations since creation or resume. May be called from the callbacks. */
TEMPER_C_API int32_t temper_trainer_evaluation_count(size_t* count, const temper_trainer* trainer);

/**
 * Held-out set set_index (in the order given) of evaluation evaluation_index (0 = oldest); an output
 * struct. OUT_OF_RANGE for an index past the end. May be called from the callbacks.
 */
TEMPER_C_API int32_t temper_trainer_eval_result(temper_eval_result* result, const temper_trainer* trainer,
                                                size_t evaluation_index, size_t set_index);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TEMPER_H_ */
