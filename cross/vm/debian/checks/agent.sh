# The agent's package on Debian with systemd (cross/vm/debian/run.sh): install, nothing started
# until configured, the config edit docs/install.md tells, `systemctl start`, known traffic
# on a veth (efv0 here, its peer efv1 in the namespace efb; IPv4 only, static neighbours, so
# nothing else crosses it), `systemctl stop`, `dpkg --purge`. The host's subscriber checks the
# summaries add up to exactly the `sent` lines and that "offline" arrived.
say() { echo "EFVM $*"; }
fail() { say "fail $*"; exit 1; }
present() { if [ -e "$1" ]; then echo present; else echo absent; fi; }
[ -n "$EFVM_BROKER" ] || fail "no EFVM_BROKER (run.sh --broker-port)"
E=/mnt/efvm/eftraffic
conf=/etc/edgeflow/edgeflow.toml
unit=edgeflow.service

# What is attached to efv0: `ingress=N egress=N xdp=N`.
hooks() {
  ing=$(tc filter show dev efv0 ingress 2>/dev/null | grep ' bpf ' | grep -c ' handle ')
  egr=$(tc filter show dev efv0 egress 2>/dev/null | grep ' bpf ' | grep -c ' handle ')
  xdp=$(ip -d link show dev efv0 | grep -c 'prog/xdp')
  echo "ingress=$ing egress=$egr xdp=$xdp"
}

deb=$(ls /mnt/efvm/edgeflow_*_"$(dpkg --print-architecture)".deb) || fail "no edgeflow package for $(dpkg --print-architecture)"
t0=$(date +%s%N)
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { sed 's/^/EFVM dpkg /' /tmp/dpkg.log; fail "dpkg -i"; }
say "installed package=$(dpkg-query -W -f='${Package}_${Version}_${Architecture}' edgeflow) ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
say "user $(getent passwd edgeflow | cut -d: -f1,6,7) group=$(getent group edgeflow | cut -d: -f1) conf=$(stat -c '%U:%G:%a' $conf)"
say "after-install enabled=$(systemctl is-enabled $unit) active=$(systemctl is-active $unit)"

# Unconfigured, a start is skipped by the unit's ExecCondition, not failed.
systemctl start $unit
rc=$?
say "unconfigured-start rc=$rc active=$(systemctl is-active $unit) result=$(systemctl show -p Result --value $unit)"
journalctl -u $unit --no-pager -o cat | grep -q 'names no interfaces and \[mqtt\] url yet' \
  && say "unconfigured-reason ok" || journalctl -u $unit --no-pager -o cat | sed 's/^/EFVM journal /'

# The link: IPv6 off and the neighbours fixed, so only the check's own packets cross it.
ip netns add efb || fail "netns add"
ip link add efv0 type veth peer name efv1 netns efb || fail "veth add"
# (Through /proc: minbase has no sysctl binary.)
echo 1 > /proc/sys/net/ipv6/conf/efv0/disable_ipv6 || fail "ipv6 off efv0"
ip netns exec efb sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6' \
  || fail "ipv6 off in efb"
ip addr add 10.77.0.1/24 dev efv0 && ip -n efb addr add 10.77.0.2/24 dev efv1 || fail "addr"
ip link set efv0 up && ip -n efb link set efv1 up && ip -n efb link set lo up || fail "link up"
ma=$(ip link show efv0 | awk '/link\/ether/ {print $2}')
mb=$(ip -n efb link show efv1 | awk '/link\/ether/ {print $2}')
ip neigh replace 10.77.0.2 lladdr "$mb" dev efv0 nud permanent
ip -n efb neigh replace 10.77.0.1 lladdr "$ma" dev efv1 nud permanent

# The one edit docs/install.md asks for (interfaces, broker), and a short window, a device and
# a site for the test.
sed -i -e 's|^# interfaces = .*|interfaces = ["efv0"]|' \
       -e "s|^# url = .*|url = \"mqtt://$EFVM_BROKER\"|" \
       -e "s|^# device = .*|device = \"deb-$EFVM_ARCH\"|" \
       -e 's|^site = .*|site = "vm"|' -e 's|^interval_secs = .*|interval_secs = 2|' $conf
t0=$(date +%s%N)
systemctl start $unit || { journalctl -u $unit --no-pager -o cat | sed 's/^/EFVM journal /'; fail "systemctl start"; }
i=0
until journalctl -u $unit --no-pager -o cat | grep -q 'edgeflow: ready'; do
  if [ "$(systemctl is-active $unit)" != active ]; then
    journalctl -u $unit --no-pager -o cat | sed 's/^/EFVM journal /'
    fail "edgeflow.service not active"
  fi
  i=$((i + 1)); [ $i -lt 3000 ] || fail "not ready in 300 s"
  sleep 0.1
done
pid=$(systemctl show -p MainPID --value $unit)
say "started ms=$(( ($(date +%s%N) - t0) / 1000000 )) user=$(stat -c %U /proc/$pid) capeff=$(awk '/^CapEff/ {print $2}' /proc/$pid/status) attached $(hooks)"

# Known traffic: 6 UDP datagrams of 100 bytes echoed, 3 pings.
: >/tmp/serve.out
ip netns exec efb $E udp-echo 10.77.0.2 5000 6 >>/tmp/serve.out 2>&1 &
sp=$!
i=0; until grep -q ready /tmp/serve.out; do i=$((i + 1)); [ $i -lt 200 ] || fail "echo"; sleep 0.05; done
out=$($E udp-send 10.77.0.2 5000 6 100) || fail "udp send"
wait $sp || fail "udp echo"
sport=$(echo "$out" | tr ' ' '\n' | sed -n 's/^sport=//p')
say "sent udp sport=$sport dport=5000 packets=12 bytes=$((12 * 128))"
ping -c 3 -i 0.2 -q 10.77.0.2 >/dev/null || fail "ping"
say "sent icmp type=8 code=0 packets=6 bytes=$((6 * 84))"
say "sent total packets=18 bytes=$((12 * 128 + 6 * 84))"
# Two more windows so the traffic is in published summaries; the stop drains the last one,
# waits for the broker's acknowledgements and publishes "offline".
sleep 5
t0=$(date +%s%N)
systemctl stop $unit
say "stopped ms=$(( ($(date +%s%N) - t0) / 1000000 )) status=$(systemctl show -p ExecMainStatus --value $unit) result=$(systemctl show -p Result --value $unit) after-stop $(hooks)"
journalctl -u $unit --no-pager -o cat | tail -n 5 | sed 's/^/EFVM journal /'

t0=$(date +%s%N)
dpkg --purge edgeflow >/tmp/purge.log 2>&1 || { sed 's/^/EFVM dpkg /' /tmp/purge.log; fail "dpkg --purge"; }
getent passwd edgeflow >/dev/null && user=present || user=absent
getent group edgeflow >/dev/null && group=present || group=absent
say "purged ms=$(( ($(date +%s%N) - t0) / 1000000 )) user=$user group=$group unit=$(present /lib/systemd/system/$unit) dropin=$(present /lib/systemd/system/$unit.d) enabled-link=$(present /etc/systemd/system/multi-user.target.wants/$unit) state=$(present /var/lib/edgeflow) config=$(present /etc/edgeflow) binary=$(present /usr/bin/edgeflow) unit-known=$(systemctl list-unit-files $unit --no-legend | wc -l)"
ip netns del efb
