//! Deploys compile in the background: the upload answers 202 at once, `GET /api/v1/deploys/{id}`
//! tells how far it got, a run of a task only the new version has waits for it and then runs,
//! a refused deploy tells why (with the status the upload would have answered), and an
//! environment may have only so many deploys compiling at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHost, guest, guests, read};

/// Uploads a component without waiting; returns the status, the `Location` and the body.
async fn upload_in_background(host: &TestHost, bytes: Vec<u8>) -> (StatusCode, String, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/deployments", host.url))
        .bearer_auth(&host.key)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = read(resp).await;
    (status, location, body)
}

/// Reads a deploy until it ends, checking every status on the way is one a deploy can have.
async fn until_ended(host: &TestHost, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = host.get(&format!("/api/v1/deploys/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match body["status"].as_str() {
            Some("DEPLOYED" | "FAILED") => return body,
            Some("QUEUED" | "COMPILING") => {
                let phase = body["progress"]["phase"].as_str().unwrap_or_default();
                assert!(
                    ["waiting", "compiling", "definitions", "storing"].contains(&phase),
                    "{body}"
                );
            }
            _ => panic!("a deploy's status: {body}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy did not end: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_compiles_in_the_background_and_runs_waiting_for_it_start_when_it_lands() {
    let host = TestHost::start().await;
    let first = host.deploy(guests::HELLO).await;

    let bench = guest(guests::BENCH);
    let size = bench.len();
    let (status, location, accepted) = upload_in_background(&host, bench).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().expect("a deploy id").to_owned();
    assert!(id.starts_with("deploy_"), "{id}");
    assert_eq!(location, format!("/api/v1/deploys/{id}"));
    assert_eq!(accepted["components"][0]["bytes"], json!(size));
    assert!(
        ["QUEUED", "COMPILING"].contains(&accepted["status"].as_str().unwrap_or_default()),
        "{accepted}"
    );
    assert_eq!(accepted["progress"]["components"], 1, "{accepted}");

    // `noop` is only in the version compiling: its run waits for it, then runs on it.
    let run = host.trigger("noop", json!(null)).await;
    let ended = until_ended(&host, &id).await;
    assert_eq!(ended["status"], "DEPLOYED", "{ended}");
    assert!(ended["finishedAt"].is_string(), "{ended}");
    let deployment = &ended["deployment"];
    assert_ne!(deployment["version"], first["version"]);
    let (_, latest) = host.get("/api/v1/deployments/latest").await;
    assert_eq!(latest["version"], deployment["version"]);
    let run = host.wait_final(&run).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["version"], deployment["version"]);

    // Another environment cannot read it.
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let (status, body) = host
        .request_as(
            &other,
            reqwest::Method::GET,
            &format!("/api/v1/deploys/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = host.get("/api/v1/deploys/deploy_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("deploy again"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deploy_says_why_and_stores_nothing() {
    let host = TestHost::start().await;
    let (status, _, accepted) =
        upload_in_background(&host, guest(guests::BAD_DEFINITIONS_TRAP)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let ended = until_ended(&host, accepted["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert_eq!(ended["error"]["status"], 422, "{ended}");
    assert!(
        ended["error"]["message"]
            .as_str()
            .unwrap()
            .contains("definitions()"),
        "{ended}"
    );
    let (_, list) = host.get("/api/v1/deployments").await;
    assert_eq!(list["data"], json!([]));

    // What costs nothing to check is refused at once, not in the background.
    let (status, _, body) = upload_in_background(&host, b"not wasm at all".to_vec()).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, _, body) = upload_in_background(&host, Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // `wait` is a boolean.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/deployments?wait=soon", host.url))
        .bearer_auth(&host.key)
        .body(guest(guests::HELLO))
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("wait=true"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_has_a_bounded_number_of_deploys_compiling_and_they_land_in_order() {
    let host = TestHost::start().await;
    // A deploy is accepted in a few milliseconds and compiles for far longer, so uploads sent
    // back to back reach the limit.
    let (mut accepted, mut refused) = (Vec::new(), None);
    for _ in 0..10 {
        let (status, _, body) = upload_in_background(&host, guest(guests::BENCH)).await;
        match status {
            StatusCode::ACCEPTED => accepted.push(body["id"].as_str().unwrap().to_owned()),
            StatusCode::TOO_MANY_REQUESTS => {
                refused = Some(body);
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let refused = refused.expect("the uploads past the limit are refused");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("this environment") && message.contains("wait for one to end"),
        "{message}"
    );
    assert_eq!(accepted.len(), kiln::engine::MAX_DEPLOYS_PER_ENVIRONMENT);

    // They compile one at a time and become versions in the order they were accepted.
    let mut versions = Vec::new();
    for id in &accepted {
        let ended = until_ended(&host, id).await;
        assert_eq!(ended["status"], "DEPLOYED", "{ended}");
        versions.push(ended["deployment"]["version"].as_str().unwrap().to_owned());
    }
    let numbers: Vec<u32> = versions
        .iter()
        .map(|v| v.rsplit('.').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2], "{versions:?}");

    // Once they ended, another is accepted.
    let (status, _, body) = upload_in_background(&host, guest(guests::BENCH)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    until_ended(&host, body["id"].as_str().unwrap()).await;
}
