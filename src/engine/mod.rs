//! The run engine: triggering, the dispatcher that claims queued runs and executes their attempts,
//! cancellation, and recovery after a restart.
//!
//! Decisions come from the pure state machine in [`state`]; this module carries out its effects
//! (store writes with compare-and-set, sandbox calls, interrupts). It knows nothing of HTTP or SQL
//! text and talks to wasmtime only through `sandbox`.

pub mod env_vars;
pub mod metadata;
mod run_host;
pub mod scheduler;
pub mod schedules;
pub mod state;
pub mod tokens;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::deploy::DeployError;
use crate::deploy::Deployer;
use crate::model::{
    AttemptStatus, Clock, DEFAULT_IDEMPOTENCY_KEY_TTL, Delay, Deployment, Environment, Lane,
    Machine, Millis, Queue, QueueRef, RetryPolicy, Run, RunError, RunStatus, TASK_QUEUE_PREFIX,
    TriggerOptions,
};
use crate::sandbox::http::{HttpLimits, HttpPolicy, OutboundRule};
use crate::sandbox::{
    AttemptOutcome, AttemptRequest, CancelHandle, RunContext, Sandbox, TrapKind, WaitFor, journal,
};
use crate::store::{
    EnvironmentChange, FinishAttempt, Inserted, NewRun, ParentLink, RunUpdate, Store, StoreError,
};
use metadata::{MetadataError, MetadataOp};
use scheduler::{QueueLimits, Scheduler};
use state::{Effect, Event, FailureKind, RunState, Transition, transition};

/// Most tags on one run (Trigger.dev's `MAX_TAGS_PER_RUN`).
pub const MAX_TAGS: usize = 10;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;
/// Most items in one batch trigger.
pub const MAX_BATCH_ITEMS: usize = 1_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 2_048;
/// Timer rows handled per pass, so one pass never holds the writer for long.
const TIMER_BATCH: usize = 1_000;

/// Largest payload a trigger may carry (Trigger.dev's limit).
pub const MAX_PAYLOAD_BYTES: usize = 3 << 20;

/// How many times a compare-and-set is retried against concurrent changes before giving up.
const CAS_RETRIES: usize = 8;

/// First and longest pause between tries of a write that failed for want of disk space.
const STORAGE_RETRY_MIN: Duration = Duration::from_millis(50);
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no version is deployed in this environment yet; deploy a component with `kiln deploy <file.wasm>` first"
    )]
    NothingDeployed,
    #[error("lockToVersion: version `{0}` is not deployed in this environment")]
    UnknownVersion(String),
    #[error("lockToVersion: version `{version}` has no task `{task}`")]
    TaskNotInVersion { task: String, version: String },
    #[error("the run is {0}; only DELAYED runs can be rescheduled")]
    NotDelayed(RunStatus),
    #[error("a run may have at most {MAX_TAGS} tags; this would make {0}")]
    TooManyTags(usize),
    #[error("a batch may have 1 to {MAX_BATCH_ITEMS} items; this one has {0}")]
    BatchSize(usize),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("the payload is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("the run changed concurrently too many times; try again")]
    Contended,
    #[error("queue `{0}` not found")]
    QueueNotFound(String),
    #[error(
        "concurrencyLimit: {limit} is more than the environment's limit of {environment_limit}; ask the host admin to raise it"
    )]
    LimitAboveEnvironment { limit: u32, environment_limit: u32 },
    #[error("wait token `{0}` not found")]
    TokenNotFound(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("environment variable `{0}` not found")]
    EnvVarNotFound(String),
    #[error("environment variable `{0}` exists; change it with PUT, or import with override")]
    EnvVarExists(String),
    #[error("{0}")]
    InvalidEnvVar(String),
    /// A stored secret does not open with the host's key.
    #[error("{0}")]
    Secrets(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

/// One run to trigger.
#[derive(Debug, Clone)]
pub struct TriggerItem {
    pub task_id: String,
    /// JSON text.
    pub payload: String,
    pub options: TriggerOptions,
}

/// The result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    /// The run had already finished with this status; nothing changed.
    AlreadyFinished(RunStatus),
}

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
    /// Where wait tokens' callback URLs point; set once the host listens.
    token_urls: std::sync::OnceLock<tokens::TokenUrls>,
    /// Seals and opens environment variables.
    secrets: crate::secrets::SecretBox,
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
            token_urls: std::sync::OnceLock::new(),
            secrets,
            config,
        }
    }

    /// The engine's current time.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Makes the dispatcher look at the queue and the timers again (after a clock change, say).
    pub fn wake(&self) {
        self.timer_due.store(i64::MIN, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Makes sure the timer pass runs by `at`. Call it after the deadline's row is committed.
    fn arm_timer(&self, at: Option<Millis>) {
        if let Some(at) = at {
            self.timer_arms.fetch_add(1, Ordering::SeqCst);
            self.timer_due.fetch_min(at, Ordering::SeqCst);
        }
    }

    /// Runs a write an attempt's progress depends on (its start, checkpoint or end) until it is
    /// stored. A full disk fails the write without storing anything; the attempt then keeps its
    /// slot and its result and tries again, with backoff, until space returns or the host stops
    /// (the next start recovers the run from its last stored state).
    async fn until_stored<T, F>(
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

    /// The HTTP policy of an attempt: its environment's allow-list and the host's limits.
    fn http_policy(&self, start: &crate::store::AttemptStart) -> HttpPolicy {
        let allow = start
            .allowed_outbound_hosts
            .iter()
            .filter_map(|rule| match OutboundRule::parse(rule) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a stored outbound rule");
                    None
                }
            })
            .collect();
        HttpPolicy {
            allow,
            limits: self.config.http_limits.clone(),
            how_to_allow: format!(
                "the host's admin allows hosts per environment: `kiln envs set --project {} --env {} --allow-host scheme://host[:port]` (every rule of the environment, repeated)",
                start.project, start.environment
            ),
        }
    }

    /// Deploys a component and queues the runs that were waiting for a version with its tasks.
    pub async fn deploy(
        &self,
        env: &Environment,
        bytes: Vec<u8>,
    ) -> Result<Deployment, EngineError> {
        if let Some(limit) = env.limits.max_component_bytes
            && bytes.len() as u64 > limit
        {
            return Err(DeployError::TooLarge {
                size: bytes.len(),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }
            .into());
        }
        let deployment = self.deployer.deploy(env, bytes).await?;
        // The deployment set its queues' limits from the definitions.
        for queue in self.store.environment_queues(&env.id).await? {
            self.apply_queue(&queue);
        }
        let tasks = deployment.tasks.iter().map(|t| t.id.clone()).collect();
        let lanes = self
            .store
            .enqueue_pending_version(&env.id, tasks, self.now())
            .await?;
        if !lanes.is_empty() {
            tracing::info!(version = %deployment.version, "queued runs that waited for a version");
            self.activate(lanes);
        }
        // The deployment is stored either way; a failure here is repaired at the next start.
        if let Err(e) = self.sync_declarative(env, &deployment).await {
            tracing::error!(error = %e, version = %deployment.version, "updating the declarative schedules failed");
        }
        self.wake.notify_one();
        Ok(deployment)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Guest instances alive now (a checkpointed run holds none).
    pub fn live_instances(&self) -> usize {
        self.sandbox.live_instances()
    }

    fn scheduler(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the scheduler these lanes may have ready runs, and wakes the dispatcher.
    fn activate(&self, lanes: impl IntoIterator<Item = Lane>) {
        let mut scheduler = self.scheduler();
        for lane in lanes {
            scheduler.activate(lane);
        }
        drop(scheduler);
        self.wake.notify_one();
    }

    fn apply_queue(&self, queue: &Queue) {
        self.scheduler().set_queue(
            &queue.environment_id,
            &queue.name,
            QueueLimits {
                limit: queue.effective_limit(),
                paused: queue.paused,
            },
        );
    }

    /// Loads what the scheduler needs from the store: queue and environment limits, and the lanes
    /// with ready runs. Called once before dispatching.
    async fn load_scheduler(&self) -> Result<(), EngineError> {
        for env in self.store.environments().await? {
            self.scheduler()
                .set_environment_limit(&env.environment.id, env.concurrency_limit);
        }
        for queue in self.store.all_queues().await? {
            self.apply_queue(&queue);
        }
        self.activate(self.store.ready_lanes().await?);
        Ok(())
    }

    /// A queue of the environment with the runs it holds now.
    pub async fn queue(
        &self,
        env: &Environment,
        queue: QueueRef,
    ) -> Result<QueueStats, EngineError> {
        let shown = queue_ref_name(&queue);
        let queue = self
            .store
            .queue(&env.id, queue)
            .await?
            .ok_or(EngineError::QueueNotFound(shown))?;
        self.queue_stats(queue).await
    }

    async fn queue_stats(&self, queue: Queue) -> Result<QueueStats, EngineError> {
        let queued = self
            .store
            .queued_count(&queue.environment_id, &queue.name)
            .await?;
        let running = self
            .scheduler()
            .queue_running(&queue.environment_id, &queue.name);
        Ok(QueueStats {
            queue,
            running,
            queued,
        })
    }

    /// One page of the environment's queues, and how many there are.
    pub async fn list_queues(
        &self,
        env: &Environment,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<QueueStats>, u64), EngineError> {
        let (queues, total) = self.store.list_queues(&env.id, offset, limit).await?;
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            out.push(self.queue_stats(queue).await?);
        }
        Ok((out, total))
    }

    /// Pauses (no run of the queue starts; executing ones finish) or resumes a queue.
    pub async fn pause_queue(
        &self,
        env: &Environment,
        queue: QueueRef,
        paused: bool,
    ) -> Result<QueueStats, EngineError> {
        let shown = queue_ref_name(&queue);
        let changed = self
            .store
            .set_queue_paused(&env.id, queue, paused, self.now())
            .await?;
        self.queue_changed(changed, shown).await
    }

    /// After a queue's settings changed in the store: the scheduler applies them at once.
    async fn queue_changed(
        &self,
        changed: Option<Queue>,
        shown: String,
    ) -> Result<QueueStats, EngineError> {
        let queue = changed.ok_or(EngineError::QueueNotFound(shown))?;
        self.apply_queue(&queue);
        self.wake.notify_one();
        self.queue_stats(queue).await
    }

    /// Overrides a queue's concurrency limit (`None`: back to the limit its definition sets). The
    /// limit may not exceed the environment's.
    pub async fn override_queue_limit(
        &self,
        env: &Environment,
        queue: QueueRef,
        limit: Option<u32>,
    ) -> Result<QueueStats, EngineError> {
        if let Some(limit) = limit {
            let environment_limit = self.scheduler().environment_limit(&env.id);
            if limit > environment_limit {
                return Err(EngineError::LimitAboveEnvironment {
                    limit,
                    environment_limit,
                });
            }
        }
        let shown = queue_ref_name(&queue);
        let changed = self
            .store
            .override_queue_limit(&env.id, queue, limit, self.now())
            .await?;
        self.queue_changed(changed, shown).await
    }

    /// Changes an environment's concurrency limit and limits (see [`EnvironmentChange`]). `None`
    /// if there is no such environment.
    pub async fn update_environment(
        &self,
        project: &str,
        environment: &str,
        change: EnvironmentChange,
    ) -> Result<Option<EnvironmentLimit>, EngineError> {
        let Some(info) = self
            .store
            .update_environment(project, environment, change)
            .await?
        else {
            return Ok(None);
        };
        self.scheduler()
            .set_environment_limit(&info.environment.id, info.concurrency_limit);
        self.wake.notify_one();
        Ok(Some(self.environment_limit(info)))
    }

    /// Every environment with its limit and the runs it holds now.
    pub async fn environments(&self) -> Result<Vec<EnvironmentLimit>, EngineError> {
        Ok(self
            .store
            .environments()
            .await?
            .into_iter()
            .map(|info| self.environment_limit(info))
            .collect())
    }

    fn environment_limit(&self, info: crate::store::EnvironmentInfo) -> EnvironmentLimit {
        let scheduler = self.scheduler();
        EnvironmentLimit {
            concurrency_limit: scheduler.environment_limit(&info.environment.id),
            running: scheduler.environment_running(&info.environment.id),
            environment: info.environment,
            allowed_outbound_hosts: info.allowed_outbound_hosts,
        }
    }

    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    /// Triggers one run. A repeat of a live idempotency key returns the earlier run, `cached`.
    pub async fn trigger(
        &self,
        env: &Environment,
        item: TriggerItem,
    ) -> Result<Inserted, EngineError> {
        let mut inserted = self.trigger_many(env, vec![item], false).await?;
        inserted.pop().ok_or(EngineError::BatchSize(0))
    }

    /// Triggers several runs in one transaction (`batch`: as one batch, with a batch id on each).
    pub async fn trigger_many(
        &self,
        env: &Environment,
        items: Vec<TriggerItem>,
        batch: bool,
    ) -> Result<Vec<Inserted>, EngineError> {
        let runs = self
            .prepare_runs(&env.id, payload_limit(&env.limits), items, None)
            .await?;
        let batch_id = batch.then(|| crate::model::new_id("batch"));
        let inserted = self.store.insert_runs(runs, batch_id).await?;
        self.inserted(&inserted);
        Ok(inserted)
    }

    /// Arms the timers and activates the lanes of newly inserted runs.
    fn inserted(&self, inserted: &[Inserted]) {
        for i in inserted.iter().filter(|i| !i.cached) {
            self.arm_timer(
                i.run
                    .delay_until
                    .filter(|_| i.run.status == RunStatus::Delayed),
            );
            self.arm_timer(i.run.expires_at);
        }
        self.activate(
            inserted
                .iter()
                .filter(|i| !i.cached && i.run.status == RunStatus::Queued)
                .map(|i| i.run.lane()),
        );
    }

    /// Resolves triggers into runs to insert (against the latest version, or the one each locks
    /// to); `parent` links child runs into their tree.
    async fn prepare_runs(
        &self,
        env_id: &str,
        max_payload: usize,
        items: Vec<TriggerItem>,
        parent: Option<ParentLink>,
    ) -> Result<Vec<NewRun>, EngineError> {
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            return Err(EngineError::BatchSize(items.len()));
        }
        if let Some(item) = items.iter().find(|i| i.payload.len() > max_payload) {
            return Err(EngineError::PayloadTooLarge {
                size: item.payload.len(),
                limit: max_payload,
            });
        }
        let now = self.now();
        let latest = self.store.latest_deployment(env_id).await?;
        let mut locked: HashMap<String, Deployment> = HashMap::new();
        let mut runs = Vec::with_capacity(items.len());
        for item in items {
            let deployment = match &item.options.lock_to_version {
                Some(version) => {
                    if !locked.contains_key(version) {
                        let d = self
                            .store
                            .deployment_by_version(env_id, version)
                            .await?
                            .ok_or_else(|| EngineError::UnknownVersion(version.clone()))?;
                        locked.insert(version.clone(), d);
                    }
                    let d = &locked[version];
                    if !d.tasks.iter().any(|t| t.id == item.task_id) {
                        return Err(EngineError::TaskNotInVersion {
                            task: item.task_id,
                            version: version.clone(),
                        });
                    }
                    Some(d)
                }
                None => latest.as_ref(),
            };
            let mut run = self.new_run(env_id, item, deployment, now);
            run.parent = parent.clone();
            runs.push(run);
        }
        Ok(runs)
    }

    /// Resolves a trigger's options against its task's definition and the host defaults
    /// (trigger > task > host).
    fn new_run(
        &self,
        env_id: &str,
        item: TriggerItem,
        deployment: Option<&Deployment>,
        now: Millis,
    ) -> NewRun {
        let o = item.options;
        let task = deployment.and_then(|d| d.tasks.iter().find(|t| t.id == item.task_id));
        let delay_until = o
            .delay
            .map(|d| match d {
                Delay::For(d) => {
                    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }
                Delay::Until(at) => at,
            })
            .filter(|at| *at > now);
        let status = if delay_until.is_some() {
            RunStatus::Delayed
        } else if task.is_none() {
            RunStatus::PendingVersion
        } else {
            RunStatus::Queued
        };
        let mut retry = task
            .map(|t| t.retry.resolve(self.config.default_retry))
            .unwrap_or(self.config.default_retry);
        if let Some(n) = o.max_attempts {
            retry.max_attempts = n;
        }
        let ttl = match o.ttl {
            Some(ttl) if ttl.is_zero() => None,
            Some(ttl) => Some(ttl),
            None => task.and_then(|t| t.ttl).or(self.config.default_ttl),
        };
        let queue_timestamp = delay_until.unwrap_or(now);
        let key_ttl = o.idempotency_key_ttl.unwrap_or(DEFAULT_IDEMPOTENCY_KEY_TTL);
        NewRun {
            environment_id: env_id.to_owned(),
            status,
            payload: item.payload,
            queue: o
                .queue
                .or_else(|| task.and_then(|t| t.queue.as_ref()).map(|q| q.name.clone()))
                .unwrap_or_else(|| format!("{TASK_QUEUE_PREFIX}{}", item.task_id)),
            task_id: item.task_id,
            machine: o
                .machine
                .or_else(|| task.and_then(|t| t.machine))
                .unwrap_or(self.config.default_machine),
            retry,
            oom_machine: task.and_then(|t| t.retry.out_of_memory_machine),
            queue_timestamp,
            priority_ms: o.priority_ms,
            delay_until,
            ttl,
            expires_at: ttl.map(|t| {
                queue_timestamp.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
            }),
            idempotency: o.idempotency_key.map(|k| {
                (
                    k,
                    now.saturating_add(i64::try_from(key_ttl.as_millis()).unwrap_or(i64::MAX)),
                )
            }),
            tags: o.tags,
            metadata: o.metadata,
            max_duration: o.max_duration.or_else(|| task.and_then(|t| t.max_duration)),
            concurrency_key: o.concurrency_key,
            lock_to_version: o.lock_to_version,
            parent: None,
            now,
        }
    }

    /// A new run with the same task, payload, tags and metadata, on the latest version.
    pub async fn replay(&self, env: &Environment, run_id: &str) -> Result<Run, EngineError> {
        let run = self.find(env, run_id).await?;
        let item = TriggerItem {
            task_id: run.task_id,
            payload: run.payload,
            options: TriggerOptions {
                tags: run.tags,
                machine: Some(run.machine),
                ..TriggerOptions::default()
            },
        };
        Ok(self.trigger(env, item).await?.run)
    }

    /// Changes the delay of a DELAYED run.
    pub async fn reschedule(
        &self,
        env: &Environment,
        run_id: &str,
        delay: Delay,
    ) -> Result<Run, EngineError> {
        let run = self.find(env, run_id).await?;
        if transition(&run_state(&run), Event::Reschedule, self.now()).is_err() {
            return Err(EngineError::NotDelayed(run.status));
        }
        let now = self.now();
        let until = match delay {
            Delay::For(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Delay::Until(at) => at.max(now),
        };
        match self.store.reschedule(&run.id, until, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                let status = self.find(env, run_id).await?.status;
                return Err(EngineError::NotDelayed(status));
            }
            Err(e) => return Err(e.into()),
        }
        self.wake();
        self.find(env, run_id).await
    }

    /// Adds tags to a run (at most [`MAX_TAGS`] in all).
    pub async fn add_tags(
        &self,
        env: &Environment,
        run_id: &str,
        tags: Vec<String>,
    ) -> Result<Vec<String>, EngineError> {
        let run = self.find(env, run_id).await?;
        self.store
            .add_tags(&run.id, tags, MAX_TAGS, self.now())
            .await?
            .map_err(EngineError::TooManyTags)
    }

    /// Applies metadata operations to a run's metadata; returns the new metadata (JSON text).
    pub async fn update_metadata(
        &self,
        env: &Environment,
        run_id: &str,
        ops: Vec<MetadataOp>,
    ) -> Result<String, EngineError> {
        let run = self.find(env, run_id).await?;
        let result = self
            .store
            .change_metadata(
                &run.id,
                self.now(),
                move |current| metadata::apply(current.as_deref(), &ops),
                None,
            )
            .await?;
        Ok(result?)
    }

    /// Forgets an idempotency key so the next trigger with it makes a new run.
    pub async fn reset_idempotency_key(
        &self,
        env: &Environment,
        key: &str,
        task_id: Option<String>,
    ) -> Result<usize, EngineError> {
        Ok(self
            .store
            .reset_idempotency_key(&env.id, key, task_id)
            .await?)
    }

    async fn find(&self, env: &Environment, run_id: &str) -> Result<Run, EngineError> {
        self.store
            .run(&env.id, run_id)
            .await?
            .ok_or_else(|| EngineError::RunNotFound(run_id.to_owned()))
    }

    /// Cancels a run in any non-final status; an executing attempt is interrupted within one
    /// epoch tick.
    pub async fn cancel(
        &self,
        env: &Environment,
        run_id: &str,
    ) -> Result<CancelOutcome, EngineError> {
        for _ in 0..CAS_RETRIES {
            let run = self
                .store
                .run(&env.id, run_id)
                .await?
                .ok_or_else(|| EngineError::RunNotFound(run_id.to_owned()))?;
            if run.status.is_final() {
                return Ok(CancelOutcome::AlreadyFinished(run.status));
            }
            let Ok(t) = transition(&run_state(&run), Event::Cancel, self.now()) else {
                return Ok(CancelOutcome::AlreadyFinished(run.status));
            };
            let update = RunUpdate {
                error: Some(RunError::coded("TASK_RUN_CANCELLED", "Canceled by user")),
                ..run_update(&run, &t, self.now())
            };
            match self.end_run(&run, update, AttemptStatus::Canceled).await {
                Ok(resumed) => {
                    self.activate(resumed);
                    if t.effects.contains(&Effect::InterruptAttempt)
                        && let Some(handle) = self.executing_handle(&run.id)
                    {
                        handle.cancel();
                    }
                    // Its children go with it.
                    for child in self.store.live_children(&run.id).await? {
                        Box::pin(self.cancel(env, &child)).await?;
                    }
                    return Ok(CancelOutcome::Canceled);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended)
    }

    /// Applies a change that ends a run not executing now. A checkpointed attempt (the run waits,
    /// or was queued to continue) is closed with `attempt_status` and its journal dropped.
    async fn end_run(
        &self,
        run: &Run,
        update: RunUpdate,
        attempt_status: AttemptStatus,
    ) -> Result<Vec<Lane>, StoreError> {
        if run.checkpointed && run.status != RunStatus::Executing {
            let error = update.error.clone();
            self.store
                .finish_attempt(FinishAttempt::closing(
                    update,
                    run.attempt_count,
                    attempt_status,
                    error,
                ))
                .await
        } else {
            self.store.update_run(update).await
        }
    }

    fn executing_handle(&self, run_id: &str) -> Option<CancelHandle> {
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .cloned()
    }

    /// Puts runs a previous process left claimed or executing back on their way: claimed runs are
    /// queued again, executing ones count as a stalled attempt (retried per policy).
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let runs = self.store.in_flight_runs().await?;
        let count = runs.len();
        for run in runs {
            let now = self.now();
            let Ok(t) = transition(&run_state(&run), Event::Recover, now) else {
                continue;
            };
            let error = RunError::coded(
                FailureKind::Stalled
                    .code()
                    .unwrap_or("TASK_RUN_STALLED_EXECUTING"),
                "the host stopped while this attempt was executing",
            );
            // A checkpointed attempt continues from its journal; any other executing one ended.
            let continues = t.state.checkpointed;
            let update = RunUpdate {
                error: t.state.status.is_final().then(|| error.clone()),
                ..run_update(&run, &t, now)
            };
            let result = if run.status == RunStatus::Executing {
                self.store
                    .finish_attempt(FinishAttempt::closing(
                        update,
                        run.attempt_count,
                        if continues {
                            AttemptStatus::Executing
                        } else {
                            AttemptStatus::Failed
                        },
                        (!continues).then_some(error),
                    ))
                    .await
            } else {
                self.store.update_run(update).await
            };
            match result {
                Ok(resumed) => self.activate(resumed),
                Err(e) => tracing::warn!(run = %run.id, error = %e, "could not recover run"),
            }
        }
        Ok(count)
    }

    /// Runs the dispatcher until `shutdown` turns true; then waits for executing attempts.
    ///
    /// Each pass: timers that came due, then a plan from the scheduler for the free slots, claimed
    /// from the store in one transaction. It sleeps until a trigger, a finished attempt or the next
    /// timer.
    pub async fn dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.load_scheduler().await {
            tracing::error!(error = %e, "loading the queues failed; queued runs start as they are triggered again");
        }
        let mut running = JoinSet::new();
        loop {
            self.run_timers().await;
            let free = self.config.concurrency.saturating_sub(running.len());
            let mut again = false;
            if free > 0 {
                let plan = self.scheduler().plan(free);
                if !plan.is_empty() {
                    let request = plan.iter().map(|c| (c.lane.clone(), c.count)).collect();
                    match self.store.claim_lanes(request, self.now()).await {
                        Ok(lanes) => {
                            let mut started = Vec::new();
                            let mut short = false;
                            let mut scheduler = self.scheduler();
                            for (claim, runs) in plan.iter().zip(lanes) {
                                scheduler.claimed(claim, runs.len());
                                short |= runs.len() < claim.count;
                                started.extend(runs.into_iter().map(|r| (r, claim.lane.clone())));
                            }
                            // Lanes that came up short went idle; others may fill the slots left.
                            again = short && started.len() < free && scheduler.has_ready();
                            drop(scheduler);
                            for (run, lane) in started {
                                let slot = Slot {
                                    engine: self.clone(),
                                    lane,
                                };
                                running.spawn(self.clone().execute_guarded(run, slot));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "claiming runs failed; trying again in a second");
                            let mut scheduler = self.scheduler();
                            for claim in &plan {
                                scheduler.abandoned(claim);
                            }
                            drop(scheduler);
                            self.arm_timer(Some(self.now().saturating_add(1_000)));
                        }
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
            if again {
                continue;
            }
            // Sleep until something can change: a trigger, a finished attempt, or the next timer.
            let due = self.timer_due.load(Ordering::SeqCst);
            let sleep_for =
                Duration::from_millis(due.saturating_sub(self.now()).clamp(0, 3_600_000) as u64);
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        while running.join_next().await.is_some() {}
    }

    /// Enqueues delayed runs whose time came, expires runs whose TTL passed and fires due cron
    /// schedules, once the earliest known deadline has come.
    async fn run_timers(&self) {
        let now = self.now();
        if self.timer_due.load(Ordering::SeqCst) > now {
            return;
        }
        let arms = self.timer_arms.load(Ordering::SeqCst);
        // Both transitions come from the state machine; the store applies them in bulk.
        debug_assert!(
            transition(
                &RunState {
                    status: RunStatus::Delayed,
                    attempt_count: 0,
                    retry: self.config.default_retry,
                    machine: self.config.default_machine,
                    oom_machine: None,
                    checkpointed: false,
                },
                Event::Enqueue,
                now
            )
            .is_ok_and(|t| t.state.status == RunStatus::Queued)
        );
        let expired = RunError::coded("TTL_EXPIRED", "the run did not start before its TTL passed");
        let mut again = false;
        // A failed write (a full disk) is tried again in a second, not at once.
        let mut failed = false;
        let mut log = |what: &str, e: StoreError| {
            failed = true;
            tracing::error!(error = %e, "{what} failed");
        };
        match self.store.enqueue_delayed(now, TIMER_BATCH).await {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("enqueuing delayed runs", e),
        }
        match self
            .store
            .resume_due(now, TIMER_BATCH, tokens::timeout_error)
            .await
        {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("resuming waiting runs", e),
        }
        match self.store.end_backoffs(now, TIMER_BATCH).await {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("ending retry backoffs", e),
        }
        match self.store.expire_due(now, expired, TIMER_BATCH).await {
            Ok((n, resumed)) => {
                again |= n == TIMER_BATCH;
                self.activate(resumed);
            }
            Err(e) => log("expiring runs", e),
        }
        let retry_soon = failed.then(|| now.saturating_add(1_000));
        let schedules_next = self.fire_schedules(now).await;
        let next = if again {
            now
        } else {
            match self.store.next_timer().await {
                Ok(next) => next.unwrap_or(i64::MAX),
                Err(e) => {
                    tracing::error!(error = %e, "reading the next timer failed");
                    now.saturating_add(1_000)
                }
            }
        };
        let next = schedules_next.map_or(next, |at| at.min(next));
        let next = retry_soon.map_or(next, |at| at.max(next));
        // A deadline armed while this pass ran may be missing from what it read: then look again
        // at once instead of sleeping past it. Otherwise keep any earlier deadline armed since.
        let next = if self.timer_arms.load(Ordering::SeqCst) == arms {
            next
        } else {
            now
        };
        let _ = self
            .timer_due
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |due| {
                (due <= now).then_some(next)
            });
    }

    /// A claimed run whose task is in no usable version waits for a deploy (PENDING_VERSION) if it
    /// never started; a started run's locked version cannot lose the task, so that is a failure.
    async fn park_or_fail(&self, run: &Run) {
        let Ok(t) = transition(&run_state(run), Event::Park, self.now()) else {
            let message = format!(
                "task `{}` is not in the deployed version the run is locked to",
                run.task_id
            );
            return self
                .fail_unstarted(run, "COULD_NOT_FIND_TASK", message)
                .await;
        };
        let update = run_update(run, &t, self.now());
        if let Err(e) = self.store.update_run(update).await {
            tracing::error!(run = %run.id, error = %e, "could not park the run");
        }
    }

    /// [`Engine::execute`], and if it panics (a bug in kiln, never the guest's doing), the run
    /// fails as SYSTEM_FAILURE at once instead of staying claimed until the next restart.
    async fn execute_guarded(self: Arc<Self>, run: Run, slot: Slot) {
        use futures_util::FutureExt;
        let (id, env) = (run.id.clone(), run.environment_id.clone());
        let executed = std::panic::AssertUnwindSafe(self.clone().execute(run, slot))
            .catch_unwind()
            .await;
        if executed.is_ok() {
            return;
        }
        tracing::error!(run = %id, "executing the run panicked; failing it as SYSTEM_FAILURE");
        let message = "kiln failed while executing the run (a bug: see the host log)".to_owned();
        match self.store.run(&env, &id).await {
            Ok(Some(run)) if run.status == RunStatus::Executing => {
                let attempt = run.attempt_count;
                self.fail_started(&run, &run_state(&run), attempt, message)
                    .await;
            }
            Ok(Some(run)) if run.status == RunStatus::Dequeued => {
                self.fail_unstarted(&run, "SYSTEM_FAILURE", message).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(run = %id, error = %e, "could not fail the run"),
        }
    }

    /// Executes one attempt of a claimed (DEQUEUED) run and records its end. The run's slot is
    /// released when this returns, however it returns.
    async fn execute(self: Arc<Self>, run: Run, _slot: Slot) {
        let deployment = match self.deployment_for(&run).await {
            Ok(Some(d)) => d,
            Ok(None) => return self.park_or_fail(&run).await,
            Err(e) => {
                return self
                    .fail_unstarted(&run, "SYSTEM_FAILURE", format!("{e}"))
                    .await;
            }
        };
        let prepared = match self.deployer.prepared(&deployment).await {
            Ok(p) => p,
            Err(e) => {
                return self
                    .fail_unstarted(&run, "COULD_NOT_IMPORT_TASK", format!("{e}"))
                    .await;
            }
        };
        // Wait until the machine's memory fits in the pool; the run holds its slot meanwhile.
        let need_mib = u32::try_from(run.machine.memory_bytes() >> 20).unwrap_or(u32::MAX);
        if need_mib > self.memory_pool_mib {
            let message = format!(
                "machine {} needs {need_mib} MiB but the host lends at most {} MiB at once; pick a smaller machine or raise --memory-pool-mib",
                run.machine, self.memory_pool_mib
            );
            return self.fail_unstarted(&run, "SYSTEM_FAILURE", message).await;
        }
        let Ok(_memory) = self.memory.clone().acquire_many_owned(need_mib).await else {
            return;
        };
        let Ok(started) = transition(&run_state(&run), Event::StartAttempt, self.now()) else {
            return;
        };
        let attempt = started.state.attempt_count;
        let cancel = CancelHandle::default();
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone(), cancel.clone());
        let _unregister = Unregister(&self.executing, &run.id, cancel.clone());
        let env = match self
            .until_stored(&run.id, || {
                self.store
                    .start_attempt(&run.id, &deployment.id, attempt, self.now())
            })
            .await
        {
            Ok(env) => env,
            Err(StoreError::Conflict) => return, // canceled while claimed
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not start attempt");
                return;
            }
        };
        let http = Arc::new(self.http_policy(&env));
        let env = match env_vars::open_all(&self.secrets, &env.env_vars) {
            Ok(env) => env,
            Err(e) => {
                return self
                    .fail_started(&run, &started.state, attempt, e.to_string())
                    .await;
            }
        };
        let task = deployment.tasks.iter().find(|t| t.id == run.task_id);
        // A checkpointed attempt replays what it observed before.
        let journal = if run.checkpointed {
            match self
                .store
                .journal(&run.id, attempt)
                .await
                .map(|b| journal::decode(&b))
            {
                Ok(Some(entries)) => entries,
                Ok(None) => {
                    let message = "the run's checkpoint is corrupt; it cannot continue".to_owned();
                    return self
                        .fail_started(&run, &started.state, attempt, message)
                        .await;
                }
                Err(e) => {
                    tracing::error!(run = %run.id, error = %e, "could not read the run's journal");
                    return self
                        .fail_started(&run, &started.state, attempt, format!("{e}"))
                        .await;
                }
            }
        } else {
            Vec::new()
        };
        let request = AttemptRequest {
            payload: run.payload.clone(),
            fuel: run.machine.fuel_budget(self.config.fuel_budget),
            context: RunContext {
                run_id: run.id.clone(),
                task_id: run.task_id.clone(),
                attempt,
                version: deployment.version.clone(),
                environment: run.environment_slug.clone(),
                tags: run.tags.clone(),
                idempotency_key: run.idempotency_key.clone(),
                queue: run.queue.clone(),
                machine: run.machine,
                parent_run_id: run.parent_run_id.clone(),
                root_run_id: run.root_run_id.clone(),
                created_at_ms: u64::try_from(run.created_at).unwrap_or(0),
            },
            max_duration: run
                .max_duration
                .or_else(|| task.and_then(|t| t.max_duration)),
            cancel,
            journal,
            seed: run.seed,
            clock: self.clock.clone(),
            wait_threshold: self.config.wait_threshold,
            env,
            http,
            scratch_bytes: Some(
                self.config
                    .scratch_bytes
                    .unwrap_or_else(|| run.machine.memory_bytes()),
            ),
            services: Arc::new(run_host::RunHost {
                engine: self.clone(),
                run_id: run.id.clone(),
                environment_id: run.environment_id.clone(),
                attempt,
                version: deployment.version.clone(),
                root_run_id: run.root_run_id.clone(),
                parent_run_id: run.parent_run_id.clone(),
                depth: run.depth,
            }),
        };
        let report = self.sandbox.run(&prepared, request).await;
        let executing = RunState {
            status: RunStatus::Executing,
            ..started.state
        };
        let now = self.now();
        let compute_ms = u64::try_from(report.compute.as_millis()).unwrap_or(u64::MAX);
        if let AttemptOutcome::Suspended { wait, recorded } = report.outcome {
            let Ok(t) = transition(&executing, Event::Suspend, now) else {
                return;
            };
            let checkpoint = FinishAttempt {
                update: RunUpdate {
                    expected: RunStatus::Executing,
                    ..run_update(&run, &t, now)
                },
                attempt,
                attempt_status: AttemptStatus::Executing,
                attempt_error: None,
                output: None,
                fuel_used: report.fuel_used,
                compute_ms,
                logs: report.logs,
            };
            let entries = journal::encode(&recorded);
            let stored = match wait {
                WaitFor::Until(until) => {
                    let stored = self
                        .until_stored(&run.id, || {
                            self.store
                                .checkpoint(checkpoint.clone(), entries.clone(), until)
                        })
                        .await;
                    self.arm_timer(Some(until));
                    stored
                }
                // The token may have been completed meanwhile: then the run is queued at once.
                WaitFor::Token(token) => self
                    .until_stored(&run.id, || {
                        self.store.checkpoint_on_token(
                            checkpoint.clone(),
                            entries.clone(),
                            token.clone(),
                        )
                    })
                    .await
                    .map(|lane| self.activate(lane)),
                // Children that all ended meanwhile queue the run at once, too.
                WaitFor::Runs(children) => self
                    .until_stored(&run.id, || {
                        self.store.checkpoint_on_runs(
                            checkpoint.clone(),
                            entries.clone(),
                            children.clone(),
                        )
                    })
                    .await
                    .map(|lane| self.activate(lane)),
            };
            match stored {
                Ok(()) => self.wake.notify_one(),
                Err(e) => {
                    tracing::error!(run = %run.id, error = %e, "could not checkpoint the run")
                }
            }
            return;
        }
        let (event, output, error) = outcome_event(report.outcome);
        let t = match transition(&executing, event, now) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "invalid transition at attempt end");
                return;
            }
        };
        let requeue_at = requeue_time(&t.effects);
        let finish = FinishAttempt {
            update: RunUpdate {
                expected: RunStatus::Executing,
                error: if t.state.status.is_final() {
                    error.clone()
                } else {
                    None
                },
                ..run_update(&run, &t, now)
            },
            attempt,
            attempt_status: if error.is_some() {
                AttemptStatus::Failed
            } else {
                AttemptStatus::Completed
            },
            attempt_error: error,
            output,
            fuel_used: report.fuel_used,
            compute_ms,
            logs: report.logs,
        };
        match self
            .until_stored(&run.id, || self.store.finish_attempt(finish.clone()))
            .await
        {
            Ok(resumed) => {
                self.activate(resumed);
                match requeue_at {
                    Some(at) if at <= now => self.activate([run.lane()]),
                    Some(at) => {
                        self.arm_timer(Some(at));
                        self.wake.notify_one();
                    }
                    None => {}
                }
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not record the attempt's end")
            }
        }
    }

    /// An attempt that started but cannot go on (its checkpoint cannot be read) fails as
    /// SYSTEM_FAILURE.
    async fn fail_started(&self, run: &Run, started: &RunState, attempt: u32, message: String) {
        let executing = RunState {
            status: RunStatus::Executing,
            ..*started
        };
        let kind = FailureKind::System;
        let now = self.now();
        let Ok(t) = transition(&executing, Event::Fail { kind, jitter: 0.0 }, now) else {
            return;
        };
        let error = RunError::coded(kind.code().unwrap_or("SYSTEM_FAILURE"), message);
        let update = RunUpdate {
            expected: RunStatus::Executing,
            error: Some(error.clone()),
            ..run_update(run, &t, now)
        };
        let finish = FinishAttempt::closing(update, attempt, AttemptStatus::Failed, Some(error));
        match self.store.finish_attempt(finish).await {
            Ok(resumed) => self.activate(resumed),
            Err(e) => tracing::error!(run = %run.id, error = %e, "could not fail the run"),
        }
    }

    async fn deployment_for(&self, run: &Run) -> Result<Option<Deployment>, StoreError> {
        let deployment = match (&run.deployment_id, &run.lock_to_version) {
            (Some(id), _) => self.store.deployment(id).await?,
            (None, Some(version)) => {
                self.store
                    .deployment_by_version(&run.environment_id, version)
                    .await?
            }
            (None, None) => self.store.latest_deployment(&run.environment_id).await?,
        };
        Ok(deployment.filter(|d| d.tasks.iter().any(|t| t.id == run.task_id)))
    }

    /// A claimed run that cannot start fails as SYSTEM_FAILURE without an attempt.
    async fn fail_unstarted(&self, run: &Run, code: &str, message: String) {
        let kind = FailureKind::System;
        let Ok(t) = transition(
            &run_state(run),
            Event::Fail { kind, jitter: 0.0 },
            self.now(),
        ) else {
            return;
        };
        let update = RunUpdate {
            error: Some(RunError::coded(code, message)),
            ..run_update(run, &t, self.now())
        };
        match self.end_run(run, update, AttemptStatus::Failed).await {
            Ok(resumed) => self.activate(resumed),
            Err(e) => tracing::error!(run = %run.id, error = %e, "could not fail the run"),
        }
    }
}

/// The largest payload an environment takes: its own limit, within the host's.
fn payload_limit(limits: &crate::model::EnvironmentLimits) -> usize {
    limits.max_payload_bytes.map_or(MAX_PAYLOAD_BYTES, |m| {
        usize::try_from(m)
            .unwrap_or(usize::MAX)
            .min(MAX_PAYLOAD_BYTES)
    })
}

/// A run's hold on its lane's slot: released when the attempt's task ends, however it ends.
struct Slot {
    engine: Arc<Engine>,
    lane: Lane,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.engine.scheduler().release(&self.lane);
        self.engine.wake.notify_one();
    }
}

/// A queue with the runs it holds and the runs waiting in it.
#[derive(Debug, Clone)]
pub struct QueueStats {
    pub queue: Queue,
    /// Runs holding a slot (DEQUEUED or EXECUTING).
    pub running: u32,
    /// Runs waiting (QUEUED, including retry backoff).
    pub queued: u64,
}

/// An environment with the concurrency limit in force and the runs holding a slot.
#[derive(Debug, Clone)]
pub struct EnvironmentLimit {
    pub environment: Environment,
    pub concurrency_limit: u32,
    pub running: u32,
    /// Outbound HTTP rules of the environment's tasks.
    pub allowed_outbound_hosts: Vec<String>,
}

fn queue_ref_name(queue: &QueueRef) -> String {
    match queue {
        QueueRef::Id(id) => id.clone(),
        QueueRef::Task(task) => format!("{TASK_QUEUE_PREFIX}{task}"),
        QueueRef::Custom(name) => name.clone(),
    }
}

/// Removes a run's cancel handle when its attempt ends, however it ends.
struct Unregister<'a>(
    &'a Mutex<HashMap<String, CancelHandle>>,
    &'a str,
    CancelHandle,
);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut executing = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only its own: a newer execution of the run (resumed meanwhile) keeps its handle.
        if executing.get(self.1).is_some_and(|h| h.same(&self.2)) {
            executing.remove(self.1);
        }
    }
}

fn run_state(run: &Run) -> RunState {
    RunState {
        status: run.status,
        attempt_count: run.attempt_count,
        retry: run.retry,
        machine: run.machine,
        oom_machine: run.oom_machine,
        checkpointed: run.checkpointed,
    }
}

/// The store change for transition `t` of `run`: compare-and-set on the run's status as loaded.
fn run_update(run: &Run, t: &Transition, now: Millis) -> RunUpdate {
    RunUpdate {
        run_id: run.id.clone(),
        expected: run.status,
        status: t.state.status,
        available_at: requeue_time(&t.effects),
        error: None,
        machine: t.effects.iter().find_map(|e| match e {
            Effect::SwitchMachine(m) => Some(*m),
            _ => None,
        }),
        checkpointed: t.state.checkpointed,
        now,
    }
}

/// Maps an attempt's outcome to the state machine's event, the output to store and the error.
fn outcome_event(outcome: AttemptOutcome) -> (Event, Option<String>, Option<RunError>) {
    let jitter = rand::random::<f64>();
    let fail = |kind: FailureKind, name: String, message: String, stack: Option<String>| {
        (
            Event::Fail { kind, jitter },
            None,
            Some(RunError {
                code: kind.code().map(str::to_owned),
                name,
                message,
                stack,
            }),
        )
    };
    match outcome {
        AttemptOutcome::Output(output) => (Event::Succeed, Some(output), None),
        // Handled by the caller before the outcome becomes an event.
        AttemptOutcome::Suspended { .. } => fail(
            FailureKind::System,
            "Error".into(),
            "a suspended attempt reached the end-of-attempt path".into(),
            None,
        ),
        AttemptOutcome::TaskError {
            abort,
            name,
            message,
            stack,
        } => {
            let kind = if abort {
                FailureKind::Abort
            } else {
                FailureKind::User
            };
            fail(kind, name, message, stack)
        }
        AttemptOutcome::InvalidOutput(message) => fail(
            FailureKind::InvalidOutput,
            "TaskOutputError".into(),
            message,
            None,
        ),
        AttemptOutcome::Failed(f) => {
            let kind = match f.kind {
                TrapKind::Crash => FailureKind::Crashed,
                TrapKind::OutOfMemory => FailureKind::OutOfMemory,
                TrapKind::FuelExhausted => FailureKind::FuelExhausted,
                TrapKind::Timeout => FailureKind::MaxDuration,
                // The run is already CANCELED; the attempt's end is recorded as canceled.
                TrapKind::Canceled => FailureKind::Abort,
                TrapKind::Nondeterministic => FailureKind::Nondeterministic,
            };
            fail(kind, "Error".into(), f.message, f.stack)
        }
    }
}

/// When a transition puts the run back in the queue, if it does.
fn requeue_time(effects: &[Effect]) -> Option<Millis> {
    effects.iter().find_map(|e| match e {
        Effect::RequeueAt(at) => Some(*at),
        _ => None,
    })
}
