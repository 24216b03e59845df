// The smallest task: a typed payload in, a typed output out, a log line on the way.
import { logger, task } from "@kiln-run/sdk";

export const hello = task({
  id: "hello",
  description: "Greets someone by name",
  run: async (payload: { name?: string } | null, { ctx }) => {
    const name = payload?.name ?? "world";
    logger.info("greeting", { name, attempt: ctx.attempt.number });
    return { message: `Hello, ${name}!` };
  },
});
