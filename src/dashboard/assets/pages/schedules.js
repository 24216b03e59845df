// Schedules: the environment's cron schedules (declared by tasks, or made here or over the API)
// with their next run, activate/deactivate, delete, and a form that creates one.

import { api, query } from "../api.js";
import { action, badge, card, errorBox, fill, form, h, link, table, timeEl, toast } from "../ui.js";

const enc = encodeURIComponent;
const PER_PAGE = 25;

function createForm(tasks, zones, reload) {
  const input = (name, props = {}) => h("input", { name, ...props });
  return form([
    h("label", {}, "Task", input("task", { list: "schedule-tasks", required: true, size: 14 })),
    h("datalist", { id: "schedule-tasks" }, tasks.map((t) => h("option", { value: t }))),
    h("label", {}, "Cron (5 fields)", input("cron", { required: true, placeholder: "0 9 * * 1-5", size: 14 })),
    h("label", {}, "Time zone", input("timezone", { list: "schedule-zones", placeholder: "UTC", size: 16 })),
    h("datalist", { id: "schedule-zones" }, zones.map((z) => h("option", { value: z }))),
    h("label", {}, "Deduplication key", input("deduplicationKey", { required: true, size: 14 })),
    h("label", {}, "External id", input("externalId", { size: 12 })),
  ], async (data, f) => {
    const body = {};
    for (const [k, v] of data.entries()) if (String(v).trim()) body[k] = String(v).trim();
    const s = await api("/api/v1/schedules", { method: "POST", body });
    toast(`Schedule ${s.id}: next run ${s.nextRun || "—"}`);
    f.reset();
    await reload();
  }, { label: "Create schedule" });
}

export async function render(main, ctx) {
  const page = Math.max(1, Number(ctx.query.get("page")) || 1);
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const creator = h("div");
  main.append(h("h1", {}, "Schedules"), card("Schedules", list), card("New schedule", creator));
  const reload = async () => {
    try {
      const res = await api(`/api/v1/schedules${query({ page, perPage: PER_PAGE })}`);
      const p = res.pagination;
      fill(list, table([
        ["Task", (s) => link(`runs?task=${enc(s.task)}`, s.task)],
        ["Cron", (s) => h("div", {}, h("code", {}, s.generator.expression), h("div", { class: "muted small" }, s.generator.description))],
        ["Time zone", (s) => s.timezone],
        ["Type", (s) => s.type.toLowerCase()],
        ["Next run", (s) => (s.nextRun ? timeEl(s.nextRun) : "—")],
        ["State", (s) => (s.active ? badge("ACTIVE", "st-success") : badge("INACTIVE"))],
        ["Key / external id", (s) => h("div", { class: "small" }, s.deduplicationKey || "", s.externalId ? h("div", { class: "muted" }, s.externalId) : null)],
        ["", (s) => h("div", { class: "toolbar" },
          action(s.active ? "Deactivate" : "Activate", async () => {
            await api(`/api/v1/schedules/${enc(s.id)}/${s.active ? "deactivate" : "activate"}`, { method: "POST", body: {} });
            await reload();
          }),
          s.type === "IMPERATIVE" ? action("Delete", async () => {
            await api(`/api/v1/schedules/${enc(s.id)}`, { method: "DELETE" });
            toast("Schedule deleted");
            await reload();
          }, { cls: "danger", confirm: `Delete the schedule of ${s.task} (${s.generator.expression})?` }) : null)],
      ], res.data, { empty: "No schedules. Tasks declare them, or create one below." }),
      p.totalPages > 1 ? h("div", { class: "pager" },
        page > 1 ? link(`schedules?page=${page - 1}`, "← Previous") : null,
        h("span", { class: "muted" }, `page ${page} of ${p.totalPages}`),
        page < p.totalPages ? link(`schedules?page=${page + 1}`, "Next →") : null) : null);
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  const [tasks, zones] = await Promise.all([
    api("/api/v1/deployments/latest").then((d) => d.tasks.map((t) => t.id)).catch(() => []),
    api("/api/v1/timezones").then((z) => z.timezones).catch(() => []),
  ]);
  fill(creator, createForm(tasks, zones, reload));
  await reload();
}
