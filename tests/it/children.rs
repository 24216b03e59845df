//! Child runs: `batch-trigger` and `batch-trigger-and-wait` from a task. The parent checkpoints
//! while its children run, resumes with their results in order (a failed child is a value), and
//! never triggers a child twice — not on replay, not after a restart.

use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

async fn list_children(host: &TestHost, parent: &str) -> Vec<Value> {
    let (_, runs) = host.get("/api/v1/runs?page[size]=100").await;
    let mut children = Vec::new();
    for r in runs["data"].as_array().unwrap() {
        let run = host.run(r["id"].as_str().unwrap()).await;
        if run["parentRunId"] == parent {
            children.push(run);
        }
    }
    children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_waits_for_its_children_and_gets_their_results_in_order() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger(
            "parent",
            json!({
                "items": [["spin", { "ms": 300 }], ["echo", "second"], ["abort", null], ["echo", { "n": 4 }]],
                "wait": true,
            }),
        )
        .await;
    let waiting = host.wait_status(&id, "WAITING").await;
    assert_eq!(waiting["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(waiting["waitpoints"][0]["type"], "RUN", "{waiting:#}");
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let out = run["output"].as_array().unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["ok"], json!({ "spun": 300 }));
    assert_eq!(out[1]["ok"], "second");
    assert_eq!(
        out[2]["error"], "aborted on purpose",
        "a failed child is a value"
    );
    assert_eq!(out[3]["ok"], json!({ "n": 4 }));
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1);

    assert!(run["version"].is_string(), "{run:#}");
    let children = list_children(&host, &id).await;
    assert_eq!(children.len(), 4, "each child triggered once");
    for child in &children {
        assert_eq!(child["rootRunId"], id.as_str());
        assert_eq!(child["depth"], 1);
        assert_eq!(
            child["version"], run["version"],
            "children run on the parent's version"
        );
        assert!(out.iter().any(|o| o["id"] == child["id"]));
    }
    // The parent's log lines before the wait were not written again on replay.
    let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    let lines: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["triggering 4 children", "all 4 children ended"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_does_not_wait_returns_its_childrens_ids() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["echo", 1], ["echo", 2]], "wait": false }),
        )
        .await;
    let run = host.wait_final(&id).await;
    let ids = run["output"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    for child in ids {
        let child = host.wait_final(child.as_str().unwrap()).await;
        assert_eq!(child["status"], "COMPLETED");
        assert_eq!(child["parentRunId"], id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_child_is_refused_as_a_value_and_nothing_is_triggered() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["echo", 1], ["no-such-task", 2]], "wait": true }),
        )
        .await;
    let run = host.wait_final(&id).await;
    // The SDK example aborts with the host's refusal.
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-task"),
        "{run:#}"
    );
    assert!(list_children(&host, &id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_waiting_parent_cancels_its_children() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["wait", { "ms": 60_000 }]], "wait": true }),
        )
        .await;
    host.wait_status(&id, "WAITING").await;
    let (status, _) = host
        .post(&format!("/api/v2/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let children = list_children(&host, &id).await;
    assert_eq!(children.len(), 1);
    let child = host.wait_final(children[0]["id"].as_str().unwrap()).await;
    assert_eq!(child["status"], "CANCELED");
    assert_eq!(host.run(&id).await["status"], "CANCELED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_waiting_for_children_survives_a_restart_without_triggering_twice() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        wait_threshold: Some(std::time::Duration::from_millis(100)),
        ..Options::default()
    };
    let host = TestHost::start_in(dir.path(), options()).await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["wait", { "ms": 1_500 }], ["echo", "x"]], "wait": true }),
        )
        .await;
    host.wait_status(&id, "WAITING").await;
    host.stop().await;

    let host = TestHost::start_in(dir.path(), options()).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["output"][1]["ok"], "x");
    assert_eq!(list_children(&host, &id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_changes_are_made_once_across_checkpoints_and_reach_the_parent() {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(std::time::Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    // Three steps, each followed by a checkpointed wait: replayed three times.
    let id = host
        .trigger("progress", json!({ "steps": 3, "ms": 300 }))
        .await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let expected = json!({
        "status": "started",
        "steps": 3,
        "log": ["step", "step", "step"],
        "children_done": 1,
    });
    assert_eq!(run["output"], expected, "no change applied twice");
    assert_eq!(run["metadata"], expected);

    let parent = host
        .trigger(
            "parent",
            json!({ "items": [["progress", { "steps": 1 }], ["progress", { "steps": 2 }]], "wait": true }),
        )
        .await;
    let parent = host.wait_final(&parent).await;
    assert_eq!(parent["status"], "COMPLETED", "{parent:#}");
    assert_eq!(parent["metadata"], json!({ "children_done": 2 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_cannot_wait_for_itself_through_an_idempotency_key() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger_with(
            "parent",
            json!({ "items": [["parent", { "items": [] }, "loop"]], "wait": true }),
            json!({ "idempotencyKey": "loop" }),
        )
        .await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("would wait for itself"),
        "{run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_trigger_is_held_to_the_limits_of_an_api_trigger() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let big = "x".repeat(257 * 1024);
    // Each option past a limit the API enforces, given by a task for its child.
    let cases = [
        (
            json!({ "idempotencyKey": "k".repeat(2_049) }),
            "idempotencyKey",
        ),
        (json!({ "metadata": { "big": big } }), "metadata"),
        (json!({ "queue": "no spaces" }), "queue"),
        (
            json!({ "concurrencyKey": "c".repeat(1_025) }),
            "concurrencyKey",
        ),
        (json!({ "tags": ["a".repeat(129)] }), "tags"),
    ];
    for (options, field) in cases {
        let id = host
            .trigger(
                "parent",
                json!({
                    "items": [{ "task": "echo", "payload": 1, "options": options }],
                    "wait": false,
                }),
            )
            .await;
        let run = host.wait_final(&id).await;
        assert_eq!(run["status"], "FAILED", "{field}: {run:#}");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {message}");
        assert!(list_children(&host, &id).await.is_empty(), "{field}");
        // The same option over the API is refused too, naming the same field.
        let (status, body) = host
            .post(
                "/api/v1/tasks/echo/trigger",
                json!({ "payload": 1, "options": options }),
            )
            .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(field),
            "{body}"
        );
    }
    // A task id no task can have is refused too (over the API it is a path segment).
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["no such task!", 1]], "wait": false }),
        )
        .await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(list_children(&host, &id).await.is_empty());
}
