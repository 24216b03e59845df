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
    let status = host.complete_newest_token(json!("ok")).await;
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

/// Reads the first SSE event of a subscription and keeps the stream open.
async fn first_event(
    resp: reqwest::Response,
) -> impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> {
    assert_eq!(resp.status(), 200);
    let mut stream = Box::pin(resp.bytes_stream());
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the first event in time")
            .expect("an event")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    stream
}

/// A request of Electric's shape protocol, as the Trigger.dev SDK sends it.
async fn shape(host: &TestHost, path_and_query: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path_and_query}", host.url))
        .bearer_auth(&host.key)
        .header("x-trigger-electric-version", "1.0.0-beta.1")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} is set: {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_cost_one_read_of_what_a_commit_changed_and_nothing_for_other_commits() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    const WATCHED: usize = 20;
    let mut ids = Vec::new();
    for _ in 0..WATCHED {
        ids.push(host.trigger("approve", json!({})).await);
    }
    for id in &ids {
        host.wait_status(id, "WAITING").await;
    }
    // Every run watched over SSE, and a tags feed in Electric's protocol held live.
    let mut streams = Vec::new();
    for id in &ids {
        let resp = subscribe(&host, &host.key, &format!("/realtime/v1/runs/{id}")).await;
        streams.push(first_event(resp).await);
    }
    let (status, headers, _) = shape(&host, "/realtime/v1/runs?tags=watched&offset=-1").await;
    assert_eq!(status, 200);
    let live = format!(
        "/realtime/v1/runs?tags=watched&offset={}&handle={}&live=true",
        header(&headers, "electric-offset"),
        header(&headers, "electric-handle")
    );
    let held = tokio::spawn({
        let (url, key) = (host.url.clone(), host.key.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{url}{live}"))
                .bearer_auth(key)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Ten commits that change no run (wait tokens made over the API): each costs its request's
    // key lookup and nothing else, however many watch.
    let before = host.store_reads();
    for _ in 0..10 {
        let (status, _) = host.post("/api/v1/waitpoints/tokens", json!({})).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unrelated = host.store_reads() - before;
    assert!(
        unrelated <= 10,
        "10 requests that changed no watched run cost {unrelated} reads with {WATCHED} watchers"
    );

    // A commit that changes one watched run (a tag added): the request's own two reads, then one
    // read of the changed run for every feed and one of its attempts and waits for its SSE
    // watchers.
    let before = host.store_reads();
    let (status, _) = host
        .post(
            &format!("/api/v1/runs/{}/tags", ids[0]),
            json!({ "tags": ["t"] }),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let related = host.store_reads() - before;
    assert!(
        related <= 4,
        "a change of one watched run cost {related} reads with {WATCHED} watchers"
    );
    assert!(!held.is_finished(), "the tags feed saw nothing it watches");
    held.abort();
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_electric_protocol_gives_the_run_then_its_changes_and_resumes_from_an_offset() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger_with("approve", json!({}), json!({ "tags": ["a", "b"] }))
        .await;
    host.wait_status(&id, "WAITING").await;

    let path = format!("/realtime/v1/runs/{id}");
    let (status, headers, body) = shape(&host, &format!("{path}?log=full&offset=-1")).await;
    assert_eq!(status, 200, "{body}");
    let schema: Value = serde_json::from_str(header(&headers, "electric-schema")).unwrap();
    assert_eq!(schema["runTags"], json!({ "type": "text", "dims": 1 }));
    let (handle, offset) = (
        header(&headers, "electric-handle").to_owned(),
        header(&headers, "electric-offset").to_owned(),
    );
    assert_eq!(body.as_array().unwrap().len(), 2, "{body}");
    let row = &body[0]["value"];
    assert_eq!(body[0]["headers"]["operation"], "insert");
    assert_eq!(row["friendlyId"], id.as_str());
    assert_eq!(row["status"], "WAITING_TO_RESUME");
    assert_eq!(row["runTags"], r#"{"a","b"}"#);
    assert_eq!(row["completedAt"], Value::Null);
    assert!(!row["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body[1], json!({ "headers": { "control": "up-to-date" } }));

    // Live: held until the run changes, then the change as a full row.
    let live = format!("{path}?cursor=&handle={handle}&live=true&log=full&offset={offset}");
    let held = tokio::spawn({
        let (url, key, live) = (host.url.clone(), host.key.clone(), live.clone());
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{url}{live}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let headers = resp.headers().clone();
            (headers, resp.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !held.is_finished(),
        "a live request is held while nothing changes"
    );
    let (_, list) = host.get("/api/v1/waitpoints/tokens").await;
    let token = list["data"][0]["id"].as_str().unwrap().to_owned();
    host.post(
        &format!("/api/v1/waitpoints/tokens/{token}/complete"),
        json!({ "data": "ok" }),
    )
    .await;
    host.wait_final(&id).await;
    // The live answers until the one that shows the run finished.
    let (mut headers, mut body) = held.await.unwrap();
    loop {
        assert!(headers.contains_key("electric-cursor"));
        let last = body.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last, json!({ "headers": { "control": "up-to-date" } }));
        if body[0]["value"]["status"] == "COMPLETED_SUCCESSFULLY" {
            break;
        }
        let next = format!(
            "{path}?handle={handle}&live=true&offset={}",
            header(&headers, "electric-offset")
        );
        let (status, h, b) = shape(&host, &next).await;
        assert_eq!(status, 200);
        (headers, body) = (h, b);
    }
    assert_eq!(body[0]["headers"]["operation"], "update");
    assert!(body[0]["value"]["completedAt"].is_string(), "{body}");
    let output: Value = serde_json::from_str(body[0]["value"]["output"].as_str().unwrap()).unwrap();
    assert_eq!(output, json!({ "token": token, "data": "ok" }));

    // A resume (the old offset, not live) gets the run as it is now, with the schema.
    let (status, headers, body) =
        shape(&host, &format!("{path}?handle={handle}&offset={offset}")).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("electric-schema"));
    assert_eq!(body[0]["value"]["status"], "COMPLETED_SUCCESSFULLY");
    // An offset another process gave: the whole shape again.
    let (status, _, body) = shape(
        &host,
        &format!("{path}?handle={handle}&offset=1_1&live=true"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["headers"]["operation"], "insert");

    // A tags feed takes runs with every tag; an unknown run is a 404.
    let other = host
        .trigger_with("echo", json!(1), json!({ "tags": ["a"] }))
        .await;
    let (_, _, feed) = shape(&host, "/realtime/v1/runs?tags=a,b&offset=-1").await;
    let ids: Vec<&str> = feed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"]["friendlyId"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{other} has only one of the tags");
    let (status, _, _) = shape(&host, "/realtime/v1/runs/run_nope?offset=-1").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_holds_a_bounded_number_of_subscriptions_and_others_keep_theirs() {
    use kiln::api::realtime::MAX_SUBSCRIBERS_PER_ENVIRONMENT as CAP;
    let host = TestHost::start().await;
    let client = reqwest::Client::new();
    let open = |key: String| {
        let request = client
            .get(format!("{}/realtime/v1/runs?tags=watched", host.url))
            .bearer_auth(key)
            .send();
        async move { request.await.unwrap() }
    };
    let mut held = Vec::new();
    for _ in 0..CAP {
        let resp = open(host.key.clone()).await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    // One more is refused, with what to do; Electric long-polls count too.
    let refused = open(host.key.clone()).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(&CAP.to_string()) && message.contains("close some streams"),
        "{body}"
    );
    let (status, _) = host.get("/realtime/v1/runs?tags=watched&offset=-1").await;
    assert_eq!(status, 429);
    // Another environment is not starved by this one.
    let (_, other) = host.new_environment_key("other", "prod").await;
    let resp = open(other).await;
    assert_eq!(resp.status(), 200);
    // A client that goes gives its place back.
    held.truncate(CAP - 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = open(host.key.clone()).await;
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.stop().await;
}
