/**
 * Child runs over `kiln:task/tasks`: `tasks.trigger` / `triggerAndWait` / `batchTrigger` /
 * `batchTriggerAndWait` and `batch.*`, with Trigger.dev's result shapes (`result.ok`,
 * `.unwrap()`). Triggering is made once: a replay of the parent gets the same runs. A child that
 * fails is a value (`{ ok: false, error }`), never a failure of the parent; a trigger the host
 * refuses (an unknown task, a bad option) throws.
 */

import { batchTrigger as hostBatchTrigger, batchTriggerAndWait as hostBatchTriggerAndWait } from "kiln:task/tasks@0.1.0";
import type { ChildOutcome, TriggerItem, TriggerOptions as WitTriggerOptions } from "kiln:task/tasks@0.1.0";
import { delayMs, durationMs, u64 } from "./duration.js";
import { fromErrorInfo, importErrorPayload, SubtaskUnwrapError } from "./errors.js";

/** Machine presets, smallest first. */
export type MachinePresetName =
  | "micro"
  | "small-1x"
  | "small-2x"
  | "medium-1x"
  | "medium-2x"
  | "large-1x"
  | "large-2x";

/** Options of a child run (Trigger.dev's trigger options that kiln's child runs take). */
export interface TriggerOptions {
  /** A live run triggered with the same key is returned instead of a new one. */
  idempotencyKey?: string | string[];
  tags?: string | string[];
  /** Start no earlier than this: a duration (`"1h"`), seconds, or a `Date`. */
  delay?: string | number | Date;
  /** Expire if not started within this: a duration (`"10m"`) or seconds. */
  ttl?: string | number;
  /** Run on this queue instead of the task's. */
  queue?: string;
  /** The queue's limit applies to each key separately. */
  concurrencyKey?: string;
  machine?: MachinePresetName;
  maxAttempts?: number;
  /** Initial metadata of the child. */
  metadata?: Record<string, unknown>;
}

const SUPPORTED_OPTIONS = new Set([
  "idempotencyKey",
  "tags",
  "delay",
  "ttl",
  "queue",
  "concurrencyKey",
  "machine",
  "maxAttempts",
  "metadata",
]);

/** A triggered run (Trigger.dev's `RunHandle`). */
export interface RunHandle<TIdentifier extends string = string> {
  id: string;
  taskIdentifier: TIdentifier;
  /** The idempotency key matched an earlier run. */
  isCached: boolean;
  /** Always empty: kiln has no public access tokens. */
  publicAccessToken: string;
}

/** Runs triggered together (Trigger.dev's `BatchRunHandle`). */
export interface BatchRunHandle<TIdentifier extends string = string> {
  /** Always empty: kiln does not group a task's child runs into a batch object. */
  batchId: string;
  runCount: number;
  runs: RunHandle<TIdentifier>[];
}

/** How a child run ended. */
export type TaskRunResult<TIdentifier extends string = string, TOutput = unknown> =
  | { ok: true; id: string; taskIdentifier: TIdentifier; output: TOutput }
  | { ok: false; id: string; taskIdentifier: TIdentifier; error: Error };

/** `triggerAndWait`'s promise, with `unwrap()`: the output, or a `SubtaskUnwrapError`. */
export interface TaskRunPromise<TIdentifier extends string = string, TOutput = unknown>
  extends Promise<TaskRunResult<TIdentifier, TOutput>> {
  unwrap(): Promise<TOutput>;
}

/** Child runs waited for together, in the items' order. */
export interface BatchResult<TIdentifier extends string = string, TOutput = unknown> {
  /** Always empty, as `BatchRunHandle.batchId`. */
  id: string;
  runs: TaskRunResult<TIdentifier, TOutput>[];
}

/** One item of `myTask.batchTrigger` / `tasks.batchTrigger`. */
export interface BatchItem<TPayload = unknown> {
  payload: TPayload;
  options?: TriggerOptions;
}

/** One item of `batch.trigger` / `batch.triggerAndWait`: any task. */
export interface BatchByIdItem<TIdentifier extends string = string, TPayload = unknown> {
  id: TIdentifier;
  payload: TPayload;
  options?: TriggerOptions;
}

/** The WIT's trigger options of Trigger.dev's; options kiln's child runs lack are refused by name. */
export function witOptions(options: TriggerOptions | undefined): WitTriggerOptions {
  const o = options ?? {};
  for (const key of Object.keys(o)) {
    if (!SUPPORTED_OPTIONS.has(key) && (o as Record<string, unknown>)[key] !== undefined) {
      throw new Error(
        `the trigger option "${key}" is not supported for child runs in kiln (supported: ${[...SUPPORTED_OPTIONS].join(", ")})`,
      );
    }
  }
  return {
    idempotencyKey: Array.isArray(o.idempotencyKey) ? o.idempotencyKey.join("-") : o.idempotencyKey,
    tags: o.tags === undefined ? [] : typeof o.tags === "string" ? [o.tags] : [...o.tags],
    delayMs: o.delay === undefined ? undefined : u64(delayMs(o.delay, "delay")),
    ttlMs: o.ttl === undefined ? undefined : u64(durationMs(o.ttl, "ttl")),
    queue: o.queue,
    concurrencyKey: o.concurrencyKey,
    machine: o.machine,
    maxAttempts: o.maxAttempts,
    metadata: o.metadata === undefined ? undefined : JSON.stringify(o.metadata),
  };
}

function witItem(taskId: string, payload: unknown, options: TriggerOptions | undefined): TriggerItem {
  const json = JSON.stringify(payload === undefined ? null : payload);
  return { taskId, payload: json, options: witOptions(options) };
}

function refused(thrown: unknown): Error {
  const payload = importErrorPayload(thrown);
  return new Error(typeof payload === "string" ? payload : String(payload));
}

function triggerItems<TId extends string>(items: { id: TId; payload: unknown; options?: TriggerOptions }[]): RunHandle<TId>[] {
  let runs;
  try {
    runs = hostBatchTrigger(items.map((i) => witItem(i.id, i.payload, i.options)));
  } catch (e) {
    throw refused(e);
  }
  return runs.map((r, n) => ({
    id: r.id,
    taskIdentifier: items[n]!.id,
    isCached: r.isCached,
    publicAccessToken: "",
  }));
}

function result<TId extends string, TOutput>(taskIdentifier: TId, outcome: ChildOutcome): TaskRunResult<TId, TOutput> {
  if (outcome.outcome.tag === "ok") {
    return { ok: true, id: outcome.id, taskIdentifier, output: JSON.parse(outcome.outcome.val) as TOutput };
  }
  return { ok: false, id: outcome.id, taskIdentifier, error: fromErrorInfo(outcome.outcome.val) };
}

function triggerAndWaitItems<TId extends string, TOutput>(
  items: { id: TId; payload: unknown; options?: TriggerOptions }[],
): TaskRunResult<TId, TOutput>[] {
  let outcomes;
  try {
    outcomes = hostBatchTriggerAndWait(items.map((i) => witItem(i.id, i.payload, i.options)));
  } catch (e) {
    throw refused(e);
  }
  return outcomes.map((o, n) => result<TId, TOutput>(items[n]!.id, o));
}

/** The output of a result, or `SubtaskUnwrapError`. */
export function unwrapResult<TId extends string, TOutput>(r: TaskRunResult<TId, TOutput>): TOutput {
  if (r.ok) return r.output;
  throw new SubtaskUnwrapError(r.taskIdentifier, r.id, r.error);
}

export async function trigger<TId extends string>(id: TId, payload: unknown, options?: TriggerOptions): Promise<RunHandle<TId>> {
  return triggerItems([{ id, payload, options }])[0]!;
}

export async function batchTrigger<TId extends string>(id: TId, items: BatchItem[]): Promise<BatchRunHandle<TId>> {
  const runs = triggerItems(items.map((i) => ({ id, payload: i.payload, options: i.options })));
  return { batchId: "", runCount: runs.length, runs };
}

export function triggerAndWait<TId extends string, TOutput>(
  id: TId,
  payload: unknown,
  options?: TriggerOptions,
): TaskRunPromise<TId, TOutput> {
  const promise = (async () => triggerAndWaitItems<TId, TOutput>([{ id, payload, options }])[0]!)();
  return Object.assign(promise, {
    unwrap: async () => unwrapResult(await promise),
  });
}

export async function batchTriggerAndWait<TId extends string, TOutput>(
  id: TId,
  items: BatchItem[],
): Promise<BatchResult<TId, TOutput>> {
  const runs = triggerAndWaitItems<TId, TOutput>(items.map((i) => ({ id, payload: i.payload, options: i.options })));
  return { id: "", runs };
}

/** Triggers runs of several tasks at once (Trigger.dev's `batch`). */
export const batch = {
  async trigger<TId extends string>(items: BatchByIdItem<TId>[]): Promise<BatchRunHandle<TId>> {
    const runs = triggerItems(items);
    return { batchId: "", runCount: runs.length, runs };
  },
  async triggerAndWait<TId extends string, TOutput = unknown>(
    items: BatchByIdItem<TId>[],
  ): Promise<BatchResult<TId, TOutput>> {
    return { id: "", runs: triggerAndWaitItems<TId, TOutput>(items) };
  },
};
