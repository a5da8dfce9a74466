#!/usr/bin/env bash
# Builds the Debian packages of edgeflow from this repository, then checks them with lintian:
#   sudo packaging/build.sh [ARCH...]      ARCH: amd64 | arm64 | armhf (default: all three)
# edgeflow (the agent) for every ARCH, edgeflow-collector for amd64 and arm64; both carry the
# static musl builds of cross/build.sh (brought up to date first unless EDGEFLOW_DEB_NO_BUILD=1).
# Versioned from the workspace (Cargo.toml). Results: $CARGO_TARGET_DIR/deb/*.deb (default
# /var/tmp/edgeflow-target/deb), one path per line on stdout. Exit 1 when lintian reports a tag
# that packaging/lintian-overrides does not argue away.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE=${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}
OUT=$BASE/deb

archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 armhf)
for a in "${archs[@]}"; do
  case $a in amd64|arm64|armhf) ;; *) echo "usage: packaging/build.sh [amd64|arm64|armhf ...]" >&2; exit 2 ;; esac
done
for t in dpkg-deb lintian gzip; do
  command -v $t >/dev/null || { echo "packaging/build.sh: $t missing (scripts/setup.sh installs it)" >&2; exit 2; }
done

# The workspace version (Cargo.toml [workspace.package]); Debian revision 1.
upstream=$(awk '/^\[workspace.package\]/ {w=1; next} /^\[/ {w=0} w && $1=="version" {gsub(/"/, "", $3); print $3; exit}' "$ROOT/Cargo.toml")
[ -n "$upstream" ] || { echo "packaging/build.sh: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
version="$upstream-1"
# Reproducible: every timestamp is the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
date_rfc=$(date -u -d "@$SOURCE_DATE_EPOCH" -R)
date_man=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
maintainer="edgeflow developers <edgeflow@users.noreply.github.com>"

triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    armhf) echo armv7-unknown-linux-musleabihf ;;
  esac
}
cross_arch() { case $1 in amd64) echo x86_64 ;; arm64) echo aarch64 ;; armhf) echo armv7 ;; esac; }
# Runs a binary of ARCH on this host (qemu-user for the foreign ones), with argv[0] NAME.
run_as() {
  local arch=$1 name=$2 bin=$3
  shift 3
  case $arch in
    amd64) (exec -a "$name" "$bin" "$@") ;;
    arm64) qemu-aarch64-static -0 "$name" "$bin" "$@" ;;
    armhf) qemu-arm-static -0 "$name" "$bin" "$@" ;;
  esac
}

if [ "${EDGEFLOW_DEB_NO_BUILD:-0}" != 1 ]; then
  for a in "${archs[@]}"; do
    "$ROOT/cross/build.sh" "$(cross_arch "$a")" >&2
    if [ "$a" != armhf ]; then
      # The collector: the same static toolchain and size-first profile as the agent.
      (source "$ROOT/cross/env.sh" && cd "$ROOT" && cargo --config "$ROOT/cross/config.toml" zigbuild \
         --locked --profile edge-release -Z build-std=std,panic_abort --target "$(triple "$a")" \
         -p edgeflow-collector --bin edgeflow-collector) >&2
    fi
  done
fi

# man_page NAME SECTION DESCRIPTION ARCH BIN FILES: a man page made of the binary's own --help
# texts (the top level and each command's), so it cannot drift from the program.
man_page() {
  local name=$1 section=$2 desc=$3 arch=$4 bin=$5 files=$6 cmds c
  esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
  printf '.TH %s %s "%s" "%s %s" "System Administration"\n' "${name^^}" "$section" "$date_man" "$name" "$upstream"
  printf '.SH NAME\n%s \\- %s\n' "$name" "$desc"
  printf '.SH DESCRIPTION\n.nf\n'
  run_as "$arch" "$name" "$bin" --help | esc
  printf '.fi\n'
  cmds=$(run_as "$arch" "$name" "$bin" --help | awk '/^Commands:/ {c=1; next} c && /^  [a-z]/ {print $1}')
  for c in $cmds; do
    printf '.SH COMMAND: %s\n.nf\n' "${c^^}"
    run_as "$arch" "$name" "$bin" "$c" --help | esc
    printf '.fi\n'
  done
  printf '.SH FILES\n%s\n' "$files"
  printf '.SH SEE ALSO\n.BR systemctl (1),\n.BR journalctl (1)\n'
}

# common_files PKG DIR: copyright and changelog.
common_files() {
  local pkg=$1 dir=$2
  install -D -m 0644 "$HERE/copyright" "$dir/usr/share/doc/$pkg/copyright"
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from the edgeflow repository (packaging/build.sh).\n\n -- %s  %s\n' \
    "$pkg" "$version" "$maintainer" "$date_rfc" | gzip -9n > "$dir/usr/share/doc/$pkg/changelog.Debian.gz"
  if [ -f "$HERE/$pkg/lintian-overrides" ]; then
    install -D -m 0644 "$HERE/$pkg/lintian-overrides" "$dir/usr/share/lintian/overrides/$pkg"
  fi
}

# finish PKG ARCH DIR DEPENDS DESCRIPTION: control, md5sums, maintainer scripts; builds the .deb.
finish() {
  local pkg=$1 arch=$2 dir=$3 depends=$4 desc=$5 deb s
  mkdir -p "$dir/DEBIAN"
  for s in postinst prerm postrm; do install -m 0755 "$HERE/$pkg/$s" "$dir/DEBIAN/$s"; done
  (cd "$dir" && find etc -type f | sed 's|^|/|' | sort) > "$dir/DEBIAN/conffiles"
  (cd "$dir" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z \
     | xargs -0 md5sum) > "$dir/DEBIAN/md5sums"
  cat > "$dir/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$dir" | cut -f1)
Depends: $depends
Section: net
Priority: optional
Description: $desc
EOF
  cat "$HERE/$pkg/description" >> "$dir/DEBIAN/control"
  find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  deb="$OUT/${pkg}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$deb" >/dev/null
  echo "$deb"
}

mkdir -p "$OUT"
work=$(mktemp -d "$OUT/.build.XXXXXX")
chmod 0755 "$OUT"
trap 'rm -rf "$work"' EXIT
debs=()
for a in "${archs[@]}"; do
  t=$(triple "$a")
  bindir="$BASE/cross/$t/edge-release"

  # --- edgeflow (the agent) ---
  d="$work/edgeflow-$a"
  install -D -m 0755 "$bindir/edgeflow" "$d/usr/bin/edgeflow"
  # The repo's unit as it is (least capabilities: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON), with the
  # binary where the package puts it, and the package's drop-in beside it.
  install -d "$d/lib/systemd/system/edgeflow.service.d"
  sed 's|/usr/local/bin/edgeflow|/usr/bin/edgeflow|' "$ROOT/configs/edgeflow.service" \
    | grep -v '^#   ' > "$d/lib/systemd/system/edgeflow.service"
  chmod 0644 "$d/lib/systemd/system/edgeflow.service"
  install -m 0644 "$HERE/edgeflow/package.conf" "$d/lib/systemd/system/edgeflow.service.d/package.conf"
  install -D -m 0755 "$HERE/edgeflow/config-ready" "$d/usr/lib/edgeflow/config-ready"
  # The commented example, with the two settings an operator must make commented out (the unit
  # waits for them) and the spool in the state directory.
  install -d "$d/etc/edgeflow"
  {
    printf '# Installed by the edgeflow package. The service starts once `interfaces` and the\n'
    printf '# [mqtt] `url` below are set: edit them, then `systemctl start edgeflow`.\n'
    sed -e 's|^interfaces = |# interfaces = |' -e 's|^url = |# url = |' \
        -e 's|^# file = "/var/lib/edgeflow/spool"|file = "/var/lib/edgeflow/spool"|' "$ROOT/configs/edgeflow.toml"
  } > "$d/etc/edgeflow/edgeflow.toml"
  for want in '^# interfaces = ' '^# url = ' '^file = "/var/lib/edgeflow/spool"'; do
    grep -q "$want" "$d/etc/edgeflow/edgeflow.toml" || { echo "packaging/build.sh: configs/edgeflow.toml changed: no line $want" >&2; exit 1; }
  done
  chmod 0644 "$d/etc/edgeflow/edgeflow.toml"
  install -d "$d/usr/share/man/man8"
  man_page edgeflow 8 "flow sampler for edge boxes: XDP/TC flow table, MQTT summaries" "$a" "$bindir/edgeflow" \
    "/etc/edgeflow/edgeflow.toml (configuration), /var/lib/edgeflow/spool (summaries not yet acknowledged by the broker), edgeflow.service (systemd unit)" \
    | gzip -9n > "$d/usr/share/man/man8/edgeflow.8.gz"
  common_files edgeflow "$d"
  debs+=("$(finish edgeflow "$a" "$d" adduser "flow sampler for edge boxes (XDP/TC flow table, MQTT summaries)")")

  # --- edgeflow-collector ---
  [ "$a" != armhf ] || continue
  d="$work/edgeflow-collector-$a"
  install -D -m 0755 "$bindir/edgeflow-collector" "$d/usr/bin/edgeflow-collector"
  install -D -m 0644 "$HERE/edgeflow-collector/edgeflow-collector.service" "$d/lib/systemd/system/edgeflow-collector.service"
  install -D -m 0755 "$HERE/edgeflow-collector/config-ready" "$d/usr/lib/edgeflow/collector-config-ready"
  install -D -m 0644 "$HERE/edgeflow-collector/collector.toml" "$d/etc/edgeflow/collector.toml"
  install -d "$d/usr/share/man/man8"
  man_page edgeflow-collector 8 "central collector of edgeflow summaries: SQLite store, dashboard, API" "$a" \
    "$bindir/edgeflow-collector" \
    "/etc/edgeflow/collector.toml (configuration), /var/lib/edgeflow/collector.db (the database), edgeflow-collector.service (systemd unit)" \
    | gzip -9n > "$d/usr/share/man/man8/edgeflow-collector.8.gz"
  common_files edgeflow-collector "$d"
  debs+=("$(finish edgeflow-collector "$a" "$d" adduser "edgeflow collector (MQTT summaries into SQLite, dashboard, API)")")
done

# lintian: every tag it reports must be argued in packaging/<pkg>/lintian-overrides (shipped in
# the package, where lintian reads it) and in docs/install.md.
lint=0
for deb in "${debs[@]}"; do
  # As an unprivileged user when run as root (lintian unpacks what it checks).
  as=(); [ "$(id -u)" != 0 ] || as=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp)
  if ! out=$("${as[@]}" lintian --fail-on error,warning,info --tag-display-limit 0 "$deb" 2>&1); then lint=1; fi
  if [ -n "$out" ]; then printf '%s\n' "$out" >&2; fi
done
printf '%s\n' "${debs[@]}"
[ "$lint" = 0 ] || { echo "packaging/build.sh: lintian tags above (argue them in packaging/*/lintian-overrides and docs/install.md, or fix them)" >&2; exit 1; }
