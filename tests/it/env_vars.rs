//! Environment variables: Trigger.dev's endpoints, encrypted at rest, visible to the guest through
//! WASI, fixed when a run starts, and shown nowhere but the environment's own endpoints.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

const BASE: &str = "/api/v1/projects/default/envvars/dev";

/// What the `env` task reports for a value: its length and byte sum.
fn fingerprint(value: &str) -> Value {
    json!({ "len": value.len(), "sum": value.bytes().map(u64::from).sum::<u64>() })
}

async fn call(host: &TestHost, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = host.request(method, path, body).await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_created_listed_changed_imported_and_deleted() {
    let host = TestHost::start().await;
    let var = |name: &str| format!("{BASE}/{name}");

    let created = call(
        &host,
        Method::POST,
        BASE,
        Some(json!({ "name": "API_KEY", "value": "k-1" })),
    )
    .await;
    assert_eq!(created, (200, json!({ "success": true })));
    let (status, again) = call(
        &host,
        Method::POST,
        BASE,
        Some(json!({ "name": "API_KEY", "value": "k-2" })),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(
        call(&host, Method::GET, &var("API_KEY"), None).await,
        (
            200,
            json!({ "name": "API_KEY", "value": "k-1", "isSecret": false })
        )
    );
    let updated = call(
        &host,
        Method::PUT,
        &var("API_KEY"),
        Some(json!({ "value": "k-2" })),
    )
    .await;
    assert_eq!(updated.0, 200);
    let (status, _) = call(
        &host,
        Method::PUT,
        &var("MISSING"),
        Some(json!({ "value": "x" })),
    )
    .await;
    assert_eq!(status, 404);

    // Import: without override existing names keep their values and are named; with it they change.
    let (status, imported) = call(
        &host,
        Method::POST,
        &format!("{BASE}/import"),
        Some(json!({ "variables": { "API_KEY": "k-3", "REGION": "eu" } })),
    )
    .await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["kept"], json!(["API_KEY"]));
    assert_eq!(
        call(&host, Method::GET, BASE, None).await,
        (
            200,
            json!([
                { "name": "API_KEY", "value": "k-2", "isSecret": false },
                { "name": "REGION", "value": "eu", "isSecret": false }
            ])
        )
    );
    let (status, _) = call(
        &host,
        Method::POST,
        &format!("{BASE}/import"),
        Some(json!({ "variables": { "API_KEY": "k-3" }, "override": true })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        call(&host, Method::GET, &var("API_KEY"), None).await.1,
        json!({ "name": "API_KEY", "value": "k-3", "isSecret": false })
    );

    assert_eq!(
        call(&host, Method::DELETE, &var("REGION"), None).await.0,
        200
    );
    assert_eq!(
        call(&host, Method::DELETE, &var("REGION"), None).await.0,
        404
    );
    assert_eq!(call(&host, Method::GET, &var("REGION"), None).await.0, 404);

    // Bad input says what is wrong and stores nothing.
    for (body, needle) in [
        (
            json!({ "name": "1BAD", "value": "x" }),
            "not a valid variable name",
        ),
        (
            json!({ "name": "A-B", "value": "x" }),
            "not a valid variable name",
        ),
        (json!({ "name": "KILN_X", "value": "x" }), "kiln's own"),
        (
            json!({ "name": "BIG", "value": "v".repeat(70_000) }),
            "the limit is 65536",
        ),
        (json!({ "name": "N" }), "`value` is required"),
        (json!({ "name": "N", "value": 5 }), "must be a string"),
        (
            json!({ "name": "N", "value": "x", "secret": true }),
            "unknown field `secret`",
        ),
    ] {
        let (status, error) = call(&host, Method::POST, BASE, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (status, _) = call(
        &host,
        Method::POST,
        &format!("{BASE}/import"),
        Some(json!({ "variables": { "OK": "1", "2BAD": "x" } })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        call(&host, Method::GET, BASE, None).await.1,
        json!([{ "name": "API_KEY", "value": "k-3", "isSecret": false }]),
        "a refused import sets nothing"
    );

    // Another environment's variables do not exist for this key, and its key sees none of these.
    let (_, other) = host.new_environment_key("acme", "prod").await;
    assert_eq!(
        call(
            &host,
            Method::GET,
            "/api/v1/projects/acme/envvars/prod",
            None
        )
        .await
        .0,
        404
    );
    let (status, theirs) = host
        .request_as(
            &other,
            Method::GET,
            "/api/v1/projects/acme/envvars/prod",
            None,
        )
        .await;
    assert_eq!((status, theirs), (StatusCode::OK, json!([])));
    let (status, _) = host
        .request_as(&other, Method::GET, &var("API_KEY"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_its_runs_values_fixed_at_start_and_nothing_else_shows_them() {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(50)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    let secret = "sk-live-51Hq-very-secret-value";
    let (status, _) = call(
        &host,
        Method::POST,
        BASE,
        Some(json!({ "name": "API_KEY", "value": secret })),
    )
    .await;
    assert_eq!(status, 200);

    // The run checkpoints on a wait; the value changes meanwhile; the run still sees the one it
    // started with, before and after its replay.
    let run = host
        .trigger(
            "env",
            json!({ "names": ["API_KEY", "UNSET"], "wait_ms": 500 }),
        )
        .await;
    host.wait_status(&run, "WAITING").await;
    let (status, _) = call(
        &host,
        Method::PUT,
        &format!("{BASE}/API_KEY"),
        Some(json!({ "value": "rotated" })),
    )
    .await;
    assert_eq!(status, 200);
    let done = host.wait_final(&run).await;
    assert_eq!(done["status"], "COMPLETED", "{done:#}");
    let seen = json!({ "API_KEY": fingerprint(secret), "UNSET": null });
    assert_eq!(done["output"], json!({ "before": seen, "after": seen }));
    // A new run starts with the new value.
    let next = host.trigger("env", json!({ "names": ["API_KEY"] })).await;
    assert_eq!(
        host.wait_final(&next).await["output"]["before"]["API_KEY"],
        fingerprint("rotated")
    );

    // The value appears in no response but the variables endpoints, in no log, and not in the
    // database files (it is stored sealed).
    for path in [
        format!("/api/v3/runs/{run}"),
        format!("/api/v1/runs/{run}/logs"),
        "/api/v1/runs".to_owned(),
        "/api/v1/deployments/latest".to_owned(),
    ] {
        let (_, body) = host.get(&path).await;
        assert!(!body.to_string().contains(secret), "{path} shows the value");
    }
    let dir = host.dir.clone();
    let _temp = host.stop().await;
    if let Some(place) = crate::support::StoredDb::holds_plain(&dir, secret.as_bytes()) {
        panic!("{place} holds the value in plain text");
    }
    let mode = std::fs::metadata(dir.join("secrets.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // After a restart the key opens the values again.
    let host = TestHost::start_in(&dir, Options::default()).await;
    let (status, value) = call(&host, Method::GET, &format!("{BASE}/API_KEY"), None).await;
    assert_eq!(
        (status, value),
        (
            200,
            json!({ "name": "API_KEY", "value": "rotated", "isSecret": false })
        )
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_variable_reads_back_redacted_stays_secret_and_runs_see_its_value() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let var = format!("{BASE}/TOKEN");
    let created = call(
        &host,
        Method::POST,
        BASE,
        Some(json!({ "name": "TOKEN", "value": "s3cret", "isSecret": true })),
    )
    .await;
    assert_eq!(created, (200, json!({ "success": true })));
    // A name that exists stays taken: the SDK is told not to retry.
    let again = reqwest::Client::new()
        .post(format!("{}{BASE}", host.url))
        .bearer_auth(&host.key)
        .json(&json!({ "name": "TOKEN", "value": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["x-should-retry"], "false");
    let redacted = json!({ "name": "TOKEN", "value": "<redacted>", "isSecret": true });
    assert_eq!(
        call(&host, Method::GET, &var, None).await,
        (200, redacted.clone())
    );
    assert_eq!(
        call(&host, Method::GET, BASE, None).await,
        (200, json!([redacted.clone()]))
    );
    // Writing the value again (a PUT, or an import without `isSecret`) keeps it secret.
    let (status, _) = call(
        &host,
        Method::PUT,
        &var,
        Some(json!({ "value": "rotated" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &host,
        Method::POST,
        &format!("{BASE}/import"),
        Some(json!({ "variables": { "TOKEN": "again", "PLAIN": "p" }, "override": true, "source": { "type": "user", "userId": "u" } })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        call(&host, Method::GET, BASE, None).await.1,
        json!([
            { "name": "PLAIN", "value": "p", "isSecret": false },
            redacted
        ])
    );
    let run = host.trigger("env", json!({ "names": ["TOKEN"] })).await;
    assert_eq!(
        host.wait_final(&run).await["output"]["before"]["TOKEN"],
        fingerprint("again")
    );
    let (status, error) = call(
        &host,
        Method::POST,
        &format!("{BASE}/import"),
        Some(json!({ "variables": { "A": "1" }, "parentVariables": { "A": "2" } })),
    )
    .await;
    assert_eq!(status, 400, "{error}");
}
