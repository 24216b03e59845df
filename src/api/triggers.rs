//! Triggering runs: one run, or a batch of one task or of several, in Trigger.dev's body shapes.
//! A run is triggered with a secret key or a trigger token (`trigger:tasks:<id>`, used once
//! unless made for many uses), and answered with a token that reads it.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::scopes::Resource;
use super::{Access, ApiError, ApiState, Authed, body_bytes, dto, require_json};
use crate::engine::{EngineError, MAX_BATCH_ITEMS, MAX_PAYLOAD_BYTES, TriggerItem};

/// How long the token a trigger is answered with reads the run (Trigger.dev's).
const RUN_TOKEN_SECS: i64 = 3_600;

pub(super) async fn trigger(
    State(state): State<ApiState>,
    access: Access,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    access.allow("trigger", &[Resource::of("tasks", &task_id)])?;
    let env = &access.env;
    require_json(&headers)?;
    // A body past the router's limit never reaches here whole: name the payload's limit.
    let body = match body {
        Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(EngineError::PayloadTooLarge {
                size: None,
                limit: MAX_PAYLOAD_BYTES,
            }
            .into());
        }
        body => body_bytes(body)?,
    };
    if body.len() > MAX_PAYLOAD_BYTES + (32 << 10) {
        return Err(EngineError::PayloadTooLarge {
            size: Some(body.len()),
            limit: MAX_PAYLOAD_BYTES,
        }
        .into());
    }
    let request = dto::TriggerRequest::parse(&body).map_err(ApiError::bad_request)?;
    let item = TriggerItem {
        task_id: task_id.clone(),
        payload: request.payload,
        options: request.options,
    };
    let inserted = match access.one_time() {
        None => state.engine.trigger(env, item).await?,
        Some(digest) => state
            .engine
            .trigger_once(env, item, digest)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Cannot trigger {task_id} with a one-time use token as it has already been used."
                    ),
                )
            })?,
    };
    let id = &inserted.run.id;
    let headers = access
        .token_headers(
            &state,
            vec![
                format!("read:runs:{id}"),
                format!("write:inputStreams:{id}"),
            ],
            RUN_TOKEN_SECS,
        )
        .await?;
    let answer = dto::TriggerResponse {
        id: inserted.run.id.clone(),
        is_cached: inserted.cached,
    };
    Ok((headers, Json(answer)).into_response())
}

/// Reads a batch body's `items` (1 to 1,000), each as a trigger request.
pub(super) fn batch_items(body: &[u8], task: Option<&str>) -> Result<Vec<TriggerItem>, ApiError> {
    let mut parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| {
            ApiError::bad_request(format!("the body is not a JSON object with `items`: {e}"))
        })?;
    let items = match parsed.remove("items") {
        Some(serde_json::Value::Array(items)) => items,
        _ => {
            return Err(ApiError::bad_request(
                "`items` must be an array of {\"payload\", \"options\"} objects",
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(EngineError::BatchSize(items.len()).into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let (item_task, request) = dto::TriggerRequest::from_item(item, i, task.is_none())
                .map_err(ApiError::bad_request)?;
            Ok(TriggerItem {
                task_id: item_task
                    .or_else(|| task.map(str::to_owned))
                    .unwrap_or_default(),
                payload: request.payload,
                options: request.options,
            })
        })
        .collect()
}

/// Batches carry up to 1,000 payloads of up to 3 MB; the body limit is that of a batch.
pub(super) const MAX_BATCH_BODY: usize = 64 << 20;

pub(super) async fn batch_one_task(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_json(&headers)?;
    let items = batch_items(&body_bytes(body)?, Some(&task_id))?;
    let inserted = state.engine.trigger_many(&env, items, true).await?;
    let batch_id = inserted.first().and_then(|i| i.run.batch_id.clone());
    let runs: Vec<&str> = inserted.iter().map(|i| i.run.id.as_str()).collect();
    Ok(Json(json!({ "batchId": batch_id, "runs": runs })))
}

pub(super) async fn batch_many_tasks(
    State(state): State<ApiState>,
    Authed(env): Authed,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_json(&headers)?;
    let items = batch_items(&body_bytes(body)?, None)?;
    let inserted = state.engine.trigger_many(&env, items, true).await?;
    let batch_id = inserted.iter().find_map(|i| i.run.batch_id.clone());
    let runs: Vec<serde_json::Value> = inserted
        .iter()
        .map(|i| {
            json!({
                "id": i.run.id,
                "taskIdentifier": i.run.task_id,
                "isCached": i.cached,
                "idempotencyKey": i.run.idempotency_key,
            })
        })
        .collect();
    Ok(Json(
        json!({ "id": batch_id, "isCached": false, "runs": runs }),
    ))
}
