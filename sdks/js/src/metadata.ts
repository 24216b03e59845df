/**
 * `metadata`: the run's JSON object that the run API shows (progress, counters, results so far),
 * and its parent's and root's, over `kiln:task/metadata`, in Trigger.dev's shape. Each change is
 * one host call, applied at once and made once (a replay does not repeat it); a change the host
 * refuses (too large, a bad key, incrementing a non-number) throws. `flush()` and `refresh()`
 * exist for Trigger.dev's code and do nothing: nothing is buffered.
 */

import { get as hostGet, update as hostUpdate } from "kiln:task/metadata@0.1.0";
import type { Operation, Target } from "kiln:task/metadata@0.1.0";
import { importErrorPayload } from "./errors.js";

/** A JSON value that metadata holds. */
export type DeserializedJson =
  | string
  | number
  | boolean
  | null
  | DeserializedJson[]
  | { [key: string]: DeserializedJson };

/** Changes of one run's metadata; every method returns the updater, to chain. */
export interface MetadataUpdater {
  /** Sets a key (a top-level name or a `$.a.b` path). */
  set(key: string, value: DeserializedJson): MetadataUpdater;
  /** Removes a key. */
  del(key: string): MetadataUpdater;
  /** Appends to the array at `key` (made if missing). */
  append(key: string, value: DeserializedJson): MetadataUpdater;
  /** Removes every element equal to `value` from the array at `key`. */
  remove(key: string, value: DeserializedJson): MetadataUpdater;
  /** Adds `value` (default 1) to the number at `key` (0 if missing). */
  increment(key: string, value?: number): MetadataUpdater;
  /** Subtracts `value` (default 1) from the number at `key`. */
  decrement(key: string, value?: number): MetadataUpdater;
  /** Replaces the whole object. */
  replace(metadata: Record<string, DeserializedJson>): MetadataUpdater;
  /** The whole object (kiln reads it from the host; `{}` when there is none). */
  current(): Record<string, DeserializedJson>;
}

function apply(target: Target, operation: Operation): void {
  try {
    hostUpdate(target, [operation]);
  } catch (e) {
    const payload = importErrorPayload(e);
    throw new Error(`metadata: ${typeof payload === "string" ? payload : String(payload)}`);
  }
}

function json(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new Error("metadata: the value is not JSON");
  return text;
}

function updater(target: Target): MetadataUpdater {
  const self: MetadataUpdater = {
    set: (key, value) => (apply(target, { tag: "set", val: [key, json(value)] }), self),
    del: (key) => (apply(target, { tag: "del", val: key }), self),
    append: (key, value) => (apply(target, { tag: "append", val: [key, json(value)] }), self),
    remove: (key, value) => (apply(target, { tag: "remove", val: [key, json(value)] }), self),
    increment: (key, value = 1) => (apply(target, { tag: "increment", val: [key, value] }), self),
    decrement: (key, value = 1) => (apply(target, { tag: "increment", val: [key, -value] }), self),
    replace: (metadata) => (apply(target, { tag: "replace", val: json(metadata) }), self),
    current: () => JSON.parse(hostGet(target)) as Record<string, DeserializedJson>,
  };
  return self;
}

const current = updater("current");

/** Trigger.dev's `metadata`: this run's, with `parent` and `root`. */
export const metadata = {
  ...current,
  /** The value at a top-level key, or `undefined`. */
  get(key: string): DeserializedJson | undefined {
    return current.current()[key];
  },
  /** The metadata of the run that triggered this one (this run's own if it has no parent). */
  parent: updater("parent"),
  /** The metadata of the first run of this run's tree (this run's own if it has no parent). */
  root: updater("root"),
  /** Nothing is buffered: changes are applied when made. */
  async flush(): Promise<void> {},
  /** Reads always come from the host: nothing to refresh. */
  async refresh(): Promise<void> {},
};
