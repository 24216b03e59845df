// Bulk actions through the official SDK: `runs.bulk.cancel` / `replay` (by run ids or by a
// filter), `retrieve`, `list`, `abort`. The host does the work in the background and counts it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { runs, tasks } from "@trigger.dev/sdk";

import { failure, finished, reaches, unique, until } from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

/** Retrieves a bulk action until it is no longer PENDING. */
async function settled(id) {
  return until(`bulk action ${id} to finish`, async () => {
    const action = await runs.bulk.retrieve(id);
    return action.status === "PENDING" ? undefined : action;
  });
}

async function delayedRuns(count, tags = []) {
  const ids = [];
  for (let i = 0; i < count; i++) {
    ids.push((await tasks.trigger("echo", { i }, { delay: "1h", tags })).id);
  }
  for (const id of ids) await reaches(id, "DELAYED");
  return ids;
}

check("runs.bulk.cancel by run ids cancels each run and counts it", async () => {
  const ids = await delayedRuns(3);
  const { id } = await runs.bulk.cancel({ runIds: ids, name: "compat cancel" });
  assert.match(id, /^bulk_/);

  const action = await settled(id);
  assert.equal(action.status, "COMPLETED");
  assert.equal(action.type, "CANCEL");
  assert.equal(action.name, "compat cancel");
  assert.deepEqual(action.counts, { total: 3, success: 3, failure: 0 });
  assert.ok(action.completedAt instanceof Date);
  for (const runId of ids) assert.equal((await runs.retrieve(runId)).status, "CANCELED");
});

check("runs.bulk.cancel counts a run that already finished as a failure", async () => {
  const [delayed] = await delayedRuns(1);
  const done = await tasks.trigger("echo", { done: true });
  await finished(done.id);
  const { id } = await runs.bulk.cancel({ runIds: [delayed, done.id] });
  const action = await settled(id);
  assert.deepEqual(action.counts, { total: 2, success: 1, failure: 1 });
  assert.equal((await runs.retrieve(done.id)).status, "COMPLETED");
});

check("runs.bulk.cancel by filter cancels only the matching runs", async () => {
  const tag = unique("bulk-filter");
  const ids = await delayedRuns(2, [tag]);
  const [bystander] = await delayedRuns(1);
  try {
    const { id } = await runs.bulk.cancel({ filter: { tag, status: "DELAYED" } });
    const action = await settled(id);
    assert.deepEqual(action.counts, { total: 2, success: 2, failure: 0 });
    for (const runId of ids) assert.equal((await runs.retrieve(runId)).status, "CANCELED");
    assert.equal((await runs.retrieve(bystander)).status, "DELAYED");
  } finally {
    await runs.cancel(bystander);
  }
});

check("runs.bulk.replay by filter replays each matching run", async () => {
  const tag = unique("bulk-replay");
  const originals = [];
  for (const name of ["R1", "R2"]) {
    originals.push((await tasks.trigger("hello", { name }, { tags: [tag] })).id);
  }
  for (const id of originals) await finished(id);

  const { id } = await runs.bulk.replay({ filter: { tag } });
  const action = await settled(id);
  assert.equal(action.type, "REPLAY");
  assert.deepEqual(action.counts, { total: 2, success: 2, failure: 0 });

  // A replay keeps its original's tags.
  const all = await until("the replays", async () => {
    const page = await runs.list({ tag });
    return page.data.length === 4 ? page.data : undefined;
  });
  const replays = all.filter((r) => !originals.includes(r.id));
  const outputs = [];
  for (const replay of replays) outputs.push((await finished(replay.id)).output.message);
  assert.deepEqual(outputs.sort(), ["Hello, R1!", "Hello, R2!"]);
});

check("runs.bulk.replay by run ids", async () => {
  const original = await tasks.trigger("hello", { name: "ById" });
  await finished(original.id);
  const { id } = await runs.bulk.replay({ runIds: [original.id] });
  const action = await settled(id);
  assert.deepEqual(action.counts, { total: 1, success: 1, failure: 0 });
});

check("runs.bulk.list lists bulk actions newest first, with pages", async () => {
  const ids = [];
  for (let i = 0; i < 3; i++) {
    const [runId] = await delayedRuns(1);
    ids.push((await runs.bulk.cancel({ runIds: [runId] })).id);
  }
  const first = await runs.bulk.list({ limit: 2 });
  assert.deepEqual(
    first.data.map((a) => a.id),
    [ids[2], ids[1]]
  );
  assert.ok(first.hasNextPage());
  const second = await first.getNextPage();
  assert.equal(second.data[0].id, ids[0]);
});

check("runs.bulk.abort of a finished bulk action is refused with 409", async () => {
  const [runId] = await delayedRuns(1);
  const { id } = await runs.bulk.cancel({ runIds: [runId] });
  await settled(id);
  const refused = await failure(runs.bulk.abort(id));
  assert.equal(refused.status, 409, refused.message);
});

check("runs.bulk.retrieve of an unknown bulk action is a 404", async () => {
  const refused = await failure(runs.bulk.retrieve("bulk_doesnotexist000000000"));
  assert.equal(refused.status, 404, refused.message);
});

check("a bulk action needs exactly one of runIds and filter", async () => {
  const refused = await failure(runs.bulk.cancel({}));
  assert.equal(refused.status, 400, refused.message);
});
