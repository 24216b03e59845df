//! Runs end to end: trigger → dequeue → attempt(s) → final status, through the HTTP API.

use serde_json::json;

use crate::support::{Options, TestHost, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_completes_with_output_logs_and_usage() {
    let host = TestHost::start().await;
    let deployment = host.deploy(guests::HELLO).await;
    let run_id = host.trigger("hello", json!({ "name": "Ada" })).await;
    assert!(run_id.starts_with("run_"), "{run_id}");

    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["output"], json!({ "message": "Hello, Ada!" }));
    assert_eq!(run["payload"], json!({ "name": "Ada" }));
    assert_eq!(run["isSuccess"], true);
    assert_eq!(run["isFailed"], false);
    assert_eq!(run["version"], deployment["version"]);
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["attempts"][0]["status"], "COMPLETED");
    assert!(
        run["usage"]["fuel"].as_u64().unwrap() > 0,
        "fuel is counted: {run:#}"
    );
    assert_eq!(run["usage"]["fuel"], run["attempts"][0]["usage"]["fuel"]);
    assert!(run["startedAt"].is_string() && run["finishedAt"].is_string());

    let (_, logs) = host.get(&format!("/api/v1/runs/{run_id}/logs")).await;
    let lines: Vec<(&str, &str)> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&("INFO", "greeting Ada")), "{lines:?}");
    assert!(lines.contains(&("INFO", "hello from stdout")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_and_then_succeeds() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run_id = host.trigger("flaky", json!(null)).await;
    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attemptCount"], 2);
    assert_eq!(run["output"], json!({ "attempt": 2 }));
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "FAILED");
    assert_eq!(
        attempts[0]["error"]["message"],
        "attempt 1 failed on purpose"
    );
    assert_eq!(attempts[1]["status"], "COMPLETED");
    assert!(
        run.get("error").is_none(),
        "a run that succeeded carries no error: {run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_retried_until_attempts_run_out() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run_id = host.trigger("fail", json!(null)).await;
    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["attemptCount"], 2, "the task allows 2 attempts");
    assert_eq!(run["error"]["message"], "failed on purpose");
    assert_eq!(run["isFailed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fails_after_one_attempt() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run_id = host.trigger("abort", json!(null)).await;
    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["message"], "aborted on purpose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_crashes_the_run_not_the_host() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run_id = host.trigger("panic", json!(null)).await;
    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "CRASHED", "{run:#}");
    assert_eq!(run["error"]["code"], "TASK_RUN_CRASHED");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked on purpose"),
        "the panic message is in the error: {message}"
    );
    assert_eq!(
        run["attemptCount"], 2,
        "a crash is retried per the task's policy"
    );

    // The host is unaffected: the next run completes.
    let ok = host.trigger("hello", json!({ "name": "again" })).await;
    assert_eq!(host.wait_final(&ok).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_the_task_cannot_parse_fails_without_retry() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run_id = host.trigger("hello", json!({ "name": 42 })).await;
    let run = host.wait_final(&run_id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["name"], "TaskPayloadParsedError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_queued_and_executing_runs() {
    let host = TestHost::start_with(Options {
        concurrency: 1,
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    let busy = host.trigger("spin", json!({ "ms": 60_000 })).await;
    host.wait_status(&busy, "EXECUTING").await;
    let queued = host.trigger("hello", json!({ "name": "never" })).await;
    assert_eq!(host.run(&queued).await["status"], "QUEUED");

    let (status, body) = host
        .post(&format!("/api/v2/runs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], queued.as_str());
    let run = host.run(&queued).await;
    assert_eq!(run["status"], "CANCELED");
    assert_eq!(run["isCancelled"], true);
    assert_eq!(run["attemptCount"], 0);

    // The executing run is interrupted, well before its 60 s spin ends.
    let (status, _) = host
        .post(&format!("/api/v2/runs/{busy}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let run = host
        .wait_for(&busy, "attempt canceled", |r| {
            r["attempts"][0]["status"] == "CANCELED"
        })
        .await;
    assert_eq!(run["status"], "CANCELED");

    // The slot is free again, and canceling a finished run changes nothing.
    let next = host.trigger("hello", json!({ "name": "next" })).await;
    assert_eq!(host.wait_final(&next).await["status"], "COMPLETED");
    let (status, body) = host
        .post(&format!("/api/v2/runs/{next}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already finished"),
        "{body}"
    );
    assert_eq!(host.run(&next).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_filters_and_pages_newest_first() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            host.trigger("hello", json!({ "name": format!("n{i}") }))
                .await,
        );
    }
    let failed = host.trigger("abort", json!(null)).await;
    for id in ids.iter().chain([&failed]) {
        host.wait_final(id).await;
    }

    let (status, page) = host.get("/api/v1/runs?page[size]=2").await;
    assert_eq!(status, 200, "{page}");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], failed.as_str(), "newest first");
    assert_eq!(data[1]["id"], ids[4].as_str());
    assert_eq!(data[0]["env"]["name"], "dev");
    let next = page["pagination"]["next"].as_str().unwrap();
    let (_, page2) = host
        .get(&format!("/api/v1/runs?page[size]=2&page[after]={next}"))
        .await;
    let data2 = page2["data"].as_array().unwrap();
    assert_eq!(data2[0]["id"], ids[3].as_str());
    assert_eq!(data2[1]["id"], ids[2].as_str());
    let previous = page2["pagination"]["previous"].as_str().unwrap();
    let (_, back) = host
        .get(&format!(
            "/api/v1/runs?page[size]=2&page[before]={previous}"
        ))
        .await;
    assert_eq!(
        back["data"][0]["id"],
        failed.as_str(),
        "paging back returns the first page"
    );

    let (_, only_failed) = host.get("/api/v1/runs?filter[status]=FAILED").await;
    let data = only_failed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], failed.as_str());

    let (_, by_task) = host
        .get("/api/v1/runs?filter[taskIdentifier]=hello&filter[status]=COMPLETED,FAILED")
        .await;
    assert_eq!(by_task["data"].as_array().unwrap().len(), 5);
    assert!(by_task["pagination"]["next"].is_null());

    let (status, body) = host.get("/api/v1/runs?filter[status]=DONE").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`DONE` is not a run status"),
        "{body}"
    );
}
