// The edged dashboard: polls /dashboard/data, renders jobs, the selected job's epochs and telemetry charts.
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
  if (!resp.ok) throw Object.assign(new Error(`${url}: HTTP ${resp.status}`), {status: resp.status});
  return resp.json();
}

const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)}%`);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  row.appendChild(td);
}

// The job whose epochs are drawn, chosen by clicking its row; null: the newest job.
let selectedJob = null;

function jobRow(job, drawnJob) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  tr.classList.toggle("selected", job.id === drawnJob);
  tr.addEventListener("click", () => { selectedJob = job.id; refresh(); });
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

function renderJobs(jobs, drawnJob) {
  $("jobs").querySelector("tbody").replaceChildren(...jobs.map((job) => jobRow(job, drawnJob)));
  const withLatency = jobs.filter((j) => j.metrics && j.metrics.latency);
  const variants = [...new Set(withLatency.flatMap((j) => Object.keys(j.metrics.latency)))]
    .sort((a, b) => (a === "dense" ? -1 : b === "dense" ? 1 : a.localeCompare(b)));
  const groups = withLatency.map((j) => ({
    label: j.id,
    values: Object.fromEntries(variants.map((v) => [v, (j.metrics.latency[v] || {}).p50_ms ?? null])),
  }));
  edgedCharts.barChart($("latency-chart"), groups, variants, {unit: "ms", label: "latency p50 per job"});
}

const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`);

function renderTasks(tasks, serving) {
  $("tasks").querySelector("tbody").replaceChildren(...(tasks || []).map((task) => {
    const tr = document.createElement("tr");
    tr.dataset.task = task.id;
    cell(tr, task.id);
    cell(tr, `${task.base_model} / ${task.method}`);
    cell(tr, String(task.classes));
    cell(tr, String(task.requests));
    cell(tr, String(task.samples));
    cell(tr, `${ms(task.p50_ms)} / ${ms(task.p99_ms)}`);
    cell(tr, String(task.switches));
    return tr;
  }));
  if (serving) {
    const c = serving.cache, p = serving.prefetch;
    $("serving").textContent = `(${serving.bases} resident base(s), ${serving.switches} switches; delta cache ` +
      `${c.hits} hits / ${c.misses} misses, ${c.entries} deltas; prefetch ${p.used} of ${p.loaded} used)`;
  }
}

function renderTraining(training) {
  $("training-job").textContent = training ? training.job_id : "–";
  const epochs = training ? training.epochs : [];
  const curve = (key, scale) => epochs.map((e) => ({x: e.epoch, y: e[key] === null ? null : e[key] * scale}));
  const perEpoch = {markers: true, integerX: true, xFormat: (x) => `epoch ${x}`, empty: "no epoch finished yet"};
  edgedCharts.lineChart($("loss-chart"), [{name: "train loss", points: curve("train_loss", 1), cls: "loss"}],
                        {...perEpoch, unit: "loss", label: "train loss per epoch"});
  edgedCharts.lineChart($("accuracy-chart"), [{name: "validation accuracy", points: curve("val_accuracy", 100), cls: "accuracy"}],
                        {...perEpoch, unit: "%", label: "validation accuracy per epoch"});
}

function renderTelemetry(t, source) {
  const series = (metric) => t.samples.map((s) => ({x: s.ts, y: s[metric]}));
  let total = 0;
  const energy = t.samples.map((s) => ({x: s.ts, y: s.energy_j === null ? null : (total += s.energy_j)}));
  const noPower = source === "none" ? "no power source on this machine (see edged doctor)" : "no data yet";
  const chart = (id, lines, unit, label, empty) => edgedCharts.lineChart($(id), lines, {unit, label, empty});
  chart("power-chart", [{name: "power", points: series("power_w")}], "W", "power over time", noPower);
  chart("energy-chart", [{name: "energy", points: energy, cls: "energy"}], "J", "energy over time", noPower);
  chart("util-chart", [{name: "CPU", points: series("cpu_util_pct"), cls: "cpu"},
                       {name: "GPU", points: series("gpu_util_pct"), cls: "gpu"}],
        "%", "CPU and GPU utilisation over time", "no utilisation sampled in this window");
  chart("memory-chart", [{name: "memory", points: series("mem_used_mb"), cls: "memory"}],
        "MiB", "memory used over time", "no memory use sampled in this window");
  chart("temp-chart", [{name: "temperature", points: series("temp_c"), cls: "temp"}], "°C", "temperature over time",
        "no temperature in this window (only a power source reports one)");
}

let timer = null, latest = 0;

async function refresh() {
  clearTimeout(timer);
  const mine = ++latest;  // a click or a new window while a poll is in flight: only the newest renders and re-arms
  let busy = false;
  try {
    const query = new URLSearchParams({window_s: $("window").value});
    if (selectedJob) query.set("job", selectedJob);
    const data = await getJSON(`/dashboard/data?${query}`);
    if (mine !== latest) return;
    busy = data.jobs.some((j) => j.state === "running" || j.state === "queued");
    $("source").textContent = data.source || "not sampling";
    renderJobs(data.jobs, data.training && data.training.job_id);
    renderTraining(data.training);
    renderTasks(data.tasks, data.serving);
    renderTelemetry(data.telemetry, data.source);
    $("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (e) {
    if (mine !== latest) return;
    $("updated").textContent = `failed: ${e.message}`;
    if (e.status === 404 && selectedJob) {  // the selected job was deleted: draw the newest again
      selectedJob = null;
      busy = true;
    }
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
