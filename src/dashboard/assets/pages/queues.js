// Queues: running, queued and the limit of each queue, pause/resume, an override of the limit
// (and its reset); the environment's own limit; and queue depth over the last hour. Read again
// every three seconds, except while a limit is being typed.

import { api } from "../api.js";
import { action, badge, card, errorBox, every, fill, form, h, link, number, table, timeEl, toast } from "../ui.js";
import { depthChart } from "./overview.js";

const enc = encodeURIComponent;

function limitForm(q, reload) {
  const input = h("input", { type: "number", min: 0, max: 100000, name: "limit", placeholder: String(q.concurrencyLimit ?? ""), "aria-label": `Limit of ${q.name}`, size: 6 });
  return form([input], async () => {
    const n = Number(input.value);
    if (input.value === "" || !Number.isInteger(n)) throw new Error("give a whole number");
    await api(`/api/v1/queues/${enc(q.id)}/concurrency/override`, { method: "POST", body: { concurrencyLimit: n } });
    toast(`${q.name}: limit ${n}`);
    input.blur();
    await reload();
  }, { label: "Override", primary: false });
}

function queuesTable(queues, reload) {
  return table([
    ["Queue", (q) => h("div", {}, h("strong", {}, q.name), h("div", { class: "muted small" }, q.type === "task" ? "task's own queue" : "shared queue"))],
    ["Running", (q) => number(q.running), "num"],
    ["Queued", (q) => link(`runs?status=QUEUED${q.type === "task" ? `&task=${enc(q.name)}` : ""}`, number(q.queued)), "num"],
    ["Limit", (q) => h("div", {},
      q.concurrencyLimit === null || q.concurrencyLimit === undefined ? "environment's" : String(q.concurrencyLimit),
      q.concurrency.override !== null && q.concurrency.override !== undefined
        ? h("div", { class: "muted small" }, "overridden ", timeEl(q.concurrency.overriddenAt), q.concurrency.base !== null && q.concurrency.base !== undefined ? ` (base ${q.concurrency.base})` : "")
        : null), "num"],
    ["State", (q) => (q.paused ? badge("PAUSED", "st-warn") : badge("ACTIVE", "st-success"))],
    ["", (q) => h("div", { class: "toolbar" },
      action(q.paused ? "Resume" : "Pause", async () => {
        await api(`/api/v1/queues/${enc(q.id)}/pause`, { method: "POST", body: { action: q.paused ? "resume" : "pause" } });
        toast(`${q.name} ${q.paused ? "resumed" : "paused"}`);
        await reload();
      }),
      limitForm(q, reload),
      q.concurrency.override !== null && q.concurrency.override !== undefined ? action("Reset", async () => {
        await api(`/api/v1/queues/${enc(q.id)}/concurrency/reset`, { method: "POST", body: {} });
        toast(`${q.name}: the override is gone`);
        await reload();
      }) : null)],
  ], queues, { empty: "No queues yet: they come with the first deploy.", rowClass: (q) => `queue-row${q.paused ? " paused" : ""}` });
}

export async function render(main) {
  const env = h("div");
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const chart = h("div");
  main.append(h("h1", {}, "Queues", h("span", { class: "live" }, "live")),
    card("Environment", env),
    card("Queues", list),
    card("Queue depth, last hour", chart));
  const reload = async () => {
    try {
      const [session, res] = await Promise.all([api("/api/v1/dashboard/session"), api("/api/v1/queues?perPage=100")]);
      const e = session.environment;
      fill(env, h("div", { class: "row" },
        h("div", {}, h("div", { class: "stat" }, `${e.running} / ${e.concurrencyLimit}`), h("div", { class: "muted" }, "runs holding a slot / the environment's concurrency limit (the host admin sets it)")),
        h("div", {}, h("div", { class: "muted" }, "Outbound HTTP allowed to"),
          e.allowedOutboundHosts.length ? e.allowedOutboundHosts.map((r) => h("div", {}, h("code", {}, r))) : h("div", {}, "no host"))));
      // Rebuilding the rows would drop a limit being typed; the next turn shows the change.
      const typing = document.activeElement && document.activeElement.matches("input") && list.contains(document.activeElement);
      if (!typing) {
        fill(list, queuesTable(res.data, reload), res.pagination.totalPages > 1 ? h("p", { class: "muted" }, `The first 100 of ${res.pagination.count} queues.`) : null);
      }
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  const stop = every(3000, reload);
  const stopChart = every(15000, async () => {
    try { fill(chart, await depthChart("1h", "1m")); } catch (e) { fill(chart, errorBox(e)); }
  });
  return () => { stop(); stopChart(); };
}
