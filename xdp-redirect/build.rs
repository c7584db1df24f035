//! Compiles the XDP programs in `bpf/` with clang into BPF objects embedded by the loader.
//!
//! Fails with a message naming the Debian package to install when clang or the libbpf
//! headers are missing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["steer", "bare_redirect"];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang-14".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");
    if Command::new(&clang).arg("--version").output().is_err() {
        fail(&format!(
            "`{clang}` was not found: install the Debian package `clang-14` (or set CLANG to a clang with the BPF target)"
        ));
    }
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(
            "libbpf headers (/usr/include/bpf/bpf_helpers.h) are missing: install the Debian package `libbpf-dev`",
        );
    }
    if !Path::new(&format!("{multiarch}/asm/types.h")).exists()
        && !Path::new("/usr/include/asm/types.h").exists()
    {
        fail(
            "kernel UAPI headers (asm/types.h) are missing: install the Debian packages `linux-libc-dev` and `libc6-dev`",
        );
    }
    for program in PROGRAMS {
        let src = format!("bpf/{program}.c");
        let obj = out.join(format!("{program}.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .arg("-Ibpf")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| fail(&format!("running {clang}: {e}")));
        if !output.status.success() {
            fail(&format!(
                "{clang} failed on {src}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("xdp-redirect build: {message}");
    panic!("xdp-redirect build: {message}");
}
