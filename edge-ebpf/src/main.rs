//! The agent's eBPF object (bin `edgeflow-ebpf`; the programs are in `programs.rs`).
//!
//! This crate is a member of the root workspace so that it shares its lock file and its
//! `shared` dependency with userspace, but it only means something for the BPF target:
//! edge/build.rs builds it for `bpfel-unknown-none` (bpf-build/, docs/toolchain.md). Built for the host
//! (`cargo clippy --workspace`, `cargo test --workspace`) it is an empty `main`, and its
//! dependencies are BPF-target only, so the host build compiles nothing of it.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The BPF target has no atomic read-modify-write methods on AtomicU64; the intrinsics lower
// to BPF atomic add/or instructions (with --cpu=v3).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

#[cfg(target_arch = "bpf")]
mod owner;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
