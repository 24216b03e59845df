//! Deployments and their tasks on the wire, and keys as the admin sees them (never the secret).

use serde::Serialize;
use serde_json::Value;

use super::iso;
use crate::deploy::Phase;
use crate::engine::{DeployState, DeployView, EngineError};
use crate::model::{DeployedComponent, Deployment, TaskDefinition};
use crate::store::KeyInfo;

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
    /// The declared cron schedule: `{cron, timezone}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<Value>,
    /// The content hash of the component that defines the task (and runs it).
    component: String,
}

impl TaskDto {
    fn new(t: &TaskDefinition, component: &DeployedComponent) -> TaskDto {
        TaskDto {
            id: t.id.clone(),
            description: t.description.clone(),
            queue: t.queue.as_ref().map(|q| q.name.clone()),
            machine: t.machine.map(|m| m.as_str()),
            max_duration_ms: t
                .max_duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_attempts: t.retry.max_attempts,
            schedule: t
                .schedule
                .as_ref()
                .map(|s| serde_json::json!({ "cron": s.cron, "timezone": s.timezone })),
            component: component.digest.clone(),
        }
    }
}

/// A component of a version: its content hash, the file name it was uploaded as (if given), and
/// the ids of the tasks it defines.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDto {
    content_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    tasks: Vec<String>,
}

/// kiln's deployment shape (Trigger.dev deploys through its own build service instead).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDto {
    id: String,
    version: String,
    /// The first component's content hash (the only one's, for a version of one component).
    content_hash: String,
    created_at: String,
    components: Vec<ComponentDto>,
    tasks: Vec<TaskDto>,
}

impl From<&Deployment> for DeploymentDto {
    fn from(d: &Deployment) -> DeploymentDto {
        DeploymentDto {
            id: d.id.clone(),
            version: d.version.clone(),
            content_hash: d.first_digest().to_owned(),
            created_at: iso(d.created_at),
            components: d
                .components
                .iter()
                .map(|c| ComponentDto {
                    content_hash: c.digest.clone(),
                    name: c.name.clone(),
                    tasks: c.tasks.iter().map(|t| t.id.clone()).collect(),
                })
                .collect(),
            tasks: d
                .components
                .iter()
                .flat_map(|c| c.tasks.iter().map(move |t| TaskDto::new(t, c)))
                .collect(),
        }
    }
}

/// A deploy in the background: `QUEUED` (waiting for the compiler), `COMPILING` (compiling or
/// checking a component, as `progress` says), then `DEPLOYED` with its `deployment` or `FAILED`
/// with the `error` (message and the status the upload would have answered).
pub fn deploy_json(view: &DeployView) -> Value {
    let components: Vec<Value> = view
        .components
        .iter()
        .map(|(name, bytes)| serde_json::json!({ "name": name, "bytes": bytes }))
        .collect();
    let mut body = serde_json::json!({
        "id": view.id,
        "createdAt": iso(view.created_at),
        "finishedAt": view.finished_at.map(iso),
        "components": components,
    });
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (status, field, value) = match &view.state {
        DeployState::Running(p) => (
            if p.phase == Phase::Waiting {
                "QUEUED"
            } else {
                "COMPILING"
            },
            "progress",
            serde_json::json!({
                "phase": p.phase.as_str(),
                "component": p.component,
                "components": p.components,
                "name": p.name,
                "bytes": p.bytes,
                "elapsedMs": ms(p.elapsed),
                "estimatedMs": p.estimate.map(ms),
            }),
        ),
        DeployState::Deployed(d) => (
            "DEPLOYED",
            "deployment",
            serde_json::to_value(DeploymentDto::from(&**d)).unwrap_or(Value::Null),
        ),
        DeployState::Failed(e) => {
            let (status, message) = failure(e);
            (
                "FAILED",
                "error",
                serde_json::json!({ "message": message, "status": status }),
            )
        }
    };
    body["status"] = serde_json::json!(status);
    body[field] = value;
    body
}

/// A failed deploy's status code and message, as the upload would have answered them (read as
/// often as the deploy is polled, so nothing is logged here).
fn failure(e: &EngineError) -> (u16, String) {
    (
        super::super::error::engine_status(e).as_u16(),
        e.to_string(),
    )
}

/// A key as the admin API shows it: never the secret (creation adds it once).
pub fn key_json(k: &KeyInfo) -> Value {
    serde_json::json!({
        "id": k.id,
        "project": k.project,
        "environment": k.environment,
        "prefix": k.prefix,
        "createdAt": iso(k.created_at),
        "revokedAt": k.revoked_at.map(iso),
    })
}
