// Triggering and managing runs through the official SDK: trigger, idempotency keys and their
// scopes, retrieve, list with pages, reschedule, cancel, replay, tags. The tasks are the example
// guest's (`guest-examples/hello`): `hello` greets, `echo` returns its payload, `fail` fails twice.

import assert from "node:assert/strict";
import { test } from "node:test";

import { auth, idempotencyKeys, runs, tasks } from "@trigger.dev/sdk";

import { failure, finished, reaches, unique } from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

check("tasks.trigger runs hello to COMPLETED with its greeting", async () => {
  const handle = await tasks.trigger("hello", { name: "Ada" });
  assert.match(handle.id, /^run_/);

  const run = await finished(handle.id);
  assert.equal(run.status, "COMPLETED");
  assert.equal(run.isSuccess, true);
  assert.equal(run.taskIdentifier, "hello");
  assert.deepEqual(run.payload, { name: "Ada" });
  assert.deepEqual(run.output, { message: "Hello, Ada!" });
  assert.ok(run.finishedAt instanceof Date, "a finished run has finishedAt");
  assert.ok(run.attemptCount >= 1);
});

check("the handle's publicAccessToken reads the run it was made for", async () => {
  const handle = await tasks.trigger("hello", { name: "Pat" });
  assert.equal(typeof handle.publicAccessToken, "string");
  await finished(handle.id);

  const run = await auth.withAuth({ accessToken: handle.publicAccessToken }, () =>
    runs.retrieve(handle.id)
  );
  assert.equal(run.id, handle.id);
  assert.deepEqual(run.output, { message: "Hello, Pat!" });
});

check("runs.retrieve shows a failed run's error after its attempts", async () => {
  const handle = await tasks.trigger("fail", {});
  const run = await finished(handle.id);
  assert.equal(run.status, "FAILED");
  assert.equal(run.isFailed, true);
  assert.match(run.error?.message ?? "", /failed on purpose/);
  assert.equal(run.attemptCount, 2);
});

check("tasks.trigger with an idempotencyKey returns the first run for the same key", async () => {
  const key = unique("idem");
  const first = await tasks.trigger("echo", { n: 1 }, { idempotencyKey: key });
  const second = await tasks.trigger("echo", { n: 2 }, { idempotencyKey: key });
  assert.equal(second.id, first.id);
  assert.equal(second.isCached, true);

  const run = await finished(first.id);
  assert.deepEqual(run.output, { n: 1 });
  // Trigger.dev shows the key the user gave, not the hash the SDK sends.
  assert.equal(run.idempotencyKey, key);
});

for (const scope of ["global", "run", "attempt"]) {
  check(`idempotencyKeys.create with scope ${scope} deduplicates triggers`, async () => {
    const raw = unique(`scope-${scope}`);
    const key = await idempotencyKeys.create(raw, { scope });
    assert.equal(key.length, 64, "the SDK hashes the key");

    const first = await tasks.trigger("echo", { scope }, { idempotencyKey: key });
    const second = await tasks.trigger("echo", { scope, again: true }, { idempotencyKey: key });
    assert.equal(second.id, first.id);

    const run = await finished(first.id);
    assert.deepEqual(run.output, { scope });
    assert.equal(run.idempotencyKey, raw);
  });
}

check("an idempotency key is per task: another task with the same key gets its own run", async () => {
  const key = await idempotencyKeys.create(unique("per-task"), { scope: "global" });
  const echo = await tasks.trigger("echo", { which: "echo" }, { idempotencyKey: key });
  const hello = await tasks.trigger("hello", { name: "Key" }, { idempotencyKey: key });
  assert.notEqual(hello.id, echo.id);
  assert.deepEqual((await finished(hello.id)).output, { message: "Hello, Key!" });
});

check("idempotencyKeys.reset lets the same key trigger a new run", async () => {
  const key = await idempotencyKeys.create(unique("reset"), { scope: "global" });
  const first = await tasks.trigger("echo", { v: 1 }, { idempotencyKey: key });
  await finished(first.id);

  const reset = await idempotencyKeys.reset("echo", key);
  assert.equal(typeof reset.id, "string");

  const again = await tasks.trigger("echo", { v: 2 }, { idempotencyKey: key });
  assert.notEqual(again.id, first.id);
  assert.deepEqual((await finished(again.id)).output, { v: 2 });
});

check("idempotencyKeys.reset takes the raw key with its scope", async () => {
  const raw = unique("reset-raw");
  const key = await idempotencyKeys.create(raw, { scope: "global" });
  const first = await tasks.trigger("echo", { v: 1 }, { idempotencyKey: key });
  await finished(first.id);

  await idempotencyKeys.reset("echo", raw, { scope: "global" });
  const again = await tasks.trigger("echo", { v: 2 }, { idempotencyKey: key });
  assert.notEqual(again.id, first.id);
});

check("idempotencyKeys.reset of a key no run has is a 404", async () => {
  const key = await idempotencyKeys.create(unique("never-used"), { scope: "global" });
  const { status } = await failure(idempotencyKeys.reset("echo", key));
  assert.equal(status, 404);
});

check("runs.list pages through runs newest first", async () => {
  const tag = unique("page");
  const ids = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await tasks.trigger("echo", { i }, { tags: [tag] })).id);
  }
  const newestFirst = [...ids].reverse();

  const first = await runs.list({ tag, limit: 2 });
  assert.deepEqual(
    first.data.map((r) => r.id),
    newestFirst.slice(0, 2)
  );
  assert.ok(first.hasNextPage());

  const second = await first.getNextPage();
  assert.deepEqual(
    second.data.map((r) => r.id),
    newestFirst.slice(2, 4)
  );
  const back = await second.getPreviousPage();
  assert.deepEqual(
    back.data.map((r) => r.id),
    newestFirst.slice(0, 2)
  );

  const all = [];
  for await (const run of runs.list({ tag, limit: 2 })) all.push(run.id);
  assert.deepEqual(all, newestFirst);
});

check("runs.list filters by task and status", async () => {
  const tag = unique("filter");
  const ok = await tasks.trigger("hello", { name: "F" }, { tags: [tag] });
  const bad = await tasks.trigger("fail", {}, { tags: [tag] });
  await finished(ok.id);
  await finished(bad.id);

  const failed = await runs.list({ tag, status: "FAILED" });
  assert.deepEqual(
    failed.data.map((r) => r.id),
    [bad.id]
  );
  const hellos = await runs.list({ tag, taskIdentifier: "hello" });
  assert.deepEqual(
    hellos.data.map((r) => r.id),
    [ok.id]
  );
  assert.equal(hellos.data[0].status, "COMPLETED");
});

check("trigger with tags: retrieve shows them and runs.list finds the run by tag", async () => {
  const tag = unique("tag");
  const handle = await tasks.trigger("echo", { t: 1 }, { tags: [tag, "user:42"] });
  const run = await finished(handle.id);
  assert.deepEqual([...run.tags].sort(), [tag, "user:42"].sort());

  const listed = await runs.list({ tag });
  assert.deepEqual(
    listed.data.map((r) => r.id),
    [handle.id]
  );
});

check("runs.reschedule moves a delayed run's delay", async () => {
  const handle = await tasks.trigger("echo", {}, { delay: "1h" });
  const before = await reaches(handle.id, "DELAYED");
  try {
    const moved = await runs.reschedule(handle.id, { delay: "2h" });
    assert.equal(moved.status, "DELAYED");
    const shift = moved.delayedUntil.getTime() - before.delayedUntil.getTime();
    assert.ok(Math.abs(shift - 3_600_000) < 60_000, `the delay moved by ${shift} ms, not an hour`);
  } finally {
    await runs.cancel(handle.id);
  }
});

check("runs.cancel cancels a delayed run", async () => {
  const handle = await tasks.trigger("echo", {}, { delay: "1h" });
  await reaches(handle.id, "DELAYED");
  const canceled = await runs.cancel(handle.id);
  assert.equal(canceled.id, handle.id);

  const run = await runs.retrieve(handle.id);
  assert.equal(run.status, "CANCELED");
  assert.equal(run.isCancelled, true);
});

check("runs.replay runs the same payload again as a new run", async () => {
  const original = await tasks.trigger("hello", { name: "Again" });
  await finished(original.id);

  const replay = await runs.replay(original.id);
  assert.notEqual(replay.id, original.id);
  const run = await finished(replay.id);
  assert.equal(run.status, "COMPLETED");
  assert.deepEqual(run.output, { message: "Hello, Again!" });
});

check("runs.replay with a new payload runs that payload", async () => {
  const original = await tasks.trigger("hello", { name: "Old" });
  await finished(original.id);

  // The SDK sends a replacement payload as SuperJSON (`application/super+json`).
  const replay = await runs.replay(original.id, { payload: { name: "New" } });
  const run = await finished(replay.id);
  assert.deepEqual(run.output, { message: "Hello, New!" });
});
