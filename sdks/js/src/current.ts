/**
 * The context of the attempt being run, for the SDK's own use (idempotency key scopes). Set by
 * `runtime.ts` when an attempt starts; `undefined` outside one (at build time).
 */

import type { Context } from "./context.js";

let current: Context | undefined;

export function currentContext(): Context | undefined {
  return current;
}

export function setCurrentContext(ctx: Context | undefined): void {
  current = ctx;
}
