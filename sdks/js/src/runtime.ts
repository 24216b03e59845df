/// <reference path="./wit/task-js.d.ts" />
/**
 * The component's exports, `definitions()` and `run()` of the `kiln:task/task` world, over the
 * tasks the user's file declared. `kiln-build` makes the component's entry import the user's file
 * and re-export these two. `run` must turn every outcome into the WIT's result: the output as
 * JSON, or a `task-error` (thrown by componentize-js as the `result`'s error), never anything else.
 */

import type { RunContext, TaskDefinition } from "kiln:task/types@0.1.0";
import { context } from "./context.js";
import { setCurrentContext } from "./current.js";
import { loadEnvironment } from "./env.js";
import { NamedTaskError, taskError } from "./errors.js";
import { registry } from "./task.js";

/** The declared tasks, in declaration order. */
export function definitions(): TaskDefinition[] {
  return [...registry().values()].map((t) => t.definition);
}

function payloadOf(json: string, parse: ((v: unknown) => unknown) | undefined): unknown {
  let payload: unknown;
  try {
    payload = JSON.parse(json);
  } catch (e) {
    throw new NamedTaskError("TaskPayloadParsedError", `the payload is not JSON: ${String(e)}`, true);
  }
  if (parse === undefined) return payload;
  try {
    return parse(payload);
  } catch (e) {
    throw new NamedTaskError("TaskPayloadParsedError", e instanceof Error ? e.message : String(e), true);
  }
}

function outputJson(output: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(output === undefined ? null : output);
  } catch (e) {
    throw new NamedTaskError("TaskOutputError", `the output cannot be serialized: ${String(e)}`, false);
  }
  if (json === undefined) {
    throw new NamedTaskError("TaskOutputError", "the output cannot be serialized as JSON", false);
  }
  return json;
}

async function attempt(taskId: string, payloadJson: string, raw: RunContext): Promise<string> {
  const task = registry().get(taskId);
  if (task === undefined) {
    throw new NamedTaskError("TaskNotFound", `this component has no task "${taskId}"`, true);
  }
  loadEnvironment();
  const payload = payloadOf(payloadJson, task.parse);
  const ctx = context(raw);
  setCurrentContext(ctx);
  const { options } = task;
  await options.onStart?.({ payload, ctx });
  let output: unknown;
  try {
    output = await options.run(payload, { ctx, signal: new AbortController().signal });
  } catch (error) {
    await options.onFailure?.({ payload, ctx, error });
    throw error;
  }
  await options.onSuccess?.({ payload, ctx, output });
  return outputJson(output);
}

export async function run(taskId: string, payload: string, ctx: RunContext): Promise<string> {
  try {
    return await attempt(taskId, payload, ctx);
  } catch (thrown) {
    throw taskError(thrown);
  }
}
