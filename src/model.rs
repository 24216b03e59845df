//! Domain types shared by every module: runs, attempts, deployments, task definitions, machines.
//!
//! These are plain data. They never derive `Serialize` for the wire (the `api` module owns the wire
//! shapes) and they know nothing of SQL or wasmtime. Where a value crosses into SQLite it goes through
//! the `as_str`/`parse` pairs defined here so the spelling lives in one place.

use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch. All stored timestamps use this unit.
pub type Millis = i64;

/// Current wall-clock time in [`Millis`].
pub fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// Where the engine reads the time. The host uses [`SystemClock`]; tests that span hours use
/// [`ManualClock`] and move it forward.
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Default fuel budget of an attempt on `small-1x`: about five minutes of busy compute on a
/// current core. A safety net against runaway loops, not a quota; `maxDuration` is the time limit.
pub const DEFAULT_FUEL_BUDGET: u64 = 600_000_000_000;

/// Default lifetime of an idempotency key (Trigger.dev's).
pub const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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

/// Makes a new sortable id with a type prefix, e.g. `run_01JD…`.
///
/// ULIDs sort by creation time, which the runs list relies on for newest-first paging.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
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

/// Machine presets, with Trigger.dev's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    Micro,
    #[default]
    Small1x,
    Small2x,
    Medium1x,
    Medium2x,
    Large1x,
    Large2x,
}

impl Machine {
    pub const ALL: [Machine; 7] = [
        Machine::Micro,
        Machine::Small1x,
        Machine::Small2x,
        Machine::Medium1x,
        Machine::Medium2x,
        Machine::Large1x,
        Machine::Large2x,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Micro => "micro",
            Machine::Small1x => "small-1x",
            Machine::Small2x => "small-2x",
            Machine::Medium1x => "medium-1x",
            Machine::Medium2x => "medium-2x",
            Machine::Large1x => "large-1x",
            Machine::Large2x => "large-2x",
        }
    }

    pub fn parse(s: &str) -> Option<Machine> {
        Machine::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Memory a component instance may use in total on this machine: Trigger.dev's preset sizes,
    /// capped at wasm32's 4 GiB address space.
    pub fn memory_bytes(self) -> u64 {
        const MIB: u64 = 1 << 20;
        let mib = match self {
            Machine::Micro => 256,
            Machine::Small1x => 512,
            Machine::Small2x => 1024,
            Machine::Medium1x => 2048,
            Machine::Medium2x | Machine::Large1x | Machine::Large2x => 4096,
        };
        mib * MIB
    }

    /// Fuel budget of one attempt on this machine, given the budget of `small-1x`: scaled with
    /// Trigger.dev's vCPUs (micro 0.25, small-1x 0.5, small-2x and medium-1x 1, medium-2x 2,
    /// large-1x 4, large-2x 8), so a bigger machine may compute longer before a runaway loop ends
    /// as `FUEL_EXHAUSTED`.
    pub fn fuel_budget(self, small_1x: u64) -> u64 {
        let (num, den) = match self {
            Machine::Micro => (1, 2),
            Machine::Small1x => (1, 1),
            Machine::Small2x | Machine::Medium1x => (2, 1),
            Machine::Medium2x => (4, 1),
            Machine::Large1x => (8, 1),
            Machine::Large2x => (16, 1),
        };
        small_1x.saturating_mul(num) / den
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry policy of a task, every field resolved (host defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub factor: f64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub randomize: bool,
}

impl Default for RetryPolicy {
    /// Trigger.dev's `defaultRetryOptions`.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 60_000,
            randomize: true,
        }
    }
}

/// Trigger.dev's global hard cap on attempts of one run.
pub const MAX_ATTEMPTS_CAP: u32 = 250;

/// A task as declared by a component's `definitions()`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    pub id: String,
    pub description: Option<String>,
    pub queue: Option<QueueDefinition>,
    pub retry: RetryDefinition,
    pub max_duration: Option<Duration>,
    pub ttl: Option<Duration>,
    pub machine: Option<Machine>,
    /// A declarative cron schedule, validated.
    pub schedule: Option<TaskSchedule>,
}

/// A task's declarative schedule: a validated 5-field cron expression and its IANA time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSchedule {
    pub cron: String,
    pub timezone: String,
}

/// Retry settings as declared: `None` fields take the host defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryDefinition {
    pub max_attempts: Option<u32>,
    pub factor: Option<f64>,
    pub min_timeout_ms: Option<u64>,
    pub max_timeout_ms: Option<u64>,
    pub randomize: Option<bool>,
    pub out_of_memory_machine: Option<Machine>,
}

impl RetryDefinition {
    /// Fills the unset fields from `defaults`.
    pub fn resolve(&self, defaults: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            factor: self.factor.unwrap_or(defaults.factor),
            min_timeout_ms: self.min_timeout_ms.unwrap_or(defaults.min_timeout_ms),
            max_timeout_ms: self.max_timeout_ms.unwrap_or(defaults.max_timeout_ms),
            randomize: self.randomize.unwrap_or(defaults.randomize),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDefinition {
    pub name: String,
    pub concurrency_limit: Option<u32>,
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

/// One environment of one project; every run, deployment and key belongs to exactly one.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub id: String,
    pub project_slug: String,
    pub slug: String,
    /// Limits set for this environment (`None`: the host's).
    pub limits: EnvironmentLimits,
}

/// Per-environment limits an admin may set below the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvironmentLimits {
    /// Largest component upload, in bytes.
    pub max_component_bytes: Option<u64>,
    /// Largest trigger payload, in bytes.
    pub max_payload_bytes: Option<u64>,
}

/// A deployed version of an environment's component.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub environment_id: String,
    pub version: String,
    pub component_digest: String,
    pub created_at: Millis,
    pub tasks: Vec<TaskDefinition>,
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

/// The prefix of a task's own queue: the queue of task `x` is `task/x`.
pub const TASK_QUEUE_PREFIX: &str = "task/";

/// Whether a queue is a task's own or a named one declared by tasks (Trigger.dev's queue types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Task,
    Custom,
}

impl QueueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Task => "task",
            QueueKind::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<QueueKind> {
        match s {
            "task" => Some(QueueKind::Task),
            "custom" => Some(QueueKind::Custom),
            _ => None,
        }
    }

    /// The kind of the queue called `name`.
    pub fn of(name: &str) -> QueueKind {
        if name.starts_with(TASK_QUEUE_PREFIX) {
            QueueKind::Task
        } else {
            QueueKind::Custom
        }
    }
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    pub kind: QueueKind,
    /// From the latest deployed definition; `None`: the environment's limit.
    pub concurrency_limit: Option<u32>,
    /// Set over the API; wins over the definition until reset.
    pub override_limit: Option<u32>,
    pub overridden_at: Option<Millis>,
    pub paused: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Queue {
    /// The limit in force: the override, else the definition's.
    pub fn effective_limit(&self) -> Option<u32> {
        self.override_limit.or(self.concurrency_limit)
    }

    /// The name shown for a task queue is the task id (Trigger.dev's `type: task` lookups).
    pub fn task_id(&self) -> Option<&str> {
        self.name.strip_prefix(TASK_QUEUE_PREFIX)
    }
}

/// How a client names a queue: by id, by task (its own queue) or by name (a named queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    Id(String),
    Task(String),
    Custom(String),
}

/// Where a wait token stands (Trigger.dev's `WAITING`, `COMPLETED`, `TIMED_OUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Waiting,
    Completed,
    TimedOut,
}

impl TokenStatus {
    /// Trigger.dev's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Waiting => "WAITING",
            TokenStatus::Completed => "COMPLETED",
            TokenStatus::TimedOut => "TIMED_OUT",
        }
    }

    pub fn parse(s: &str) -> Option<TokenStatus> {
        match s {
            "WAITING" => Some(TokenStatus::Waiting),
            "COMPLETED" => Some(TokenStatus::Completed),
            "TIMED_OUT" => Some(TokenStatus::TimedOut),
            _ => None,
        }
    }
}

/// The error a timed-out token completes with (Trigger.dev's shape and code).
pub fn token_timeout_error(at: Millis) -> String {
    let when = jiff::Timestamp::from_millisecond(at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    serde_json::json!({
        "code": "TRIGGER_WAITPOINT_TIMEOUT",
        "message": format!("Waitpoint timed out at {when}"),
    })
    .to_string()
}

/// A wait token: a waitpoint completed from outside the run, with JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitToken {
    pub id: String,
    pub environment_id: String,
    pub status: TokenStatus,
    pub idempotency_key: Option<String>,
    pub idempotency_expires_at: Option<Millis>,
    pub tags: Vec<String>,
    /// JSON text: the completion data, or the timeout error when `output_is_error`.
    pub output: Option<String>,
    pub output_is_error: bool,
    pub timeout_at: Option<Millis>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
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

/// A wait token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub environment_id: String,
    pub timeout_at: Option<Millis>,
    /// The key and when it stops matching repeats.
    pub idempotency: Option<(String, Millis)>,
    pub tags: Vec<String>,
    pub now: Millis,
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

/// Parses a duration like Trigger.dev's: `"30s"`, `"15m"`, `"1h30m"`, `"2d"`, `"1w"` (units w, d, h,
/// m, s, in any combination, each a whole number).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Parses an ISO 8601 / RFC 3339 timestamp (`2026-11-30T12:00:00Z`) to [`Millis`].
pub fn parse_timestamp(text: &str) -> Option<Millis> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_trigger_dev() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h52m18s"), Some(Duration::from_secs(6738)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "1x", "1.5h", "-1h", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_parse_from_iso_8601() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_timestamp("2026-11-30T12:00:00.500+01:00").map(|t| t % 1000),
            Some(500)
        );
        assert_eq!(parse_timestamp("tomorrow"), None);
    }
}
