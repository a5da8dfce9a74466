//! Builds edge-ebpf's `bare` program (the reference floor, `edge-ebpf/src/bare.rs`) and hands
//! it to the `bare-counter` loader to embed. Same route as edge/build.rs (Debian's rustc-web,
//! bpf-linker, RUSTC_BOOTSTRAP for build-std) and the same target directory, so the BPF crate
//! compiles once for both. EDGEFLOW_SKIP_BPF=1 embeds nothing (clippy, doc runs).
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("edge-ebpf");
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=EDGEFLOW_SKIP_BPF");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("bare.bpf.o");
    if env::var_os("EDGEFLOW_SKIP_BPF").is_some_and(|v| v != "0") {
        fs::write(&out, []).unwrap();
        return;
    }
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bpf");
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "--bin", "bare", "--target-dir"])
        .arg(&target_dir);
    // The outer build's compiler settings must not leak into the BPF build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
            || [
                "CARGO_ENCODED_",
                "CARGO_BUILD_",
                "CARGO_TARGET_",
                "CARGO_PROFILE_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            || k.starts_with("CARGO_UNSTABLE_")
        {
            cmd.env_remove(&k);
        }
    }
    // -Z build-std on a stable compiler; must be in cargo's own environment.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    let status = cmd.status().expect("running cargo for edge-ebpf");
    assert!(
        status.success(),
        "building edge-ebpf's bare program failed ({status}); run scripts/setup.sh"
    );
    let obj = target_dir.join("bpfel-unknown-none/release/bare");
    fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
