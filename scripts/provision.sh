#!/usr/bin/env bash
# Provisions edgeflow's broker side (Debian's Mosquitto) and its devices: a CA, the broker's
# TLS certificate, a password per device (username = the device's principal `site/device`),
# the ACL (configs/mosquitto-acl: each device writes only edgeflow/v1/<site>/<device>/...,
# only the collector reads everyone's) and a ready mosquitto.conf. Needs openssl and
# mosquitto_passwd (both installed by scripts/setup.sh).
#
#   provision.sh init DIR [--port 8883] [--cert-port PORT+1] [--bind 127.0.0.1] [--host NAME]...
#       CA, broker certificate (SAN: localhost, 127.0.0.1, ::1 and each --host), ACL, empty
#       password file, DIR/mosquitto.conf (devices with a password on --port, with a client
#       certificate on --cert-port), and the collector's login (DIR/collector.toml).
#   provision.sh device DIR SITE DEVICE [--cert] [--url mqtts://HOST:PORT]
#       A random password for SITE/DEVICE in DIR/passwd, or with --cert a client certificate
#       (CN = SITE/DEVICE) signed by the CA, and the agent's settings in
#       DIR/devices/SITE/DEVICE/edgeflow.toml (with a copy of the CA certificate).
#   provision.sh collector DIR NAME [--share-group GROUP]
#       Another collector's login (user NAME, which the broker also takes as its client id, so
#       each collector keeps a session of its own), its read lines in the ACL, and
#       DIR/collector-NAME.toml; with --share-group the collectors of GROUP share the devices'
#       summaries (an MQTT shared subscription; give them one PostgreSQL --db).
#   provision.sh bulk DIR SITE PREFIX COUNT
#       COUNT devices SITE/PREFIX0..: passwords in DIR/passwd, and DIR/loadgen-SITE.txt with
#       one `site/device password` line each (what `edgeflow-loadgen --credentials` reads).
#
# A running broker reads the password file again on SIGHUP (systemctl reload mosquitto).
# Files holding secrets are mode 0640, group mosquitto (the broker drops to that user).
set -euo pipefail

die() { echo "provision: $*" >&2; exit 2; }
ID_RE='^[A-Za-z0-9._-]{1,64}$'
HERE=$(cd "$(dirname "$0")/.." && pwd)

# The ACL lines of a collector's login: it reads every device's topics.
acl_collector() {
  if ! grep -qx "user $1" "$dir/acl"; then
    printf '\nuser %s\ntopic read edgeflow/v1/+/+/flows\ntopic read edgeflow/v1/+/+/status\n' \
      "$1" >>"$dir/acl"
  fi
}

secret_file() {
  chmod 0640 "$1"
  if getent group mosquitto >/dev/null; then chgrp mosquitto "$1"; fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: provision.sh init|device|collector|bulk DIR ... (see the script's header)"
shift 2

case "$cmd" in
init)
  port=8883 bind=127.0.0.1 hosts=() cert_port=
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port=$2; shift 2 ;;
      --cert-port) cert_port=$2; shift 2 ;;
      --bind) bind=$2; shift 2 ;;
      --host) hosts+=("$2"); shift 2 ;;
      *) die "init: unknown option $1" ;;
    esac
  done
  cert_port=${cert_port:-$((port + 1))}
  mkdir -p "$dir/persist" "$dir/devices"
  dir=$(cd "$dir" && pwd)
  if getent passwd mosquitto >/dev/null; then chown mosquitto "$dir/persist"; fi
  if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=edgeflow CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    chmod 0600 "$dir/ca.key"
  fi
  if [ ! -f "$dir/server.crt" ]; then
    san="DNS:localhost,IP:127.0.0.1,IP:::1"
    for h in "${hosts[@]}"; do
      if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=edgeflow broker" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -out "$dir/server.crt" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
    rm -f "$dir/server.csr"
    secret_file "$dir/server.key"
  fi
  cp "$HERE/configs/mosquitto-acl" "$dir/acl"
  # Collectors provisioned earlier (provision.sh collector) keep their read lines.
  for f in "$dir"/collector-*.toml; do
    [ -e "$f" ] || continue
    name=${f##*/collector-}; name=${name%.toml}
    acl_collector "$name"
  done
  touch "$dir/passwd"
  secret_file "$dir/passwd"
  # The shipped config with this directory's paths and the chosen listener.
  sed -e "s#/etc/edgeflow/broker/#$dir/#g" -e "s#/var/lib/edgeflow/mosquitto/#$dir/persist/#" \
    -e "s#^listener 8883\$#listener $port $bind#" -e "s#^listener 8884\$#listener $cert_port $bind#" \
    "$HERE/configs/mosquitto.conf" >"$dir/mosquitto.conf"
  # The collector's own login.
  if [ ! -f "$dir/collector.toml" ]; then
    pass=$(openssl rand -hex 24)
    mosquitto_passwd -b "$dir/passwd" edgeflow-collector "$pass"
    host=$bind
    [[ $host == 0.0.0.0 || $host == :: ]] && host=127.0.0.1
    [[ $host == *:* ]] && host="[$host]"
    cat >"$dir/collector.toml" <<EOF
# edgeflow-collector --config $dir/collector.toml
broker = "mqtts://$host:$port"
ca = "$dir/ca.crt"
client_id = "edgeflow-collector"
username = "edgeflow-collector"
password = "$pass"
EOF
    chmod 0600 "$dir/collector.toml"
  fi
  # Mosquitto started as root drops to its own user: it must reach these files.
  if getent passwd mosquitto >/dev/null && command -v runuser >/dev/null &&
    ! runuser -u mosquitto -- test -r "$dir/passwd"; then
    echo "provision: warning: user mosquitto cannot read $dir/passwd (a parent folder's" \
      "permissions?); the broker will not start" >&2
  fi
  echo "provision: broker files in $dir; start it with: mosquitto -c $dir/mosquitto.conf"
  ;;
device)
  site=${1:-}; device=${2:-}
  shift 2 || die "device: SITE DEVICE missing"
  [[ $site =~ $ID_RE ]] || die "site '$site' must be 1-64 characters of A-Z a-z 0-9 . _ -"
  [[ $device =~ $ID_RE ]] || die "device '$device' must be 1-64 characters of A-Z a-z 0-9 . _ -"
  [ -f "$dir/ca.crt" ] || die "$dir has no CA: run provision.sh init $dir first"
  dir=$(cd "$dir" && pwd)
  url=$(sed -n 's/^broker = "\(.*\)"$/\1/p' "$dir/collector.toml")
  cert= url_given=
  while [ $# -gt 0 ]; do
    case "$1" in
      --url) url=$2; url_given=1; shift 2 ;;
      --cert) cert=1; shift ;;
      *) die "device: unknown option $1" ;;
    esac
  done
  out="$dir/devices/$site/$device"
  mkdir -p "$out"
  cp "$dir/ca.crt" "$out/ca.crt"
  if [ -n "$cert" ]; then
    # The certificate listener (the second one) unless --url says otherwise.
    if [ -z "$url_given" ]; then
      cport=$(sed -n 's/^listener \([0-9]*\) .*/\1/p' "$dir/mosquitto.conf" | sed -n 2p)
      url="${url%:*}:$cport"
    fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=$site\/$device" -keyout "$out/device.key" -out "$out/device.csr" 2>/dev/null
    openssl x509 -req -in "$out/device.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -out "$out/device.crt" \
      -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
    rm -f "$out/device.csr"
    chmod 0600 "$out/device.key"
    cat >"$out/edgeflow.toml" <<EOF
# edgeflow run --config $out/edgeflow.toml --iface IFACE
# (copy this folder to the device; the three paths must point at its copies)
site = "$site"
device = "$device"

[mqtt]
url = "$url"
require_tls = true
ca_file = "$out/ca.crt"
cert_file = "$out/device.crt"
key_file = "$out/device.key"
EOF
    chmod 0600 "$out/edgeflow.toml"
    echo "provision: $site/$device: certificate CN=$site/$device, $out/edgeflow.toml"
    exit 0
  fi
  pass=$(openssl rand -hex 24)
  # Replaces an earlier password of the same device (mosquitto_passwd updates in place).
  mosquitto_passwd -b "$dir/passwd" "$site/$device" "$pass"
  cat >"$out/edgeflow.toml" <<EOF
# edgeflow run --config $out/edgeflow.toml --iface IFACE
# (copy this folder to the device; ca_file must point at its copy of ca.crt)
site = "$site"
device = "$device"

[mqtt]
url = "$url"
require_tls = true
ca_file = "$out/ca.crt"
username = "$site/$device"
password = "$pass"
EOF
  chmod 0600 "$out/edgeflow.toml"
  echo "provision: $site/$device: $out/edgeflow.toml (reload the broker to take the password)"
  ;;
collector)
  name=${1:-}
  shift || die "collector: NAME missing"
  # No '/': device logins are site/device, so a collector's can never be a device's.
  [[ $name =~ $ID_RE ]] || die "collector name '$name' must be 1-64 characters of A-Z a-z 0-9 . _ -"
  [ -f "$dir/collector.toml" ] || die "$dir has no collector login: run provision.sh init $dir first"
  dir=$(cd "$dir" && pwd)
  group=
  while [ $# -gt 0 ]; do
    case "$1" in
      --share-group) group=$2; shift 2 ;;
      *) die "collector: unknown option $1" ;;
    esac
  done
  [ -z "$group" ] || [[ $group =~ $ID_RE ]] || die "share group '$group' must be 1-64 characters of A-Z a-z 0-9 . _ -"
  pass=$(openssl rand -hex 24)
  mosquitto_passwd -b "$dir/passwd" "$name" "$pass"
  acl_collector "$name"
  out="$dir/collector-$name.toml"
  {
    echo "# edgeflow-collector --config $out --db postgres://..."
    grep -E '^(broker|ca) = ' "$dir/collector.toml"
    echo "client_id = \"$name\""
    echo "username = \"$name\""
    echo "password = \"$pass\""
    [ -z "$group" ] || echo "share_group = \"$group\""
  } >"$out"
  chmod 0600 "$out"
  echo "provision: collector $name: $out (reload the broker to take the login)"
  ;;
bulk)
  site=${1:-}; prefix=${2:-}; count=${3:-}
  [[ $site =~ $ID_RE ]] || die "bulk: bad site '$site'"
  [[ ${prefix}0 =~ $ID_RE ]] || die "bulk: bad prefix '$prefix'"
  [[ $count =~ ^[0-9]+$ ]] || die "bulk: COUNT must be a number"
  [ -f "$dir/passwd" ] || die "$dir has no password file: run provision.sh init $dir first"
  creds="$dir/loadgen-$site.txt"
  plain=$(mktemp)
  : >"$creds"
  for i in $(seq 0 $((count - 1))); do
    pass=$(openssl rand -hex 12)
    echo "$site/$prefix$i:$pass" >>"$plain"
    echo "$site/$prefix$i $pass" >>"$creds"
  done
  # Hash them all at once, then add them to the broker's file.
  mosquitto_passwd -U "$plain"
  cat "$plain" >>"$dir/passwd"
  rm -f "$plain"
  chmod 0600 "$creds"
  echo "provision: $count devices $site/${prefix}0.. in $dir/passwd; credentials in $creds"
  ;;
*) die "unknown command $cmd (init, device, collector or bulk)" ;;
esac
