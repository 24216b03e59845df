//! Outbound HTTP from tasks: denied unless the environment allows the host, limited per attempt,
//! and replay-safe (a resumed run gets its responses from the journal). A loopback server counts
//! the requests that really arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};

use crate::restart::ServeProcess;
use crate::support::{Options, TestHost, guests};

/// A server on loopback that counts requests and remembers their idempotency keys.
#[derive(Clone, Default)]
struct Counter {
    hits: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Counter {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn hello(State(c): State<Counter>, headers: HeaderMap) -> String {
    let n = c.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(key) = headers.get("idempotency-key") {
        c.keys
            .lock()
            .unwrap()
            .push(key.to_str().unwrap_or_default().to_owned());
    }
    format!("hello {n}")
}

/// Starts the server; returns its `http://127.0.0.1:PORT` and the counter.
async fn server() -> (String, Counter) {
    let counter = Counter::default();
    let app = Router::new()
        .route("/hello", get(hello))
        .route(
            "/big",
            get(|State(c): State<Counter>| async move {
                c.hits.fetch_add(1, Ordering::SeqCst);
                "x".repeat(100_000)
            }),
        )
        .route(
            "/slow",
            get(|State(c): State<Counter>| async move {
                c.hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .with_state(counter.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), counter)
}

/// Sets the dev environment's allow-list with the admin key.
async fn allow(host: &TestHost, rules: Value) -> (u16, Value) {
    let (status, body) = host
        .request_as(
            &host.admin_key(),
            Method::PUT,
            "/api/v1/admin/environments/default/dev",
            Some(json!({ "allowedOutboundHosts": rules })),
        )
        .await;
    (status.as_u16(), body)
}

async fn fetch(host: &TestHost, payload: Value) -> Value {
    let id = host.trigger("fetch", payload).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    run
}

async fn log_text(host: &TestHost, run: &Value) -> String {
    let (_, logs) = host
        .get(&format!(
            "/api/v1/runs/{}/logs",
            run["id"].as_str().unwrap()
        ))
        .await;
    logs.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_denied_unless_the_environment_allows_the_host() {
    let (base, counter) = server().await;
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let url = format!("{base}/hello");

    // Nothing is allowed by default: the guest gets the error, the log says how to allow it.
    let run = fetch(&host, json!({ "urls": [url] })).await;
    assert_eq!(run["output"][0]["denied"], true, "{run:#}");
    let log = log_text(&host, &run).await;
    assert!(
        log.contains("denied") && log.contains("--allow-host") && log.contains("default"),
        "{log}"
    );
    assert_eq!(counter.hits(), 0, "a denied request is not sent");

    // A rule naming the loopback host exactly allows it.
    let port = base.rsplit(':').next().unwrap();
    let (status, env) = allow(&host, json!([format!("http://127.0.0.1:{port}")])).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        env["allowedOutboundHosts"][0],
        format!("http://127.0.0.1:{port}")
    );
    let run = fetch(&host, json!({ "urls": [url] })).await;
    assert_eq!(run["output"], json!([{ "status": 200, "body": "hello 1" }]));
    assert_eq!(counter.hits(), 1);

    // A wildcard never reaches an internal address; another port is another origin.
    allow(&host, json!(["*://*:*"])).await;
    let run = fetch(&host, json!({ "urls": [url] })).await;
    assert_eq!(run["output"][0]["denied"], true, "{run:#}");
    assert!(log_text(&host, &run).await.contains("internal address"));
    allow(&host, json!(["http://127.0.0.1:1"])).await;
    let run = fetch(&host, json!({ "urls": [url] })).await;
    assert_eq!(run["output"][0]["denied"], true, "{run:#}");
    assert_eq!(counter.hits(), 1);

    // Bad rules are refused with the form to use; null takes every host away.
    for bad in [
        json!(["example.com"]),
        json!(["ftp://x"]),
        json!("http://x"),
    ] {
        let (status, error) = allow(&host, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains("scheme"),
            "{error}"
        );
    }
    let (status, env) = allow(&host, Value::Null).await;
    assert_eq!(
        (status, env["allowedOutboundHosts"].clone()),
        (200, json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fetches_waits_and_fetches_sends_two_requests_across_its_replay() {
    let (base, counter) = server().await;
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(50)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    allow(&host, json!([base.clone()])).await;
    let url = format!("{base}/hello");
    let run = fetch(
        &host,
        json!({ "urls": [url, url], "wait_ms": 300, "idempotent": true }),
    )
    .await;
    // The second request came after the resume, whose replay answered the first from the
    // journal: the server saw two requests, and the run saw both answers.
    assert_eq!(
        run["output"],
        json!([{ "status": 200, "body": "hello 1" }, { "status": 200, "body": "hello 2" }])
    );
    assert_eq!(counter.hits(), 2);
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        *counter.keys.lock().unwrap(),
        [format!("{id}-fetch-0"), format!("{id}-fetch-1")],
        "stable idempotency keys"
    );
}

/// Fetches `url` and expects the guest's error to name `error` and the run's log to say `logged`.
async fn fails_with(host: &TestHost, url: &str, error: &str, logged: &str) {
    let run = fetch(host, json!({ "urls": [url] })).await;
    let got = run["output"][0]["error"].as_str().unwrap_or_default();
    assert!(got.contains(error), "{run:#}");
    let log = log_text(host, &run).await;
    assert!(log.contains(logged), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_per_attempt_limit_is_enforced() {
    let (base, counter) = server().await;
    let host = TestHost::start_with(Options {
        http_limits: kiln::sandbox::http::HttpLimits {
            max_requests: 2,
            max_response_bytes: 10_000,
            connect_timeout: Duration::from_millis(300),
            total_timeout: Duration::from_millis(700),
        },
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    allow(&host, json!([base.clone()])).await;

    let hello = format!("{base}/hello");
    let run = fetch(&host, json!({ "urls": [hello, hello, hello] })).await;
    assert_eq!(run["output"][1]["status"], 200, "{run:#}");
    assert_eq!(
        run["output"][2]["denied"], true,
        "the third request: {run:#}"
    );
    assert!(
        log_text(&host, &run)
            .await
            .contains("already made 2 requests")
    );

    fails_with(
        &host,
        &format!("{base}/big"),
        "HttpResponseBodySize",
        "larger than the limit of 10000 bytes",
    )
    .await;
    fails_with(
        &host,
        &format!("{base}/slow"),
        "Timeout",
        "took longer than 700 ms",
    )
    .await;
    assert_eq!(
        counter.hits(),
        4,
        "two hellos, the big one and the slow one"
    );

    // A listener whose accept queue is full never completes a connection.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(100), connect).await {
            held.push(c);
        }
    }
    allow(&host, json!([format!("http://{addr}")])).await;
    fails_with(
        &host,
        &format!("http://{addr}/"),
        "ConnectionTimeout",
        "connection timeout",
    )
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_two_requests_sends_at_most_one_extra() {
    let (base, counter) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ["--wait-threshold", "50ms"];
    let first = ServeProcess::start(dir.path(), &serve);
    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    first
        .call_as(
            admin.trim(),
            Method::PUT,
            "/api/v1/admin/environments/default/dev",
            Some(json!({ "allowedOutboundHosts": [base.clone()] })),
        )
        .await;
    let url = format!("{base}/hello");
    let id = first
        .trigger("fetch", json!({ "urls": [url, url], "wait_ms": 1500 }))
        .await;
    first.wait_for(&id, |r| r["status"] == "WAITING").await;
    assert_eq!(counter.hits(), 1);
    first.kill();

    let second = ServeProcess::start(dir.path(), &serve);
    let run = second.wait_for(&id, |r| r["status"] == "COMPLETED").await;
    assert_eq!(
        run["output"][1],
        json!({ "status": 200, "body": "hello 2" })
    );
    // The first response was journaled with the checkpoint, so nothing was sent twice here; the
    // guarantee is at most one extra.
    assert!(counter.hits() <= 3, "{} requests", counter.hits());
    assert_eq!(counter.hits(), 2);
    assert_eq!(
        run["output"][0],
        json!({ "status": 200, "body": "hello 1" })
    );
}
