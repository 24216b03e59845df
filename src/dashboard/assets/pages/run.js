// One run: status, summary, usage, attempts, the timeline of its life, payload and output,
// metadata, its logs, what it waits for (completing a token from here), its tree, and the
// actions cancel, replay, reschedule and add tag. While the run is not finished the page follows
// kiln's realtime stream of it and reads the timeline, tree and new log lines on every change.

import { api, stream } from "../api.js";
import { jsonView } from "../json.js";
import { action, badge, card, errorBox, fill, form, h, toast } from "../ui.js";
import * as parts from "./run_parts.js";

const enc = encodeURIComponent;

function actions(run, ctx, reload) {
  const id = enc(run.id);
  const tagInput = h("input", { name: "tag", placeholder: "new tag", "aria-label": "Tag to add", size: 12 });
  const addTag = form([tagInput], async () => {
    const tag = tagInput.value.trim();
    if (!tag) return;
    await api(`/api/v1/runs/${id}/tags`, { method: "POST", body: { tags: [tag] } });
    tagInput.value = "";
    toast(`Tagged ${tag}`);
    await reload();
  }, { label: "Add tag" });
  const out = [
    !run.isCompleted ? action("Cancel", async () => {
      const res = await api(`/api/v2/runs/${id}/cancel`, { method: "POST", body: {} });
      toast(res.message || "Canceled");
      await reload();
    }, { cls: "danger", confirm: `Cancel run ${run.id}?` }) : null,
    action("Replay", async () => {
      const res = await api(`/api/v1/runs/${id}/replay`, { method: "POST", body: {} });
      toast(`Replayed as ${res.id}`);
      ctx.navigate(`runs/${enc(res.id)}`);
    }, { title: "Trigger a new run of the same task with the same payload, on the latest version" }),
  ];
  if (run.status === "DELAYED") {
    const delay = h("input", { name: "delay", placeholder: "1h or an ISO date", "aria-label": "New delay", size: 14 });
    out.push(form([delay], async () => {
      await api(`/api/v1/runs/${id}/reschedule`, { method: "POST", body: { delay: delay.value.trim() } });
      toast("Rescheduled");
      await reload();
    }, { label: "Reschedule" }));
  }
  out.push(addTag);
  return h("div", { class: "toolbar run-actions" }, out);
}

export async function render(main, ctx) {
  const id = ctx.params.id;
  let run;
  try {
    run = await api(`/api/v3/runs/${enc(id)}`);
  } catch (e) {
    main.append(h("h1", {}, "Run ", h("code", {}, id)), errorBox(e), h("p", {}, h("a", { href: "/dashboard/runs", "data-link": true }, "Back to the runs")));
    return;
  }
  const el = {
    title: h("h1"), actions: h("div"), summary: h("div"), usage: h("div"), attempts: h("div"), error: h("div"),
    waits: h("div"), timeline: h("div"), tree: h("div"), payload: h("div"), output: h("div"), metadata: h("div"),
  };
  const logs = parts.logView();
  const live = h("span", { class: "live", title: "Following the run's changes as they happen" }, "live");
  main.append(el.title, el.actions, el.error, el.waits,
    h("div", { class: "row" }, card("Summary", el.summary), card("Usage", el.usage, h("h3", {}, "Attempts"), el.attempts)),
    h("div", { class: "row" }, card("Timeline", el.timeline), card("Runs in this tree", el.tree)),
    h("div", { class: "row" }, card("Payload", el.payload), card("Output", el.output)),
    card("Metadata", el.metadata),
    card("Logs", logs.el));

  let shownWaits = null;
  const show = () => {
    fill(el.title, "Run ", h("code", {}, run.id), badge(run.status, "run-status"), run.isCompleted ? null : live);
    document.title = `${run.taskIdentifier} ${run.status} · kiln`;
    fill(el.actions, actions(run, ctx, refresh));
    fill(el.summary, parts.summary(run));
    fill(el.usage, parts.usage(run));
    fill(el.attempts, parts.attempts(run));
    fill(el.error, run.error ? parts.errorPart(run.error) : null);
    // Left alone while unchanged, so data being typed into a token's form is kept.
    const waits = JSON.stringify(run.waitpoints || []);
    if (waits !== shownWaits) {
      shownWaits = waits;
      fill(el.waits, run.waitpoints && run.waitpoints.length ? card("Waiting for", parts.waitpoints(run)) : null);
    }
    fill(el.payload, jsonView(run.payload));
    fill(el.output, run.output === undefined ? h("p", { class: "muted" }, run.isCompleted ? "No output." : "Not finished yet.") : jsonView(run.output));
    fill(el.metadata, run.metadata === undefined || (run.metadata && !Object.keys(run.metadata).length)
      ? h("p", { class: "muted" }, "No metadata.") : jsonView(run.metadata));
  };
  const extras = async () => {
    const [timeline, tree] = await Promise.all([
      api(`/api/v1/runs/${enc(id)}/timeline`),
      api(`/api/v1/runs/${enc(id)}/tree`),
    ]);
    fill(el.timeline, parts.timeline(timeline.data));
    fill(el.tree, parts.tree(tree, run.id));
    for (;;) {
      const page = await api(`/api/v1/runs/${enc(id)}/logs?after=${logs.last}`);
      logs.append(page.data);
      if (!page.next) break;
    }
  };
  let busy = null;
  const refreshExtras = () => {
    // One read at a time; a change during it is picked up by one more read after it.
    if (busy) { busy.again = true; return busy.done; }
    busy = { again: false };
    busy.done = (async () => {
      do {
        busy.again = false;
        try { await extras(); } catch (e) { toast(e.message, true); }
      } while (busy.again);
      busy = null;
    })();
    return busy.done;
  };
  async function refresh() {
    run = await api(`/api/v3/runs/${enc(id)}`);
    show();
    await refreshExtras();
  }

  show();
  await refreshExtras();
  if (run.isCompleted) return;

  const abort = new AbortController();
  let poll = null;
  (async () => {
    try {
      await stream(`/realtime/v1/runs/${enc(id)}`, (name, data) => {
        if (name !== "run") return;
        run = JSON.parse(data);
        show();
        refreshExtras();
      }, abort.signal);
      // The stream ends when the run has finished: read everything once more.
      await refresh();
    } catch (e) {
      if (abort.signal.aborted) return;
      // No stream (a proxy that buffers, a network error): read the run every two seconds.
      poll = setInterval(() => refresh().catch(() => {}), 2000);
    }
  })();
  return () => {
    abort.abort();
    if (poll) clearInterval(poll);
  };
}
