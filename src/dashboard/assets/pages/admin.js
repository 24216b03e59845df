// The admin's pages (signed in with the host's admin key): projects with their environments,
// environments with their limits (concurrency editable), and secret keys — made here (the key
// is shown once), listed without secrets, revoked.

import { api } from "../api.js";
import { action, badge, bytes, card, errorBox, fill, form, h, link, table, timeEl, toast } from "../ui.js";

const enc = encodeURIComponent;

async function load() {
  const [envs, keys] = await Promise.all([api("/api/v1/admin/environments"), api("/api/v1/admin/keys")]);
  return { envs: envs.data, keys: keys.data };
}

export const projects = {
  async render(main) {
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    main.append(h("h1", {}, "Projects"), card(null, box));
    try {
      const { envs, keys } = await load();
      const byProject = new Map();
      for (const e of envs) {
        if (!byProject.has(e.project)) byProject.set(e.project, []);
        byProject.get(e.project).push(e);
      }
      const live = (p, env) => keys.filter((k) => k.project === p && (!env || k.environment === env) && !k.revokedAt).length;
      fill(box, table([
        ["Project", ([p]) => h("strong", {}, p)],
        ["Environments", ([, list]) => list.map((e) => h("span", { class: "tag" }, e.environment))],
        ["Running", ([, list]) => String(list.reduce((n, e) => n + e.running, 0)), "num"],
        ["Active keys", ([p]) => link("keys", String(live(p))), "num"],
      ], [...byProject.entries()], { empty: "No projects." }));
    } catch (e) {
      fill(box, errorBox(e));
    }
  },
};

function limitForm(e, reload) {
  const input = h("input", { type: "number", min: 0, name: "limit", value: e.concurrencyLimit, size: 6, "aria-label": `Concurrency limit of ${e.project}/${e.environment}` });
  return form([input], async () => {
    const body = { concurrencyLimit: input.value === "" ? null : Number(input.value) };
    await api(`/api/v1/admin/environments/${enc(e.project)}/${enc(e.environment)}`, { method: "PUT", body });
    toast(`${e.project}/${e.environment}: limit ${input.value || "host default"}`);
    await reload();
  }, { label: "Set" });
}

export const environments = {
  async render(main) {
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    main.append(h("h1", {}, "Environments"), card(null, box),
      h("p", { class: "muted" }, "An empty limit goes back to the host's default. Allow-lists and size limits change with ", h("code", {}, "kiln envs set"), "."));
    const reload = async () => {
      try {
        const { envs } = await load();
        fill(box, table([
          ["Environment", (e) => [h("strong", {}, `${e.project} / ${e.environment}`), h("div", { class: "muted small" }, e.id)]],
          ["Running", (e) => String(e.running), "num"],
          ["Concurrency limit", (e) => limitForm(e, reload)],
          ["Max component", (e) => (e.maxComponentBytes ? bytes(e.maxComponentBytes) : "host's"), "num"],
          ["Max payload", (e) => (e.maxPayloadBytes ? bytes(e.maxPayloadBytes) : "host's"), "num"],
          ["Outbound HTTP", (e) => (e.allowedOutboundHosts.length ? e.allowedOutboundHosts.map((r) => h("div", {}, h("code", {}, r))) : "none")],
        ], envs, { empty: "No environments." }));
      } catch (e) {
        fill(box, errorBox(e));
      }
    };
    await reload();
  },
};

export const keys = {
  async render(main) {
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const made = h("div");
    const reload = async () => {
      try {
        const { keys: list } = await load();
        fill(box, table([
          ["Key", (k) => [h("code", {}, `${k.prefix}…`), h("div", { class: "muted small" }, k.id)]],
          ["Environment", (k) => `${k.project} / ${k.environment}`],
          ["Created", (k) => timeEl(k.createdAt)],
          ["State", (k) => (k.revokedAt ? [badge("REVOKED", "st-error"), " ", timeEl(k.revokedAt)] : badge("ACTIVE", "st-success"))],
          ["", (k) => (k.revokedAt ? "" : action("Revoke", async () => {
            await api(`/api/v1/admin/keys/${enc(k.id)}/revoke`, { method: "POST", body: {} });
            toast(`Key ${k.prefix}… revoked`);
            await reload();
          }, { cls: "danger", confirm: `Revoke ${k.prefix}… of ${k.project}/${k.environment}? Requests with it are refused at once.` }))],
        ], list, { empty: "No keys." }));
      } catch (e) {
        fill(box, errorBox(e));
      }
    };
    const project = h("input", { name: "project", required: true, placeholder: "acme", size: 12 });
    const environment = h("input", { name: "environment", required: true, placeholder: "prod", size: 12 });
    const create = form([h("label", {}, "Project", project), h("label", {}, "Environment", environment)], async (_, f) => {
      const k = await api("/api/v1/admin/keys", { method: "POST", body: { project: project.value.trim(), environment: environment.value.trim() } });
      fill(made, h("div", { class: "notice new-key" },
        h("strong", {}, `New key for ${k.project} / ${k.environment}`), " — copy it now, it is not shown again:",
        h("pre", {}, k.key),
        h("button", { type: "button", onclick: () => navigator.clipboard.writeText(k.key).then(() => toast("Copied")) }, "Copy")));
      f.reset();
      await reload();
    }, { label: "Create key" });
    main.append(h("h1", {}, "Keys"),
      card("New key", h("p", { class: "muted" }, "Makes the project and environment on first use."), create, made),
      card("Keys", box));
    await reload();
  },
};
