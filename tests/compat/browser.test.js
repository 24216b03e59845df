// The browser check: a page on another loopback origin, in headless Chromium (Debian's
// `chromium`, never a downloaded browser), uses the SDK's realtime with only a public token, as
// `@trigger.dev/react-hooks` does, and must see a run finish. Every request it makes to the host is cross-origin, so this also checks
// the host's CORS answers (preflights, allowed and exposed headers) as a browser enforces them.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { auth, tasks } from "@trigger.dev/sdk";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

import { apiUrl, finished } from "./support.js";

const here = new URL(".", import.meta.url);
const chromiumPath = process.env.KILN_CHROMIUM ?? "/usr/bin/chromium";

// The SDK's core imports a few Node modules it never uses in a page; a browser build stubs them, with
// an AsyncLocalStorage that keeps one store (a page has one flow of control).
const nodeShims = {
  name: "node-shims",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "node-shim" }));
    build.onLoad({ filter: /.*/, namespace: "node-shim" }, (args) => ({
      loader: "js",
      contents:
        args.path === "node:async_hooks"
          ? `export class AsyncLocalStorage {
               getStore() { return this.store; }
               run(store, fn, ...args) {
                 const previous = this.store;
                 this.store = store;
                 try { return fn(...args); } finally { this.store = previous; }
               }
               enterWith(store) { this.store = store; }
               disable() { this.store = undefined; }
             }`
          : "export default {};",
    }));
  },
};

let server;
let pageUrl;
let browser;

before(async () => {
  const bundle = await esbuild.build({
    entryPoints: [new URL("browser/app.js", here).pathname],
    bundle: true,
    format: "esm",
    platform: "browser",
    write: false,
    logLevel: "error",
    plugins: [nodeShims],
  });
  const script = bundle.outputFiles[0].text;
  const html = await readFile(new URL("browser/page.html", here), "utf8");
  server = createServer((req, res) => {
    const path = new URL(req.url, "http://page").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else if (path === "/app.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(script);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  pageUrl = `http://127.0.0.1:${server.address().port}/`;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
});

/** Opens the page with `params`, waits for its outcome; fails with what the browser reported. */
async function runPage(params) {
  const page = await browser.newPage();
  const reported = [];
  page.on("console", (message) => reported.push(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => reported.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) =>
    reported.push(`request failed: ${request.method()} ${request.url()} (${request.failure()?.errorText})`)
  );
  try {
    const fragment = encodeURIComponent(JSON.stringify({ apiUrl, ...params }));
    await page.goto(`${pageUrl}#${fragment}`);
    const handle = await page
      .waitForFunction(() => window.outcome, null, { timeout: 30_000 })
      .catch(() => undefined);
    const outcome = handle ? await handle.jsonValue() : undefined;
    const errors = outcome?.fetchErrors?.map((e) => `fetch error: ${e}`) ?? [];
    const what = [...errors, ...reported].slice(-20).join("\n") || "(nothing)";
    assert.ok(outcome, `the page never saw the run finish; the browser reported:\n${what}`);
    assert.ok(outcome.ok, `the page failed: ${outcome.error}\nthe browser reported:\n${what}`);
    return outcome;
  } finally {
    await page.close();
  }
}

test("a page subscribed with a read:runs public token sees the run finish", { timeout: 60_000 }, async () => {
  const handle = await tasks.trigger("spin", { ms: 1_000 });
  const token = await auth.createPublicToken({ scopes: { read: { runs: [handle.id] } } });

  const outcome = await runPage({ mode: "subscribe", runId: handle.id, token });
  assert.equal(outcome.statuses.at(-1), "COMPLETED");
  assert.deepEqual(outcome.output, { spun: 1_000 });
  assert.ok(outcome.finishedAt);
});

test("a page triggers with a trigger token and follows the run with the token it got back", { timeout: 60_000 }, async () => {
  const token = await auth.createTriggerPublicToken("hello");

  const outcome = await runPage({ mode: "trigger", task: "hello", payload: { name: "Page" }, token });
  assert.equal(outcome.statuses.at(-1), "COMPLETED");
  assert.deepEqual(outcome.output, { message: "Hello, Page!" });
  const run = await finished(outcome.runId);
  assert.equal(run.status, "COMPLETED");
});
