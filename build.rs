//! Compiles the kernel fast path (`src/fastpath/fastpath.bpf.c`) to a BPF
//! object with clang. Without clang the object is empty and guardwire says at
//! start that it runs without the fast path.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/fastpath/fastpath.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=GUARDWIRE_CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("fastpath.bpf.o");
    let clang = std::env::var("GUARDWIRE_CLANG").unwrap_or_else(|_| "clang".into());
    // The asm/ headers linux/bpf.h includes live under the host's multiarch
    // directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} could not compile {src} ({s}); see the errors above"),
        Err(e) => {
            println!(
                "cargo:warning={clang} not found ({e}): building without the kernel fast path (apt-get install clang libbpf-dev)"
            );
            std::fs::write(&obj, []).expect("write an empty BPF object");
        }
    }
}
