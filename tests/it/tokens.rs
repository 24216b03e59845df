//! Wait tokens: made by a run or over the API, completed over the API or the callback URL, timed
//! out by the timer; a run waiting for one is checkpointed and resumes with the data.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

/// The only token of the environment (the `approve` task makes one per run).
async fn the_token(host: &TestHost) -> Value {
    let (status, list) = host.get("/api/v1/waitpoints/tokens").await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "exactly one token: {list:#}");
    data[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_completed_over_the_api_resumes_the_run_with_its_data() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("approve", json!({})).await;
    let waiting = host.wait_status(&id, "WAITING").await;
    assert_eq!(
        host.live_instances(),
        0,
        "a run waiting for a token holds no instance"
    );

    let token = the_token(&host).await;
    assert_eq!(token["status"], "WAITING");
    assert_eq!(
        waiting["waitpoints"],
        json!([{ "id": token["id"], "type": "MANUAL", "timeoutAt": null }])
    );
    assert_eq!(token["tags"], json!(["approval"]));
    let token_id = token["id"].as_str().unwrap();
    assert!(token_id.starts_with("waitpoint_"), "{token}");
    assert!(
        token["url"].as_str().unwrap().starts_with(&format!(
            "{}/api/v1/waitpoints/tokens/{token_id}/callback/",
            host.url
        )),
        "{token}"
    );

    let complete = format!("/api/v1/waitpoints/tokens/{token_id}/complete");
    let (status, answer) = host
        .post(&complete, json!({ "data": { "approved": true } }))
        .await;
    assert_eq!((status.as_u16(), answer), (200, json!({ "success": true })));
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(
        run["output"],
        json!({ "token": token_id, "data": { "approved": true } })
    );
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1);

    // A token completes once; a second completion changes nothing.
    let (status, _) = host.post(&complete, json!({ "data": "again" })).await;
    assert_eq!(status, 200);
    let (_, token) = host
        .get(&format!("/api/v1/waitpoints/tokens/{token_id}"))
        .await;
    assert_eq!(token["status"], "COMPLETED");
    assert_eq!(token["output"], r#"{"approved":true}"#);
    assert_eq!(token["outputIsError"], false);
    // The replay found the token it made: still one token, logged once.
    the_token(&host).await;
    let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    let waiting = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["message"] == format!("waiting for token {token_id}"))
        .count();
    assert_eq!(waiting, 1, "{logs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_times_out_is_an_error_value_not_a_crash() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("approve", json!({ "timeout_ms": 300 })).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert!(
        run["output"]["timed_out"]
            .as_str()
            .unwrap()
            .contains("timed out at"),
        "{run:#}"
    );
    let token = the_token(&host).await;
    assert_eq!(token["status"], "TIMED_OUT");
    let (_, token) = host
        .get(&format!(
            "/api/v1/waitpoints/tokens/{}",
            token["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(token["outputIsError"], true);
    assert!(
        token["output"]
            .as_str()
            .unwrap()
            .contains("TRIGGER_WAITPOINT_TIMEOUT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_url_completes_its_own_token_without_a_key() {
    let host = TestHost::start().await;
    let (status, a) = host
        .post(
            "/api/v1/waitpoints/tokens",
            json!({ "timeout": "1h", "tags": "api" }),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["isCached"], false);
    let (_, b) = host.post("/api/v1/waitpoints/tokens", json!({})).await;
    let (a_url, b_id) = (a["url"].as_str().unwrap(), b["id"].as_str().unwrap());

    let http = reqwest::Client::new();
    // A's capability does not open B.
    let forged = a_url.replace(a["id"].as_str().unwrap(), b_id);
    // The capability with its last hex digit changed.
    let last = if a_url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &a_url[..a_url.len() - 1]);
    for url in [forged, tampered] {
        let r = http.post(&url).json(&json!(1)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{url}");
    }
    let r = http
        .post(a_url)
        .json(&json!({ "by": "callback" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, a) = host
        .get(&format!(
            "/api/v1/waitpoints/tokens/{}",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(a["status"], "COMPLETED");
    assert_eq!(a["output"], r#"{"by":"callback"}"#);
    assert!(a["timeoutAt"].is_string());
    let (_, b) = host.get(&format!("/api/v1/waitpoints/tokens/{b_id}")).await;
    assert_eq!(b["status"], "WAITING");

    // Filters.
    let (_, waiting) = host
        .get("/api/v1/waitpoints/tokens?filter[status]=WAITING")
        .await;
    assert_eq!(waiting["data"].as_array().unwrap().len(), 1);
    let (_, tagged) = host.get("/api/v1/waitpoints/tokens?filter[tags]=api").await;
    assert_eq!(tagged["data"][0]["id"], a["id"]);
    let (status, bad) = host
        .get("/api/v1/waitpoints/tokens?filter[status]=DONE")
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = host
        .post("/api/v1/waitpoints/tokens", json!({ "timeout": "soon" }))
        .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("timeout"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_token_to_runs_and_clients() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let first = host.trigger("approve", json!({ "key": "order-7" })).await;
    host.wait_status(&first, "WAITING").await;
    let (_, again) = host
        .post(
            "/api/v1/waitpoints/tokens",
            json!({ "idempotencyKey": "order-7" }),
        )
        .await;
    assert_eq!(again["isCached"], true);
    let token_id = again["id"].as_str().unwrap().to_owned();
    let (status, _) = host
        .post(
            &format!("/api/v1/waitpoints/tokens/{token_id}/complete"),
            json!({ "data": 42 }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(host.wait_final(&first).await["output"]["data"], 42);
    // A later run with the key gets the completed token and does not wait at all.
    let second = host.trigger("approve", json!({ "key": "order-7" })).await;
    let run = host.wait_final(&second).await;
    assert_eq!(run["output"], json!({ "token": token_id, "data": 42 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_a_token_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start_in(dir.path(), Options::default()).await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("approve", json!({})).await;
    host.wait_status(&id, "WAITING").await;
    let token = the_token(&host).await;
    host.stop().await;

    let host = TestHost::start_in(dir.path(), Options::default()).await;
    let token_id = token["id"].as_str().unwrap();
    let (status, _) = host
        .post(
            &format!("/api/v1/waitpoints/tokens/{token_id}/complete"),
            json!({ "data": "after restart" }),
        )
        .await;
    assert_eq!(status, 200);
    let run = host.wait_final(&id).await;
    assert_eq!(run["output"]["data"], "after restart", "{run:#}");
    the_token(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_environments_tokens_are_not_found() {
    let host = TestHost::start().await;
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let (_, mine) = host.post("/api/v1/waitpoints/tokens", json!({})).await;
    let id = mine["id"].as_str().unwrap();
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/waitpoints/tokens/{id}"), None),
        (
            Method::POST,
            format!("/api/v1/waitpoints/tokens/{id}/complete"),
            Some(json!({ "data": 1 })),
        ),
    ] {
        let (status, answer) = host.request_as(&other, method, &path, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    let (_, list) = host
        .request_as(&other, Method::GET, "/api/v1/waitpoints/tokens", None)
        .await;
    assert_eq!(list["data"], json!([]));
    let (_, token) = host.get(&format!("/api/v1/waitpoints/tokens/{id}")).await;
    assert_eq!(token["status"], "WAITING");
}

/// A token request the host refuses (11 tags) is journaled as refused, so the checkpoint after
/// it replays: the run resumes, gets the same refusal, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_request_replays_after_a_checkpoint() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::ADVERSARY).await;
    let id = host
        .trigger("bad-token", json!({ "wait_ms": 3_600_000 }))
        .await;
    host.wait_status(&id, "WAITING").await;
    clock.advance(std::time::Duration::from_secs(3_600));
    host.wake();
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run:#}");
    let refused = run["output"]["refused"].as_str().unwrap();
    assert!(refused.contains("at most 10 tags"), "{refused}");
    let (_, list) = host.get("/api/v1/waitpoints/tokens").await;
    assert_eq!(list["data"], json!([]), "nothing was made");
}
