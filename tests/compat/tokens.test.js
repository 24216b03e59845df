// Public access tokens through the official SDK. `auth.createPublicToken` asks the host for
// claims (`POST /api/v1/auth/jwt/claims`), then signs an HS256 JWT with the secret key itself;
// the host must check that signature, the token's expiry and its scopes.

import assert from "node:assert/strict";
import { test } from "node:test";

import { auth, batch, envvars, runs, tasks, wait } from "@trigger.dev/sdk";

import {
  environmentSlug,
  failure,
  finished,
  projectRef,
  readSubscription,
  unique,
} from "./support.js";

const check = (name, fn) => test(name, { timeout: 60_000 }, fn);

const as = (accessToken, fn) => auth.withAuth({ accessToken }, fn);

/** The JWT's claims, read without checking it. */
function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString("utf8"));
}

check("auth.createPublicToken makes an HS256 JWT with the host's claims and the scopes", async () => {
  const token = await auth.createPublicToken({ scopes: { read: { runs: ["run_x"] } } });
  const header = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString("utf8"));
  assert.equal(header.alg, "HS256");
  const body = claims(token);
  assert.equal(body.pub, true);
  assert.equal(typeof body.sub, "string");
  assert.deepEqual(body.scopes, ["read:runs:run_x"]);
  assert.ok(body.exp > Date.now() / 1000);
});

check("a read:runs token reads its run and is refused another", async () => {
  const mine = await tasks.trigger("hello", { name: "Scoped" });
  const other = await tasks.trigger("hello", { name: "Other" });
  await finished(mine.id);
  await finished(other.id);
  const token = await auth.createPublicToken({ scopes: { read: { runs: [mine.id] } } });

  const run = await as(token, () => runs.retrieve(mine.id));
  assert.deepEqual(run.output, { message: "Hello, Scoped!" });

  const refused = await failure(as(token, () => runs.retrieve(other.id)));
  assert.equal(refused.status, 403, refused.message);
});

check("a read:runs token subscribes to its run until it finishes", async () => {
  const handle = await tasks.trigger("spin", { ms: 300 });
  const token = await auth.createPublicToken({ scopes: { read: { runs: [handle.id] } } });
  const subscription = await as(token, async () => runs.subscribeToRun(handle.id));
  const seen = await readSubscription(subscription, () => false);
  assert.equal(seen.at(-1).status, "COMPLETED");
  assert.deepEqual(seen.at(-1).output, { spun: 300 });
});

check("a read:tags token reads and subscribes to runs with that tag only", async () => {
  const tag = unique("pub-tag");
  const tagged = await tasks.trigger("hello", { name: "Tagged" }, { tags: [tag] });
  const untagged = await tasks.trigger("hello", { name: "Untagged" });
  await finished(untagged.id);
  const token = await auth.createPublicToken({ scopes: { read: { tags: [tag] } } });

  const subscription = await as(token, async () => runs.subscribeToRunsWithTag(tag));
  const seen = await readSubscription(subscription, (run) => run.status === "COMPLETED");
  assert.equal(seen.at(-1).id, tagged.id);

  assert.equal((await as(token, () => runs.retrieve(tagged.id))).id, tagged.id);
  const refused = await failure(as(token, () => runs.retrieve(untagged.id)));
  assert.equal(refused.status, 403, refused.message);
});

check("a read:batch token reads its batch and subscribes to it", async () => {
  const handle = await tasks.batchTrigger("hello", [{ payload: { name: "PB" } }]);
  const token = await auth.createPublicToken({ scopes: { read: { batch: [handle.batchId] } } });

  const retrieved = await as(token, () => batch.retrieve(handle.batchId));
  assert.equal(retrieved.id, handle.batchId);

  const subscription = await as(token, async () => runs.subscribeToBatch(handle.batchId));
  const seen = await readSubscription(subscription, (run) => run.status === "COMPLETED");
  assert.deepEqual(seen.at(-1).output, { message: "Hello, PB!" });

  const other = await tasks.batchTrigger("hello", [{ payload: { name: "Nope" } }]);
  const refused = await failure(as(token, () => batch.retrieve(other.batchId)));
  assert.equal(refused.status, 403, refused.message);
});

check("an expired public token is refused with 401", async () => {
  const handle = await tasks.trigger("hello", {});
  const token = await auth.createPublicToken({
    scopes: { read: { runs: [handle.id] } },
    expirationTime: Math.floor(Date.now() / 1000) - 60,
  });
  const refused = await failure(as(token, () => runs.retrieve(handle.id)));
  assert.equal(refused.status, 401, refused.message);
});

check("a public token whose claims were altered is refused with 401", async () => {
  const handle = await tasks.trigger("hello", {});
  const token = await auth.createPublicToken({ scopes: { read: { runs: ["run_someone_else"] } } });
  const [header, , signature] = token.split(".");
  const forged = { ...claims(token), scopes: [`read:runs:${handle.id}`] };
  const body = Buffer.from(JSON.stringify(forged)).toString("base64url");
  const refused = await failure(as(`${header}.${body}.${signature}`, () => runs.retrieve(handle.id)));
  assert.equal(refused.status, 401, refused.message);
});

check("a public token is refused the routes only a secret key may call", async () => {
  const token = await auth.createPublicToken({ scopes: { read: { runs: true } } });
  const refused = await failure(as(token, () => envvars.list(projectRef, environmentSlug)));
  assert.equal(refused.status, 401, refused.message);
});

check("a read:runs token without an id reads any run of the environment", async () => {
  const handle = await tasks.trigger("hello", { name: "Any" });
  await finished(handle.id);
  const token = await auth.createPublicToken({ scopes: { read: { runs: true } } });
  const run = await as(token, () => runs.retrieve(handle.id));
  assert.deepEqual(run.output, { message: "Hello, Any!" });
});

check("auth.createTriggerPublicToken triggers its task once", async () => {
  const token = await auth.createTriggerPublicToken("hello");
  const handle = await as(token, () => tasks.trigger("hello", { name: "Browser" }));
  const run = await finished(handle.id);
  assert.deepEqual(run.output, { message: "Hello, Browser!" });

  // One-time use is the default.
  const again = await failure(as(token, () => tasks.trigger("hello", { name: "Twice" })));
  assert.equal(again.status, 422, again.message);
});

check("a multiple-use trigger token triggers its task again and no other task", async () => {
  const token = await auth.createTriggerPublicToken("hello", { multipleUse: true });
  const first = await as(token, () => tasks.trigger("hello", { name: "M1" }));
  const second = await as(token, () => tasks.trigger("hello", { name: "M2" }));
  assert.notEqual(first.id, second.id);

  const refused = await failure(as(token, () => tasks.trigger("echo", {})));
  assert.equal(refused.status, 403, refused.message);
});

check("a wait token's publicAccessToken completes that token", async () => {
  const token = await wait.createToken({ timeout: "1h" });
  assert.equal(typeof token.publicAccessToken, "string");
  const completed = await as(token.publicAccessToken, () =>
    wait.completeToken(token.id, { from: "browser" })
  );
  assert.equal(completed.success, true);

  const done = await wait.retrieveToken(token.id);
  assert.equal(done.status, "COMPLETED");
  assert.deepEqual(done.output, { from: "browser" });

  const other = await wait.createToken({ timeout: "1h" });
  const refused = await failure(as(token.publicAccessToken, () => wait.completeToken(other.id, {})));
  assert.equal(refused.status, 403, refused.message);
});
