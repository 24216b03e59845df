//! What the sandbox hands back: the tasks a component declares, an attempt's outcome and report,
//! and what a checkpointed run waits for.
//!
//! Plain values only: no wasmtime types, so the engine can match on them without knowing wasm.

use std::time::Duration;

use super::classify::GuestFailure;
use super::journal::Entry;
use crate::model::{LogLine, Millis};

/// A task as the component declared it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTask {
    pub id: String,
    pub description: Option<String>,
    pub queue_name: Option<String>,
    pub queue_concurrency_limit: Option<u32>,
    pub retry: Option<DeclaredRetry>,
    pub max_duration_ms: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub machine: Option<String>,
    pub schedule: Option<DeclaredSchedule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSchedule {
    pub cron: String,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredRetry {
    pub max_attempts: Option<u32>,
    pub factor: Option<f64>,
    pub min_timeout_ms: Option<u64>,
    pub max_timeout_ms: Option<u64>,
    pub randomize: Option<bool>,
    pub out_of_memory_machine: Option<String>,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// `run` returned output (checked to be JSON within the size limit).
    Output(String),
    /// `run` returned `error(..)` (`abort: false`) or `abort(..)` (`abort: true`).
    TaskError {
        abort: bool,
        name: String,
        message: String,
        stack: Option<String>,
    },
    /// `run` returned something that is not valid JSON or is too large.
    InvalidOutput(String),
    /// The guest did not return.
    Failed(GuestFailure),
    /// The guest waits: checkpoint the run with the journal `recorded` since the last checkpoint
    /// (appended to what is stored).
    Suspended { wait: WaitFor, recorded: Vec<Entry> },
}

/// An attempt's outcome with its usage and logs.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub fuel_used: u64,
    pub compute: Duration,
    pub logs: Vec<LogLine>,
}

/// What a checkpointed run waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A time (milliseconds since the Unix epoch).
    Until(Millis),
    /// A wait token's completion or timeout.
    Token(String),
    /// The end of every one of these child runs.
    Runs(Vec<String>),
}
