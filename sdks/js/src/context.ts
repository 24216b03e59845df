/**
 * `ctx`, what a task knows about its run, in the shape of Trigger.dev's `TaskRunContext` as far as
 * kiln's `run-context` fills it. It only reshapes the record the host passed; it never calls the
 * host, so building it costs no journal entry.
 */

import type { RunContext } from "kiln:task/types@0.1.0";

/** The run a task is executing, shaped like Trigger.dev's `ctx`. */
export interface Context {
  task: { id: string; filePath: string; exportName: string };
  attempt: { number: number; id: string; status: "EXECUTING" };
  run: {
    id: string;
    tags: string[];
    isTest: false;
    createdAt: Date;
    idempotencyKey?: string;
    version: string;
    /** The run that triggered this one, if it is a child run. */
    parentTaskRunId?: string;
    /** The first run of this run's tree, if it is a child run. */
    rootTaskRunId?: string;
  };
  queue: { id: string; name: string };
  environment: { id: string; slug: string; type: "DEVELOPMENT" | "STAGING" | "PRODUCTION" | string };
  machine: { name: string };
  deployment: { version: string };
  /** The WIT record the host passed, unchanged. */
  raw: RunContext;
}

/** Trigger.dev's environment type of an environment slug, as kiln's API reports it. */
function environmentType(slug: string): string {
  if (slug === "dev") return "DEVELOPMENT";
  if (slug === "prod") return "PRODUCTION";
  return slug.toUpperCase();
}

export function context(raw: RunContext): Context {
  return {
    task: { id: raw.taskId, filePath: "", exportName: raw.taskId },
    attempt: { number: raw.attempt, id: `${raw.runId}:${raw.attempt}`, status: "EXECUTING" },
    run: {
      id: raw.runId,
      tags: [...raw.tags],
      isTest: false,
      createdAt: new Date(Number(raw.createdAtMs)),
      idempotencyKey: raw.idempotencyKey,
      version: raw.version,
      parentTaskRunId: raw.parentRunId,
      rootTaskRunId: raw.rootRunId,
    },
    queue: { id: raw.queue, name: raw.queue },
    environment: { id: raw.environment, slug: raw.environment, type: environmentType(raw.environment) },
    machine: { name: raw.machine },
    deployment: { version: raw.version },
    raw,
  };
}
