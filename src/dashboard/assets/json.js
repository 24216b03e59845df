// Collapsible JSON: objects and arrays are <details> (open to `openDepth`), scalars are coloured
// text. Built from nodes and text only, so any string in a payload stays text.

import { h } from "./ui.js";

const MAX_CHILDREN = 500;

function scalar(v) {
  if (v === null) return h("span", { class: "z" }, "null");
  switch (typeof v) {
    case "string": return h("span", { class: "s" }, JSON.stringify(v));
    case "number": return h("span", { class: "n" }, String(v));
    case "boolean": return h("span", { class: "b" }, String(v));
    default: return h("span", {}, String(v));
  }
}

function node(key, v, depth, openDepth) {
  const label = key === null ? null : h("span", { class: "k" }, `${JSON.stringify(key)}: `);
  if (v === null || typeof v !== "object") return h("div", {}, label, scalar(v));
  const isArray = Array.isArray(v);
  const entries = isArray ? v.map((x, i) => [i, x]) : Object.entries(v);
  const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
  if (!entries.length) return h("div", {}, label, `${open}${close}`);
  const count = isArray ? `${entries.length} items` : `${entries.length} keys`;
  const d = h("details", { open: depth < openDepth },
    h("summary", {}, label, open, h("span", { class: "z" }, ` ${count} `), close));
  for (const [k, x] of entries.slice(0, MAX_CHILDREN)) d.append(node(isArray ? null : k, x, depth + 1, openDepth));
  if (entries.length > MAX_CHILDREN) d.append(h("div", { class: "z" }, `… ${entries.length - MAX_CHILDREN} more`));
  return d;
}

/** A collapsible view of a JSON value (`undefined`: "none"). */
export function jsonView(value, { openDepth = 2 } = {}) {
  if (value === undefined) return h("p", { class: "muted" }, "none");
  return h("div", { class: "json" }, node(null, value, 0, openDepth));
}
