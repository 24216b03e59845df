//! CORS as Trigger.dev's server answers it: preflights of the routes a browser calls, the
//! origin and the exposed token headers on their answers (errors too), and nothing on the
//! secret-key routes.

use reqwest::Method;
use serde_json::json;

use crate::support::{TestHost, guests};

const ORIGIN: &str = "http://127.0.0.1:5173";

async fn send(
    host: &TestHost,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", host.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_routes_answer_preflights_and_expose_what_the_sdk_reads() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    // A preflight needs no key and reflects the origin and the headers asked for.
    let preflight = send(
        &host,
        Method::OPTIONS,
        "/api/v1/tasks/hello/trigger",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,x-trigger-client",
            ),
        ],
    )
    .await;
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers"),
        Some("authorization,content-type,x-trigger-client")
    );
    assert_eq!(header(&preflight, "access-control-max-age"), Some("300"));

    let bearer = format!("Bearer {}", host.key);
    let trigger = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks/hello/trigger", host.url))
        .header("origin", ORIGIN)
        .header("authorization", &bearer)
        .json(&json!({ "payload": { "name": "cors" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(trigger.status(), 200);
    assert_eq!(
        header(&trigger, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&trigger, "access-control-expose-headers"),
        Some("x-trigger-jwt,x-trigger-jwt-claims")
    );
    // Refusals carry the headers too, so a page can read why.
    let refused = send(
        &host,
        Method::GET,
        "/api/v3/runs/run_x",
        &[("origin", ORIGIN)],
    )
    .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let realtime = send(
        &host,
        Method::GET,
        "/realtime/v1/runs/run_missing?offset=-1",
        &[("origin", ORIGIN), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(realtime.status(), 404);
    assert_eq!(header(&realtime, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&realtime, "access-control-expose-headers"),
        Some("*")
    );

    // Secret-key routes get none.
    let queues = send(
        &host,
        Method::GET,
        "/api/v1/queues",
        &[("origin", ORIGIN), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(queues.status(), 200);
    assert_eq!(header(&queues, "access-control-allow-origin"), None);
    let preflight = send(
        &host,
        Method::OPTIONS,
        "/api/v1/queues",
        &[("origin", ORIGIN), ("access-control-request-method", "GET")],
    )
    .await;
    assert_ne!(preflight.status(), 200);
}
