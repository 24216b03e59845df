//! Realtime: `GET /realtime/v1/runs/{id}`, `GET /realtime/v1/runs?tags=…` and
//! `GET /realtime/v1/batches/{id}`, in the protocol the caller speaks: Electric's HTTP shape
//! protocol ([`electric`]) when the query has an `offset` (the Trigger.dev SDK always sends one),
//! kiln's own Server-Sent Events ([`sse`]) otherwise (`kiln runs watch` asks for
//! `text/event-stream`).
//!
//! Every subscriber is served from the [`Hub`], which reads what each commit changed once; a
//! subscriber never re-reads a run a commit did not change (see `hub`).

mod electric;
mod hub;
mod sse;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};

pub use hub::{Hub, MAX_SUBSCRIBERS, MAX_SUBSCRIBERS_PER_ENVIRONMENT};

use super::scopes::Resource;
use super::{Access, ApiError, ApiState};
use crate::model::{Millis, Run, parse_duration};
use crate::store::RunFilter;

/// How far back a tags feed looks by default (Trigger.dev's `createdAt` default).
const DEFAULT_LOOKBACK_MS: Millis = 24 * 3_600_000;

/// The farthest back a tags feed may look.
const MAX_LOOKBACK_MS: Millis = 30 * 24 * 3_600_000;

/// Most runs a tags or batch feed holds (its newest).
pub(super) const FEED_CAP: usize = 1_000;

/// The request's shape query; a token's `realtime.skipColumns` wins over the query's.
fn shape_query(
    access: &Access,
    query: &HashMap<String, String>,
) -> Result<electric::ShapeQuery, ApiError> {
    let mut shape = electric::ShapeQuery::parse(query)?;
    if let Some(skip) = access.skip_columns() {
        shape.skip_only(skip);
    }
    Ok(shape)
}

/// Whether the request speaks Electric's shape protocol.
fn electric(query: &HashMap<String, String>) -> bool {
    query.contains_key("offset")
}

/// The comma-separated `tags` of a query.
fn tags_of(query: &HashMap<String, String>) -> Vec<String> {
    query
        .get("tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /realtime/v1/runs/{id}`: the run, until it has finished.
pub(super) async fn subscribe_run(
    State(state): State<ApiState>,
    access: Access,
    Path(run_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let env = &access.env;
    if access.is_token() {
        // Every request is checked (a token may expire while subscribed); the run is found
        // first, so a missing one is a 404.
        let run = state.engine.run(env, &run_id).await?;
        super::runs::read_run(&access, &run)?;
    }
    let subscriber = state.realtime.admit(&env.id)?;
    if !electric(&query) {
        let stream = sse::run_stream(subscriber, state.realtime.clone(), env, &run_id).await?;
        return Ok(stream.into_response());
    }
    let shape = electric::Shape {
        handle: format!("run-{run_id}"),
        matches: |r: &Run| r.id == run_id && r.environment_id == env.id,
    };
    let read = || async {
        match state.engine.run(env, &run_id).await {
            Ok(run) => Ok(Some(vec![run])),
            Err(crate::engine::EngineError::RunNotFound(_)) => Ok(None),
            Err(e) => Err(ApiError::from(e)),
        }
    };
    electric::answer(&state.realtime, shape, shape_query(&access, &query)?, read).await
}

/// `GET /realtime/v1/runs?tags=a,b`: runs with tags. Electric: runs with every tag, created in
/// the last `createdAt` (default 24 h). SSE: runs with any of the tags.
pub(super) async fn subscribe_tags(
    State(state): State<ApiState>,
    access: Access,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tags = tags_of(&query);
    if tags.is_empty() {
        return Err(ApiError::bad_request(
            "give `tags` (comma-separated) to watch runs by tag, or watch one run at /realtime/v1/runs/{id}",
        ));
    }
    let mut resources = vec![Resource::all("runs"), Resource::all("tags")];
    resources.extend(tags.iter().map(|t| Resource::of("tags", t)));
    access.allow("read", &resources)?;
    let env = access.env.clone();
    if !electric(&query) {
        if let Some(other) = query.keys().find(|k| *k != "tags") {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{other}`; supported: tags"
            )));
        }
        let subscriber = state.realtime.admit(&env.id)?;
        return Ok(sse::tags_stream(subscriber, state.realtime.clone(), env, tags).into_response());
    }
    let shape_query = shape_query(&access, &query)?;
    let _subscriber = state.realtime.admit(&env.id)?;
    // The lower bound is pinned in the handle, so it does not drift on later polls.
    let created_from = match shape_query
        .handle
        .as_deref()
        .and_then(|h| h.strip_prefix("tags-"))
        .and_then(|from| from.parse::<Millis>().ok())
    {
        Some(from) => from,
        None => {
            let lookback = match query.get("createdAt") {
                None => DEFAULT_LOOKBACK_MS,
                Some(text) => parse_duration(text)
                    .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "createdAt: `{text}` is not a duration like \"1h\" or \"7d\""
                        ))
                    })?,
            };
            state.engine.now() - lookback.min(MAX_LOOKBACK_MS)
        }
    };
    let shape = electric::Shape {
        handle: format!("tags-{created_from}"),
        matches: |r: &Run| {
            r.environment_id == env.id
                && r.created_at >= created_from
                && tags.iter().all(|t| r.tags.contains(t))
        },
    };
    let read = || async {
        let filter = RunFilter {
            all_tags: tags.clone(),
            created_from: Some(created_from),
            ..RunFilter::default()
        };
        let page = state
            .engine
            .list_runs(&env, filter, FEED_CAP, None, None)
            .await?;
        Ok(Some(page.runs.into_iter().rev().collect()))
    };
    electric::answer(&state.realtime, shape, shape_query, read).await
}

/// `GET /realtime/v1/batches/{id}`: the batch's runs (Electric only); never ends by itself.
pub(super) async fn subscribe_batch(
    State(state): State<ApiState>,
    access: Access,
    Path(batch_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let env = &access.env;
    if access.is_token() {
        if state.engine.batch(env, &batch_id).await?.is_none() {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("batch `{batch_id}` not found"),
            ));
        }
        access.allow(
            "read",
            &[Resource::of("batch", &batch_id), Resource::all("runs")],
        )?;
    }
    let _subscriber = state.realtime.admit(&env.id)?;
    let shape = electric::Shape {
        handle: format!("batch-{batch_id}"),
        matches: |r: &Run| r.batch_id.as_deref() == Some(&batch_id) && r.environment_id == env.id,
    };
    let read = || async {
        let Some(batch) = state.engine.batch(env, &batch_id).await? else {
            return Ok(None);
        };
        Ok(Some(state.engine.changed_runs(batch.runs).await?))
    };
    electric::answer(&state.realtime, shape, shape_query(&access, &query)?, read).await
}
