// What every check of the compatibility suite shares: the host it drives (from the environment),
// the SDK configured for it exactly as a user would, and waits that poll real outcomes with a
// deadline. Nothing here talks to the host except through the SDK, and nothing patches the SDK.

import { configure, runs } from "@trigger.dev/sdk";

/** The host under test, as `KILN_API_URL` and `KILN_SECRET_KEY` name it. */
export const apiUrl = required("KILN_API_URL").replace(/\/$/, "");
export const secretKey = required("KILN_SECRET_KEY");
/** The project and environment the secret key belongs to (a fresh host's `default`/`dev`). */
export const projectRef = process.env.KILN_PROJECT_REF ?? "default";
export const environmentSlug = process.env.KILN_ENVIRONMENT ?? "dev";

configure({ baseURL: apiUrl, secretKey });

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} must be set (the host's API URL and a secret key of its environment)`);
  }
  return value;
}

/** A string no earlier run of the suite used, for tags, keys and names. */
export function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns something other than `undefined`, or fails naming `what`. */
export async function until(what, probe, { timeoutMs = 30_000, everyMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last !== undefined) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Retrieves a run until it has finished (any final status), through `runs.retrieve`. */
export async function finished(runId, options) {
  return until(
    `run ${runId} to finish`,
    async () => {
      const run = await runs.retrieve(runId);
      return run.isCompleted || run.status === "CANCELED" ? run : undefined;
    },
    options
  );
}

/** Retrieves a run until it has the given status. */
export async function reaches(runId, status, options) {
  return until(
    `run ${runId} to be ${status}`,
    async () => {
      const run = await runs.retrieve(runId);
      return run.status === status ? run : undefined;
    },
    options
  );
}

/**
 * Reads a subscription until `done(run, seen)` holds, or the deadline passes. Returns every run
 * object it yielded. The subscription is unsubscribed either way, so a host that never answers
 * as the SDK expects fails the check instead of hanging the suite.
 */
export async function readSubscription(subscription, done, { timeoutMs = 20_000 } = {}) {
  const seen = [];
  let timer;
  const timedOut = new Promise((_, reject) => {
    timer = setTimeout(() => {
      subscription.unsubscribe();
      const statuses = seen.map((r) => `${r.id}:${r.status}`).join(", ") || "nothing";
      reject(new Error(`the subscription did not finish within ${timeoutMs} ms; it yielded ${statuses}`));
    }, timeoutMs);
  });
  const read = (async () => {
    for await (const run of subscription) {
      seen.push(run);
      if (done(run, seen)) break;
    }
    return seen;
  })();
  try {
    return await Promise.race([read, timedOut]);
  } finally {
    clearTimeout(timer);
    subscription.unsubscribe();
  }
}

/** The HTTP status an SDK call failed with (`undefined` if it did not fail over HTTP). */
export async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { status: error?.status, message: error?.message ?? String(error), error };
  }
  return { status: undefined, message: "the call succeeded" };
}
