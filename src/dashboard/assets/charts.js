// A small SVG charting module of our own: stacked bars over time, lines over time, and
// horizontal range bars (p50 to p95). Each returns an element; values go in as numbers and text
// only. Hovering a mark shows its value (an SVG <title>).

import { h } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Status colours, the same as the badges'. */
export const STATUS_COLORS = {
  COMPLETED: "#22a35a", FAILED: "#d64545", CRASHED: "#9f1d1d", SYSTEM_FAILURE: "#7b2cbf",
  TIMED_OUT: "#e0782b", CANCELED: "#98a2b3", EXPIRED: "#c4cad4", EXECUTING: "#2f6fd6",
  DEQUEUED: "#7aa7ee", WAITING: "#7c5cdb", QUEUED: "#e8b73a", DELAYED: "#3aa7a3",
  PENDING_VERSION: "#a8742d",
};

/** Colours for series that are not statuses. */
export const PALETTE = ["#2f6fd6", "#e0782b", "#22a35a", "#d64545", "#7c5cdb", "#3aa7a3", "#a8742d", "#c2489b"];

const W = 720;
const M = { l: 44, r: 12, t: 10, b: 24 };

/** A round top for an axis and its tick step. */
function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((x) => x >= raw) || 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

const pad = (n) => String(n).padStart(2, "0");
function clock(d, withDay) {
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDay ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}` : t;
}

function shortValue(v, unit) {
  if (unit === "ms") {
    if (v >= 60000) return `${(v / 60000).toFixed(v >= 600000 ? 0 : 1)}m`;
    if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}s`;
    return `${Math.round(v)}ms`;
  }
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  return String(Math.round(v * 100) / 100);
}

function frame(height, max, unit) {
  const { top, step } = niceScale(max);
  const ih = height - M.t - M.b;
  const y = (v) => M.t + ih - (v / top) * ih;
  const axis = s("g", { class: "axis" });
  const grid = s("g", { class: "grid" });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(s("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }));
    axis.append(s("text", { x: M.l - 6, y: y(v) + 3, "text-anchor": "end" }, shortValue(v, unit)));
  }
  return { y, axis, grid, ih };
}

function timeAxis(axis, times, x, height) {
  if (!times.length) return;
  const span = times[times.length - 1] - times[0];
  const withDay = span > 20 * 3600 * 1000;
  const every = Math.max(1, Math.ceil(times.length / 7));
  for (let i = 0; i < times.length; i += every) {
    axis.append(s("text", { x: x(i), y: height - 6, "text-anchor": "middle" }, clock(times[i], withDay)));
  }
}

function legend(items) {
  return h("div", { class: "legend" }, items.map(([name, color]) => {
    const swatch = h("i");
    swatch.style.background = color;
    return h("span", {}, swatch, name);
  }));
}

function empty(message) {
  return h("div", { class: "chart" }, h("div", { class: "empty" }, message));
}

/**
 * Stacked bars over time. `times`: Date per bucket; `series`: [{name, color, values}] with one
 * value per bucket.
 */
export function stackedBars({ times, series, height = 200, unit, label = "" }) {
  const totals = times.map((_, i) => series.reduce((sum, ser) => sum + (ser.values[i] || 0), 0));
  const max = Math.max(0, ...totals);
  if (!max) return empty(`No ${label || "data"} in this window.`);
  const { y, axis, grid } = frame(height, max, unit);
  const iw = W - M.l - M.r;
  const bw = iw / times.length;
  const x = (i) => M.l + bw * i + bw / 2;
  const bars = s("g");
  times.forEach((t, i) => {
    let base = 0;
    for (const ser of series) {
      const v = ser.values[i] || 0;
      if (!v) continue;
      bars.append(s("rect", {
        x: M.l + bw * i + Math.min(1, bw * 0.1), width: Math.max(1, bw - Math.min(2, bw * 0.2)),
        y: y(base + v), height: Math.max(0.5, y(base) - y(base + v)), fill: ser.color,
        "data-series": ser.name,
      }, s("title", {}, `${clock(t, true)} · ${ser.name}: ${v}`)));
      base += v;
    }
  });
  timeAxis(axis, times, x, height);
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label }, grid, bars, axis);
  return h("div", { class: "chart" }, svg, legend(series.filter((x) => x.values.some(Boolean)).map((x) => [x.name, x.color])));
}

/** Lines over time: `series`: [{name, color, values}], one value per time. */
export function lines({ times, series, height = 200, unit, label = "" }) {
  const max = Math.max(0, ...series.flatMap((ser) => ser.values));
  if (!max) return empty(`No ${label || "data"} in this window.`);
  const { y, axis, grid } = frame(height, max, unit);
  const iw = W - M.l - M.r;
  const x = (i) => M.l + (times.length > 1 ? (iw * i) / (times.length - 1) : iw / 2);
  const marks = s("g");
  for (const ser of series) {
    const d = ser.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    marks.append(s("path", { d, fill: "none", stroke: ser.color, "stroke-width": ser.width || 2, "data-series": ser.name }));
    ser.values.forEach((v, i) => {
      if (!v && !(i === ser.values.length - 1)) return;
      marks.append(s("circle", { cx: x(i), cy: y(v), r: 2.5, fill: ser.color },
        s("title", {}, `${clock(times[i], true)} · ${ser.name}: ${v}`)));
    });
  }
  timeAxis(axis, times, x, height);
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label }, grid, marks, axis);
  return h("div", { class: "chart" }, svg, legend(series.map((x) => [x.name, x.color])));
}

/**
 * Horizontal ranges, one row per item: a bar from 0 to p50 and a whisker to p95 (`rows`:
 * [{label, p50, p95, note}], values in `unit`).
 */
export function ranges({ rows, unit = "ms", label = "" }) {
  if (!rows.length) return empty(`No ${label || "data"} in this window.`);
  const rowH = 22;
  const left = 130;
  const height = rows.length * rowH + M.t + M.b;
  const max = Math.max(...rows.map((r) => r.p95));
  const { top, step } = niceScale(max || 1);
  const iw = W - left - M.r;
  const x = (v) => left + (v / top) * iw;
  const axis = s("g", { class: "axis" });
  const grid = s("g", { class: "grid" });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(s("line", { x1: x(v), x2: x(v), y1: M.t, y2: height - M.b }));
    axis.append(s("text", { x: x(v), y: height - 6, "text-anchor": "middle" }, shortValue(v, unit)));
  }
  const marks = s("g");
  rows.forEach((r, i) => {
    const cy = M.t + i * rowH + rowH / 2;
    const name = r.label.length > 20 ? `${r.label.slice(0, 19)}…` : r.label;
    axis.append(s("text", { x: left - 8, y: cy + 3, "text-anchor": "end" }, name));
    const tip = `${r.label}: p50 ${shortValue(r.p50, unit)}, p95 ${shortValue(r.p95, unit)}${r.note ? ` (${r.note})` : ""}`;
    marks.append(s("line", { x1: x(r.p50), x2: x(r.p95), y1: cy, y2: cy, stroke: PALETTE[1], "stroke-width": 2 }));
    marks.append(s("line", { x1: x(r.p95), x2: x(r.p95), y1: cy - 6, y2: cy + 6, stroke: PALETTE[1], "stroke-width": 2 }));
    marks.append(s("rect", { x: left, y: cy - 6, width: Math.max(1, x(r.p50) - left), height: 12, rx: 2, fill: PALETTE[0], "data-task": r.label },
      s("title", {}, tip)));
  });
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label }, grid, marks, axis);
  return h("div", { class: "chart" }, svg, legend([["p50", PALETTE[0]], ["p50 → p95", PALETTE[1]]]));
}
