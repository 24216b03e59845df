//! Trigger options and the run lifecycle around them, with Trigger.dev's semantics: delay, TTL,
//! priority, idempotency keys, tags, metadata, per-run limits, version locking, PENDING_VERSION,
//! replay, batches and the list filters. Hour-scale rules run on a manual clock.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn status_of(host: &TestHost, id: &str) -> String {
    host.run(id).await["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_run_waits_then_runs() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger_with(
            "hello",
            json!({ "name": "later" }),
            json!({ "delay": "1s" }),
        )
        .await;
    let run = host.run(&id).await;
    assert_eq!(run["status"], "DELAYED");
    assert_eq!(run["isQueued"], true);
    assert!(run["delayedUntil"].is_string());
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED");

    // A date in the past is no delay.
    let past = host
        .trigger_with(
            "hello",
            json!(null),
            json!({ "delay": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(host.wait_final(&past).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_moves_a_delayed_run_and_nothing_else() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger_with("hello", json!(null), json!({ "delay": "1h" }))
        .await;
    let before = host.run(&id).await["delayedUntil"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, run) = host
        .post(
            &format!("/api/v1/runs/{id}/reschedule"),
            json!({ "delay": "2h" }),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let after = run["delayedUntil"].as_str().unwrap();
    assert!(after > before.as_str(), "{after} > {before}");

    clock.advance(HOUR + Duration::from_secs(60));
    host.wake();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&host, &id).await,
        "DELAYED",
        "the old time no longer applies"
    );
    clock.advance(HOUR);
    host.wake();
    assert_eq!(host.wait_final(&id).await["status"], "COMPLETED");

    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{id}/reschedule"),
            json!({ "delay": "1h" }),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only DELAYED runs"),
        "{body}"
    );
    let (status, _) = host
        .post(
            &format!("/api/v1/runs/{id}/reschedule"),
            json!({ "delay": "whenever" }),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_a_run_that_did_not_start_counting_from_enqueue() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(Options {
        default_ttl: Some(Duration::from_secs(600)),
        ..options
    })
    .await;
    // `later` is in no deployed version, so its runs wait (PENDING_VERSION) and never start.
    let plain = host
        .trigger_with("later", json!(null), json!({ "ttl": "1h" }))
        .await;
    let delayed = host
        .trigger_with("later", json!(null), json!({ "delay": "1h", "ttl": "30m" }))
        .await;
    let opted_out = host
        .trigger_with("later", json!(null), json!({ "ttl": 0 }))
        .await;
    let defaulted = host.trigger("later", json!(null)).await;
    assert_eq!(status_of(&host, &plain).await, "PENDING_VERSION");
    assert_eq!(host.run(&plain).await["ttl"], "1h");

    clock.advance(Duration::from_secs(11 * 60));
    host.wake();
    host.wait_status(&defaulted, "EXPIRED").await;

    clock.advance(HOUR);
    host.wake();
    let run = host.wait_status(&plain, "EXPIRED").await;
    assert!(run["expiredAt"].is_string());
    assert_eq!(run["isFailed"], true);
    assert_eq!(run["attemptCount"], 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status_of(&host, &delayed).await,
        "PENDING_VERSION",
        "TTL counts from the enqueue at 1h"
    );

    clock.advance(Duration::from_secs(25 * 60));
    host.wake();
    host.wait_status(&delayed, "EXPIRED").await;
    clock.advance(DAY);
    host.wake();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status_of(&host, &opted_out).await,
        "PENDING_VERSION",
        "ttl 0 opts out of the default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_ten_starts_before_a_run_triggered_eight_seconds_earlier() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(Options {
        concurrency: 1,
        ..options
    })
    .await;
    host.deploy(guests::HELLO).await;
    let busy = host.trigger("spin", json!({ "ms": 60_000 })).await;
    host.wait_status(&busy, "EXECUTING").await;
    let earlier = host.trigger("hello", json!({ "name": "earlier" })).await;
    clock.advance(Duration::from_secs(8));
    let urgent = host
        .trigger_with(
            "hello",
            json!({ "name": "urgent" }),
            json!({ "priority": 10 }),
        )
        .await;
    assert_eq!(host.run(&urgent).await["priority"], 10.0);
    host.post(&format!("/api/v2/runs/{busy}/cancel"), json!({}))
        .await;
    host.wait_final(&earlier).await;
    host.wait_final(&urgent).await;

    // Log line ids record the order the attempts ran in.
    async fn first_log(host: &TestHost, id: &str) -> i64 {
        let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
        logs["data"][0]["id"].as_i64().unwrap()
    }
    assert!(
        first_log(&host, &urgent).await < first_log(&host, &earlier).await,
        "priority runs first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_run() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let trigger = |task: &'static str, key: &'static str, extra: Value| {
        let host = &host;
        async move {
            let mut options = json!({ "idempotencyKey": key });
            if let (Value::Object(o), Value::Object(e)) = (&mut options, extra) {
                o.extend(e);
            }
            let (status, body) = host
                .post(
                    &format!("/api/v1/tasks/{task}/trigger"),
                    json!({ "payload": null, "options": options }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            (
                body["id"].as_str().unwrap().to_owned(),
                body["isCached"].as_bool().unwrap(),
            )
        }
    };
    let (first, cached) = trigger("hello", "k1", json!({})).await;
    assert!(!cached);
    let (again, cached) = trigger("hello", "k1", json!({})).await;
    assert_eq!((again.as_str(), cached), (first.as_str(), true));
    assert_eq!(host.run(&first).await["idempotencyKey"], "k1");
    let (other_task, cached) = trigger("echo", "k1", json!({})).await;
    assert!(!cached && other_task != first, "keys are per task");

    // The default key TTL is 30 days.
    clock.advance(29 * DAY);
    assert_eq!(
        trigger("hello", "k1", json!({})).await,
        (first.clone(), true)
    );
    clock.advance(2 * DAY);
    let (fresh, cached) = trigger("hello", "k1", json!({})).await;
    assert!(!cached && fresh != first);

    let (short, _) = trigger("hello", "k2", json!({ "idempotencyKeyTTL": "1h" })).await;
    clock.advance(2 * HOUR);
    assert_ne!(trigger("hello", "k2", json!({})).await.0, short);

    // A key whose run failed is released.
    let (failed, _) = trigger("abort", "k3", json!({})).await;
    assert_eq!(host.wait_final(&failed).await["status"], "FAILED");
    let (retry, cached) = trigger("abort", "k3", json!({})).await;
    assert!(!cached && retry != failed);

    // Reset forgets a key.
    let (kept, _) = trigger("hello", "k4", json!({})).await;
    let (status, _) = host
        .post(
            "/api/v1/idempotencyKeys/k4/reset",
            json!({ "taskIdentifier": "hello" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(trigger("hello", "k4", json!({})).await.0, kept);
    let (status, _) = host
        .post("/api/v1/idempotencyKeys/never-used/reset", json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hashed_idempotency_key_dedupes_by_hash_and_shows_the_users_key_and_scope() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    // What the official SDK sends: the hash as the key, the user's key and scope beside it.
    let body = |scope: &str| {
        json!({ "payload": { "n": 1 }, "options": {
            "idempotencyKey": "5e78863ed1ffb9fc66b1d61634b126bf8eb20267e7996297eeeb9b19c8c0f732",
            "idempotencyKeyTTL": "1h",
            "idempotencyKeyOptions": { "key": "my-key", "scope": scope },
        } })
    };
    let (status, first) = host.post("/api/v1/tasks/echo/trigger", body("run")).await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = host
        .post("/api/v1/tasks/echo/trigger", body("global"))
        .await;
    assert_eq!(
        (&again["id"], &again["isCached"]),
        (&first["id"], &json!(true))
    );
    let run = host.run(first["id"].as_str().unwrap()).await;
    assert_eq!(run["idempotencyKey"], "my-key");
    assert_eq!(run["idempotencyKeyScope"], "run");
    let (status, refused) = host
        .post(
            "/api/v1/tasks/echo/trigger",
            json!({ "options": { "idempotencyKey": "k", "idempotencyKeyOptions": { "key": "k", "scope": "team" } } }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    // The reset takes the hash, as the SDK sends it.
    let (status, reset) = host
        .post(
            "/api/v1/idempotencyKeys/5e78863ed1ffb9fc66b1d61634b126bf8eb20267e7996297eeeb9b19c8c0f732/reset",
            json!({ "taskIdentifier": "echo" }),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    let (_, fresh) = host.post("/api/v1/tasks/echo/trigger", body("run")).await;
    assert_eq!(fresh["isCached"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_triggers_with_one_key_make_exactly_one_run() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (url, key) = (
            format!("{}/api/v1/tasks/hello/trigger", host.url),
            host.key.clone(),
        );
        requests.spawn(async move {
            let body = json!({ "payload": { "name": format!("n{i}") }, "options": { "idempotencyKey": "once" } });
            let resp = reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap();
            crate::support::read(resp).await
        });
    }
    let answers: Vec<(StatusCode, Value)> = requests.join_all().await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(_, b)| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, b)| b["isCached"] == false)
            .count(),
        1
    );
    let (_, list) = host.get("/api/v1/runs?filter[idempotencyKey]=once").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_stored_filtered_and_added_up_to_ten() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let tagged = host
        .trigger_with("hello", json!(null), json!({ "tags": ["user_1", "org_9"] }))
        .await;
    let single = host
        .trigger_with("hello", json!(null), json!({ "tags": "org_9" }))
        .await;
    let plain = host.trigger("hello", json!(null)).await;
    assert_eq!(host.run(&tagged).await["tags"], json!(["user_1", "org_9"]));

    let (_, list) = host.get("/api/v1/runs?filter[tag]=org_9").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [single.as_str(), tagged.as_str()]);

    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{plain}/tags"),
            json!({ "tags": ["a", "b"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.run(&plain).await["tags"], json!(["a", "b"]));
    let nine: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{plain}/tags"),
            json!({ "tags": nine }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 10 tags"));
    assert_eq!(
        host.run(&plain).await["tags"],
        json!(["a", "b"]),
        "nothing changed"
    );
    let (status, _) = host
        .post(
            &format!("/api/v1/runs/{plain}/tags"),
            json!({ "tags": ["x".repeat(129)] }),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_run_limits_override_the_task() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let once = host
        .trigger_with("fail", json!(null), json!({ "maxAttempts": 1 }))
        .await;
    assert_eq!(
        host.wait_final(&once).await["attemptCount"],
        1,
        "the task allows 2; the trigger 1"
    );

    let run = host
        .trigger_with(
            "hello",
            json!(null),
            json!({ "machine": "small-2x", "queue": { "name": "emails" }, "concurrencyKey": 42 }),
        )
        .await;
    let run = host.wait_final(&run).await;
    assert_eq!(run["machine"], "small-2x");
    assert_eq!(run["queue"], "emails");
    assert_eq!(run["concurrencyKey"], "42");

    let slow = host
        .trigger_with("spin", json!({ "ms": 20_000 }), json!({ "maxDuration": 5 }))
        .await;
    let run = host.wait_final(&slow).await;
    assert_eq!(run["status"], "TIMED_OUT", "{run:#}");
    assert_eq!(run["attemptCount"], 1, "a timeout is not retried");
    assert_eq!(run["error"]["code"], "MAX_DURATION_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_starts_with_the_trigger_and_takes_operations() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger_with(
            "hello",
            json!(null),
            json!({ "metadata": { "progress": 0, "steps": [] } }),
        )
        .await;
    let path = format!("/api/v1/runs/{id}/metadata");
    let ops = json!({ "operations": [
        { "type": "increment", "key": "progress", "value": 5 },
        { "type": "append", "key": "steps", "value": "fetched" },
        { "type": "set", "key": "$.result.ok", "value": true },
    ]});
    let (status, body) = host.request(reqwest::Method::PUT, &path, Some(ops)).await;
    assert_eq!(status, 200, "{body}");
    let expected = json!({ "progress": 5, "steps": ["fetched"], "result": { "ok": true } });
    assert_eq!(body["metadata"], expected);
    assert_eq!(host.get(&path).await.1["metadata"], expected);
    assert_eq!(host.run(&id).await["metadata"], expected);

    let huge =
        json!({ "operations": [{ "type": "set", "key": "blob", "value": "x".repeat(300_000) }] });
    let (status, body) = host.request(reqwest::Method::PUT, &path, Some(huge)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        host.get(&path).await.1["metadata"],
        expected,
        "a refused change changes nothing"
    );
    let (status, _) = host
        .request(
            reqwest::Method::PUT,
            &path,
            Some(json!({ "operations": [{ "type": "explode" }] })),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_lock_to_a_version_when_they_start_or_when_asked() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    let v1 = host.deploy(guests::HELLO).await["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let delayed = host
        .trigger_with("hello", json!(null), json!({ "delay": "1h" }))
        .await;
    let v2 = host.deploy(guests::HELLO).await["version"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(HOUR);
    host.wake();
    assert_eq!(
        host.wait_final(&delayed).await["version"],
        v2.as_str(),
        "locked when it started, not when triggered"
    );

    let pinned = host
        .trigger_with("hello", json!(null), json!({ "lockToVersion": v1 }))
        .await;
    assert_eq!(host.wait_final(&pinned).await["version"], v1.as_str());
    let (status, body) = host
        .post(
            "/api/v1/tasks/hello/trigger",
            json!({ "options": { "lockToVersion": "19990101.1" } }),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("19990101.1"),
        "{body}"
    );

    let (_, list) = host
        .get(&format!("/api/v1/runs?filter[version]={v1}"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_an_undeployed_task_waits_for_the_first_deploy_that_has_it() {
    let host = TestHost::start().await;
    let id = host.trigger("hello", json!({ "name": "patient" })).await;
    let run = host.run(&id).await;
    assert_eq!(run["status"], "PENDING_VERSION");
    assert_eq!(run["isQueued"], true);
    let waiting_to_cancel = host.trigger("echo", json!(1)).await;
    let (status, _) = host
        .post(
            &format!("/api/v2/runs/{waiting_to_cancel}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&host, &waiting_to_cancel).await, "CANCELED");

    host.deploy(guests::HELLO).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["output"], json!({ "message": "Hello, patient!" }));
    assert_eq!(
        status_of(&host, &waiting_to_cancel).await,
        "CANCELED",
        "a canceled run stays canceled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_on_a_delayed_run_and_replay_makes_a_new_run() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let delayed = host
        .trigger_with("hello", json!(null), json!({ "delay": "1h" }))
        .await;
    host.post(&format!("/api/v2/runs/{delayed}/cancel"), json!({}))
        .await;
    assert_eq!(status_of(&host, &delayed).await, "CANCELED");

    let original = host
        .trigger_with("echo", json!({ "x": 1 }), json!({ "tags": ["t"] }))
        .await;
    host.wait_final(&original).await;
    let (status, body) = host
        .post(&format!("/api/v1/runs/{original}/replay"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let replay = body["id"].as_str().unwrap();
    assert_ne!(replay, original);
    let run = host.wait_final(replay).await;
    assert_eq!(run["output"], json!({ "x": 1 }));
    assert_eq!(run["tags"], json!(["t"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_a_new_payload_tags_and_options_from_its_body() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let original = host
        .trigger_with("echo", json!({ "x": 1 }), json!({ "tags": ["t"] }))
        .await;
    host.wait_final(&original).await;
    // The SDK sends a new payload as superjson.
    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{original}/replay"),
            json!({ "payload": "{\"json\":{\"x\":2}}", "payloadType": "application/super+json", "tags": ["r"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = host.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(run["output"], json!({ "x": 2 }));
    assert_eq!(run["tags"], json!(["r"]));
    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{original}/replay"),
            json!({ "delay": "1h" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let delayed = host.run(body["id"].as_str().unwrap()).await;
    assert_eq!(delayed["status"], "DELAYED");
    assert_eq!(
        delayed["tags"],
        json!(["t"]),
        "tags default to the original's"
    );
    let (status, body) = host
        .post(
            &format!("/api/v1/runs/{original}/replay"),
            json!({ "nope": 1 }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_trigger_many_runs_in_one_request() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let items = json!({ "items": [
        { "payload": { "name": "a" } },
        { "payload": { "name": "b" }, "options": { "idempotencyKey": "batch-k" } },
        { "payload": { "name": "c" }, "options": { "idempotencyKey": "batch-k" } },
    ]});
    let (status, body) = host.post("/api/v1/tasks/hello/batch", items).await;
    assert_eq!(status, 200, "{body}");
    let batch = body["batchId"].as_str().unwrap();
    let runs: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[1], runs[2], "per-item idempotency");
    for id in &runs {
        let run = host.wait_final(id).await;
        assert_eq!(run["batchId"], batch);
    }
    let (_, list) = host
        .get(&format!("/api/v1/runs?filter[batch]={batch}"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    let mixed = json!({ "items": [
        { "task": "echo", "payload": 1 },
        { "task": "hello", "payload": { "name": "z" }, "options": { "tags": "mixed" } },
    ]});
    let (status, body) = host.post("/api/v1/tasks/batch", mixed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["taskIdentifier"], "echo");
    assert_eq!(body["runs"][1]["taskIdentifier"], "hello");

    let too_many = json!({ "items": vec![json!({ "payload": 1 }); 1001] });
    let (status, body) = host.post("/api/v1/tasks/echo/batch", too_many).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("1001"), "{body}");
    let bad_item =
        json!({ "items": [{ "payload": 1 }, { "payload": 2, "options": { "delay": "x" } }] });
    let (status, body) = host.post("/api/v1/tasks/echo/batch", bad_item).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("items[1].options.delay"),
        "{body}"
    );
    let (_, list) = host.get("/api/v1/runs?filter[taskIdentifier]=echo").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "refused batches store nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_filters_by_creation_time() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let old = host.trigger("echo", json!(1)).await;
    let old_created = host.run(&old).await["createdAt"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(DAY);
    let new = host.trigger("echo", json!(2)).await;
    let new_created = host.run(&new).await["createdAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = |list: Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, list) = host
        .get(&format!(
            "/api/v1/runs?filter[createdAt][from]={new_created}"
        ))
        .await;
    assert_eq!(ids(list), [new]);
    let (_, list) = host
        .get(&format!("/api/v1/runs?filter[createdAt][to]={old_created}"))
        .await;
    assert_eq!(ids(list), [old]);
    let (status, _) = host
        .get("/api/v1/runs?filter[createdAt][from]=yesterday")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_naming_the_field_and_store_nothing() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let cases = [
        (json!({ "colour": "red" }), "unknown option `colour`"),
        (json!({ "delay": "next tuesday" }), "options.delay"),
        (json!({ "ttl": "forever" }), "options.ttl"),
        (json!({ "priority": -1e9 }), "options.priority"),
        (
            json!({ "tags": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"] }),
            "at most 10 tags",
        ),
        (json!({ "tags": ["x".repeat(129)] }), "options.tags"),
        (
            json!({ "metadata": { "blob": "x".repeat(300_000) } }),
            "options.metadata",
        ),
        (
            json!({ "idempotencyKey": "k".repeat(2049) }),
            "options.idempotencyKey",
        ),
        (json!({ "maxAttempts": 1000 }), "options.maxAttempts"),
        (json!({ "machine": "gigantic" }), "options.machine"),
    ];
    for (options, needle) in cases {
        let (status, body) = host
            .post(
                "/api/v1/tasks/hello/trigger",
                json!({ "payload": null, "options": options }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{options}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{options}: {body}"
        );
    }
    let (_, list) = host.get("/api/v1/runs").await;
    assert_eq!(list["data"], json!([]), "no run was stored");
}
