// Realtime through the official SDK: `runs.subscribeToRun`, `subscribeToRunsWithTag` and
// `subscribeToBatch`, which read Electric's HTTP shape protocol on `/realtime/v1/…`. A
// subscription that never sees the run finish fails by its deadline (see `readSubscription`).

import assert from "node:assert/strict";
import { test } from "node:test";

import { runs, tasks } from "@trigger.dev/sdk";

import { readSubscription, unique } from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

const FINAL = new Set(["COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED", "CANCELED"]);

check("runs.subscribeToRun sees a run to COMPLETED with its output, then ends by itself", async () => {
  const handle = await tasks.trigger("hello", { name: "Live" });
  // Never stops early: the subscription must end on its own when the run finishes.
  const seen = await readSubscription(runs.subscribeToRun(handle.id), () => false);
  const last = seen.at(-1);
  assert.equal(last.id, handle.id);
  assert.equal(last.status, "COMPLETED");
  assert.equal(last.isCompleted, true);
  assert.equal(last.isSuccess, true);
  assert.deepEqual(last.output, { message: "Hello, Live!" });
  assert.deepEqual(last.payload, { name: "Live" });
  assert.equal(last.taskIdentifier, "hello");
  assert.ok(last.createdAt instanceof Date && !Number.isNaN(last.createdAt.getTime()));
  assert.ok(last.finishedAt instanceof Date && !Number.isNaN(last.finishedAt.getTime()));
});

check("runs.subscribeToRun follows a run live from before it finishes", async () => {
  const handle = await tasks.trigger("spin", { ms: 1_500 });
  const seen = await readSubscription(runs.subscribeToRun(handle.id), () => false);
  assert.ok(!FINAL.has(seen[0].status), `the first update is not final: ${seen[0].status}`);
  assert.equal(seen.at(-1).status, "COMPLETED");
  assert.deepEqual(seen.at(-1).output, { spun: 1_500 });
});

check("runs.subscribeToRun shows the run's metadata as it changes", async () => {
  const handle = await tasks.trigger("progress", { steps: 3, ms: 200 });
  const seen = await readSubscription(runs.subscribeToRun(handle.id), () => false);
  const last = seen.at(-1);
  assert.equal(last.status, "COMPLETED");
  assert.equal(last.metadata?.steps, 3);
  assert.deepEqual(last.metadata?.log, ["step", "step", "step"]);
});

check("runs.subscribeToRun ends when a run fails, with its error", async () => {
  const handle = await tasks.trigger("fail", {});
  const seen = await readSubscription(runs.subscribeToRun(handle.id), () => false);
  const last = seen.at(-1);
  assert.equal(last.status, "FAILED");
  assert.equal(last.isFailed, true);
  assert.match(last.error?.message ?? "", /failed on purpose/);
});

check("runs.subscribeToRun ends when a run is canceled", async () => {
  const handle = await tasks.trigger("echo", {}, { delay: "1h" });
  const subscription = runs.subscribeToRun(handle.id);
  setTimeout(() => runs.cancel(handle.id).catch(() => {}), 500);
  const seen = await readSubscription(subscription, () => false);
  assert.equal(seen.at(-1).status, "CANCELED");
});

check("runs.subscribeToRunsWithTag sees every tagged run finish", async () => {
  const tag = unique("live-tag");
  const a = await tasks.trigger("hello", { name: "One" }, { tags: [tag] });
  const b = await tasks.trigger("hello", { name: "Two" }, { tags: [tag] });
  const untagged = await tasks.trigger("hello", { name: "Other" });

  const done = new Map();
  const seen = await readSubscription(runs.subscribeToRunsWithTag(tag), (run) => {
    if (run.status === "COMPLETED") done.set(run.id, run);
    return done.size === 2;
  });
  assert.deepEqual([...done.keys()].sort(), [a.id, b.id].sort());
  assert.ok(!seen.some((r) => r.id === untagged.id), "an untagged run is not in the feed");
  for (const run of done.values()) assert.ok(run.tags.includes(tag));
  assert.deepEqual(done.get(a.id).output, { message: "Hello, One!" });
});

check("runs.subscribeToRunsWithTag sees runs triggered after it subscribed", async () => {
  const tag = unique("late-tag");
  const subscription = runs.subscribeToRunsWithTag(tag);
  const later = new Promise((resolve) => setTimeout(resolve, 1_000)).then(() =>
    tasks.trigger("echo", { late: true }, { tags: [tag] })
  );
  const seen = await readSubscription(subscription, (run) => run.status === "COMPLETED");
  const handle = await later;
  assert.equal(seen.at(-1).id, handle.id);
  assert.deepEqual(seen.at(-1).output, { late: true });
});

check("runs.subscribeToBatch sees each run of a batch finish", async () => {
  const handle = await tasks.batchTrigger("hello", [
    { payload: { name: "B1" } },
    { payload: { name: "B2" } },
  ]);
  const done = new Map();
  await readSubscription(runs.subscribeToBatch(handle.batchId), (run) => {
    if (run.status === "COMPLETED") done.set(run.id, run.output);
    return done.size === 2;
  });
  assert.deepEqual(
    [...done.values()].map((o) => o.message).sort(),
    ["Hello, B1!", "Hello, B2!"]
  );
});
