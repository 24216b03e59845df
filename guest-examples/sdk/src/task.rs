//! Describing tasks: the [`Task`] builder and its [`Retry`] policy, [`Queue`] and cron
//! [`Schedule`].
//!
//! A [`Task`] pairs an id with a handler function and carries every field of the WIT
//! `task-definition`; fields you do not set take kiln's defaults.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::kiln::task::types as wit;
use crate::error::{OUTPUT_ERROR, PAYLOAD_PARSE_ERROR};
use crate::{Context, TaskError};

/// The type-erased handler: JSON payload in, JSON output out.
type Handler = Box<dyn Fn(&str, &Context) -> Result<String, TaskError>>;

/// One task of a component: an id, a handler, and how kiln should run it.
///
/// Build it with [`Task::new`] and the builder methods, and list it in
/// [`tasks!`](crate::tasks).
///
/// ```
/// use std::time::Duration;
/// use kiln_sdk::prelude::*;
///
/// fn resize(url: String, _ctx: &Context) -> Result<String, TaskError> {
///     Ok(url)
/// }
///
/// let task = Task::new("resize-image", resize)
///     .description("Resizes an image")
///     .queue(Queue::named("images").concurrency_limit(5))
///     .retry(Retry::attempts(5).min_timeout_ms(500).max_timeout_ms(30_000))
///     .max_duration(Duration::from_secs(300))
///     .ttl(Duration::from_secs(3600))
///     .machine("small-2x");
/// assert_eq!(task.id(), "resize-image");
///
/// fn report(payload: serde_json::Value, _ctx: &Context) -> Result<serde_json::Value, TaskError> {
///     Ok(payload) // {"type": "DECLARATIVE", "timestamp": "…", "upcoming": […], …}
/// }
///
/// let daily = Task::new("daily-report", report).cron("0 9 * * *");
/// let berlin = Task::new("berlin-report", report)
///     .schedule(Schedule::cron("0 9 * * 1-5").timezone("Europe/Berlin"));
/// ```
#[must_use]
pub struct Task {
    id: String,
    description: Option<String>,
    queue: Option<Queue>,
    retry: Option<Retry>,
    max_duration: Option<Duration>,
    ttl: Option<Duration>,
    machine: Option<String>,
    schedule: Option<Schedule>,
    handler: Handler,
}

impl Task {
    /// A task with id `id` run by `handler`, with kiln's defaults for everything else.
    ///
    /// Ids are 1–128 characters of letters, digits, `-`, `_` and `.`; kiln refuses a component
    /// whose ids are invalid or not unique.
    ///
    /// The handler takes the payload, deserialized from JSON into `P`, and the run's
    /// [`Context`]; it returns an output `O`, serialized to JSON, or a [`TaskError`]. Any
    /// `P: DeserializeOwned` works: your own `#[derive(Deserialize)]` struct, `Option<_>` to
    /// accept `null`, [`serde_json::Value`] to take anything, or [`serde::de::IgnoredAny`] to
    /// ignore the payload.
    pub fn new<P, O, F>(id: impl Into<String>, handler: F) -> Task
    where
        P: DeserializeOwned,
        O: Serialize,
        F: Fn(P, &Context) -> Result<O, TaskError> + 'static,
    {
        let handler = move |payload: &str, ctx: &Context| -> Result<String, TaskError> {
            let payload: P = serde_json::from_str(payload)
                .map_err(|e| TaskError::abort(e.to_string()).with_name(PAYLOAD_PARSE_ERROR))?;
            let output = handler(payload, ctx)?;
            serde_json::to_string(&output)
                .map_err(|e| TaskError::error(e.to_string()).with_name(OUTPUT_ERROR))
        };
        Task {
            id: id.into(),
            description: None,
            queue: None,
            retry: None,
            max_duration: None,
            ttl: None,
            machine: None,
            schedule: None,
            handler: Box::new(handler),
        }
    }

    /// A human-readable description, shown by kiln.
    pub fn description(mut self, description: impl Into<String>) -> Task {
        self.description = Some(description.into());
        self
    }

    /// The queue the task runs on. Without one it runs on its own queue.
    ///
    /// Takes a [`Queue`] or just its name:
    /// `.queue("emails")` or `.queue(Queue::named("emails").concurrency_limit(10))`.
    /// Tasks that name the same queue share it.
    pub fn queue(mut self, queue: impl Into<Queue>) -> Task {
        let limit = self.queue.as_ref().and_then(|q| q.concurrency_limit);
        let mut queue = queue.into();
        queue.concurrency_limit = queue.concurrency_limit.or(limit);
        self.queue = Some(queue);
        self
    }

    /// Most runs of the task's queue that may execute at once.
    ///
    /// When no [`queue`](Task::queue) is set, this limits the task's own queue, `task/<id>`.
    pub fn queue_concurrency_limit(mut self, limit: u32) -> Task {
        let id = &self.id;
        self.queue
            .get_or_insert_with(|| Queue::named(format!("task/{id}")))
            .concurrency_limit = Some(limit);
        self
    }

    /// The retry policy; see [`Retry`]. Without one kiln's defaults apply.
    pub fn retry(mut self, retry: Retry) -> Task {
        self.retry = Some(retry);
        self
    }

    /// Compute time limit of one attempt (kiln's minimum is 5 seconds).
    pub fn max_duration(mut self, max_duration: Duration) -> Task {
        self.max_duration = Some(max_duration);
        self
    }

    /// How long a run may wait to start before it expires.
    pub fn ttl(mut self, ttl: Duration) -> Task {
        self.ttl = Some(ttl);
        self
    }

    /// The machine preset attempts run on: `micro`, `small-1x`, `small-2x`, `medium-1x`,
    /// `medium-2x`, `large-1x` or `large-2x`.
    pub fn machine(mut self, machine: impl Into<String>) -> Task {
        self.machine = Some(machine.into());
        self
    }

    /// Runs the task on a cron schedule: five fields (minute hour day-of-month month
    /// day-of-week) read in UTC, e.g. `"0 9 * * *"` for 09:00 UTC every day.
    ///
    /// Each fire triggers a run whose payload is Trigger.dev's schedule payload: `type`
    /// (`"DECLARATIVE"`), `timestamp`, `lastTimestamp`, `timezone`, `scheduleId`, `upcoming`
    /// (the next five fire times), times as ISO 8601 strings. kiln refuses a deploy whose cron
    /// is invalid. Same as `.schedule(Schedule::cron(expression))`.
    pub fn cron(self, expression: impl Into<String>) -> Task {
        self.schedule(Schedule::cron(expression))
    }

    /// Runs the task on a cron [`Schedule`], e.g. in a time zone. Deploying a version replaces
    /// the environment's declared schedules with the new version's.
    pub fn schedule(mut self, schedule: Schedule) -> Task {
        self.schedule = Some(schedule);
        self
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task's definition as the WIT `task-definition` that `definitions()` returns.
    pub fn definition(&self) -> wit::TaskDefinition {
        wit::TaskDefinition {
            id: self.id.clone(),
            description: self.description.clone(),
            queue: self.queue.clone().map(Into::into),
            retry: self.retry.clone().map(Into::into),
            max_duration_ms: self.max_duration.map(millis),
            ttl_ms: self.ttl.map(millis),
            machine: self.machine.clone(),
            schedule: self.schedule.clone().map(Into::into),
        }
    }

    /// Runs the handler on a JSON `payload` and returns its output as JSON, exactly as a run
    /// does. Handy in tests of your handlers.
    pub fn invoke(&self, payload: &str, ctx: &Context) -> Result<String, TaskError> {
        (self.handler)(payload, ctx)
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("description", &self.description)
            .field("queue", &self.queue)
            .field("retry", &self.retry)
            .field("max_duration", &self.max_duration)
            .field("ttl", &self.ttl)
            .field("machine", &self.machine)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A retry policy. Every field left `None` takes kiln's default: 3 attempts, factor 2,
/// 1 s minimum and 60 s maximum delay, randomized.
///
/// The delay after failed attempt `n` is `min_timeout_ms · factor^(n-1)`, multiplied by a
/// random factor between 1 and 2 when `randomize` is on, and capped at `max_timeout_ms`.
///
/// ```
/// use kiln_sdk::Retry;
///
/// let retry = Retry::attempts(5).factor(1.5).min_timeout_ms(200).randomize(false);
/// assert_eq!(retry.max_attempts, Some(5));
///
/// let same = Retry { max_attempts: Some(5), factor: Some(1.5), min_timeout_ms: Some(200),
///                    randomize: Some(false), ..Retry::default() };
/// assert_eq!(retry, same);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct Retry {
    /// Most attempts in total, the first one included (1 means never retry).
    pub max_attempts: Option<u32>,
    /// Growth factor of the delay between attempts.
    pub factor: Option<f64>,
    /// Delay before the first retry, in milliseconds.
    pub min_timeout_ms: Option<u64>,
    /// Longest delay between attempts, in milliseconds.
    pub max_timeout_ms: Option<u64>,
    /// Whether to randomize the delays.
    pub randomize: Option<bool>,
    /// Machine preset to retry on after the attempt ran out of memory.
    pub out_of_memory_machine: Option<String>,
}

impl Retry {
    /// A policy with every field at kiln's default.
    pub fn new() -> Retry {
        Retry::default()
    }

    /// A policy of at most `max_attempts` attempts, other fields at kiln's defaults.
    pub fn attempts(max_attempts: u32) -> Retry {
        Retry::new().max_attempts(max_attempts)
    }

    /// A policy that never retries: one attempt.
    pub fn never() -> Retry {
        Retry::attempts(1)
    }

    /// Sets the most attempts in total, the first one included.
    pub fn max_attempts(mut self, max_attempts: u32) -> Retry {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the growth factor of the delay between attempts.
    pub fn factor(mut self, factor: f64) -> Retry {
        self.factor = Some(factor);
        self
    }

    /// Sets the delay before the first retry, in milliseconds.
    pub fn min_timeout_ms(mut self, ms: u64) -> Retry {
        self.min_timeout_ms = Some(ms);
        self
    }

    /// Sets the longest delay between attempts, in milliseconds.
    pub fn max_timeout_ms(mut self, ms: u64) -> Retry {
        self.max_timeout_ms = Some(ms);
        self
    }

    /// Sets whether the delays are randomized.
    pub fn randomize(mut self, randomize: bool) -> Retry {
        self.randomize = Some(randomize);
        self
    }

    /// Sets the machine preset to retry on after the attempt ran out of memory.
    pub fn out_of_memory_machine(mut self, machine: impl Into<String>) -> Retry {
        self.out_of_memory_machine = Some(machine.into());
        self
    }
}

impl From<Retry> for wit::RetryPolicy {
    fn from(r: Retry) -> wit::RetryPolicy {
        wit::RetryPolicy {
            max_attempts: r.max_attempts,
            factor: r.factor,
            min_timeout_ms: r.min_timeout_ms,
            max_timeout_ms: r.max_timeout_ms,
            randomize: r.randomize,
            out_of_memory_machine: r.out_of_memory_machine,
        }
    }
}

/// A named queue, which several tasks may share, with an optional concurrency limit.
///
/// Names follow the rules of task ids: 1–128 characters of letters, digits, `-`, `_` and `.`.
///
/// ```
/// use kiln_sdk::Queue;
///
/// let queue = Queue::named("emails").concurrency_limit(10);
/// assert_eq!(queue.concurrency_limit, Some(10));
/// assert_eq!(Queue::from("emails").name, "emails");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Queue {
    /// The queue's name.
    pub name: String,
    /// Most runs of the queue that may execute at once; `None` for kiln's default.
    pub concurrency_limit: Option<u32>,
}

impl Queue {
    /// The queue called `name`, without a concurrency limit of its own.
    pub fn named(name: impl Into<String>) -> Queue {
        Queue {
            name: name.into(),
            concurrency_limit: None,
        }
    }

    /// Sets the most runs of the queue that may execute at once.
    pub fn concurrency_limit(mut self, limit: u32) -> Queue {
        self.concurrency_limit = Some(limit);
        self
    }
}

impl From<&str> for Queue {
    fn from(name: &str) -> Queue {
        Queue::named(name)
    }
}

impl From<String> for Queue {
    fn from(name: String) -> Queue {
        Queue::named(name)
    }
}

impl From<Queue> for wit::QueueDefinition {
    fn from(q: Queue) -> wit::QueueDefinition {
        wit::QueueDefinition {
            name: q.name,
            concurrency_limit: q.concurrency_limit,
        }
    }
}

/// A cron schedule for a task: five fields (minute hour day-of-month month day-of-week) and
/// the IANA time zone they are read in (UTC unless set). Daylight saving is handled: a time
/// skipped by a spring-forward runs at the first minute after the gap, and a time repeated by a
/// fall-back runs once.
///
/// ```
/// use kiln_sdk::Schedule;
///
/// let schedule = Schedule::cron("30 2 * * *").timezone("America/New_York");
/// assert_eq!(schedule.cron, "30 2 * * *");
/// assert_eq!(schedule.timezone.as_deref(), Some("America/New_York"));
/// assert_eq!(Schedule::from("0 * * * *").timezone, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Schedule {
    /// The cron expression.
    pub cron: String,
    /// IANA time zone name, e.g. `Europe/Berlin`; `None` for UTC.
    pub timezone: Option<String>,
}

impl Schedule {
    /// The schedule `expression`, read in UTC.
    pub fn cron(expression: impl Into<String>) -> Schedule {
        Schedule {
            cron: expression.into(),
            timezone: None,
        }
    }

    /// Reads the expression in this IANA time zone instead of UTC.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Schedule {
        self.timezone = Some(timezone.into());
        self
    }
}

impl From<&str> for Schedule {
    fn from(expression: &str) -> Schedule {
        Schedule::cron(expression)
    }
}

impl From<Schedule> for wit::ScheduleDefinition {
    fn from(s: Schedule) -> wit::ScheduleDefinition {
        wit::ScheduleDefinition {
            cron: s.cron,
            timezone: s.timezone,
        }
    }
}
