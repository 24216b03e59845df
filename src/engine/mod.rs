//! The run engine: triggering, the dispatcher that claims queued runs and executes their attempts,
//! cancellation, and recovery after a restart.
//!
//! Decisions come from the pure state machine in [`state`]; this module carries out its effects
//! (store writes with compare-and-set, sandbox calls, interrupts). It knows nothing of HTTP or SQL
//! text and talks to wasmtime only through `sandbox`. One file per job: `trigger` (options
//! resolved trigger > task > host), `runs` (what a client does to a run), `queues` (queue and
//! environment limits, and the scheduler's view of them), `deployments`, `dispatch` (the loop and
//! its slots), `attempt` (executing one attempt and recording its end), `timers`, `recover`, `shared` (what a
//! host does beside others on one database), and `transitions` (the state machine's results as
//! store changes).

pub mod access;
mod attempt;
pub mod batches;
pub mod bulk;
mod config;
mod deployments;
mod deploys;
mod dispatch;
pub mod env_vars;
mod error;
pub mod history;
mod queues;
mod reads;
mod recover;
mod run_host;
mod runs;
pub mod scheduler;
pub mod schedules;
mod shared;
pub mod state;
pub mod stats;
mod timers;
pub mod tokens;
mod transitions;
mod trigger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::deploy::{DeployError, Deployer, Upload};
use crate::metadata::{MAX_METADATA_BYTES, MetadataError, MetadataOp};
use crate::model::{
    AttemptStatus, Clock, DEFAULT_IDEMPOTENCY_KEY_TTL, Delay, Deployment, Environment, Lane,
    MAX_ATTEMPTS_CAP, Machine, Millis, Queue, QueueRef, RetryPolicy, Run, RunError, RunStatus,
    TASK_QUEUE_PREFIX, TriggerOptions,
};
use crate::sandbox::http::{HttpLimits, HttpPolicy, OutboundRule};
use crate::sandbox::{
    AttemptOutcome, AttemptRequest, CancelHandle, RunContext, Sandbox, TrapKind, WaitFor, journal,
};
use crate::store::{
    Claimed, Durability, EnvironmentChange, FinishAttempt, Inserted, NewRun, ParentLink, RunUpdate,
    Staged, Store, StoreError,
};
use scheduler::{QueueLimits, Scheduler};
use state::{Effect, Event, FailureKind, RunState, Transition, transition};

pub use config::EngineConfig;
pub use deploys::{DeployState, DeployView, MAX_DEPLOYS, MAX_DEPLOYS_PER_ENVIRONMENT};
use dispatch::Slot;
pub use error::EngineError;
pub use queues::{EnvironmentLimit, QueueStats};
pub use reads::RunView;
pub use runs::{CancelOutcome, MetadataChanges, ReplayChanges};
use transitions::{outcome_event, requeue_time, run_state, run_update};
pub use trigger::{
    InvalidOption, MAX_BATCH_ITEMS, MAX_IDEMPOTENCY_KEY_LEN, MAX_PAYLOAD_BYTES, MAX_TAG_LEN,
    MAX_TAGS, TriggerItem, check_concurrency_key, check_idempotency_key, check_metadata,
    check_queue_name, check_tags, check_trigger, valid_task_id,
};

/// First and longest pause between tries of a write that failed for want of disk space.
const STORAGE_RETRY_MIN: Duration = Duration::from_millis(50);

const STORAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// The engine; shared by the API and the dispatcher.
pub struct Engine {
    store: Store,
    sandbox: Sandbox,
    deployer: Arc<Deployer>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    wake: Notify,
    executing: Mutex<HashMap<String, CancelHandle>>,
    /// Earliest known delayed-run, TTL or schedule deadline; timer passes run only once it has come.
    timer_due: AtomicI64,
    /// Counts `arm_timer` calls, so a timer pass knows whether a deadline was armed while it ran
    /// (and may not have been seen by its reads).
    timer_arms: std::sync::atomic::AtomicU64,
    /// Set when the dispatcher stops: attempts then stop waiting for a full disk to free up.
    stopping: std::sync::atomic::AtomicBool,
    /// The memory pool in MiB permits; each executing attempt holds its machine's memory.
    memory: Arc<Semaphore>,
    memory_pool_mib: u32,
    /// Which runs start next; slots are counted here.
    scheduler: Mutex<Scheduler>,
    /// Lanes a limit held by other hosts' runs cut short (see `shared`).
    held_back: Mutex<std::collections::HashSet<Lane>>,
    /// Slots held by attempts now (free slots are counted from these, not from tasks).
    held: std::sync::atomic::AtomicUsize,
    /// Deployments by id, as attempts need them (a deployment never changes once stored).
    deployments: Mutex<HashMap<String, Arc<Deployment>>>,
    /// Where wait tokens' callback URLs point; set once the host listens.
    token_urls: std::sync::OnceLock<tokens::TokenUrls>,
    /// Seals and opens environment variables.
    secrets: crate::secrets::SecretBox,
    /// Deploys compiling in the background, and those that ended lately.
    deploys: deploys::Deploys,
}

impl Engine {
    pub fn new(
        store: Store,
        sandbox: Sandbox,
        deployer: Arc<Deployer>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        secrets: crate::secrets::SecretBox,
    ) -> Engine {
        let pool_mib = u32::try_from(config.memory_pool_bytes >> 20).unwrap_or(u32::MAX);
        Engine {
            store,
            sandbox,
            deployer,
            clock,
            wake: Notify::new(),
            executing: Mutex::new(HashMap::new()),
            // Unknown at start: the first dispatcher pass looks.
            timer_due: AtomicI64::new(i64::MIN),
            timer_arms: std::sync::atomic::AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            memory: Arc::new(Semaphore::new(pool_mib as usize)),
            memory_pool_mib: pool_mib,
            scheduler: Mutex::new(Scheduler::new(config.environment_concurrency)),
            held_back: Mutex::new(std::collections::HashSet::new()),
            held: std::sync::atomic::AtomicUsize::new(0),
            deployments: Mutex::new(HashMap::new()),
            token_urls: std::sync::OnceLock::new(),
            secrets,
            deploys: deploys::Deploys::default(),
            config,
        }
    }
    /// The engine's current time.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    /// Guest instances alive now (a checkpointed run holds none).
    pub fn live_instances(&self) -> usize {
        self.sandbox.live_instances()
    }

    /// Runs a write an attempt's progress depends on (its start, checkpoint or end) until it is
    /// stored. A full disk fails the write without storing anything; the attempt then keeps its
    /// slot and its result and tries again, with backoff, until space returns or the host stops
    /// (the next start recovers the run from its last stored state).
    /// A staged write's value once it is durable (off the hot path, where nothing gains from
    /// going on before the commit).
    pub(super) async fn durably<T>(
        staged: impl std::future::Future<Output = Result<Staged<T>, StoreError>>,
    ) -> Result<T, StoreError> {
        let staged = staged.await?;
        staged.durable.wait().await?;
        Ok(staged.value)
    }

    pub(super) async fn until_stored<T, F>(
        &self,
        run_id: &str,
        mut write: impl FnMut() -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut pause = STORAGE_RETRY_MIN;
        loop {
            match write().await {
                Err(e) if e.is_storage() && !self.stopping.load(Ordering::SeqCst) => {
                    tracing::warn!(run = %run_id, error = %e, "the run's progress could not be stored; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(STORAGE_RETRY_MAX);
                }
                other => return other,
            }
        }
    }
}
