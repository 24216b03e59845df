/**
 * `idempotencyKeys.create`: Trigger.dev's keys for child triggers and wait tokens, hashed the way
 * Trigger.dev hashes them (SHA-256 of the parts and the scope joined with `-`). Scoped to the run
 * by default, so a replay or a retry of the parent finds the same child instead of making another;
 * `"attempt"` scopes it to one attempt, `"global"` to nothing. Pure: no host call.
 */

import { currentContext } from "./current.js";

/** A key made by `idempotencyKeys.create` (a plain string works too). */
export type IdempotencyKey = string & { readonly __idempotencyKey?: true };

export interface CreateIdempotencyKeyOptions {
  scope?: "run" | "attempt" | "global";
}

function scopeParts(scope: "run" | "attempt" | "global"): string[] {
  const ctx = currentContext();
  if (ctx === undefined || scope === "global") return [];
  return [scope === "run" ? ctx.run.id : ctx.attempt.id];
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export const idempotencyKeys = {
  async create(key: string | string[], options: CreateIdempotencyKeyOptions = {}): Promise<IdempotencyKey> {
    const parts = [...(Array.isArray(key) ? key : [key]), ...scopeParts(options.scope ?? "run")];
    return (await sha256Hex(parts.join("-"))) as IdempotencyKey;
  },
};
