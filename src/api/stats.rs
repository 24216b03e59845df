//! kiln's chart endpoints for the dashboard: runs per bucket of time by status, queue depth over
//! time, and p50/p95 durations per task — each over a window ending now, for the key's
//! environment only, computed by the engine from what the store keeps.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Authed, dto};
use crate::engine::stats::{MAX_WINDOW_MS, Window};
use crate::model::parse_duration;

/// Default window and bucket when the query names none: the last hour, by minute.
const DEFAULT_WINDOW_MS: i64 = 60 * 60 * 1000;
const DEFAULT_BUCKET_MS: i64 = 60 * 1000;

/// The window a chart asks for: `window` (a duration, ≤ 7d) and `bucket` (a duration, ≥ 1s;
/// grown when the window would need more than the engine's bucket count).
fn window(
    state: &ApiState,
    query: &HashMap<String, String>,
    default_window_ms: i64,
) -> Result<Window, ApiError> {
    let duration = |key: &str, default: i64| -> Result<i64, ApiError> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v)
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`{key}` must be a duration like \"15m\", \"1h\" or \"1d\", not `{v}`"
                    ))
                }),
        }
    };
    if let Some(other) = query.keys().find(|k| *k != "window" && *k != "bucket") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{other}`; supported: window, bucket"
        )));
    }
    let window_ms = duration("window", default_window_ms)?;
    if window_ms > MAX_WINDOW_MS {
        return Err(ApiError::bad_request("`window` may be at most 7d"));
    }
    let bucket_ms = duration("bucket", DEFAULT_BUCKET_MS.min(window_ms))?;
    Ok(Window::ending(state.engine.now(), window_ms, bucket_ms))
}

fn window_json(w: &Window) -> Value {
    json!({ "from": dto::iso(w.from), "to": dto::iso(w.to()), "bucketMs": w.bucket_ms })
}

/// `GET /api/v1/stats/runs`: runs created in each bucket, by the status they have now.
pub(super) async fn runs_by_status(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let window = window(&state, &query, DEFAULT_WINDOW_MS)?;
    let counts = state.engine.runs_by_status(&env, window).await?;
    let mut buckets: Vec<BTreeMap<&'static str, u64>> =
        vec![BTreeMap::new(); window.buckets as usize];
    for c in &counts {
        if let Some(bucket) = buckets.get_mut(c.bucket as usize) {
            *bucket.entry(c.status.as_str()).or_default() += c.count;
        }
    }
    let data: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            json!({
                "start": dto::iso(window.from + window.bucket_ms * i as i64),
                "counts": counts,
            })
        })
        .collect();
    let mut out = window_json(&window);
    out["buckets"] = json!(data);
    Ok(Json(out))
}

/// `GET /api/v1/stats/queues`: runs waiting in the queues at the end of each bucket, in all and
/// in the deepest queues.
pub(super) async fn queue_depth(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let window = window(&state, &query, DEFAULT_WINDOW_MS)?;
    let depth = state.engine.queue_depth(&env, window).await?;
    let mut out = window_json(&window);
    out["points"] = json!(
        depth
            .points
            .iter()
            .map(|p| dto::iso(*p))
            .collect::<Vec<_>>()
    );
    out["total"] = json!(depth.total);
    out["queues"] = json!(
        depth
            .queues
            .iter()
            .map(|(name, d)| json!({ "name": name, "depth": d }))
            .collect::<Vec<_>>()
    );
    out["truncated"] = json!(depth.truncated);
    Ok(Json(out))
}

/// `GET /api/v1/stats/durations`: p50/p95 of each task's runs that finished in the window (by
/// default the last day).
pub(super) async fn task_durations(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let window = window(&state, &query, 24 * DEFAULT_WINDOW_MS)?;
    let tasks = state.engine.task_durations(&env, window).await?;
    let mut out = window_json(&window);
    out["tasks"] = json!(
        tasks
            .iter()
            .map(|t| json!({
                "task": t.task_id,
                "runs": t.runs,
                "p50Ms": t.p50_ms,
                "p95Ms": t.p95_ms,
                "maxMs": t.max_ms,
                "computeP50Ms": t.compute_p50_ms,
                "computeP95Ms": t.compute_p95_ms,
            }))
            .collect::<Vec<_>>()
    );
    Ok(Json(out))
}
