/**
 * Declaring tasks: `task({ id, run, … })`, `schemaTask`, `schedules.task` and `queue()`, in
 * Trigger.dev v4's shape. Declaring a task registers it in this component's registry (kept on
 * `globalThis`, so one registry holds every task even if the SDK were bundled twice); the
 * component's `definitions()` and `run()` (see `runtime.ts`) read it. Declaring never calls the
 * host: it happens when the component is built, not when it runs.
 */

import type { QueueDefinition, RetryPolicy, ScheduleDefinition, TaskDefinition } from "kiln:task/types@0.1.0";
import {
  batchTrigger,
  batchTriggerAndWait,
  trigger,
  triggerAndWait,
  type BatchItem,
  type BatchResult,
  type BatchRunHandle,
  type MachinePresetName,
  type RunHandle,
  type TaskRunPromise,
  type TriggerOptions,
} from "./children.js";
import type { Context } from "./context.js";
import { durationMs, u64 } from "./duration.js";

/** Trigger.dev's retry options; left out, kiln's defaults (3 attempts, factor 2, 1–60 s, randomized). */
export interface RetryOptions {
  /** Most attempts in total, the first included (1: never retry). */
  maxAttempts?: number;
  factor?: number;
  minTimeoutInMs?: number;
  maxTimeoutInMs?: number;
  randomize?: boolean;
  /** Retry once on a bigger machine after running out of memory. */
  outOfMemory?: { machine?: MachinePresetName };
}

/** A queue tasks run on: a named one (shared by every task naming it) or the task's own. */
export interface QueueOptions {
  name?: string;
  /** Most runs of the queue executing at once. */
  concurrencyLimit?: number;
}

/** Declares a named queue to share between tasks (Trigger.dev v4's `queue()`). */
export function queue(options: { name: string; concurrencyLimit?: number }): QueueOptions {
  return { name: options.name, concurrencyLimit: options.concurrencyLimit };
}

/** A cron: five fields (`"0 9 * * 1-5"`) read in UTC, or with a time zone. */
export type CronOptions = string | { pattern: string; timezone?: string };

/** What `run` gets beside the payload. */
export interface RunParams {
  ctx: Context;
  /** Never aborted in kiln: a canceled run's instance is stopped instead. */
  signal: AbortSignal;
}

/** The hooks' argument. */
export interface HookParams<TPayload> {
  payload: TPayload;
  ctx: Context;
}

export interface TaskOptions<TIdentifier extends string, TPayload, TOutput> {
  /** 1–128 characters of letters, digits, `-`, `_` and `.`; unique in the component. */
  id: TIdentifier;
  description?: string;
  retry?: RetryOptions;
  queue?: QueueOptions;
  /** Machine preset (`"small-2x"`), or `{ preset }` as Trigger.dev v3 wrote it. */
  machine?: MachinePresetName | { preset: MachinePresetName };
  /** Compute time limit of one attempt, in seconds (kiln's minimum: 5). */
  maxDuration?: number;
  /** How long a run may wait to start before it expires: `"1h"` or seconds. */
  ttl?: string | number;
  /** Fire the task on a cron (see also `schedules.task`). */
  schedule?: CronOptions;
  run: (payload: TPayload, params: RunParams) => TOutput | Promise<TOutput>;
  /** Runs before `run` on every attempt (and every replay). */
  onStart?: (params: HookParams<TPayload>) => unknown;
  /** Runs after `run` returned. */
  onSuccess?: (params: HookParams<TPayload> & { output: Awaited<TOutput> }) => unknown;
  /** Runs after `run` threw; the attempt still fails with that error. */
  onFailure?: (params: HookParams<TPayload> & { error: unknown }) => unknown;
}

/** A declared task: trigger it from another task. */
export interface Task<TIdentifier extends string, TPayload = any, TOutput = any> {
  readonly id: TIdentifier;
  readonly description?: string;
  trigger(payload: TPayload, options?: TriggerOptions): Promise<RunHandle<TIdentifier>>;
  batchTrigger(items: BatchItem<TPayload>[]): Promise<BatchRunHandle<TIdentifier>>;
  triggerAndWait(payload: TPayload, options?: TriggerOptions): TaskRunPromise<TIdentifier, Awaited<TOutput>>;
  batchTriggerAndWait(items: BatchItem<TPayload>[]): Promise<BatchResult<TIdentifier, Awaited<TOutput>>>;
}

export type AnyTask = Task<string, any, any>;
export type TaskIdentifier<T> = T extends Task<infer I, any, any> ? I : never;
export type TaskPayload<T> = T extends Task<any, infer P, any> ? P : never;
export type TaskOutput<T> = T extends Task<any, any, infer O> ? Awaited<O> : never;

/** A registered task: its definition and how to run it. */
export interface Registered {
  definition: TaskDefinition;
  options: TaskOptions<string, any, any>;
  /** Validates the payload before `run` (a `schemaTask`'s schema). */
  parse?: (payload: unknown) => unknown;
}

const REGISTRY = Symbol.for("kiln.sdk.tasks");

/** Every task declared in this component, in declaration order. */
export function registry(): Map<string, Registered> {
  const g = globalThis as { [REGISTRY]?: Map<string, Registered> };
  return (g[REGISTRY] ??= new Map());
}

function ms(value: number | undefined): bigint | undefined {
  return value === undefined ? undefined : u64(value);
}

function retryPolicy(retry: RetryOptions | undefined): RetryPolicy | undefined {
  if (retry === undefined) return undefined;
  return {
    maxAttempts: retry.maxAttempts,
    factor: retry.factor,
    minTimeoutMs: ms(retry.minTimeoutInMs),
    maxTimeoutMs: ms(retry.maxTimeoutInMs),
    randomize: retry.randomize,
    outOfMemoryMachine: retry.outOfMemory?.machine,
  };
}

function queueDefinition(id: string, queue: QueueOptions | undefined): QueueDefinition | undefined {
  if (queue === undefined) return undefined;
  return { name: queue.name ?? `task/${id}`, concurrencyLimit: queue.concurrencyLimit };
}

function scheduleDefinition(cron: CronOptions | undefined): ScheduleDefinition | undefined {
  if (cron === undefined) return undefined;
  return typeof cron === "string" ? { cron } : { cron: cron.pattern, timezone: cron.timezone };
}

function definition(options: TaskOptions<string, any, any>): TaskDefinition {
  if (typeof options.id !== "string") throw new Error("task: `id` must be a string");
  if (typeof options.run !== "function") throw new Error(`task "${options.id}": \`run\` must be a function`);
  const machine = typeof options.machine === "object" ? options.machine.preset : options.machine;
  return {
    id: options.id,
    description: options.description,
    queue: queueDefinition(options.id, options.queue),
    retry: retryPolicy(options.retry),
    maxDurationMs: options.maxDuration === undefined ? undefined : u64(options.maxDuration * 1000),
    ttlMs: options.ttl === undefined ? undefined : u64(durationMs(options.ttl, `task "${options.id}": ttl`)),
    machine,
    schedule: scheduleDefinition(options.schedule),
  };
}

function register<TIdentifier extends string, TPayload, TOutput>(
  options: TaskOptions<TIdentifier, TPayload, TOutput>,
  parse?: (payload: unknown) => unknown,
): Task<TIdentifier, TPayload, TOutput> {
  const tasks = registry();
  if (tasks.has(options.id)) {
    throw new Error(`task "${options.id}" is declared twice; task ids must be unique in a component`);
  }
  tasks.set(options.id, { definition: definition(options), options, parse });
  const id = options.id;
  return {
    id,
    description: options.description,
    trigger: (payload, triggerOptions) => trigger(id, payload, triggerOptions),
    batchTrigger: (items) => batchTrigger(id, items),
    triggerAndWait: (payload, triggerOptions) => triggerAndWait<TIdentifier, Awaited<TOutput>>(id, payload, triggerOptions),
    batchTriggerAndWait: (items) => batchTriggerAndWait<TIdentifier, Awaited<TOutput>>(id, items),
  };
}

/** Declares a task. Export it from your file, as Trigger.dev expects. */
export function task<TIdentifier extends string, TPayload = any, TOutput = unknown>(
  options: TaskOptions<TIdentifier, TPayload, TOutput>,
): Task<TIdentifier, TPayload, TOutput> {
  return register(options);
}

/** Anything with `parse` (a zod schema, for instance), or a function that validates. */
export type Schema<T> = { parse(value: unknown): T } | ((value: unknown) => T);

/**
 * A task whose payload is checked by a schema first; a payload it rejects fails the run with
 * `TaskPayloadParsedError`, not retried.
 */
export function schemaTask<TIdentifier extends string, TPayload, TOutput = unknown>(
  options: TaskOptions<TIdentifier, TPayload, TOutput> & { schema: Schema<TPayload> },
): Task<TIdentifier, TPayload, TOutput> {
  const schema = options.schema;
  const parse = typeof schema === "function" ? schema : (v: unknown) => schema.parse(v);
  return register(options, parse);
}

/** The payload of a scheduled run (Trigger.dev's `ScheduledTaskPayload`). */
export interface ScheduledTaskPayload {
  type: "DECLARATIVE" | "IMPERATIVE";
  timestamp: Date;
  lastTimestamp?: Date;
  timezone: string;
  scheduleId: string;
  externalId?: string;
  upcoming: Date[];
}

/** What the host sends: dates as ISO strings. */
function scheduledPayload(raw: unknown): ScheduledTaskPayload {
  const p = (raw ?? {}) as Record<string, unknown>;
  const date = (v: unknown) => (typeof v === "string" ? new Date(v) : undefined);
  return {
    type: p.type === "IMPERATIVE" ? "IMPERATIVE" : "DECLARATIVE",
    timestamp: date(p.timestamp) ?? new Date(NaN),
    lastTimestamp: date(p.lastTimestamp),
    timezone: typeof p.timezone === "string" ? p.timezone : "UTC",
    scheduleId: typeof p.scheduleId === "string" ? p.scheduleId : "",
    externalId: typeof p.externalId === "string" ? p.externalId : undefined,
    upcoming: Array.isArray(p.upcoming) ? p.upcoming.flatMap((u) => date(u) ?? []) : [],
  };
}

export interface ScheduledTaskOptions<TIdentifier extends string, TOutput>
  extends Omit<TaskOptions<TIdentifier, ScheduledTaskPayload, TOutput>, "schedule"> {
  /** Declares the schedule with the task; without it, create schedules with the API or CLI. */
  cron?: CronOptions;
}

/** `schedules.task`: a task fired on a cron, whose payload is the schedule's. */
export const schedules = {
  task<TIdentifier extends string, TOutput = unknown>(
    options: ScheduledTaskOptions<TIdentifier, TOutput>,
  ): Task<TIdentifier, ScheduledTaskPayload, TOutput> {
    const { cron, ...rest } = options;
    return register({ ...rest, schedule: cron }, scheduledPayload);
  },
};
