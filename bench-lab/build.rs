//! Compiles the lab's XDP generator and sink (`bpf/lab.c`) with clang into a BPF object that
//! the generator module embeds.
//!
//! Fails with a message naming the Debian package to install when clang or the libbpf headers
//! are missing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang-14".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(
            "libbpf headers (/usr/include/bpf/bpf_helpers.h) are missing: install the Debian package `libbpf-dev`",
        );
    }
    let obj = out.join("lab.o");
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "bpf/lab.c", "-o"])
        .arg(&obj)
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "running `{clang}`: {e}; install the Debian package `clang-14` (or set CLANG)"
            ))
        });
    if !output.status.success() {
        fail(&format!(
            "{clang} failed on bpf/lab.c:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench-lab build: {message}");
    panic!("bench-lab build: {message}");
}
