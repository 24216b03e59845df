/**
 * `wait`: time waits and wait tokens over `kiln:task/wait`, in Trigger.dev's shapes
 * (`wait.for({ seconds })`, `wait.until({ date })`, `wait.createToken`, `wait.forToken<T>`).
 *
 * The host's calls are synchronous: a short wait sleeps in place, a long one checkpoints the run
 * (the call never returns in this execution; the run is replayed from the start later, and this
 * call then returns at once). The functions return promises only to keep Trigger.dev's API, so
 * `await` them. A wait must be reached the same way on every replay.
 */

import { createToken as hostCreateToken, forDuration, forToken as hostForToken, until } from "kiln:task/wait@0.1.0";
import type { TokenError } from "kiln:task/wait@0.1.0";
import { delayMs, durationMs, u64 } from "./duration.js";
import { importErrorPayload, WaitpointTimeoutError } from "./errors.js";

/** How long `wait.for` waits; the parts add up. */
export interface WaitForOptions {
  seconds?: number;
  minutes?: number;
  hours?: number;
  days?: number;
  weeks?: number;
  months?: number;
  years?: number;
}

const PART_MS: Record<keyof WaitForOptions, number> = {
  seconds: 1_000,
  minutes: 60_000,
  hours: 3_600_000,
  days: 86_400_000,
  weeks: 604_800_000,
  months: 2_629_800_000,
  years: 31_557_600_000,
};

export interface WaitUntilOptions {
  date: Date;
  /** Throw instead of returning when `date` has passed. */
  throwIfInThePast?: boolean;
}

export interface CreateTokenOptions {
  /** When the token times out: a duration (`"10m"`) or a `Date` (default: never). */
  timeout?: string | Date;
  /** A live token made with the same key is returned instead of a new one. */
  idempotencyKey?: string;
  /** How long the key stays live (`"1h"`; default 30 days). */
  idempotencyKeyTTL?: string;
  tags?: string | string[];
}

/** A wait token (Trigger.dev's `WaitpointToken`). */
export interface WaitpointToken {
  /** `waitpoint_…`: complete it with `POST /api/v1/waitpoints/tokens/{id}/complete`. */
  id: string;
  /** POST JSON here to complete the token without a secret key. */
  url: string;
  /** The idempotency key matched an earlier token. */
  isCached: boolean;
  /** Always empty: kiln has no public access tokens. */
  publicAccessToken: string;
}

/** How waiting for a token ended: its data, or `WaitpointTimeoutError`. */
export type WaitpointTokenTypedResult<T> =
  | { ok: true; output: T }
  | { ok: false; error: Error };

/** `wait.forToken`'s promise, with `unwrap()`: the data, or a throw on timeout. */
export interface WaitpointPromise<T> extends Promise<WaitpointTokenTypedResult<T>> {
  unwrap(): Promise<T>;
}

function tokenErrorMessage(thrown: unknown): Error {
  const payload = importErrorPayload(thrown) as TokenError | undefined;
  if (payload && typeof payload === "object" && "tag" in payload) {
    return payload.tag === "timed-out"
      ? new WaitpointTimeoutError(payload.val)
      : new Error(payload.val);
  }
  return thrown instanceof Error ? thrown : new Error(String(thrown));
}

function tags(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return typeof value === "string" ? [value] : [...value];
}

export const wait = {
  /** Waits for the sum of the given parts: `wait.for({ minutes: 5 })`. */
  async for(options: WaitForOptions): Promise<void> {
    let ms = 0;
    for (const [part, unit] of Object.entries(PART_MS) as [keyof WaitForOptions, number][]) {
      const n = options[part];
      if (n === undefined) continue;
      if (typeof n !== "number" || !Number.isFinite(n) || n < 0) {
        throw new Error(`wait.for: ${part} must be a non-negative number, got ${String(n)}`);
      }
      ms += n * unit;
    }
    forDuration(u64(ms));
  },

  /** Waits until `date` (returns at once if it has passed, unless `throwIfInThePast`). */
  async until(options: WaitUntilOptions): Promise<void> {
    const at = options.date.getTime();
    if (Number.isNaN(at)) throw new Error("wait.until: date is an invalid Date");
    if (options.throwIfInThePast && at < Date.now()) {
      throw new Error(`wait.until: ${options.date.toISOString()} is in the past`);
    }
    until(u64(at));
  },

  /** Makes a wait token. Made once: a replay of the run gets the same token. */
  async createToken(options: CreateTokenOptions = {}): Promise<WaitpointToken> {
    const timeoutMs =
      options.timeout === undefined ? undefined : delayMs(options.timeout, "timeout");
    let token;
    try {
      token = hostCreateToken({
        timeoutMs: timeoutMs === undefined ? undefined : u64(timeoutMs),
        idempotencyKey: options.idempotencyKey,
        idempotencyKeyTtlMs:
          options.idempotencyKeyTTL === undefined
            ? undefined
            : u64(durationMs(options.idempotencyKeyTTL, "idempotencyKeyTTL")),
        tags: tags(options.tags),
      });
    } catch (e) {
      throw tokenErrorMessage(e);
    }
    return { id: token.id, url: token.url, isCached: token.isCached, publicAccessToken: "" };
  },

  /**
   * Waits until the token is completed (`{ ok: true, output }`) or times out
   * (`{ ok: false, error }`). Checkpoints the run unless the token is already done. An unknown
   * token id throws.
   */
  forToken<T = unknown>(token: string | { id: string }): WaitpointPromise<T> {
    const id = typeof token === "string" ? token : token.id;
    const result = (async (): Promise<WaitpointTokenTypedResult<T>> => {
      let data: string;
      try {
        data = hostForToken(id);
      } catch (e) {
        const error = tokenErrorMessage(e);
        if (error instanceof WaitpointTimeoutError) return { ok: false, error };
        throw error;
      }
      return { ok: true, output: JSON.parse(data) as T };
    })();
    return Object.assign(result, {
      async unwrap(): Promise<T> {
        const r = await result;
        if (r.ok) return r.output;
        throw r.error;
      },
    });
  },
};
