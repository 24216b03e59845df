//! Wire shapes, following `@trigger.dev/core`'s `v3/schemas/api.ts` where Trigger.dev has the
//! endpoint. Domain types are converted here; they never serialize themselves.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{
    Attempt, Deployment, Environment, LogLine, Millis, Run, RunError, RunStatus, TaskDefinition,
};
use crate::store::RunPage;

fn iso(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Stored JSON text, sent as JSON without re-parsing. Stored values were validated on the way in;
/// anything unreadable is sent as a JSON string rather than failing the request.
fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::Value::String(text.to_owned()).to_string())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
    })
}

#[derive(Debug)]
pub struct TriggerRequest {
    /// The payload as JSON text (`null` when absent).
    pub payload: String,
}

/// The options kiln does not implement yet; refused by name instead of silently ignored.
const UNSUPPORTED_OPTIONS: &str = "this kiln does not support trigger options yet (delay, ttl, priority, idempotencyKey, tags, queue, concurrencyKey, maxAttempts, machine, metadata, lockToVersion); remove `options`";

impl TriggerRequest {
    pub fn parse(body: &[u8]) -> Result<TriggerRequest, String> {
        #[derive(Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            payload: Option<&'a RawValue>,
            #[serde(borrow, default)]
            options: Option<&'a RawValue>,
            #[serde(borrow, default)]
            #[allow(dead_code)]
            context: Option<&'a RawValue>,
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(TriggerRequest {
                payload: "null".into(),
            });
        }
        let parsed: Body<'_> = serde_json::from_slice(body).map_err(|e| {
            format!(
                "the body is not valid JSON of the form {{\"payload\": …, \"options\": {{…}}}}: {e}"
            )
        })?;
        if let Some(options) = parsed.options {
            let empty = matches!(
                serde_json::from_str::<serde_json::Value>(options.get()),
                Ok(serde_json::Value::Null)
            ) || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                options.get(),
            )
            .is_ok_and(|m| m.is_empty());
            if !empty {
                return Err(UNSUPPORTED_OPTIONS.into());
            }
        }
        Ok(TriggerRequest {
            payload: parsed
                .payload
                .map_or_else(|| "null".into(), |p| p.get().to_owned()),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct TriggerResponse {
    pub id: String,
}

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
    cost_in_cents: f64,
    base_cost_in_cents: f64,
    duration_ms: u64,
}

impl CommonRunFields {
    fn new(run: &Run) -> CommonRunFields {
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
            tags: Vec::new(),
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
    trigger_function: &'static str,
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
}

impl RunDto {
    pub fn new(run: &Run, attempts: &[Attempt]) -> RunDto {
        RunDto {
            common: CommonRunFields::new(run),
            depth: 0,
            trigger_function: "trigger",
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
        }
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
#[serde(rename_all = "camelCase")]
pub struct TaskDto {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
}

impl From<&TaskDefinition> for TaskDto {
    fn from(t: &TaskDefinition) -> TaskDto {
        TaskDto {
            id: t.id.clone(),
            description: t.description.clone(),
            queue: t.queue.as_ref().map(|q| q.name.clone()),
            machine: t.machine.map(|m| m.as_str()),
            max_duration_ms: t
                .max_duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_attempts: t.retry.max_attempts,
        }
    }
}

/// kiln's deployment shape (Trigger.dev deploys through its own build service instead).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDto {
    id: String,
    version: String,
    content_hash: String,
    created_at: String,
    tasks: Vec<TaskDto>,
}

impl From<&Deployment> for DeploymentDto {
    fn from(d: &Deployment) -> DeploymentDto {
        DeploymentDto {
            id: d.id.clone(),
            version: d.version.clone(),
            content_hash: d.component_digest.clone(),
            created_at: iso(d.created_at),
            tasks: d.tasks.iter().map(TaskDto::from).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_body_shapes() {
        assert_eq!(TriggerRequest::parse(b"").unwrap().payload, "null");
        assert_eq!(
            TriggerRequest::parse(br#"{"payload":{"a":1}}"#)
                .unwrap()
                .payload,
            r#"{"a":1}"#
        );
        assert_eq!(
            TriggerRequest::parse(br#"{"payload":1,"options":{}}"#)
                .unwrap()
                .payload,
            "1"
        );
        assert!(
            TriggerRequest::parse(br#"{"payload":1,"options":{"delay":"1h"}}"#)
                .unwrap_err()
                .contains("does not support trigger options")
        );
        assert!(
            TriggerRequest::parse(b"{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }
}
