// Sign in with an environment's secret key or the host's admin key. The key is checked with the
// host before it is kept (in this tab's session storage only); a wrong key says why.

import { checkKey } from "../api.js";
import { errorBox, fill, h } from "../ui.js";

export function render(main, { message, done }) {
  const input = h("input", {
    name: "key", type: "password", autocomplete: "off", spellcheck: "false", required: true,
    placeholder: "tr_dev_… or the admin key", "aria-label": "Secret key or admin key",
  });
  const out = h("div", {}, message ? errorBox(message) : null);
  const button = h("button", { class: "primary", type: "submit" }, "Sign in");
  const f = h("form", {}, h("label", {}, "Key", input), button);
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    out.replaceChildren();
    try {
      done(key, await checkKey(key));
    } catch (err) {
      out.append(errorBox(err.status === 401 ? `That key was refused: ${err.message}` : err.message));
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  fill(main, h("section", { class: "card signin" },
    h("h1", {}, "Sign in to kiln"),
    h("p", { class: "muted" },
      "Use an environment's secret key to see its runs, tasks, queues and more — the dev key is in ",
      h("code", {}, "<data-dir>/dev.key"), " (", h("code", {}, ".kiln/dev.key"), " with ", h("code", {}, "./scripts/dev"),
      "), others come from ", h("code", {}, "kiln keys create"), ". The host's admin key (",
      h("code", {}, "<data-dir>/admin.key"), ") shows projects, environments and keys."),
    f, out,
    h("p", { class: "muted small" }, "The key stays in this browser tab (session storage) and is sent only to this host.")));
  input.focus();
}
