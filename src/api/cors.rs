//! CORS on the routes a browser calls with a public access token, as Trigger.dev's server
//! answers them: a preflight (`OPTIONS`, before any auth) reflects the request's origin and
//! headers; every answer of those routes, errors included, carries the origin and exposes
//! `x-trigger-jwt` (so a page can read the token a trigger answers with); realtime answers allow
//! any origin and expose every header (the SDK's Electric client reads `electric-*`).
//!
//! Routes a browser has no business calling (secret-key routes: queues, envvars, schedules,
//! deployments, bulk actions, claims) get no CORS headers, as in Trigger.dev, so a page cannot
//! call them even with a key.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The routes a browser calls: method, and path with `*` for a segment.
const BROWSER_ROUTES: [(&str, &str); 13] = [
    ("POST", "/api/v1/tasks/*/trigger"),
    ("POST", "/api/v1/tasks/batch"),
    ("POST", "/api/v3/batches"),
    ("POST", "/api/v3/batches/*/items"),
    ("GET", "/api/v3/runs/*"),
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v2/batches/*"),
    ("POST", "/api/v1/waitpoints/tokens/*/complete"),
    ("POST", "/api/v1/idempotencyKeys/*/reset"),
    ("GET", "/realtime/v1/runs/*"),
    ("GET", "/realtime/v1/runs"),
    ("GET", "/realtime/v1/batches/*"),
    ("GET", "/api/v1/timezones"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Api,
    Realtime,
}

fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The kind of browser route `path` is for `method` (`None` for a preflight's method: any).
fn kind(method: Option<&str>, path: &str) -> Option<Kind> {
    BROWSER_ROUTES
        .iter()
        .find(|(m, p)| method.is_none_or(|method| method == *m) && matches(p, path))
        .map(|_| {
            if path.starts_with("/realtime/") {
                Kind::Realtime
            } else {
                Kind::Api
            }
        })
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn preflight(request: &Request) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response();
    let asked = request.headers();
    let headers = response.headers_mut();
    if let Some(origin) = asked.get(header::ORIGIN) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    set(
        headers,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        "GET,HEAD,PUT,PATCH,POST,DELETE",
    );
    if let Some(wanted) = asked.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, wanted.clone());
    }
    set(headers, header::ACCESS_CONTROL_MAX_AGE, "300");
    set(
        headers,
        header::VARY,
        "Origin, Access-Control-Request-Headers",
    );
    response
}

/// The middleware: answers preflights of browser routes and adds CORS headers to their answers.
pub(super) async fn cors(request: Request<Body>, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if request.method() == Method::OPTIONS {
        if kind(None, &path).is_some() {
            return preflight(&request);
        }
        return next.run(request).await;
    }
    let Some(kind) = kind(Some(request.method().as_str()), &path) else {
        return next.run(request).await;
    };
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    match kind {
        Kind::Realtime => {
            set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
            set(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS, "*");
            set(headers, header::CACHE_CONTROL, "no-store");
        }
        Kind::Api => {
            if let Some(origin) = origin {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                set(headers, header::VARY, "Origin");
            }
            set(
                headers,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "x-trigger-jwt,x-trigger-jwt-claims",
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_routes_are_matched_by_method_and_segments() {
        assert_eq!(
            kind(Some("POST"), "/api/v1/tasks/hello/trigger"),
            Some(Kind::Api)
        );
        assert_eq!(
            kind(Some("GET"), "/realtime/v1/runs/run_1"),
            Some(Kind::Realtime)
        );
        assert_eq!(kind(Some("GET"), "/realtime/v1/runs"), Some(Kind::Realtime));
        assert_eq!(kind(None, "/api/v3/batches/batch_1/items"), Some(Kind::Api));
        assert_eq!(kind(Some("GET"), "/api/v1/tasks/hello/trigger"), None);
        assert_eq!(
            kind(Some("GET"), "/api/v1/queues"),
            None,
            "a secret-key route"
        );
        assert_eq!(kind(Some("POST"), "/api/v1/tasks//trigger"), None);
        assert_eq!(kind(Some("GET"), "/api/v3/runs/a/b"), None);
    }
}
