//! The engine's host-wide defaults and sizes, as `kiln serve` sets them.

use super::*;

/// Host-wide defaults and sizes of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts executing at once, over all environments.
    pub concurrency: usize,
    /// Runs one environment may hold at once (DEQUEUED or EXECUTING) unless the admin sets
    /// another limit for it.
    pub environment_concurrency: u32,
    /// Retry policy for what a task does not set.
    pub default_retry: RetryPolicy,
    pub default_machine: Machine,
    /// TTL of runs whose trigger and task set none.
    pub default_ttl: Option<Duration>,
    /// Compute-time limit of attempts whose trigger and task set none.
    pub default_max_duration: Option<Duration>,
    /// Fuel budget of an attempt on `small-1x` (other machines scale with their vCPUs).
    pub fuel_budget: u64,
    /// Waits up to this long sleep in place and keep the slot; longer ones checkpoint the run.
    pub wait_threshold: Duration,
    /// What one attempt may do over HTTP.
    pub http_limits: HttpLimits,
    /// Bytes a run may write to its scratch directory; `None`: its machine's memory.
    pub scratch_bytes: Option<u64>,
    /// Guest memory the host lends out at once: an attempt starts only when its machine's memory
    /// fits, so attempts together can never use more.
    pub memory_pool_bytes: u64,
}
