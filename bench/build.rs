//! Builds the bench's reference floor, the bare counter (`bench/ebpf/`, a member of the
//! workspace gated on the BPF target), for `bare-counter` and `prog-cost` to embed, the same
//! way edge/build.rs builds the agent's programs (`bpf-build/`).
fn main() {
    bpf_build::build("edgeflow-bench-ebpf", &[("bare", "bare.bpf.o")]);
}
