/// <reference path="./kiln-task-types.d.ts" />
declare module 'kiln:task/tasks@0.1.0' {
  /**
   * Triggers runs (at most 1000) without waiting for them; they run on the latest version.
   * Made once: a replay returns the same runs. Fails as a whole if any item is invalid.
   */
  export function batchTrigger(items: Array<TriggerItem>): Array<ChildRun>;
  /**
   * Triggers runs (at most 1000) on the parent's version and waits until all of them have
   * ended; the results keep the items' order. The parent is checkpointed meanwhile.
   */
  export function batchTriggerAndWait(items: Array<TriggerItem>): Array<ChildOutcome>;
  export type Json = import('kiln:task/types@0.1.0').Json;
  export type ErrorInfo = import('kiln:task/types@0.1.0').ErrorInfo;
  /**
   * Options of a child run (the trigger API's, as far as a task needs them).
   */
  export interface TriggerOptions {
    /**
     * A repeat with a key that is still live returns the earlier run.
     */
    idempotencyKey?: string,
    /**
     * Up to 10 tags.
     */
    tags: Array<string>,
    /**
     * Start no earlier than this many milliseconds from now.
     */
    delayMs?: bigint,
    /**
     * Expire if not started within this many milliseconds.
     */
    ttlMs?: bigint,
    /**
     * Run on this queue instead of the task's.
     */
    queue?: string,
    /**
     * The queue's limit applies to each key separately.
     */
    concurrencyKey?: string,
    /**
     * Machine preset name.
     */
    machine?: string,
    /**
     * Most attempts.
     */
    maxAttempts?: number,
    /**
     * Initial metadata (a JSON object).
     */
    metadata?: Json,
  }
  /**
   * One run to trigger.
   */
  export interface TriggerItem {
    taskId: string,
    payload: Json,
    options: TriggerOptions,
  }
  /**
   * A triggered child run.
   */
  export interface ChildRun {
    /**
     * `run_…`
     */
    id: string,
    /**
     * The idempotency key matched an earlier run.
     */
    isCached: boolean,
  }
  /**
   * How a child run ended: its output, or its error (a failed child is a value, not a crash
   * of the parent).
   */
  export type ChildResult = ChildResultOk | ChildResultError;
  export interface ChildResultOk {
    tag: 'ok',
    val: Json,
  }
  export interface ChildResultError {
    tag: 'error',
    val: ErrorInfo,
  }
  /**
   * A child run and how it ended.
   */
  export interface ChildOutcome {
    id: string,
    outcome: ChildResult,
  }
}
