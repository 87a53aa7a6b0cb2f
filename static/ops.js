"use strict";
const POLL_MS = 2000, TIMEOUT_MS = 1800, WINDOW_MS = 5 * 60 * 1000;
const samples = [];            // { t: ms, actors: object | null (null = poll failed) }
const cards = new Map();       // actor name -> { root, figures: Map(key -> dd), charts }
const $ = (id) => document.getElementById(id);
const FIGURES = [
  ["alive", "alive", (a) => a.alive === undefined ? "–" : (a.alive ? "yes" : "NO")],
  ["mailbox", "mailbox", (a) => num(a.mailbox_len) + " / " + num(a.mailbox_capacity)],
  ["in_flight", "in flight", (a) => num(a.in_flight)],
  ["processed", "processed", (a) => num(a.processed_total)],
  ["failed", "failed", (a) => num(a.failed_total)],
  ["rejected", "rejected", (a) => num(a.rejected_total)],
  ["restarts", "restarts", (a) => num(a.restarts)],
  ["latency", "p50 / p99", (a) => ms(a.p50_ms) + " / " + ms(a.p99_ms)],
];

function num(v) { return typeof v === "number" && isFinite(v) ? String(v) : "–"; }
function ms(v) { return typeof v === "number" && isFinite(v) ? v.toFixed(1) + " ms" : "–"; }
function tone(state) {
  const s = String(state).toLowerCase();
  if (s === "healthy" || s === "up" || s === "ok" || s === "ready") return "ok";
  if (s === "degraded" || s === "slow") return "warn";
  return "bad";
}
function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  if (h) return h + "h " + String(m).padStart(2, "0") + "m";
  return m ? m + "m " + String(s % 60).padStart(2, "0") + "s" : (s % 60) + "s";
}
function stateText(v) {       // a check may later become an object with details
  if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") return String(v);
  if (v && typeof v === "object") return stateText(v.status ?? v.state ?? "unknown");
  return "unknown";
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function poll() {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  try {
    const res = await fetch("/health", { signal: ctrl.signal, cache: "no-store" });
    let body;
    try { body = await res.json(); } catch (_) { throw new Error("HTTP " + res.status + ", body is not JSON"); }
    if (!body || typeof body !== "object") throw new Error("HTTP " + res.status + ", unexpected body");
    record(body);
    $("error").textContent = res.ok ? "" : "HTTP " + res.status;
  } catch (err) {
    samples.push({ t: Date.now(), actors: null });
    $("status").textContent = "service unreachable";
    $("status").className = "pill bad";
    $("error").textContent = err && err.name === "AbortError" ? "(timed out)" : "(" + String(err && err.message || err) + ")";
  } finally {
    clearTimeout(timer);
    prune();
    renderCharts();
    setTimeout(poll, POLL_MS);
  }
}

function prune() {
  const cutoff = Date.now() - WINDOW_MS;
  while (samples.length && samples[0].t < cutoff) samples.shift();
  $("samples").textContent = String(samples.length);
}

function record(h) {
  const details = h.details && typeof h.details === "object" ? h.details : {};
  const actors = details.actors && typeof details.actors === "object" ? details.actors : {};
  samples.push({ t: Date.now(), actors });
  $("status").textContent = stateText(h.status);
  $("status").className = "pill " + tone(stateText(h.status));
  $("version").textContent = h.version === undefined ? "–" : String(h.version);
  $("uptime").textContent = typeof h.uptime_s === "number" ? duration(h.uptime_s) : "–";
  $("updated").textContent = new Date().toLocaleTimeString();
  renderDeps(h);
  renderActors(actors);
}

function renderDeps(h) {
  const checks = h.checks && typeof h.checks === "object" ? h.checks : {};
  const names = new Set(Object.keys(checks));
  if (Array.isArray(h.dependencies)) h.dependencies.forEach((d) => names.add(String(d)));
  const list = $("deps");
  list.replaceChildren();
  for (const name of [...names].sort()) {
    const state = name in checks ? stateText(checks[name]) : "unknown";
    const li = el("li");
    li.setAttribute("data-dependency", name);
    li.append(el("strong", "", name), document.createTextNode(" "), el("span", "pill " + tone(state), state));
    list.append(li);
  }
}

function makeCard(name) {
  const root = el("section", "card");
  root.setAttribute("data-actor", name);
  root.setAttribute("aria-label", "actor " + name);
  const title = el("h3");
  const badge = el("span", "pill");
  title.append(el("span", "", name), badge);
  const dl = el("dl"), figures = new Map();
  for (const [key, label] of FIGURES) {
    const dd = el("dd", "", "–");
    dl.append(el("dt", "", label), dd);
    figures.set(key, dd);
  }
  const charts = {};
  for (const [key, caption] of [["mailbox", "Mailbox length"], ["p99", "p99 (ms)"]]) {
    const fig = el("figure"), cap = el("figcaption", "", caption), canvas = el("canvas");
    canvas.setAttribute("role", "img");
    fig.append(cap, canvas);
    root.append(fig);
    charts[key] = { canvas, cap, caption };
  }
  root.insertBefore(dl, root.firstChild);
  root.insertBefore(title, root.firstChild);
  return { root, badge, figures, charts };
}

function renderActors(actors) {
  const names = Object.keys(actors).sort();
  for (const [name, card] of cards) {
    if (!names.includes(name)) { card.root.remove(); cards.delete(name); }
  }
  const container = $("actors");
  names.forEach((name) => {
    let card = cards.get(name);
    if (!card) { card = makeCard(name); cards.set(name, card); }
    container.append(card.root);             // (re)append keeps the sorted order
    const a = actors[name] && typeof actors[name] === "object" ? actors[name] : {};
    for (const [key, , fmt] of FIGURES) card.figures.get(key).textContent = fmt(a);
    const alive = a.alive !== false;
    card.badge.textContent = alive ? "alive" : "down";
    card.badge.className = "pill " + (alive ? "ok" : "bad");
  });
  $("no-actors").hidden = names.length > 0;
}

function series(name, field) {
  return samples.map((s) => {
    const a = s.actors && s.actors[name];
    const v = a && typeof a[field] === "number" && isFinite(a[field]) ? a[field] : null;
    return { t: s.t, v };
  });
}

function renderCharts() {
  for (const [name, card] of cards) {
    const mb = series(name, "mailbox_len"), p99 = series(name, "p99_ms");
    const mbMax = Math.max(1, ...mb.map((p) => p.v || 0));
    const pMax = Math.max(1, ...p99.map((p) => p.v || 0));
    draw(card.charts.mailbox, mb, mbMax, "#0969da", "scale 0–" + mbMax + " (observed max)");
    draw(card.charts.p99, p99, pMax, "#8250df", "scale 0–" + pMax.toFixed(1) + " ms (observed max)");
  }
}

function draw(chart, points, yMax, colour, scaleText) {
  const { canvas, cap, caption } = chart;
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth || 260, h = canvas.clientHeight || 80;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Date.now(), start = points.length ? Math.min(points[0].t, now - 10000) : now - 10000;
  const left = 2, right = w - 2, top = 4, bottom = h - 14;
  const x = (t) => left + (right - left) * (t - start) / Math.max(1, now - start);
  const y = (v) => bottom - (bottom - top) * v / yMax;
  ctx.strokeStyle = "#d8dee4"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(left, top + 0.5); ctx.lineTo(right, top + 0.5);
  ctx.moveTo(left, bottom + 0.5); ctx.lineTo(right, bottom + 0.5); ctx.stroke();
  ctx.fillStyle = "#5f6b76"; ctx.font = "10px system-ui, sans-serif"; ctx.textBaseline = "bottom";
  ctx.textAlign = "left"; ctx.fillText("−" + duration((now - start) / 1000), left, h);
  ctx.textAlign = "right"; ctx.fillText("now", right, h);
  ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.beginPath();
  let pen = false, last = null;
  for (const p of points) {
    if (p.v === null) { pen = false; continue; }   // a failed poll leaves a gap
    if (pen) ctx.lineTo(x(p.t), y(p.v)); else ctx.moveTo(x(p.t), y(p.v));
    pen = true; last = p.v;
  }
  ctx.stroke();
  const lastPoint = points.filter((p) => p.v !== null).pop();
  if (lastPoint) { ctx.fillStyle = colour; ctx.fillRect(x(lastPoint.t) - 2, y(lastPoint.v) - 2, 4, 4); }
  cap.textContent = caption + " · " + scaleText;
  canvas.setAttribute("aria-label", caption + " over the last " + duration((now - start) / 1000) +
    ", current " + (last === null ? "unknown" : last) + ", " + scaleText);
}

window.addEventListener("resize", renderCharts);
poll();
