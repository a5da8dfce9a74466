# The collector's package on Debian with systemd (cross/vm/debian/run.sh --http-port): install,
# nothing started until configured, the config edit (broker, listen address, token),
# `systemctl start`; once its API says it is subscribed this prints `collector-up` and waits
# for the host (which publishes a summary, reads the dashboard and the API through the
# forwarded port, then publishes the retained efvm/go); `systemctl stop`, `dpkg --purge`.
say() { echo "EFVM $*"; }
fail() { say "fail $*"; exit 1; }
present() { if [ -e "$1" ]; then echo present; else echo absent; fi; }
[ -n "$EFVM_BROKER" ] || fail "no EFVM_BROKER (run.sh --broker-port)"
[ -n "$EFVM_TOKEN" ] || fail "no EFVM_TOKEN"
conf=/etc/edgeflow/collector.toml
unit=edgeflow-collector.service
journal() { journalctl -u $unit --no-pager -o cat | sed 's/^/EFVM journal /'; }

deb=$(ls /mnt/efvm/edgeflow-collector_*_"$(dpkg --print-architecture)".deb) || fail "no edgeflow-collector package"
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { sed 's/^/EFVM dpkg /' /tmp/dpkg.log; fail "dpkg -i"; }
say "installed package=$(dpkg-query -W -f='${Package}_${Version}_${Architecture}' edgeflow-collector)"
say "after-install enabled=$(systemctl is-enabled $unit) active=$(systemctl is-active $unit)"
systemctl start $unit
rc=$?
say "unconfigured-start rc=$rc active=$(systemctl is-active $unit)"
journalctl -u $unit --no-pager -o cat | grep -q 'names no broker yet' && say "unconfigured-reason ok" || journal

sed -i -e "s|^# broker = .*|broker = \"mqtt://$EFVM_BROKER\"|" \
       -e 's|^http = .*|http = "0.0.0.0:8080"|' \
       -e "s|^# token = .*|token = \"$EFVM_TOKEN\"|" $conf
systemctl start $unit || { journal; fail "systemctl start"; }
i=0
until curl -sf -H "Authorization: Bearer $EFVM_TOKEN" http://127.0.0.1:8080/api/ingest 2>/dev/null \
      | grep -q '"broker_connected":true'; do
  [ "$(systemctl is-active $unit)" = active ] || { journal; fail "edgeflow-collector.service not active"; }
  i=$((i + 1)); [ $i -lt 600 ] || { journal; fail "not subscribed in 300 s"; }
  sleep 0.5
done
pid=$(systemctl show -p MainPID --value $unit)
say "collector-up user=$(stat -c %U /proc/$pid) capeff=$(awk '/^CapEff/ {print $2}' /proc/$pid/status)"
mosquitto_sub -h "${EFVM_BROKER%:*}" -p "${EFVM_BROKER#*:}" -t efvm/go -C 1 -W 300 >/dev/null \
  || fail "no efvm/go from the host"
ls /var/lib/edgeflow/collector.db >/dev/null || fail "no database in /var/lib/edgeflow"
systemctl stop $unit
say "stopped status=$(systemctl show -p ExecMainStatus --value $unit) result=$(systemctl show -p Result --value $unit)"
dpkg --purge edgeflow-collector >/tmp/purge.log 2>&1 || { sed 's/^/EFVM dpkg /' /tmp/purge.log; fail "dpkg --purge"; }
getent passwd edgeflow >/dev/null && user=present || user=absent
say "purged user=$user unit=$(present /lib/systemd/system/$unit) db=$(present /var/lib/edgeflow/collector.db) state=$(present /var/lib/edgeflow) config=$(present /etc/edgeflow) unit-known=$(systemctl list-unit-files $unit --no-legend | wc -l)"
