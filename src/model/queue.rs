//! Queues: a task's own (`task/<id>`) or a named one, with its limits and pause flag, and the ways a
//! client names one.

use super::Millis;

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
