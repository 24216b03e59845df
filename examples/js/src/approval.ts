// A wait token: the run checkpoints until something outside it completes the token — an API call
// (`kiln tokens complete <id> '{"approved":true}'`) or a POST to the token's URL — or it times out.
import { logger, task, wait } from "@kiln-run/sdk";

export const approval = task({
  id: "approval",
  description: "Waits for someone to approve, or for the token to time out",
  run: async (payload: { timeout?: string; key?: string } | null) => {
    const token = await wait.createToken({
      timeout: payload?.timeout ?? "1h",
      idempotencyKey: payload?.key,
      tags: ["approval"],
    });
    logger.info("waiting for approval", { token: token.id, url: token.url });
    const result = await wait.forToken<{ approved: boolean; by?: string }>(token);
    if (!result.ok) {
      return { token: token.id, timedOut: true, error: result.error.name };
    }
    return { token: token.id, approved: result.output.approved, by: result.output.by ?? null };
  },
});
