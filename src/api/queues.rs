//! Queue endpoints (Trigger.dev's `/api/v1/queues…`) and the admin's environment limits.
//!
//! A queue is named in the path by id (`queue_…`, the default), or with `type` `task` (the path is
//! a task id: that task's own queue) or `custom` (the path is a named queue's name) — in the query
//! string for `GET`, in the body for `POST`, as Trigger.dev's clients send it.

use crate::sandbox::http::parse_allow_list;
use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiState, Authed, body_bytes, dto, json_object, required};
use crate::engine::MAX_PAYLOAD_BYTES;
use crate::engine::{EnvironmentLimit, QueueStats};
use crate::model::{Environment, QueueRef};
use crate::store::EnvironmentChange;

/// Default and largest page of the queues list (Trigger.dev's defaults).
const DEFAULT_PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 100;
/// Trigger.dev's bounds on a queue's concurrency limit.
const MAX_QUEUE_LIMIT: u32 = 100_000;

fn queue_ref(param: String, kind: Option<&str>) -> Result<QueueRef, ApiError> {
    match kind.unwrap_or("id") {
        "id" => Ok(QueueRef::Id(param)),
        "task" => Ok(QueueRef::Task(param)),
        "custom" => Ok(QueueRef::Custom(param)),
        other => Err(ApiError::bad_request(format!(
            "`type` must be `id`, `task` or `custom`, not `{other}`"
        ))),
    }
}

/// The queue named by the path and the body's `type`.
fn body_queue_ref(
    param: String,
    body: &serde_json::Map<String, Value>,
) -> Result<QueueRef, ApiError> {
    let kind = match body.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`type` must be `id`, `task` or `custom`",
            ));
        }
    };
    queue_ref(param, kind)
}

fn queue_json(q: &QueueStats) -> Value {
    let queue = &q.queue;
    // A task's own queue is shown by its task id, as Trigger.dev does.
    let name = queue.task_id().unwrap_or(&queue.name);
    json!({
        "id": queue.id,
        "name": name,
        "type": queue.kind.as_str(),
        "running": q.running,
        "queued": q.queued,
        "paused": queue.paused,
        "concurrencyLimit": queue.effective_limit(),
        "concurrency": {
            "current": queue.effective_limit(),
            "base": queue.concurrency_limit,
            "override": queue.override_limit,
            "overriddenAt": queue.overridden_at.map(dto::iso),
            // Trigger.dev names the dashboard user who set an override; API overrides have none.
            "overriddenBy": null,
        },
        // A waiting run holds no slot in kiln.
        "releaseConcurrencyOnWaitpoint": true,
    })
}

pub(super) async fn list_queues(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let number = |key: &str, default: usize| -> Result<usize, ApiError> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::bad_request(format!("`{key}` must be a whole number from 1, not `{v}`"))
            }),
        }
    };
    let page = number("page", 1)?;
    let per_page = number("perPage", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE);
    let offset = (page - 1).saturating_mul(per_page);
    let (queues, count) = state.engine.list_queues(&env, offset, per_page).await?;
    let data: Vec<Value> = queues.iter().map(queue_json).collect();
    Ok(Json(json!({
        "data": data,
        "pagination": {
            "currentPage": page,
            "totalPages": count.div_ceil(per_page as u64),
            "count": count,
        },
    })))
}

pub(super) async fn retrieve_queue(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(param): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let queue = queue_ref(param, query.get("type").map(String::as_str))?;
    Ok(Json(queue_json(&state.engine.queue(&env, queue).await?)))
}

pub(super) async fn pause_queue(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(param): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let queue = body_queue_ref(param, &body)?;
    let paused = match required(&body, "action", "`pause` or `resume`")?.as_str() {
        Some("pause") => true,
        Some("resume") => false,
        _ => {
            return Err(ApiError::bad_request(
                "`action` must be `pause` or `resume`",
            ));
        }
    };
    Ok(Json(queue_json(
        &state.engine.pause_queue(&env, queue, paused).await?,
    )))
}

pub(super) async fn override_queue_limit(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(param): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let queue = body_queue_ref(param, &body)?;
    let limit = required(&body, "concurrencyLimit", "a whole number from 0 to 100000")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_QUEUE_LIMIT)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`concurrencyLimit` must be a whole number from 0 to {MAX_QUEUE_LIMIT}"
            ))
        })?;
    Ok(Json(queue_json(
        &state
            .engine
            .override_queue_limit(&env, queue, Some(limit))
            .await?,
    )))
}

pub(super) async fn reset_queue_limit(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(param): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let queue = body_queue_ref(param, &body)?;
    Ok(Json(queue_json(
        &state.engine.override_queue_limit(&env, queue, None).await?,
    )))
}

/// Rules one environment's allow-list may hold.
const MAX_OUTBOUND_RULES: usize = 100;

fn environment_json(e: &EnvironmentLimit) -> Value {
    let Environment {
        id,
        project_slug,
        slug,
        limits,
    } = &e.environment;
    json!({
        "id": id,
        "project": project_slug,
        "environment": slug,
        "concurrencyLimit": e.concurrency_limit,
        "running": e.running,
        "maxComponentBytes": limits.max_component_bytes,
        "maxPayloadBytes": limits.max_payload_bytes,
        "allowedOutboundHosts": e.allowed_outbound_hosts,
    })
}

pub(super) async fn list_environments(
    State(state): State<ApiState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let envs = state.engine.environments().await?;
    let data: Vec<Value> = envs.iter().map(environment_json).collect();
    Ok(Json(json!({ "data": data })))
}

/// `PUT /api/v1/admin/environments/{project}/{environment}` with any of `concurrencyLimit`,
/// `maxComponentBytes`, `maxPayloadBytes` (`null`: back to the host default; absent: unchanged).
pub(super) async fn update_environment(
    State(state): State<ApiState>,
    _admin: Admin,
    Path((project, environment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let number = |field: &str, max: u64| -> Result<Option<Option<u64>>, ApiError> {
        match body.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v.as_u64().filter(|n| *n <= max).map(|n| Some(Some(n))).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{field}` must be a whole number from 0 to {max}, or null for the host default"
                ))
            }),
        }
    };
    if let Some(other) = body.keys().find(|k| {
        ![
            "concurrencyLimit",
            "maxComponentBytes",
            "maxPayloadBytes",
            "allowedOutboundHosts",
        ]
        .contains(&k.as_str())
    }) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{other}`; an environment takes concurrencyLimit, maxComponentBytes, maxPayloadBytes and allowedOutboundHosts"
        )));
    }
    let allowed_outbound_hosts = match body.get("allowedOutboundHosts") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(rules)) => {
            let rules = rules
                .iter()
                .map(|r| {
                    r.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::bad_request("`allowedOutboundHosts` holds strings")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if rules.len() > MAX_OUTBOUND_RULES {
                return Err(ApiError::bad_request(format!(
                    "`allowedOutboundHosts` takes at most {MAX_OUTBOUND_RULES} rules"
                )));
            }
            parse_allow_list(&rules).map_err(ApiError::bad_request)?;
            Some(rules)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "`allowedOutboundHosts` must be an array of scheme://host[:port] rules, or null for none",
            ));
        }
    };
    let change = EnvironmentChange {
        concurrency_limit: number("concurrencyLimit", u64::from(MAX_QUEUE_LIMIT))?
            .map(|l| l.map(|n| n as u32)),
        max_component_bytes: number("maxComponentBytes", state.max_component_bytes as u64)?,
        max_payload_bytes: number("maxPayloadBytes", MAX_PAYLOAD_BYTES as u64)?,
        allowed_outbound_hosts,
    };
    if change == EnvironmentChange::default() {
        return Err(ApiError::bad_request(
            "give at least one of concurrencyLimit, maxComponentBytes, maxPayloadBytes, allowedOutboundHosts",
        ));
    }
    let updated = state
        .engine
        .update_environment(&project, &environment, change)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("environment `{project}/{environment}` not found"),
            )
        })?;
    Ok(Json(environment_json(&updated)))
}
