//! Builds the agent's eBPF programs (`edge-ebpf/`, a member of the workspace gated on the BPF
//! target) with Debian's rustc-web and embeds the object (`edge/src/probe/bpf.rs`); how, and why not
//! aya-build: `bpf-build/` and docs/toolchain.md. `EDGEFLOW_SKIP_BPF=1` embeds an empty object
//! (for clippy or doc runs that do not need the programs).
fn main() {
    bpf_build::build("edgeflow-ebpf", &[("edgeflow-ebpf", "edgeflow.bpf.o")]);
}
