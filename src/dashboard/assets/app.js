// The dashboard's shell: sign-in, the navigation for the kind of key (an environment's pages, or
// the admin's), and the router. Pages are modules with `render(main, ctx)` that may return a
// cleanup (stop polling, close streams), run when the page is left.

import { checkKey, session, signIn, signOut, whenRefused } from "./api.js";
import { fill, h } from "./ui.js";
import * as signin from "./pages/signin.js";
import * as overview from "./pages/overview.js";
import * as runs from "./pages/runs.js";
import * as run from "./pages/run.js";
import * as tasks from "./pages/tasks.js";
import * as queues from "./pages/queues.js";
import * as schedules from "./pages/schedules.js";
import * as tokens from "./pages/tokens.js";
import * as envVars from "./pages/env_vars.js";
import * as admin from "./pages/admin.js";

const BASE = "/dashboard/";

/** Pages of an environment's key: [path pattern, module, nav label]. */
const ENVIRONMENT = [
  ["", overview, "Overview"],
  ["runs", runs, "Runs"],
  ["runs/:id", run],
  ["tasks", tasks, "Tasks"],
  ["queues", queues, "Queues"],
  ["schedules", schedules, "Schedules"],
  ["tokens", tokens, "Wait tokens"],
  ["env-vars", envVars, "Environment variables"],
];

/** Pages of the admin key. */
const ADMIN = [
  ["", admin.projects, "Projects"],
  ["projects", admin.projects],
  ["environments", admin.environments, "Environments"],
  ["keys", admin.keys, "Keys"],
];

let cleanup = null;

function routes() {
  return session.info && session.info.kind === "admin" ? ADMIN : ENVIRONMENT;
}

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, page] of routes()) {
    const want = pattern.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(":") ? ((params[w.slice(1)] = decodeURIComponent(parts[i])), true) : w === parts[i]))) {
      return { page, params, pattern };
    }
  }
  return null;
}

export function navigate(path, { replace = false } = {}) {
  const url = BASE + path.replace(/^\/+/, "");
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function header() {
  const here = location.pathname.slice(BASE.length).split("/")[0];
  fill(document.getElementById("nav"), routes().filter((r) => r[2]).map(([pattern, , label]) =>
    h("a", { href: BASE + pattern, "data-link": true, class: pattern.split("/")[0] === here ? "active" : null }, label)));
  const info = session.info;
  const who = !info ? [] : info.kind === "admin"
    ? [h("span", { class: "badge st-warn" }, "admin")]
    : [h("span", { title: info.environment.id }, `${info.environment.project} / `, h("strong", {}, info.environment.environment))];
  fill(document.getElementById("who"), who, info ? h("button", { type: "button", onclick: () => { signOut(); render(); } }, "Sign out") : null);
}

async function render(message) {
  if (cleanup) { try { cleanup(); } catch { /* the page is gone either way */ } cleanup = null; }
  const main = document.getElementById("main");
  if (!session.info && session.key) {
    try { session.info = await checkKey(session.key); } catch (e) { signOut(); message = `Signed out: ${e.message}`; }
  }
  header();
  if (!session.info) {
    document.title = "Sign in · kiln";
    signin.render(main, { message, done: (key, info) => { signIn(key, info); render(); } });
    return;
  }
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  const found = match(path);
  fill(main);
  if (!found) {
    document.title = "Not found · kiln";
    main.append(h("section", { class: "card" }, h("h1", {}, "No such page"),
      h("p", {}, "This dashboard has no page at this address. ", h("a", { href: BASE, "data-link": true }, "Go to the start"))));
    return;
  }
  const query = new URLSearchParams(location.search);
  const ctx = { params: found.params, query, session, navigate };
  document.title = `${(routes().find((r) => r[0] === found.pattern) || [])[2] || "Run"} · kiln`;
  try {
    const done = await found.page.render(main, ctx);
    if (typeof done === "function") cleanup = done;
  } catch (e) {
    main.append(h("div", { class: "error-box", role: "alert" }, e.message));
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  e.preventDefault();
  navigate(url.pathname.slice(BASE.length) + url.search);
});
window.addEventListener("popstate", () => render());
whenRefused((message) => { signOut(); render(`Signed out: the host refused the key (${message}).`); });
render();
