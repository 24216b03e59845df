// The runs list: filters (status, task, tag, version, created between, idempotency key, batch)
// kept in the address so a filtered list can be shared or reloaded, cursor pages, and live
// updates (the page is read again every two seconds).

import { api, query } from "../api.js";
import { badge, between, duration, errorBox, every, fill, h, isoToLocal, link, localToIso, table, tags, timeEl } from "../ui.js";

export const STATUSES = ["PENDING_VERSION", "DELAYED", "QUEUED", "DEQUEUED", "EXECUTING", "WAITING", "COMPLETED",
  "CANCELED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"];

/** Filters in the address → the API's query. */
function apiQuery(q) {
  return query({
    "filter[status]": q.get("status"),
    "filter[taskIdentifier]": q.get("task"),
    "filter[tag]": q.get("tag"),
    "filter[version]": q.get("version"),
    "filter[createdAt][from]": q.get("from"),
    "filter[createdAt][to]": q.get("to"),
    "filter[idempotencyKey]": q.get("key"),
    "filter[batch]": q.get("batch"),
    "page[size]": q.get("size") || 25,
    "page[after]": q.get("after"),
    "page[before]": q.get("before"),
  });
}

function statusPicker(selected) {
  const chosen = new Set(selected);
  const summary = h("summary", {}, chosen.size ? `Status (${chosen.size})` : "Any status");
  const boxes = STATUSES.map((st) => h("label", { class: "inline" },
    h("input", { type: "checkbox", name: "status", value: st, checked: chosen.has(st) }), badge(st)));
  const d = h("details", { class: "status-picker" }, summary, h("div", { class: "menu" }, boxes));
  d.addEventListener("change", () => {
    const n = d.querySelectorAll("input:checked").length;
    summary.textContent = n ? `Status (${n})` : "Any status";
  });
  return h("div", { class: "field" }, h("span", {}, "Status"), d);
}

async function taskNames() {
  try {
    const latest = await api("/api/v1/deployments/latest");
    return latest.tasks.map((t) => t.id);
  } catch {
    return [];
  }
}

function filterForm(q, tasksList, apply) {
  const input = (name, label, props = {}) =>
    h("label", {}, label, h("input", { name, value: q.get(name) || "", ...props }));
  const list = h("datalist", { id: "task-names" }, tasksList.map((t) => h("option", { value: t })));
  const f = h("form", { class: "filters", "aria-label": "Filter runs" },
    statusPicker((q.get("status") || "").split(",").filter(Boolean)),
    input("task", "Task", { list: "task-names", placeholder: "any" }), list,
    input("tag", "Tag", { placeholder: "any" }),
    input("version", "Version", { placeholder: "20260101.1" }),
    h("label", {}, "Created from", h("input", { type: "datetime-local", name: "from", value: isoToLocal(q.get("from")) })),
    h("label", {}, "Created to", h("input", { type: "datetime-local", name: "to", value: isoToLocal(q.get("to")) })),
    input("key", "Idempotency key"),
    input("batch", "Batch", { placeholder: "batch_…" }),
    h("button", { class: "primary", type: "submit" }, "Apply"),
    h("button", { type: "button", onclick: () => apply(new URLSearchParams()) }, "Clear"));
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(f);
    const next = new URLSearchParams();
    const statuses = data.getAll("status");
    if (statuses.length) next.set("status", statuses.join(","));
    for (const k of ["task", "tag", "version", "key", "batch"]) {
      const v = String(data.get(k) || "").trim();
      if (v) next.set(k, v);
    }
    for (const k of ["from", "to"]) {
      const v = localToIso(String(data.get(k) || ""));
      if (v) next.set(k, v);
    }
    apply(next);
  });
  return f;
}

export function runsTable(runs, { empty } = {}) {
  return table([
    ["Run", (r) => link(`runs/${r.id}`, h("code", {}, r.id))],
    ["Task", (r) => r.taskIdentifier],
    ["Status", (r) => badge(r.status)],
    ["Version", (r) => r.version || "—"],
    ["Tags", (r) => tags(r.tags)],
    ["Created", (r) => timeEl(r.createdAt)],
    ["Duration", (r) => (r.startedAt ? duration(between(r.startedAt, r.finishedAt)) : "—"), "num"],
    ["Compute", (r) => duration(r.durationMs), "num"],
  ], runs, { empty: empty || "No runs match." });
}

export async function render(main, ctx) {
  const q = ctx.query;
  const go = (params) => ctx.navigate(`runs${params.toString() ? `?${params}` : ""}`);
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  main.append(
    h("h1", {}, "Runs", h("span", { class: "live", title: "The list is read again every 2 seconds" }, "live")),
    h("section", { class: "card" }, filterForm(q, await taskNames(), go)),
    h("section", { class: "card" }, list, pager));

  const page = (cursor, id) => {
    const next = new URLSearchParams(q);
    next.delete("after");
    next.delete("before");
    next.set(cursor, id);
    return `runs?${next}`;
  };
  const refresh = async () => {
    try {
      const res = await api(`/api/v1/runs${apiQuery(q)}`);
      fill(list, runsTable(res.data));
      fill(pager,
        res.pagination.previous ? link(page("before", res.pagination.previous), "← Newer") : null,
        res.pagination.next ? link(page("after", res.pagination.next), "Older →") : null);
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  // The status menu closes when the reader clicks elsewhere.
  const closeMenu = (e) => {
    const d = main.querySelector(".status-picker");
    if (d && d.open && !d.contains(e.target)) d.open = false;
  };
  document.addEventListener("click", closeMenu);
  const stop = every(2000, refresh);
  return () => { stop(); document.removeEventListener("click", closeMenu); };
}
