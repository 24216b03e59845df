//! Runs on the wire: the run as `GET /api/v3/runs/{id}` shows it (with attempts, usage and what it
//! waits for), the runs list with its pagination, and log lines.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{format_duration, iso, raw};
use crate::engine::RunView;
use crate::model::{Attempt, Environment, LogLine, Run, RunError, RunStatus, WaitingFor};
use crate::store::RunPage;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDto {
    message: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_trace: Option<String>,
    /// kiln's machine-readable code (Trigger.dev's internal error codes where they exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

impl From<&RunError> for ErrorDto {
    fn from(e: &RunError) -> ErrorDto {
        ErrorDto {
            message: e.message.clone(),
            name: e.name.clone(),
            stack_trace: e.stack.clone(),
            code: e.code.clone(),
        }
    }
}

/// The fields every run shape shares (Trigger.dev's `CommonRunFields`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonRunFields {
    id: String,
    status: &'static str,
    task_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    is_queued: bool,
    is_executing: bool,
    is_waiting: bool,
    is_completed: bool,
    is_success: bool,
    is_failed: bool,
    is_cancelled: bool,
    is_test: bool,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delayed_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Box<RawValue>>,
    cost_in_cents: f64,
    base_cost_in_cents: f64,
    duration_ms: u64,
}

impl CommonRunFields {
    pub(super) fn new(run: &Run) -> CommonRunFields {
        use RunStatus as S;
        let s = run.status;
        CommonRunFields {
            id: run.id.clone(),
            status: s.as_str(),
            task_identifier: run.task_id.clone(),
            version: run.version.clone(),
            is_queued: matches!(s, S::Queued | S::Delayed | S::PendingVersion),
            is_executing: matches!(s, S::Dequeued | S::Executing),
            is_waiting: s == S::Waiting,
            is_completed: s.is_final(),
            is_success: s == S::Completed,
            is_failed: s.is_failure(),
            is_cancelled: s == S::Canceled,
            is_test: false,
            created_at: iso(run.created_at),
            updated_at: iso(run.updated_at),
            started_at: run.started_at.map(iso),
            finished_at: run.finished_at.map(iso),
            tags: run.tags.clone(),
            // Trigger.dev shows the key the user gave, not the hash the SDK sent.
            idempotency_key: run
                .idempotency_key_options
                .as_ref()
                .map(|o| o.key.clone())
                .or_else(|| run.idempotency_key.clone()),
            delayed_until: run.delay_until.map(iso),
            ttl: run.ttl.map(format_duration),
            expired_at: run.expired_at.map(iso),
            metadata: run.metadata.as_deref().map(raw),
            cost_in_cents: 0.0,
            base_cost_in_cents: 0.0,
            duration_ms: run.compute_ms,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDto {
    /// Wasm fuel consumed (roughly one unit per instruction).
    fuel: u64,
    compute_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDto {
    number: u32,
    status: &'static str,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDto>,
    usage: UsageDto,
}

/// `GET /api/v3/runs/{id}`: Trigger.dev's `RetrieveRunResponse` plus kiln's `attempts`, `usage`,
/// `queue` and `machine`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDto {
    #[serde(flatten)]
    common: CommonRunFields,
    depth: u32,
    /// kiln's: the run that triggered this one, and the root of the tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_run_id: Option<String>,
    trigger_function: &'static str,
    /// kiln's: the scope of an SDK-made idempotency key (`run`, `attempt` or `global`).
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key_scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<String>,
    priority: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<String>,
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDto>,
    related_runs: serde_json::Value,
    attempt_count: u32,
    attempts: Vec<AttemptDto>,
    usage: UsageDto,
    queue: String,
    machine: &'static str,
    /// kiln's: what a WAITING run waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    waitpoints: Vec<serde_json::Value>,
}

impl RunDto {
    /// Whether the run has finished.
    pub fn is_completed(&self) -> bool {
        self.common.is_completed
    }

    pub fn new(run: &Run, attempts: &[Attempt], waiting: &[WaitingFor]) -> RunDto {
        RunDto {
            common: CommonRunFields::new(run),
            depth: run.depth,
            parent_run_id: run.parent_run_id.clone(),
            root_run_id: run.root_run_id.clone(),
            trigger_function: if run.batch_id.is_some() {
                "batchTrigger"
            } else {
                "trigger"
            },
            idempotency_key_scope: run
                .idempotency_key_options
                .as_ref()
                .map(|o| o.scope.as_str()),
            batch_id: run.batch_id.clone(),
            priority: run.priority_ms as f64 / 1000.0,
            concurrency_key: run.concurrency_key.clone(),
            payload: raw(&run.payload),
            output: run.output.as_deref().map(raw),
            error: run.error.as_ref().map(ErrorDto::from),
            related_runs: serde_json::json!({}),
            attempt_count: run.attempt_count,
            attempts: attempts
                .iter()
                .map(|a| AttemptDto {
                    number: a.number,
                    status: a.status.as_str(),
                    started_at: iso(a.started_at),
                    completed_at: a.finished_at.map(iso),
                    error: a.error.as_ref().map(ErrorDto::from),
                    usage: UsageDto {
                        fuel: a.fuel_used,
                        compute_ms: a.compute_ms,
                    },
                })
                .collect(),
            usage: UsageDto {
                fuel: run.fuel_used,
                compute_ms: run.compute_ms,
            },
            queue: run.queue.clone(),
            machine: run.machine.as_str(),
            waitpoints: waiting.iter().map(waiting_json).collect(),
        }
    }
}

impl From<&RunView> for RunDto {
    fn from(view: &RunView) -> RunDto {
        RunDto::new(&view.run, &view.attempts, &view.waiting_for)
    }
}

pub(crate) fn waiting_json(w: &WaitingFor) -> serde_json::Value {
    match w {
        WaitingFor::DateTime { id, completes_at } => {
            serde_json::json!({ "id": id, "type": "DATETIME", "completesAt": iso(*completes_at) })
        }
        WaitingFor::Token { id, timeout_at } => serde_json::json!({
            "id": id,
            "type": "MANUAL",
            "timeoutAt": timeout_at.map(iso),
        }),
        WaitingFor::Run { id } => serde_json::json!({ "type": "RUN", "runId": id }),
    }
}

#[derive(Debug, Serialize)]
pub struct EnvDto {
    id: String,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct ListRunItem {
    #[serde(flatten)]
    common: CommonRunFields,
    env: EnvDto,
}

#[derive(Debug, Serialize)]
pub struct Pagination {
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
}

/// `GET /api/v1/runs`: Trigger.dev's `ListRunResponse`.
#[derive(Debug, Serialize)]
pub struct ListRunsResponse {
    data: Vec<ListRunItem>,
    pagination: Pagination,
}

impl ListRunsResponse {
    pub fn new(page: &RunPage, env: &Environment) -> ListRunsResponse {
        ListRunsResponse {
            data: page
                .runs
                .iter()
                .map(|r| ListRunItem {
                    common: CommonRunFields::new(r),
                    env: EnvDto {
                        id: env.id.clone(),
                        name: env.slug.clone(),
                    },
                })
                .collect(),
            pagination: Pagination {
                next: page.next.clone(),
                previous: page.previous.clone(),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LogDto {
    id: i64,
    attempt: u32,
    at: String,
    level: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Box<RawValue>>,
}

impl LogDto {
    pub fn new(id: i64, line: &LogLine) -> LogDto {
        LogDto {
            id,
            attempt: line.attempt,
            at: iso(line.at),
            level: line.level.as_str(),
            message: line.message.clone(),
            attributes: line.attributes.as_deref().map(raw),
        }
    }
}
