// Waits: a wait longer than the host's threshold (5 s by default) checkpoints the run — it holds
// no memory and no slot meanwhile — and the run continues from the wait when the time comes.
import { logger, task, wait } from "@kiln-run/sdk";

export const nap = task({
  id: "nap",
  description: "Reads the clock and a random number, waits, and returns what it read",
  run: async (payload: { seconds?: number } | null) => {
    const before = Date.now();
    const random = Math.random();
    logger.info("before the wait", { before, random });
    await wait.for({ seconds: payload?.seconds ?? 6 });
    // On resume, everything above is replayed from the run's journal: `before` and `random`
    // come back the same, and the log line is not written twice.
    return { before, random, after: Date.now() };
  },
});
