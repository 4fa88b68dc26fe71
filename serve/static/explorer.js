// The front explorer: /configs -> two plots and a table; a budget -> the config /predict will
// choose (the same rule as serve/selection.py); an image -> POST /predict -> the top-k answer.
"use strict";
const state = { front: null, kind: "none", budget: null, served: null };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const rank = (c) => c.val_acc ?? c.test_acc ?? 0;       // selection ranks by validation accuracy
const expected = (c) => c.test_acc ?? c.val_acc;         // reported accuracy: test, else validation
const cost = (c, kind) => (kind === "mflops" ? c.mflops : c.latency_ms);
const fmt = (x, d = 3) => (x == null ? "n/a" : Number(x).toPrecision(d));

function el(tag, attrs = {}, text = "") {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function chosen() {
  const cs = state.front.configs;
  if (state.kind === "none" || state.budget == null) {
    return { config: cs.find((c) => c.id === state.front.default) };
  }
  const fits = cs.filter((c) => cost(c, state.kind) <= state.budget);
  if (!fits.length) {
    const min = cs.reduce((a, b) => (cost(a, state.kind) <= cost(b, state.kind) ? a : b));
    return { error: `below the minimum: ${min.id} needs ${cost(min, state.kind)} ${state.kind === "mflops" ? "MFLOPs" : "ms"}` };
  }
  const best = fits.reduce((a, b) => (rank(b) > rank(a) || (rank(b) === rank(a) && cost(b, state.kind) < cost(a, state.kind)) ? b : a));
  return { config: best };
}

function plot(svg, key, label) {
  const W = 460, H = 300, L = 52, R = 12, T = 12, B = 40;
  const cs = state.front.configs.filter((c) => expected(c) != null);
  svg.replaceChildren();
  const xs = cs.map((c) => c[key]), ys = cs.map(expected);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const px = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (y) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  svg.append(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
             el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
             el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, label),
             el("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" }, "expected accuracy"));
  for (let i = 0; i <= 4; i++) {
    const x = x0 + ((x1 - x0) * i) / 4, y = y0 + ((y1 - y0) * i) / 4;
    svg.append(el("text", { x: px(x), y: H - B + 14, "text-anchor": "middle" }, fmt(x)),
               el("text", { x: L - 4, y: py(y) + 4, "text-anchor": "end" }, fmt(y)));
  }
  // the line: configs no cheaper-or-equal config beats in accuracy (the front on this axis)
  let best = -Infinity;
  const line = [...cs].sort((a, b) => a[key] - b[key] || expected(b) - expected(a))
    .filter((c) => expected(c) > best && ((best = expected(c)), true))
    .map((c) => `${px(c[key])},${py(expected(c))}`);
  svg.append(el("polyline", { class: "front", points: line.join(" ") }));
  const pick = chosen().config;
  for (const c of cs) {
    const cls = c.id === state.served ? "served" : pick && c.id === pick.id ? "chosen" : "";
    const dot = el("circle", { cx: px(c[key]), cy: py(expected(c)), r: 6, class: cls, "data-id": c.id });
    dot.append(el("title", {}, `${c.id}: ${fmt(c.mflops, 4)} MFLOPs, ${fmt(c.latency_ms)} ms, accuracy ${fmt(expected(c), 4)}`));
    dot.addEventListener("click", () => setBudget(key, c[key]));
    svg.append(dot);
  }
}

function setBudget(kind, value) {
  state.kind = kind;
  state.budget = value;
  document.querySelector(`input[name=kind][value=${kind}]`).checked = true;
  $("budget").value = value == null ? "" : String(value);
  render();
}

function render() {
  if (!state.front) return;
  plot($("plot-mflops"), "mflops", "MFLOPs (millions of multiply-accumulates)");
  plot($("plot-latency"), "latency_ms", "latency on this host (ms, batch 1)");
  const pick = chosen();
  $("selected").textContent = pick.error ? `Budget ${pick.error}`
    : `/predict will use ${pick.config.id}: ${fmt(pick.config.mflops, 4)} MFLOPs, ${fmt(pick.config.latency_ms)} ms, expected accuracy ${fmt(expected(pick.config), 4)}`;
  const rows = state.front.configs.map((c) => {
    const tr = document.createElement("tr");
    if (pick.config && c.id === pick.config.id) tr.className = "chosen";
    for (const v of [c.id, fmt(c.mflops, 4), c.params, fmt(c.val_acc, 4), fmt(c.test_acc, 4), fmt(c.latency_ms)]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: v }));
    }
    return tr;
  });
  $("configs").tBodies[0].replaceChildren(...rows);
}

function query() {
  const q = new URLSearchParams({ top_k: String(Math.min(5, state.front.classes.length)) });
  if (state.kind !== "none" && state.budget != null) q.set(state.kind, String(state.budget));
  return q;
}

async function classify(file) {
  const out = $("result");
  $("preview").src = URL.createObjectURL(file);
  out.textContent = "Classifying…";
  const form = new FormData();
  form.append("file", file, file.name);
  const r = await fetch(`/predict?${query()}`, { method: "POST", body: form });
  const body = await r.json();
  if (!r.ok) {
    out.innerHTML = "";
    out.append(Object.assign(document.createElement("p"), { className: "error", id: "error", textContent: `${r.status}: ${body.detail}` }));
    return;
  }
  const c = body.config, top = body.predictions[0].top_k;
  state.served = c.id;
  out.innerHTML = "";
  const head = document.createElement("p");
  head.id = "answer";
  head.innerHTML = `<b id="top1"></b> — served by <b id="served-config"></b>`;
  head.querySelector("#top1").textContent = top[0].label;
  head.querySelector("#served-config").textContent = `${c.id} (${fmt(c.mflops, 4)} MFLOPs, ${fmt(c.latency_ms)} ms, expected accuracy ${fmt(c.expected_accuracy, 4)})`;
  const table = document.createElement("table");
  table.id = "topk";
  for (const t of top) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td></td><td><span class="bar"></span></td>`;
    tr.cells[0].textContent = t.label;
    tr.cells[1].textContent = (100 * t.probability).toFixed(1) + "%";
    tr.querySelector(".bar").style.width = `${Math.round(200 * t.probability)}px`;
    table.append(tr);
  }
  out.append(head, table);
  render();
}

async function load() {
  const r = await fetch("/configs").catch(() => null);
  if (!r || !r.ok) {
    $("summary").textContent = "The server is still loading its configurations; retrying…";
    setTimeout(load, 1000);
    return;
  }
  state.front = await r.json();
  const cs = state.front.configs;
  $("summary").textContent = `${state.front.arch} on ${state.front.backend}: ${cs.length} configurations, ` +
    `${fmt(cs[0].mflops, 4)} to ${fmt(cs[cs.length - 1].mflops, 4)} MFLOPs; ${state.front.classes.length} classes.`;
  document.body.dataset.ready = "true";
  render();
}

function wire() {
  for (const radio of document.querySelectorAll("input[name=kind]")) {
    radio.addEventListener("change", () => { state.kind = radio.value; render(); });
  }
  $("budget").addEventListener("input", (e) => {
    state.budget = e.target.value === "" ? null : Number(e.target.value);
    if (state.kind === "none" && state.budget != null) {
      state.kind = "mflops";
      document.querySelector("input[name=kind][value=mflops]").checked = true;
    }
    render();
  });
  $("file").addEventListener("change", (e) => e.target.files[0] && classify(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
  });
}

wire();
load();
