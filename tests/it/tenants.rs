//! Tenants: projects → environments → keys. Every request is scoped to its key's environment; a
//! foreign id answers 404 exactly like a missing one, and a revoked key is refused at once.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestHost, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_environments_ids_answer_404_on_every_endpoint() {
    let host = TestHost::start().await;
    let (_, other) = host.new_environment_key("acme", "prod").await;

    // Tenant A (the dev environment) deploys and makes runs of every kind.
    host.deploy(guests::HELLO).await;
    let done = host
        .trigger_with(
            "echo",
            json!(1),
            json!({ "idempotencyKey": "a-key", "tags": ["a-tag"] }),
        )
        .await;
    host.wait_final(&done).await;
    let delayed = host
        .trigger_with("hello", json!(null), json!({ "delay": "1h" }))
        .await;
    let (_, batch) = host
        .post(
            "/api/v1/tasks/echo/batch",
            json!({ "items": [{ "payload": 2 }] }),
        )
        .await;
    let batch_id = batch["batchId"].as_str().unwrap().to_owned();
    // And a token, a queue and a schedule of its own.
    let (_, token) = host.post("/api/v1/waitpoints/tokens", json!({})).await;
    let token = token["id"].as_str().unwrap().to_owned();
    let (_, queue) = host.get("/api/v1/queues/echo?type=task").await;
    let queue = queue["id"].as_str().unwrap().to_owned();
    let (status, schedule) = host
        .post(
            "/api/v1/schedules",
            json!({ "task": "echo", "cron": "0 9 * * *", "deduplicationKey": "a-schedule" }),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let schedule = schedule["id"].as_str().unwrap().to_owned();

    // Tenant B sees none of it: each foreign id is a 404, as if it did not exist.
    let foreign: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v3/runs/{done}"), None),
        (Method::GET, format!("/api/v1/runs/{done}/logs"), None),
        (
            Method::POST,
            format!("/api/v2/runs/{delayed}/cancel"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/v1/runs/{done}/replay"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/v1/runs/{delayed}/reschedule"),
            Some(json!({ "delay": "2h" })),
        ),
        (
            Method::POST,
            format!("/api/v1/runs/{done}/tags"),
            Some(json!({ "tags": ["x"] })),
        ),
        (Method::GET, format!("/api/v1/runs/{done}/metadata"), None),
        (
            Method::PUT,
            format!("/api/v1/runs/{done}/metadata"),
            Some(json!({ "operations": [{ "type": "set", "key": "k", "value": 1 }] })),
        ),
        (
            Method::POST,
            "/api/v1/idempotencyKeys/a-key/reset".into(),
            Some(json!({})),
        ),
        (Method::GET, "/api/v1/deployments/latest".into(), None),
        (Method::GET, format!("/realtime/v1/runs/{done}"), None),
        (
            Method::GET,
            format!("/api/v1/waitpoints/tokens/{token}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/waitpoints/tokens/{token}/complete"),
            Some(json!({ "data": 1 })),
        ),
        (Method::GET, format!("/api/v1/queues/{queue}"), None),
        (
            Method::POST,
            format!("/api/v1/queues/{queue}/pause"),
            Some(json!({ "action": "pause" })),
        ),
        (
            Method::POST,
            format!("/api/v1/queues/{queue}/concurrency/override"),
            Some(json!({ "concurrencyLimit": 1 })),
        ),
        (Method::GET, format!("/api/v1/schedules/{schedule}"), None),
        (
            Method::PUT,
            format!("/api/v1/schedules/{schedule}"),
            Some(json!({ "task": "echo", "cron": "0 10 * * *" })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/schedules/{schedule}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/schedules/{schedule}/deactivate"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in foreign {
        let (status, answer) = host
            .request_as(&other, method.clone(), &path, body.clone())
            .await;
        assert_eq!(status, 404, "{method} {path} as another tenant: {answer}");
        // The same request with an id that never existed answers the same way.
        let missing = path
            .replace(&done, "run_missing")
            .replace(&delayed, "run_missing");
        if missing != path {
            let (status, _) = host.request_as(&other, method, &missing, body).await;
            assert_eq!(status, 404, "{missing}");
        }
    }
    for path in [
        "/api/v1/runs".to_owned(),
        format!("/api/v1/runs?filter[batch]={batch_id}"),
        "/api/v1/runs?filter[tag]=a-tag".to_owned(),
        "/api/v1/runs?filter[idempotencyKey]=a-key".to_owned(),
    ] {
        let (status, list) = host.request_as(&other, Method::GET, &path, None).await;
        assert_eq!(status, 200);
        assert_eq!(list["data"], json!([]), "{path}");
    }
    let (_, deployments) = host
        .request_as(&other, Method::GET, "/api/v1/deployments", None)
        .await;
    assert_eq!(deployments["data"], json!([]));

    // B's trigger of A's task makes B's own run, waiting for B's first deploy.
    let (status, mine) = host
        .request_as(
            &other,
            Method::POST,
            "/api/v1/tasks/echo/trigger",
            Some(json!({ "payload": 3 })),
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    let (_, run) = host
        .request_as(
            &other,
            Method::GET,
            &format!("/api/v3/runs/{}", mine["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(run["status"], "PENDING_VERSION");
    // And A's data is unchanged by all of it.
    assert_eq!(host.run(&delayed).await["status"], "DELAYED");
    assert_eq!(host.run(&done).await["tags"], json!(["a-tag"]));
    let (_, token) = host
        .get(&format!("/api/v1/waitpoints/tokens/{token}"))
        .await;
    assert_eq!(token["status"], "WAITING");
    let (_, queue) = host.get(&format!("/api/v1/queues/{queue}")).await;
    assert_eq!(
        (
            queue["paused"].clone(),
            queue["concurrency"]["override"].clone()
        ),
        (json!(false), json!(null))
    );
    let (status, schedule) = host.get(&format!("/api/v1/schedules/{schedule}")).await;
    assert_eq!(
        (status.as_u16(), schedule["active"].clone()),
        (200, json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_without_secrets_and_revoked_at_once() {
    let host = TestHost::start().await;
    let (id, key) = host.new_environment_key("acme", "staging").await;
    assert!(key.starts_with("tr_staging_"), "{key}");
    let (status, _) = host
        .request_as(&key, Method::GET, "/api/v1/runs", None)
        .await;
    assert_eq!(status, 200);

    let admin = host.admin_key();
    let (_, list) = host
        .request_as(&admin, Method::GET, "/api/v1/admin/keys", None)
        .await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "the dev key and the new one: {list}");
    assert!(!list.to_string().contains(&key), "secrets are never listed");
    assert!(
        listed
            .iter()
            .any(|k| k["id"] == id.as_str() && key.starts_with(k["prefix"].as_str().unwrap()))
    );

    let (status, revoked) = host
        .request_as(
            &admin,
            Method::POST,
            &format!("/api/v1/admin/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(revoked["revokedAt"].is_string());
    let (status, body) = host
        .request_as(&key, Method::GET, "/api/v1/runs", None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("revoked"));

    // The admin API takes only the admin key, and checks names.
    let (status, _) = host
        .request_as(&host.key, Method::GET, "/api/v1/admin/keys", None)
        .await;
    assert_eq!(status, 401, "an environment key is not an admin key");
    let (status, body) = host
        .request_as(
            &admin,
            Method::POST,
            "/api/v1/admin/keys",
            Some(json!({ "project": "Acme Inc", "environment": "prod" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("`project`"),
        "{body}"
    );
    let (status, _) = host
        .request_as(
            &admin,
            Method::POST,
            "/api/v1/admin/keys/key_nope/revoke",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_has_its_own_upload_and_payload_limits() {
    let host = TestHost::start().await;
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let admin = host.admin_key();
    let set = |body: Value| {
        let (host, admin) = (&host, admin.clone());
        async move {
            host.request_as(
                &admin,
                Method::PUT,
                "/api/v1/admin/environments/acme/prod",
                Some(body),
            )
            .await
        }
    };
    let (status, env) = set(json!({ "maxComponentBytes": 1_000, "maxPayloadBytes": 64 })).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        (
            env["maxComponentBytes"].clone(),
            env["maxPayloadBytes"].clone()
        ),
        (json!(1_000), json!(64))
    );

    // The prod environment refuses what the dev environment takes.
    let wasm = crate::support::guest(guests::HELLO);
    let (status, answer) = host.upload_as(&other, wasm.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("1000"),
        "{answer}"
    );
    host.deploy(guests::HELLO).await;
    let (status, body) = host.upload_as(&other, wasm.clone()).await;
    assert_eq!(status, 413, "{body}");
    set(json!({ "maxComponentBytes": null })).await;
    let (status, body) = host.upload_as(&other, wasm).await;
    assert_eq!(status, 201, "{body}");

    let big = json!({ "payload": "x".repeat(100) });
    let (status, answer) = host
        .request_as(
            &other,
            Method::POST,
            "/api/v1/tasks/echo/trigger",
            Some(big.clone()),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("64 bytes"),
        "{answer}"
    );
    let (status, _) = host.post("/api/v1/tasks/echo/trigger", big).await;
    assert_eq!(status, 200, "the dev environment keeps the host's limit");

    // A task's child runs take their environment's limit too.
    set(json!({ "maxPayloadBytes": 200 })).await;
    let (status, parent) = host
        .request_as(
            &other,
            Method::POST,
            "/api/v1/tasks/parent/trigger",
            Some(json!({ "payload": { "items": [["echo", 1]], "pad": 300 } })),
        )
        .await;
    assert_eq!(status, 200, "{parent}");
    let parent = parent["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let (_, run) = host
            .request_as(&other, Method::GET, &format!("/api/v3/runs/{parent}"), None)
            .await;
        if run["status"] == "FAILED" || run["status"] == "COMPLETED" {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "{run:#}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the limit is 200 bytes"),
        "{run:#}"
    );

    // Bad changes are refused by name.
    for (body, field) in [
        (json!({ "maxPayloadBytes": -1 }), "maxPayloadBytes"),
        (json!({ "maxComponentBytes": "big" }), "maxComponentBytes"),
        (json!({ "color": 1 }), "color"),
        (json!({}), "at least one"),
    ] {
        let (status, answer) = set(body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
}
