/**
 * `process.env`: the environment's variables, as Trigger.dev tasks read them. The JS engine has no
 * `process`; the SDK makes one whose `env` holds the run's variables (from
 * `wasi:cli/environment`), filled at the start of every `run`. They are fixed for the run when
 * it starts, so they are the same on every attempt and replay and reading them is no journal
 * entry. At build time (when the file's top level runs) `process.env` is empty.
 */

import { getEnvironment } from "wasi:cli/environment@0.2.12";

type ProcessLike = { env: Record<string, string | undefined> };

function processObject(): ProcessLike {
  const g = globalThis as { process?: ProcessLike };
  if (g.process === undefined || typeof g.process !== "object") g.process = { env: {} };
  g.process.env ??= {};
  return g.process;
}

/**
 * The run's environment variables (the same object as `process.env`), typed without Node's
 * types: `env.OPENAI_API_KEY`.
 */
export const env: Record<string, string | undefined> = processObject().env;

/** Puts the run's variables in `process.env` (replacing what was there). */
export function loadEnvironment(): void {
  for (const key of Object.keys(env)) delete env[key];
  for (const [key, value] of getEnvironment()) env[key] = value;
}
