//! Serves the web dashboard (`crate::dashboard`'s built-in files) under `/dashboard/`, and the
//! sign-in check it makes: `GET /api/v1/dashboard/session` says whose key the bearer is.
//!
//! The files are public and static: every dashboard URL that is not a file loads the same page,
//! which routes in the browser, and no response of these routes carries data. The page reads
//! everything through the JSON API with the key the person signed in with. Responses carry a
//! strict Content-Security-Policy (only this origin's scripts, styles and connections; no
//! framing), so a value the page shows can never run as code.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiState, Authed};
use crate::dashboard::{self, Asset};

/// Where the dashboard lives.
pub const PATH: &str = "/dashboard/";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes: its page and files, and `/` sending a browser to it.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PATH) }))
        .route("/dashboard", get(|| async { Redirect::to(PATH) }))
        .route("/dashboard/", get(page))
        .route("/dashboard/{*path}", get(file))
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag();
    let mut headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_TYPE, asset.content_type());
    // Revalidated on every load (cheap with the ETag), so an upgraded host is seen at once.
    set(header::CACHE_CONTROL, "no-cache");
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    if let Ok(tag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, tag);
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.bytes).into_response()
}

async fn page(request: HeaderMap) -> Response {
    serve(dashboard::index(), &request)
}

/// A file under `assets/`, or the page for any other dashboard path (the browser routes it).
async fn file(Path(path): Path<String>, request: HeaderMap) -> Response {
    match path.strip_prefix("assets/") {
        Some(name) => match dashboard::asset(name) {
            Some(asset) => serve(asset, &request),
            None => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such dashboard file",
            )
                .into_response(),
        },
        None => serve(dashboard::index(), &request),
    }
}

/// `GET /api/v1/dashboard/session`: whether the bearer is an environment's secret key (and which
/// environment, with its limits) or the host's admin key.
pub(super) async fn session(
    State(state): State<ApiState>,
    authed: Result<Authed, ApiError>,
    admin: Result<Admin, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let env = match (authed, admin) {
        (Ok(Authed(env)), _) => env,
        (_, Ok(Admin)) => return Ok(Json(json!({ "kind": "admin" }))),
        // A store that cannot answer says so; only two refusals make a wrong key.
        (Err(e), _) | (_, Err(e)) if e.status() != StatusCode::UNAUTHORIZED => return Err(e),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this key is neither an environment's secret key nor the host's admin key (it is unknown or revoked); \
                 sign in with an environment's key (<data-dir>/dev.key, or one from `kiln keys create`) or the admin key (<data-dir>/admin.key)",
            ));
        }
    };
    let e = state.engine.environment_overview(&env).await?;
    Ok(Json(json!({
        "kind": "environment",
        "environment": {
            "id": env.id,
            "project": env.project_slug,
            "environment": env.slug,
            "concurrencyLimit": e.concurrency_limit,
            "running": e.running,
            "maxComponentBytes": env.limits.max_component_bytes,
            "maxPayloadBytes": env.limits.max_payload_bytes,
            "allowedOutboundHosts": e.allowed_outbound_hosts,
        },
    })))
}
