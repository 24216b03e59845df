//! The HTTP API: axum routes, bearer-key auth, and the wire shapes of Trigger.dev's public API
//! (camelCase JSON, its status strings and error shape `{"error": "…"}`).
//!
//! **The only module that knows HTTP and JSON wire shapes.** Handlers translate requests into engine
//! calls and domain values into DTOs ([`dto`]); they never reach the store (the engine decides,
//! the store persists), and they see no SQL and no wasmtime. One file per group of endpoints
//! (`deployments`, `triggers`, `runs`, `keys`, `queues`, `schedules`, `tokens`, `env_vars`,
//! `realtime`), with `auth`, `error` and `request` (body and query parsing) beside them; every
//! route is declared once, in [`router`].
//!
//! The web dashboard (`dashboard`: its built-in page and files, and the sign-in check) and the reads
//! it adds (`history`: a run's timeline and tree; `stats`: the charts) sit beside them.

mod auth;
mod batches;
mod bulk;
mod claims;
mod cors;
mod dashboard;
mod deployments;
mod dto;
mod env_vars;
mod error;
mod history;
mod jwt;
mod keys;
pub mod multipart;
mod openapi;
mod queues;
pub mod realtime;
mod request;
mod runs;
mod schedules;
mod scopes;
mod stats;
mod tokens;
mod triggers;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};

use crate::engine::{Engine, MAX_PAYLOAD_BYTES};

pub use auth::{Access, Admin, Authed, KeyAccess};
pub use error::ApiError;
use request::{body_bytes, json_object, require_json, required};

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// Shared watches of runs for the realtime streams.
    pub realtime: Arc<realtime::Hub>,
    /// Largest component upload, in bytes.
    pub max_component_bytes: usize,
    /// Largest deploy of several components, in bytes together.
    pub max_deploy_bytes: usize,
}

/// The router with every route.
pub fn router(state: ApiState) -> Router {
    // Bodies a little over the limits, so the handlers can answer with a precise message.
    let json_limit = MAX_PAYLOAD_BYTES + (64 << 10);
    let batch_limit = DefaultBodyLimit::max(triggers::MAX_BATCH_BODY);
    // Each route is written once: the router and the OpenAPI document both come from this list.
    let (router, endpoints) = openapi::endpoints!(Router::new();
        GET "/healthz" [none] "Liveness: answers `ok`" => get(|| async { "ok" }),
        POST "/api/v1/deployments" [key] "Deploy a version: the body is one .wasm, or multipart/form-data with a .wasm per part; answers 202 with the deploy compiling in the background (201 with the version when `wait=true`)" =>
            post(deployments::deploy).layer(DefaultBodyLimit::disable()),
        GET "/api/v1/deploys/{id}" [key] "How a deploy stands: QUEUED, COMPILING (with its progress), DEPLOYED (with the version) or FAILED (with the error)" => get(deployments::deploy_status),
        GET "/api/v1/deployments" [key] "List deployments, newest first" => get(deployments::list_deployments),
        GET "/api/v1/deployments/latest" [key] "The latest deployment and its tasks" => get(deployments::latest_deployment),
        POST "/api/v1/tasks/{task_id}/trigger" [key] "Trigger a run" => post(triggers::trigger),
        POST "/api/v1/tasks/{task_id}/batch" [key] "Trigger runs of one task as a batch" =>
            post(triggers::batch_one_task).layer(batch_limit),
        POST "/api/v1/tasks/batch" [key] "Trigger runs of several tasks as a batch" =>
            post(triggers::batch_many_tasks).layer(batch_limit),
        POST "/api/v3/batches" [key] "Make a batch of `runCount` runs; its items follow" => post(batches::create),
        POST "/api/v3/batches/{batch_id}/items" [key] "Stream a batch's items (NDJSON); sealed when every index is in" =>
            post(batches::stream_items).layer(DefaultBodyLimit::disable()),
        GET "/api/v2/batches/{batch_id}" [key] "Retrieve a batch: its status, runs and failed items" => get(batches::retrieve),
        GET "/api/v3/runs/{run_id}" [key] "Retrieve a run" => get(runs::retrieve_run),
        GET "/api/v1/runs" [key] "List runs, newest first, with filters" => get(runs::list_runs),
        POST "/api/v2/runs/{run_id}/cancel" [key] "Cancel a run" => post(runs::cancel_run),
        POST "/api/v1/runs/{run_id}/replay" [key] "Replay a run as a new run" => post(runs::replay_run),
        POST "/api/v1/runs/{run_id}/reschedule" [key] "Change a delayed run's delay" => post(runs::reschedule_run),
        POST "/api/v1/runs/{run_id}/tags" [key] "Add tags to a run" => post(runs::add_tags),
        GET "/api/v1/runs/{run_id}/metadata" [key] "A run's metadata" => get(runs::get_metadata),
        PUT "/api/v1/runs/{run_id}/metadata" [key] "Change a run's metadata" => put(runs::update_metadata),
        GET "/api/v1/runs/{run_id}/logs" [key] "A run's log lines" => get(runs::run_logs),
        POST "/api/v1/auth/jwt/claims" [key] "The claims of public access tokens this key signs" => post(claims::claims),
        POST "/api/v1/idempotencyKeys/{key}/reset" [key] "Forget an idempotency key" => post(runs::reset_idempotency_key),
        POST "/api/v1/bulk-actions" [key] "Cancel or replay runs given by ids or a filter, in the background" =>
            post(bulk::create),
        GET "/api/v1/bulk-actions" [key] "List bulk actions, newest first" => get(bulk::list),
        GET "/api/v1/bulk-actions/{bulk_id}" [key] "Retrieve a bulk action and its counts" => get(bulk::retrieve),
        POST "/api/v1/bulk-actions/{bulk_id}/abort" [key] "Stop a bulk action after its current batch" =>
            post(bulk::abort),
        GET "/api/v1/waitpoints/tokens" [key] "List wait tokens" => get(tokens::list_tokens),
        POST "/api/v1/waitpoints/tokens" [key] "Make a wait token" => post(tokens::create_token),
        GET "/api/v1/waitpoints/tokens/{token_id}" [key] "Retrieve a wait token" => get(tokens::retrieve_token),
        POST "/api/v1/waitpoints/tokens/{token_id}/complete" [key] "Complete a wait token" =>
            post(tokens::complete_token),
        POST "/api/v1/waitpoints/tokens/{token_id}/callback/{capability}" [none]
            "Complete a wait token through its callback URL" => post(tokens::callback),
        GET "/realtime/v1/runs" [key] "Follow runs with tags (Electric's shape protocol with `offset`, else Server-Sent Events)" =>
            get(realtime::subscribe_tags),
        GET "/realtime/v1/runs/{run_id}" [key] "Follow a run until it finishes (Electric's shape protocol with `offset`, else Server-Sent Events)" =>
            get(realtime::subscribe_run),
        GET "/realtime/v1/batches/{batch_id}" [key] "Follow a batch's runs (Electric's shape protocol)" =>
            get(realtime::subscribe_batch),
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
        GET "/api/v1/timezones" [none] "The IANA time zones schedules take" => get(schedules::timezones),
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
        GET "/api/v1/admin/keys" [admin] "List secret keys (never the secrets)" => get(keys::list_keys),
        POST "/api/v1/admin/keys" [admin] "Create a secret key for an environment" => post(keys::create_key),
        POST "/api/v1/admin/keys/{key_id}/revoke" [admin] "Revoke a secret key" => post(keys::revoke_key),
        GET "/api/v1/dashboard/session" [key] "Whose key this is: an environment's (with its limits) or the admin's" =>
            get(dashboard::session),
        GET "/api/v1/runs/{run_id}/timeline" [key] "A run's life: trigger, attempts, waits, retries, end" =>
            get(history::run_timeline),
        GET "/api/v1/runs/{run_id}/tree" [key] "The tree of runs a run belongs to" => get(history::run_tree),
        GET "/api/v1/stats/runs" [key] "Runs created per bucket of time, by status" => get(stats::runs_by_status),
        GET "/api/v1/stats/queues" [key] "Runs waiting in the queues over time" => get(stats::queue_depth),
        GET "/api/v1/stats/durations" [key] "p50/p95 duration of each task's finished runs" =>
            get(stats::task_durations),
    );
    let document = Arc::new(openapi::document(&endpoints));
    router
        .merge(dashboard::routes())
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
        // Outermost: a preflight is answered before any route or auth sees it.
        .layer(axum::middleware::from_fn(cors::cors))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` turns true, then finishes the requests under way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let hub = state.realtime.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            // Held realtime requests answer now, so the shutdown does not wait for them.
            hub.close();
        })
        .await
}
