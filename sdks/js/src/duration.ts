/**
 * Durations and dates as Trigger.dev writes them (`"30s"`, `"1h30m"`, `"2d"`, a number of seconds, a
 * `Date`), turned into the milliseconds the WIT takes. Pure: it never calls the host, so a bad value
 * is an `Error` thrown at the call that passed it.
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** `"1h30m"`, `"45s"`, `"2d"`, `"1w"`, `"250ms"` → milliseconds. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = part.exec(trimmed)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = part.lastIndex;
  }
  if (trimmed === "" || matched !== trimmed.length) {
    throw new Error(
      `"${text}" is not a duration: write it like "30s", "15m", "1h30m", "2d" or "1w"`,
    );
  }
  return Math.round(total);
}

/** A Trigger.dev duration: a string (`"1h"`) or a number of seconds. */
export type Duration = string | number;

/** Milliseconds of a duration given as a string or a number of seconds. */
export function durationMs(value: Duration, what: string): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`${what} must be a non-negative number of seconds, got ${value}`);
    }
    return Math.round(value * 1000);
  }
  if (typeof value === "string") return parseDuration(value);
  throw new Error(`${what} must be a duration string like "1h" or a number of seconds`);
}

/**
 * Milliseconds from now until `value` (a `Date`), or of a duration (string or seconds). The clock
 * is read only for a `Date`: each reading is a journal entry of the run.
 */
export function delayMs(value: Duration | Date, what: string): number {
  if (value instanceof Date) {
    const at = value.getTime();
    if (Number.isNaN(at)) throw new Error(`${what} is an invalid Date`);
    return Math.max(0, at - Date.now());
  }
  return durationMs(value, what);
}

/** Milliseconds as the WIT's `u64`. */
export function u64(ms: number): bigint {
  return BigInt(Math.max(0, Math.round(ms)));
}
