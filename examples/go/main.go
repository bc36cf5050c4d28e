// Command finetune fine-tunes a model with LoRA through temper's C ABI from Go (cgo): it trains
// step by step, checks that the held-out loss fell, and saves the adapter in PEFT's format.
//
//	finetune <model dir> <text file, one document per line> <output dir>
//
// Build: CGO_CFLAGS=-I<dir of temper.h> CGO_LDFLAGS="-L<dir of libtemper_c.so>" go build (run.sh).
package main

/*
#cgo LDFLAGS: -ltemper_c
#include <stdlib.h>
#include "temper.h"

// temper's last error belongs to the OS thread, and the Go scheduler may move a goroutine to
// another thread between two cgo calls. So every fallible call goes through a helper that makes
// the call and copies its error in one C call: the message is read on the thread that set it.
typedef struct {
  int32_t code;
  char message[2048];
} temper_call;

static int32_t finish(temper_call* c, int32_t code) {
  c->code = code;
  c->message[0] = '\0';
  if (code != TEMPER_OK) temper_last_error_copy(c->message, sizeof c->message, NULL);
  return code;
}

static int32_t go_model_load(temper_call* c, temper_model** m, const char* dir) {
  return finish(c, temper_model_load(m, dir, NULL));
}
static int32_t go_tokenizer_load(temper_call* c, temper_tokenizer** t, const char* dir) {
  return finish(c, temper_tokenizer_load(t, dir));
}
static int32_t go_source_options_default(temper_call* c, temper_source_options* o) {
  return finish(c, temper_source_options_default(o, sizeof *o));
}
static int32_t go_source_create_files(temper_call* c, temper_source** s, const temper_source_options* o,
                                      const char* path) {
  return finish(c, temper_source_create_files(s, o, &path, 1));
}
static int32_t go_data_mixer_options_default(temper_call* c, temper_data_mixer_options* o) {
  return finish(c, temper_data_mixer_options_default(o, sizeof *o));
}
static int32_t go_data_mixer_create(temper_call* c, temper_data_mixer** m, const temper_tokenizer* t,
                                    const temper_data_mixer_options* o, temper_source* s) {
  return finish(c, temper_data_mixer_create(m, t, o, &s, 1));
}
static int32_t go_eval_set_create(temper_call* c, temper_eval_set** e, const char* name, temper_data_mixer* m,
                                  int64_t max_batches) {
  return finish(c, temper_eval_set_create(e, name, m, max_batches));
}
static int32_t go_lora_options_default(temper_call* c, temper_lora_options* o) {
  return finish(c, temper_lora_options_default(o, sizeof *o));
}
static int32_t go_lora_adapter_create(temper_call* c, temper_lora_adapter** a, temper_model* m,
                                      const temper_lora_options* o) {
  return finish(c, temper_lora_adapter_create(a, m, o));
}
static int32_t go_lora_adapter_save(temper_call* c, const temper_lora_adapter* a, const char* dir, const char* base) {
  return finish(c, temper_lora_adapter_save(a, dir, base));
}
static int32_t go_trainer_options_default(temper_call* c, temper_trainer_options* o) {
  return finish(c, temper_trainer_options_default(o, sizeof *o));
}
// One eval set: the array of handles the options point to lives in C memory (cgo forbids C
// memory, here the options, that points into Go memory).
static int32_t go_trainer_create(temper_call* c, temper_trainer** t, temper_model* m, temper_data_mixer* d,
                                 temper_lora_adapter* a, temper_trainer_options* o, const temper_eval_set* e) {
  const temper_eval_set* sets[1] = {e};
  o->eval_sets = sets;
  o->num_eval_sets = 1;
  return finish(c, temper_trainer_create(t, m, d, a, o));
}
static int32_t go_trainer_step(temper_call* c, temper_step_metrics* m, temper_trainer* t) {
  m->struct_size = sizeof *m;
  return finish(c, temper_trainer_step(m, t));
}
static int32_t go_trainer_evaluate(temper_call* c, temper_trainer* t) { return finish(c, temper_trainer_evaluate(t)); }
static int32_t go_trainer_eval_result(temper_call* c, temper_eval_result* r, const temper_trainer* t, size_t i) {
  r->struct_size = sizeof *r;
  return finish(c, temper_trainer_eval_result(r, t, i, 0));
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"
)

// Error is a failed temper call: the status code (Abseil's numbers) and the message.
type Error struct {
	Code    int32
	Message string
}

func (e *Error) Error() string {
	return C.GoString(C.temper_status_name(C.int32_t(e.Code))) + ": " + e.Message
}

func check(call *C.temper_call) error {
	if call.code == C.TEMPER_OK {
		return nil
	}
	return &Error{Code: int32(call.code), Message: C.GoString(&call.message[0])}
}

// cString is a C copy of s; the caller frees it.
func cString(s string) *C.char { return C.CString(s) }

func run(modelDir, textFile, outDir string) error {
	var call C.temper_call

	// An error path: a model directory that does not exist is NOT_FOUND.
	var missing *C.temper_model
	nowhere := cString("no/such/model")
	defer C.free(unsafe.Pointer(nowhere))
	C.go_model_load(&call, &missing, nowhere)
	if err, ok := check(&call).(*Error); !ok || err.Code != C.TEMPER_NOT_FOUND || missing != nil {
		return fmt.Errorf("expected NOT_FOUND for a missing model, got %v", check(&call))
	}
	fmt.Println("as expected:", check(&call))

	dir := cString(modelDir)
	defer C.free(unsafe.Pointer(dir))
	var model *C.temper_model
	if C.go_model_load(&call, &model, dir); check(&call) != nil {
		return check(&call)
	}
	defer C.temper_model_destroy(model)
	var tokenizer *C.temper_tokenizer
	if C.go_tokenizer_load(&call, &tokenizer, dir); check(&call) != nil {
		return check(&call)
	}
	defer C.temper_tokenizer_destroy(tokenizer)

	trainData, err := fileMixer(tokenizer, textFile, C.TEMPER_EXHAUSTION_RESTART)
	if err != nil {
		return err
	}
	defer C.temper_data_mixer_destroy(trainData)
	// Held out: one pass over the same file (a real run would hold out other documents).
	heldOutData, err := fileMixer(tokenizer, textFile, C.TEMPER_EXHAUSTION_STOP)
	if err != nil {
		return err
	}
	defer C.temper_data_mixer_destroy(heldOutData)
	name := cString("held_out")
	defer C.free(unsafe.Pointer(name))
	var heldOut *C.temper_eval_set
	if C.go_eval_set_create(&call, &heldOut, name, heldOutData, 4); check(&call) != nil {
		return check(&call)
	}
	defer C.temper_eval_set_destroy(heldOut)

	var lora C.temper_lora_options
	if C.go_lora_options_default(&call, &lora); check(&call) != nil {
		return check(&call)
	}
	lora.rank = 8
	var adapter *C.temper_lora_adapter
	if C.go_lora_adapter_create(&call, &adapter, model, &lora); check(&call) != nil {
		return check(&call)
	}
	defer C.temper_lora_adapter_destroy(adapter)

	var options C.temper_trainer_options
	if C.go_trainer_options_default(&call, &options); check(&call) != nil {
		return check(&call)
	}
	options.max_steps = 10
	options.lr = 3e-3
	options.schedule = C.TEMPER_SCHEDULE_CONSTANT
	var trainer *C.temper_trainer
	if C.go_trainer_create(&call, &trainer, model, trainData, adapter, &options, heldOut); check(&call) != nil {
		return check(&call)
	}
	defer C.temper_trainer_destroy(trainer)

	// Evaluate the base model, step, evaluate again: evaluations 0 and 1.
	if C.go_trainer_evaluate(&call, trainer); check(&call) != nil {
		return check(&call)
	}
	var metrics C.temper_step_metrics
	for i := 0; i < int(options.max_steps); i++ {
		if C.go_trainer_step(&call, &metrics, trainer); check(&call) != nil {
			return check(&call)
		}
		fmt.Printf("step %2d  loss %.4f  lr %.2g\n", int64(metrics.step), float64(metrics.loss), float64(metrics.lr))
	}
	if C.go_trainer_evaluate(&call, trainer); check(&call) != nil {
		return check(&call)
	}
	var before, after C.temper_eval_result
	if C.go_trainer_eval_result(&call, &before, trainer, 0); check(&call) != nil {
		return check(&call)
	}
	if C.go_trainer_eval_result(&call, &after, trainer, 1); check(&call) != nil {
		return check(&call)
	}
	fmt.Printf("held-out loss %.4f -> %.4f after %d steps\n", float64(before.loss), float64(after.loss),
		int64(metrics.step))
	if !(after.loss < before.loss) {
		return fmt.Errorf("the held-out loss did not fall")
	}

	adapterDir := filepath.Join(outDir, "adapter")
	cAdapterDir := cString(adapterDir)
	defer C.free(unsafe.Pointer(cAdapterDir))
	if C.go_lora_adapter_save(&call, adapter, cAdapterDir, dir); check(&call) != nil {
		return check(&call)
	}
	fmt.Println("adapter saved to", adapterDir)
	return nil
}

// fileMixer is a mixer over one text file, one document per line: batches of 4 rows of 64 tokens.
func fileMixer(tokenizer *C.temper_tokenizer, path string, onExhausted C.int32_t) (*C.temper_data_mixer, error) {
	var call C.temper_call
	var so C.temper_source_options
	if C.go_source_options_default(&call, &so); check(&call) != nil {
		return nil, check(&call)
	}
	name := cString("notes")
	defer C.free(unsafe.Pointer(name))
	cPath := cString(path)
	defer C.free(unsafe.Pointer(cPath))
	so.name = name
	so.format = C.TEMPER_FORMAT_TEXT_LINES
	var source *C.temper_source
	if C.go_source_create_files(&call, &source, &so, cPath); check(&call) != nil {
		return nil, check(&call)
	}
	defer C.temper_source_destroy(source) // the mixer keeps what it needs

	var mo C.temper_data_mixer_options
	if C.go_data_mixer_options_default(&call, &mo); check(&call) != nil {
		return nil, check(&call)
	}
	mo.batch_size = 4
	mo.seq_len = 64
	mo.on_exhausted = onExhausted
	var mixer *C.temper_data_mixer
	if C.go_data_mixer_create(&call, &mixer, tokenizer, &mo, source); check(&call) != nil {
		return nil, check(&call)
	}
	return mixer, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintf(os.Stderr, "usage: %s <model dir> <text file> <output dir>\n", os.Args[0])
		os.Exit(2)
	}
	if C.temper_version_number()/100 != C.TEMPER_C_VERSION_NUMBER/100 {
		fmt.Fprintf(os.Stderr, "built against temper %d but running with %s\n", C.TEMPER_C_VERSION_NUMBER,
			C.GoString(C.temper_version()))
		os.Exit(1)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
