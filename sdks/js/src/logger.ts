/**
 * `logger`: structured log lines stored with the run (`kiln runs logs`), through `kiln:task/log`.
 * Lines written before a checkpoint are not written again when the run replays (the host drops
 * them). Attributes must be a JSON object; anything else is wrapped so a log call never throws.
 */

import { log as hostLog } from "kiln:task/log@0.1.0";
import type { Level } from "kiln:task/log@0.1.0";

/** Attributes of a log line: any JSON-serialisable object (`Error`s are written out). */
export type LogAttributes = Record<string, unknown>;

function attributesJson(attributes: unknown): string | undefined {
  if (attributes === undefined || attributes === null) return undefined;
  const value =
    typeof attributes === "object" && !Array.isArray(attributes) ? attributes : { value: attributes };
  try {
    return JSON.stringify(value, (_key, v: unknown) => {
      if (v instanceof Error) return { name: v.name, message: v.message, stack: v.stack };
      if (typeof v === "bigint") return v.toString();
      return v;
    });
  } catch (e) {
    return JSON.stringify({ unserializable: String(e) });
  }
}

function write(level: Level, message: unknown, attributes?: unknown): void {
  hostLog(level, typeof message === "string" ? message : String(message), attributesJson(attributes));
}

/** A span of `logger.trace(name, fn)`. */
export interface Span {
  name: string;
}

/** Trigger.dev's `logger`. */
export interface Logger {
  /** A line at trace level. */
  trace(message: string, attributes?: LogAttributes): void;
  /** Trigger.dev's span form: runs `fn`, logging its start and end at trace level. */
  trace<T>(name: string, fn: (span: Span) => T | Promise<T>): Promise<T>;
  debug(message: string, attributes?: LogAttributes): void;
  /** Same as `info`. */
  log(message: string, attributes?: LogAttributes): void;
  info(message: string, attributes?: LogAttributes): void;
  warn(message: string, attributes?: LogAttributes): void;
  error(message: string, attributes?: LogAttributes): void;
}

async function span<T>(name: string, fn: (span: Span) => T | Promise<T>): Promise<T> {
  write("trace", `${name}: start`);
  try {
    return await fn({ name });
  } finally {
    write("trace", `${name}: end`);
  }
}

export const logger: Logger = {
  trace(message: string, attributesOrFn?: unknown): never {
    if (typeof attributesOrFn === "function") {
      return span(message, attributesOrFn as (span: Span) => unknown) as never;
    }
    write("trace", message, attributesOrFn);
    return undefined as never;
  },
  debug: (message, attributes) => write("debug", message, attributes),
  log: (message, attributes) => write("info", message, attributes),
  info: (message, attributes) => write("info", message, attributes),
  warn: (message, attributes) => write("warn", message, attributes),
  error: (message, attributes) => write("error", message, attributes),
};
