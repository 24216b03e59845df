// Tasks and deployments: the latest version's tasks (each can be triggered from here, and shows
// its component when the version has several), every version with when it was deployed, its
// tasks and components, and a drop zone that uploads one `.wasm` or several together with the
// progress: the bytes going up, then the host compiling and checking the components in the
// background (followed at /api/v1/deploys/{id}).

import { api, upload } from "../api.js";
import { bytes, card, duration, errorBox, fill, form, h, link, parseJson, table, timeEl, toast } from "../ui.js";

const enc = encodeURIComponent;

function dropZone(onDeployed, maxBytes) {
  const input = h("input", { type: "file", accept: ".wasm,application/wasm", hidden: true, name: "component", multiple: true });
  const status = h("div", { class: "upload-status", "aria-live": "polite" });
  const zone = h("div", { class: "dropzone", role: "button", tabindex: "0" },
    h("strong", {}, "Drop a component (.wasm) here"), h("div", {}, "or click to choose files — one or several together become the environment's new version"),
    maxBytes ? h("div", { class: "small" }, `up to ${bytes(maxBytes)}`) : null);
  const choose = () => input.click();
  zone.addEventListener("click", choose);
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files];
    if (files.length) send(files);
  });
  input.addEventListener("change", () => { const files = [...input.files]; if (files.length) send(files); input.value = ""; });

  async function send(files) {
    const file = { name: files.map((f) => f.name).join(", "), size: files.reduce((n, f) => n + f.size, 0) };
    const bar = h("div");
    const progress = h("div", { class: "progress" }, bar);
    const phase = h("div", {}, `Uploading ${file.name} (${bytes(file.size)})… 0%`);
    fill(status, phase, progress);
    const started = Date.now();
    try {
      const accepted = await upload("/api/v1/deployments", files, {
        progress: (f) => { bar.style.width = `${Math.round(f * 100)}%`; phase.textContent = `Uploading ${file.name} (${bytes(file.size)})… ${Math.round(f * 100)}%`; },
        sent: () => {
          progress.classList.add("busy");
          bar.style.width = "";
          phase.textContent = `Uploaded ${file.name}; the host is checking it…`;
        },
      });
      const deployed = await follow(accepted, (p, elapsed) => {
        const text = phaseText(p, elapsed);
        phase.textContent = text.line;
        if (text.fraction != null) {
          progress.classList.remove("busy");
          bar.style.width = `${Math.round(text.fraction * 100)}%`;
        } else {
          progress.classList.add("busy");
          bar.style.width = "";
        }
      });
      fill(status, h("div", { class: "notice deployed" }, "Deployed version ", h("strong", {}, deployed.version), ` with ${deployed.tasks.length} task${deployed.tasks.length === 1 ? "" : "s"}: `,
        deployed.tasks.map((t) => t.id).join(", "), ` (${duration(Date.now() - started)})`));
      toast(`Deployed ${deployed.version}`);
      onDeployed();
    } catch (e) {
      fill(status, errorBox(`The upload was refused: ${e.message}`));
    }
  }
  return h("div", {}, zone, input, status);
}

// Follows a deploy the host compiles in the background until it is stored (resolves with the
// deployment) or refused (rejects with its error), calling `onProgress` with each status.
async function follow(deploy, onProgress) {
  const started = Date.now();
  for (;;) {
    if (deploy.status === "DEPLOYED") return deploy.deployment;
    if (deploy.status === "FAILED") throw new Error(deploy.error.message);
    onProgress(deploy.progress || {}, Date.now() - started);
    await new Promise((r) => setTimeout(r, 300));
    deploy = await api(`/api/v1/deploys/${enc(deploy.id)}`);
  }
}

// What a deploy is doing, as a line and, while a compile has an estimate, the fraction done.
function phaseText(p, elapsed) {
  const of = p.components > 1 ? ` (${p.component} of ${p.components})` : "";
  const name = `${p.name || "the component"}${of}`;
  switch (p.phase) {
    case "waiting": return { line: `Waiting for another deploy to finish compiling… ${duration(elapsed)}` };
    case "compiling": {
      if (!p.estimatedMs) return { line: `Compiling ${name}… ${duration(p.elapsedMs || 0)}` };
      const fraction = Math.min(0.99, (p.elapsedMs || 0) / p.estimatedMs);
      return { line: `Compiling ${name}… ${duration(p.elapsedMs || 0)} of about ${duration(p.estimatedMs)}`, fraction };
    }
    case "definitions": return { line: `Reading the tasks of ${name}…` };
    default: return { line: "Storing the version…" };
  }
}

function triggerForm(task, ctx) {
  const payload = h("textarea", { name: "payload", rows: 2, "aria-label": `Payload for ${task}` }, "{}");
  return form([h("label", {}, "Payload (JSON)", payload)], async () => {
    const value = parseJson(payload.value, "the payload");
    const res = await api(`/api/v1/tasks/${enc(task)}/trigger`, { method: "POST", body: { payload: value === undefined ? null : value } });
    toast(`Triggered ${res.id}`);
    ctx.navigate(`runs/${enc(res.id)}`);
  }, { label: "Trigger" });
}

// How a component is named: its file name, else the start of its content hash.
function componentName(c) {
  return c.name || c.contentHash.slice(0, 12);
}

function tasksTable(deployment, ctx) {
  const components = deployment.components || [];
  const byHash = new Map(components.map((c) => [c.contentHash, c]));
  const componentColumn = components.length > 1
    ? [["Component", (t) => { const c = byHash.get(t.component); return c ? h("code", { title: c.contentHash }, componentName(c)) : "—"; }]]
    : [];
  return table([
    ["Task", (t) => h("div", {}, h("strong", {}, t.id), t.description ? h("div", { class: "muted small" }, t.description) : null)],
    ...componentColumn,
    ["Queue", (t) => t.queue || `task/${t.id}`],
    ["Machine", (t) => t.machine || "default"],
    ["Max attempts", (t) => (t.maxAttempts ? String(t.maxAttempts) : "default"), "num"],
    ["Max duration", (t) => (t.maxDurationMs ? duration(t.maxDurationMs) : "default"), "num"],
    ["Schedule", (t) => (t.schedule ? [h("code", {}, t.schedule.cron), ` ${t.schedule.timezone}`] : "—")],
    ["", (t) => h("div", { class: "toolbar" }, link(`runs?task=${enc(t.id)}`, "Runs"),
      h("details", {}, h("summary", {}, "Trigger…"), triggerForm(t.id, ctx)))],
  ], deployment.tasks, { empty: "No tasks: deploy a component." });
}

export async function render(main, ctx) {
  const limit = ctx.session.info.environment.maxComponentBytes;
  const latest = h("div");
  const versions = h("div");
  const load = async () => {
    try {
      const res = await api("/api/v1/deployments");
      const list = res.data;
      if (!list.length) {
        fill(latest, h("p", { class: "muted" }, "Nothing is deployed yet. Drop a component above, or run ", h("code", {}, "kiln deploy file.wasm"), "."));
        fill(versions);
        return;
      }
      fill(latest, h("p", {}, "Version ", h("strong", { class: "latest-version" }, list[0].version), ", deployed ", timeEl(list[0].createdAt)), tasksTable(list[0], ctx));
      fill(versions, table([
        ["Version", (d) => h("strong", {}, d.version)],
        ["Deployed", (d) => timeEl(d.createdAt)],
        ["Tasks", (d) => h("details", {}, h("summary", {}, `${d.tasks.length} tasks`), h("div", { class: "small" }, d.tasks.map((t) => t.id).join(", ")))],
        ["Components", (d) => (d.components || [d]).map((c, i) => [i ? ", " : "", h("code", { title: c.contentHash }, componentName(c))])],
        ["", (d) => link(`runs?version=${enc(d.version)}`, "Runs")],
      ], list));
    } catch (e) {
      fill(latest, errorBox(e));
    }
  };
  main.append(h("h1", {}, "Tasks and deployments"),
    card("Deploy", dropZone(load, limit)),
    card("Tasks of the latest version", latest),
    card("Versions", versions));
  await load();
}
