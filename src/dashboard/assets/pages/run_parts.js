// The parts of the run page, each a pure rendering of what the API returned: the summary,
// attempts, error, waitpoints (with the form that completes a token), the timeline, the tree of
// runs and the log view.

import { api } from "../api.js";
import { jsonView } from "../json.js";
import { badge, between, duration, form, h, kv, link, number, parseJson, table, tags, time, timeEl, toast } from "../ui.js";

const enc = encodeURIComponent;

/** A long message cut to `n` characters; the whole of it on hover. */
function short(text, n = 140) {
  if (!text || text.length <= n) return text || "";
  return h("span", { title: text }, `${text.slice(0, n - 1)}…`);
}

export function summary(run) {
  return kv([
    ["Task", link(`runs?task=${enc(run.taskIdentifier)}`, run.taskIdentifier)],
    ["Version", run.version ? link(`runs?version=${enc(run.version)}`, run.version) : "not started yet"],
    ["Queue", run.queue],
    ["Machine", run.machine],
    ["Created", timeEl(run.createdAt)],
    ["Delayed until", run.delayedUntil ? timeEl(run.delayedUntil) : null],
    ["Started", run.startedAt ? timeEl(run.startedAt) : null],
    ["Finished", run.finishedAt ? timeEl(run.finishedAt) : null],
    ["Duration", run.startedAt ? duration(between(run.startedAt, run.finishedAt)) : null],
    ["Expired", run.expiredAt ? timeEl(run.expiredAt) : null],
    ["TTL", run.ttl],
    ["Priority", run.priority ? `${run.priority} s` : null],
    ["Tags", run.tags && run.tags.length ? tags(run.tags) : null],
    ["Idempotency key", run.idempotencyKey ? h("code", {}, run.idempotencyKey) : null],
    ["Concurrency key", run.concurrencyKey],
    ["Batch", run.batchId ? link(`runs?batch=${enc(run.batchId)}`, h("code", {}, run.batchId)) : null],
    ["Parent", run.parentRunId ? link(`runs/${enc(run.parentRunId)}`, h("code", {}, run.parentRunId)) : null],
    ["Root", run.rootRunId && run.rootRunId !== run.parentRunId ? link(`runs/${enc(run.rootRunId)}`, h("code", {}, run.rootRunId)) : null],
  ]);
}

export function usage(run) {
  return kv([
    ["Attempts", String(run.attemptCount)],
    ["Compute time", duration(run.usage.computeMs)],
    ["Fuel", `${number(run.usage.fuel)} units`],
  ]);
}

export function attempts(run) {
  return table([
    ["#", (a) => String(a.number), "num"],
    ["Status", (a) => badge(a.status)],
    ["Started", (a) => timeEl(a.startedAt)],
    ["Ended", (a) => (a.completedAt ? timeEl(a.completedAt) : "—")],
    ["Compute", (a) => duration(a.usage.computeMs), "num"],
    ["Fuel", (a) => number(a.usage.fuel), "num"],
    ["Error", (a) => (a.error ? [a.error.code ? h("code", {}, a.error.code) : null, " ", short(a.error.message, 90)] : "")],
  ], run.attempts || [], { empty: "No attempt has started yet." });
}

export function errorPart(error) {
  return h("div", { class: "error-box run-error", role: "alert" },
    h("strong", {}, error.name || "Error"), error.code ? [" ", h("code", {}, error.code)] : null,
    h("div", { class: "message" }, error.message),
    error.stackTrace ? h("pre", {}, error.stackTrace) : null);
}

/** What a waiting run waits for; a token gets a form that completes it. */
export function waitpoints(run) {
  return h("div", {}, (run.waitpoints || []).map((w) => {
    if (w.type === "DATETIME") {
      return h("div", { class: "notice" }, "Waiting until ", timeEl(w.completesAt), " (checkpointed: it holds no slot meanwhile).");
    }
    if (w.type === "RUN") {
      return h("div", { class: "notice" }, "Waiting for child run ", link(`runs/${enc(w.runId)}`, h("code", {}, w.runId)), " to end.");
    }
    const data = h("textarea", { name: "data", rows: 3, "aria-label": "Token data (JSON)" }, "{}");
    return h("div", { class: "notice waitpoint" },
      h("div", {}, "Waiting for wait token ", h("code", {}, w.id), w.timeoutAt ? [" (times out ", timeEl(w.timeoutAt), ")"] : null),
      form([h("label", {}, "Data to complete it with (JSON)", data)], async () => {
        const value = parseJson(data.value, "the data");
        await api(`/api/v1/waitpoints/tokens/${enc(w.id)}/complete`, { method: "POST", body: { data: value === undefined ? null : value } });
        // The run's stream shows it resume and finish.
        toast(`Token ${w.id} completed; the run resumes.`);
      }, { label: "Complete token", cls: "token-form" }));
  }));
}

function waitLabel(w, done) {
  switch (w.type) {
    case "DATETIME":
      return done ? "Resumed: the wait's time came" : ["Checkpointed to wait until ", time(w.deadline)];
    case "MANUAL":
      if (done) return w.timedOut ? ["Token ", h("code", {}, w.id), " timed out: resumed with its error"] : ["Token ", h("code", {}, w.id), " completed: resumed"];
      return ["Waiting for token ", h("code", {}, w.id), w.deadline ? ` (timeout ${time(w.deadline)})` : ""];
    default: {
      const n = (w.runIds || []).length;
      if (done) return [`${n === 1 ? "The child run" : `All ${n} child runs`} ended: resumed`];
      return [`Waiting for ${n} child run${n === 1 ? "" : "s"}: `, (w.runIds || []).slice(0, 5).map((id) => [link(`runs/${enc(id)}`, h("code", {}, id)), " "])];
    }
  }
}

function moment(m) {
  switch (m.type) {
    case "TRIGGERED": return ["", "Triggered"];
    case "DELAYED": return ["warn", ["Delayed until ", time(m.until)]];
    case "ENQUEUED": return ["warn", "Queued: the delay ended"];
    case "ATTEMPT_STARTED": return ["run", `Attempt ${m.attempt} started`];
    case "ATTEMPT_ENDED": return [m.status === "COMPLETED" ? "ok" : m.status === "FAILED" ? "bad" : "",
      [`Attempt ${m.attempt} ended: `, badge(m.status), m.error ? [" ", short(m.error.message)] : null]];
    case "RETRY": return ["warn", m.started
      ? `Retried: attempt ${m.attempt} started ${duration(m.delayMs)} later`
      : `Retry planned: attempt ${m.attempt} in ${duration(m.delayMs)} (backoff)`];
    case "WAITING": return ["wait", waitLabel(m.wait, false)];
    case "RESUMED": return ["wait", waitLabel(m.wait, true)];
    case "FINISHED": return [m.status === "COMPLETED" ? "ok" : "bad", ["Finished: ", badge(m.status)]];
    default: return ["", m.type];
  }
}

export function timeline(moments) {
  if (!moments.length) return h("p", { class: "muted" }, "Nothing yet.");
  const start = new Date(moments[0].at);
  return h("ol", { class: "timeline" }, moments.map((m) => {
    const [cls, label] = moment(m);
    const offset = new Date(m.at) - start;
    return h("li", { class: cls || null, dataset: { type: m.type } },
      h("div", {}, label),
      h("div", { class: "when" }, time(m.at), offset > 0 ? ` · +${duration(offset)}` : ""));
  }));
}

/** The run's tree: its root and the root's descendants, the current run in bold. */
export function tree(data, currentId) {
  const nodes = data.data;
  if (nodes.length <= 1) return h("p", { class: "muted" }, "This run has no parent and no children.");
  const ids = new Set(nodes.map((n) => n.id));
  const children = new Map();
  for (const n of nodes) {
    const parent = n.parentRunId && ids.has(n.parentRunId) ? n.parentRunId : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(n);
  }
  const branch = (parent) => h("ul", {}, (children.get(parent) || []).map((n) =>
    h("li", { class: n.id === currentId ? "current" : null },
      h("span", { class: "node" }, link(`runs/${enc(n.id)}`, h("code", {}, n.id)), n.taskIdentifier, badge(n.status)),
      children.has(n.id) ? branch(n.id) : null)));
  const root = branch(null);
  root.className = "tree";
  return h("div", {}, root, data.truncated ? h("p", { class: "muted small" }, "The tree has more runs than shown.") : null);
}

/** The log view: lines appended as they arrive, with level and attributes. */
export function logView() {
  const body = h("tbody");
  const empty = h("p", { class: "muted" }, "No log lines yet.");
  const box = h("div", { class: "logs", role: "log" }, empty, h("table", {}, body));
  let last = 0;
  return {
    el: box,
    get last() { return last; },
    append(lines) {
      if (!lines.length) return;
      empty.remove();
      const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      for (const l of lines) {
        last = Math.max(last, l.id);
        body.append(h("tr", { class: `log lvl-row-${l.level}` },
          h("td", { class: "t" }, time(l.at), ` #${l.attempt}`),
          h("td", {}, h("span", { class: `lvl lvl-${l.level}` }, l.level)),
          h("td", { class: "msg" }, l.message,
            l.attributes !== undefined && l.attributes !== null ? h("div", { class: "attrs" }, jsonView(l.attributes, { openDepth: 0 })) : null)));
      }
      if (stick) box.scrollTop = box.scrollHeight;
    },
  };
}
