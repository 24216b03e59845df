//! Child runs: trigger other tasks of the same environment, with or without waiting for them.
//!
//! ```no_run
//! use kiln_sdk::child::{self, Options};
//! use serde_json::{json, Value};
//!
//! // Fire and forget: runs on the latest version.
//! let run = child::trigger("send-email", &json!({ "to": "ada@example.com" }), Options::default())?;
//! // Wait for the result: the parent is checkpointed (no memory, no slot) until the child ends.
//! let done = child::trigger_and_wait::<Value>("resize", &json!({ "w": 640 }), Options::default())?;
//! match done.result {
//!     Ok(output) => kiln_sdk::info!("resized: {output}"),
//!     Err(e) => kiln_sdk::warn!("the child failed: {}", e.message),
//! }
//! # Ok::<(), child::TriggerError>(())
//! ```
//!
//! Triggering is made once: when the parent replays after a checkpoint, the same child runs are
//! returned, and no run is triggered twice. Children that are waited for run on the parent's
//! version; a child that fails is a value (`result: Err(..)`), not a failure of the parent.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::kiln::task::tasks as wit;

/// Options of a child run; every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// A repeat with a key that is still live returns the earlier run.
    pub idempotency_key: Option<String>,
    /// Up to 10 tags.
    pub tags: Vec<String>,
    /// Start no earlier than this from now.
    pub delay: Option<Duration>,
    /// Expire if not started within this long.
    pub ttl: Option<Duration>,
    /// Run on this queue instead of the task's.
    pub queue: Option<String>,
    /// The queue's limit applies to each key separately.
    pub concurrency_key: Option<String>,
    /// Machine preset name, e.g. `small-2x`.
    pub machine: Option<String>,
    /// Most attempts.
    pub max_attempts: Option<u32>,
    /// Initial metadata (an object).
    pub metadata: Option<serde_json::Value>,
}

/// One run to trigger in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The task to run.
    pub task_id: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// The run's options.
    pub options: Options,
}

impl Item {
    /// An item with default options.
    pub fn new(task_id: impl Into<String>, payload: serde_json::Value) -> Item {
        Item {
            task_id: task_id.into(),
            payload,
            options: Options::default(),
        }
    }
}

/// A triggered child run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// `run_…`
    pub id: String,
    /// The idempotency key matched an earlier run.
    pub is_cached: bool,
}

/// How a failed child run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildError {
    /// The error's name, e.g. `Error`.
    pub name: String,
    /// What went wrong.
    pub message: String,
    /// A stack trace, if the child's error had one.
    pub stack: Option<String>,
}

/// A child run that ended: its id and its output, or its error.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished<T> {
    /// The child run's id.
    pub id: String,
    /// Its output, or its error.
    pub result: Result<T, ChildError>,
}

/// Why the runs could not be triggered (an unknown task, bad options); nothing was triggered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerError(pub String);

impl std::fmt::Display for TriggerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TriggerError {}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn wit_item(item: &Item) -> wit::TriggerItem {
    let o = &item.options;
    wit::TriggerItem {
        task_id: item.task_id.clone(),
        payload: item.payload.to_string(),
        options: wit::TriggerOptions {
            idempotency_key: o.idempotency_key.clone(),
            tags: o.tags.clone(),
            delay_ms: o.delay.map(millis),
            ttl_ms: o.ttl.map(millis),
            queue: o.queue.clone(),
            concurrency_key: o.concurrency_key.clone(),
            machine: o.machine.clone(),
            max_attempts: o.max_attempts,
            metadata: o.metadata.as_ref().map(|m| m.to_string()),
        },
    }
}

fn item(task_id: &str, payload: &impl Serialize, options: Options) -> Result<Item, TriggerError> {
    Ok(Item {
        task_id: task_id.to_owned(),
        payload: serde_json::to_value(payload)
            .map_err(|e| TriggerError(format!("the payload cannot be serialized: {e}")))?,
        options,
    })
}

/// Triggers one run without waiting for it.
pub fn trigger(
    task_id: &str,
    payload: &impl Serialize,
    options: Options,
) -> Result<Child, TriggerError> {
    let mut runs = batch_trigger(vec![item(task_id, payload, options)?])?;
    runs.pop()
        .ok_or_else(|| TriggerError("the host triggered no run".into()))
}

/// Triggers up to 1000 runs without waiting for them.
pub fn batch_trigger(items: Vec<Item>) -> Result<Vec<Child>, TriggerError> {
    let items: Vec<wit::TriggerItem> = items.iter().map(wit_item).collect();
    wit::batch_trigger(&items)
        .map(|runs| {
            runs.into_iter()
                .map(|r| Child {
                    id: r.id,
                    is_cached: r.is_cached,
                })
                .collect()
        })
        .map_err(TriggerError)
}

/// Triggers one run and waits until it ends.
pub fn trigger_and_wait<T: DeserializeOwned>(
    task_id: &str,
    payload: &impl Serialize,
    options: Options,
) -> Result<Finished<T>, TriggerError> {
    let mut done = batch_trigger_and_wait::<T>(vec![item(task_id, payload, options)?])?;
    done.pop()
        .ok_or_else(|| TriggerError("the host triggered no run".into()))
}

/// Triggers up to 1000 runs and waits until all have ended; the results keep the items' order.
/// Output that does not fit `T` is an error result named `TaskOutputError`.
pub fn batch_trigger_and_wait<T: DeserializeOwned>(
    items: Vec<Item>,
) -> Result<Vec<Finished<T>>, TriggerError> {
    let items: Vec<wit::TriggerItem> = items.iter().map(wit_item).collect();
    let outcomes = wit::batch_trigger_and_wait(&items).map_err(TriggerError)?;
    Ok(outcomes
        .into_iter()
        .map(|o| Finished {
            id: o.id,
            result: match o.outcome {
                wit::ChildResult::Ok(output) => {
                    serde_json::from_str(&output).map_err(|e| ChildError {
                        name: "TaskOutputError".into(),
                        message: format!("the child's output does not fit the type asked for: {e}"),
                        stack: None,
                    })
                }
                wit::ChildResult::Error(e) => Err(ChildError {
                    name: e.name,
                    message: e.message,
                    stack: e.stack,
                }),
            },
        })
        .collect())
}
