//! Builds the eBPF objects (`edge-ebpf/`): the agent's, to embed, and the benchmark's bare
//! counter, whose path goes to `bench/build.rs` as cargo `links` metadata
//! (`DEP_EDGEFLOW_BPF_BARE`), so one build serves both.
//!
//! aya-build cannot be used here: it runs `rustup run <toolchain> cargo` and strips RUSTC,
//! while the BPF crate must build with Debian's rustc-web (see docs/toolchain.md and
//! edge-ebpf/.cargo/config.toml). Set EDGEFLOW_SKIP_BPF=1 to embed an empty object (for
//! clippy or doc runs that do not need the programs).
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("edge-ebpf");
    // Relative to this package, not absolute: cargo keeps paths outside the package as
    // given, and an absolute path would tie the build cache to the clone that last ran this
    // script — a clone elsewhere sharing CARGO_TARGET_DIR would be told the programs are up
    // to date while its own sources changed.
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed=../edge-ebpf/{p}");
    }
    for p in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed=../shared/{p}");
    }
    println!("cargo:rerun-if-env-changed=EDGEFLOW_SKIP_BPF");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let out = out_dir.join("edgeflow.bpf.o");
    let bare = out_dir.join("bare.bpf.o");
    println!("cargo:bare={}", bare.display());
    if env::var_os("EDGEFLOW_SKIP_BPF").is_some_and(|v| v != "0") {
        println!("cargo:warning=EDGEFLOW_SKIP_BPF set: embedding an empty eBPF object");
        fs::write(&out, []).unwrap();
        fs::write(&bare, []).unwrap();
        return;
    }

    // One BPF build shared by every profile and target of the outer build.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bpf");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir)
        // -Z build-std on a stable compiler; must be in cargo's own environment.
        .env("RUSTC_BOOTSTRAP", "1");
    // The outer build's compiler settings must not leak into the BPF build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
            || k.starts_with("CARGO_ENCODED_")
            || k.starts_with("CARGO_BUILD_")
            || k.starts_with("CARGO_TARGET_")
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_UNSTABLE_")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("RUSTC_BOOTSTRAP", "1");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for edge-ebpf: {e}"));
    if !status.success() {
        panic!(
            "building edge-ebpf failed ({status}); run scripts/setup.sh to install the \
             eBPF toolchain (rustc-web, rust-web-src, bpf-linker)"
        );
    }
    // Both binaries of the crate: the agent's programs and the bare counter.
    for (bin, to) in [("edgeflow", &out), ("bare", &bare)] {
        let obj = target_dir.join("bpfel-unknown-none/release").join(bin);
        fs::copy(&obj, to).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
    }
}
