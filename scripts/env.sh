# Sourced by the scripts: the PATH and variables builds and tests expect.
# rustup's cargo first (userspace crates build with stable 1.95); the eBPF crate names its
# own compiler (/usr/bin/rustc) in edge-ebpf/.cargo/config.toml.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
