// Wait tokens: the environment's tokens (filter by status, cursor pages), each one's data once
// done, a form to complete a waiting one (the runs waiting for it resume), and one to make a
// token.

import { api, query } from "../api.js";
import { jsonView } from "../json.js";
import { badge, card, errorBox, every, fill, form, h, link, parseJson, table, tags, timeEl, toast } from "../ui.js";

const enc = encodeURIComponent;

function completeForm(token, reload) {
  const data = h("textarea", { name: "data", rows: 2, "aria-label": `Data for ${token.id}` }, "{}");
  return form([h("label", {}, "Data (JSON)", data)], async () => {
    const value = parseJson(data.value, "the data");
    await api(`/api/v1/waitpoints/tokens/${enc(token.id)}/complete`, { method: "POST", body: { data: value === undefined ? null : value } });
    toast(`Token ${token.id} completed`);
    await reload(true);
  }, { label: "Complete" });
}

function details(token, reload) {
  if (token.status === "WAITING") return h("details", {}, h("summary", {}, "Complete…"), completeForm(token, reload));
  if (token.output === undefined) return "";
  let value = token.output;
  try { value = JSON.parse(token.output); } catch { /* shown as text */ }
  return h("details", {}, h("summary", {}, token.outputIsError ? "Error" : "Data"), jsonView(value, { openDepth: 1 }));
}

function createForm(reload) {
  return form([
    h("label", {}, "Timeout", h("input", { name: "timeout", placeholder: "1h (none: never)", size: 12 })),
    h("label", {}, "Tags (comma-separated)", h("input", { name: "tags", size: 16 })),
    h("label", {}, "Idempotency key", h("input", { name: "idempotencyKey", size: 14 })),
  ], async (data, f) => {
    const body = {};
    const timeout = String(data.get("timeout") || "").trim();
    if (timeout) body.timeout = timeout;
    const t = String(data.get("tags") || "").split(",").map((x) => x.trim()).filter(Boolean);
    if (t.length) body.tags = t;
    const key = String(data.get("idempotencyKey") || "").trim();
    if (key) body.idempotencyKey = key;
    const res = await api("/api/v1/waitpoints/tokens", { method: "POST", body });
    toast(`${res.isCached ? "Existing" : "New"} token ${res.id}`);
    f.reset();
    await reload(true);
  }, { label: "Make token" });
}

export async function render(main, ctx) {
  const q = ctx.query;
  const status = q.get("status") || "";
  const select = h("select", { name: "status", "aria-label": "Status" },
    ["", "WAITING", "COMPLETED", "TIMED_OUT"].map((s) => h("option", { value: s, selected: s === status }, s || "Any status")));
  select.addEventListener("change", () => ctx.navigate(`tokens${select.value ? `?status=${select.value}` : ""}`));
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Wait tokens"),
    card(null, h("div", { class: "toolbar" }, select), list, pager),
    card("New token", createForm((force) => reload(force))));
  const page = (cursor, id) => {
    const next = new URLSearchParams(q);
    next.delete("after");
    next.delete("before");
    next.set(cursor, id);
    return `tokens?${next}`;
  };
  const reload = async (force = false) => {
    try {
      const res = await api(`/api/v1/waitpoints/tokens${query({
        "filter[status]": status, "page[size]": 25, "page[after]": q.get("after"), "page[before]": q.get("before"),
      })}`);
      const typing = document.activeElement && document.activeElement.matches("textarea,input") && list.contains(document.activeElement);
      const open = list.querySelector("details[open]");
      if (!force && (typing || open)) return;
      fill(list, table([
        ["Token", (t) => h("code", {}, t.id)],
        ["Status", (t) => badge(t.status === "WAITING" ? "WAITING" : t.status === "COMPLETED" ? "COMPLETED" : "TIMED_OUT")],
        ["Tags", (t) => tags(t.tags)],
        ["Created", (t) => timeEl(t.createdAt)],
        ["Times out", (t) => (t.timeoutAt ? timeEl(t.timeoutAt) : "never")],
        ["Done", (t) => (t.completedAt ? timeEl(t.completedAt) : "—")],
        ["", (t) => details(t, reload)],
      ], res.data, { empty: "No wait tokens." }));
      fill(pager,
        res.pagination.previous ? link(page("before", res.pagination.previous), "← Newer") : null,
        res.pagination.next ? link(page("after", res.pagination.next), "Older →") : null);
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  return every(3000, () => reload());
}
