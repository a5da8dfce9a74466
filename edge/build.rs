//! Builds the eBPF objects (`edge-ebpf/`): the agent's, to embed, and the benchmark's bare
//! counter, whose path goes to `bench/build.rs` as cargo `links` metadata
//! (`DEP_EDGEFLOW_BPF_BARE`), so one build serves both. edge-ebpf is a member of the
//! workspace (its lock file, its `shared`) built with the workspace's `bpf` profile; this
//! script reruns when a file that build read changes.
//!
//! aya-build cannot be used here: it runs `rustup run <toolchain> cargo` and strips RUSTC,
//! while the BPF crate must build with Debian's rustc-web (see docs/toolchain.md and
//! edge-ebpf/.cargo/config.toml). Set EDGEFLOW_SKIP_BPF=1 to embed an empty object (for
//! clippy or doc runs that do not need the programs).
use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("edge-ebpf");
    println!("cargo:rerun-if-changed=../edge-ebpf/.cargo/config.toml");
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
    // (A relative CARGO_TARGET_DIR is taken from edge-ebpf/, where the inner cargo runs.)
    let target_dir = ebpf.join(
        env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("bpf"),
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args([
            "build",
            "-p",
            "edgeflow-ebpf",
            "--profile",
            "bpf",
            "--target-dir",
        ])
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
    let built = target_dir.join("bpfel-unknown-none/bpf");
    let mut watch = BTreeSet::from(["Cargo.toml".to_string(), "Cargo.lock".to_string()]);
    for (bin, to) in [("edgeflow-ebpf", &out), ("bare", &bare)] {
        let obj = built.join(bin);
        fs::copy(&obj, to).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
        sources(
            &built.join(format!("{bin}.d")),
            &root,
            &target_dir,
            &mut watch,
        );
    }
    // Relative to this package, not absolute: cargo keeps paths outside the package as
    // given, and an absolute path would tie the build cache to the clone that last ran this
    // script — a clone elsewhere sharing CARGO_TARGET_DIR would be told the programs are up
    // to date while its own sources changed.
    for p in watch {
        println!("cargo:rerun-if-changed=../{p}");
    }
}

/// What the BPF build read, relative to the workspace root, into `watch`: every file of this
/// clone its dep-info names (the programs and the workspace's `shared` crate) and the
/// manifests of the crates they belong to. Registry crates and rust-src are pinned by the
/// lock file, which `watch` holds with the workspace manifest (profiles, versions).
fn sources(dep_info: &Path, root: &Path, target_dir: &Path, watch: &mut BTreeSet<String>) {
    let text = fs::read_to_string(dep_info)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dep_info.display()));
    // "OUTPUT: DEP DEP ...", spaces inside a path escaped as "\ ".
    let deps = text
        .lines()
        .next()
        .and_then(|l| l.split_once(": "))
        .map_or("", |(_, d)| d);
    let deps = deps.replace("\\ ", "\0");
    for dep in deps
        .split_whitespace()
        .map(|d| PathBuf::from(d.replace('\0', " ")))
    {
        if dep.starts_with(target_dir) {
            continue;
        }
        let Ok(rel) = dep.strip_prefix(root) else {
            continue;
        };
        if let Some(krate) = rel.components().next() {
            let krate = Path::new(krate.as_os_str());
            watch.insert(krate.join("Cargo.toml").display().to_string());
        }
        watch.insert(rel.display().to_string());
    }
}
