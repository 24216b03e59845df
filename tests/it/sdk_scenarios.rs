//! What the TypeScript and the Python example components must both do through a real host: the
//! examples declare the same tasks (`examples/js/src`, `examples/python/tasks`), so one set of
//! scenarios checks both SDKs. Each scenario triggers its own runs and asserts on them; the
//! language tests (`js`, `python`) run them together against one host, because a deploy of
//! these components takes many seconds.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Options, TestHost};

/// Waits over this checkpoint (the examples' `nap` waits 1 s).
pub const WAIT_THRESHOLD: Duration = Duration::from_millis(200);

/// A host for an example component: waits over 200 ms checkpoint, room for parents and children.
pub async fn host() -> TestHost {
    TestHost::start_with(Options {
        concurrency: 8,
        wait_threshold: Some(WAIT_THRESHOLD),
        ..Options::default()
    })
    .await
}

/// Deploys the component; returns the deployed tasks by id.
pub async fn deploy(host: &TestHost, component: Vec<u8>) -> Value {
    // Through `kiln deploy`, as a user does: a component this big reports its upload, then the
    // host's compile in the background, until the version is stored.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("tasks.wasm");
    std::fs::write(&file, component).expect("write the component");
    let (url, key) = (host.url.clone(), host.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("deploy")
            .arg(&file)
            .env("KILN_API_URL", url)
            .env("KILN_SECRET_KEY", key)
            .output()
            .expect("kiln runs")
    })
    .await
    .expect("kiln deploy");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "kiln deploy failed: {stdout}{stderr}");
    assert!(stdout.contains("deployed version"), "{stdout}");
    // The quick tier compiles it in about a second: the compile or the `definitions()` call
    // that follows shows, naming the file.
    for needle in ["uploading", "tasks.wasm…"] {
        assert!(
            stderr.contains(needle),
            "kiln deploy's progress should say {needle:?}: {stderr}"
        );
    }
    let (status, latest) = host.get("/api/v1/deployments/latest").await;
    assert_eq!(status, 200, "{latest}");
    let mut tasks = serde_json::Map::new();
    for t in latest["tasks"].as_array().expect("tasks") {
        tasks.insert(t["id"].as_str().expect("task id").to_owned(), t.clone());
    }
    Value::Object(tasks)
}

/// The task settings the examples declare reach the host.
pub fn definitions_are_deployed(tasks: &Value) {
    for id in [
        "hello",
        "nap",
        "approval",
        "square",
        "fan-out",
        "fetch-status",
        "flaky",
        "always-fails",
        "abort",
        "progress",
        "parent",
        "nightly",
        "env-greeting",
    ] {
        assert!(tasks.get(id).is_some(), "task {id} is deployed: {tasks:#}");
    }
    assert_eq!(tasks["flaky"]["maxAttempts"], 3, "{tasks:#}");
    assert_eq!(tasks["always-fails"]["maxAttempts"], 2, "{tasks:#}");
    assert_eq!(
        tasks["nightly"]["schedule"]["cron"], "0 3 * * *",
        "{tasks:#}"
    );
    assert!(
        tasks["hello"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Greets someone by name")),
        "{tasks:#}"
    );
}

async fn completed(host: &TestHost, task: &str, payload: Value) -> Value {
    let id = host.trigger(task, payload).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{task}: {run:#}");
    run
}

async fn logs(host: &TestHost, run: &Value) -> Vec<Value> {
    let id = run["id"].as_str().expect("run id");
    let (status, body) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("log lines").clone()
}

pub async fn hello_completes_with_its_output_and_a_structured_log_line(host: &TestHost) {
    let run = completed(host, "hello", json!({ "name": "Ada" })).await;
    assert_eq!(run["output"], json!({ "message": "Hello, Ada!" }));
    let lines = logs(host, &run).await;
    let greeting = lines
        .iter()
        .find(|l| l["message"] == "greeting")
        .unwrap_or_else(|| panic!("a `greeting` line: {lines:#?}"));
    assert_eq!(greeting["level"], "INFO");
    assert_eq!(greeting["attributes"]["name"], "Ada", "{greeting}");
    assert_eq!(greeting["attributes"]["attempt"], 1, "{greeting}");

    let run = completed(host, "hello", Value::Null).await;
    assert_eq!(run["output"], json!({ "message": "Hello, world!" }));
}

pub async fn a_thrown_error_fails_the_attempt_and_is_retried_by_the_policy(host: &TestHost) {
    let run = completed(host, "flaky", json!({})).await;
    assert_eq!(run["output"], json!({ "attempt": 2 }), "{run:#}");
    assert_eq!(run["attemptCount"], 2, "{run:#}");
    let first = &run["attempts"][0];
    assert_eq!(first["status"], "FAILED", "{run:#}");
    assert!(
        first["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("attempt 1 failed on purpose")),
        "{run:#}"
    );

    let id = host.trigger("always-fails", json!({})).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(
        run["attemptCount"], 2,
        "retried once by its policy: {run:#}"
    );
    let error = &run["error"];
    assert_eq!(
        error["name"], "PaymentDeclined",
        "the error's own class: {run:#}"
    );
    assert_eq!(error["message"], "card declined on purpose", "{run:#}");
    assert!(
        error["stackTrace"]
            .as_str()
            .is_some_and(|s| s.contains("always") || s.contains("always_fails")),
        "the stack names the task's code: {run:#}"
    );
}

pub async fn an_abort_fails_the_run_without_a_retry(host: &TestHost) {
    let id = host.trigger("abort", json!({})).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["attemptCount"], 1, "an abort is never retried: {run:#}");
    assert_eq!(run["error"]["name"], "AbortTaskRunError", "{run:#}");
    assert_eq!(run["error"]["message"], "aborted on purpose", "{run:#}");
}

/// `nap` reads the clock and randomness, logs them, waits 1 s (a checkpoint here) and returns
/// them: the replay must give back the same readings and not log the line twice.
/// `clock_unit_ms` is 1 for a clock in milliseconds (JS), 1000 for seconds (Python).
pub async fn a_long_wait_checkpoints_and_the_replay_continues_from_it(
    host: &TestHost,
    clock_unit_ms: f64,
) {
    let id = host.trigger("nap", json!({ "seconds": 1 })).await;
    let waiting = host.wait_status(&id, "WAITING").await;
    assert_eq!(waiting["waitpoints"][0]["type"], "DATETIME", "{waiting:#}");
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attemptCount"], 1, "a wait is no new attempt: {run:#}");

    let out = &run["output"];
    let waited_ms =
        (out["after"].as_f64().unwrap() - out["before"].as_f64().unwrap()) * clock_unit_ms;
    assert!(waited_ms >= 1000.0, "waited {waited_ms} ms: {run:#}");

    let lines = logs(host, &run).await;
    let before: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "before the wait")
        .collect();
    assert_eq!(before.len(), 1, "the replay does not log again: {lines:#?}");
    // The first execution logged what it read; the replay returned it: the same values.
    assert_eq!(before[0]["attributes"]["random"], out["random"], "{run:#}");
    assert_eq!(before[0]["attributes"]["before"], out["before"], "{run:#}");
}

/// A component this large is deployed on the quick tier (Winch) and its optimized code replaces
/// it in the background: a run that checkpointed on the quick code resumes on the optimized one
/// and completes as if nothing changed, and the optimized code's artifact is written.
pub async fn the_quick_tiers_code_is_replaced_and_a_run_checkpointed_on_it_resumes(
    host: &TestHost,
    tasks: &Value,
) {
    let digest = tasks["approval"]["component"]
        .as_str()
        .expect("the task's component")
        .to_owned();
    assert_eq!(
        host.is_optimized(&digest),
        Some(false),
        "deployed on the quick tier"
    );
    let id = host
        .trigger("approval", json!({ "key": "across-tiers" }))
        .await;
    let waiting = host.wait_status(&id, "WAITING").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while host.is_optimized(&digest) != Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "the optimized code never replaced the quick tier's"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let artifact = std::fs::read_dir(host.dir.join("compiled"))
        .expect("the artifacts' directory")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with(&digest));
    assert!(artifact, "the optimized code's artifact is written");
    approve(host, &id, &waiting, "Cy").await;
}

/// Completes the token the `approval` run `id` waits for, approved by `by`, and checks the run
/// completes with it.
async fn approve(host: &TestHost, id: &str, waiting: &Value, by: &str) {
    let token = waiting["waitpoints"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the run waits for a token: {waiting:#}"))
        .to_owned();
    let (status, body) = host
        .post(
            &format!("/api/v1/waitpoints/tokens/{token}/complete"),
            json!({ "data": { "approved": true, "by": by } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = host.wait_final(id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(
        run["output"],
        json!({ "token": token, "approved": true, "by": by }),
        "{run:#}"
    );
}

pub async fn a_token_completed_over_the_api_resumes_the_run_with_its_data(host: &TestHost) {
    let id = host
        .trigger("approval", json!({ "key": "approve-me" }))
        .await;
    let waiting = host.wait_status(&id, "WAITING").await;
    approve(host, &id, &waiting, "Ada").await;

    // A token nobody completes times out: an error value for the task, not a failed run.
    let run = completed(host, "approval", json!({ "timeout": "1s" })).await;
    assert_eq!(run["output"]["timedOut"], true, "{run:#}");
    assert_eq!(run["output"]["error"], "WaitpointTimeoutError", "{run:#}");
}

pub async fn child_runs_give_the_parent_their_outputs_and_errors(host: &TestHost) {
    let run = completed(host, "parent", json!({ "name": "Ada" })).await;
    let out = &run["output"];
    assert_eq!(out["greeting"], "Hello, Ada!", "{run:#}");
    assert_eq!(
        out["failed"],
        json!({ "name": "PaymentDeclined", "message": "card declined on purpose" }),
        "a failed child is a value: {run:#}"
    );
    assert_eq!(out["childSteps"], 2, "{run:#}");
    assert!(
        out["unwrapError"]
            .as_str()
            .is_some_and(|e| e.starts_with("SubtaskUnwrapError") && e.contains("card declined")),
        "{run:#}"
    );
    // `idempotencyKeys.create("unwrap")` is Trigger.dev's run-scoped key: SHA-256 of the key and
    // the run id joined with `-`, the same on every replay of the parent.
    let scoped = format!("unwrap-{}", run["id"].as_str().unwrap());
    let expected_key: String = Sha256::digest(scoped.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(out["unwrapKey"], expected_key.as_str(), "{run:#}");
    // Its `progress` child changed the parent's and the root's metadata.
    let expected = json!({ "childrenDone": 1, "touchedByChild": true });
    assert_eq!(out["metadata"], expected, "{run:#}");
    assert_eq!(run["metadata"], expected, "{run:#}");
}

pub async fn metadata_changes_apply_in_order_to_the_run(host: &TestHost) {
    // Without a parent, a run is its own parent and root.
    let run = completed(host, "progress", json!({})).await;
    let expected = json!({
        "status": "started",
        "steps": 2,
        "log": ["b"],
        "childrenDone": 1,
        "touchedByChild": true,
    });
    assert_eq!(run["output"]["steps"], 2, "{run:#}");
    assert_eq!(run["output"]["all"], expected, "{run:#}");
    assert_eq!(run["metadata"], expected, "the API shows it: {run:#}");
}

pub async fn a_fan_out_waits_for_every_child_in_order(host: &TestHost) {
    let run = completed(host, "fan-out", json!({ "numbers": [1, 2, 3, 4] })).await;
    let out = &run["output"];
    assert_eq!(out["squares"], json!([1, 4, 9, 16]), "{run:#}");
    assert_eq!(out["sum"], 30, "{run:#}");
    assert_eq!(out["children"].as_array().map(Vec::len), Some(4), "{run:#}");
    assert_eq!(
        out["metadata"],
        json!({ "status": "done", "squared": 4 }),
        "{run:#}"
    );
    for child in out["children"].as_array().unwrap() {
        let child = host.run(child.as_str().unwrap()).await;
        assert_eq!(child["parentRunId"], run["id"], "{child:#}");
    }
}

/// `fetch-status` GETs a loopback server the environment allows, then a host it does not.
pub async fn http_reaches_an_allowed_host_and_is_refused_elsewhere(host: &TestHost) {
    let app = Router::new().route("/hello", get(|| async { "hello from the test server" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (status, env) = host
        .request_as(
            &host.admin_key(),
            Method::PUT,
            "/api/v1/admin/environments/default/dev",
            Some(json!({ "allowedOutboundHosts": [format!("http://127.0.0.1:{}", addr.port())] })),
        )
        .await;
    assert_eq!(status, 200, "{env}");

    let run = completed(
        host,
        "fetch-status",
        json!({ "url": format!("http://{addr}/hello") }),
    )
    .await;
    assert_eq!(
        run["output"],
        json!({ "status": 200, "body": "hello from the test server" }),
        "{run:#}"
    );

    let run = completed(
        host,
        "fetch-status",
        json!({ "url": "http://127.0.0.2:9/denied" }),
    )
    .await;
    assert!(run["output"]["error"].is_string(), "{run:#}");
    let lines = logs(host, &run).await;
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains("denied"))),
        "the run's log says the request was denied: {lines:#?}"
    );
}

pub async fn environment_variables_reach_the_task(host: &TestHost) {
    let (status, body) = host
        .post(
            "/api/v1/projects/default/envvars/dev",
            json!({ "name": "GREETING", "value": "hi from the environment" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = completed(host, "env-greeting", json!({})).await;
    assert_eq!(
        run["output"],
        json!({ "greeting": "hi from the environment", "viaImport": "hi from the environment" }),
        "{run:#}"
    );
}
