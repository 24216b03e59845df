//! Bulk actions (Trigger.dev's `/api/v1/bulk-actions`, the SDK's `runs.bulk`): create a cancel or
//! a replay of runs given by `runIds` or by a `filter`, list, retrieve with counts, abort. Secret
//! keys only; the work runs in the background (see `engine::bulk`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::request::Cursor;
use super::{ApiError, ApiState, Authed, body_bytes, dto, json_object};
use crate::engine::bulk::{BulkSelection, MAX_BULK_RUN_IDS};
use crate::model::{BulkAction, BulkKind, BulkStatus, Millis, RunStatus, parse_duration};
use crate::store::RunFilter;

/// The fields a bulk action takes.
const FIELDS: [&str; 5] = ["action", "runIds", "filter", "name", "targetRegion"];

/// The filter fields kiln takes (the runs list's filters).
const FILTER_FIELDS: &str =
    "status, taskIdentifier, version, from, to, period, tag, batch, queue, isTest";

/// Longest name (Trigger.dev's).
const MAX_NAME: usize = 255;

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Bulk action {id} not found"))
}

/// A bulk action as Trigger.dev's `BulkActionObject` shows it.
fn action_json(a: &BulkAction) -> Value {
    let mut v = json!({
        "id": a.id,
        "type": a.kind.as_str(),
        "status": a.status.as_str(),
        "counts": { "total": a.total, "success": a.success, "failure": a.failure },
        "createdAt": dto::iso(a.created_at),
    });
    if let Some(name) = &a.name {
        v["name"] = json!(name);
    }
    if let Some(at) = a.completed_at {
        v["completedAt"] = json!(dto::iso(at));
    }
    v
}

/// A string or an array of strings.
fn strings(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "filter.{field} must be a string or an array of strings"
        ))
    };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// A date: an ISO 8601 string or milliseconds since 1970.
fn date(v: &Value, field: &str) -> Result<Millis, ApiError> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(crate::model::parse_timestamp))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "filter.{field} must be an ISO 8601 date or milliseconds since 1970"
            ))
        })
}

/// Trigger.dev's bulk filter as the runs list's filter.
fn filter(map: &Map<String, Value>, now: Millis) -> Result<RunFilter, ApiError> {
    let mut f = RunFilter::default();
    let mut any = false;
    for (key, v) in map {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "status" => {
                for s in strings(v, key)? {
                    f.statuses.push(RunStatus::parse(&s).ok_or_else(|| {
                        ApiError::bad_request(format!("filter.status: `{s}` is not a run status"))
                    })?);
                }
            }
            "taskIdentifier" => f.task_ids.extend(strings(v, key)?),
            "version" => f.versions.extend(strings(v, key)?),
            "tag" => f.tags.extend(strings(v, key)?),
            "batch" => {
                f.batch_id = Some(
                    v.as_str()
                        .ok_or_else(|| ApiError::bad_request("filter.batch must be a batch id"))?
                        .to_owned(),
                );
            }
            "from" => f.created_from = Some(date(v, key)?),
            "to" => f.created_to = Some(date(v, key)?),
            "period" => {
                let text = v.as_str().unwrap_or_default();
                let period = parse_duration(text).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "filter.period: `{text}` is not a duration like \"1d\""
                    ))
                })?;
                let since = now - Millis::try_from(period.as_millis()).unwrap_or(Millis::MAX);
                f.created_from = Some(f.created_from.map_or(since, |from| from.max(since)));
            }
            "queue" => {
                let queues = match v {
                    Value::Array(all) => all.clone(),
                    one => vec![one.clone()],
                };
                for q in queues {
                    let name = q.get("name").and_then(Value::as_str);
                    let queue = match (q.get("type").and_then(Value::as_str), name) {
                        (Some("task"), Some(name)) => {
                            format!("{}{name}", crate::model::TASK_QUEUE_PREFIX)
                        }
                        (Some("custom"), Some(name)) => name.to_owned(),
                        _ => {
                            return Err(ApiError::bad_request(
                                "filter.queue must be {\"type\": \"task\" | \"custom\", \"name\": …}",
                            ));
                        }
                    };
                    f.queues.push(queue);
                }
            }
            // kiln has no test runs: `isTest: false` is every run.
            "isTest" if v == &Value::Bool(false) => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "filter.{other} is not supported by kiln; a bulk filter takes {FILTER_FIELDS}"
                )));
            }
        }
        any = true;
    }
    if !any {
        return Err(ApiError::bad_request(
            "At least one filter must be provided",
        ));
    }
    Ok(f)
}

/// `POST /api/v1/bulk-actions`: 202 `{id}`; the runs are fixed now, the work goes on after.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authed(env): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    if let Some(other) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{other}`; a bulk action takes {}",
            FIELDS.join(", ")
        )));
    }
    let kind = match body.get("action").and_then(Value::as_str) {
        Some("cancel") => BulkKind::Cancel,
        Some("replay") => BulkKind::Replay,
        _ => {
            return Err(ApiError::bad_request(
                "`action` must be \"cancel\" or \"replay\"",
            ));
        }
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.chars().count() <= MAX_NAME => Some(n.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`name` must be a string of at most {MAX_NAME} characters"
            )));
        }
    };
    let selection = match (body.get("runIds"), body.get("filter")) {
        (Some(ids), None) => {
            let ids = ids
                .as_array()
                .filter(|ids| !ids.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request("`runIds` must be a non-empty array of run ids")
                })?;
            if ids.len() > MAX_BULK_RUN_IDS {
                return Err(ApiError::bad_request(format!(
                    "Too many runIds ({}). Maximum is {MAX_BULK_RUN_IDS}. Use a filter to select more runs.",
                    ids.len()
                )));
            }
            BulkSelection::Ids(
                ids.iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError::bad_request("`runIds` must be run ids"))?,
            )
        }
        (None, Some(Value::Object(f))) => BulkSelection::Filter(filter(f, state.engine.now())?),
        (None, Some(_)) => return Err(ApiError::bad_request("`filter` must be an object")),
        _ => {
            return Err(ApiError::bad_request(
                "Exactly one of filter or runIds must be provided",
            ));
        }
    };
    let action = state
        .engine
        .create_bulk_action(&env, kind, name, selection)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": action.id }))).into_response())
}

/// `GET /api/v1/bulk-actions/{id}`.
pub(super) async fn retrieve(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let action = state
        .engine
        .bulk_action(&env, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(action_json(&action)))
}

/// `GET /api/v1/bulk-actions`: newest first, with Trigger.dev's cursor pages.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut cursor = Cursor::default();
    for (key, value) in &query {
        if !cursor.take(key, value)? {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{key}`; supported: page[size], page[after], page[before]"
            )));
        }
    }
    let Cursor {
        size,
        after,
        before,
    } = cursor.checked();
    let backwards = before.is_some();
    let had_cursor = after.is_some() || before.is_some();
    let (actions, more) = state
        .engine
        .list_bulk_actions(&env, size, after, before)
        .await?;
    let next = if backwards { had_cursor } else { more };
    let previous = if backwards { more } else { had_cursor };
    let mut pagination = json!({});
    if next && let Some(a) = actions.last() {
        pagination["next"] = json!(a.id);
    }
    if previous && let Some(a) = actions.first() {
        pagination["previous"] = json!(a.id);
    }
    let data: Vec<Value> = actions.iter().map(action_json).collect();
    Ok(Json(json!({ "data": data, "pagination": pagination })))
}

/// `POST /api/v1/bulk-actions/{id}/abort`: stops it after its current batch; a finished one is a
/// final 409.
pub(super) async fn abort(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let before = state
        .engine
        .bulk_action(&env, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let refused = |what: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("Bulk action group already {what}: {id}"),
        )
        .final_answer()
    };
    match before.status {
        BulkStatus::Completed => return Err(refused("completed")),
        BulkStatus::Aborted => return Err(refused("aborted")),
        BulkStatus::Pending => {}
    }
    let after = state
        .engine
        .abort_bulk_action(&env, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    match after.status {
        BulkStatus::Aborted => Ok(Json(json!({ "id": id }))),
        // It finished meanwhile.
        _ => Err(refused("completed")),
    }
}
