// The environment at a glance: its limit and what runs now, and the charts — runs per bucket by
// status, queue depth over time, p50/p95 duration per task — over a window the reader picks.

import { api, query } from "../api.js";
import { lines, PALETTE, ranges, STATUS_COLORS, stackedBars } from "../charts.js";
import { card, duration, errorBox, every, fill, h, link, number, table } from "../ui.js";

const WINDOWS = [["15m", "30s"], ["1h", "1m"], ["6h", "5m"], ["24h", "30m"], ["7d", "3h"]];

/** The runs-by-status chart for a window (shared with the runs page). */
export async function runsChart(window, bucket) {
  const data = await api(`/api/v1/stats/runs${query({ window, bucket })}`);
  const times = data.buckets.map((b) => new Date(b.start));
  const statuses = Object.keys(STATUS_COLORS).filter((st) => data.buckets.some((b) => b.counts[st]));
  const series = statuses.map((st) => ({ name: st, color: STATUS_COLORS[st], values: data.buckets.map((b) => b.counts[st] || 0) }));
  return stackedBars({ times, series, label: "runs" });
}

/** The queue depth chart for a window (shared with the queues page). */
export async function depthChart(window, bucket) {
  const data = await api(`/api/v1/stats/queues${query({ window, bucket })}`);
  const times = data.points.map((p) => new Date(p));
  const series = [{ name: "all queues", color: "#667085", values: data.total, width: 2.5 }]
    .concat(data.queues.map((q, i) => ({ name: q.name, color: PALETTE[i % PALETTE.length], values: q.depth })));
  const chart = lines({ times, series: data.queues.length === 1 ? series.slice(1) : series, label: "queued runs" });
  if (data.truncated) chart.append(h("p", { class: "muted small" }, "Only the latest queue spans were read; early points may be low."));
  return chart;
}

export async function durationsChart(window) {
  const data = await api(`/api/v1/stats/durations${query({ window })}`);
  const rows = data.tasks.slice(0, 15).map((t) => ({ label: t.task, p50: t.p50Ms, p95: t.p95Ms, note: `${t.runs} runs` }));
  return h("div", { class: "grid2" },
    ranges({ rows, label: "finished runs" }),
    data.tasks.length ? table([
      ["Task", (t) => link(`runs?task=${encodeURIComponent(t.task)}`, t.task)],
      ["Runs", (t) => number(t.runs), "num"],
      ["p50", (t) => duration(t.p50Ms), "num"],
      ["p95", (t) => duration(t.p95Ms), "num"],
      ["max", (t) => duration(t.maxMs), "num"],
      ["compute p50", (t) => duration(t.computeP50Ms), "num"],
      ["compute p95", (t) => duration(t.computeP95Ms), "num"],
    ], data.tasks) : null);
}

function windowPicker(current, pick) {
  return h("div", { class: "toolbar" }, WINDOWS.map(([w]) =>
    h("button", { type: "button", class: w === current ? "primary" : "", onclick: () => pick(w) }, w)));
}

export async function render(main, ctx) {
  const env = ctx.session.info.environment;
  let window = ctx.query.get("window") || "1h";
  if (!WINDOWS.some(([w]) => w === window)) window = "1h";
  const bucket = WINDOWS.find(([w]) => w === window)[1];
  // Durations need finished runs; a short window often has too few.
  const durationWindow = window === "15m" || window === "1h" ? "24h" : window;
  const facts = h("div", { class: "stats" });
  const runsBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const depthBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const durationBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("h1", {}, `${env.project} / ${env.environment}`, h("span", { class: "live" }, "live"), h("span", { class: "spacer" }),
      windowPicker(window, (w) => ctx.navigate(`?window=${w}`, { replace: true }))),
    facts,
    h("div", { class: "grid2" },
      card(`Runs per ${bucket} by status`, runsBox),
      card("Queue depth", depthBox)),
    card(`Duration per task, last ${durationWindow} (p50 / p95)`, durationBox));

  const refresh = async () => {
    const [session, queued, executing, waiting] = await Promise.all([
      api("/api/v1/dashboard/session"),
      api("/api/v1/runs?filter[status]=QUEUED,DELAYED,PENDING_VERSION&page[size]=100"),
      api("/api/v1/runs?filter[status]=DEQUEUED,EXECUTING&page[size]=100"),
      api("/api/v1/runs?filter[status]=WAITING&page[size]=100"),
    ]);
    const count = (page) => `${page.data.length}${page.pagination.next ? "+" : ""}`;
    const e = session.environment;
    fill(facts,
      card("Concurrency", h("div", { class: "stat" }, `${e.running} / ${e.concurrencyLimit}`), h("div", { class: "muted" }, "runs holding a slot / the environment's limit")),
      card("Executing", h("div", { class: "stat" }, link("runs?status=EXECUTING,DEQUEUED", count(executing)))),
      card("Queued", h("div", { class: "stat" }, link("runs?status=QUEUED,DELAYED,PENDING_VERSION", count(queued)))),
      card("Waiting", h("div", { class: "stat" }, link("runs?status=WAITING", count(waiting)))));
    const show = async (box, make) => {
      try { fill(box, await make()); } catch (err) { fill(box, errorBox(err)); }
    };
    await Promise.all([
      show(runsBox, () => runsChart(window, bucket)),
      show(depthBox, () => depthChart(window, bucket)),
      show(durationBox, () => durationsChart(durationWindow)),
    ]);
  };
  return every(10000, () => refresh().catch((err) => fill(facts, errorBox(err))));
}
