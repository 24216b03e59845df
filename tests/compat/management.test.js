// The management API through the official SDK: wait tokens (the server side), schedules, queues
// and environment variables. Each check looks at what the host did, not only at the answer.

import assert from "node:assert/strict";
import { test } from "node:test";

import { apiClientManager } from "@trigger.dev/core/v3";
import { envvars, queues, schedules, tasks, wait } from "@trigger.dev/sdk";

import {
  environmentSlug,
  failure,
  finished,
  projectRef,
  reaches,
  sleep,
  unique,
  until,
} from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

// ---- wait tokens ----------------------------------------------------------------------------

check("wait.createToken, retrieveToken, listTokens and completeToken", async () => {
  const tag = unique("token");
  const token = await wait.createToken({ timeout: "1h", tags: [tag] });
  assert.match(token.id, /^waitpoint_/);
  assert.equal(token.isCached, false);
  assert.equal(typeof token.url, "string");

  const waiting = await wait.retrieveToken(token.id);
  assert.equal(waiting.status, "WAITING");
  assert.deepEqual(waiting.tags, [tag]);
  assert.ok(waiting.timeoutAt > new Date(Date.now() + 50 * 60_000), "the timeout is an hour away");

  const listed = await wait.listTokens({ tags: [tag] });
  assert.deepEqual(
    listed.data.map((t) => t.id),
    [token.id]
  );

  const completed = await wait.completeToken(token.id, { approved: true });
  assert.equal(completed.success, true);

  const done = await wait.retrieveToken(token.id);
  assert.equal(done.status, "COMPLETED");
  assert.deepEqual(done.output, { approved: true });
  assert.ok(done.completedAt instanceof Date);

  const listedDone = await wait.listTokens({ tags: [tag], status: "COMPLETED" });
  assert.deepEqual(
    listedDone.data.map((t) => t.id),
    [token.id]
  );
});

check("wait.createToken with an idempotencyKey returns the same token", async () => {
  const idempotencyKey = unique("token-key");
  const first = await wait.createToken({ idempotencyKey, timeout: "1h" });
  const second = await wait.createToken({ idempotencyKey, timeout: "1h" });
  assert.equal(second.id, first.id);
  assert.equal(second.isCached, true);
});

check("completing a run's wait token with wait.completeToken resumes the run", async () => {
  const key = unique("approve");
  const handle = await tasks.trigger("approve", { key });
  const token = await until("the run's wait token", async () => {
    const page = await wait.listTokens({ idempotencyKey: key });
    return page.data[0];
  });
  assert.equal(token.status, "WAITING");

  await wait.completeToken(token.id, { approved: "yes" });
  const run = await finished(handle.id);
  assert.equal(run.status, "COMPLETED");
  assert.deepEqual(run.output, { token: token.id, data: { approved: "yes" } });
});

// ---- schedules ------------------------------------------------------------------------------

async function newSchedule(extra = {}) {
  return schedules.create({
    task: "echo",
    cron: "0 9 * * 1",
    timezone: "Europe/Berlin",
    externalId: "user-1",
    deduplicationKey: unique("sched"),
    ...extra,
  });
}

check("schedules.create and schedules.retrieve", async () => {
  const created = await newSchedule();
  try {
    assert.match(created.id, /^sched_/);
    assert.equal(created.type, "IMPERATIVE");
    assert.equal(created.task, "echo");
    assert.equal(created.active, true);
    assert.equal(created.generator.type, "CRON");
    assert.equal(created.generator.expression, "0 9 * * 1");
    assert.equal(created.timezone, "Europe/Berlin");
    assert.equal(created.externalId, "user-1");
    assert.ok(created.nextRun > new Date(), "the next run is in the future");

    const retrieved = await schedules.retrieve(created.id);
    assert.equal(retrieved.id, created.id);
    assert.equal(retrieved.deduplicationKey, created.deduplicationKey);
    assert.deepEqual(retrieved.nextRun, created.nextRun);
  } finally {
    await schedules.del(created.id);
  }
});

check("schedules.create with the same deduplicationKey updates that schedule", async () => {
  const created = await newSchedule();
  try {
    const again = await schedules.create({
      task: "echo",
      cron: "15 8 * * *",
      deduplicationKey: created.deduplicationKey,
    });
    assert.equal(again.id, created.id);
    assert.equal(again.generator.expression, "15 8 * * *");
  } finally {
    await schedules.del(created.id);
  }
});

check("schedules.list pages through schedules", async () => {
  const made = [await newSchedule(), await newSchedule(), await newSchedule()];
  try {
    const first = await schedules.list({ perPage: 2 });
    assert.equal(first.data.length, 2);
    assert.ok(first.pagination.totalPages >= 2);
    const seen = [];
    for await (const schedule of schedules.list({ perPage: 2 })) seen.push(schedule.id);
    for (const schedule of made) assert.ok(seen.includes(schedule.id), `${schedule.id} listed`);
    assert.equal(new Set(seen).size, seen.length, "no schedule listed twice");
  } finally {
    for (const schedule of made) await schedules.del(schedule.id);
  }
});

check("schedules.update changes the cron, time zone and external id", async () => {
  const created = await newSchedule();
  try {
    const updated = await schedules.update(created.id, {
      task: "echo",
      cron: "30 10 * * *",
      timezone: "UTC",
      externalId: "user-2",
    });
    assert.equal(updated.id, created.id);
    assert.equal(updated.generator.expression, "30 10 * * *");
    assert.equal(updated.timezone, "UTC");
    assert.equal(updated.externalId, "user-2");
    assert.equal(updated.nextRun.getUTCMinutes(), 30);
  } finally {
    await schedules.del(created.id);
  }
});

check("schedules.deactivate and schedules.activate", async () => {
  const created = await newSchedule();
  try {
    const off = await schedules.deactivate(created.id);
    assert.equal(off.active, false);
    assert.equal((await schedules.retrieve(created.id)).active, false);
    const on = await schedules.activate(created.id);
    assert.equal(on.active, true);
  } finally {
    await schedules.del(created.id);
  }
});

check("schedules.del deletes the schedule", async () => {
  const created = await newSchedule();
  const deleted = await schedules.del(created.id);
  assert.equal(deleted.id, created.id);
  const { status } = await failure(schedules.retrieve(created.id));
  assert.equal(status, 404);
});

check("schedules.timezones lists IANA zones, UTC first, without a key", async () => {
  // The SDK sends this request without any credential.
  const all = await schedules.timezones();
  assert.equal(all.timezones[0], "UTC");
  assert.ok(all.timezones.includes("Europe/Berlin"));
  const withoutUtc = await schedules.timezones({ excludeUtc: true });
  assert.ok(!withoutUtc.timezones.includes("UTC"));
  assert.ok(withoutUtc.timezones.includes("America/New_York"));
});

// ---- queues ---------------------------------------------------------------------------------

const singleQueue = { type: "task", name: "single" };

check("queues.list shows the guest's queues with their limits", async () => {
  const listed = [];
  for await (const queue of queues.list({ perPage: 100 })) listed.push(queue);
  const limited = listed.find((q) => q.name === "limited");
  assert.ok(limited, "the custom queue `limited` is listed");
  assert.equal(limited.type, "custom");
  assert.equal(limited.concurrencyLimit, 2);
  const single = listed.find((q) => q.name === "single" && q.type === "task");
  assert.ok(single, "the task queue of `single` is listed");
  assert.equal(single.concurrencyLimit, 1);
});

check("queues.retrieve by type and name, and by id", async () => {
  const byName = await queues.retrieve({ type: "custom", name: "limited" });
  assert.equal(byName.name, "limited");
  assert.equal(byName.concurrencyLimit, 2);
  assert.equal(byName.paused, false);
  assert.equal(typeof byName.running, "number");
  assert.equal(typeof byName.queued, "number");

  const byId = await queues.retrieve(byName.id);
  assert.equal(byId.id, byName.id);
  assert.equal(byId.name, "limited");
});

check("queues.pause holds runs back and queues.resume lets them run", async () => {
  const paused = await queues.pause(singleQueue);
  assert.equal(paused.paused, true);
  let handle;
  try {
    handle = await tasks.trigger("single", { ms: 1 });
    await sleep(1_000);
    const run = await reaches(handle.id, "QUEUED");
    assert.equal(run.status, "QUEUED", "a paused queue starts nothing");
  } finally {
    const resumed = await queues.resume(singleQueue);
    assert.equal(resumed.paused, false);
  }
  const run = await finished(handle.id);
  assert.deepEqual(run.output, { spun: 1 });
});

check("queues.overrideConcurrencyLimit and queues.resetConcurrencyLimit", async () => {
  const overridden = await queues.overrideConcurrencyLimit(singleQueue, 3);
  try {
    assert.equal(overridden.concurrencyLimit, 3);
    assert.equal(overridden.concurrency?.override, 3);
    assert.equal(overridden.concurrency?.base, 1);
    assert.ok(overridden.concurrency?.overriddenAt instanceof Date);
    assert.equal((await queues.retrieve(singleQueue)).concurrencyLimit, 3);
  } finally {
    const reset = await queues.resetConcurrencyLimit(singleQueue);
    assert.equal(reset.concurrencyLimit, 1);
    assert.equal(reset.concurrency?.override, null);
  }
});

// ---- environment variables ------------------------------------------------------------------

const envName = () => unique("COMPAT").toUpperCase().replaceAll("-", "_");

check("envvars.create, list and retrieve", async () => {
  const name = envName();
  const created = await envvars.create(projectRef, environmentSlug, { name, value: "one" });
  assert.equal(created.success, true);
  try {
    const listed = await envvars.list(projectRef, environmentSlug);
    assert.deepEqual(
      listed.find((v) => v.name === name),
      { name, value: "one", isSecret: false }
    );
    const retrieved = await envvars.retrieve(projectRef, environmentSlug, name);
    assert.equal(retrieved.value, "one");
    assert.equal(retrieved.isSecret, false);
  } finally {
    await envvars.del(projectRef, environmentSlug, name);
  }
});

// SDK 4.8.3's `envvars.update` cannot be called outside a task: it reads an undeclared `name`
// (a ReferenceError in Node). Its API client, the one every SDK call goes through, sends the
// request `envvars.update` means to send.
const updateEnvVar = (name, body) =>
  apiClientManager.clientOrThrow().updateEnvVar(projectRef, environmentSlug, name, body);

check("envvars.update (through the SDK's API client) changes the value a run sees", async () => {
  const name = envName();
  await envvars.create(projectRef, environmentSlug, { name, value: "short" });
  try {
    const updated = await updateEnvVar(name, { value: "much longer" });
    assert.equal(updated.success, true);
    assert.equal((await envvars.retrieve(projectRef, environmentSlug, name)).value, "much longer");

    const run = await finished((await tasks.trigger("env", { names: [name] })).id);
    assert.equal(run.output.before[name].len, "much longer".length);
  } finally {
    await envvars.del(projectRef, environmentSlug, name);
  }
});

check("envvars.upload sets many variables at once", async () => {
  const [a, b] = [envName(), envName()];
  const uploaded = await envvars.upload(projectRef, environmentSlug, {
    variables: { [a]: "1", [b]: "22" },
    override: true,
  });
  assert.equal(uploaded.success, true);
  try {
    const listed = await envvars.list(projectRef, environmentSlug);
    assert.equal(listed.find((v) => v.name === a)?.value, "1");
    assert.equal(listed.find((v) => v.name === b)?.value, "22");
  } finally {
    await envvars.del(projectRef, environmentSlug, a);
    await envvars.del(projectRef, environmentSlug, b);
  }
});

check("envvars.del removes the variable", async () => {
  const name = envName();
  await envvars.create(projectRef, environmentSlug, { name, value: "gone" });
  const deleted = await envvars.del(projectRef, environmentSlug, name);
  assert.equal(deleted.success, true);
  const { status } = await failure(envvars.retrieve(projectRef, environmentSlug, name));
  assert.equal(status, 404);
});

check("a secret variable is redacted when read back but a run sees its value", async () => {
  const name = envName();
  await envvars.create(projectRef, environmentSlug, { name, value: "s3cret", isSecret: true });
  try {
    const listed = (await envvars.list(projectRef, environmentSlug)).find((v) => v.name === name);
    assert.equal(listed.isSecret, true);
    assert.equal(listed.value, "<redacted>");
    const retrieved = await envvars.retrieve(projectRef, environmentSlug, name);
    assert.equal(retrieved.isSecret, true);
    assert.notEqual(retrieved.value, "s3cret");

    const run = await finished((await tasks.trigger("env", { names: [name] })).id);
    assert.equal(run.output.before[name].len, "s3cret".length);
  } finally {
    await envvars.del(projectRef, environmentSlug, name);
  }
});
