//! Hands edge-ebpf's `bare` program (the reference floor, `edge-ebpf/src/bare.rs`) to the
//! `bare-counter` loader and `prog-cost` to embed. edge/build.rs builds it with the agent's
//! programs and passes its path as cargo `links` metadata.
use std::{env, fs, path::PathBuf};

fn main() {
    let from = env::var_os("DEP_EDGEFLOW_BPF_BARE")
        .map(PathBuf::from)
        .expect("edge/build.rs passes the bare object's path (links = \"edgeflow_bpf\")");
    println!("cargo:rerun-if-changed={}", from.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("bare.bpf.o");
    fs::copy(&from, &out).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}
