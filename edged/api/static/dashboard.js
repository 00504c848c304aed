// The edged dashboard: polls /dashboard/data and /v1/telemetry, renders jobs and charts.
// Polls every 2 s while a job is queued or running, every 10 s otherwise.
"use strict";

const FAST_MS = 2000, SLOW_MS = 10000;
const $ = (id) => document.getElementById(id);

// The token comes from the URL fragment (#token=..., never sent to the server) or the form;
// it is kept for this tab only. Without one, requests rely on headers the browser already adds.
function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("edged_token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("edged_token");
}

async function getJSON(url) {
  const t = token();
  const resp = await fetch(url, {headers: t ? {Authorization: `Bearer ${t}`} : {}});
  if (resp.status === 401) {
    $("token-form").classList.add("shown");
    throw new Error("unauthorized");
  }
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  return resp.json();
}

const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)}%`);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  row.appendChild(td);
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  const m = job.metrics || {};
  cell(tr, job.id);
  const state = document.createElement("span");
  state.className = `state state-${job.state}`;
  state.textContent = job.state;
  cell(tr, state);
  cell(tr, job.stage || "–");
  const bar = document.createElement("progress");
  bar.max = 1; bar.value = job.progress || 0;
  bar.title = pct(job.progress, 0);
  cell(tr, bar);
  cell(tr, `${job.model} / ${job.method}`);
  cell(tr, `${pct(m.accuracy_before)} → ${pct(m.accuracy_after)}`);
  cell(tr, pct(m.trainable_fraction, 3));
  const joules = job.stages.map((s) => s.energy_j).filter((j) => j !== null);
  cell(tr, joules.length ? `${sum(joules).toFixed(1)} J` : "–");
  cell(tr, job.stages.length ? `${sum(job.stages.map((s) => s.wall_s)).toFixed(1)} s` : "–");
  if (job.error) tr.title = job.error;
  return tr;
}

function renderJobs(jobs) {
  $("jobs").querySelector("tbody").replaceChildren(...jobs.map(jobRow));
  const withLatency = jobs.filter((j) => j.metrics && j.metrics.latency);
  const variants = [...new Set(withLatency.flatMap((j) => Object.keys(j.metrics.latency)))]
    .sort((a, b) => (a === "dense" ? -1 : b === "dense" ? 1 : a.localeCompare(b)));
  const groups = withLatency.map((j) => ({
    label: j.id,
    values: Object.fromEntries(variants.map((v) => [v, (j.metrics.latency[v] || {}).p50_ms ?? null])),
  }));
  edgedCharts.barChart($("latency-chart"), groups, variants, {unit: "ms", label: "latency p50 per job"});
}

function renderTelemetry(t) {
  const power = t.samples.map((s) => ({x: s.ts, y: s.power_w}));
  let total = 0;
  const energy = t.samples.map((s) => ({x: s.ts, y: s.energy_j === null ? null : (total += s.energy_j)}));
  edgedCharts.lineChart($("power-chart"), power, {unit: "W", label: "power over time"});
  edgedCharts.lineChart($("energy-chart"), energy, {unit: "J", cls: "energy", label: "energy over time"});
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  let busy = false;
  try {
    const data = await getJSON("/dashboard/data");
    busy = data.jobs.some((j) => j.state === "running" || j.state === "queued");
    $("source").textContent = data.source || "not sampling";
    renderJobs(data.jobs);
    const since = data.now - Number($("window").value);
    renderTelemetry(await getJSON(`/v1/telemetry?since=${since}&metrics=power_w,energy_j&max_points=600`));
    $("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("updated").textContent = `failed: ${e.message}`;
  }
  timer = setTimeout(refresh, busy ? FAST_MS : SLOW_MS);
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("edged_token", $("token").value);
  $("token-form").classList.remove("shown");
  refresh();
});
$("window").addEventListener("change", refresh);
refresh();
