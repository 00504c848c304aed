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

const timeOfDay = (x) => new Date(x * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
const hasValue = (p) => p.y !== null && p.y !== undefined;

// Where the x axis is labelled: the ends and the middle of a time range, or whole numbers (epochs).
function xTicks(x0, x1, integerX) {
  if (!integerX) return [x0, (x0 + x1) / 2, x1];
  return niceTicks(x0, x1, Math.min(5, Math.max(x1 - x0, 1)))
    .filter((v) => v >= x0 - 1e-9 && v <= x1 + 1e-9 && Math.abs(v - Math.round(v)) < 1e-9);
}

// series: [{name, points: [{x, y|null}], cls}]; opts: {unit, label, empty, height, markers, integerX, xFormat}.
// x is Unix seconds unless opts.xFormat says otherwise. A series without values is not drawn (the legend
// says "no data"); when no series has values the chart shows opts.empty. With opts.markers every point is
// a circle carrying its value (data-x, data-y), and one point is enough to draw.
function lineChart(host, series, opts) {
  const W = host.clientWidth || 560, H = opts.height || 200, M = {l: 52, r: 12, t: 18, b: 28};
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.label});
  host.replaceChildren(svg);
  const drawn = series.map((s) => ({...s, pts: s.points.filter(hasValue)}))
    .filter((s) => s.pts.length >= (opts.markers ? 1 : 2));
  if (!drawn.length) {
    svg.appendChild(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"}, opts.empty || "no data yet"));
    return svg;
  }
  const all = drawn.flatMap((s) => s.pts);
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const yTicks = niceTicks(Math.min(0, ...ys), Math.max(...ys), 4);
  const y0 = yTicks[0], y1 = yTicks[yTicks.length - 1];
  const pad = x1 > x0 ? 0 : 1;  // a single x (one epoch) sits in the middle
  const sx = (x) => M.l + (x - x0 + pad) / (x1 - x0 + 2 * pad) * (W - M.l - M.r);
  const sy = (y) => H - M.b - (y - y0) / Math.max(y1 - y0, 1e-9) * (H - M.t - M.b);
  for (const t of yTicks) {
    svg.appendChild(svgEl("line", {x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t), class: "grid"}));
    svg.appendChild(svgEl("text", {x: M.l - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick"}, fmt(t)));
  }
  const xFormat = opts.xFormat || timeOfDay;
  for (const x of xTicks(x0, x1, opts.integerX)) {
    const anchor = pad || (x > x0 && x < x1) ? "middle" : x === x0 ? "start" : "end";
    svg.appendChild(svgEl("text", {x: sx(x), y: H - 8, "text-anchor": anchor, class: "tick"}, xFormat(x)));
  }
  for (const s of drawn) {
    const d = s.pts.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
    svg.appendChild(svgEl("path", {d, class: "series " + (s.cls || ""), fill: "none", "data-series": s.name}));
    if (opts.markers) {
      for (const p of s.pts) {
        const dot = svgEl("circle", {cx: sx(p.x), cy: sy(p.y), r: 3, class: "point " + (s.cls || ""), "data-x": p.x, "data-y": p.y});
        dot.appendChild(svgEl("title", {}, `${s.name} at ${xFormat(p.x)}: ${fmt(p.y)} ${opts.unit || ""}`));
        svg.appendChild(dot);
      }
    }
  }
  svg.appendChild(svgEl("text", {x: M.l, y: 11, class: "unit"}, opts.unit || ""));
  if (series.length > 1) legend(svg, W - M.r, series, drawn);
  return svg;
}

function legend(svg, right, series, drawn) {
  let x = right;
  for (const s of [...series].reverse()) {
    const has = drawn.some((d) => d.name === s.name);
    const label = svgEl("text", {x, y: 11, "text-anchor": "end", class: `legend ${s.cls || ""}${has ? "" : " missing"}`},
                        has ? s.name : `${s.name}: no data`);
    svg.appendChild(label);
    x -= 6.5 * label.textContent.length + 14;  // about one 11 px character each
  }
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
