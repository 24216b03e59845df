//! Auth and error paths of the API.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestHost, guests, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_unauthorized() {
    let host = TestHost::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/runs", host.url);

    let (status, body) = read(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );

    let (status, body) = read(
        http.get(&url)
            .bearer_auth("tr_dev_wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("invalid API key"),
        "{body}"
    );

    let (status, _) = read(
        http.get(&url)
            .header("authorization", "Basic abc")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = host.get("/api/v1/runs").await;
    assert_eq!(status, StatusCode::OK, "the dev key works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_runs_tasks_and_paths_are_not_found() {
    let host = TestHost::start().await;
    let (status, body) = host.get("/api/v1/deployments/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no version is deployed"),
        "{body}"
    );
    host.deploy(guests::HELLO).await;

    for path in ["/api/v3/runs/run_nope", "/api/v1/runs/run_nope/logs"] {
        let (status, body) = host.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"], "run `run_nope` not found");
    }
    let (status, _) = host.post("/api/v2/runs/run_nope/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = host.get("/api/v9/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trigger_bodies_are_refused_and_nothing_is_stored() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/tasks/hello/trigger", host.url);
    let send = |body: &'static str, ct: &'static str| {
        http.post(&url)
            .bearer_auth(&host.key)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let (status, body) = read(send("{not json", "application/json").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = read(send(r#"{"payload":1}"#, "text/plain").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );

    let (status, body) = read(
        send(
            r#"{"payload":1,"options":{"delay":"soon"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("options.delay"),
        "{body}"
    );

    let big = format!("{{\"payload\":\"{}\"}}", "x".repeat(3 << 20));
    let resp = http
        .post(&url)
        .bearer_auth(&host.key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (_, list) = host.get("/api/v1/runs").await;
    assert_eq!(list["data"], json!([]), "no run was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document_and_every_documented_route_answers() {
    let host = TestHost::start().await;
    let (status, doc) = host.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/api/v1/tasks/{task_id}/trigger",
        "/api/v3/runs/{run_id}",
        "/api/v1/queues/{queue}/pause",
        "/api/v1/waitpoints/tokens/{token_id}/complete",
        "/api/v1/schedules",
        "/realtime/v1/runs/{run_id}",
        "/api/v1/admin/keys",
    ] {
        assert!(paths.contains_key(expected), "{expected} is documented");
    }
    let admin = host.admin_key();
    let http = reqwest::Client::new();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            // Every `{param}` becomes an id that does not exist.
            let concrete: String = path
                .split('/')
                .map(|s| if s.starts_with('{') { "nope" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let key = match op["security"][0].as_object() {
                Some(s) if s.contains_key("adminKey") => admin.clone(),
                _ => host.key.clone(),
            };
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = http
                .request(method.clone(), format!("{}{concrete}", host.url))
                .bearer_auth(&key);
            if method != reqwest::Method::GET {
                req = req.json(&serde_json::json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert!(
                !(status == 404 && body.contains("no such endpoint")),
                "{method} {path} is documented but not routed: {body}"
            );
            assert_ne!(
                status, 405,
                "{method} {path} is documented with a method its route does not take"
            );
            assert!(
                status.as_u16() < 500,
                "{method} {concrete}: {status} {body}"
            );
        }
    }
    assert!(operations >= 40, "{operations} operations documented");
    // And a route that does not exist is not answered as if it did.
    let (status, body) = host.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("/api/openapi.json")
    );
}

/// What a streaming response sends within `time` (at most 1 MiB).
async fn read_for(mut resp: reqwest::Response, time: std::time::Duration) -> String {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + time;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        out.extend_from_slice(&chunk);
        if out.len() > 1 << 20 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Random JSON: scalars, strings with odd characters, arrays and objects whose keys are often
/// the API's own option and filter names.
fn random_json(rng: &mut rand::rngs::StdRng, depth: u32) -> serde_json::Value {
    use rand::Rng;
    use serde_json::{Value, json};
    const KEYS: &[&str] = &[
        "payload",
        "options",
        "delay",
        "ttl",
        "priority",
        "idempotencyKey",
        "idempotencyKeyTTL",
        "tags",
        "maxAttempts",
        "maxDuration",
        "machine",
        "queue",
        "concurrencyKey",
        "metadata",
        "lockToVersion",
        "payloadType",
        "items",
        "task",
        "data",
        "timeout",
        "__proto__",
        "",
    ];
    let strings = [
        "",
        "1h",
        "-1",
        "9999999999999999999999",
        "small-1x",
        "task/x",
        "\u{0}",
        "ü😀",
        "2026-13-45T99:00:00Z",
        "application/super+json",
        "{\"json\":1}",
    ];
    match (rng.random_range(0..9), depth) {
        (0, _) => Value::Null,
        (1, _) => json!(rng.random::<bool>()),
        (2, _) => json!(rng.random::<i64>()),
        (3, _) => json!(rng.random::<f64>() * 1e12 - 5e11),
        (4, _) => json!(strings[rng.random_range(0..strings.len())]),
        (5, _) => json!("x".repeat(rng.random_range(0..5_000))),
        (6 | 7, d) if d > 0 => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let key = KEYS[rng.random_range(0..KEYS.len())].to_owned();
                map.insert(key, random_json(rng, d - 1));
            }
            Value::Object(map)
        }
        (8, d) if d > 0 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_json(rng, d - 1))
                .collect(),
        ),
        _ => json!(rng.random::<u8>()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_and_query_strings_never_get_a_server_error() {
    use rand::{Rng, SeedableRng};
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::new();
    let paths = [
        "/api/v1/tasks/echo/trigger",
        "/api/v1/tasks/echo/batch",
        "/api/v1/tasks/batch",
        "/api/v1/tasks/no-such-task/trigger",
        "/api/v1/waitpoints/tokens",
        "/api/v1/queues/echo/pause",
    ];
    let content_types = [
        "application/json",
        "text/plain",
        "application/super+json",
        "",
    ];
    for _ in 0..300 {
        let path = paths[rng.random_range(0..paths.len())];
        let body = if rng.random_range(0..10) == 0 {
            (0..rng.random_range(0..200))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<u8>>()
        } else {
            random_json(&mut rng, 3).to_string().into_bytes()
        };
        let mut req = http
            .post(format!("{}{path}", host.url))
            .bearer_auth(&host.key)
            .body(body.clone());
        let ct = content_types[rng.random_range(0..content_types.len())];
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert!(
            status.as_u16() < 500,
            "seed {seed}: POST {path} {} → {status}: {}",
            String::from_utf8_lossy(&body),
            resp.text().await.unwrap()
        );
    }
    let keys = [
        "filter[status]",
        "filter[taskIdentifier]",
        "filter[tag]",
        "filter[createdAt][from]",
        "filter[createdAt][to]",
        "filter[batch]",
        "filter[idempotencyKey]",
        "filter[version]",
        "page[size]",
        "page[after]",
        "page[before]",
        "filter[tags]",
        "tags",
        "perPage",
        "page",
        "type",
        "nonsense",
    ];
    let values = [
        "",
        "0",
        "-1",
        "101",
        "COMPLETED,NOPE",
        "ü😀",
        "run_x",
        "2026-01-01",
        "1e400",
        "%00",
        "a,b,,c",
    ];
    let lists = [
        "/api/v1/runs",
        "/api/v1/waitpoints/tokens",
        "/api/v1/queues",
        "/api/v1/schedules",
        "/api/v1/queues/echo",
    ];
    for _ in 0..300 {
        let path = lists[rng.random_range(0..lists.len())];
        let query: Vec<(String, String)> = (0..rng.random_range(0..5))
            .map(|_| {
                (
                    keys[rng.random_range(0..keys.len())].to_owned(),
                    values[rng.random_range(0..values.len())].to_owned(),
                )
            })
            .collect();
        let resp = http
            .get(format!("{}{path}", host.url))
            .bearer_auth(&host.key)
            .query(&query)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            status.as_u16() < 500,
            "seed {seed}: GET {path} {query:?} → {status}: {}",
            resp.text().await.unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_with_too_many_values_is_refused_not_a_server_error() {
    let host = TestHost::start().await;
    let tags: Vec<String> = (0..500).map(|i| format!("t{i}")).collect();
    for path in [
        "/api/v1/runs?filter[tag]=",
        "/api/v1/waitpoints/tokens?filter[tags]=",
    ] {
        let (status, body) = host.get(&format!("{path}{}", tags.join(","))).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("at most 100"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_under_random_input_answers_below_500_and_keeps_tenants_apart() {
    use rand::seq::IndexedRandom;
    use rand::{Rng, SeedableRng};
    let host = TestHost::start().await;
    let (_, other) = host.new_environment_key("acme", "prod").await;
    host.deploy(guests::HELLO).await;

    // Tenant A's data carries a marker no request of tenant B ever contains.
    const MARKER: &str = "secret-of-tenant-a";
    let run = host
        .trigger_with(
            "echo",
            json!({ "note": MARKER }),
            json!({ "tags": [MARKER], "idempotencyKey": MARKER }),
        )
        .await;
    host.wait_final(&run).await;
    let (_, token) = host
        .post("/api/v1/waitpoints/tokens", json!({ "tags": [MARKER] }))
        .await;
    let token = token["id"].as_str().unwrap().to_owned();
    let (status, schedule) = host
        .post(
            "/api/v1/schedules",
            json!({ "task": "echo", "cron": "0 9 * * *", "externalId": MARKER, "deduplicationKey": MARKER }),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let schedule = schedule["id"].as_str().unwrap().to_owned();
    let (status, _) = host
        .post(
            "/api/v1/projects/default/envvars/dev",
            json!({ "name": "MARKED", "value": MARKER }),
        )
        .await;
    assert_eq!(status, 200);

    // Every documented operation, from the OpenAPI document the router is built from.
    let (_, doc) = host.get("/api/openapi.json").await;
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(operations.len() > 40, "{operations:?}");

    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let admin = host.admin_key();
    let keys = [
        host.key.as_str(),
        other.as_str(),
        admin.as_str(),
        "tr_dev_notakeyatall",
        "",
    ];
    let long = "x".repeat(3000);
    let segments = [
        run.as_str(),
        token.as_str(),
        schedule.as_str(),
        "echo",
        "task%2Fecho",
        "run_01JZZZZZZZZZZZZZZZZZZZZZZZ",
        "%2e%2e",
        "ü😀",
        "%00",
        long.as_str(),
        "acme",
        "prod",
        "default",
        "dev",
        "MARKED",
        "1",
    ];
    let queries = [
        "",
        "?type=task",
        "?type=custom&page[size]=0",
        "?filter[status]=NOPE",
        "?page[after]=%ff",
        "?tags=a,b",
    ];
    for _ in 0..2000 {
        let (method, template) = operations.choose(&mut rng).unwrap();
        let path = template
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    (*segments.choose(&mut rng).unwrap()).to_owned()
                } else {
                    part.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let query = queries.choose(&mut rng).unwrap();
        let key = *keys.choose(&mut rng).unwrap();
        let body = match rng.random_range(0..4) {
            0 => Vec::new(),
            1 => (0..rng.random_range(0..300))
                .map(|_| rng.random::<u8>())
                .collect(),
            _ => random_json(&mut rng, 3).to_string().into_bytes(),
        };
        let mut req = http
            .request(
                method.parse().unwrap(),
                format!("{}{path}{query}", host.url),
            )
            .body(body.clone());
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if rng.random_bool(0.7) {
            req = req.header("content-type", "application/json");
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        // A stream goes on: read what it sends at first (a run's current state) for a moment.
        let text = if path.starts_with("/realtime/") && status.is_success() {
            read_for(resp, std::time::Duration::from_millis(50)).await
        } else {
            resp.text().await.unwrap_or_default()
        };
        let shown = || {
            format!(
                "seed {seed}: {method} {path}{query} with {} → {status}: {text}",
                String::from_utf8_lossy(&body)
            )
        };
        assert!(status.as_u16() < 500, "{}", shown());
        if key == other {
            assert!(!text.contains(MARKER), "tenant B saw A's data: {}", shown());
        }
    }
    // The host is unharmed.
    let after = host.trigger("echo", json!("after")).await;
    assert_eq!(host.wait_final(&after).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_just_over_the_limit_is_refused_naming_the_payload_and_its_limit() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    // Past the router's body limit (the payload's plus 64 KiB), so the body is never read whole.
    let payload = "x".repeat((3 << 20) + (100 << 10));
    let (status, body) = host
        .post("/api/v1/tasks/echo/trigger", json!({ "payload": payload }))
        .await;
    assert_eq!(status, 413, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("payload") && message.contains("3145728"),
        "names the payload and the limit: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_operations_reach_the_parent_and_the_root_and_a_replay_keeps_the_metadata() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let parent = host
        .trigger_with(
            "parent",
            json!({ "items": [["echo", 1]], "wait": false }),
            json!({ "metadata": { "from": "trigger" } }),
        )
        .await;
    let run = host.wait_final(&parent).await;
    let child = run["output"][0].as_str().unwrap().to_owned();
    let (status, body) = host
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/runs/{child}/metadata"),
            Some(json!({
                "operations": [{ "type": "set", "key": "mine", "value": 1 }],
                "parentOperations": [{ "type": "increment", "key": "children", "value": 1 }],
                "rootOperations": [{ "type": "append", "key": "log", "value": "child" }],
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"], json!({ "mine": 1 }), "the child's own");
    let (_, parent_metadata) = host.get(&format!("/api/v1/runs/{parent}/metadata")).await;
    // The parent is also the root here.
    assert_eq!(
        parent_metadata["metadata"],
        json!({ "from": "trigger", "children": 1, "log": ["child"] })
    );
    // A replay is a new run with the same payload, tags and metadata.
    let (status, replayed) = host
        .post(&format!("/api/v1/runs/{parent}/replay"), json!({}))
        .await;
    assert_eq!(status, 200, "{replayed}");
    let replayed = host.run(replayed["id"].as_str().unwrap()).await;
    assert_eq!(
        replayed["metadata"],
        json!({ "from": "trigger", "children": 1, "log": ["child"] })
    );
}
