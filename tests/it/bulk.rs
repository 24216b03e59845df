//! Bulk actions: a cancel or replay of runs fixed when made, done in the background in batches,
//! counted, abortable, carried on after a restart.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

/// `count` delayed runs of `echo` with `tag`, made in one batch request.
async fn delayed(host: &TestHost, count: usize, tag: &str) -> Vec<String> {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({ "payload": i, "options": { "delay": "1h", "tags": [tag] } }))
        .collect();
    let (status, body) = host
        .post("/api/v1/tasks/echo/batch", json!({ "items": items }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

async fn settled(host: &TestHost, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, action) = host.get(&format!("/api/v1/bulk-actions/{id}")).await;
        assert_eq!(status, 200, "{action}");
        if action["status"] != "PENDING" {
            return action;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck: {action}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(host: &TestHost, body: Value) -> String {
    let (status, created) = host.post("/api/v1/bulk-actions", body).await;
    assert_eq!(status, 202, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_cancel_by_filter_does_every_matching_run_in_batches_and_counts_them() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let ids = delayed(&host, 250, "many").await;
    let bystander = delayed(&host, 1, "other").await.remove(0);
    let id = create(
        &host,
        json!({ "action": "cancel", "filter": { "tag": "many", "status": ["DELAYED"] }, "name": "all of them" }),
    )
    .await;
    let done = settled(&host, &id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["name"], "all of them");
    assert_eq!(
        done["counts"],
        json!({ "total": 250, "success": 250, "failure": 0 })
    );
    assert!(done["completedAt"].is_string());
    for run in [&ids[0], &ids[249]] {
        assert_eq!(host.run(run).await["status"], "CANCELED");
    }
    assert_eq!(host.run(&bystander).await["status"], "DELAYED");
    // A run that already finished counts as a failure; a replay makes a new run of each.
    let id = create(&host, json!({ "action": "cancel", "runIds": [&ids[0]] })).await;
    assert_eq!(
        settled(&host, &id).await["counts"],
        json!({ "total": 1, "success": 0, "failure": 1 })
    );
    let id = create(
        &host,
        json!({ "action": "replay", "runIds": [&ids[0], &ids[1]] }),
    )
    .await;
    assert_eq!(
        settled(&host, &id).await["counts"],
        json!({ "total": 2, "success": 2, "failure": 0 })
    );
    // The replays keep the originals' tags, so they are the newest runs with it.
    let (_, list) = host.get("/api/v1/runs?filter[tag]=many&page[size]=3").await;
    let newest: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.iter().any(|i| i == newest[0] || i == newest[1]),
        "{newest:?}"
    );
    assert!(ids.iter().any(|i| i == newest[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_bulk_action_stops_after_its_batch_and_a_finished_one_cannot_be() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    delayed(&host, 300, "abort").await;
    let id = create(
        &host,
        json!({ "action": "cancel", "filter": { "tag": "abort" } }),
    )
    .await;
    let (status, body) = host
        .post(&format!("/api/v1/bulk-actions/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "id": id }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, action) = host.get(&format!("/api/v1/bulk-actions/{id}")).await;
    assert_eq!(action["status"], "ABORTED");
    let counts = &action["counts"];
    assert_eq!(counts["total"], 300);
    let done = counts["success"].as_u64().unwrap() + counts["failure"].as_u64().unwrap();
    assert!(done < 300, "it stopped: {action}");
    let (_, still) = host
        .get("/api/v1/runs?filter[tag]=abort&filter[status]=DELAYED&page[size]=100")
        .await;
    assert!(!still["data"].as_array().unwrap().is_empty());

    // Aborting again, or a completed action, is a final 409.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/bulk-actions/{id}/abort", host.url))
        .bearer_auth(&host.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let (status, _) = host
        .post("/api/v1/bulk-actions/bulk_nope/abort", json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_a_stop_interrupted_is_carried_on_at_the_next_start() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    delayed(&host, 300, "restart").await;
    let id = create(
        &host,
        json!({ "action": "cancel", "filter": { "tag": "restart" } }),
    )
    .await;
    let dir = host.dir.clone();
    let temp = host.stop().await;
    let db = crate::support::StoredDb::open(&dir).await;
    let stopped_at: (String, i64) = (
        db.one("SELECT status FROM bulk_actions", &[]).await,
        db.one("SELECT processed FROM bulk_actions", &[]).await,
    );
    drop(db);
    // Three batches with pauses between them: the stop came before the last.
    assert_eq!(stopped_at.0, "PENDING", "{stopped_at:?}");
    assert!(stopped_at.1 < 300);
    let host = TestHost::start_in(&dir, Options::default()).await;
    let done = settled(&host, &id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(
        done["counts"],
        json!({ "total": 300, "success": 300, "failure": 0 }),
        "every run counted once"
    );
    host.stop().await;
    drop(temp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_are_refused_as_trigger_dev_refuses_them() {
    let host = TestHost::start().await;
    let ids: Vec<String> = (0..501).map(|i| format!("run_{i}")).collect();
    for (body, needle) in [
        (
            json!({ "action": "cancel" }),
            "Exactly one of filter or runIds must be provided",
        ),
        (
            json!({ "action": "cancel", "runIds": ["run_1"], "filter": { "tag": "a" } }),
            "Exactly one of filter or runIds must be provided",
        ),
        (
            json!({ "action": "cancel", "filter": {} }),
            "At least one filter must be provided",
        ),
        (
            json!({ "action": "cancel", "runIds": ids }),
            "Too many runIds (501). Maximum is 500. Use a filter to select more runs.",
        ),
        (
            json!({ "action": "delete", "runIds": ["run_1"] }),
            "`action`",
        ),
        (
            json!({ "action": "cancel", "filter": { "schedule": "sched_1" } }),
            "filter.schedule is not supported",
        ),
    ] {
        let (status, error) = host.post("/api/v1/bulk-actions", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (status, _) = host.get("/api/v1/bulk-actions/bulk_nope").await;
    assert_eq!(status, 404);
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let id = create(&host, json!({ "action": "cancel", "runIds": ["run_x"] })).await;
    let (status, _) = host
        .request_as(
            &other,
            Method::GET,
            &format!("/api/v1/bulk-actions/{id}"),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "another environment's action does not exist for this key"
    );
}
