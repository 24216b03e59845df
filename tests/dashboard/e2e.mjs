// The dashboard's end-to-end test in Debian's headless Chromium, driven by playwright-core.
// `tests/it/dashboard.rs` starts a host with the example tasks, makes the data this script looks
// for, and runs it with KILN_E2E (JSON) saying where everything is. One browser, one page.
//
// It signs in (a wrong key first), finds a failed run by filter, reads a crashed run's error and
// logs, completes a wait token from the run page and watches the run finish live, pauses a
// queue, uploads a component, saves a screenshot of each main page, and then — signed in with
// another environment's key — checks that no response of any page carries the first
// environment's data.

import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cfg = JSON.parse(process.env.KILN_E2E);
const started = Date.now();
const log = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function api(path, key, init = {}) {
  const res = await fetch(cfg.url + path, { ...init, headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...(init.headers || {}) } });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

mkdirSync(cfg.shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "kiln-dashboard-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: cfg.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1360, height: 900 },
});
const page = browser.pages()[0] || (await browser.newPage());
page.setDefaultTimeout(15000);
const crashes = [];
page.on("pageerror", (e) => crashes.push(e.message));

const dash = (path = "") => `${cfg.url}/dashboard/${path}`;
async function shot(name) {
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(cfg.shots, `${name}.png`), fullPage: true });
  log(`screenshot ${name}.png`);
}
async function signIn(key) {
  await page.goto(dash());
  await page.fill("input[name=key]", key);
  await page.click("form button[type=submit]");
}
async function signOut() {
  await page.click("#who button");
  await page.waitForSelector("input[name=key]");
}
async function nav(label) {
  await page.click(`#nav a:text-is("${label}")`);
}
const rowOf = (text) => page.locator("table.data tbody tr", { hasText: text });

try {
  // ---- sign-in: a wrong key gets a clear message, the dev key signs in ----
  await signIn("tr_dev_this_is_not_a_key");
  await page.waitForSelector(".signin .error-box");
  const refused = await page.textContent(".signin .error-box");
  check(refused.includes("refused") && refused.includes("unknown or revoked"), `a wrong key is refused clearly: ${refused}`);
  check(await page.evaluate(() => sessionStorage.length) === 0, "a refused key is not kept");
  log("a wrong key is refused");
  await page.fill("input[name=key]", cfg.devKey);
  await page.click("form button[type=submit]");
  await page.waitForSelector("#who strong:text-is('dev')");
  await page.waitForFunction(() => document.querySelectorAll(".chart svg, .chart .empty").length >= 3);
  check(await page.locator(".chart rect[data-series=FAILED]").count() > 0, "the runs chart shows the failed run");
  check(await page.locator(".chart rect[data-task=approve], .chart rect[data-task=fail]").count() > 0, "the durations chart shows tasks");
  await shot("overview");

  // ---- find the failed run by filter ----
  await nav("Runs");
  await page.waitForSelector("table.data tbody tr");
  await page.click(".status-picker summary");
  await page.check(".status-picker input[value=FAILED]");
  await page.click(".status-picker summary");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/status=FAILED/);
  await rowOf(cfg.runs.failed).waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll("table.data tbody .badge")].every((b) => b.textContent === "FAILED"));
  check(await rowOf(cfg.runs.crashed).count() === 0, "the FAILED filter leaves the crashed run out");
  await shot("runs");
  log("the FAILED filter finds the failed run");

  // ---- a crashed run: its error and logs ----
  await page.click(".status-picker summary");
  await page.uncheck(".status-picker input[value=FAILED]");
  await page.check(".status-picker input[value=CRASHED]");
  await page.click(".status-picker summary");
  await page.fill("form.filters input[name=task]", "panic");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/status=CRASHED.*task=panic/);
  await page.click(`a:has(code:text-is("${cfg.runs.crashed}"))`);
  await page.waitForURL(new RegExp(`/dashboard/runs/${cfg.runs.crashed}$`));
  await page.waitForSelector(".run-error");
  const error = await page.textContent(".run-error");
  check(error.includes("TASK_RUN_CRASHED") && error.includes("panicked on purpose"), `the run's error is shown: ${error}`);
  await page.waitForSelector(".logs tr.log");
  const logs = await page.textContent(".logs");
  check(logs.includes("panicked on purpose") && (await page.locator(".logs .lvl-ERROR").count()) > 0, `the run's logs are shown with levels: ${logs}`);
  check(await page.locator(".timeline li[data-type=RETRY]").count() === 1, "the timeline shows the retry");
  check(await page.locator(".timeline li[data-type=FINISHED]").count() === 1, "the timeline shows the end");
  await shot("run-crashed");
  log("the crashed run's error, logs and timeline are shown");

  // ---- complete a token from the run page; the run finishes live ----
  const streams = [];
  page.on("request", (r) => {
    if (r.url().includes(`/realtime/v1/runs/${cfg.runs.waiting}`) && r.headers().accept === "text/event-stream") streams.push(r.url());
  });
  await page.goto(dash(`runs/${cfg.runs.waiting}`));
  await page.waitForSelector(".run-status:text-is('WAITING')");
  await page.waitForSelector(".timeline li[data-type=WAITING]");
  await page.fill(".waitpoint textarea[name=data]", '{"approved": true, "by": "the dashboard test"}');
  await page.click(".waitpoint button:text-is('Complete token')");
  await page.waitForSelector(".run-status:text-is('COMPLETED')", { timeout: 20000 });
  check(streams.length > 0, "the run page follows the realtime stream");
  await page.waitForSelector(".timeline li[data-type=RESUMED]");
  const output = await page.textContent(".row:has(h2:text-is('Output'))");
  check(output.includes("approved") && output.includes("the dashboard test"), `the output holds the token's data: ${output}`);
  await shot("run-completed");
  log("the token was completed and the run finished live");

  // ---- pause a queue ----
  await nav("Queues");
  const echo = page.locator("tr.queue-row", { has: page.locator("strong:text-is('echo')") });
  await echo.locator("button:text-is('Pause')").click();
  await echo.locator(".badge:text-is('PAUSED')").waitFor();
  check((await api("/api/v1/queues/echo?type=task", cfg.devKey)).paused === true, "the queue is paused in the host");
  await shot("queues");
  log("the echo queue is paused");

  // ---- upload a component ----
  await nav("Tasks");
  await page.waitForSelector(".latest-version");
  const before = await page.textContent(".latest-version");
  await page.setInputFiles("input[type=file][name=component]", cfg.wasm);
  await page.waitForSelector(".upload-status .deployed", { timeout: 30000 });
  const deployed = await page.textContent(".upload-status .deployed");
  const latest = await api("/api/v1/deployments/latest", cfg.devKey);
  check(latest.version !== before && deployed.includes(latest.version), `the upload deployed a new version: ${deployed}`);
  await page.waitForSelector(`.latest-version:text-is('${latest.version}')`);
  await shot("tasks");
  log(`uploaded: ${deployed}`);

  // ---- the other pages ----
  await nav("Schedules");
  await rowOf(cfg.scheduleTask).first().waitFor();
  await shot("schedules");
  await nav("Wait tokens");
  await page.waitForSelector("table.data tbody tr");
  await shot("tokens");
  await nav("Environment variables");
  const variable = rowOf(cfg.devVar.name);
  await variable.waitFor();
  check(!(await page.textContent("main")).includes(cfg.devVar.value), "a variable's value is hidden until asked");
  await variable.locator("button:text-is('Show')").click();
  await variable.locator(`.revealed:text-is('${cfg.devVar.value}')`).waitFor();
  await shot("env-vars");
  log("schedules, tokens and variables are shown");

  // ---- the admin's pages ----
  await signOut();
  await signIn(cfg.adminKey);
  await page.waitForSelector("#who .badge:text-is('admin')");
  await rowOf("acme").waitFor();
  await shot("admin-projects");
  await nav("Environments");
  await rowOf("acme / prod").waitFor();
  await shot("admin-environments");
  await nav("Keys");
  await rowOf("acme / prod").first().waitFor();
  await shot("admin-keys");
  log("the admin sees projects, environments and keys");

  // ---- tenants: with acme/prod's key, nothing of default/dev in any page or request ----
  await signOut();
  const seen = [];
  page.on("response", async (res) => {
    if (!res.url().startsWith(cfg.url)) return;
    if ((res.headers()["content-type"] || "").includes("text/event-stream")) return;
    // A redirect or a 304 (an asset the browser revalidated) has no body to read.
    let body = "";
    try { body = await res.text(); } catch { /* nothing to check */ }
    seen.push({ url: res.url(), status: res.status(), body });
  });
  await signIn(cfg.otherKey);
  await page.waitForSelector("#who strong:text-is('prod')");
  await page.waitForFunction(() => document.querySelectorAll(".chart svg, .chart .empty").length >= 3);
  await nav("Runs");
  await rowOf(cfg.other.run).waitFor();
  await page.click(`a:has(code:text-is("${cfg.other.run}"))`);
  await page.waitForSelector(".run-status:text-is('COMPLETED')");
  await page.waitForSelector(".timeline li[data-type=FINISHED]");
  await page.goto(dash(`runs/${cfg.runs.waiting}`));
  await page.waitForSelector("main .error-box");
  check((await page.textContent("main .error-box")).includes("not found"), "another environment's run is not found");
  for (const [label, ready] of [["Tasks", ".latest-version"], ["Queues", "tr.queue-row"], ["Schedules", "main .card"],
    ["Wait tokens", "table.data tbody tr"], ["Environment variables", `code:text-is('${cfg.other.var}')`], ["Overview", ".chart svg, .chart .empty"]]) {
    await nav(label);
    await page.waitForSelector(ready);
    await page.waitForTimeout(400);
  }
  await page.waitForTimeout(500);
  check(seen.some((r) => r.body.includes(cfg.other.run)), "the other environment sees its own runs");
  check(seen.some((r) => r.url.includes("/dashboard/assets/")), "asset requests were checked too");
  for (const r of seen) {
    for (const mark of cfg.marks) {
      // An answer may repeat what its own request named ("run `run_…` not found").
      if (r.url.includes(mark)) continue;
      check(!r.body.includes(mark), `acme/prod's ${r.url} shows default/dev's ${mark}`);
    }
  }
  log(`tenants: ${seen.length} responses to acme/prod's pages hold none of ${cfg.marks.length} marks of default/dev`);

  check(crashes.length === 0, `no script error in the page: ${crashes.join("; ")}`);
  log("all checks passed");
} catch (e) {
  await page.screenshot({ path: join(cfg.shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`${e.stack || e}\n(at ${page.url()}; page errors: ${crashes.join("; ") || "none"})`);
  process.exitCode = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
