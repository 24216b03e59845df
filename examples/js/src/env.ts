// Environment variables: `process.env`, as in Trigger.dev (set them with `kiln env set NAME VALUE`;
// a run sees the values of when it started, on every attempt and replay).
import { env, task } from "@kiln-run/sdk";

export const envGreeting = task({
  id: "env-greeting",
  description: "Returns the environment variable GREETING",
  run: async () => ({ greeting: process.env.GREETING ?? null, viaImport: env.GREETING ?? null }),
});
