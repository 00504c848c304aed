// Small SVG charts for the edged dashboard: a time-series line chart and a grouped bar chart.
// Self-contained (no library, nothing fetched): the dashboard must work on an offline board.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];  // from below lo to above hi, so every point lies inside the axis
  const last = Math.ceil(hi / step - 1e-9) * step;
  for (let v = Math.floor(lo / step + 1e-9) * step; v <= last + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toPrecision(2);
}

// points: [{x: unix seconds, y: number|null}]; draws into `host` (an element), replacing its content.
function lineChart(host, points, opts) {
  const W = host.clientWidth || 560, H = opts.height || 200, M = {l: 52, r: 12, t: 14, b: 28};
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.label});
  const pts = points.filter((p) => p.y !== null && p.y !== undefined);
  host.replaceChildren(svg);
  if (pts.length < 2) {
    svg.appendChild(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"}, "no data yet"));
    return svg;
  }
  const x0 = pts[0].x, x1 = pts[pts.length - 1].x;
  const ys = pts.map((p) => p.y);
  const yTicks = niceTicks(Math.min(0, ...ys), Math.max(...ys), 4);
  const y0 = yTicks[0], y1 = yTicks[yTicks.length - 1];
  const sx = (x) => M.l + (x - x0) / Math.max(x1 - x0, 1e-9) * (W - M.l - M.r);
  const sy = (y) => H - M.b - (y - y0) / Math.max(y1 - y0, 1e-9) * (H - M.t - M.b);
  for (const t of yTicks) {
    svg.appendChild(svgEl("line", {x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t), class: "grid"}));
    svg.appendChild(svgEl("text", {x: M.l - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick"}, fmt(t)));
  }
  for (const frac of [0, 0.5, 1]) {
    const x = x0 + frac * (x1 - x0);
    const label = new Date(x * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
    svg.appendChild(svgEl("text", {x: sx(x), y: H - 8, "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle", class: "tick"}, label));
  }
  const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
  svg.appendChild(svgEl("path", {d, class: "series " + (opts.cls || ""), fill: "none"}));
  svg.appendChild(svgEl("text", {x: M.l, y: 10, class: "unit"}, opts.unit || ""));
  return svg;
}

// groups: [{label, values: {seriesName: number|null}}]; series: ordered names (one colour each).
function barChart(host, groups, series, opts) {
  const rowH = 18, gap = 10, M = {l: 120, r: 150, t: 8, b: 8};
  const H = M.t + M.b + groups.length * (series.length * rowH + gap);
  const W = host.clientWidth || 560;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${Math.max(H, 40)}`, class: "chart", role: "img", "aria-label": opts.label});
  host.replaceChildren(svg);
  const all = groups.flatMap((g) => series.map((s) => g.values[s])).filter((v) => v !== null && v !== undefined);
  if (!all.length) {
    svg.appendChild(svgEl("text", {x: W / 2, y: 24, "text-anchor": "middle", class: "empty"}, "no latency measured yet"));
    return svg;
  }
  const max = Math.max(...all);
  let y = M.t;
  for (const g of groups) {
    svg.appendChild(svgEl("text", {x: M.l - 8, y: y + rowH * series.length / 2 + 4, "text-anchor": "end", class: "tick"}, g.label));
    series.forEach((s, i) => {
      const v = g.values[s];
      if (v !== null && v !== undefined) {
        const w = (W - M.l - M.r) * v / max;
        svg.appendChild(svgEl("rect", {x: M.l, y: y + i * rowH + 2, width: Math.max(w, 1), height: rowH - 4, class: `bar bar${i}`}));
        svg.appendChild(svgEl("text", {x: M.l + w + 4, y: y + i * rowH + rowH - 6, class: "tick"}, `${fmt(v)} ${opts.unit} ${s}`));
      }
    });
    y += series.length * rowH + gap;
  }
  return svg;
}

window.edgedCharts = {lineChart, barChart};
