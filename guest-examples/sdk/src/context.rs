//! What a handler knows about the run it is executing: [`Context`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::kiln::task::types::RunContext;

/// The run an attempt belongs to: ids, attempt number, version, tags and so on.
///
/// Every handler receives one. It wraps the WIT `run-context` record.
#[derive(Debug, Clone)]
pub struct Context {
    inner: RunContext,
}

impl Context {
    /// The `run_…` id of the run.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The id of the task being run.
    pub fn task_id(&self) -> &str {
        &self.inner.task_id
    }

    /// The attempt number: 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The deployed version the run is locked to, e.g. `20261130.1`.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The environment slug, e.g. `dev`.
    pub fn environment(&self) -> &str {
        &self.inner.environment
    }

    /// The tags given at trigger time.
    pub fn tags(&self) -> &[String] {
        &self.inner.tags
    }

    /// The idempotency key given at trigger time, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.inner.idempotency_key.as_deref()
    }

    /// The queue the run was dequeued from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// The machine preset this attempt runs on, e.g. `small-1x`.
    pub fn machine(&self) -> &str {
        &self.inner.machine
    }

    /// The parent run, when this is a child run.
    pub fn parent_run_id(&self) -> Option<&str> {
        self.inner.parent_run_id.as_deref()
    }

    /// The root run, when this is a child run.
    pub fn root_run_id(&self) -> Option<&str> {
        self.inner.root_run_id.as_deref()
    }

    /// When the run was created, in milliseconds since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.inner.created_at_ms
    }

    /// When the run was created.
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.created_at_ms)
    }

    /// The raw WIT record.
    pub fn raw(&self) -> &RunContext {
        &self.inner
    }
}

/// Wraps a WIT `run-context`; also how tests of handlers make a context.
impl From<RunContext> for Context {
    fn from(inner: RunContext) -> Context {
        Context { inner }
    }
}

impl From<Context> for RunContext {
    fn from(ctx: Context) -> RunContext {
        ctx.inner
    }
}
