// gencluster dashboard: polls /api/status once a second and redraws.
// Everything shown comes from the cluster, so text is set with
// textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
let sampleKey = "";
let last = null; // the last view drawn

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else if (Array.isArray(c)) tr.appendChild(el("td", c[0], c[1]));
    else tr.appendChild(el("td", c));
  }
  return tr;
}

function fill(table, rows, empty) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", empty, "muted");
    td.colSpan = $(table).tHead.rows[0].cells.length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function duration(s) {
  if (!(s >= 0) || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return h + "h" + String(m).padStart(2, "0") + "m";
  if (m > 0) return m + "m" + String(sec).padStart(2, "0") + "s";
  return sec + "s";
}

function ago(ms) { return ms < 0 ? "–" : ms < 1000 ? ms + " ms ago" : (ms / 1000).toFixed(1) + " s ago"; }
function when(unixMs, now) { return unixMs > 0 ? duration((now - unixMs) / 1000) + " ago" : "–"; }
function bytes(n) { return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B"; }

function drawLoss(points, log) {
  const svg = $("loss-plot");
  const W = 480, H = 340, L = 46, R = 8, T = 8, B = 22;
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const pts = points.filter((p) => isFinite(p[1]) && (!log || p[1] > 0));
  const kids = [];
  if (pts.length === 0) {
    kids.push(node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" }, "no loss reported yet"));
    svg.replaceChildren(...kids);
    return;
  }
  const f = log ? Math.log10 : (v) => v;
  let x0 = pts[0][0], x1 = pts[pts.length - 1][0];
  if (x1 <= x0) x1 = x0 + 1;
  let y0 = Infinity, y1 = -Infinity;
  for (const p of pts) { y0 = Math.min(y0, f(p[1])); y1 = Math.max(y1, f(p[1])); }
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (f(y) - y0) / (y1 - y0)) * (H - T - B);
  kids.push(node("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  kids.push(node("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = T + (1 - i / 4) * (H - T - B);
    const label = log ? Math.pow(10, v) : v;
    kids.push(node("line", { x1: L, y1: y, x2: W - R, y2: y, class: "axis" }));
    kids.push(node("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "tick" }, label.toPrecision(3)));
  }
  for (let i = 0; i <= 4; i++) {
    const v = x0 + (x1 - x0) * i / 4;
    kids.push(node("text", { x: sx(v), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "tick" }, String(Math.round(v))));
  }
  kids.push(node("polyline", { class: "curve", points: pts.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ") }));
  svg.replaceChildren(...kids);
}

function render(v) {
  last = v;
  $("error").classList.add("hidden");
  $("leader").textContent = v.leader ? "leader " + v.leader : "no leader";
  $("version").textContent = "coordinator " + (v.coordinator || "?") + " · dashboard " + v.version;
  if (v.stale_reason) { $("error").textContent = v.stale_reason; $("error").classList.remove("hidden"); }
  $("generation").textContent = "ring generation " + v.generation;

  const j = v.job;
  $("job").classList.toggle("idle", !j);
  if (j) {
    $("job-id").textContent = j.id;
    $("job-state").textContent = j.state;
    $("job-state").className = "badge " + j.state;
    $("job-step").textContent = j.step;
    $("job-step").dataset.step = j.step;
    $("job-steps").textContent = j.steps;
    $("job-bar").style.width = (j.steps > 0 ? 100 * j.step / j.steps : 0).toFixed(2) + "%";
    $("job-loss").textContent = j.step > 0 ? j.loss.toFixed(3) : "–";
    $("job-rate").textContent = j.images_per_sec > 0 ? j.images_per_sec.toFixed(1) : "–";
    $("job-eta").textContent = j.state === "done" ? "done" : duration(j.eta_seconds);
    $("job-model").textContent = j.model + " · batch " + j.batch;
    const end = j.finished_unix_ms || v.time_unix_ms;
    $("job-elapsed").textContent = j.started_unix_ms ? duration((end - j.started_unix_ms) / 1000) : "–";
    const note = j.message ? j.message : j.waiting_reason ? "waiting: " + j.waiting_reason + (j.waiting_for && j.waiting_for.length ? " (" + j.waiting_for.join(", ") + ")" : "") : (j.warnings || []).join("; ");
    $("job-note").textContent = note;
    $("job-note").classList.toggle("hidden", !note);
    $("job-note").classList.toggle("bad", j.state === "failed" || j.state === "cancelled");
    drawLoss(j.loss_history, $("logscale").checked);
    const key = j.id + "@" + j.sample_step;
    if (j.sample_step > 0 && key !== sampleKey) {
      sampleKey = key;
      $("sample").src = "/api/sample.png?job=" + encodeURIComponent(j.id) + "&step=" + j.sample_step;
      $("sample").classList.remove("hidden");
      $("sample-none").classList.add("hidden");
      $("sample-step").textContent = "from the checkpoint at step " + j.sample_step;
    }
    fill("checkpoints", j.checkpoints.map((c) => row([c.step, when(c.time_unix_ms, v.time_unix_ms), bytes(c.size_bytes), c.holders.join(", ")])), "none yet");
  } else {
    $("job-id").textContent = "";
    $("job-state").textContent = "no job";
    drawLoss([], false);
    fill("checkpoints", [], "none");
  }

  fill("workers", v.workers.map((w) => row([
    w.rank >= 0 ? w.rank : "–", [w.id, "mono"], [w.addr, "mono"], w.state + (w.reason ? ": " + w.reason : ""),
    ago(w.heartbeat_age_ms), w.compute_ms > 0 ? w.compute_ms.toFixed(1) + " ms" : "–", [w.straggler ? "straggler" : "", "flag"],
  ], (w.straggler ? "straggler" : "") + (w.state === "unfit" ? " unfit" : ""))), "no worker has joined");
  fill("coordinators", v.coordinators.map((c) => row([[c.id, "mono"], [c.addr, "mono"], c.state + (c.voter ? "" : " (non-voter)")])), "none");
  fill("queue", v.jobs.map((q) => row([[q.id, "mono"], q.model, q.state, q.step + " / " + q.steps, when(q.submitted_unix_ms, v.time_unix_ms),
    q.message || q.waiting_reason || (q.warnings || []).join("; ")], q.state)), "no jobs");
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
    render(await r.json());
  } catch (e) {
    $("error").textContent = "cannot read the cluster's status: " + e.message;
    $("error").classList.remove("hidden");
  }
  setTimeout(poll, POLL_MS);
}

$("logscale").addEventListener("change", () => { if (last && last.job) drawLoss(last.job.loss_history, $("logscale").checked); });
poll();
