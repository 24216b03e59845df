//! Wait token endpoints (Trigger.dev's `/api/v1/waitpoints/tokens…`), including the callback URL,
//! which needs no secret key: the capability in its path completes that one token.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::request::{Cursor, filter_values, time_param};
use super::scopes::Resource;
use super::{Access, ApiError, ApiState, Authed, KeyAccess, body_bytes, dto, json_object};
use crate::model::{Delay, TokenStatus, WaitToken, parse_duration};
use crate::sandbox::TokenRequest;
use crate::store::TokenFilter;

fn token_json(state: &ApiState, t: &WaitToken, with_output: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "url": state.engine.token_url(&t.id),
        "status": t.status.as_str(),
        "tags": t.tags,
        "createdAt": dto::iso(t.created_at),
    });
    let mut set = |k: &str, x: Option<Value>| {
        if let Some(x) = x {
            v[k] = x;
        }
    };
    set("completedAt", t.completed_at.map(|m| json!(dto::iso(m))));
    set("timeoutAt", t.timeout_at.map(|m| json!(dto::iso(m))));
    set("idempotencyKey", t.idempotency_key.clone().map(Value::from));
    set(
        "idempotencyKeyExpiresAt",
        t.idempotency_expires_at.map(|m| json!(dto::iso(m))),
    );
    if with_output && t.status != TokenStatus::Waiting {
        set("output", t.output.clone().map(Value::from));
        set("outputType", Some(json!("application/json")));
        set("outputIsError", Some(json!(t.output_is_error)));
    }
    v
}

/// How long a wait token's own public token may complete it (Trigger.dev's).
const WAIT_TOKEN_SECS: i64 = 24 * 3_600;

/// `POST /api/v1/waitpoints/tokens` with `{timeout?, idempotencyKey?, idempotencyKeyTTL?, tags?}`,
/// answered with a public token that completes it (`write:waitpoints:<id>`).
pub(super) async fn create_token(
    State(state): State<ApiState>,
    KeyAccess(access): KeyAccess,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let env = &access.env;
    let body = json_object(&body_bytes(body)?)?;
    let now = state.engine.now();
    let mut request = TokenRequest {
        timeout_ms: None,
        idempotency_key: None,
        idempotency_key_ttl_ms: None,
        tags: Vec::new(),
    };
    for (field, value) in &body {
        match field.as_str() {
            "timeout" => {
                request.timeout_ms = Some(
                    match dto::parse_delay(value, "timeout").map_err(ApiError::bad_request)? {
                        Delay::For(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                        Delay::Until(at) => u64::try_from(at.saturating_sub(now)).unwrap_or(0),
                    },
                );
            }
            "idempotencyKey" => {
                request.idempotency_key = Some(
                    value
                        .as_str()
                        .ok_or_else(|| ApiError::bad_request("idempotencyKey must be a string"))?
                        .to_owned(),
                );
            }
            "idempotencyKeyTTL" => {
                let ttl = value.as_str().and_then(parse_duration).ok_or_else(|| {
                    ApiError::bad_request(
                        "idempotencyKeyTTL must be a duration string like \"1h\" or \"30d\"",
                    )
                })?;
                request.idempotency_key_ttl_ms =
                    Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            }
            "tags" => {
                request.tags = dto::parse_tags(value, "tags").map_err(ApiError::bad_request)?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field `{other}`; a token takes timeout, idempotencyKey, idempotencyKeyTTL and tags"
                )));
            }
        }
    }
    let (token, cached) = state.engine.create_token(env, request).await?;
    let headers = access
        .token_headers(
            &state,
            vec![format!("write:waitpoints:{}", token.id)],
            WAIT_TOKEN_SECS,
        )
        .await?;
    let answer = json!({
        "id": token.id,
        "isCached": cached,
        "url": state.engine.token_url(&token.id),
    });
    Ok((headers, Json(answer)).into_response())
}

pub(super) async fn retrieve_token(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = state.engine.token(&env, &id).await?;
    Ok(Json(token_json(&state, &token, true)))
}

/// The completion data: the body's `data` (Trigger.dev's `{data}`), as JSON text.
fn completion_data(body: &[u8]) -> Result<String, ApiError> {
    let body = json_object(body)?;
    Ok(body.get("data").cloned().unwrap_or(Value::Null).to_string())
}

/// `POST /api/v1/waitpoints/tokens/{id}/complete` with `{data}` → `{success: true}` (a public
/// token needs `write:waitpoints:<id>`).
pub(super) async fn complete_token(
    State(state): State<ApiState>,
    access: Access,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let data = completion_data(&body_bytes(body)?)?;
    if access.is_token() {
        // The token must exist before the scopes are asked (a missing one is a 404).
        state.engine.token(&access.env, &id).await?;
        access.allow("write", &[Resource::of("waitpoints", &id)])?;
    }
    state.engine.complete_token(&access.env, &id, data).await?;
    Ok(Json(json!({ "success": true })))
}

/// `POST /api/v1/waitpoints/tokens/{id}/callback/{capability}`: the whole body is the data.
pub(super) async fn callback(
    State(state): State<ApiState>,
    Path((id, capability)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(body)?;
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        "null".to_owned()
    } else {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?
            .to_string()
    };
    state
        .engine
        .complete_token_by_callback(&id, &capability, data)
        .await?;
    Ok(Json(json!({ "success": true })))
}

/// `GET /api/v1/waitpoints/tokens` with Trigger.dev's filters and cursor pagination.
pub(super) async fn list_tokens(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = TokenFilter::default();
    let mut cursor = Cursor::default();
    for (key, value) in &query {
        if cursor.take(key, value)? {
            continue;
        }
        let values = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match key.as_str() {
            "filter[status]" => {
                for v in values() {
                    filter.statuses.push(TokenStatus::parse(&v.to_ascii_uppercase()).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "filter[status]: `{v}` is not a token status; use WAITING, COMPLETED or TIMED_OUT"
                        ))
                    })?);
                }
            }
            "filter[idempotencyKey]" => filter.idempotency_key = Some(value.clone()),
            "filter[tags]" => filter.tags.extend(values().map(str::to_owned)),
            "filter[createdAt][from]" => {
                filter.created_from = Some(time_param(key, value)?);
            }
            "filter[createdAt][to]" => filter.created_to = Some(time_param(key, value)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`; supported: filter[status], filter[idempotencyKey], filter[tags], filter[createdAt][from], filter[createdAt][to], page[size], page[after], page[before]"
                )));
            }
        }
    }
    filter_values(filter.statuses.len() + filter.tags.len())?;
    let Cursor {
        size,
        after,
        before,
    } = cursor.checked();
    let backwards = before.is_some();
    let had_cursor = after.is_some() || before.is_some();
    let (tokens, more) = state
        .engine
        .list_tokens(&env, filter, size, after, before)
        .await?;
    let data: Vec<Value> = tokens
        .iter()
        .map(|t| token_json(&state, t, false))
        .collect();
    let (first, last) = (tokens.first(), tokens.last());
    // Newest first: `next` pages to older tokens, `previous` to newer ones.
    let next = if backwards { had_cursor } else { more };
    let previous = if backwards { more } else { had_cursor };
    let mut pagination = json!({});
    if next && let Some(t) = last {
        pagination["next"] = json!(t.id);
    }
    if previous && let Some(t) = first {
        pagination["previous"] = json!(t.id);
    }
    Ok(Json(json!({ "data": data, "pagination": pagination })))
}
