// Environment variables: their names, each value hidden until asked for (then read from the host
// for that one variable), change, delete, add one, and import a `.env` text. The list's values
// are dropped as soon as they arrive: the page keeps names only.

import { api } from "../api.js";
import { action, card, errorBox, fill, form, h, table, toast } from "../ui.js";

const enc = encodeURIComponent;

/** `NAME=value` lines (with `export`, quotes and comments as .env files have them). */
export function parseDotenv(text) {
  const out = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`not a NAME=value line: ${line.slice(0, 40)}`);
    let value = m[2];
    if (/^".*"$/.test(value)) value = value.slice(1, -1).replace(/\\n/g, "\n").replace(/\\"/g, "\"");
    else if (/^'.*'$/.test(value)) value = value.slice(1, -1);
    else value = value.replace(/\s+#.*$/, "");
    out[m[1]] = value;
  }
  return out;
}

function valueCell(base, name) {
  const shown = h("span", { class: "hidden-value" }, "••••••••");
  const cell = h("div", { class: "toolbar var-value" });
  const hide = () => fill(cell, shown, h("button", { type: "button", class: "link", onclick: reveal }, "Show"));
  async function reveal() {
    try {
      const res = await api(`${base}/${enc(name)}`);
      fill(cell, h("code", { class: "revealed" }, res.value), h("button", { type: "button", class: "link", onclick: hide }, "Hide"));
    } catch (e) {
      toast(e.message, true);
    }
  }
  hide();
  return cell;
}

function editForm(base, name, reload) {
  const value = h("input", { name: "value", type: "password", autocomplete: "off", "aria-label": `New value of ${name}`, size: 16 });
  return form([value], async () => {
    await api(`${base}/${enc(name)}`, { method: "PUT", body: { value: value.value } });
    toast(`${name} changed (new runs get it)`);
    await reload();
  }, { label: "Change" });
}

export async function render(main, ctx) {
  const env = ctx.session.info.environment;
  const base = `/api/v1/projects/${enc(env.project)}/envvars/${enc(env.environment)}`;
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const reload = async () => {
    try {
      const names = (await api(base)).map((v) => v.name);
      fill(list, table([
        ["Name", (n) => h("code", {}, n)],
        ["Value", (n) => valueCell(base, n)],
        ["", (n) => h("div", { class: "toolbar" },
          h("details", {}, h("summary", {}, "Change…"), editForm(base, n, reload)),
          action("Delete", async () => {
            await api(`${base}/${enc(n)}`, { method: "DELETE" });
            toast(`${n} deleted`);
            await reload();
          }, { cls: "danger", confirm: `Delete ${n}?` }))],
      ], names, { empty: "No variables yet." }));
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  const name = h("input", { name: "name", required: true, placeholder: "API_KEY", size: 16, autocomplete: "off" });
  const value = h("input", { name: "value", type: "password", autocomplete: "off", size: 20 });
  const add = form([h("label", {}, "Name", name), h("label", {}, "Value", value)], async (_, f) => {
    await api(base, { method: "POST", body: { name: name.value.trim(), value: value.value } });
    toast(`${name.value.trim()} added`);
    f.reset();
    await reload();
  }, { label: "Add" });
  const text = h("textarea", { name: "dotenv", rows: 4, placeholder: "API_KEY=…\nREGION=eu" });
  const override = h("input", { type: "checkbox", name: "override" });
  const importer = form([h("label", {}, ".env text", text), h("label", { class: "inline" }, override, "replace existing values")], async (_, f) => {
    const variables = parseDotenv(text.value);
    const res = await api(`${base}/import`, { method: "POST", body: { variables, override: override.checked } });
    toast(res.kept && res.kept.length ? `Imported; kept as they were: ${res.kept.join(", ")}` : "Imported");
    f.reset();
    await reload();
  }, { label: "Import", cls: "" });
  main.append(h("h1", {}, "Environment variables"),
    h("p", { class: "muted" }, `Variables of ${env.project} / ${env.environment}. A run gets the values as they are when its first attempt starts.`),
    card("Variables", list),
    h("div", { class: "row" }, card("Add a variable", add), card("Import", importer)));
  await reload();
}
