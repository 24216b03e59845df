declare module 'kiln:task/types@0.1.0' {
  /**
   * JSON text: payloads, outputs, attributes. The host checks it parses.
   */
  export type Json = string;
  /**
   * What the guest knows about the run it is executing.
   */
  export interface RunContext {
    /**
     * `run_…` id of the run.
     */
    runId: string,
    /**
     * The task identifier being run (a component may hold several tasks).
     */
    taskId: string,
    /**
     * 1 for the first attempt, 2 for the first retry, and so on.
     */
    attempt: number,
    /**
     * The deployed version the run is locked to, e.g. `20261130.1`.
     */
    version: string,
    /**
     * Environment slug, e.g. `dev`.
     */
    environment: string,
    /**
     * Tags given at trigger time.
     */
    tags: Array<string>,
    /**
     * Idempotency key given at trigger time, if any.
     */
    idempotencyKey?: string,
    /**
     * Queue the run was dequeued from.
     */
    queue: string,
    /**
     * Machine preset name the attempt runs on, e.g. `small-1x`.
     */
    machine: string,
    /**
     * Parent and root run of a child run.
     */
    parentRunId?: string,
    rootRunId?: string,
    /**
     * When the run was created, milliseconds since the Unix epoch.
     */
    createdAtMs: bigint,
  }
  /**
   * A serialisable error, in Trigger.dev's shape (`name`, `message`, `stackTrace`).
   */
  export interface ErrorInfo {
    name: string,
    message: string,
    stack?: string,
  }
  /**
   * How a run can fail from the guest's side.
   */
  export type TaskError = TaskErrorError | TaskErrorAbort;
  /**
   * An ordinary failure: retried according to the retry policy.
   */
  export interface TaskErrorError {
    tag: 'error',
    val: ErrorInfo,
  }
  /**
   * A failure that must not be retried (Trigger.dev's `AbortTaskRunError`).
   */
  export interface TaskErrorAbort {
    tag: 'abort',
    val: ErrorInfo,
  }
  /**
   * Retry policy; every field left out takes the host default
   * (3 attempts, factor 2, 1 s minimum, 60 s maximum, randomized).
   */
  export interface RetryPolicy {
    maxAttempts?: number,
    factor?: number,
    minTimeoutMs?: bigint,
    maxTimeoutMs?: bigint,
    randomize?: boolean,
    /**
     * Machine preset to retry on after running out of memory.
     */
    outOfMemoryMachine?: string,
  }
  /**
   * A queue a task runs on: its own by default, or a named one shared by several tasks.
   */
  export interface QueueDefinition {
    name: string,
    concurrencyLimit?: number,
  }
  /**
   * A cron schedule declared with a task: kiln triggers a run at each fire time with a
   * Trigger.dev schedule payload (`type`, `timestamp`, `lastTimestamp`, `timezone`,
   * `scheduleId`, `externalId`, `upcoming`).
   */
  export interface ScheduleDefinition {
    /**
     * Five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * 1-5`.
     */
    cron: string,
    /**
     * IANA time zone name the cron is read in, e.g. `Europe/Berlin`; default UTC.
     */
    timezone?: string,
  }
  /**
   * One task a component offers. Ids are 1–128 characters of `[A-Za-z0-9_.-]`.
   */
  export interface TaskDefinition {
    id: string,
    description?: string,
    queue?: QueueDefinition,
    retry?: RetryPolicy,
    /**
     * Compute time limit of one attempt, in milliseconds.
     */
    maxDurationMs?: bigint,
    /**
     * Time a run may wait to start before it expires, in milliseconds.
     */
    ttlMs?: bigint,
    /**
     * Machine preset name: micro, small-1x, small-2x, medium-1x, medium-2x, large-1x, large-2x.
     */
    machine?: string,
    /**
     * Fire the task on a cron schedule (a deploy replaces the environment's declared
     * schedules with the new version's).
     */
    schedule?: ScheduleDefinition,
  }
}
