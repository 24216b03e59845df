// The page of the browser check: the SDK's realtime, with only a public token, as a web app uses
// it. What to do comes in the URL's fragment (JSON); the outcome goes to `window.outcome`.
//
// - `{ "mode": "subscribe", "runId", "token" }`: follow the run until it finishes.
// - `{ "mode": "trigger", "task", "payload", "token" }`: trigger the task with a trigger token,
//   then follow the new run with the token the trigger answered with.

import { configure, runs, tasks } from "@trigger.dev/sdk";

const status = document.getElementById("status");
const params = JSON.parse(decodeURIComponent(location.hash.slice(1)));

async function follow(runId) {
  const statuses = [];
  let last;
  for await (const run of runs.subscribeToRun(runId)) {
    statuses.push(run.status);
    status.textContent = run.status;
    last = run;
  }
  return { runId, statuses, output: last?.output, finishedAt: last?.finishedAt?.toISOString() };
}

async function main() {
  configure({ baseURL: params.apiUrl, accessToken: params.token });
  if (params.mode === "subscribe") return follow(params.runId);
  const handle = await tasks.trigger(params.task, params.payload);
  // The trigger token was for one trigger; reading the run takes the token the host answered with.
  configure({ baseURL: params.apiUrl, accessToken: handle.publicAccessToken });
  return follow(handle.id);
}

main().then(
  (outcome) => {
    window.outcome = { ok: true, ...outcome };
  },
  (error) => {
    status.textContent = "error";
    window.outcome = { ok: false, error: String(error?.stack ?? error) };
  }
);
