//! Builds one of the workspace's eBPF crates (`edge-ebpf/`, `bench/ebpf/`) for
//! `bpfel-unknown-none` from a build script, and copies its objects into `OUT_DIR` to embed:
//! what aya-template does with aya-build. aya-build cannot be used here: it runs
//! `rustup run <toolchain> cargo` and strips RUSTC, while the BPF crates must build with
//! Debian's rustc-web (docs/toolchain.md).
//!
//! The inner cargo runs in `edge-ebpf/`, so `edge-ebpf/.cargo/config.toml` (the compiler, the
//! target, the rustflags, `build-std`) applies to every BPF crate, with the workspace's `bpf`
//! profile, into `$CARGO_TARGET_DIR/bpf` (one BPF build shared by every profile and target of
//! the outer build). The calling build script reruns when a file that build read changes.
//! `EDGEFLOW_SKIP_BPF=1` writes empty objects instead (clippy or doc runs that do not need
//! the programs).
use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Builds `package` and copies each `(bin, file)` of it to `OUT_DIR/file`. For build scripts
/// of packages at the workspace's top level (`edge/`, `bench/`). Panics with what to do when
/// the build fails.
pub fn build(package: &str, bins: &[(&str, &str)]) {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let config_dir = root.join("edge-ebpf");
    println!("cargo:rerun-if-changed=../edge-ebpf/.cargo/config.toml");
    println!("cargo:rerun-if-env-changed=EDGEFLOW_SKIP_BPF");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    if env::var_os("EDGEFLOW_SKIP_BPF").is_some_and(|v| v != "0") {
        println!("cargo:warning=EDGEFLOW_SKIP_BPF set: embedding an empty eBPF object");
        for (_, file) in bins {
            fs::write(out_dir.join(file), []).unwrap();
        }
        return;
    }

    // (A relative CARGO_TARGET_DIR is taken from edge-ebpf/, where the inner cargo runs.)
    let target_dir = config_dir.join(
        env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("bpf"),
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&config_dir)
        .args(["build", "-p", package, "--profile", "bpf", "--target-dir"])
        .arg(&target_dir);
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
    // -Z build-std on a stable compiler; must be in cargo's own environment.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {package}: {e}"));
    if !status.success() {
        panic!(
            "building {package} failed ({status}); run scripts/setup.sh to install the \
             eBPF toolchain (rustc-web, rust-web-src, bpf-linker)"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/bpf");
    let mut watch = BTreeSet::from(["Cargo.toml".to_string(), "Cargo.lock".to_string()]);
    for (bin, file) in bins {
        let obj = built.join(bin);
        let to = out_dir.join(file);
        fs::copy(&obj, &to).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
        sources(
            &built.join(format!("{bin}.d")),
            &root,
            &target_dir,
            &mut watch,
        );
    }
    // Relative to the calling package, not absolute: cargo keeps paths outside the package as
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
        // The nearest manifest above the file: its crate's.
        if let Some(krate) = rel
            .ancestors()
            .skip(1)
            .find(|a| !a.as_os_str().is_empty() && root.join(a).join("Cargo.toml").is_file())
        {
            watch.insert(krate.join("Cargo.toml").display().to_string());
        }
        watch.insert(rel.display().to_string());
    }
}
