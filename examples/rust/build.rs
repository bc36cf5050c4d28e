// Links libtemper_c.so from TEMPER_LIB_DIR (default: the build tree's capi/ folder), with an rpath
// so the program runs without LD_LIBRARY_PATH. No crates: crates.io need not be reachable.
use std::env;
use std::path::PathBuf;

fn main() {
    let dir = match env::var("TEMPER_LIB_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../build/capi"),
    };
    println!("cargo:rerun-if-env-changed=TEMPER_LIB_DIR");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=temper_c");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
