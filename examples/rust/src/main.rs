//! Fine-tunes a model with LoRA through temper's C ABI from Rust: the documents come from memory
//! (a records source), the held-out loss must fall, and the adapter is saved in PEFT's format.
//!
//!     temper-finetune <model dir> <text file, one document per line> <output dir>
//!
//! `ffi` declares the part of temper.h this program uses, by hand (no bindgen, no crates); the
//! handles below wrap it so that errors are `Result`s and handles are released by `Drop`.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_void};
use std::ptr;

#[allow(non_camel_case_types, dead_code)]
mod ffi {
    use std::os::raw::{c_char, c_void};

    pub const TEMPER_OK: i32 = 0;
    pub const TEMPER_NOT_FOUND: i32 = 5;
    pub const TEMPER_C_VERSION_NUMBER: u32 = 100; // the header this file follows: 0.1.0
    pub const TEMPER_FORMAT_TEXT_LINES: i32 = 0;
    pub const TEMPER_EXHAUSTION_RESTART: i32 = 0;
    pub const TEMPER_EXHAUSTION_STOP: i32 = 2;
    pub const TEMPER_SCHEDULE_CONSTANT: i32 = 0;

    #[repr(C)]
    pub struct temper_model {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_tokenizer {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_lora_adapter {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_source {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_data_mixer {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_eval_set {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct temper_trainer {
        _opaque: [u8; 0],
    }

    #[repr(C)]
    pub struct temper_source_options {
        pub struct_size: u32,
        pub format: i32,
        pub name: *const c_char,
        pub role: *const c_char,
        pub weight: f64,
        pub text_field: *const c_char,
        pub on_malformed: i32,
        pub reserved: i32,
        pub filters: *const c_void,
    }

    #[repr(C)]
    pub struct temper_data_mixer_options {
        pub struct_size: u32,
        pub objective: i32,
        pub batch_size: i64,
        pub seq_len: i64,
        pub on_exhausted: i32,
        pub add_bos: i32,
        pub add_eos: i32,
        pub dedup_exact: i32,
        pub dedup_near: i32,
        pub dedup_across_sources: i32,
        pub dedup_shingle_words: i64,
        pub dedup_num_permutations: i64,
        pub dedup_bands: i64,
        pub dedup_threshold: f64,
        pub chat_template: *const c_char,
        pub model_dir: *const c_char,
        pub seed: u64,
        pub schedule: *const c_void,
        pub num_schedule_points: usize,
    }

    #[repr(C)]
    pub struct temper_lora_options {
        pub struct_size: u32,
        pub init: i32,
        pub rank: i64,
        pub alpha: f64,
        pub dropout: f64,
        pub use_rslora: i32,
        pub use_dora: i32,
        pub target_modules: *const *const c_char,
        pub num_target_modules: usize,
        pub seed: u64,
        pub dtype: i32,
        pub reserved: i32,
    }

    #[repr(C)]
    pub struct temper_step_metrics {
        pub struct_size: u32,
        pub skipped: i32,
        pub step: i64,
        pub loss: f64,
        pub lr: f64,
        pub grad_norm: f64,
        pub tokens: i64,
        pub tokens_per_second: f64,
        pub epoch: i64,
    }

    #[repr(C)]
    pub struct temper_eval_result {
        pub struct_size: u32,
        pub reserved: u32,
        pub step: i64,
        pub name: *const c_char,
        pub loss: f64,
        pub perplexity: f64,
        pub loss_delta_from_base: f64,
        pub tokens: i64,
    }

    #[repr(C)]
    pub struct temper_train_result {
        pub struct_size: u32,
        pub stop_reason: i32,
        pub steps: i64,
        pub skipped_steps: i64,
    }

    pub type temper_step_callback = Option<unsafe extern "C" fn(*mut c_void, *const temper_step_metrics)>;
    pub type temper_eval_callback =
        Option<unsafe extern "C" fn(*mut c_void, *const temper_eval_result, usize, usize)>;

    #[repr(C)]
    pub struct temper_trainer_options {
        pub struct_size: u32,
        pub optimizer: i32,
        pub max_steps: i64,
        pub gradient_accumulation_steps: i64,
        pub lr: f64,
        pub beta1: f64,
        pub beta2: f64,
        pub eps: f64,
        pub momentum: f64,
        pub weight_decay: f64,
        pub schedule: i32,
        pub gradient_checkpointing: i32,
        pub warmup_steps: i64,
        pub max_grad_norm: f64,
        pub trainable_patterns: *const *const c_char,
        pub num_trainable_patterns: usize,
        pub seed: u64,
        pub eval_sets: *const *const temper_eval_set,
        pub num_eval_sets: usize,
        pub eval_every: i64,
        pub early_stopping_eval_set: *const c_char,
        pub early_stopping_patience: i64,
        pub early_stopping_min_delta: f64,
        pub max_consecutive_nonfinite: i64,
        pub checkpoint_dir: *const c_char,
        pub checkpoint_every: i64,
        pub keep_last_checkpoints: i64,
        pub metrics_jsonl: *const c_char,
        pub on_step: temper_step_callback,
        pub on_eval: temper_eval_callback,
        pub callback_user_data: *mut c_void,
    }

    extern "C" {
        pub fn temper_last_error() -> *const c_char;
        pub fn temper_status_name(code: i32) -> *const c_char;
        pub fn temper_version() -> *const c_char;
        pub fn temper_version_number() -> u32;

        pub fn temper_model_load(model: *mut *mut temper_model, dir: *const c_char, options: *const c_void) -> i32;
        pub fn temper_model_destroy(model: *mut temper_model);
        pub fn temper_tokenizer_load(tokenizer: *mut *mut temper_tokenizer, model_dir: *const c_char) -> i32;
        pub fn temper_tokenizer_destroy(tokenizer: *mut temper_tokenizer);

        pub fn temper_source_options_default(options: *mut temper_source_options, size: usize) -> i32;
        pub fn temper_source_create_records(
            source: *mut *mut temper_source,
            options: *const temper_source_options,
            records: *const *const c_char,
            lengths: *const usize,
            num_records: usize,
        ) -> i32;
        pub fn temper_source_destroy(source: *mut temper_source);
        pub fn temper_data_mixer_options_default(options: *mut temper_data_mixer_options, size: usize) -> i32;
        pub fn temper_data_mixer_create(
            mixer: *mut *mut temper_data_mixer,
            tokenizer: *const temper_tokenizer,
            options: *const temper_data_mixer_options,
            sources: *const *mut temper_source,
            num_sources: usize,
        ) -> i32;
        pub fn temper_data_mixer_destroy(mixer: *mut temper_data_mixer);
        pub fn temper_eval_set_create(
            eval_set: *mut *mut temper_eval_set,
            name: *const c_char,
            mixer: *mut temper_data_mixer,
            max_batches: i64,
        ) -> i32;
        pub fn temper_eval_set_destroy(eval_set: *mut temper_eval_set);

        pub fn temper_lora_options_default(options: *mut temper_lora_options, size: usize) -> i32;
        pub fn temper_lora_adapter_create(
            adapter: *mut *mut temper_lora_adapter,
            model: *mut temper_model,
            options: *const temper_lora_options,
        ) -> i32;
        pub fn temper_lora_adapter_save(
            adapter: *const temper_lora_adapter,
            dir: *const c_char,
            base_model_name_or_path: *const c_char,
        ) -> i32;
        pub fn temper_lora_adapter_destroy(adapter: *mut temper_lora_adapter);

        pub fn temper_trainer_options_default(options: *mut temper_trainer_options, size: usize) -> i32;
        pub fn temper_trainer_create(
            trainer: *mut *mut temper_trainer,
            model: *mut temper_model,
            data: *mut temper_data_mixer,
            adapter: *mut temper_lora_adapter,
            options: *const temper_trainer_options,
        ) -> i32;
        pub fn temper_trainer_train(result: *mut temper_train_result, trainer: *mut temper_trainer) -> i32;
        pub fn temper_trainer_evaluation_count(count: *mut usize, trainer: *const temper_trainer) -> i32;
        pub fn temper_trainer_eval_result(
            result: *mut temper_eval_result,
            trainer: *const temper_trainer,
            evaluation_index: usize,
            set_index: usize,
        ) -> i32;
        pub fn temper_trainer_destroy(trainer: *mut temper_trainer);
    }
}

/// A failed call: the status code (Abseil's numbers) and the message, read on the calling thread
/// right after the call (the last error is per thread).
#[derive(Debug)]
struct Error {
    code: i32,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = unsafe { CStr::from_ptr(ffi::temper_status_name(self.code)) };
        write!(f, "{}: {}", name.to_string_lossy(), self.message)
    }
}

impl std::error::Error for Error {}

fn check(code: i32) -> Result<(), Error> {
    if code == ffi::TEMPER_OK {
        return Ok(());
    }
    let message = unsafe { CStr::from_ptr(ffi::temper_last_error()) }.to_string_lossy().into_owned();
    Err(Error { code, message })
}

fn c_string(text: &str) -> CString {
    CString::new(text).expect("no NUL inside")
}

/// A handle owning one reference; Drop releases it (temper keeps what others still use alive).
struct Handle<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        unsafe { (self.destroy)(self.ptr) }
    }
}

fn created<T>(code: i32, ptr: *mut T, destroy: unsafe extern "C" fn(*mut T)) -> Result<Handle<T>, Error> {
    check(code)?;
    Ok(Handle { ptr, destroy })
}

fn load_tokenizer(dir: &str) -> Result<Handle<ffi::temper_tokenizer>, Error> {
    let mut ptr = ptr::null_mut();
    let code = unsafe { ffi::temper_tokenizer_load(&mut ptr, c_string(dir).as_ptr()) };
    created(code, ptr, ffi::temper_tokenizer_destroy)
}

fn load_model(dir: &str) -> Result<Handle<ffi::temper_model>, Error> {
    let mut ptr = ptr::null_mut();
    let code = unsafe { ffi::temper_model_load(&mut ptr, c_string(dir).as_ptr(), ptr::null()) };
    created(code, ptr, ffi::temper_model_destroy)
}

/// A mixer over documents held in memory (copied by temper): batches of 4 rows of 64 tokens.
fn records_mixer(
    tokenizer: &Handle<ffi::temper_tokenizer>,
    name: &str,
    documents: &[CString],
    on_exhausted: i32,
) -> Result<Handle<ffi::temper_data_mixer>, Error> {
    let name = c_string(name);
    let pointers: Vec<*const c_char> = documents.iter().map(|d| d.as_ptr()).collect();
    unsafe {
        let mut so: ffi::temper_source_options = std::mem::zeroed();
        check(ffi::temper_source_options_default(&mut so, std::mem::size_of_val(&so)))?;
        so.name = name.as_ptr();
        so.format = ffi::TEMPER_FORMAT_TEXT_LINES;
        let mut source = ptr::null_mut();
        let code = ffi::temper_source_create_records(&mut source, &so, pointers.as_ptr(), ptr::null(), pointers.len());
        let source = created(code, source, ffi::temper_source_destroy)?;

        let mut mo: ffi::temper_data_mixer_options = std::mem::zeroed();
        check(ffi::temper_data_mixer_options_default(&mut mo, std::mem::size_of_val(&mo)))?;
        mo.batch_size = 4;
        mo.seq_len = 64;
        mo.on_exhausted = on_exhausted;
        let mut mixer = ptr::null_mut();
        let code = ffi::temper_data_mixer_create(&mut mixer, tokenizer.ptr, &mo, &source.ptr, 1);
        created(code, mixer, ffi::temper_data_mixer_destroy)
    }
}

/// on_step: appends the step's loss to the Vec<f64> behind user_data. Runs on the training
/// thread, inside temper_trainer_train; it must not panic (a panic may not unwind into C).
unsafe extern "C" fn record_loss(user_data: *mut c_void, metrics: *const ffi::temper_step_metrics) {
    let losses = &mut *(user_data as *mut Vec<f64>);
    let m = &*metrics;
    println!("step {:2}  loss {:.4}  lr {:.2e}", m.step, m.loss, m.lr);
    losses.push(m.loss);
}

fn eval_loss(trainer: &Handle<ffi::temper_trainer>, evaluation: usize) -> Result<f64, Error> {
    unsafe {
        let mut r: ffi::temper_eval_result = std::mem::zeroed();
        r.struct_size = std::mem::size_of_val(&r) as u32;
        check(ffi::temper_trainer_eval_result(&mut r, trainer.ptr, evaluation, 0))?;
        Ok(r.loss)
    }
}

fn run(model_dir: &str, text_file: &str, out_dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    // An error path: a tokenizer from a directory that does not exist is NOT_FOUND.
    match load_tokenizer("no/such/model") {
        Err(e) if e.code == ffi::TEMPER_NOT_FOUND => println!("as expected: {}", e),
        Err(e) => return Err(format!("expected NOT_FOUND, got {}", e).into()),
        Ok(_) => return Err("a missing tokenizer loaded".into()),
    }

    let model = load_model(model_dir)?;
    let tokenizer = load_tokenizer(model_dir)?;
    let text = std::fs::read_to_string(text_file)?;
    let documents: Vec<CString> = text.lines().filter(|l| !l.trim().is_empty()).map(c_string).collect();
    let train_data = records_mixer(&tokenizer, "notes", &documents, ffi::TEMPER_EXHAUSTION_RESTART)?;
    // Held out: one pass over the same notes (a real run would hold out other documents).
    let held_out_data = records_mixer(&tokenizer, "notes", &documents, ffi::TEMPER_EXHAUSTION_STOP)?;
    let held_out_name = c_string("held_out");
    let mut held_out = ptr::null_mut();
    let code = unsafe { ffi::temper_eval_set_create(&mut held_out, held_out_name.as_ptr(), held_out_data.ptr, 4) };
    let held_out = created(code, held_out, ffi::temper_eval_set_destroy)?;

    let adapter = unsafe {
        let mut lo: ffi::temper_lora_options = std::mem::zeroed();
        check(ffi::temper_lora_options_default(&mut lo, std::mem::size_of_val(&lo)))?;
        lo.rank = 8;
        let mut ptr = ptr::null_mut();
        let code = ffi::temper_lora_adapter_create(&mut ptr, model.ptr, &lo);
        created(code, ptr, ffi::temper_lora_adapter_destroy)?
    };

    let mut losses: Vec<f64> = Vec::new();
    let eval_sets = [held_out.ptr as *const ffi::temper_eval_set];
    let trainer = unsafe {
        let mut to: ffi::temper_trainer_options = std::mem::zeroed();
        check(ffi::temper_trainer_options_default(&mut to, std::mem::size_of_val(&to)))?;
        to.max_steps = 10;
        to.lr = 3e-3;
        to.schedule = ffi::TEMPER_SCHEDULE_CONSTANT;
        to.eval_sets = eval_sets.as_ptr();
        to.num_eval_sets = 1;
        to.on_step = Some(record_loss);
        to.callback_user_data = &mut losses as *mut Vec<f64> as *mut c_void;
        let mut ptr = ptr::null_mut();
        let code = ffi::temper_trainer_create(&mut ptr, model.ptr, train_data.ptr, adapter.ptr, &to);
        created(code, ptr, ffi::temper_trainer_destroy)?
    };
    let mut result: ffi::temper_train_result = unsafe { std::mem::zeroed() };
    result.struct_size = std::mem::size_of_val(&result) as u32;
    check(unsafe { ffi::temper_trainer_train(&mut result, trainer.ptr) })?;

    let mut evaluations = 0usize;
    check(unsafe { ffi::temper_trainer_evaluation_count(&mut evaluations, trainer.ptr) })?;
    let (before, after) = (eval_loss(&trainer, 0)?, eval_loss(&trainer, evaluations - 1)?);
    println!("held-out loss {:.4} -> {:.4} after {} steps", before, after, result.steps);
    if losses.len() != result.steps as usize || !(after < before) {
        return Err("the held-out loss did not fall".into());
    }

    let adapter_dir = format!("{}/adapter", out_dir);
    let base = c_string(model_dir);
    check(unsafe { ffi::temper_lora_adapter_save(adapter.ptr, c_string(&adapter_dir).as_ptr(), base.as_ptr()) })?;
    println!("adapter saved to {}", adapter_dir);
    // The handles drop here in reverse declaration order; any order would do.
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} <model dir> <text file> <output dir>", args[0]);
        std::process::exit(2);
    }
    // The hand-written declarations above follow temper.h 0.1 (tests/capi/abi_layout.h).
    assert_eq!(std::mem::size_of::<ffi::temper_source_options>(), 56);
    assert_eq!(std::mem::size_of::<ffi::temper_data_mixer_options>(), 120);
    assert_eq!(std::mem::size_of::<ffi::temper_lora_options>(), 72);
    assert_eq!(std::mem::size_of::<ffi::temper_trainer_options>(), 232);
    assert_eq!(std::mem::size_of::<ffi::temper_step_metrics>(), 64);
    assert_eq!(std::mem::size_of::<ffi::temper_eval_result>(), 56);
    let version = unsafe { ffi::temper_version_number() };
    if version / 100 != ffi::TEMPER_C_VERSION_NUMBER / 100 {
        let loaded = unsafe { CStr::from_ptr(ffi::temper_version()) };
        eprintln!("this program follows temper.h 0.1 but the library is {}", loaded.to_string_lossy());
        std::process::exit(1);
    }
    if let Err(e) = run(&args[1], &args[2], &args[3]) {
        eprintln!("error: {}", e);
        std::process::exit(1);
    }
}
