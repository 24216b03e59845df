// The page of the browser check. It does what `@trigger.dev/react-hooks` does in a web app
// (`useTaskTrigger`, `useRealtimeRun`), without React: the SDK's `ApiClient` with only a public
// token. What to do comes in the URL's fragment (JSON); the outcome goes to `window.outcome`.
//
// - `{ "mode": "subscribe", "apiUrl", "runId", "token" }`: follow the run until it finishes.
// - `{ "mode": "trigger", "apiUrl", "task", "payload", "token" }`: trigger the task with a trigger
//   token, then follow the new run with the token the trigger answered with.

import { ApiClient, stringifyIO } from "@trigger.dev/core/v3";

const status = document.getElementById("status");
const params = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const fetchErrors = [];

async function follow(runId, token) {
  const client = new ApiClient(params.apiUrl, token);
  const statuses = [];
  let last;
  const subscription = client.subscribeToRun(runId, {
    closeOnComplete: true,
    onFetchError: (error) => fetchErrors.push(String(error?.message ?? error)),
  });
  for await (const run of subscription) {
    statuses.push(run.status);
    status.textContent = run.status;
    last = run;
  }
  return { runId, statuses, output: last?.output, finishedAt: last?.finishedAt?.toISOString() };
}

async function trigger() {
  const client = new ApiClient(params.apiUrl, params.token);
  const packet = await stringifyIO(params.payload);
  const handle = await client.triggerTask(params.task, {
    payload: packet.data,
    options: { payloadType: packet.dataType },
  });
  // The trigger token was for one trigger; reading the run takes the token the host answered with.
  return follow(handle.id, handle.publicAccessToken);
}

(params.mode === "subscribe" ? follow(params.runId, params.token) : trigger()).then(
  (outcome) => {
    window.outcome = { ok: true, ...outcome, fetchErrors };
  },
  (error) => {
    status.textContent = "error";
    window.outcome = { ok: false, error: String(error?.stack ?? error), fetchErrors };
  }
);
