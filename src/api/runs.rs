//! One run and lists of runs: retrieve, list with filters and cursors, cancel, replay, reschedule,
//! tags, metadata, logs, and idempotency key reset.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use super::request::{Cursor, filter_values, time_param};
use super::scopes::Resource;
use super::{Access, ApiError, ApiState, Authed, body_bytes, dto, json_object, required};
use crate::engine::{CancelOutcome, EngineError};
use crate::model::RunStatus;
use crate::store::RunFilter;

/// Most log lines one logs request returns.
pub(super) const MAX_LOG_PAGE: usize = 1_000;

/// What a token may read a run by (Trigger.dev's): the run, its task, any of its tags, its batch.
pub(super) fn read_run(access: &Access, run: &crate::model::Run) -> Result<(), ApiError> {
    let mut resources = vec![
        Resource::of("runs", &run.id),
        Resource::of("tasks", &run.task_id),
    ];
    resources.extend(run.tags.iter().map(|t| Resource::of("tags", t)));
    if let Some(batch) = &run.batch_id {
        resources.push(Resource::of("batch", batch));
    }
    access.allow("read", &resources)
}

pub(super) async fn retrieve_run(
    State(state): State<ApiState>,
    access: Access,
    Path(run_id): Path<String>,
) -> Result<Json<dto::RunDto>, ApiError> {
    let view = state
        .engine
        .run_view(&access.env.id, &run_id)
        .await?
        .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id)))?;
    read_run(&access, &view.run)?;
    Ok(Json(dto::RunDto::from(&view)))
}

pub(super) async fn list_runs(
    State(state): State<ApiState>,
    access: Access,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<dto::ListRunsResponse>, ApiError> {
    access.allow("read", &[Resource::all("runs")])?;
    let env = access.env;
    let mut filter = RunFilter::default();
    let mut cursor = Cursor::default();
    for (key, value) in &query {
        if cursor.take(key, value)? {
            continue;
        }
        let values = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match key.as_str() {
            "filter[status]" => {
                for v in values() {
                    let status = RunStatus::parse(v).ok_or_else(|| {
                        let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                        ApiError::bad_request(format!(
                            "filter[status]: `{v}` is not a run status (use {})",
                            names.join(", ")
                        ))
                    })?;
                    filter.statuses.push(status);
                }
            }
            "filter[taskIdentifier]" => filter.task_ids.extend(values().map(str::to_owned)),
            "filter[version]" => filter.versions.extend(values().map(str::to_owned)),
            "filter[tag]" => filter.tags.extend(values().map(str::to_owned)),
            "filter[batch]" => filter.batch_id = Some(value.clone()),
            "filter[idempotencyKey]" => filter.idempotency_key = Some(value.clone()),
            "filter[createdAt][from]" => filter.created_from = Some(time_param(key, value)?),
            "filter[createdAt][to]" => filter.created_to = Some(time_param(key, value)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`; supported: filter[status], filter[taskIdentifier], filter[version], filter[tag], filter[batch], filter[idempotencyKey], filter[createdAt][from], filter[createdAt][to], page[size], page[after], page[before]"
                )));
            }
        }
    }
    filter_values(
        filter.statuses.len() + filter.task_ids.len() + filter.versions.len() + filter.tags.len(),
    )?;
    let Cursor {
        size,
        after,
        before,
    } = cursor.checked();
    let page = state
        .engine
        .list_runs(&env, filter, size, after, before)
        .await?;
    Ok(Json(dto::ListRunsResponse::new(&page, &env)))
}

pub(super) async fn cancel_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.engine.cancel(&env, &run_id).await? {
        CancelOutcome::Canceled => Ok(Json(json!({ "id": run_id }))),
        CancelOutcome::AlreadyFinished(status) => Ok(Json(json!({
            "id": run_id,
            "message": format!("the run already finished with status {status}; nothing to cancel"),
        }))),
    }
}

/// `POST /api/v1/runs/{id}/replay`, with Trigger.dev's optional body of what to change.
pub(super) async fn replay_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let changes = dto::parse_replay(body).map_err(ApiError::bad_request)?;
    let run = state.engine.replay(&env, &run_id, changes).await?;
    Ok(Json(json!({ "id": run.id })))
}

pub(super) async fn reschedule_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<dto::RunDto>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let delay = required(&body, "delay", "a duration like \"1h\" or an ISO 8601 date")?;
    let delay = dto::parse_delay(delay, "delay").map_err(ApiError::bad_request)?;
    let run = state.engine.reschedule(&env, &run_id, delay).await?;
    let attempts = state.engine.attempts(&env, &run.id).await?;
    Ok(Json(dto::RunDto::new(&run, &attempts, &[])))
}

pub(super) async fn add_tags(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let tags = required(&body, "tags", "a string or an array of strings")?;
    let tags = dto::parse_tags(tags, "tags").map_err(ApiError::bad_request)?;
    let all = state.engine.add_tags(&env, &run_id, tags).await?;
    Ok(Json(
        json!({ "message": format!("the run has {} tags", all.len()), "tags": all }),
    ))
}

pub(super) async fn get_metadata(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = state.engine.run(&env, &run_id).await?;
    let metadata: serde_json::Value = run
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "metadata": metadata })))
}

pub(super) async fn update_metadata(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let ops = dto::parse_metadata_body(body).map_err(ApiError::bad_request)?;
    let metadata = state.engine.update_metadata(&env, &run_id, ops).await?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap_or_default();
    Ok(Json(json!({ "metadata": metadata })))
}

pub(super) async fn reset_idempotency_key(
    State(state): State<ApiState>,
    access: Access,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let task = match body.get("taskIdentifier") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(ApiError::bad_request("`taskIdentifier` must be a string")),
    };
    access.allow("write", &[Resource::all("runs")])?;
    let removed = state
        .engine
        .reset_idempotency_key(&access.env, &key, task)
        .await?;
    if removed == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("idempotency key `{key}` not found"),
        ));
    }
    Ok(Json(json!({ "id": key })))
}

pub(super) async fn run_logs(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine.run(&env, &run_id).await?;
    let after = match query.get("after") {
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("`after` must be a log line id (a whole number)"))?,
        None => 0,
    };
    let lines = state
        .engine
        .logs(&env, &run_id, after, MAX_LOG_PAGE)
        .await?;
    let next = (lines.len() == MAX_LOG_PAGE)
        .then(|| lines.last().map(|(id, _)| *id))
        .flatten();
    let data: Vec<dto::LogDto> = lines
        .iter()
        .map(|(id, l)| dto::LogDto::new(*id, l))
        .collect();
    Ok(Json(json!({ "data": data, "next": next })))
}
