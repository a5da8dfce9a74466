//! The benchmark's reference floor (bin `bare`; the program is in `bare_counter.rs`). Built
//! for the BPF target only, like main.rs; a host build is an empty `main`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// As in main.rs: atomic adds on the BPF target come from the intrinsics (BPF CPU v3).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

#[cfg(target_arch = "bpf")]
mod bare_counter;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
