//! What the store's reads for the dashboard return: counts of runs by status over time, the spans
//! runs spent queued, finished runs' durations, the waits a run went through, and a run's tree.
//!
//! These are plain values computed from what the store keeps anyway (runs' times, attempts,
//! waitpoints); nothing here is stored for the dashboard's sake, and every read takes the
//! environment it is about.

use crate::model::{Millis, RunStatus};

/// Runs created in one bucket of time that have `status` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCount {
    /// The bucket's index from the window's start (bucket `i` starts at `from + i × bucket`).
    pub bucket: u32,
    pub status: RunStatus,
    pub count: u64,
}

/// A time a run waited in a queue: from its trigger (or the end of its delay) to its first
/// attempt, or from a failed attempt's end to the retry's start. `left` is `None` while it still
/// waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpan {
    pub queue: String,
    pub entered: Millis,
    pub left: Option<Millis>,
}

/// Spans of a window, and whether there were more than the read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSpans {
    pub spans: Vec<QueueSpan>,
    pub truncated: bool,
}

/// A finished run's time from its first attempt's start to its end, and its compute time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDuration {
    pub task_id: String,
    pub wall_ms: u64,
    pub compute_ms: u64,
}

/// What a run waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitKind {
    /// A time (`wait.for` / `wait.until` past the in-place threshold).
    DateTime,
    /// A wait token.
    Token,
    /// Child runs (`triggerAndWait`, `batchTriggerAndWait`): the ids of the children.
    Runs(Vec<String>),
}

/// One wait in a run's life, as the store can tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRecord {
    pub kind: WaitKind,
    /// The waitpoint or token id; for child runs, the first child's id.
    pub id: String,
    /// When the wait began: the checkpoint for a time, the token's creation, the first child's
    /// trigger.
    pub since: Millis,
    /// A time wait's end, a token's timeout.
    pub deadline: Option<Millis>,
    /// When what it waited for came (the time, the token's completion or timeout, the last
    /// child's end); `None` while it waits.
    pub done_at: Option<Millis>,
    /// A token that timed out.
    pub timed_out: bool,
}

/// A run of a tree of runs, without its payload and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub id: String,
    pub task_id: String,
    pub status: RunStatus,
    pub parent_run_id: Option<String>,
    pub depth: u32,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
}
