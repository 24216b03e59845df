// Batches through the official SDK. SDK 4.8.3 always uses the two-phase batch API:
// `POST /api/v3/batches` (the batch and its run count), then `POST /api/v3/batches/{id}/items`
// (the items as an NDJSON stream; the batch is sealed when the stream ends), and reads batches
// with `GET /api/v2/batches/{id}`.

import assert from "node:assert/strict";
import { test } from "node:test";

import { batch, runs, tasks } from "@trigger.dev/sdk";

import { finished, unique, until } from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

/** Retrieves a batch until every one of its runs exists, then waits for each run to finish. */
async function finishedBatch(batchId, runCount) {
  const retrieved = await until(`batch ${batchId} to have its ${runCount} runs`, async () => {
    const b = await batch.retrieve(batchId);
    return b.runs.length === runCount ? b : undefined;
  });
  const done = [];
  for (const id of retrieved.runs) done.push(await finished(id));
  return { batch: retrieved, runs: done };
}

/** Asserts that the runs' outputs are the expected ones, in any order. */
function assertOutputs(done, expected) {
  const left = done.map((r) => r.output);
  for (const want of expected) {
    const at = left.findIndex((got) => {
      try {
        assert.deepEqual(got, want);
        return true;
      } catch {
        return false;
      }
    });
    assert.notEqual(at, -1, `no run has output ${JSON.stringify(want)}; outputs: ${JSON.stringify(left)}`);
    left.splice(at, 1);
  }
  assert.deepEqual(left, [], "every run's output was expected");
}

check("tasks.batchTrigger runs every item of one task", async () => {
  const handle = await tasks.batchTrigger("hello", [
    { payload: { name: "A" } },
    { payload: { name: "B" } },
    { payload: { name: "C" } },
  ]);
  assert.match(handle.batchId, /^batch_/);
  assert.equal(handle.runCount, 3);
  assert.equal(typeof handle.publicAccessToken, "string");

  const { runs: done } = await finishedBatch(handle.batchId, 3);
  assertOutputs(done, [
    { message: "Hello, A!" },
    { message: "Hello, B!" },
    { message: "Hello, C!" },
  ]);
  for (const run of done) {
    assert.equal(run.taskIdentifier, "hello");
    assert.equal(run.batchId, handle.batchId);
  }
});

check("tasks.batchTrigger passes each item's options", async () => {
  const tag = unique("batch-opts");
  const handle = await tasks.batchTrigger("echo", [
    { payload: { i: 0 }, options: { tags: [tag] } },
    { payload: { i: 1 }, options: { tags: [tag], delay: "1h" } },
  ]);
  const { batch: b } = await until("both runs", async () => {
    const got = await batch.retrieve(handle.batchId);
    return got.runs.length === 2 ? { batch: got } : undefined;
  });
  const statuses = await Promise.all(b.runs.map((id) => runs.retrieve(id)));
  const delayed = statuses.find((r) => r.status === "DELAYED");
  assert.ok(delayed, "the item with a delay is DELAYED");
  assert.deepEqual(delayed.tags, [tag]);
  await runs.cancel(delayed.id);
});

check("batch.trigger runs items of several tasks", async () => {
  const handle = await batch.trigger([
    { id: "hello", payload: { name: "Mixed" } },
    { id: "echo", payload: { echoed: true } },
  ]);
  assert.equal(handle.runCount, 2);
  const { runs: done } = await finishedBatch(handle.batchId, 2);
  const byTask = Object.fromEntries(done.map((r) => [r.taskIdentifier, r.output]));
  assert.deepEqual(byTask, { hello: { message: "Hello, Mixed!" }, echo: { echoed: true } });
});

check("batch.triggerByTask runs items given by task", async () => {
  // At run time the SDK only reads `task.id`, so plain objects stand in for task definitions.
  const handle = await batch.triggerByTask([
    { task: { id: "hello" }, payload: { name: "ByTask" } },
    { task: { id: "echo" }, payload: { by: "task" } },
    { task: { id: "echo" }, payload: { by: "task", again: true } },
  ]);
  assert.equal(handle.runCount, 3);
  const { runs: done } = await finishedBatch(handle.batchId, 3);
  assertOutputs(done, [
    { message: "Hello, ByTask!" },
    { by: "task" },
    { by: "task", again: true },
  ]);
});

check("batch.retrieve shows the batch's runs, then COMPLETED once they all finished", async () => {
  const handle = await tasks.batchTrigger("echo", [{ payload: { n: 1 } }, { payload: { n: 2 } }]);
  await finishedBatch(handle.batchId, 2);
  const done = await until("the batch to be COMPLETED", async () => {
    const b = await batch.retrieve(handle.batchId);
    return b.status === "COMPLETED" ? b : undefined;
  });
  assert.equal(done.id, handle.batchId);
  assert.equal(done.runCount, 2);
  assert.equal(done.runs.length, 2);
  assert.deepEqual(done.processing.errors, []);
  assert.ok(done.createdAt instanceof Date);
});

check("tasks.batchTrigger with the same idempotencyKey returns the same batch", async () => {
  const key = unique("batch-key");
  const items = [{ payload: { k: 1 } }, { payload: { k: 2 } }];
  const first = await tasks.batchTrigger("echo", items, { idempotencyKey: key });
  const second = await tasks.batchTrigger("echo", items, { idempotencyKey: key });
  assert.equal(second.batchId, first.batchId);
  const { batch: b } = await finishedBatch(first.batchId, 2);
  assert.equal(b.runs.length, 2, "the second call made no runs");
});

check("batch items with their own idempotency keys reuse earlier runs", async () => {
  const key = unique("item-key");
  const single = await tasks.trigger("echo", { first: true }, { idempotencyKey: key });
  const handle = await tasks.batchTrigger("echo", [
    { payload: { first: false }, options: { idempotencyKey: key } },
    { payload: { other: true } },
  ]);
  const { batch: b } = await finishedBatch(handle.batchId, 2);
  assert.ok(b.runs.includes(single.id), "the keyed item is the earlier run");
});
