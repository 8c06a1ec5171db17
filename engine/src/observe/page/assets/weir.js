// Weir's operator page: polls /api/status once a second and draws what it says.
// No libraries; every text goes in through textContent.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const KEEP_MS = 10 * 60 * 1000;
const series = new Map(); // "kind:name:field" -> [[t, v], ...]
let graphKey = "";
let updates = 0;

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + " k";
  return v.toFixed(digits);
}

function bytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}

function secs(v) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) < 120) return v.toFixed(1) + " s";
  if (Math.abs(v) < 7200) return (v / 60).toFixed(1) + " min";
  return (v / 3600).toFixed(1) + " h";
}

// A table cell carrying its raw value for scripts and tests (data-field, data-value).
function cell(field, value, text, cls) {
  return el("td", { "data-field": field, "data-value": value ?? "", class: cls }, text);
}

function record(key, t, v) {
  let s = series.get(key);
  if (!s) { s = []; series.set(key, s); }
  if (s.length && s[s.length - 1][0] >= t) return;
  s.push([t, v]);
  while (s.length && s[0][0] < t - KEEP_MS) s.shift();
}

// A small line chart of one or two series over the last ten minutes.
function chart(keys, fmt) {
  const w = 140, h = 40;
  const svg = el("svg:svg", { class: "chart", width: w, height: h, viewBox: `0 0 ${w} ${h}`, "data-chart": keys.join(" ") });
  const now = Date.now();
  let max = 0, last = null;
  const data = keys.map((k) => (series.get(k) || []).filter((p) => p[1] !== null && !Number.isNaN(p[1])));
  for (const d of data) for (const p of d) max = Math.max(max, p[1]);
  data.forEach((d, i) => {
    if (!d.length) return;
    const pts = d.map(([t, v]) => {
      const x = w - ((now - t) / KEEP_MS) * w;
      const y = h - 3 - (max > 0 ? (v / max) * (h - 14) : 0);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.append(el("svg:polyline", { points: pts.join(" "), class: i ? "b" : "a" }));
    if (i === 0) last = d[d.length - 1][1];
  });
  svg.setAttribute("data-last", last ?? "");
  svg.setAttribute("data-points", data[0] ? data[0].length : 0);
  svg.append(el("svg:text", { x: 3, y: 10 }, "max " + fmt(max)));
  return el("td", {}, svg);
}

function stateClass(state) {
  if (["failed", "reconnecting", "down"].includes(state)) return "bad";
  if (["idle", "finished", "stopping"].includes(state)) return "warn";
  return "ok";
}

function drawProcess(p) {
  const ready = document.getElementById("ready");
  ready.textContent = p.ready ? "ready" : "not ready: " + p.readiness.trim().split("\n").slice(-1)[0];
  ready.className = "badge " + (p.ready ? "ok" : "bad");
  ready.title = p.readiness;
  const facts = [
    ["version", p.version],
    ["node", p.node],
    ["uptime", secs(p.uptime_seconds)],
    ["RSS", bytes(p.rss_bytes)],
    ["CPU", p.cpu_percent === null ? "–" : p.cpu_percent.toFixed(0) + " %"],
    ["checkpoint age", p.checkpoint ? secs(p.checkpoint.age_seconds) : "no checkpoints"],
    ["connectors", p.connectors.sources.join(", ") + " → " + p.connectors.sinks.join(", ")],
  ];
  if (p.features.length) facts.push(["features", p.features.join(", ")]);
  const dl = document.getElementById("process");
  dl.replaceChildren(...facts.map(([k, v]) => el("div", { "data-field": k }, el("dt", {}, k), el("dd", {}, v))));
}

// Boxes in columns by depth (sources, views and inserts by what they read, sinks last).
function drawGraph(graph, states) {
  const key = JSON.stringify(graph);
  const host = document.getElementById("graph");
  if (key !== graphKey) {
    graphKey = key;
    const n = graph.nodes.length;
    const depth = new Array(n).fill(0);
    for (let pass = 0; pass < n; pass++) {
      let changed = false;
      for (const [a, b] of graph.edges) {
        if (depth[b] < depth[a] + 1) { depth[b] = depth[a] + 1; changed = true; }
      }
      if (!changed) break;
    }
    const maxDepth = Math.max(0, ...depth);
    graph.nodes.forEach((node, i) => { if (node.kind === "sink") depth[i] = maxDepth; });
    const cols = [];
    graph.nodes.forEach((node, i) => { (cols[depth[i]] ||= []).push(i); });
    const bw = 170, bh = 34, gx = 60, gy = 12;
    const pos = [];
    cols.forEach((col, c) => col.forEach((i, r) => { pos[i] = [10 + c * (bw + gx), 10 + r * (bh + gy)]; }));
    const width = 20 + cols.length * (bw + gx) - gx;
    const height = 20 + Math.max(1, ...cols.map((c) => c.length)) * (bh + gy) - gy;
    const svg = el("svg:svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}` });
    const defs = el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" }, el("svg:path", { d: "M0,0 L8,4 L0,8 z" })));
    svg.append(defs);
    for (const [a, b] of graph.edges) {
      const [x1, y1] = [pos[a][0] + bw, pos[a][1] + bh / 2];
      const [x2, y2] = [pos[b][0], pos[b][1] + bh / 2];
      const mx = (x1 + x2) / 2;
      svg.append(el("svg:path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)", "data-edge": `${graph.nodes[a].name}|${graph.nodes[b].name}` }));
    }
    graph.nodes.forEach((node, i) => {
      const [x, y] = pos[i];
      const g = el("svg:g", { class: node.kind, "data-node": node.name, "data-kind": node.kind, transform: `translate(${x},${y})` });
      g.append(el("svg:rect", { width: bw, height: bh }));
      g.append(el("svg:text", { x: 6, y: 12, class: "kind" }, node.kind));
      const name = node.name.length > 24 ? node.name.slice(0, 23) + "…" : node.name;
      g.append(el("svg:text", { x: 6, y: 27 }, name), el("svg:title", {}, node.name));
      svg.append(g);
    });
    host.replaceChildren(svg);
  }
  for (const g of host.querySelectorAll("g[data-node]")) {
    const state = states.get(g.dataset.kind + ":" + g.dataset.node) || "";
    g.setAttribute("class", g.dataset.kind + " " + state);
  }
}

function rows(tbody, items, make) {
  tbody.replaceChildren(...items.map(make));
}

function drawSources(list, t) {
  for (const s of list) {
    record(`source:${s.name}:rows`, t, s.rows_per_second);
    record(`source:${s.name}:lag`, t, s.watermark_lag_seconds);
  }
  rows(document.querySelector("#sources tbody"), list, (s) => el("tr", { "data-kind": "source", "data-name": s.name },
    el("td", {}, s.name), el("td", {}, s.connector),
    cell("state", s.state, s.state + (s.connection ? ` (${s.connection})` : ""), stateClass(s.state)),
    cell("rows_per_second", s.rows_per_second, num(s.rows_per_second), "n"),
    cell("rows", s.rows, num(s.rows), "n"),
    cell("skipped_total", s.skipped_total, Object.entries(s.skipped).map(([k, v]) => `${k} ${v}`).join(", ") || "0", s.skipped_total ? "warn" : ""),
    cell("watermark", s.watermark, s.watermark ? s.watermark.slice(11, 23) : "–"),
    cell("watermark_lag_seconds", s.watermark_lag_seconds, secs(s.watermark_lag_seconds), "n"),
    chart([`source:${s.name}:rows`], num),
    chart([`source:${s.name}:lag`], secs)));
}

function drawPipelines(list, t) {
  for (const p of list) {
    record(`pipeline:${p.name}:in`, t, p.rows_in_per_second);
    record(`pipeline:${p.name}:out`, t, p.rows_out_per_second);
  }
  rows(document.querySelector("#pipelines tbody"), list, (p) => el("tr", { "data-kind": "pipeline", "data-name": p.name },
    el("td", {}, p.name + (p.target === "sink" ? " (insert)" : "")),
    cell("state", p.state, p.state, stateClass(p.state)),
    cell("rows_in_per_second", p.rows_in_per_second, num(p.rows_in_per_second), "n"),
    cell("rows_out_per_second", p.rows_out_per_second, num(p.rows_out_per_second), "n"),
    cell("windows_emitted", p.windows_emitted, num(p.windows_emitted), "n"),
    cell("late_rows", p.late_rows, num(p.late_rows), "n " + (p.late_rows ? "warn" : "")),
    cell("row_errors", p.row_errors, num(p.row_errors), "n " + (p.row_errors ? "bad" : "")),
    cell("open_windows", p.open_windows, num(p.open_windows), "n"),
    cell("state_groups", p.state_groups, num(p.state_groups), "n"),
    cell("state_bytes", p.state_bytes, bytes(p.state_bytes), "n"),
    cell("watermark_lag_seconds", p.watermark_lag_seconds, secs(p.watermark_lag_seconds), "n"),
    chart([`pipeline:${p.name}:in`, `pipeline:${p.name}:out`], num)));
}

function drawSinks(list, t) {
  for (const k of list) {
    record(`sink:${k.name}:rows`, t, k.rows_per_second);
    record(`sink:${k.name}:spill`, t, k.spill_bytes);
  }
  rows(document.querySelector("#sinks tbody"), list, (k) => {
    const failing = k.uploads_failed > 0 && k.spill_files > 0;
    const state = k.connected === false ? "reconnecting" : failing ? "store failing" : "ok";
    return el("tr", { "data-kind": "sink", "data-name": k.name },
      el("td", {}, k.name), el("td", {}, k.connector),
      cell("state", state, state, failing || k.connected === false ? "bad" : "ok"),
      cell("rows_per_second", k.rows_per_second, num(k.rows_per_second), "n"),
      cell("uploads_ok", k.uploads_ok, num(k.uploads_ok), "n"),
      cell("uploads_failed", k.uploads_failed, num(k.uploads_failed), "n " + (k.uploads_failed ? "bad" : "")),
      cell("spill_files", k.spill_files, num(k.spill_files), "n"),
      cell("spill_bytes", k.spill_bytes, bytes(k.spill_bytes), "n"),
      cell("spill_oldest_age_seconds", k.spill_oldest_age_seconds, k.spill_files ? secs(k.spill_oldest_age_seconds) : "–", "n"),
      cell("dropped_rows", k.dropped_rows, num(k.dropped_rows), "n " + (k.dropped_rows ? "bad" : "")),
      chart([`sink:${k.name}:rows`], num),
      chart([`sink:${k.name}:spill`], bytes));
  });
}

function drawLatest(latest) {
  const host = document.getElementById("latest");
  const blocks = latest.map((t) => el("div", { class: "latest", "data-pipeline": t.pipeline },
    el("h3", {}, t.table),
    el("table", {},
      el("thead", {}, el("tr", {}, ...t.columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, ...t.rows.map((r) => el("tr", {}, ...r.map((v) => el("td", {}, v))))))));
  host.replaceChildren(...(blocks.length ? blocks : [el("p", {}, "no rows yet")]));
}

function draw(s) {
  const t = Date.parse(s.taken);
  drawProcess(s.process);
  const states = new Map();
  for (const x of s.sources) states.set("source:" + x.name, x.state);
  for (const x of s.pipelines) states.set((x.target === "sink" ? "insert:" : "view:") + x.name, x.state);
  for (const x of s.sinks) states.set("sink:" + x.name, x.connected === false || (x.uploads_failed > 0 && x.spill_files > 0) ? "failed" : "ok");
  drawGraph(s.graph, states);
  drawSources(s.sources, t);
  drawPipelines(s.pipelines, t);
  drawSinks(s.sinks, t);
  drawLatest(s.latest);
}

// Charts start with what the server kept before the page was opened.
async function loadHistory() {
  const r = await fetch("/api/history", { credentials: "same-origin" });
  if (!r.ok) return;
  const h = await r.json();
  const fields = {
    sources: { rows_per_second: "rows", watermark_lag_seconds: "lag" },
    pipelines: { rows_in_per_second: "in", rows_out_per_second: "out" },
    sinks: { rows_per_second: "rows", spill_bytes: "spill" },
  };
  for (const [group, map] of Object.entries(fields)) {
    const kind = group.slice(0, -1);
    for (const [name, part] of Object.entries(h[group] || {})) {
      for (const [field, short] of Object.entries(map)) {
        (part[field] || []).forEach((v, i) => record(`${kind}:${name}:${short}`, h.times[i], v));
      }
    }
  }
}

async function refresh() {
  if (document.hidden) return; // nobody watches: no requests
  const error = document.getElementById("error");
  try {
    const r = await fetch("/api/status", { credentials: "same-origin" });
    if (!r.ok) throw new Error(`/api/status answered ${r.status}`);
    draw(await r.json());
    error.hidden = true;
    updates += 1;
    document.body.dataset.updates = updates;
  } catch (e) {
    error.textContent = "Weir is not answering: " + e.message;
    error.hidden = false;
  }
}

async function start() {
  try { await loadHistory(); } catch (e) { /* charts start empty */ }
  await refresh();
  setInterval(refresh, 1000);
  document.addEventListener("visibilitychange", refresh);
}

start();
