// Outgoing HTTP with the standard `fetch`. kiln sends only to hosts the environment's allow-list
// names (`kiln envs set --env dev --allow-host https://api.example.com`), and journals every
// response, so a run resumed after a wait does not send its earlier requests again.
import { logger, task } from "@kiln-run/sdk";

export const fetchStatus = task({
  id: "fetch-status",
  description: "GETs a URL and returns its status and body",
  run: async ({ url }: { url: string }) => {
    try {
      const response = await fetch(url);
      const body = await response.text();
      logger.info("fetched", { url, status: response.status });
      return { status: response.status, body };
    } catch (error) {
      // A host the allow-list does not name is refused before anything is sent.
      return { error: String(error) };
    }
  },
});
