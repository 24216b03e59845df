// How a run can end, and what a task can tell the host on the way: retried errors, aborts,
// child runs with typed results, metadata, and a schedule.
import { AbortTaskRunError, idempotencyKeys, logger, metadata, schedules, schemaTask, task, tasks } from "@kiln-run/sdk";
import type { hello } from "./hello.js";

export const flaky = task({
  id: "flaky",
  description: "Fails on the first attempt and succeeds on the next",
  retry: { maxAttempts: 3, minTimeoutInMs: 100, maxTimeoutInMs: 1000, factor: 2, randomize: false },
  run: async (_payload: unknown, { ctx }) => {
    if (ctx.attempt.number === 1) throw new Error(`attempt ${ctx.attempt.number} failed on purpose`);
    return { attempt: ctx.attempt.number };
  },
});

class PaymentDeclined extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PaymentDeclined";
  }
}

export const alwaysFails = task({
  id: "always-fails",
  description: "Throws its own error class on every attempt",
  retry: { maxAttempts: 2, minTimeoutInMs: 100, randomize: false },
  run: async () => {
    throw new PaymentDeclined("card declined on purpose");
  },
});

export const abort = task({
  id: "abort",
  description: "Aborts, so it is never retried",
  retry: { maxAttempts: 3, minTimeoutInMs: 100 },
  run: async () => {
    throw new AbortTaskRunError("aborted on purpose");
  },
});

export const progress = task({
  id: "progress",
  description: "Changes its own metadata, its parent's and its root's",
  run: async () => {
    metadata.set("status", "started").increment("steps").increment("steps", 2).decrement("steps");
    metadata.append("log", "a").append("log", "b").remove("log", "a");
    metadata.set("temp", true).del("temp");
    metadata.parent.increment("childrenDone");
    metadata.root.set("touchedByChild", true);
    return { steps: metadata.get("steps"), all: metadata.current() };
  },
});

export const parent = task({
  id: "parent",
  description: "Triggers children and waits for them: one that succeeds, one that fails",
  run: async (payload: { name: string }) => {
    // Typed by the child task: `greeting.output` is `{ message: string }`.
    const greeting = await tasks.triggerAndWait<typeof hello>("hello", { name: payload.name });
    const failed = await alwaysFails.triggerAndWait(undefined, { maxAttempts: 1 });
    const child = await progress.triggerAndWait(undefined);
    let unwrapError: string | null = null;
    let unwrapKey: string | null = null;
    try {
      // A key scoped to this run: a retry of the parent would find this child again.
      const idempotencyKey = await idempotencyKeys.create("unwrap");
      unwrapKey = idempotencyKey;
      await alwaysFails.triggerAndWait(undefined, { maxAttempts: 1, idempotencyKey }).unwrap();
    } catch (e) {
      unwrapError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    }
    logger.info("children ended", { greeting: greeting.ok, failed: failed.ok });
    return {
      greeting: greeting.ok ? greeting.output.message : null,
      failed: failed.ok ? null : { name: failed.error.name, message: failed.error.message },
      childSteps: child.ok ? child.output.steps : null,
      unwrapError,
      unwrapKey,
      metadata: metadata.current(),
    };
  },
});

export const nightly = schedules.task({
  id: "nightly",
  description: "Runs at 03:00 in Berlin every day",
  cron: { pattern: "0 3 * * *", timezone: "Europe/Berlin" },
  run: async (payload) => {
    return { type: payload.type, at: payload.timestamp.toISOString() };
  },
});

// A payload checked before `run`: anything with `parse` works (a zod schema, for instance).
export const charge = schemaTask({
  id: "charge",
  description: "Charges an amount in cents, after checking the payload",
  schema: (value: unknown) => {
    const p = value as { cents?: unknown };
    if (typeof p?.cents !== "number" || !Number.isInteger(p.cents) || p.cents <= 0) {
      throw new Error("cents must be a positive integer");
    }
    return { cents: p.cents };
  },
  onStart: ({ payload }) => logger.debug("charging", { cents: payload.cents }),
  run: async ({ cents }) => logger.trace("charge", async () => ({ charged: cents })),
});
