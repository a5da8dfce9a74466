// edgeflow collector dashboard: polls the JSON API and redraws. No build step, no libraries.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh")) || 2000;
const PROTO = { 1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP" };
const COLORS = ["#38bdf8", "#a78bfa", "#34d399", "#fbbf24", "#f87171", "#f472b6", "#2dd4bf", "#fb923c"];

// A token given once as #token=... is kept for this tab and removed from the address bar.
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) { sessionStorage.setItem("edgeflow-token", hashToken); history.replaceState(null, "", location.pathname + location.search); }
const token = () => sessionStorage.getItem("edgeflow-token");

const state = {
  range: Number(localStorage.getItem("edgeflow-range")) || 900000,
  device: "",
  metric: "bytes",
  filters: { addr: "", port: "", proto: "" },
  colors: {},
  busy: false,
};

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function si(v, unit, digits = 3) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [d, p] of steps) if (a >= d) return `${(v / d).toPrecision(digits)} ${p}${unit}`;
  return `${Math.round(v * 10) / 10} ${unit}`;
}
const bytes = (v) => si(v, "B");
const rate = (v) => si(v, "B/s");
const prate = (v) => si(v, "pkt/s");
const count = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));
function ago(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}
const clock = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
const endpoint = (addr, port, proto) =>
  proto === 1 || proto === 58 ? `${addr}` : addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
const colorOf = (device) => {
  if (!(device in state.colors)) state.colors[device] = COLORS[Object.keys(state.colors).length % COLORS.length];
  return state.colors[device];
};

async function api(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const r = await fetch(`${path}?${q}`, { headers, cache: "no-store" });
  if (r.status === 401) throw new Error("unauthorized: open the dashboard with #token=YOUR_TOKEN");
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const to = Date.now();
  const from = to - state.range;
  const base = { from, to, device: state.device };
  try {
    const [devices, series, talkers, convs, flows, rtt, ingest] = await Promise.all([
      api("/api/devices", { from, to }),
      api("/api/series", { ...base, step: Math.round(state.range / 180) }),
      api("/api/talkers", { ...base, limit: 10 }),
      api("/api/conversations", { ...base, limit: 10 }),
      api("/api/flows", { ...base, ...state.filters, limit: 200 }),
      api("/api/rtt", base),
      api("/api/ingest"),
    ]);
    renderDevices(devices);
    renderKpis(devices, ingest);
    renderChart(series);
    renderTalkers(talkers);
    renderConversations(convs);
    renderFlows(flows);
    renderRtt(rtt);
    renderIngest(ingest);
    $("live").className = "live ok";
    $("live-text").textContent = `live · ${clock(Date.now())}`;
  } catch (e) {
    $("live").className = "live err";
    $("live-text").textContent = e.message;
  } finally {
    state.busy = false;
  }
}

function renderDevices(d) {
  const sel = $("device");
  const names = d.devices.map((x) => x.id);
  const have = [...sel.options].slice(1).map((o) => o.value);
  if (names.join("\n") !== have.join("\n")) {
    sel.innerHTML = `<option value="">all devices</option>` + names.map((n) => `<option>${esc(n)}</option>`).join("");
    sel.value = state.device;
  }
  const rows = d.devices.map((x) => {
    const l = x.latest, h = l && l.health;
    const fill = h ? h.table_fill : null;
    const fillCls = fill == null ? "" : fill > 0.9 ? "bad" : fill > 0.7 ? "warn" : "";
    const drops = h ? h.table_full : null;
    return `<tr data-device="${esc(x.id)}">
      <td><span class="dot" style="color:${colorOf(x.id)}">■</span> <b>${esc(x.device)}</b></td>
      <td class="dim">${esc(x.site)}</td>
      <td><span class="state ${x.state}">${x.state}</span></td>
      <td title="${l ? new Date(l.received_ms).toISOString() : ""}">${l ? ago(l.received_ms) : "–"}</td>
      <td class="num" data-bps="${l ? l.bytes_per_s : ""}">${l ? rate(l.bytes_per_s) : "–"}</td>
      <td class="num" data-pps="${l ? l.packets_per_s : ""}">${l ? prate(l.packets_per_s) : "–"}</td>
      <td>${h ? `<span class="fill ${fillCls}" title="${count(h.active_flows)} of ${count(h.table_capacity)} entries"><span class="track"><i style="width:${Math.min(100, fill * 100).toFixed(1)}%"></i></span>${(fill * 100).toFixed(1)}%</span>` : "–"}</td>
      <td class="num ${drops ? "warn-text" : ""}" title="packets that found the flow table full">${h ? count(drops) : "–"}</td>
      <td class="num ${x.gaps ? "warn-text" : ""}" data-gaps="${x.gaps}" title="windows the device numbered that were never stored, over ${x.boots} run(s)">${count(x.gaps)}</td>
      <td class="num ${h && h.spool_dropped ? "warn-text" : ""}" title="windows the device's spool dropped (its own count, this run)">${h ? count(h.spool_dropped) : "–"}</td>
      <td class="num">${h ? h.cpu_pct.toFixed(1) + " %" : "–"}</td>
      <td class="num">${h ? bytes(h.rss_kib * 1024) : "–"}</td>
      <td class="num">${h ? count(h.spool_depth) : "–"}</td>
      <td class="num" data-bytes="${x.totals.bytes}">${bytes(x.totals.bytes)}</td></tr>`;
  });
  $("devices").tBodies[0].innerHTML = rows.length ? rows.join("") : `<tr class="empty"><td colspan="14">no device has reported yet</td></tr>`;
}

function renderKpis(d, ing) {
  const online = d.devices.filter((x) => x.state === "online").length;
  $("k-online").textContent = `${online} / ${d.devices.length}`;
  const silent = d.devices.filter((x) => x.state === "silent").length, offline = d.devices.filter((x) => x.state === "offline").length;
  const gaps = d.devices.reduce((a, x) => a + x.gaps, 0);
  $("k-devices").textContent = `${count(gaps)} windows missing · ${offline} offline · ${silent} silent`;
  const live = d.devices.filter((x) => x.state === "online" && x.latest);
  $("k-bps").textContent = rate(live.reduce((a, x) => a + x.latest.bytes_per_s, 0));
  $("k-pps").textContent = prate(live.reduce((a, x) => a + x.latest.packets_per_s, 0));
  const sel = d.devices.filter((x) => !state.device || x.id === state.device);
  $("k-bytes").textContent = bytes(sel.reduce((a, x) => a + x.totals.bytes, 0));
  $("k-packets").textContent = `${count(sel.reduce((a, x) => a + x.totals.packets, 0))} packets · ${count(sel.reduce((a, x) => a + x.windows, 0))} windows`;
  $("k-ingest").textContent = `${si(ing.rates.flow_records_per_s, "flows/s")}`;
  $("k-ingest2").textContent = `${ing.rates.messages_per_s.toFixed(1)} msg/s · broker ${ing.broker_connected ? "connected" : "DISCONNECTED"}`;
  $("k-stored").textContent = count(ing.stored.summaries);
  $("k-stored2").textContent = `summaries · ${count(ing.stored.flow_records)} flow records`;
  const rej = Object.values(ing.rejected).reduce((a, b) => a + b, 0);
  $("k-rejected").textContent = count(rej);
  $("k-rejected2").textContent = rej ? Object.entries(ing.rejected).map(([k, v]) => `${k} ${v}`).join(" · ") : "none since start";
  $("kpi-rejected").classList.toggle("alert", rej > 0);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function renderChart(s) {
  const el = $("chart");
  const key = state.metric === "bytes" ? "bytes_per_s" : "packets_per_s";
  const fmt = state.metric === "bytes" ? rate : prate;
  if (!s.devices.length) {
    el.innerHTML = `<div class="nodata">no summaries in this range</div>`;
    $("legend").innerHTML = "";
    return;
  }
  const W = el.clientWidth || 900, H = el.clientHeight || 260, L = 74, R = 12, T = 10, B = 24;
  const max = niceMax(Math.max(0, ...s.devices.flatMap((d) => d[key].filter((v) => v != null))));
  const x = (t) => L + ((t - s.from) / (s.to - s.from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const mid = (i) => x(s.t[i] + s.step_ms / 2).toFixed(1);
  let g = `<g class="grid">`;
  for (let i = 0; i <= 4; i++) g += `<line x1="${L}" x2="${W - R}" y1="${y((max * i) / 4)}" y2="${y((max * i) / 4)}"/>`;
  g += `</g><g class="axis">`;
  for (let i = 0; i <= 4; i++) g += `<text x="${L - 8}" y="${y((max * i) / 4) + 4}" text-anchor="end">${fmt((max * i) / 4)}</text>`;
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const t = s.from + ((s.to - s.from) * i) / ticks;
    g += `<text x="${x(t)}" y="${H - 6}" text-anchor="${i === 0 ? "start" : i === ticks ? "end" : "middle"}">${clock(t).slice(0, state.range > 3600000 ? 5 : 8)}</text>`;
  }
  g += `</g>`;
  let lines = "";
  for (const d of s.devices) {
    const c = colorOf(d.id);
    // Runs of buckets with data; a gap (no window reported) breaks the line.
    const runs = [];
    let run = [];
    d[key].forEach((v, i) => {
      if (v == null) { if (run.length) runs.push(run); run = []; } else run.push(i);
    });
    if (run.length) runs.push(run);
    for (const r of runs) {
      const pts = r.map((i) => `${mid(i)},${y(d[key][i]).toFixed(1)}`);
      lines += `<path class="area" fill="${c}" d="M${mid(r[0])},${y(0)} L${pts.join(" L")} L${mid(r[r.length - 1])},${y(0)} Z"/>`;
      // A lone bucket (a device that reported briefly) would be a zero-length line: a dot.
      lines += r.length > 1
        ? `<polyline class="line" stroke="${c}" points="${pts.join(" ")}"/>`
        : `<circle fill="${c}" r="3" cx="${mid(r[0])}" cy="${y(d[key][r[0]]).toFixed(1)}"/>`;
    }
  }
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">${g}${lines}<line class="cursor" id="cursor" y1="${T}" y2="${H - B}" visibility="hidden"/></svg><div class="tip" id="tip"></div>`;
  const svg = el.querySelector("svg"), tip = $("tip"), cur = $("cursor");
  svg.onmousemove = (ev) => {
    const r = svg.getBoundingClientRect();
    const px = ((ev.clientX - r.left) / r.width) * W;
    const i = Math.floor((((px - L) / (W - L - R)) * (s.to - s.from)) / s.step_ms);
    if (i < 0 || i >= s.t.length) return;
    cur.setAttribute("x1", mid(i)); cur.setAttribute("x2", mid(i)); cur.setAttribute("visibility", "visible");
    tip.innerHTML = `<div class="dim">${clock(s.t[i])}</div>` + s.devices.map((d) => `<div><span style="color:${colorOf(d.id)}">■</span> ${esc(d.id)} <b>${d[key][i] == null ? "–" : fmt(d[key][i])}</b></div>`).join("");
    tip.style.display = "block";
    tip.style.left = Math.min(ev.clientX - r.left + 14, r.width - tip.offsetWidth - 4) + "px";
    tip.style.top = "8px";
  };
  svg.onmouseleave = () => { tip.style.display = "none"; cur.setAttribute("visibility", "hidden"); };
  $("legend").innerHTML = s.devices.map((d) => {
    const last = d[key].filter((v) => v != null).pop();
    return `<span><i style="background:${colorOf(d.id)}"></i>${esc(d.id)} <b>${last == null ? "–" : fmt(last)}</b></span>`;
  }).join("");
}

function bar(v, max) { return `<div class="bar" style="width:${max ? Math.max(1, (v / max) * 100).toFixed(1) : 0}%"></div>`; }

function renderTalkers(list) {
  const max = list.length ? list[0].bytes : 0;
  $("talkers").tBodies[0].innerHTML = list.length ? list.map((t) => `<tr data-addr="${esc(t.addr)}">
    <td class="addr">${esc(t.addr)}</td><td class="num">${bytes(t.sent.bytes)}</td><td class="num">${bytes(t.received.bytes)}</td>
    <td class="num"><b>${bytes(t.bytes)}</b></td><td>${bar(t.bytes, max)}</td></tr>`).join("")
    : `<tr class="empty"><td colspan="5">no flows in this range</td></tr>`;
}

function renderConversations(list) {
  const max = list.length ? list[0].bytes : 0;
  $("conversations").tBodies[0].innerHTML = list.length ? list.map((c) => `<tr>
    <td class="addr">${esc(c.src)} <span class="dim">→</span> ${esc(c.dst)}</td><td class="num">${count(c.flows)}</td>
    <td class="num">${bytes(c.fwd.bytes)}</td><td class="num">${bytes(c.rev.bytes)}</td><td class="num"><b>${bytes(c.bytes)}</b></td>
    <td><div class="split" style="width:${max ? Math.max(1, (c.bytes / max) * 100).toFixed(1) : 0}%"><i style="width:${c.bytes ? ((c.fwd.bytes / c.bytes) * 100).toFixed(1) : 50}%"></i><i style="flex:1"></i></div></td></tr>`).join("")
    : `<tr class="empty"><td colspan="6">no flows in this range</td></tr>`;
}

const us = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} ms` : `${v} µs`);

function renderFlows(f) {
  $("flow-count").textContent = f.matching > f.flows.length ? `top ${f.flows.length} of ${count(f.matching)} by bytes` : `${count(f.matching)} flows`;
  $("flows").tBodies[0].innerHTML = f.flows.length ? f.flows.map((x) => {
    const name = PROTO[x.proto] || `proto ${x.proto}`;
    const icmp = x.proto === 1 || x.proto === 58;
    const detail = icmp ? ` <span class="dim">type ${x.src_port >> 8} code ${x.src_port & 255}</span>` : "";
    return `<tr data-flow="${x.proto} ${esc(x.src)}:${x.src_port} ${esc(x.dst)}:${x.dst_port}">
      <td><span class="badge p${x.proto}">${name}</span>${detail}</td>
      <td class="addr">${esc(endpoint(x.src, x.src_port, x.proto))}</td><td class="addr">${esc(endpoint(x.dst, x.dst_port, x.proto))}</td>
      <td class="dim">${esc(x.device)}</td><td class="num dim">${x.vlan || "–"}</td>
      <td class="num">${count(x.fwd.packets)} / ${count(x.rev.packets)}</td>
      <td class="num">${bytes(x.fwd.bytes)}</td><td class="num">${bytes(x.rev.bytes)}</td><td class="num"><b>${bytes(x.bytes)}</b></td>
      <td class="num">${x.rtt ? `${us(x.rtt.min_us)} / ${us(x.rtt.avg_us)} / ${us(x.rtt.max_us)}` : `<span class="dim">–</span>`}</td>
      <td class="dim">${ago(x.last_seen_ms)}</td></tr>`;
  }).join("") : `<tr class="empty"><td colspan="11">no flow matches</td></tr>`;
}

function renderRtt(r) {
  const el = $("rtt");
  $("rtt-summary").textContent = r.samples ? `${count(r.samples)} samples · p50 < ${us(r.p50_us)} · p90 < ${us(r.p90_us)} · p99 < ${us(r.p99_us)}` : "";
  if (!r.samples) { el.innerHTML = `<div class="nodata">no RTT samples in this range</div>`; return; }
  const W = el.clientWidth || 600, H = el.clientHeight || 200, B = 30, T = 14;
  const n = r.buckets.length, bw = W / n, max = Math.max(...r.buckets.map((b) => b.count));
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">` + r.buckets.map((b, i) => {
    const h = ((H - B - T) * b.count) / max;
    return `<rect x="${i * bw + 2}" y="${H - B - h}" width="${bw - 4}" height="${h}" rx="2"><title>${us(b.lo_us)} – ${b.hi_us ? us(b.hi_us) : "∞"}: ${count(b.count)}</title></rect>` +
      (b.count ? `<text x="${i * bw + bw / 2}" y="${H - B - h - 3}" text-anchor="middle">${count(b.count)}</text>` : "") +
      `<text x="${i * bw + bw / 2}" y="${H - 10}" text-anchor="middle">≥${us(b.lo_us)}</text>`;
  }).join("") + `</svg>`;
}

function renderIngest(i) {
  const rows = [
    ["broker", i.broker_connected ? `<span class="state online">subscribed</span>` : `<span class="state offline">disconnected</span>`],
    ["messages since start", count(i.messages)],
    ["summaries stored", count(i.summaries)],
    ["flow records stored", count(i.flow_records)],
    ["duplicates dropped", count(i.duplicates)],
    ["status messages", count(i.presence)],
    ["payload bytes", bytes(i.payload_bytes)],
    ["rate", `${i.rates.messages_per_s.toFixed(1)} msg/s · ${si(i.rates.flow_records_per_s, "flows/s")}`],
    ...Object.entries(i.rejected).map(([k, v]) => [`rejected: ${esc(k)}`, `<span class="bad-text">${count(v)}</span>`]),
    ["stored windows", i.stored.oldest_window_ms ? `${new Date(i.stored.oldest_window_ms).toISOString().slice(0, 16).replace("T", " ")} → ${new Date(i.stored.newest_window_ms).toISOString().slice(0, 16).replace("T", " ")}` : "–"],
  ];
  $("ingest").tBodies[0].innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
}

function setRange(ms) {
  state.range = ms;
  localStorage.setItem("edgeflow-range", String(ms));
  for (const b of $("ranges").children) b.classList.toggle("on", Number(b.dataset.range) === ms);
  refresh();
}

$("ranges").onclick = (e) => { if (e.target.dataset.range) setRange(Number(e.target.dataset.range)); };
$("metric").onclick = (e) => {
  if (!e.target.dataset.metric) return;
  state.metric = e.target.dataset.metric;
  for (const b of $("metric").children) b.classList.toggle("on", b === e.target);
  refresh();
};
$("device").onchange = (e) => { state.device = e.target.value; refresh(); };
let typing;
$("filters").oninput = () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    const port = $("f-port").value.trim();
    $("f-port").classList.toggle("invalid", port !== "" && !/^\d{1,5}$/.test(port));
    state.filters = { addr: $("f-addr").value.trim(), port: /^\d{1,5}$/.test(port) ? port : "", proto: $("f-proto").value };
    refresh();
  }, 250);
};
$("filters").onsubmit = (e) => e.preventDefault();
window.onresize = () => refresh();

setRange(state.range);
setInterval(refresh, REFRESH_MS);
