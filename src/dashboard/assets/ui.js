// Small DOM helpers shared by the pages. Everything the host sends is put in the page as text
// (textContent, attributes), never parsed as HTML, so no value can become markup or script.

/**
 * Makes an element: `h("a", { href, class: "x", onclick }, "text", child…)`. Props starting with
 * `on` are listeners; `class`, `text`, `dataset` are handled; others become attributes (`false`
 * and `null` leave them out). Children are nodes or strings (text); arrays are flattened.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the dashboard (routed without a reload). */
export function link(path, ...children) {
  return h("a", { href: `/dashboard/${path}`, "data-link": true }, ...children);
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

/** A definition list from [label, value] pairs; pairs whose value is empty are left out. */
export function kv(pairs) {
  const dl = h("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) continue;
    dl.append(h("dt", {}, k), h("dd", {}, v));
  }
  return dl;
}

export function badge(status, extra) {
  return h("span", { class: `badge st-${status}${extra ? " " + extra : ""}` }, status);
}

export function tags(list) {
  return (list || []).map((t) => h("span", { class: "tag" }, t));
}

/**
 * A table: `columns` are [header, cell(row) → node or text, className?]; `rows` the data.
 * `onRow(row)` makes rows clickable.
 */
export function table(columns, rows, { onRow, empty = "Nothing here yet.", rowClass } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "scroll" },
    h("table", { class: "data" },
      h("thead", {}, h("tr", {}, columns.map(([name, , cls]) => h("th", { class: cls }, name)))),
      h("tbody", {}, rows.map((row) => h("tr", {
        class: [onRow ? "clickable" : "", rowClass ? rowClass(row) : ""].join(" ").trim() || null,
        onclick: onRow ? (e) => { if (!e.target.closest("a,button,input,select,textarea")) onRow(row); } : null,
      }, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))))))));
}

export function errorBox(e) {
  return h("div", { class: "error-box", role: "alert" }, e && e.message ? e.message : String(e));
}

export function toast(message, bad = false) {
  const t = h("div", { class: `toast${bad ? " bad" : ""}`, role: bad ? "alert" : "status" }, message);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), bad ? 7000 : 3500);
}

/** A button that runs `action` (async), disabled meanwhile; a failure shows as a toast. */
export function action(label, run, { cls = "", confirm: question, title } = {}) {
  const b = h("button", { class: cls, type: "button", title }, label);
  b.addEventListener("click", async () => {
    if (question && !window.confirm(question)) return;
    b.disabled = true;
    try { await run(); } catch (e) { toast(e.message, true); } finally { b.disabled = false; }
  });
  return b;
}

/** A form that runs `submit(form data)` (async); a failure shows under it. */
export function form(fields, submit, { label = "Save", cls = "inline", primary = true } = {}) {
  const out = h("div", { class: "form-error" });
  const f = h("form", { class: cls }, fields, h("button", { class: primary ? "primary" : null, type: "submit" }, label));
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = f.querySelector("button[type=submit]");
    button.disabled = true;
    out.replaceChildren();
    try { await submit(new FormData(f), f); } catch (err) { out.append(errorBox(err)); } finally { button.disabled = false; }
  });
  return h("div", {}, f, out);
}

export function field(label, input) {
  return h("label", {}, label, input);
}

// ---- formatting ----

const pad = (n) => String(n).padStart(2, "0");

/** A time as the reader's local date and time (to the second), `—` for none. */
export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = new Date();
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

export function timeEl(iso) {
  return h("time", { datetime: iso || null, title: iso || null }, time(iso));
}

/** A duration in milliseconds, in the largest units that read well. */
export function duration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${m % 60}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

export function between(fromIso, toIso) {
  if (!fromIso) return null;
  const end = toIso ? new Date(toIso) : new Date();
  return end - new Date(fromIso);
}

export function number(n) {
  if (n === undefined || n === null) return "—";
  return Number(n).toLocaleString("en-US");
}

export function bytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** The value of `<input type=datetime-local>` as an ISO date (local time), or "". */
export function localToIso(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Runs `f` now and every `ms` until the returned stop is called; a failure skips one turn. */
export function every(ms, f) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try { await f(); } catch { /* shown by the page; try again next turn */ }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Parses JSON typed by a person; the error names where it went wrong. */
export function parseJson(text, what) {
  if (!text.trim()) return undefined;
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not JSON: ${e.message}`); }
}
