//! kiln's run history endpoints for the dashboard: a run's timeline (`GET
//! /api/v1/runs/{id}/timeline`) and the tree of runs it belongs to (`GET
//! /api/v1/runs/{id}/tree`). Another environment's run is not found, like a missing one.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Authed, dto};
use crate::engine::history::{Happening, Moment};
use crate::store::{WaitKind, WaitRecord};

fn wait_json(w: &WaitRecord) -> Value {
    let (kind, children) = match &w.kind {
        WaitKind::DateTime => ("DATETIME", None),
        WaitKind::Token => ("MANUAL", None),
        WaitKind::Runs(ids) => ("RUN", Some(ids)),
    };
    let mut v = json!({ "type": kind, "id": w.id, "since": dto::iso(w.since) });
    if let Some(deadline) = w.deadline {
        v["deadline"] = json!(dto::iso(deadline));
    }
    if let Some(done) = w.done_at {
        v["doneAt"] = json!(dto::iso(done));
    }
    if let Some(children) = children {
        v["runIds"] = json!(children);
    }
    if w.timed_out {
        v["timedOut"] = json!(true);
    }
    v
}

fn moment_json(m: &Moment) -> Value {
    let mut v = match &m.happening {
        Happening::Triggered => json!({ "type": "TRIGGERED" }),
        Happening::Delayed { until } => json!({ "type": "DELAYED", "until": dto::iso(*until) }),
        Happening::Enqueued => json!({ "type": "ENQUEUED" }),
        Happening::AttemptStarted { attempt } => {
            json!({ "type": "ATTEMPT_STARTED", "attempt": attempt })
        }
        Happening::AttemptEnded {
            attempt,
            status,
            error,
        } => json!({
            "type": "ATTEMPT_ENDED",
            "attempt": attempt,
            "status": status.as_str(),
            "error": error.as_ref().map(dto::ErrorDto::from),
        }),
        Happening::Retry {
            attempt,
            waited_ms,
            started,
        } => json!({
            "type": "RETRY",
            "attempt": attempt,
            "delayMs": waited_ms,
            "started": started,
        }),
        Happening::Waiting { wait } => json!({ "type": "WAITING", "wait": wait_json(wait) }),
        Happening::Resumed { wait } => json!({ "type": "RESUMED", "wait": wait_json(wait) }),
        Happening::Finished { status } => json!({ "type": "FINISHED", "status": status.as_str() }),
    };
    v["at"] = json!(dto::iso(m.at));
    v
}

pub(super) async fn run_timeline(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let moments = state.engine.run_timeline(&env, &run_id).await?;
    let data: Vec<Value> = moments.iter().map(moment_json).collect();
    Ok(Json(json!({ "id": run_id, "data": data })))
}

pub(super) async fn run_tree(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (nodes, more) = state.engine.run_tree(&env, &run_id).await?;
    let data: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "taskIdentifier": n.task_id,
                "status": n.status.as_str(),
                "parentRunId": n.parent_run_id,
                "depth": n.depth,
                "createdAt": dto::iso(n.created_at),
                "finishedAt": n.finished_at.map(dto::iso),
            })
        })
        .collect();
    Ok(Json(
        json!({ "id": run_id, "data": data, "truncated": more }),
    ))
}
