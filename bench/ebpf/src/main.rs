//! The benchmark's reference floor (bin `bare`; the program is in `counter.rs`), built by
//! bench/build.rs for `bare-counter` and `prog-cost`. Like edge-ebpf, a member of the
//! workspace that means something only for the BPF target: a host build is an empty `main`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// As in edge-ebpf: atomic adds on the BPF target come from the intrinsics (BPF CPU v3).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

#[cfg(target_arch = "bpf")]
mod counter;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
