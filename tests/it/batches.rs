//! Two-phase batches (Trigger.dev's v3 batch API): made with a run count, items streamed as
//! NDJSON and deduplicated by index, sealed when every index is in, read with their runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestHost, guests};

/// Streams `lines` (each a JSON item) as the SDK does; returns the status and answer.
async fn stream(host: &TestHost, batch: &str, lines: &[Value]) -> (u16, Value) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    send(host, batch, body, "application/x-ndjson").await
}

async fn send(host: &TestHost, batch: &str, body: String, content_type: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v3/batches/{batch}/items", host.url))
        .bearer_auth(&host.key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(host: &TestHost, body: Value) -> Value {
    let (status, batch) = host.post("/api/v3/batches", body).await;
    assert_eq!(status, 202, "{batch}");
    batch
}

fn item(index: u32, name: &str) -> Value {
    json!({ "index": index, "task": "hello", "payload": { "name": name } })
}

/// Reads the batch until `done` holds for it.
async fn batch_until(host: &TestHost, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, batch) = host.get(&format!("/api/v2/batches/{id}")).await;
        assert_eq!(status, 200, "{batch}");
        if done(&batch) {
            return batch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch stuck: {batch:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_takes_each_index_once_and_is_sealed_when_every_index_is_in() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let batch = create(
        &host,
        json!({ "runCount": 2, "taskIdentifiers": ["hello"] }),
    )
    .await;
    let id = batch["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"), "{batch}");
    assert_eq!(
        (&batch["runCount"], &batch["isCached"]),
        (&json!(2), &json!(false))
    );
    assert_eq!(
        host.get(&format!("/api/v2/batches/{id}")).await.1["status"],
        "PENDING"
    );

    // A stream that ends short: not sealed, and the client sends the whole stream again.
    let (status, answer) = stream(&host, id, &[item(0, "A")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "id": id, "itemsAccepted": 1, "itemsDeduplicated": 0, "sealed": false, "enqueuedCount": 1, "expectedCount": 2 })
    );
    let (_, answer) = stream(&host, id, &[item(0, "A"), item(1, "B")]).await;
    assert_eq!(
        answer,
        json!({ "id": id, "itemsAccepted": 1, "itemsDeduplicated": 1, "sealed": true })
    );
    // A sealed batch takes nothing more, and says so without an error.
    let (status, answer) = stream(&host, id, &[item(1, "C")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "id": id, "itemsAccepted": 0, "itemsDeduplicated": 0, "sealed": true })
    );

    let done = batch_until(&host, id, |b| b["status"] == "COMPLETED").await;
    assert_eq!(done["runCount"], 2);
    assert_eq!(done["processing"]["errors"], json!([]));
    assert!(done["processing"]["completedAt"].is_string());
    let runs: Vec<&str> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut outputs = Vec::new();
    for run in &runs {
        let run = host.wait_final(run).await;
        assert_eq!(run["batchId"], id);
        outputs.push(run["output"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outputs,
        ["Hello, A!", "Hello, B!"],
        "one run per index, in index order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limits_and_refusals_are_trigger_devs() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let (status, error) = host
        .post("/api/v3/batches", json!({ "runCount": 1001 }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        error["error"],
        "Batch runCount of 1001 exceeds maximum allowed of 1000."
    );
    let (status, _) = host.post("/api/v3/batches", json!({ "runCount": 0 })).await;
    assert_eq!(status, 400);

    let batch = create(&host, json!({ "runCount": 2 })).await;
    let id = batch["id"].as_str().unwrap();
    let (status, _) = send(&host, id, format!("{}\n", item(0, "A")), "application/json").await;
    assert_eq!(status, 415, "items come as NDJSON");
    let (status, error) = stream(&host, id, &[item(2, "A")]).await;
    assert_eq!(status, 422);
    assert_eq!(error["error"], "Item index 2 exceeds batch runCount 2");
    let (status, error) = stream(
        &host,
        id,
        &[json!({ "index": 0, "task": "hello", "options": { "nope": 1 } })],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid item at index 0"),
        "{error}"
    );
    let (status, error) = stream(&host, "batch_unknown", &[item(0, "A")]).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (422, Some("Batch batch_unknown not found"))
    );

    // A payload over the limit fails its item, not the stream.
    let big = "x".repeat(3 * 1024 * 1024 + 1);
    let (status, answer) = stream(
        &host,
        id,
        &[
            item(0, "A"),
            json!({ "index": 1, "task": "echo", "payload": big }),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sealed"], true);
    let done = batch_until(&host, id, |b| b["status"] == "PARTIAL_FAILED").await;
    assert_eq!(done["runs"].as_array().unwrap().len(), 1);
    assert_eq!(done["processing"]["errors"][0]["index"], 1);
    assert_eq!(
        done["processing"]["errors"][0]["errorCode"],
        "PAYLOAD_TOO_LARGE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_idempotency_key_returns_the_same_batch_and_one_request_batches_still_work() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let body = json!({ "runCount": 1, "idempotencyKey": "9d8d", "idempotencyKeyOptions": { "key": "batch-key", "scope": "global" } });
    let first = create(&host, body.clone()).await;
    let again = create(&host, body).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["isCached"], true);
    assert_eq!(again["idempotencyKey"], "9d8d");
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        host.get(&format!("/api/v2/batches/{id}")).await.1["idempotencyKey"],
        "batch-key"
    );

    // The one-request batch of one task is read the same way.
    let (status, old) = host
        .post(
            "/api/v1/tasks/hello/batch",
            json!({ "items": [{ "payload": { "name": "x" } }, { "payload": { "name": "y" } }] }),
        )
        .await;
    assert_eq!(status, 200, "{old}");
    let id = old["batchId"].as_str().unwrap();
    let done = batch_until(&host, id, |b| b["status"] == "COMPLETED").await;
    assert_eq!(done["runs"], old["runs"]);
}
