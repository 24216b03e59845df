/**
 * The errors a task throws and meets: `AbortTaskRunError` (a failure kiln never retries),
 * `WaitpointTimeoutError` (a wait token that timed out), `SubtaskUnwrapError` (`unwrap()` of a
 * child run that failed), and the conversion of anything thrown by `run` into the WIT's
 * `task-error`. It never loses a thrown value: whatever is thrown becomes a name and a message.
 */

import type { ErrorInfo, TaskError } from "kiln:task/types@0.1.0";

/**
 * Throw it from `run` to fail the run without retrying it (Trigger.dev's `AbortTaskRunError`):
 * the same input would fail again.
 */
export class AbortTaskRunError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AbortTaskRunError";
  }
}

/** The error of `wait.forToken` when the token's timeout passed before it was completed. */
export class WaitpointTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WaitpointTimeoutError";
  }
}

/** Thrown by `unwrap()` of a child run that failed; `cause` is the child's error. */
export class SubtaskUnwrapError extends Error {
  readonly runId: string;
  readonly taskId: string;
  constructor(taskId: string, runId: string, cause: unknown) {
    super(`Error in ${taskId}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.name = "SubtaskUnwrapError";
    this.taskId = taskId;
    this.runId = runId;
  }
}

/** An error that kiln reports with a fixed name, e.g. `TaskPayloadParsedError`. */
export class NamedTaskError extends Error {
  readonly abort: boolean;
  constructor(name: string, message: string, abort: boolean) {
    super(message);
    this.name = name;
    this.abort = abort;
  }
}

/** The WIT's `error-info` of any thrown value. */
export function errorInfo(thrown: unknown): ErrorInfo {
  if (thrown instanceof Error) {
    return {
      name: thrown.name || "Error",
      message: thrown.message,
      stack: typeof thrown.stack === "string" && thrown.stack !== "" ? thrown.stack : undefined,
    };
  }
  if (thrown !== null && typeof thrown === "object" && "message" in thrown) {
    const o = thrown as { name?: unknown; message?: unknown; stack?: unknown };
    return {
      name: typeof o.name === "string" ? o.name : "Error",
      message: String(o.message),
      stack: typeof o.stack === "string" ? o.stack : undefined,
    };
  }
  let message: string;
  try {
    message = typeof thrown === "string" ? thrown : JSON.stringify(thrown) ?? String(thrown);
  } catch {
    message = String(thrown);
  }
  return { name: "Error", message };
}

/** `task-error` of a value thrown by `run`: an abort for `AbortTaskRunError`, else an error. */
export function taskError(thrown: unknown): TaskError {
  const abort =
    thrown instanceof AbortTaskRunError ||
    (thrown instanceof NamedTaskError && thrown.abort) ||
    (thrown instanceof Error && thrown.name === "AbortTaskRunError");
  return { tag: abort ? "abort" : "error", val: errorInfo(thrown) };
}

/** An `Error` rebuilt from an `error-info` (a child run's error), name and stack kept. */
export function fromErrorInfo(info: ErrorInfo): Error {
  const error = new Error(info.message);
  error.name = info.name;
  error.stack = info.stack ?? `${info.name}: ${info.message}`;
  return error;
}

/**
 * The message of an error a WIT import threw for its `result`'s error case: componentize-js
 * throws it with the error value as `payload`.
 */
export function importErrorPayload(thrown: unknown): unknown {
  if (thrown !== null && typeof thrown === "object" && "payload" in thrown) {
    return (thrown as { payload: unknown }).payload;
  }
  return thrown;
}
