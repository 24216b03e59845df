/// <reference path="./wit/task-js.d.ts" />
/**
 * `@kiln-run/sdk`: write kiln tasks in TypeScript or JavaScript with Trigger.dev v4's authoring
 * API. Declare tasks with `task`, `schemaTask` or `schedules.task` in one file (or files it
 * imports), build it with `npx kiln-build tasks.ts -o tasks.wasm`, deploy the component.
 * This module only re-exports; each area lives in its own file.
 */

import {
  batchTrigger,
  batchTriggerAndWait,
  trigger,
  triggerAndWait,
  type BatchItem,
  type BatchResult,
  type BatchRunHandle,
  type RunHandle,
  type TaskRunPromise,
  type TriggerOptions,
} from "./children.js";
import type { AnyTask, TaskIdentifier, TaskOutput, TaskPayload } from "./task.js";

export { env } from "./env.js";
export { AbortTaskRunError, SubtaskUnwrapError, WaitpointTimeoutError } from "./errors.js";
export { batch } from "./children.js";
export type {
  BatchByIdItem,
  BatchItem,
  BatchResult,
  BatchRunHandle,
  MachinePresetName,
  RunHandle,
  TaskRunPromise,
  TaskRunResult,
  TriggerOptions,
} from "./children.js";
export type { Context } from "./context.js";
export { idempotencyKeys } from "./idempotency.js";
export type { CreateIdempotencyKeyOptions, IdempotencyKey } from "./idempotency.js";
export { logger } from "./logger.js";
export type { LogAttributes, Logger, Span } from "./logger.js";
export { metadata } from "./metadata.js";
export type { DeserializedJson, MetadataUpdater } from "./metadata.js";
export { queue, schedules, schemaTask, task } from "./task.js";
export type {
  AnyTask,
  CronOptions,
  HookParams,
  QueueOptions,
  RetryOptions,
  RunParams,
  Schema,
  ScheduledTaskOptions,
  ScheduledTaskPayload,
  Task,
  TaskIdentifier,
  TaskOptions,
  TaskOutput,
  TaskPayload,
} from "./task.js";
export { wait } from "./wait.js";
export type {
  CreateTokenOptions,
  WaitForOptions,
  WaitpointPromise,
  WaitpointToken,
  WaitpointTokenTypedResult,
  WaitUntilOptions,
} from "./wait.js";

/**
 * Triggering tasks by id (Trigger.dev's `tasks`), typed by the task:
 * `tasks.triggerAndWait<typeof myTask>("my-task", payload)`.
 */
export const tasks = {
  trigger<T extends AnyTask>(
    id: TaskIdentifier<T>,
    payload: TaskPayload<T>,
    options?: TriggerOptions,
  ): Promise<RunHandle<TaskIdentifier<T>>> {
    return trigger(id, payload, options);
  },
  batchTrigger<T extends AnyTask>(
    id: TaskIdentifier<T>,
    items: BatchItem<TaskPayload<T>>[],
  ): Promise<BatchRunHandle<TaskIdentifier<T>>> {
    return batchTrigger(id, items);
  },
  triggerAndWait<T extends AnyTask>(
    id: TaskIdentifier<T>,
    payload: TaskPayload<T>,
    options?: TriggerOptions,
  ): TaskRunPromise<TaskIdentifier<T>, TaskOutput<T>> {
    return triggerAndWait(id, payload, options);
  },
  batchTriggerAndWait<T extends AnyTask>(
    id: TaskIdentifier<T>,
    items: BatchItem<TaskPayload<T>>[],
  ): Promise<BatchResult<TaskIdentifier<T>, TaskOutput<T>>> {
    return batchTriggerAndWait(id, items);
  },
};
