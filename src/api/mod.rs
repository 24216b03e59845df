//! The HTTP API: axum routes, bearer-key auth, and the wire shapes of Trigger.dev's public API
//! (camelCase JSON, its status strings and error shape `{"error": "…"}`).
//!
//! **The only module that knows HTTP and JSON wire shapes.** Handlers translate requests into engine
//! and deploy calls and domain values into DTOs ([`dto`]); no SQL, no wasmtime.

mod dto;
mod env_vars;
mod openapi;
mod queues;
pub mod realtime;
mod schedules;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use crate::deploy::DeployError;
use crate::engine::metadata::MetadataError;
use crate::engine::{
    CancelOutcome, Engine, EngineError, MAX_BATCH_ITEMS, MAX_PAYLOAD_BYTES, TriggerItem,
};
use crate::keys;
use crate::model::{Environment, Millis, RunStatus, parse_timestamp};
use crate::store::{RunFilter, StoreError};

/// Default and largest page of the runs list (Trigger.dev's defaults).
const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 100;
/// Most log lines one logs request returns.
const MAX_LOG_PAGE: usize = 1_000;

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// Shared watches of runs for the realtime streams.
    pub realtime: Arc<realtime::Hub>,
    /// Largest component upload, in bytes.
    pub max_component_bytes: usize,
}

/// The router with every route.
pub fn router(state: ApiState) -> Router {
    // Bodies a little over the limits, so the handlers can answer with a precise message.
    let json_limit = MAX_PAYLOAD_BYTES + (64 << 10);
    let batch_limit = DefaultBodyLimit::max(MAX_BATCH_BODY);
    // Each route is written once: the router and the OpenAPI document both come from this list.
    let (router, endpoints) = openapi::endpoints!(Router::new();
        GET "/healthz" [none] "Liveness: answers `ok`" => get(|| async { "ok" }),
        POST "/api/v1/deployments" [key] "Deploy a component (the body is the .wasm)" =>
            post(deploy).layer(DefaultBodyLimit::disable()),
        GET "/api/v1/deployments" [key] "List deployments, newest first" => get(list_deployments),
        GET "/api/v1/deployments/latest" [key] "The latest deployment and its tasks" => get(latest_deployment),
        POST "/api/v1/tasks/{task_id}/trigger" [key] "Trigger a run" => post(trigger),
        POST "/api/v1/tasks/{task_id}/batch" [key] "Trigger runs of one task as a batch" =>
            post(batch_one_task).layer(batch_limit),
        POST "/api/v1/tasks/batch" [key] "Trigger runs of several tasks as a batch" =>
            post(batch_many_tasks).layer(batch_limit),
        GET "/api/v3/runs/{run_id}" [key] "Retrieve a run" => get(retrieve_run),
        GET "/api/v1/runs" [key] "List runs, newest first, with filters" => get(list_runs),
        POST "/api/v2/runs/{run_id}/cancel" [key] "Cancel a run" => post(cancel_run),
        POST "/api/v1/runs/{run_id}/replay" [key] "Replay a run as a new run" => post(replay_run),
        POST "/api/v1/runs/{run_id}/reschedule" [key] "Change a delayed run's delay" => post(reschedule_run),
        POST "/api/v1/runs/{run_id}/tags" [key] "Add tags to a run" => post(add_tags),
        GET "/api/v1/runs/{run_id}/metadata" [key] "A run's metadata" => get(get_metadata),
        PUT "/api/v1/runs/{run_id}/metadata" [key] "Change a run's metadata" => put(update_metadata),
        GET "/api/v1/runs/{run_id}/logs" [key] "A run's log lines" => get(run_logs),
        POST "/api/v1/idempotencyKeys/{key}/reset" [key] "Forget an idempotency key" => post(reset_idempotency_key),
        GET "/api/v1/waitpoints/tokens" [key] "List wait tokens" => get(tokens::list_tokens),
        POST "/api/v1/waitpoints/tokens" [key] "Make a wait token" => post(tokens::create_token),
        GET "/api/v1/waitpoints/tokens/{token_id}" [key] "Retrieve a wait token" => get(tokens::retrieve_token),
        POST "/api/v1/waitpoints/tokens/{token_id}/complete" [key] "Complete a wait token" =>
            post(tokens::complete_token),
        POST "/api/v1/waitpoints/tokens/{token_id}/callback/{capability}" [none]
            "Complete a wait token through its callback URL" => post(tokens::callback),
        GET "/realtime/v1/runs" [key] "Stream runs with tags (Server-Sent Events)" => get(realtime::subscribe_tags),
        GET "/realtime/v1/runs/{run_id}" [key] "Stream a run until it finishes (Server-Sent Events)" =>
            get(realtime::subscribe_run),
        GET "/api/v1/queues" [key] "List queues" => get(queues::list_queues),
        GET "/api/v1/queues/{queue}" [key] "Retrieve a queue" => get(queues::retrieve_queue),
        POST "/api/v1/queues/{queue}/pause" [key] "Pause or resume a queue" => post(queues::pause_queue),
        POST "/api/v1/queues/{queue}/concurrency/override" [key] "Override a queue's concurrency limit" =>
            post(queues::override_queue_limit),
        POST "/api/v1/queues/{queue}/concurrency/reset" [key] "Drop a queue's limit override" =>
            post(queues::reset_queue_limit),
        POST "/api/v1/schedules" [key] "Create a schedule (or update the one with its deduplication key)" =>
            post(schedules::create),
        GET "/api/v1/schedules" [key] "List schedules" => get(schedules::list),
        GET "/api/v1/schedules/{schedule_id}" [key] "Retrieve a schedule" => get(schedules::retrieve),
        PUT "/api/v1/schedules/{schedule_id}" [key] "Update a schedule" => put(schedules::update),
        DELETE "/api/v1/schedules/{schedule_id}" [key] "Delete a schedule" => delete(schedules::delete),
        POST "/api/v1/schedules/{schedule_id}/activate" [key] "Activate a schedule" => post(schedules::activate),
        POST "/api/v1/schedules/{schedule_id}/deactivate" [key] "Deactivate a schedule" =>
            post(schedules::deactivate),
        GET "/api/v1/timezones" [key] "The IANA time zones schedules take" => get(schedules::timezones),
        GET "/api/v1/projects/{project_ref}/envvars/{env}" [key] "List the environment's variables" =>
            get(env_vars::list),
        POST "/api/v1/projects/{project_ref}/envvars/{env}" [key] "Create an environment variable" =>
            post(env_vars::create),
        POST "/api/v1/projects/{project_ref}/envvars/{env}/import" [key] "Set many environment variables" =>
            post(env_vars::import),
        GET "/api/v1/projects/{project_ref}/envvars/{env}/{name}" [key] "Retrieve an environment variable" =>
            get(env_vars::retrieve),
        PUT "/api/v1/projects/{project_ref}/envvars/{env}/{name}" [key] "Change an environment variable" =>
            put(env_vars::update),
        DELETE "/api/v1/projects/{project_ref}/envvars/{env}/{name}" [key] "Delete an environment variable" =>
            delete(env_vars::delete),
        GET "/api/v1/admin/environments" [admin] "List environments and their limits" =>
            get(queues::list_environments),
        PUT "/api/v1/admin/environments/{project}/{environment}" [admin] "Set an environment's concurrency limit" =>
            put(queues::update_environment),
        GET "/api/v1/admin/keys" [admin] "List secret keys (never the secrets)" => get(list_keys),
        POST "/api/v1/admin/keys" [admin] "Create a secret key for an environment" => post(create_key),
        POST "/api/v1/admin/keys/{key_id}/revoke" [admin] "Revoke a secret key" => post(revoke_key),
    );
    let document = Arc::new(openapi::document(&endpoints));
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/openapi.json for the API kiln serves",
            )
        })
        .layer(DefaultBodyLimit::max(json_limit))
        .with_state(state)
}

/// An error answer: a status and Trigger.dev's `{"error": "…"}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The status a store failure answers with: 507 when the disk is full (the client may retry once
/// space returns), 503 when the store is not running, 500 otherwise.
fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        let status = store_status(&e);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            format!("internal error: {e}")
        } else {
            e.to_string()
        };
        ApiError::new(status, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let e = match e {
            EngineError::Deploy(d) => return d.into(),
            other => other,
        };
        let status = match &e {
            EngineError::Deploy(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::NothingDeployed
            | EngineError::RunNotFound(_)
            | EngineError::QueueNotFound(_)
            | EngineError::TokenNotFound(_)
            | EngineError::EnvVarNotFound(_) => StatusCode::NOT_FOUND,
            EngineError::EnvVarExists(_) => StatusCode::CONFLICT,
            EngineError::InvalidEnvVar(_) => StatusCode::BAD_REQUEST,
            EngineError::Secrets(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::UnknownVersion(_)
            | EngineError::TaskNotInVersion { .. }
            | EngineError::NotDelayed(_)
            | EngineError::TooManyTags(_)
            | EngineError::BatchSize(_)
            | EngineError::LimitAboveEnvironment { .. }
            | EngineError::InvalidToken(_) => StatusCode::BAD_REQUEST,
            EngineError::Metadata(MetadataError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Metadata(_) => StatusCode::BAD_REQUEST,
            EngineError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Contended => StatusCode::CONFLICT,
            EngineError::Store(e) => store_status(e),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "engine error");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        let status = match &e {
            DeployError::Empty => StatusCode::BAD_REQUEST,
            DeployError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DeployError::Store(e) => store_status(e),
            DeployError::Compile(_)
            | DeployError::Definitions(_)
            | DeployError::InvalidTasks(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The environment of the request's secret key (`Authorization: Bearer <key>`).
pub struct Authed(pub Environment);

/// The bearer token of a request, or a 401 saying what is expected.
fn bearer<'a>(parts: &'a Parts, which: &str) -> Result<&'a str, ApiError> {
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized(format!("missing `Authorization: Bearer <{which}>` header")))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthorized(format!(
                "the Authorization header must be `Bearer <{which}>`"
            ))
        })
}

/// A request made with the host's admin key (`<data-dir>/admin.key`).
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts, "admin key")?;
        if state.engine.store().is_admin_key(keys::hash(key)).await? {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid admin key: the admin API takes the key in <data-dir>/admin.key",
            ))
        }
    }
}

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts, "secret key; the dev key is in <data-dir>/dev.key")?;
        // Keys are looked up by their hash, so no comparison ever runs over the plaintext.
        let env = state
            .engine
            .store()
            .environment_for_key(keys::hash(key))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid API key: it is unknown or revoked",
                )
            })?;
        Ok(Authed(env))
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type `{ct}` is not supported; send `application/json`"),
        ))
    }
}

/// Reads a request body; a body over the route's limit is answered in the API's error shape.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        ApiError::new(
            r.status(),
            format!("cannot read the request body: {}", r.body_text()),
        )
    })
}

async fn deploy(
    State(state): State<ApiState>,
    Authed(env): Authed,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<dto::DeploymentDto>), ApiError> {
    let body = read_upload(body, state.max_component_bytes).await?;
    let deployment = state.engine.deploy(&env, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(dto::DeploymentDto::from(&deployment)),
    ))
}

/// Reads an upload of at most `limit` bytes. A larger one is refused with 413, but only after
/// reading (and dropping) the rest of it, up to a bound: answering while the client still sends
/// would close the connection under it, and it would see a reset instead of the message.
async fn read_upload(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let drain_limit = limit.saturating_mul(4).max(16 << 20);
    let mut stream = body.into_data_stream();
    let (mut bytes, mut seen) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        } else if seen > drain_limit {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the component is larger than the limit of {limit} bytes; shrink it (opt-level \"s\", lto, strip) or raise the host's --max-component-bytes"
            ),
        ));
    }
    Ok(bytes)
}

async fn list_deployments(
    State(state): State<ApiState>,
    Authed(env): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deployments = state.engine.store().list_deployments(&env.id).await?;
    let data: Vec<dto::DeploymentDto> = deployments.iter().map(dto::DeploymentDto::from).collect();
    Ok(Json(json!({ "data": data })))
}

async fn latest_deployment(
    State(state): State<ApiState>,
    Authed(env): Authed,
) -> Result<Json<dto::DeploymentDto>, ApiError> {
    let deployment = state
        .engine
        .store()
        .latest_deployment(&env.id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                EngineError::NothingDeployed.to_string(),
            )
        })?;
    Ok(Json(dto::DeploymentDto::from(&deployment)))
}

async fn trigger(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<dto::TriggerResponse>, ApiError> {
    require_json(&headers)?;
    let body = body_bytes(body)?;
    if body.len() > MAX_PAYLOAD_BYTES + (32 << 10) {
        return Err(EngineError::PayloadTooLarge {
            size: body.len(),
            limit: MAX_PAYLOAD_BYTES,
        }
        .into());
    }
    let request = dto::TriggerRequest::parse(&body).map_err(ApiError::bad_request)?;
    let item = TriggerItem {
        task_id,
        payload: request.payload,
        options: request.options,
    };
    let inserted = state.engine.trigger(&env, item).await?;
    Ok(Json(dto::TriggerResponse {
        id: inserted.run.id,
        is_cached: inserted.cached,
    }))
}

/// Reads a batch body's `items` (1 to 1,000), each as a trigger request.
fn batch_items(body: &[u8], task: Option<&str>) -> Result<Vec<TriggerItem>, ApiError> {
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
const MAX_BATCH_BODY: usize = 64 << 20;

async fn batch_one_task(
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

async fn batch_many_tasks(
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

async fn replay_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = state.engine.replay(&env, &run_id).await?;
    Ok(Json(json!({ "id": run.id })))
}

/// Parses a small JSON body into a map; an empty body is an empty map.
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON object: {e}")))
}

/// A field the body must have; the error says what it should hold.
fn required<'a>(
    body: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
    what: &str,
) -> Result<&'a serde_json::Value, ApiError> {
    body.get(field)
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` is required: {what}")))
}

async fn reschedule_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<dto::RunDto>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let delay = required(&body, "delay", "a duration like \"1h\" or an ISO 8601 date")?;
    let delay = dto::parse_delay(delay, "delay").map_err(ApiError::bad_request)?;
    let run = state.engine.reschedule(&env, &run_id, delay).await?;
    let attempts = state.engine.store().attempts(&run.id).await?;
    Ok(Json(dto::RunDto::new(&run, &attempts, &[])))
}

async fn add_tags(
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

async fn get_metadata(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = state
        .engine
        .store()
        .run(&env.id, &run_id)
        .await?
        .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id)))?;
    let metadata: serde_json::Value = run
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "metadata": metadata })))
}

async fn update_metadata(
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

async fn reset_idempotency_key(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let task = match body.get("taskIdentifier") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(ApiError::bad_request("`taskIdentifier` must be a string")),
    };
    let removed = state.engine.reset_idempotency_key(&env, &key, task).await?;
    if removed == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("idempotency key `{key}` not found"),
        ));
    }
    Ok(Json(json!({ "id": key })))
}

async fn retrieve_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<dto::RunDto>, ApiError> {
    realtime::run_dto(state.engine.store(), &env.id, &run_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id)))
}

async fn list_runs(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<dto::ListRunsResponse>, ApiError> {
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
    } = cursor.checked()?;
    let page = state
        .engine
        .store()
        .list_runs(&env.id, filter, size, after, before)
        .await?;
    Ok(Json(dto::ListRunsResponse::new(&page, &env)))
}

/// Most values all of a list's filters may hold together (each is a query parameter).
const MAX_FILTER_VALUES: usize = 100;

fn filter_values(count: usize) -> Result<(), ApiError> {
    if count > MAX_FILTER_VALUES {
        return Err(ApiError::bad_request(format!(
            "the filters list {count} values; at most {MAX_FILTER_VALUES} together"
        )));
    }
    Ok(())
}

/// Trigger.dev's cursor pagination: `page[size]`, `page[after]`, `page[before]`.
struct Cursor {
    size: usize,
    after: Option<String>,
    before: Option<String>,
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor {
            size: DEFAULT_PAGE_SIZE,
            after: None,
            before: None,
        }
    }
}

impl Cursor {
    /// Takes a pagination parameter; `false` if `key` is not one.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "page[size]" => {
                self.size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "page[size] must be a whole number from 1 to {MAX_PAGE_SIZE}"
                        ))
                    })?;
            }
            "page[after]" => self.after = Some(value.to_owned()),
            "page[before]" => self.before = Some(value.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn checked(self) -> Result<Cursor, ApiError> {
        if self.after.is_some() && self.before.is_some() {
            return Err(ApiError::bad_request(
                "give page[after] or page[before], not both",
            ));
        }
        Ok(self)
    }
}

/// A time in a query: milliseconds since the epoch or an ISO 8601 date.
fn time_param(key: &str, value: &str) -> Result<Millis, ApiError> {
    value
        .parse::<Millis>()
        .ok()
        .or_else(|| parse_timestamp(value))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{key} must be an ISO 8601 date or milliseconds since 1970"
            ))
        })
}

async fn cancel_run(
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

async fn run_logs(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.engine.store();
    store
        .run(&env.id, &run_id)
        .await?
        .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id.clone())))?;
    let after = match query.get("after") {
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("`after` must be a log line id (a whole number)"))?,
        None => 0,
    };
    let lines = store.logs(&run_id, after, MAX_LOG_PAGE).await?;
    let next = (lines.len() == MAX_LOG_PAGE)
        .then(|| lines.last().map(|(id, _)| *id))
        .flatten();
    let data: Vec<dto::LogDto> = lines
        .iter()
        .map(|(id, l)| dto::LogDto::new(*id, l))
        .collect();
    Ok(Json(json!({ "data": data, "next": next })))
}

async fn create_key(
    State(state): State<ApiState>,
    _admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let slug = |field: &str| -> Result<String, ApiError> {
        let value = required(&body, field, "a name of lowercase letters, digits and `-`")?;
        value
            .as_str()
            .filter(|s| keys::valid_slug(s))
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{field}` must be 1–32 lowercase letters, digits and `-`, starting with a letter"
                ))
            })
    };
    let (project, environment) = (slug("project")?, slug("environment")?);
    let key = keys::environment_key(&environment);
    let secret = key.plaintext.clone();
    let info = state
        .engine
        .store()
        .create_key(&project, &environment, key, state.engine.now())
        .await?;
    let mut shown = dto::key_json(&info);
    shown["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

async fn list_keys(
    State(state): State<ApiState>,
    _admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = state.engine.store().list_keys().await?;
    let data: Vec<serde_json::Value> = keys.iter().map(dto::key_json).collect();
    Ok(Json(json!({ "data": data })))
}

async fn revoke_key(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(key_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let info = state
        .engine
        .store()
        .revoke_key(&key_id, state.engine.now())
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("key `{key_id}` not found")))?;
    Ok(Json(dto::key_json(&info)))
}
