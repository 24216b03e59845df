//! The web dashboard in a real browser: a host with the example tasks, two environments with
//! data, and `tests/dashboard/e2e.mjs` driving Debian's headless Chromium through the pages
//! (playwright-core, pinned by `tests/dashboard/package-lock.json`; no browser is downloaded).
//! Screenshots of the main pages land in `<target>/dashboard-screenshots/`.
//!
//! A missing Chromium, `node` or `npm` fails the test saying what to install; it never skips.
//! The HTTP side of the dashboard (its files, the session check, the chart endpoints) is tested
//! here too, without a browser.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHost, guest_path, guests};

/// Debian's Chromium (`apt-get install -y chromium`); `KILN_CHROMIUM` may name another.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser script may take this long before it is stopped.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// A marker in the first environment's data that no response to the second may contain.
const MARKER: &str = "dev-only-marker-7f3a";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("KILN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    assert!(
        path.exists(),
        "Chromium is missing at {}: the dashboard's browser tests drive Debian's chromium package; install it with `apt-get install -y chromium`",
        path.display()
    );
    path
}

/// `tests/dashboard/` copied to `<target>/dashboard-tests/` with `npm ci` run there when its lock
/// file changed (the checkout is never written to). Returns the script's path.
fn browser_script() -> PathBuf {
    let source = repo().join("tests/dashboard");
    let work = target_dir().join("dashboard-tests");
    std::fs::create_dir_all(&work).expect("the browser test's work dir");
    for file in ["package.json", "package-lock.json", "e2e.mjs"] {
        std::fs::copy(source.join(file), work.join(file))
            .unwrap_or_else(|e| panic!("cannot copy tests/dashboard/{file}: {e}"));
    }
    let lock = std::fs::read(source.join("package-lock.json")).expect("the lock file");
    let mut hasher = DefaultHasher::new();
    lock.hash(&mut hasher);
    let stamp = format!("{:x}", hasher.finish());
    let stamp_file = work.join("node_modules/.kiln-lock-stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(stamp.as_str()) {
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(&work)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run npm ({e}): the dashboard's browser tests need Node.js 20+ with npm"
                )
            });
        assert!(
            output.status.success(),
            "npm ci (tests/dashboard) failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp_file, stamp).expect("the lock stamp");
    }
    work.join("e2e.mjs")
}

/// The first id in a list response.
fn first_id(body: &Value) -> String {
    body["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium_and_shows_each_key_its_own_environment_only() {
    let chromium = chromium();
    let script = browser_script();
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let (status, body) = host
        .upload_as(&other, crate::support::guest(guests::HELLO))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // default/dev: a failed run, a crashed one, one waiting for a token, and marked data.
    let failed = host.trigger("fail", json!({})).await;
    let crashed = host.trigger("panic", json!({})).await;
    let marked = host
        .trigger_with(
            "echo",
            json!({ "note": MARKER }),
            json!({ "tags": [MARKER], "idempotencyKey": MARKER }),
        )
        .await;
    let waiting = host.trigger("approve", json!({})).await;
    assert_eq!(host.wait_final(&failed).await["status"], "FAILED");
    assert_eq!(host.wait_final(&crashed).await["status"], "CRASHED");
    host.wait_final(&marked).await;
    host.wait_status(&waiting, "WAITING").await;
    let (_, token) = host
        .post("/api/v1/waitpoints/tokens", json!({ "tags": [MARKER] }))
        .await;
    let (status, schedule) = host
        .post(
            "/api/v1/schedules",
            json!({ "task": "echo", "cron": "0 9 * * *", "externalId": MARKER, "deduplicationKey": MARKER }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    let dev_var = json!({ "name": "DEV_ONLY_VARIABLE", "value": format!("{MARKER}-value") });
    let (status, _) = host
        .post("/api/v1/projects/default/envvars/dev", dev_var.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, session) = host.get("/api/v1/dashboard/session").await;
    let (_, queues) = host.get("/api/v1/queues?perPage=100").await;
    let (_, deployments) = host.get("/api/v1/deployments").await;

    // acme/prod: a run and a variable of its own.
    let other_run = {
        let (status, body) = host
            .request_as(
                &other,
                reqwest::Method::POST,
                "/api/v1/tasks/hello/trigger",
                Some(json!({ "payload": { "name": "Bea" } })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let (status, _) = host
        .request_as(
            &other,
            reqwest::Method::POST,
            "/api/v1/projects/acme/envvars/prod",
            Some(json!({ "name": "PROD_VARIABLE", "value": "prod" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = host
        .request_as(
            &other,
            reqwest::Method::POST,
            "/api/v1/waitpoints/tokens",
            Some(json!({ "tags": ["prod"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = host
            .request_as(
                &other,
                reqwest::Method::GET,
                &format!("/api/v3/runs/{other_run}"),
                None,
            )
            .await;
        if run["isCompleted"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "acme/prod's run never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What acme/prod must never see: default/dev's ids and markers.
    let mut marks = vec![
        MARKER.to_owned(),
        "DEV_ONLY_VARIABLE".to_owned(),
        failed.clone(),
        crashed.clone(),
        marked.clone(),
        waiting.clone(),
        token["id"].as_str().unwrap().to_owned(),
        schedule["id"].as_str().unwrap().to_owned(),
        session["environment"]["id"].as_str().unwrap().to_owned(),
        first_id(&deployments),
    ];
    marks.extend(
        queues["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["id"].as_str().unwrap().to_owned()),
    );

    let shots = target_dir().join("dashboard-screenshots");
    let config = json!({
        "url": host.url,
        "chromium": chromium,
        "shots": shots,
        "devKey": host.key,
        "otherKey": other,
        "adminKey": host.admin_key(),
        "wasm": guest_path(guests::HELLO),
        "runs": { "failed": failed, "crashed": crashed, "waiting": waiting },
        "scheduleTask": "echo",
        "devVar": dev_var,
        "other": { "run": other_run, "var": "PROD_VARIABLE" },
        "marks": marks,
    });
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(&script)
        .env("KILN_E2E", config.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): the dashboard's browser tests need Node.js 20+")
        });
    // The host serves the browser from this runtime: wait without blocking it.
    let status = loop {
        if let Some(status) = child.try_wait().expect("the browser script's status") {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            break child.wait().expect("the stopped browser script");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = child
        .wait_with_output()
        .expect("the browser script's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        status.success(),
        "the browser test failed after {:.1} s ({status}); screenshots in {}:\n{stdout}\n{stderr}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    println!(
        "the browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for page in [
        "overview",
        "runs",
        "run-completed",
        "tasks",
        "queues",
        "admin-keys",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary_and_holds_no_data() {
    let host = TestHost::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(format!("{}/", host.url)).send().await.unwrap();
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()["location"], "/dashboard/");
    // Every dashboard address loads the same page, without a key, and with a strict policy.
    let index = http
        .get(format!("{}/dashboard/", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let page = index.text().await.unwrap();
    let deep = http
        .get(format!("{}/dashboard/runs/run_whatever", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deep.text().await.unwrap(), page);
    let js = http
        .get(format!("{}/dashboard/assets/app.js", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = js.headers()["etag"].clone();
    let again = http
        .get(format!("{}/dashboard/assets/app.js", host.url))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let missing = http
        .get(format!("{}/dashboard/assets/nope.js", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_says_whose_key_it_is_and_refuses_a_wrong_one_clearly() {
    let host = TestHost::start().await;
    let (status, body) = host.get("/api/v1/dashboard/session").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "environment");
    assert_eq!(body["environment"]["project"], "default");
    assert_eq!(body["environment"]["environment"], "dev");
    let (_, admin) = host
        .request_as(
            &host.admin_key(),
            reqwest::Method::GET,
            "/api/v1/dashboard/session",
            None,
        )
        .await;
    assert_eq!(admin, json!({ "kind": "admin" }));
    let (status, body) = host
        .request_as(
            "tr_dev_wrong",
            reqwest::Method::GET,
            "/api/v1/dashboard/session",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown or revoked"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_count_runs_by_status_queue_depth_and_durations_per_task() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let ok = host.trigger("hello", json!({ "name": "Ada" })).await;
    let bad = host.trigger("fail", json!({})).await;
    host.wait_final(&ok).await;
    host.wait_final(&bad).await;
    // A paused queue keeps its runs queued, so the depth chart has something to show.
    let (status, _) = host
        .post(
            "/api/v1/queues/echo/pause",
            json!({ "type": "task", "action": "pause" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        host.trigger("echo", json!({})).await;
    }

    let (status, runs) = host.get("/api/v1/stats/runs?window=15m&bucket=1m").await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    let buckets = runs["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 15);
    let total = |status: &str| -> u64 {
        buckets
            .iter()
            .map(|b| b["counts"][status].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (total("COMPLETED"), total("FAILED"), total("QUEUED")),
        (1, 1, 3)
    );

    let (_, depth) = host.get("/api/v1/stats/queues?window=15m&bucket=1m").await;
    assert_eq!(depth["total"].as_array().unwrap().last().unwrap(), 3);
    assert_eq!(depth["queues"][0]["name"], "task/echo");

    let (_, durations) = host.get("/api/v1/stats/durations").await;
    let tasks: Vec<&str> = durations["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert!(
        tasks.contains(&"hello") && tasks.contains(&"fail"),
        "{durations}"
    );

    let (status, body) = host.get("/api/v1/stats/runs?window=30d").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = host.get("/api/v1/stats/runs?window=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_timeline_and_tree_tell_its_life_and_stay_in_its_environment() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let flaky = host.trigger("flaky", json!({})).await;
    assert_eq!(host.wait_final(&flaky).await["status"], "COMPLETED");
    let (status, timeline) = host.get(&format!("/api/v1/runs/{flaky}/timeline")).await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    let kinds: Vec<&str> = timeline["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "TRIGGERED",
            "ATTEMPT_STARTED",
            "ATTEMPT_ENDED",
            "RETRY",
            "ATTEMPT_STARTED",
            "ATTEMPT_ENDED",
            "FINISHED"
        ]
    );
    assert!(timeline["data"][3]["delayMs"].as_u64().unwrap() >= 100);

    let parent = host
        .trigger(
            "parent",
            json!({ "items": [["echo", 1], ["echo", 2]], "wait": true }),
        )
        .await;
    assert_eq!(host.wait_final(&parent).await["status"], "COMPLETED");
    let (_, tree) = host.get(&format!("/api/v1/runs/{parent}/tree")).await;
    let nodes = tree["data"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{tree}");
    assert_eq!(nodes[0]["id"], parent.as_str());
    let child = nodes[1]["id"].as_str().unwrap();
    let (_, from_child) = host.get(&format!("/api/v1/runs/{child}/tree")).await;
    assert_eq!(
        from_child["data"], tree["data"],
        "a child sees the same tree"
    );
    let (_, timeline) = host.get(&format!("/api/v1/runs/{parent}/timeline")).await;
    let waits: Vec<&Value> = timeline["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "WAITING" || m["type"] == "RESUMED")
        .collect();
    assert_eq!(waits.len(), 2, "{timeline}");
    assert_eq!(waits[0]["wait"]["type"], "RUN");
    assert_eq!(waits[0]["wait"]["runIds"].as_array().unwrap().len(), 2);

    let (_, other) = host.new_environment_key("acme", "prod").await;
    for path in [
        format!("/api/v1/runs/{parent}/timeline"),
        format!("/api/v1/runs/{parent}/tree"),
    ] {
        let (status, _) = host
            .request_as(&other, reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}
