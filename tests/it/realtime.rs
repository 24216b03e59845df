//! Realtime: run changes as Server-Sent Events, for one run or for runs with tags.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TestHost, guests};

/// Reads `event: run` payloads from an SSE response until `stop` holds for one (returned last)
/// or the stream ends.
async fn events(resp: reqwest::Response, stop: impl Fn(&Value) -> bool) -> (Vec<Value>, bool) {
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let (mut buffer, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time");
        let Some(chunk) = chunk else {
            return (out, true);
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let done = stop(&value);
            out.push(value);
            if done {
                return (out, false);
            }
        }
    }
}

async fn subscribe(host: &TestHost, key: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", host.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_changes_until_it_finishes() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("approve", json!({})).await;
    host.wait_status(&id, "WAITING").await;
    let path = format!("/realtime/v1/runs/{id}");
    // Many subscribers share one watch of the run.
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        subscribers.push(subscribe(&host, &host.key, &path).await);
    }
    let (_, list) = host.get("/api/v1/waitpoints/tokens").await;
    let token = list["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = host
        .post(
            &format!("/api/v1/waitpoints/tokens/{token}/complete"),
            json!({ "data": "ok" }),
        )
        .await;
    assert_eq!(status, 200);
    for resp in subscribers {
        let (seen, ended) = events(resp, |_| false).await;
        assert!(ended, "the stream ends once the run has finished");
        assert_eq!(
            seen[0]["status"], "WAITING",
            "the current state comes first"
        );
        let last = seen.last().unwrap();
        assert_eq!(last["status"], "COMPLETED", "{seen:#?}");
        assert_eq!(last["output"]["data"], "ok");
        assert_eq!(last["id"], id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_final_state_and_the_stream_ends() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("echo", json!("done")).await;
    host.wait_final(&id).await;
    let resp = subscribe(&host, &host.key, &format!("/realtime/v1/runs/{id}")).await;
    let (seen, ended) = events(resp, |_| false).await;
    assert!(ended);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0]["output"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_a_tag_stream_as_they_change() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let before = host
        .trigger_with("echo", json!(1), json!({ "tags": ["watched"] }))
        .await;
    host.wait_final(&before).await;
    let resp = subscribe(&host, &host.key, "/realtime/v1/runs?tags=watched,other").await;
    let later = host
        .trigger_with("echo", json!(2), json!({ "tags": ["other"] }))
        .await;
    host.trigger_with("echo", json!(3), json!({ "tags": ["unwatched"] }))
        .await;
    let (seen, _) = events(resp, |r| {
        r["id"] == later.as_str() && r["status"] == "COMPLETED"
    })
    .await;
    assert_eq!(seen[0]["id"], before.as_str(), "current runs come first");
    assert!(
        seen.iter().all(|r| r["tags"] != json!(["unwatched"])),
        "{seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_environments_run_cannot_be_watched() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("echo", json!(1)).await;
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let resp = subscribe(&host, &other, &format!("/realtime/v1/runs/{id}")).await;
    assert_eq!(resp.status(), 404);
    let resp = subscribe(&host, &host.key, "/realtime/v1/runs").await;
    assert_eq!(resp.status(), 400);
}
