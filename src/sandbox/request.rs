//! What the engine asks the sandbox to execute: one attempt with its payload, limits, journal,
//! clock and services, what the guest sees of its run, and the handle that cancels it.
//!
//! Plain values only: no wasmtime types cross into the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::http;
use super::journal::Entry;
use super::services::RunServices;
use crate::model::{Clock, Machine};

/// What the guest sees of its run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    pub run_id: String,
    pub task_id: String,
    pub attempt: u32,
    pub version: String,
    pub environment: String,
    pub tags: Vec<String>,
    pub idempotency_key: Option<String>,
    pub queue: String,
    pub machine: Machine,
    pub parent_run_id: Option<String>,
    pub root_run_id: Option<String>,
    pub created_at_ms: u64,
}

/// One attempt to execute.
pub struct AttemptRequest {
    pub payload: String,
    /// Fuel budget of the attempt.
    pub fuel: u64,
    pub context: RunContext,
    pub max_duration: Option<Duration>,
    pub cancel: CancelHandle,
    /// What the attempt observed before its last checkpoint, replayed first (empty for a fresh
    /// attempt).
    pub journal: Vec<Entry>,
    /// Seeds the guest's randomness, so a replay sees the same numbers.
    pub seed: u64,
    /// The clock waits and the guest's clocks read (the engine's).
    pub clock: Arc<dyn Clock>,
    /// Waits up to this long sleep in place; longer ones checkpoint.
    pub wait_threshold: Duration,
    /// The run's environment variables (the same for every attempt and replay).
    pub env: Vec<(String, String)>,
    /// The environment's outbound HTTP allow-list and the attempt's limits.
    pub http: Arc<http::HttpPolicy>,
    /// Bytes the run may write to its scratch directory (`/tmp` for the guest); `None`: no
    /// scratch directory.
    pub scratch_bytes: Option<u64>,
    /// What the run may ask of the host (wait tokens).
    pub services: Arc<dyn RunServices>,
}

/// Lets another task interrupt an executing attempt: within one epoch tick while it computes, at
/// once while it waits inside a host call.
#[derive(Clone, Default)]
pub struct CancelHandle(Arc<Cancel>);

#[derive(Default)]
struct Cancel {
    canceled: AtomicBool,
    /// Wakes the one task running the attempt's call (a permit is kept if it is not waiting).
    wake: tokio::sync::Notify,
}

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.canceled.store(true, Ordering::Relaxed);
        self.0.wake.notify_one();
    }

    pub(super) fn is_canceled(&self) -> bool {
        self.0.canceled.load(Ordering::Relaxed)
    }

    /// Resolves once the attempt is canceled.
    pub(super) async fn canceled(&self) {
        while !self.is_canceled() {
            self.0.wake.notified().await;
        }
    }

    /// Whether both handles cancel the same attempt.
    pub fn same(&self, other: &CancelHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Waits up to this long sleep in place unless the host is configured otherwise (Trigger.dev's 5 s).
pub const DEFAULT_WAIT_THRESHOLD: Duration = Duration::from_secs(5);
