//! Runs and their attempts: statuses (Trigger.dev's spelling), trigger options, errors, lanes,
//! what a waiting run waits for, and log lines.

use std::fmt;
use std::time::Duration;

use super::{Machine, Millis, RetryPolicy};

/// When a delayed run should be enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// This long after the trigger.
    For(Duration),
    /// At this time; a time in the past means no delay.
    Until(Millis),
}

/// Options given when triggering a run (Trigger.dev's `options`), validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerOptions {
    pub delay: Option<Delay>,
    /// Time the run may wait to start; `Some(ZERO)` opts out of any default.
    pub ttl: Option<Duration>,
    /// Head start in the queue, in milliseconds (Trigger.dev's `priority` seconds × 1000).
    pub priority_ms: i64,
    pub idempotency_key: Option<String>,
    pub idempotency_key_ttl: Option<Duration>,
    /// The key as the user gave it and its scope, when the SDK made (hashed) `idempotency_key`.
    pub idempotency_key_options: Option<IdempotencyKeyOptions>,
    pub tags: Vec<String>,
    pub max_attempts: Option<u32>,
    pub max_duration: Option<Duration>,
    pub machine: Option<Machine>,
    pub queue: Option<String>,
    pub concurrency_key: Option<String>,
    /// Initial metadata: JSON object text.
    pub metadata: Option<String>,
    pub lock_to_version: Option<String>,
}

/// What an SDK-made idempotency key is scoped to (Trigger.dev's `idempotencyKeys.create`
/// `scope`): the SDK hashes the scope into the key itself, so kiln only keeps it to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyScope {
    /// Unique within the parent run (the SDK appends the run id inside a task).
    Run,
    /// Unique within the parent's attempt.
    Attempt,
    /// Unique in the environment.
    Global,
}

impl IdempotencyScope {
    pub const ALL: [IdempotencyScope; 3] = [
        IdempotencyScope::Run,
        IdempotencyScope::Attempt,
        IdempotencyScope::Global,
    ];

    /// Trigger.dev's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IdempotencyScope::Run => "run",
            IdempotencyScope::Attempt => "attempt",
            IdempotencyScope::Global => "global",
        }
    }

    pub fn parse(s: &str) -> Option<IdempotencyScope> {
        IdempotencyScope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The key a user gave before the SDK hashed it, and its scope (`idempotencyKeyOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeyOptions {
    pub key: String,
    pub scope: IdempotencyScope,
}

/// Public run status, spelled as in Trigger.dev's API v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    PendingVersion,
    Delayed,
    Queued,
    Dequeued,
    Executing,
    Waiting,
    Completed,
    Canceled,
    Failed,
    Crashed,
    SystemFailure,
    Expired,
    TimedOut,
}

impl RunStatus {
    pub const ALL: [RunStatus; 13] = [
        RunStatus::PendingVersion,
        RunStatus::Delayed,
        RunStatus::Queued,
        RunStatus::Dequeued,
        RunStatus::Executing,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Canceled,
        RunStatus::Failed,
        RunStatus::Crashed,
        RunStatus::SystemFailure,
        RunStatus::Expired,
        RunStatus::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::PendingVersion => "PENDING_VERSION",
            RunStatus::Delayed => "DELAYED",
            RunStatus::Queued => "QUEUED",
            RunStatus::Dequeued => "DEQUEUED",
            RunStatus::Executing => "EXECUTING",
            RunStatus::Waiting => "WAITING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Canceled => "CANCELED",
            RunStatus::Failed => "FAILED",
            RunStatus::Crashed => "CRASHED",
            RunStatus::SystemFailure => "SYSTEM_FAILURE",
            RunStatus::Expired => "EXPIRED",
            RunStatus::TimedOut => "TIMED_OUT",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed
                | RunStatus::Canceled
                | RunStatus::Failed
                | RunStatus::Crashed
                | RunStatus::SystemFailure
                | RunStatus::Expired
                | RunStatus::TimedOut
        )
    }

    /// Final and not a success (Trigger.dev's `isFailed`).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunStatus::Failed
                | RunStatus::Crashed
                | RunStatus::SystemFailure
                | RunStatus::Expired
                | RunStatus::TimedOut
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Executing,
    Completed,
    Failed,
    Canceled,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Executing => "EXECUTING",
            AttemptStatus::Completed => "COMPLETED",
            AttemptStatus::Failed => "FAILED",
            AttemptStatus::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<AttemptStatus> {
        [
            AttemptStatus::Executing,
            AttemptStatus::Completed,
            AttemptStatus::Failed,
            AttemptStatus::Canceled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// An error as shown to users, in Trigger.dev's `SerializedError` shape plus a kiln code.
#[derive(Debug, Clone, PartialEq)]
pub struct RunError {
    /// Machine-readable code, e.g. `TASK_RUN_CRASHED`; `None` for a user error from the task.
    pub code: Option<String>,
    pub name: String,
    pub message: String,
    pub stack: Option<String>,
}

impl RunError {
    /// An error kiln itself reports, with a code (`name` is plain `Error`).
    pub fn coded(code: &str, message: impl Into<String>) -> RunError {
        RunError {
            code: Some(code.to_owned()),
            name: "Error".into(),
            message: message.into(),
            stack: None,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub environment_id: String,
    pub environment_slug: String,
    pub task_id: String,
    pub status: RunStatus,
    pub payload: String,
    pub output: Option<String>,
    pub error: Option<RunError>,
    /// Deployment the run is locked to (set when its first attempt starts).
    pub deployment_id: Option<String>,
    pub version: Option<String>,
    pub queue: String,
    pub machine: Machine,
    pub retry: RetryPolicy,
    pub attempt_count: u32,
    /// Order inside the queue; retries keep it.
    pub queue_timestamp: Millis,
    /// Not dequeued before this time (retry backoff).
    pub available_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Fuel consumed by all attempts.
    pub fuel_used: u64,
    /// Wall time spent executing attempts, in milliseconds.
    pub compute_ms: u64,
    pub priority_ms: i64,
    /// When a DELAYED run is (or was) to be enqueued.
    pub delay_until: Option<Millis>,
    pub ttl: Option<Duration>,
    /// A run not started by then expires.
    pub expires_at: Option<Millis>,
    pub expired_at: Option<Millis>,
    pub idempotency_key: Option<String>,
    /// The user's key and scope behind `idempotency_key`, when the SDK hashed it.
    pub idempotency_key_options: Option<IdempotencyKeyOptions>,
    pub tags: Vec<String>,
    /// JSON object text.
    pub metadata: Option<String>,
    pub max_duration: Option<Duration>,
    pub concurrency_key: Option<String>,
    /// Version the trigger asked for; the run starts on it.
    pub lock_to_version: Option<String>,
    pub batch_id: Option<String>,
    /// Where the run retries after running out of memory.
    pub oom_machine: Option<Machine>,
    /// Seeds the guest's randomness (the same on every replay).
    pub seed: u64,
    /// The current attempt has a checkpoint: its next execution replays the journal.
    pub checkpointed: bool,
    /// The run that triggered this one, and the root of that tree.
    pub parent_run_id: Option<String>,
    pub root_run_id: Option<String>,
    /// 0 for a run triggered from outside, parent's depth + 1 for a child.
    pub depth: u32,
}

impl Run {
    /// The lane the run waits in: its environment's queue, split by concurrency key.
    pub fn lane(&self) -> Lane {
        Lane {
            environment_id: self.environment_id.clone(),
            queue: self.queue.clone(),
            concurrency_key: self.concurrency_key.clone(),
        }
    }
}

/// Where a queued run waits: an environment's queue, split by concurrency key. Each lane has the
/// queue's concurrency limit to itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    pub environment_id: String,
    pub queue: String,
    pub concurrency_key: Option<String>,
}

/// Something a WAITING run waits for, as the run API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingFor {
    /// A time (a `DATETIME` waitpoint).
    DateTime { id: String, completes_at: Millis },
    /// A wait token (a `MANUAL` waitpoint).
    Token {
        id: String,
        timeout_at: Option<Millis>,
    },
    /// A child run that has not ended.
    Run { id: String },
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub run_id: String,
    pub number: u32,
    pub status: AttemptStatus,
    pub deployment_id: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub error: Option<RunError>,
    pub fuel_used: u64,
    pub compute_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

/// One line of a run's log: from the `log` import or the guest's stdout/stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub attempt: u32,
    pub at: Millis,
    pub level: LogLevel,
    pub message: String,
    /// JSON object text, if the guest gave attributes.
    pub attributes: Option<String>,
}
