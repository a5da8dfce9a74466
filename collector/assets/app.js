// edgeflow collector dashboard: polls the JSON API and redraws. No build step, no libraries.
// Two views by hash route: the fleet (#/) and one device (#/device/<site>/<device>). The fleet
// view never holds the whole fleet: the server filters, sorts and pages the device list, and
// table rows are patched cell by cell, so a refresh costs the same with 10 or 10,000 devices.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh")) || 2000;
const PAGE = 50;
const TOP = 8;
const PROTO = { 1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP" };
const COLORS = ["#38bdf8", "#a78bfa", "#34d399", "#fbbf24", "#f87171", "#f472b6", "#2dd4bf", "#fb923c"];
// Most severe first, as /api/devices orders them.
const REASONS = {
  offline: "offline", silent: "silent", gaps: "gaps", flooded: "flooded", table_full: "table full",
  spool_dropping: "spool dropping", spool_fallback: "spool in memory", clock_stepped: "clock stepped",
};

// A token given once as #token=... (also after a route: #/device/s/d?token=...) is kept for
// this tab and removed from the address bar.
(() => {
  const m = location.hash.match(/(?:^#|[?&])token=([^&]*)/);
  if (!m) return;
  sessionStorage.setItem("edgeflow-token", decodeURIComponent(m[1]));
  const rest = location.hash.replace(m[0], "");
  history.replaceState(null, "", location.pathname + location.search + (rest.length > 1 ? rest : ""));
})();
const token = () => sessionStorage.getItem("edgeflow-token");

const state = {
  range: Number(localStorage.getItem("edgeflow-range")) || 900000,
  metric: "bytes",
  route: { device: "" },
  list: { q: "", site: "", sort: "attention", page: 0, total: 0 },
  filters: { addr: "", port: "", proto: "", process: "", service: "", mac: "" },
  tcpSort: "failed",
  dnsSort: "errors",
  sites: "",
  colors: {},
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
const pct = (v) => (v == null ? "–" : `${v.toFixed(1)} %`);
const plural = (n, one, many) => `${count(n)} ${n === 1 ? one : many}`;
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
const colorOf = (id) => {
  if (!(id in state.colors)) state.colors[id] = COLORS[Object.keys(state.colors).length % COLORS.length];
  return state.colors[id];
};
const deviceHref = (id) => `#/device/${id.split("/").map(encodeURIComponent).join("/")}`;
const setText = (id, text) => { const e = $(id); if (e.textContent !== text) e.textContent = text; };
const setHtml = (el, html) => { if (el._html !== html) { el.innerHTML = html; el._html = html; } };

class HttpError extends Error {
  constructor(path, status, body) {
    super(`${path}: HTTP ${status}${body ? ` (${body})` : ""}`);
    this.status = status;
  }
}

// GET path?params as JSON; `withTotal` also returns the X-Total-Count header.
async function api(path, params = {}, withTotal = false) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const r = await fetch(`${path}?${q}`, { headers, cache: "no-store" });
  if (r.status === 401) throw new Error("unauthorized: open the dashboard with #token=YOUR_TOKEN");
  if (!r.ok) {
    let why = "";
    try { why = (await r.json()).error || ""; } catch (_) { /* not JSON */ }
    throw new HttpError(path, r.status, why);
  }
  const body = await r.json();
  if (!withTotal) return body;
  return { body, total: Number(r.headers.get("X-Total-Count")) };
}

// ---- routing ----

// #/device/<site>/<device>, or the fleet with its list as asked: #/?q=..&site=..&sort=..&page=..
// (kept in the address as it changes, so a view can be bookmarked, shared, and come back to).
function parseRoute() {
  const m = location.hash.match(/^#\/device\/([^/]+)\/([^/?&]+)/);
  if (m) return { device: `${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}` };
  const p = new URLSearchParams(location.hash.replace(/^#\/?\??/, ""));
  const sort = ["attention", "name", "throughput"].includes(p.get("sort")) ? p.get("sort") : "attention";
  return { device: "", list: { q: p.get("q") || "", site: p.get("site") || "", sort, page: Math.max(0, (Number(p.get("page")) || 1) - 1) } };
}

function saveList() {
  const { q, site, sort, page } = state.list;
  const p = new URLSearchParams();
  if (q) p.set("q", q);
  if (site) p.set("site", site);
  if (sort !== "attention") p.set("sort", sort);
  if (page) p.set("page", page + 1);
  const h = `#/${[...p].length ? `?${p}` : ""}`;
  $("back").href = h;
  if (!state.route.device && location.hash !== h) history.replaceState(null, "", location.pathname + location.search + h);
}

function route() {
  const r = parseRoute();
  state.route = { device: r.device };
  const dev = r.device;
  $("view-fleet").hidden = !!dev;
  $("view-device").hidden = !dev;
  document.title = dev ? `${dev} · edgeflow` : "edgeflow collector";
  for (const e of document.querySelectorAll(".scope")) e.textContent = dev ? `· ${dev}` : "· all devices";
  if (dev) {
    const t = $("d-title");
    t.dataset.device = "";
    t.innerHTML = `<span class="dim">${esc(dev.split("/")[0])} /</span> ${esc(dev.split("/")[1])}`;
    $("health").innerHTML = "";
    $("health").dataset.device = "";
  } else {
    Object.assign(state.list, r.list);
    if ($("q").value.trim() !== state.list.q) $("q").value = state.list.q;
    for (const b of $("sort").children) b.classList.toggle("on", b.dataset.sort === state.list.sort);
    showSite();
    saveList();
  }
  // Old rows and charts belong to the other view.
  for (const id of ["flows", "talkers", "conversations", "tcp-dest", "dns-names", "dns-resolvers", "owner-processes", "owner-services", "owner-lan"]) clearRows($(id));
  for (const id of ["chart", "chart-top", "legend", "tcp-rate-chart", "tcp-fail-chart", "dns-rate-chart", "dns-hist"]) { $(id).innerHTML = ""; $(id)._html = null; }
  window.scrollTo(0, 0);
  refresh();
}

// ---- refresh ----

const viewKey = () => JSON.stringify([state.route, state.list.q, state.list.site, state.list.sort, state.list.page, state.filters, state.range, state.metric, state.tcpSort, state.dnsSort]);

// Two lanes, each at most one request round in flight: the view (summary, device list, charts,
// health) and the traffic tables (talkers, conversations, flows, RTT: scans of every flow
// record in the range, the slow part with a large fleet). The view never waits for the tables.
const lanes = {
  view: { load: () => (state.route.device ? loadDevice : loadFleet), busy: false, again: false, error: null, n: 0, first: 0, last: 0, max: 0, render: 0 },
  traffic: { load: () => loadTraffic, busy: false, again: false, error: null, n: 0, first: 0, last: 0, max: 0, render: 0 },
};

function refresh() {
  for (const name of Object.keys(lanes)) run(name);
}

async function run(name) {
  const lane = lanes[name];
  if (lane.busy) { lane.again = true; return; }
  lane.busy = true;
  const key = viewKey();
  const t0 = performance.now();
  const to = Date.now();
  const from = to - state.range;
  try {
    const render = await lane.load()(from, to);
    if (key !== viewKey()) { lane.again = true; return; }
    const t1 = performance.now();
    render();
    const t2 = performance.now();
    lane.error = null;
    notePerf(lane, t2 - t0, t2 - t1, t2);
  } catch (e) {
    lane.error = e.message;
  } finally {
    lane.busy = false;
    const err = lanes.view.error || lanes.traffic.error;
    $("live").className = err ? "live err" : "live ok";
    $("live-text").textContent = err || `live · ${clock(Date.now())}`;
    if (lane.again) { lane.again = false; setTimeout(() => run(name), 0); }
  }
}

// What the page measured per lane: the refresh (fetch + render), the render alone, and the
// first load (navigation start to the first complete render), in #perf for people and tests:
// data-refreshes, -first-ms, -last-ms, -max-ms, -render-ms for the view; the same prefixed
// with "traffic" for the tables.
function notePerf(lane, total, render, now) {
  lane.n += 1;
  if (!lane.first) lane.first = now;
  lane.last = total;
  lane.render = render;
  lane.max = Math.max(lane.max, total);
  const v = lanes.view, t = lanes.traffic, el = $("perf");
  Object.assign(el.dataset, {
    refreshes: v.n, firstMs: v.first.toFixed(1), lastMs: v.last.toFixed(1), maxMs: v.max.toFixed(1), renderMs: v.render.toFixed(1),
    trafficRefreshes: t.n, trafficFirstMs: t.first.toFixed(1), trafficLastMs: t.last.toFixed(1), trafficMaxMs: t.max.toFixed(1), trafficRenderMs: t.render.toFixed(1),
  });
  el.textContent = `${Math.round(v.last)} ms`;
  el.title = `refresh every ${REFRESH_MS / 1000} s, fetch + render — view: last ${v.last.toFixed(0)} ms (render ${v.render.toFixed(1)} ms), slowest ${v.max.toFixed(0)} ms, first load ${v.first.toFixed(0)} ms; traffic tables: last ${t.last.toFixed(0)} ms, slowest ${t.max.toFixed(0)} ms`;
}

const step = () => Math.round(state.range / 180);

async function loadFleet(from, to) {
  const { q, site, sort, page } = state.list;
  const [fleet, devs, series, ingest] = await Promise.all([
    api("/api/fleet", { from, to, site }),
    api("/api/devices", { from, to, q, site, sort, limit: PAGE, offset: page * PAGE }, true),
    api("/api/series", { from, to, site, top: TOP, step: step() }),
    api("/api/ingest"),
  ]);
  return () => {
    const list = devs.body.devices;
    renderSummary(fleet, ingest);
    renderSites(fleet);
    renderDeviceList(list, devs.total);
    renderFleetChart(series);
    renderIngest(ingest);
  };
}

async function loadDevice(from, to) {
  const device = state.route.device;
  const [devs, health, ingest] = await Promise.all([
    api("/api/devices", { from, to, device }),
    api("/api/health", { device, from, to, step: step() }).catch((e) => {
      if (e.status === 404) return null;
      throw e;
    }),
    api("/api/ingest"),
  ]);
  return () => {
    const d = devs.devices.find((x) => x.id === device);
    renderDeviceHead(device, d, health);
    renderHealth(device, health, from, to);
    renderDeviceChart(device, health, from, to);
    renderIngest(ingest);
  };
}

// The traffic tables, of the whole fleet or of the device shown.
async function loadTraffic(from, to) {
  const device = state.route.device;
  const [talkers, convs, flows, rtt] = await Promise.all([
    api("/api/talkers", { from, to, device, limit: 10 }),
    api("/api/conversations", { from, to, device, limit: 10 }),
    api("/api/flows", { from, to, device, ...state.filters, limit: 100 }),
    api("/api/rtt", { from, to, device }),
  ]);
  // After the others: the lane keeps to four queries at once (the collector's readers, 4 by
  // default), so the view's requests never queue behind a fifth scan of the flow records.
  const [tcp, dns, owners] = await Promise.all([
    api("/api/tcp", { from, to, device, limit: 10, step: step(), sort: state.tcpSort }),
    api("/api/dns", { from, to, device, limit: 10, step: step(), sort: state.dnsSort }),
    api("/api/owners", { from, to, device, limit: 10 }),
  ]);
  return () => {
    renderTalkers(talkers);
    renderConversations(convs);
    renderFlows(flows);
    renderRtt(rtt);
    renderTcp(tcp, from, to);
    renderDns(dns, from, to);
    renderOwners(owners);
  };
}

// ---- tables patched in place ----

// Rows are kept and only the cells whose markup changed are written: a refresh of an
// unchanged page touches no DOM at all. `row(item)` gives { attrs, cls, cells: [[class, html]] }.
function patchRows(table, items, row, empty, cols) {
  const tb = table.tBodies[0];
  if (!items.length) {
    setHtml(tb, `<tr class="empty"><td colspan="${cols}">${empty}</td></tr>`);
    return;
  }
  if (tb.rows.length && tb.rows[0].classList.contains("empty")) clearRows(table);
  while (tb.rows.length > items.length) tb.deleteRow(-1);
  items.forEach((item, i) => {
    const r = row(item);
    const tr = tb.rows[i] || tb.insertRow();
    while (tr.cells.length < r.cells.length) tr.insertCell();
    for (const [k, v] of Object.entries(r.attrs || {})) if (tr.getAttribute(k) !== v) tr.setAttribute(k, v);
    if (tr.className !== (r.cls || "")) tr.className = r.cls || "";
    r.cells.forEach(([cls, html], j) => {
      const td = tr.cells[j];
      if (td.className !== cls) td.className = cls;
      setHtml(td, html);
    });
  });
}

function clearRows(table) {
  const tb = table.tBodies[0];
  tb.innerHTML = "";
  tb._html = null;
}

const badges = (list) => (list || []).map((a) => `<span class="why ${a}">${REASONS[a] || esc(a)}</span>`).join("");

function renderDeviceList(list, total) {
  state.list.total = total;
  const { page } = state.list;
  const first = total ? page * PAGE + 1 : 0;
  const el = $("dev-count");
  el.dataset.total = String(total);
  setText("dev-count", total ? `${count(first)}–${count(page * PAGE + list.length)} of ${count(total)}` : "none match");
  $("prev").disabled = page === 0;
  $("next").disabled = (page + 1) * PAGE >= total;
  patchRows($("devices"), list, (x) => {
    const l = x.latest, h = l && l.health;
    const fill = h ? h.table_fill : null;
    const fillCls = fill == null ? "" : fill > 0.9 ? "bad" : fill > 0.7 ? "warn" : "";
    const att = x.attention || [];
    return {
      attrs: { "data-device": x.id, "data-attention": att.join(" ") },
      cls: att.length ? `attn ${att[0]}` : "",
      cells: [
        ["", `<a href="${deviceHref(x.id)}"><b>${esc(x.device)}</b></a>`],
        ["dim", esc(x.site)],
        ["", `<span class="state ${x.state}">${x.state}</span>`],
        ["badges", badges(att)],
        ["", l ? `<span title="${new Date(l.received_ms).toISOString()}">${ago(l.received_ms)}</span>` : "–"],
        ["num", l ? `<span data-bps="${l.bytes_per_s}">${rate(l.bytes_per_s)}</span>` : "–"],
        ["num", l ? `<span data-pps="${l.packets_per_s}">${prate(l.packets_per_s)}</span>` : "–"],
        ["", h ? `<span class="fill ${fillCls}" title="${count(h.active_flows)} of ${count(h.table_capacity)} entries"><span class="track"><i style="width:${Math.min(100, fill * 100).toFixed(1)}%"></i></span>${(fill * 100).toFixed(1)}%</span>` : "–"],
        [`num ${h && h.table_full ? "warn-text" : ""}`, h ? count(h.table_full) : "–"],
        [`num ${x.gaps ? "warn-text" : ""}`, `<span data-gaps="${x.gaps}" title="windows the device numbered that were never stored, over ${x.boots} run(s)">${count(x.gaps)}</span>`],
        [`num ${h && h.spool_dropped ? "warn-text" : ""}`, h ? count(h.spool_dropped) : "–"],
        ["num", h ? pct(h.cpu_pct) : "–"],
        ["num", h ? bytes(h.rss_kib * 1024) : "–"],
        ["num", `<span data-bytes="${x.totals.bytes}">${bytes(x.totals.bytes)}</span>`],
      ],
    };
  }, state.list.q || state.list.site ? "no device matches" : "no device has reported yet", 14);
}

// ---- fleet summary ----

function renderSummary(f, ing) {
  const s = f.states;
  const el = $("s-devices");
  el.dataset.n = String(f.devices);
  setText("s-devices", count(f.devices));
  setText("s-states", `${count(s.online)} online · ${count(s.silent)} silent · ${count(s.offline)} offline${state.list.site ? ` · site ${state.list.site}` : ""}`);
  const a = f.attention;
  setText("s-attention", count(a.any));
  $("s-attention").dataset.n = String(a.any);
  $("kpi-attention").classList.toggle("alert", a.any > 0);
  const reasons = Object.keys(REASONS).filter((k) => a[k]).map((k) => `${count(a[k])} ${k === "gaps" ? "with gaps" : REASONS[k]}`);
  setText("s-reasons", [`${count(f.gaps)} windows missing`, ...reasons].join(" · "));
  // Throughput now: what the online devices reported last, added up.
  setText("k-bps", rate(f.now.bytes_per_s));
  setText("k-pps", prate(f.now.packets_per_s));
  const t = f.totals;
  $("s-bytes").dataset.n = String(t.bytes);
  setText("s-bytes", bytes(t.bytes));
  setText("s-packets", `${count(t.packets)} packets`);
  setText("k-ingest", si(ing.rates.flow_records_per_s, "flows/s"));
  setText("k-ingest2", `${ing.rates.messages_per_s.toFixed(1)} msg/s · broker ${ing.broker_connected ? "connected" : "DISCONNECTED"} · ${count(ing.stored.summaries)} summaries stored`);
  const rej = Object.values(ing.rejected).reduce((x, y) => x + y, 0);
  setText("k-rejected", count(rej));
  setText("k-rejected2", rej ? Object.entries(ing.rejected).map(([k, v]) => `${k} ${v}`).join(" · ") : "none since start");
  $("kpi-rejected").classList.toggle("alert", rej > 0);
}

// The site asked for, even before the unfiltered answer listed them all.
function showSite() {
  const sel = $("site"), site = state.list.site;
  if (site && ![...sel.options].some((o) => o.value === site)) sel.add(new Option(site, site));
  sel.value = site;
}

// Sites come from the unfiltered fleet answer (a filtered one only knows its own site).
function renderSites(f) {
  if (state.list.site || !f.sites) return;
  const key = JSON.stringify(f.sites);
  if (key === state.sites) return;
  state.sites = key;
  const sel = $("site");
  sel.innerHTML = `<option value="">all sites (${count(f.sites.length)})</option>` + f.sites.map((s) =>
    `<option value="${esc(s.site)}">${esc(s.site)} · ${plural(s.devices, "device", "devices")}${s.attention ? ` · ${count(s.attention)} need attention` : ""}</option>`).join("");
  sel.value = state.list.site;
}

// ---- charts ----

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// Lines over time buckets `t` (starts) of `stepMs` in [from, to). Each line: { id, color,
// values, cls, area }. A bucket without data breaks its line; a lone bucket is a dot.
// Small charts (`mini`) keep two labels and no hover.
function lineChart(el, { from, to, t, stepMs, lines, fmt, mini }) {
  const W = el.clientWidth || (mini ? 300 : 900), H = el.clientHeight || (mini ? 90 : 260);
  const L = mini ? 4 : 74, R = mini ? 4 : 12, T = mini ? 6 : 10, B = mini ? 4 : 24;
  const max = niceMax(Math.max(0, ...lines.flatMap((d) => d.values.filter((v) => v != null))));
  const x = (ts) => L + ((ts - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const mid = (i) => x(t[i] + stepMs / 2).toFixed(1);
  let g = `<g class="grid">`;
  const rows = mini ? 2 : 4;
  for (let i = 0; i <= rows; i++) g += `<line x1="${L}" x2="${W - R}" y1="${y((max * i) / rows)}" y2="${y((max * i) / rows)}"/>`;
  g += `</g>`;
  if (!mini) {
    g += `<g class="axis">`;
    for (let i = 0; i <= 4; i++) g += `<text x="${L - 8}" y="${y((max * i) / 4) + 4}" text-anchor="end">${fmt((max * i) / 4)}</text>`;
    for (let i = 0; i <= 6; i++) {
      const ts = from + ((to - from) * i) / 6;
      g += `<text x="${x(ts)}" y="${H - 6}" text-anchor="${i === 0 ? "start" : i === 6 ? "end" : "middle"}">${clock(ts).slice(0, state.range > 3600000 ? 5 : 8)}</text>`;
    }
    g += `</g>`;
  }
  let body = "";
  for (const d of lines) {
    const runs = [];
    let run = [];
    d.values.forEach((v, i) => {
      if (v == null) { if (run.length) runs.push(run); run = []; } else run.push(i);
    });
    if (run.length) runs.push(run);
    for (const r of runs) {
      const pts = r.map((i) => `${mid(i)},${y(d.values[i]).toFixed(1)}`);
      if (d.area) body += `<path class="area" fill="${d.color}" d="M${mid(r[0])},${y(0)} L${pts.join(" L")} L${mid(r[r.length - 1])},${y(0)} Z"/>`;
      body += r.length > 1
        ? `<polyline class="line ${d.cls || ""}" stroke="${d.color}" points="${pts.join(" ")}"/>`
        : `<circle fill="${d.color}" r="${mini ? 2 : 3}" cx="${mid(r[0])}" cy="${y(d.values[r[0]]).toFixed(1)}"/>`;
    }
  }
  const top = mini ? `<text class="max" x="${W - R}" y="${T + 9}" text-anchor="end">${fmt(max)}</text>` : "";
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">${g}${body}${top}${mini ? "" : `<line class="cursor" y1="${T}" y2="${H - B}" visibility="hidden"/>`}</svg>${mini ? "" : `<div class="tip"></div>`}`;
  if (mini) return;
  const svg = el.querySelector("svg"), tip = el.querySelector(".tip"), cur = el.querySelector(".cursor");
  svg.onmousemove = (ev) => {
    const rc = svg.getBoundingClientRect();
    const px = ((ev.clientX - rc.left) / rc.width) * W;
    const i = Math.floor((((px - L) / (W - L - R)) * (to - from) - (t[0] - from)) / stepMs);
    if (i < 0 || i >= t.length) return;
    cur.setAttribute("x1", mid(i)); cur.setAttribute("x2", mid(i)); cur.setAttribute("visibility", "visible");
    tip.innerHTML = `<div class="dim">${clock(t[i])}</div>` + lines.map((d) => `<div><span style="color:${d.color}">■</span> ${esc(d.label || d.id)} <b>${d.values[i] == null ? "–" : fmt(d.values[i])}</b></div>`).join("");
    tip.style.display = "block";
    tip.style.left = Math.min(ev.clientX - rc.left + 14, rc.width - tip.offsetWidth - 4) + "px";
    tip.style.top = "8px";
  };
  svg.onmouseleave = () => { tip.style.display = "none"; cur.setAttribute("visibility", "hidden"); };
}

const metricKey = () => (state.metric === "bytes" ? "bytes_per_s" : "packets_per_s");
const metricFmt = () => (state.metric === "bytes" ? rate : prate);
const lastOf = (v) => v.filter((x) => x != null).pop();

function legendItem(id, label, color, last, href, cls = "") {
  const name = href ? `<a href="${href}">${esc(label)}</a>` : esc(label);
  return `<span data-series="${esc(id)}" class="${cls}"><i style="background:${color}"></i>${name} <b>${last == null ? "–" : metricFmt()(last)}</b></span>`;
}

// The fleet: its total and the rest ("others") on one scale, the top devices on their own
// below (beside a thousand-device total they would be flat lines at the bottom).
function renderFleetChart(s) {
  const key = metricKey(), fmt = metricFmt();
  const el = $("chart"), top = $("chart-top");
  top.hidden = false;
  setText("chart-scope", `· ${state.list.site ? `site ${state.list.site}` : "all devices"}: total, top ${TOP} devices, others`);
  const fleet = s.fleet || null;
  if (!s.devices.length && !fleet) {
    el.innerHTML = `<div class="nodata">no summaries in this range</div>`;
    top.innerHTML = "";
    $("legend").innerHTML = "";
    return;
  }
  const base = { from: s.from, to: s.to, t: s.t, stepMs: s.step_ms, fmt };
  const totals = [];
  if (fleet) totals.push({ id: "fleet", label: "fleet total", color: "#e2e8f0", values: fleet[key], cls: "thick", area: true });
  if (s.others) totals.push({ id: "others", label: "others", color: "#64748b", values: s.others[key], cls: "dashed" });
  const devs = s.devices.map((d) => ({ id: d.id, color: colorOf(d.id), values: d[key] }));
  lineChart(el, { ...base, lines: totals.length ? totals : devs });
  if (totals.length) lineChart(top, { ...base, lines: devs });
  else top.innerHTML = "";
  $("legend").innerHTML =
    totals.map((d) => legendItem(d.id, d.label, d.color, lastOf(d.values), null, "total")).join("") +
    devs.map((d) => legendItem(d.id, d.id, d.color, lastOf(d.values), deviceHref(d.id))).join("");
}

function renderDeviceChart(device, h, from, to) {
  const el = $("chart");
  $("chart-top").hidden = true;
  setText("chart-scope", `· ${device}`);
  if (!h || !h.t.length) {
    el.innerHTML = `<div class="nodata">no summaries in this range</div>`;
    $("legend").innerHTML = "";
    return;
  }
  const key = metricKey();
  const line = { id: device, color: "#38bdf8", values: h[key], area: true };
  lineChart(el, { from, to, t: h.t, stepMs: h.step_ms, fmt: metricFmt(), lines: [line] });
  $("legend").innerHTML = legendItem(device, device, line.color, lastOf(line.values));
}

// ---- one device ----

function renderDeviceHead(id, d, h) {
  const t = $("d-title");
  if (!d) {
    t.dataset.device = "";
    setHtml($("d-facts"), `<span class="bad-text">no device ${esc(id)} has reported</span>`);
    for (const k of ["d-state", "d-attention", "d-gaps"]) setHtml($(k), "");
    return;
  }
  t.dataset.device = d.id;
  const l = d.latest, hl = l && l.health;
  setHtml($("d-state"), `<span class="state ${d.state}">${d.state}</span>${d.reported ? ` <span class="dim">(says ${esc(d.reported)})</span>` : ""}`);
  setHtml($("d-attention"), badges(d.attention));
  setHtml($("d-facts"), l ? `run <code>${esc(l.boot_id)}</code> · window ${count(l.seq)} · ${l.window_len_ms / 1000} s windows · ${plural(d.boots, "run", "runs")} stored` : "no summary yet");
  const gaps = h && h.gaps != null ? h.gaps : d.gaps;
  setHtml($("d-gaps"), `<span class="${gaps ? "warn-text" : "dim"}">${plural(gaps, "window", "windows")} missing</span>`);
  setText("d-bps", l ? rate(l.bytes_per_s) : "–");
  setText("d-pps", l ? prate(l.packets_per_s) : "");
  setText("d-fill", hl ? pct(hl.table_fill * 100) : "–");
  setText("d-flows", hl ? `${count(hl.active_flows)} of ${count(hl.table_capacity)} entries · ${count(hl.table_full)} packets found it full` : "");
  setText("d-cpu", hl ? pct(hl.cpu_pct) : "–");
  setText("d-rss", hl ? `${bytes(hl.rss_kib * 1024)} RSS · ${count(hl.parse_errors)} parse errors` : "");
  setText("d-spool", hl ? count(hl.spool_depth) : "–");
  setText("d-spool2", hl ? `windows queued · ${count(hl.spool_dropped)} dropped${hl.spool_fallback ? " · file not writable, in memory" : ""}` : "");
  setText("d-bytes", bytes(d.totals.bytes));
  setText("d-packets", `${count(d.totals.packets)} packets · ${plural(d.windows, "window", "windows")}`);
  setText("d-seen", l ? ago(l.received_ms) : "never");
  setText("d-skew", l ? `clock skew ${(l.clock_skew_ms / 1000).toFixed(1)} s` : "");
}

// Gauges are the bucket's highest value, counters its sum (what /api/health answers).
const HEALTH = [
  ["active_flows", "Active flows", count],
  ["table_fill", "Table fill", (v) => pct(v * 100)],
  ["table_full", "Packets with the table full", count, "bad"],
  ["parse_errors", "Parse errors", count, "bad"],
  ["cpu_pct", "Agent CPU", pct],
  ["rss_kib", "Agent memory", (v) => bytes(v * 1024)],
  ["spool_depth", "Spool depth", count],
  ["spool_dropped", "Spool dropped", count, "bad"],
  // The agent's bad days (issue 24): what it lost or could not keep, and why.
  ["spool_fallback", "Spool file not writable", (v) => (v ? "in memory" : "on file"), "bad"],
  ["spool_write_errors", "Spool write errors", count, "bad"],
  ["clock_step_ms", "Clock steps", (v) => `${(v / 1000).toFixed(1)} s`, "bad"],
  ["clock_steps", "Clock steps since start", count],
  ["reattached", "Interfaces re-attached", count],
  ["header_excess", "Packets with lying headers", count, "bad"],
  ["reclaimed", "Packets of reclaimed flows (flood)", count, "bad"],
];

function renderHealth(id, h, from, to) {
  const box = $("health");
  if (!h) {
    box.dataset.device = "";
    setHtml(box, `<div class="nodata">no health reported in this range</div>`);
    return;
  }
  if (box.dataset.device !== id) {
    box.innerHTML = HEALTH.map(([k, label]) => `<div class="mini" data-metric="${k}" data-points="0"><div class="mini-head"><label>${label}</label><b></b></div><div class="mini-chart"></div></div>`).join("");
    box._html = null;
    box.dataset.device = id;
  }
  setText("health-note", `· per ${Math.round(h.step_ms / 1000)} s: highest value, or the sum of counts`);
  for (const [k, , fmt, tone] of HEALTH) {
    const el = box.querySelector(`[data-metric="${k}"]`);
    // Booleans (the spool fallback) are drawn as 0/1.
    const values = (h[k] || []).map((v) => (typeof v === "boolean" ? Number(v) : v));
    const points = values.filter((v) => v != null).length;
    const last = lastOf(values);
    // Any non-zero value of a bad count (a clock set back is negative).
    const worst = tone === "bad" && values.some((v) => v != null && v !== 0);
    el.dataset.points = String(points);
    el.classList.toggle("bad", worst);
    el.querySelector("b").textContent = last == null ? "–" : fmt(last);
    lineChart(el.querySelector(".mini-chart"), { from, to, t: h.t, stepMs: h.step_ms, fmt, mini: true,
      lines: [{ id: k, color: worst ? "#f87171" : "#38bdf8", values, area: true }] });
  }
}

// ---- traffic tables ----

function bar(v, max) { return `<div class="bar" style="width:${max ? Math.max(1, (v / max) * 100).toFixed(1) : 0}%"></div>`; }

function renderTalkers(list) {
  const max = list.length ? list[0].bytes : 0;
  patchRows($("talkers"), list, (t) => ({
    attrs: { "data-addr": t.addr },
    cells: [["addr", esc(t.addr)], ["num", bytes(t.sent.bytes)], ["num", bytes(t.received.bytes)], ["num", `<b>${bytes(t.bytes)}</b>`], ["", bar(t.bytes, max)]],
  }), "no flows in this range", 5);
}

function renderConversations(list) {
  const max = list.length ? list[0].bytes : 0;
  patchRows($("conversations"), list, (c) => ({
    cells: [
      ["addr", `${esc(c.src)} <span class="dim">→</span> ${esc(c.dst)}`], ["num", count(c.flows)],
      ["num", bytes(c.fwd.bytes)], ["num", bytes(c.rev.bytes)], ["num", `<b>${bytes(c.bytes)}</b>`],
      ["", `<div class="split" style="width:${max ? Math.max(1, (c.bytes / max) * 100).toFixed(1) : 0}%"><i style="width:${c.bytes ? ((c.fwd.bytes / c.bytes) * 100).toFixed(1) : 50}%"></i><i style="flex:1"></i></div>`],
    ],
  }), "no flows in this range", 6);
}

const us = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} ms` : `${v} µs`);

// A flow's owner in a few words: process (pid) · service, else the initiator's MAC.
function ownerText(o) {
  if (!o) return `<span class="dim">–</span>`;
  if (o.process) return `<b>${esc(o.process)}</b>${o.pid != null ? ` <span class="dim">(${o.pid})</span>` : ""}${o.service ? ` <span class="dim">· ${esc(o.service)}</span>` : ""}`;
  if (o.service) return esc(o.service);
  return o.src_mac ? `<span class="addr">${esc(o.src_mac)}</span>` : `<span class="dim">→ ${esc(o.dst_mac || "–")}</span>`;
}

function renderFlows(f) {
  setText("flow-count", f.matching > f.flows.length ? `top ${f.flows.length} of ${count(f.matching)} by bytes` : `${count(f.matching)} flows`);
  patchRows($("flows"), f.flows, (x) => {
    const name = PROTO[x.proto] || `proto ${x.proto}`;
    const icmp = x.proto === 1 || x.proto === 58;
    const detail = icmp ? ` <span class="dim">type ${x.src_port >> 8} code ${x.src_port & 255}</span>` : "";
    const dev = x.device;
    return {
      attrs: { "data-flow": `${x.proto} ${x.src}:${x.src_port} ${x.dst}:${x.dst_port}`, "data-device": dev, "data-owner": x.owner ? x.owner.process || x.owner.service || x.owner.src_mac || "" : "" },
      cells: [
        ["", `<span class="badge p${x.proto}">${name}</span>${detail}`],
        ["addr", esc(endpoint(x.src, x.src_port, x.proto))], ["addr", esc(endpoint(x.dst, x.dst_port, x.proto))],
        ["dim", dev.includes("/") ? `<a href="${deviceHref(dev)}">${esc(dev)}</a>` : esc(dev)],
        ["owner", ownerText(x.owner)], ["num dim", x.vlan ? String(x.vlan) : "–"],
        ["num", `${count(x.fwd.packets)} / ${count(x.rev.packets)}`],
        ["num", bytes(x.fwd.bytes)], ["num", bytes(x.rev.bytes)], ["num", `<b>${bytes(x.bytes)}</b>`],
        ["num", x.rtt ? `${us(x.rtt.min_us)} / ${us(x.rtt.avg_us)} / ${us(x.rtt.max_us)}` : `<span class="dim">–</span>`],
        ["dim", ago(x.last_seen_ms)],
      ],
    };
  }, "no flow matches", 12);
}

function renderRtt(r) {
  setText("rtt-summary", r.samples ? `${count(r.samples)} samples · p50 < ${us(r.p50_us)} · p90 < ${us(r.p90_us)} · p99 < ${us(r.p99_us)}` : "");
  drawHist($("rtt"), r, "no RTT samples in this range");
}

// A log2 latency histogram (/api/rtt, /api/dns's latency) as bars.
function drawHist(el, r, empty) {
  if (!r.samples) { setHtml(el, `<div class="nodata">${empty}</div>`); return; }
  const W = el.clientWidth || 600, H = el.clientHeight || 200, B = 30, T = 14;
  const n = r.buckets.length, bw = W / n, max = Math.max(...r.buckets.map((b) => b.count));
  setHtml(el, `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">` + r.buckets.map((b, i) => {
    const h = ((H - B - T) * b.count) / max;
    return `<rect data-lo="${b.lo_us}" data-count="${b.count}" x="${i * bw + 2}" y="${H - B - h}" width="${bw - 4}" height="${h}" rx="2"><title>${us(b.lo_us)} – ${b.hi_us ? us(b.hi_us) : "∞"}: ${count(b.count)}</title></rect>` +
      (b.count ? `<text x="${i * bw + bw / 2}" y="${H - B - h - 3}" text-anchor="middle">${count(b.count)}</text>` : "") +
      `<text x="${i * bw + bw / 2}" y="${H - 10}" text-anchor="middle">≥${us(b.lo_us)}</text>`;
  }).join("") + `</svg>`);
}

// ---- TCP connections ----

const ratio = (v) => (v == null ? "–" : `${(v * 100).toFixed(2)} %`);
const setN = (id, n, text) => { const e = $(id); e.dataset.n = String(n); setText(id, text); };

// What connections did, of the fleet or of the device shown: failed connects (refused +
// unanswered), resets, the retransmit rate, over time and by destination (responder:port).
function renderTcp(t, from, to) {
  const x = t.totals, c = x.connections;
  setText("tcp-note", x.windows
    ? `· ${plural(x.windows, "window", "windows")} from ${plural(x.devices, "device", "devices")} measuring TCP`
    : "· no agent in this range measures TCP (agents before version 2, or TCP health switched off)");
  setN("tcp-failed", x.failed, count(x.failed));
  setText("tcp-failed2", `${count(c.refused)} refused · ${count(c.unanswered)} unanswered · ${count(x.syn_retries)} SYN retries`);
  $("tcp-kpi-failed").classList.toggle("warn", x.failed > 0);
  setN("tcp-reset", c.reset, count(c.reset));
  setText("tcp-reset2", `connections · ${count(x.rst)} RST segments`);
  $("tcp-kpi-reset").classList.toggle("warn", c.reset > 0);
  setN("tcp-rate", x.retransmit_rate == null ? "" : x.retransmit_rate, ratio(x.retransmit_rate));
  setText("tcp-rate2", `${bytes(x.retransmitted.bytes)} of ${bytes(x.bytes)} · ${count(x.retransmitted.packets)} segments`);
  setN("tcp-est", c.established, count(c.established));
  setText("tcp-est2", `established · ${count(c.closed)} closed · ${count(c.unknown)} without handshake`);
  const s = t.series;
  const base = { from, to, t: s.t, stepMs: s.step_ms };
  if (!x.windows) {
    for (const id of ["tcp-rate-chart", "tcp-fail-chart"]) $(id).innerHTML = `<div class="nodata">no TCP health in this range</div>`;
  } else {
    lineChart($("tcp-rate-chart"), { ...base, fmt: (v) => `${v.toFixed(v < 1 ? 2 : 1)} %`,
      lines: [{ id: "rate", label: "retransmit rate", color: "#fbbf24", values: s.retransmit_rate.map((v) => (v == null ? null : v * 100)), area: true }] });
    lineChart($("tcp-fail-chart"), { ...base, fmt: count,
      lines: [
        { id: "failed", label: "failed connects", color: "#f87171", values: s.failed },
        { id: "reset", label: "reset", color: "#a78bfa", values: s.reset },
      ] });
  }
  patchRows($("tcp-dest"), t.destinations, (d) => ({
    attrs: { "data-dest": `${d.addr}:${d.port}`, "data-failed": String(d.failed), "data-reset": String(d.connections.reset) },
    cls: d.failed ? "attn" : "",
    cells: [
      ["addr", esc(endpoint(d.addr, d.port, 6))],
      [`num ${d.failed ? "bad-text" : ""}`, `<b>${count(d.failed)}</b>`],
      ["num", count(d.connections.refused)], ["num", count(d.connections.unanswered)], ["num", count(d.syn_retries)],
      [`num ${d.connections.reset ? "warn-text" : ""}`, count(d.connections.reset)],
      ["num", `${count(d.rst_fwd)} / ${count(d.rst_rev)}`],
      ["num", bytes(d.retransmitted_fwd.bytes + d.retransmitted_rev.bytes)],
      ["num", `<span data-rate="${d.retransmit_rate == null ? "" : d.retransmit_rate}">${ratio(d.retransmit_rate)}</span>`],
      ["num", bytes(d.bytes)],
    ],
  }), x.windows ? "no TCP connection in this range" : "no TCP health in this range", 10);
}

// ---- DNS lookups ----

const latency = (l) => (l.avg_us == null ? "–" : `${us(l.avg_us)} / ${us(l.max_us)}`);

// What name lookups did, of the fleet or of the device shown: queries, the response codes,
// unanswered queries, latency (distribution, and over time with the error rates), and the
// names and resolvers by errors, latency or queries.
function renderDns(d, from, to) {
  const x = d.totals, c = x.rcodes, l = x.latency;
  setText("dns-note", x.windows
    ? `· ${plural(x.windows, "window", "windows")} from ${plural(x.devices, "device", "devices")} looking at DNS`
    : "· no agent in this range looks at DNS (agents before version 3, or DNS switched off)");
  setN("dns-queries", x.queries, count(x.queries));
  setText("dns-queries2", `${count(x.responses)} responses · ${count(c.noerror)} NOERROR`);
  setN("dns-errors", x.errors, x.error_rate == null ? "–" : ratio(x.error_rate));
  setText("dns-errors2", `${count(c.nxdomain)} NXDOMAIN · ${count(c.servfail)} SERVFAIL · ${count(c.refused)} REFUSED · ${count(c.other)} other`);
  $("dns-kpi-errors").classList.toggle("warn", c.servfail + c.refused + c.other > 0);
  setN("dns-unanswered", x.unanswered, count(x.unanswered));
  setText("dns-unanswered2", x.unanswered_rate == null ? "queries" : `${ratio(x.unanswered_rate)} of queries`);
  $("dns-kpi-unanswered").classList.toggle("warn", x.unanswered > 0);
  const h = d.latency;
  setN("dns-lat", l.avg_us == null ? "" : l.avg_us, l.avg_us == null ? "–" : us(l.avg_us));
  setText("dns-lat2", l.samples ? `mean · ${count(l.samples)} samples · min ${us(l.min_us)} · max ${us(l.max_us)}` : "no response timed");
  setText("dns-hist-note", h.samples ? `· ${count(h.samples)} samples · p50 < ${us(h.p50_us)} · p90 < ${us(h.p90_us)} · p99 < ${us(h.p99_us)}` : "");
  drawHist($("dns-hist"), h, x.windows ? "no DNS response timed in this range" : "no DNS in this range");
  const s = d.series;
  if (!x.windows) {
    setHtml($("dns-rate-chart"), `<div class="nodata">no DNS in this range</div>`);
  } else {
    $("dns-rate-chart")._html = null;
    const pctOf = (v) => (v == null ? null : v * 100);
    lineChart($("dns-rate-chart"), { from, to, t: s.t, stepMs: s.step_ms, fmt: (v) => `${v.toFixed(v < 1 ? 2 : 1)} %`,
      lines: [
        { id: "errors", label: "error responses (of responses)", color: "#f87171", values: s.error_rate.map(pctOf) },
        { id: "unanswered", label: "unanswered (of queries)", color: "#fbbf24", values: s.unanswered_rate.map(pctOf) },
      ] });
  }
  const none = x.windows ? "no DNS lookup in this range" : "no DNS in this range";
  patchRows($("dns-names"), d.names, (n) => ({
    attrs: { "data-name": `${n.name} ${n.qtype_name}`, "data-queries": String(n.queries), "data-errors": String(n.errors), "data-unanswered": String(n.unanswered) },
    cls: n.errors + n.unanswered ? "attn" : "",
    cells: [
      ["addr", `${esc(n.name)} <span class="badge">${esc(n.qtype_name)}</span>`],
      ["num", count(n.queries)],
      [`num ${n.errors ? "bad-text" : ""}`, `${count(n.rcodes.nxdomain)} / ${count(n.rcodes.servfail)} / ${count(n.rcodes.refused + n.rcodes.other)}`],
      [`num ${n.unanswered ? "warn-text" : ""}`, count(n.unanswered)],
      ["num", latency(n.latency)],
      ["num", count(n.resolvers)],
    ],
  }), none, 6);
  patchRows($("dns-resolvers"), d.resolvers, (r) => ({
    attrs: { "data-resolver": `${r.addr}:${r.port}`, "data-queries": String(r.queries), "data-errors": String(r.errors) },
    cls: r.errors + r.unanswered ? "attn" : "",
    cells: [
      ["addr", esc(endpoint(r.addr, r.port, 17))],
      ["num", count(r.queries)],
      [`num ${r.errors ? "bad-text" : ""}`, ratio(r.error_rate)],
      [`num ${r.unanswered ? "warn-text" : ""}`, count(r.unanswered)],
      ["num", latency(r.latency)],
      ["num", count(r.names)],
    ],
  }), none, 6);
}

// ---- who sent it ----

// The box's own traffic by process and service, and forwarded traffic by the LAN device (MAC,
// vendor, DHCP name) that started it, with its top destinations.
function renderOwners(o) {
  const any = o.processes.length + o.services.length + o.lan_devices.length;
  const full = [o.sockets_full ? `${count(o.sockets_full)} sockets without their process (map full)` : "", o.devices_full ? `${count(o.devices_full)} DHCP names not kept (map full)` : ""].filter(Boolean);
  setText("owners-note", any ? (full.length ? `· ${full.join(" · ")}` : "") : "· no agent in this range reports owners (agents before version 3, or owners switched off)");
  const none = "nothing known in this range";
  let max = o.processes.length ? o.processes[0].bytes : 0;
  patchRows($("owner-processes"), o.processes, (p) => ({
    attrs: { "data-process": p.process, "data-service": p.service || "", "data-bytes": String(p.bytes) },
    cells: [["", `<b>${esc(p.process)}</b>`], ["dim", p.service ? esc(p.service) : "–"], ["num", count(p.pids)], ["num", count(p.flows)], ["num", bytes(p.bytes)], ["", bar(p.bytes, max)]],
  }), none, 6);
  max = o.services.length ? o.services[0].bytes : 0;
  patchRows($("owner-services"), o.services, (x) => ({
    attrs: { "data-service": x.service, "data-bytes": String(x.bytes) },
    cells: [["", `<b>${esc(x.service)}</b>`], ["num", count(x.processes)], ["num", count(x.flows)], ["num", bytes(x.bytes)], ["", bar(x.bytes, max)]],
  }), none, 5);
  patchRows($("owner-lan"), o.lan_devices, (d) => ({
    attrs: { "data-mac": d.mac, "data-vendor": d.vendor || "", "data-name": d.host_name || "", "data-bytes": String(d.bytes) },
    cells: [
      ["addr", esc(d.mac)], ["", d.vendor ? esc(d.vendor) : `<span class="dim">unknown</span>`],
      ["", d.host_name ? `<b>${esc(d.host_name)}</b>` : `<span class="dim">–</span>`],
      ["dim", `<a href="${deviceHref(d.device)}">${esc(d.device)}</a>`],
      ["num", count(d.flows)], ["num", bytes(d.bytes)],
      ["addr", d.top_destinations.map((x) => `<span data-dest="${esc(x.addr)}:${x.port}">${esc(endpoint(x.addr, x.port, x.proto))}</span> <span class="dim">${bytes(x.bytes)}</span>`).join(" · ") +
        (d.destinations > d.top_destinations.length ? ` <span class="dim">+${count(d.destinations - d.top_destinations.length)}</span>` : "")],
    ],
  }), none, 7);
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
  setHtml($("ingest").tBodies[0], rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join(""));
}

// ---- controls ----

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
function listChanged() {
  for (const b of $("sort").children) b.classList.toggle("on", b.dataset.sort === state.list.sort);
  saveList();
  refresh();
}
$("sort").onclick = (e) => {
  if (!e.target.dataset.sort) return;
  state.list.sort = e.target.dataset.sort;
  state.list.page = 0;
  listChanged();
};
$("site").onchange = (e) => { state.list.site = e.target.value; state.list.page = 0; listChanged(); };
$("prev").onclick = () => { if (state.list.page > 0) { state.list.page -= 1; listChanged(); } };
$("next").onclick = () => { if ((state.list.page + 1) * PAGE < state.list.total) { state.list.page += 1; listChanged(); } };
let typing;
$("q").oninput = () => {
  clearTimeout(typing);
  typing = setTimeout(() => { state.list.q = $("q").value.trim(); state.list.page = 0; listChanged(); }, 200);
};
$("dev-filters").onsubmit = (e) => e.preventDefault();
// The attention tile leads to the list, sorted by what needs attention.
$("kpi-attention").onclick = () => {
  state.list.sort = "attention";
  state.list.page = 0;
  $("devices").scrollIntoView({ behavior: "smooth", block: "start" });
  listChanged();
};
// "/" jumps to the device search, as on most sites.
document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) return;
  if (state.route.device) location.hash = $("back").getAttribute("href");
  e.preventDefault();
  $("q").focus();
});
function readFilters() {
  const port = $("f-port").value.trim(), mac = $("f-mac").value.trim();
  const macOk = /^([0-9a-f]{2}[:-]?){5}[0-9a-f]{2}$/i.test(mac);
  $("f-port").classList.toggle("invalid", port !== "" && !/^\d{1,5}$/.test(port));
  $("f-mac").classList.toggle("invalid", mac !== "" && !macOk);
  state.filters = {
    addr: $("f-addr").value.trim(), port: /^\d{1,5}$/.test(port) ? port : "", proto: $("f-proto").value,
    process: $("f-process").value.trim(), service: $("f-service").value.trim(), mac: macOk ? mac : "",
  };
  refresh();
}
$("filters").oninput = () => {
  clearTimeout(typing);
  typing = setTimeout(readFilters, 250);
};
// A process, service or LAN device in the owners panel narrows the flow table to it.
for (const [table, field, key] of [["owner-processes", "f-process", "process"], ["owner-services", "f-service", "service"], ["owner-lan", "f-mac", "mac"]]) {
  $(table).onclick = (e) => {
    const tr = e.target.closest("tr");
    if (!tr || !tr.dataset[key] || e.target.closest("a")) return;
    for (const id of ["f-process", "f-service", "f-mac"]) $(id).value = id === field ? tr.dataset[key] : "";
    readFilters();
    $("flows").scrollIntoView({ behavior: "smooth", block: "start" });
  };
}
$("filters").onsubmit = (e) => e.preventDefault();
$("tcp-sort").onclick = (e) => {
  if (!e.target.dataset.sort) return;
  state.tcpSort = e.target.dataset.sort;
  for (const b of $("tcp-sort").children) b.classList.toggle("on", b === e.target);
  refresh();
};
$("dns-sort").onclick = (e) => {
  if (!e.target.dataset.sort) return;
  state.dnsSort = e.target.dataset.sort;
  for (const b of $("dns-sort").children) b.classList.toggle("on", b === e.target);
  refresh();
};
window.onresize = () => refresh();
window.onhashchange = route;

for (const b of $("ranges").children) b.classList.toggle("on", Number(b.dataset.range) === state.range);
route();
setInterval(refresh, REFRESH_MS);
