# Sourced by the cross scripts: Debian's cargo 1.96 (matching /usr/bin/rustc) first, rustup's out
# of the way, zig from the venv, and a build cache outside the clone.
VENV=${EDGEFLOW_CROSS_VENV:-/opt/edgeflow-cross/venv}
export PATH="$VENV/bin:/usr/bin:$PATH"
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}/cross"
# zig's cache (~190 MB) beside the build cache, not in $HOME.
export XDG_CACHE_HOME="${CARGO_TARGET_DIR}/xdg-cache"
unset RUSTUP_TOOLCHAIN
# Debian ships no self-contained musl crt objects: link against zig's (see TOOLCHAIN.md). Set
# here as well as in config.toml because cargo-zigbuild sets its own target rustflags.
export RUSTFLAGS="-C link-self-contained=no"
export RUSTDOCFLAGS="-C link-self-contained=no"
