//! The wasmtime sandbox: one `Engine` per process, the linker with kiln's host imports, and the
//! execution of `definitions()` and `run()` under fuel, memory and time limits.
//!
//! **The only module that imports wasmtime**, and the home of the one `bindgen!`. Whatever a guest
//! does — trap, loop, allocate without end, print without end, return garbage — comes back as a
//! value ([`AttemptOutcome`], [`GuestFailure`]); nothing on a guest-controlled path panics or grows
//! without a bound.

pub mod baseline;
pub mod http;
pub mod journal;
mod output;
pub mod scratch;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::model::{Clock, LogLevel, LogLine, Machine, Millis, now_ms};
use journal::{Digest, Divergence, Entry, Journal, Kind};
use output::{GuestOutput, LogBuffer};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "kiln:task/task",
        imports: {
            "kiln:task/wait.for-duration": async | trappable,
            "kiln:task/wait.until": async | trappable,
            "kiln:task/wait.create-token": async | trappable,
            "kiln:task/wait.for-token": async | trappable,
            "kiln:task/tasks.batch-trigger": async | trappable,
            "kiln:task/tasks.batch-trigger-and-wait": async | trappable,
            "kiln:task/metadata.get": async | trappable,
            "kiln:task/metadata.update": async | trappable,
        },
        exports: { default: async },
    });
}

use bindings::kiln::task::types as wit;

/// How often the epoch advances. Bounds how late a cancel, a timeout or a yield to the async
/// runtime can come.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Wall time `definitions()` may take at deploy before the upload is refused.
const DEFINITIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// Fuel `definitions()` may burn: generous for building a list, small enough to stop a loop fast.
const DEFINITIONS_FUEL: u64 = 2_000_000_000;

/// Memory `definitions()` may use.
const DEFINITIONS_MEMORY: u64 = 256 << 20;

/// Elements one table may hold (function tables of large guests stay far below).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// What one table element costs against the machine's memory limit: a funcref slot is a pointer.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Largest output a task may return (DESIGN §7).
pub const MAX_OUTPUT_BYTES: usize = 10 << 20;

/// Sizing of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Attempts that may execute at once; sizes the instance pool.
    pub concurrency: usize,
}

/// The process-wide sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
    /// Components compiled from wasm bytes by this process (loading an artifact is not counted).
    compilations: AtomicU64,
    /// Identifies the engine configuration a compiled artifact was made for.
    fingerprint: String,
    /// Stores (guest instances) alive now.
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// Scratch directories for executions, once the host gives them a place.
    scratch: std::sync::OnceLock<Arc<scratch::ScratchPool>>,
}

/// Counts a store as alive until its state is dropped.
struct Live(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled, linked component, ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pre: bindings::TaskPre<HostState>,
    component: Component,
}

/// Why an upload could not become a runnable component.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the upload is not WebAssembly (it does not start with the `\\0asm` magic bytes); upload the `.wasm` file your build produced"
    )]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2` (or wrap a core module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component is invalid: {0}")]
    Invalid(String),
    #[error(
        "the component does not export {missing}; build it against kiln's `kiln:task/task` world (the Rust SDK's `kiln_sdk::tasks!` does this)"
    )]
    MissingExports { missing: String },
    #[error(
        "the component imports {detail}, which kiln does not provide; kiln provides the `kiln:task` interfaces, the WASI 0.2 interfaces (no filesystem preopens, no sockets) and `wasi:http/outgoing-handler`"
    )]
    UnsupportedImport { detail: String },
}

/// A guest call that did not return normally.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestFailure {
    pub kind: TrapKind,
    pub message: String,
    /// The wasm backtrace, when wasmtime captured one.
    pub stack: Option<String>,
}

/// How a guest call ended abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// A trap: panic, `unreachable`, out-of-bounds access, stack overflow.
    Crash,
    /// A memory growth was denied by the machine's limit.
    OutOfMemory,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The time limit passed.
    Timeout,
    /// The attempt was canceled.
    Canceled,
    /// On replay the guest made other host calls than the journal recorded.
    Nondeterministic,
}

/// A task as the component declared it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTask {
    pub id: String,
    pub description: Option<String>,
    pub queue_name: Option<String>,
    pub queue_concurrency_limit: Option<u32>,
    pub retry: Option<DeclaredRetry>,
    pub max_duration_ms: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub machine: Option<String>,
    pub schedule: Option<DeclaredSchedule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSchedule {
    pub cron: String,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredRetry {
    pub max_attempts: Option<u32>,
    pub factor: Option<f64>,
    pub min_timeout_ms: Option<u64>,
    pub max_timeout_ms: Option<u64>,
    pub randomize: Option<bool>,
    pub out_of_memory_machine: Option<String>,
}

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

/// Lets another task interrupt an executing attempt within one epoch tick.
#[derive(Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether both handles cancel the same attempt.
    pub fn same(&self, other: &CancelHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// `run` returned output (checked to be JSON within the size limit).
    Output(String),
    /// `run` returned `error(..)` (`abort: false`) or `abort(..)` (`abort: true`).
    TaskError {
        abort: bool,
        name: String,
        message: String,
        stack: Option<String>,
    },
    /// `run` returned something that is not valid JSON or is too large.
    InvalidOutput(String),
    /// The guest did not return.
    Failed(GuestFailure),
    /// The guest waits: checkpoint the run with the journal `recorded` since the last checkpoint
    /// (appended to what is stored).
    Suspended { wait: WaitFor, recorded: Vec<Entry> },
}

/// An attempt's outcome with its usage and logs.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub fuel_used: u64,
    pub compute: Duration,
    pub logs: Vec<LogLine>,
}

/// Why the epoch callback interrupted the guest.
const STOP_NONE: u8 = 0;
const STOP_CANCELED: u8 = 1;
const STOP_TIMEOUT: u8 = 2;

/// Per-store state: WASI context, log capture, memory accounting, the interrupt reasons and the
/// journal.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    logs: Arc<Mutex<LogBuffer>>,
    limiter: MemoryLimiter,
    cancel: CancelHandle,
    /// When `maxDuration` runs out; pushed back by in-place waits, which are not compute.
    deadline: Option<Instant>,
    stop: Arc<AtomicU8>,
    journal: Arc<Mutex<Journal>>,
    clock: Arc<dyn Clock>,
    wait_threshold: Duration,
    services: Option<Arc<dyn RunServices>>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_hooks: http::KilnHttpHooks,
    /// The scratch directory's quota, when the attempt has one.
    scratch_quota: Option<Arc<scratch::ScratchQuota>>,
    _live: Live,
}

/// How an execution replays and waits: the journal to answer from, the randomness seed, the clock
/// and the in-place wait threshold.
pub struct Replay {
    pub journal: Vec<Entry>,
    pub seed: u64,
    pub clock: Arc<dyn Clock>,
    pub wait_threshold: Duration,
    /// What the run may ask of the host (wait tokens); `None` outside a run.
    pub services: Option<Arc<dyn RunServices>>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// What the guest may reach over HTTP.
    pub http: Arc<http::HttpPolicy>,
    /// The run's scratch directory, preopened as `/tmp`.
    pub scratch: Option<Scratch>,
}

/// A run's scratch directory and how many bytes may be written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    pub dir: std::path::PathBuf,
    pub quota_bytes: u64,
}

/// A wait token to make, as the guest asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub timeout_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    pub idempotency_key_ttl_ms: Option<u64>,
    pub tags: Vec<String>,
}

/// A wait token as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCreated {
    pub id: String,
    pub url: String,
    pub is_cached: bool,
}

/// Where a token the guest waits for stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenState {
    Waiting,
    /// Completed with this JSON data.
    Completed(String),
    /// Timed out; the message says when.
    TimedOut(String),
    /// No token of the run's environment has this id.
    NotFound,
}

/// What an attempt recorded since its last checkpoint, stored with the next effect: journal
/// entries and log lines (so a replay, which drops log lines, loses none).
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    pub entries: Vec<Entry>,
    pub logs: Vec<LogLine>,
}

/// What an executing run may ask of the host, besides the journal. Implemented by the engine;
/// calls that have effects commit them together with the journal recorded so far.
pub trait RunServices: Send + Sync {
    /// Makes a wait token and, in the same transaction, appends `flushed` (the journal recorded
    /// since the last checkpoint) and the token's own entry (kind `CreateToken`, `digest`).
    fn create_token(
        &self,
        request: TokenRequest,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<TokenCreated, String>>;

    /// Where a token of the run's environment stands.
    fn token_state(
        &self,
        id: String,
    ) -> futures_util::future::BoxFuture<'static, Result<TokenState, String>>;

    /// Triggers child runs (on the parent's version when `wait`) and, in the same transaction,
    /// appends `flushed` and the call's own entry (kind `Trigger`, `digest`). `Ok(Err(why))`:
    /// the items were refused and nothing was stored.
    #[allow(clippy::type_complexity)]
    fn trigger_children(
        &self,
        items: Vec<ChildItem>,
        wait: bool,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<Result<Vec<ChildRun>, String>, String>>;

    /// Where child runs of the run's environment stand, in the order asked.
    fn children_state(
        &self,
        ids: Vec<String>,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<ChildState>, String>>;

    /// The metadata of the run, its parent or its root (JSON text).
    fn metadata(
        &self,
        target: MetadataTarget,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>>;

    /// Applies metadata changes and, in the same transaction, appends `flushed` and the call's
    /// own entry (kind `MetadataWrite`). `Ok(Err)`: refused, nothing stored.
    #[allow(clippy::type_complexity)]
    fn update_metadata(
        &self,
        target: MetadataTarget,
        changes: Vec<MetadataChange>,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<Result<String, String>, String>>;
}

/// One metadata change as the guest asked; values are JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataChange {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Remove(String, String),
    Increment(String, f64),
    Replace(String),
}

impl MetadataChange {
    /// Adds the change to a call's digest (values are not copied).
    fn digest(d: Digest, change: &MetadataChange) -> Digest {
        match change {
            MetadataChange::Set(k, v) => d.part(b"set").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Delete(k) => d.part(b"del").part(k.as_bytes()),
            MetadataChange::Append(k, v) => d.part(b"append").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Remove(k, v) => d.part(b"remove").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Increment(k, by) => d
                .part(b"increment")
                .part(k.as_bytes())
                .part(&by.to_le_bytes()),
            MetadataChange::Replace(v) => d.part(b"replace").part(v.as_bytes()),
        }
    }
}

/// Whose metadata a run reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataTarget {
    Current,
    Parent,
    Root,
}

/// A child run to trigger, as the guest asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildItem {
    pub task_id: String,
    /// JSON text.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub tags: Vec<String>,
    pub delay_ms: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub queue: Option<String>,
    pub concurrency_key: Option<String>,
    pub machine: Option<String>,
    pub max_attempts: Option<u32>,
    /// JSON text.
    pub metadata: Option<String>,
}

impl ChildItem {
    /// Adds the item to a call's digest, field by field (the payload is not copied).
    fn digest(d: Digest, item: &ChildItem) -> Digest {
        let number = |n: Option<u64>| n.map(u64::to_le_bytes);
        let d = d
            .part(item.task_id.as_bytes())
            .part(item.payload.as_bytes())
            .optional(item.idempotency_key.as_deref().map(str::as_bytes));
        let d = item
            .tags
            .iter()
            .fold(d.part(&[item.tags.len() as u8]), |d, t| {
                d.part(t.as_bytes())
            });
        d.optional(number(item.delay_ms).as_ref().map(|b| &b[..]))
            .optional(number(item.ttl_ms).as_ref().map(|b| &b[..]))
            .optional(item.queue.as_deref().map(str::as_bytes))
            .optional(item.concurrency_key.as_deref().map(str::as_bytes))
            .optional(item.machine.as_deref().map(str::as_bytes))
            .optional(
                number(item.max_attempts.map(u64::from))
                    .as_ref()
                    .map(|b| &b[..]),
            )
            .optional(item.metadata.as_deref().map(str::as_bytes))
    }
}

/// A triggered child run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildRun {
    pub id: String,
    pub is_cached: bool,
}

/// How a child run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChildResult {
    /// Its output (JSON text).
    Ok(String),
    Error {
        name: String,
        message: String,
        stack: Option<String>,
    },
}

/// Where a child run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    Going,
    Ended(ChildResult),
}

/// Waits up to this long sleep in place unless the host is configured otherwise (Trigger.dev's 5 s).
pub const DEFAULT_WAIT_THRESHOLD: Duration = Duration::from_secs(5);

impl Replay {
    /// Nothing to replay, fresh randomness, the system clock.
    pub fn fresh() -> Replay {
        Replay {
            journal: Vec::new(),
            seed: rand::random(),
            clock: Arc::new(crate::model::SystemClock),
            wait_threshold: DEFAULT_WAIT_THRESHOLD,
            services: None,
            env: Vec::new(),
            http: Arc::new(http::HttpPolicy::default()),
            scratch: None,
        }
    }
}

/// What a checkpointed run waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A time (milliseconds since the Unix epoch).
    Until(Millis),
    /// A wait token's completion or timeout.
    Token(String),
    /// The end of every one of these child runs.
    Runs(Vec<String>),
}

/// The error a wait returns to unwind the guest when the run checkpoints.
#[derive(Debug)]
struct Suspend {
    wait: WaitFor,
}

impl std::fmt::Display for Suspend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the run checkpoints waiting for {:?}", self.wait)
    }
}

impl std::error::Error for Suspend {}

impl HostState {
    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what was recorded since the last checkpoint, for an effect to store.
    fn flush(&self) -> wasmtime::Result<Flushed> {
        let entries = self
            .journal()
            .take_recorded()
            .map_err(wasmtime::Error::msg)?;
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner()).drain();
        Ok(Flushed { entries, logs })
    }

    /// Puts back what [`HostState::flush`] took when the effect stored nothing.
    fn unflush(&self, flushed: Flushed) {
        self.journal().restore(flushed.entries);
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(flushed.logs);
    }

    /// A wait: its deadline is journaled (so a replay waits for the same instant), then it sleeps
    /// in place if short, or unwinds the guest to checkpoint.
    async fn wait(
        &mut self,
        digest: u64,
        deadline: impl FnOnce(Millis) -> Millis,
    ) -> wasmtime::Result<()> {
        let now = self.clock.now();
        let until = self
            .journal()
            .call(Kind::Wait, digest, || journal::number(deadline(now) as u64))
            .map_err(wasmtime::Error::new)?;
        let until = journal::as_number(&until)
            .and_then(|u| i64::try_from(u).ok())
            .unwrap_or(i64::MAX);
        let remaining = until.saturating_sub(now);
        if remaining <= 0 {
            return Ok(());
        }
        let remaining = Duration::from_millis(remaining as u64);
        if remaining > self.wait_threshold {
            return Err(wasmtime::Error::new(Suspend {
                wait: WaitFor::Until(until),
            }));
        }
        tokio::time::sleep(remaining).await;
        // Waiting is not compute: the time limit moves by the time slept.
        self.deadline = self.deadline.map(|d| d + remaining);
        Ok(())
    }
}

impl bindings::kiln::task::wait::Host for HostState {
    async fn for_duration(&mut self, ms: u64) -> wasmtime::Result<()> {
        let digest = journal::digest(&[b"for-duration", &ms.to_le_bytes()]);
        self.wait(digest, |now| {
            now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
        })
        .await
    }

    async fn until(&mut self, at_ms: u64) -> wasmtime::Result<()> {
        let digest = journal::digest(&[b"until", &at_ms.to_le_bytes()]);
        self.wait(digest, |_| i64::try_from(at_ms).unwrap_or(i64::MAX))
            .await
    }

    async fn create_token(
        &mut self,
        options: WitTokenOptions,
    ) -> wasmtime::Result<Result<WitToken, WitTokenError>> {
        let request = TokenRequest {
            timeout_ms: options.timeout_ms,
            idempotency_key: options.idempotency_key,
            idempotency_key_ttl_ms: options.idempotency_key_ttl_ms,
            tags: options.tags,
        };
        let digest = journal::digest(&[b"create-token", format!("{request:?}").as_bytes()]);
        let replayed = self
            .journal()
            .replayed(Kind::CreateToken, digest)
            .map_err(wasmtime::Error::new)?;
        let created = match replayed {
            Some(value) => serde_json::from_slice::<TokenCreated>(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's token entry is corrupt: {e}"))
            })?,
            None => {
                if let Err(message) = check_token_request(&request) {
                    return Ok(Err(WitTokenError::Invalid(message)));
                }
                let Some(services) = self.services.clone() else {
                    return Ok(Err(WitTokenError::Invalid(
                        "wait tokens can only be made by a run".into(),
                    )));
                };
                let flushed = self.flush()?;
                services
                    .create_token(request, flushed, digest)
                    .await
                    .map_err(|e| {
                        wasmtime::Error::msg(format!("could not make the wait token: {e}"))
                    })?
            }
        };
        Ok(Ok(WitToken {
            id: created.id,
            url: created.url,
            is_cached: created.is_cached,
        }))
    }

    async fn for_token(&mut self, id: String) -> wasmtime::Result<Result<String, WitTokenError>> {
        let digest = journal::digest(&[b"for-token", id.as_bytes()]);
        // Each earlier execution that suspended here left a marker; then comes the result, if
        // one was recorded.
        let state = {
            let mut journal = self.journal();
            while journal.next_is(Kind::TokenPending, digest) {
                journal
                    .replayed(Kind::TokenPending, digest)
                    .map_err(wasmtime::Error::new)?;
            }
            journal
                .replayed(Kind::TokenResult, digest)
                .map_err(wasmtime::Error::new)?
        };
        let state = match state {
            Some(value) => serde_json::from_slice::<TokenState>(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's token result is corrupt: {e}"))
            })?,
            None => {
                let state = match self.services.clone() {
                    Some(services) => services.token_state(id.clone()).await.map_err(|e| {
                        wasmtime::Error::msg(format!("could not read the wait token: {e}"))
                    })?,
                    None => TokenState::NotFound,
                };
                if state == TokenState::Waiting {
                    self.journal()
                        .record(Kind::TokenPending, digest, Vec::new());
                    return Err(wasmtime::Error::new(Suspend {
                        wait: WaitFor::Token(id),
                    }));
                }
                let value = serde_json::to_vec(&state).unwrap_or_default();
                self.journal().record(Kind::TokenResult, digest, value);
                state
            }
        };
        Ok(match state {
            TokenState::Completed(data) => Ok(data),
            TokenState::TimedOut(message) => Err(WitTokenError::TimedOut(message)),
            TokenState::NotFound => Err(WitTokenError::Invalid(format!(
                "wait token `{id}` not found in this environment"
            ))),
            TokenState::Waiting => Err(WitTokenError::Invalid(format!(
                "wait token `{id}` is still waiting"
            ))),
        })
    }
}

impl bindings::kiln::task::tasks::Host for HostState {
    async fn batch_trigger(
        &mut self,
        items: Vec<WitTriggerItem>,
    ) -> wasmtime::Result<Result<Vec<WitChildRun>, String>> {
        Ok(self.trigger(items, false).await?.map(|runs| {
            runs.into_iter()
                .map(|r| WitChildRun {
                    id: r.id,
                    is_cached: r.is_cached,
                })
                .collect()
        }))
    }

    async fn batch_trigger_and_wait(
        &mut self,
        items: Vec<WitTriggerItem>,
    ) -> wasmtime::Result<Result<Vec<WitChildOutcome>, String>> {
        let runs = match self.trigger(items, true).await? {
            Ok(runs) => runs,
            Err(why) => return Ok(Err(why)),
        };
        let ids: Vec<String> = runs.into_iter().map(|r| r.id).collect();
        let digest = journal::digest(&[b"wait-children", ids.join(",").as_bytes()]);
        let recorded = {
            let mut journal = self.journal();
            journal
                .skip_markers(Kind::ChildrenPending, digest)
                .map_err(wasmtime::Error::new)?;
            journal
                .replayed(Kind::ChildrenResult, digest)
                .map_err(wasmtime::Error::new)?
        };
        let results: Vec<ChildResult> = match recorded {
            Some(value) => serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's child results are corrupt: {e}"))
            })?,
            None => {
                let services = self
                    .services
                    .clone()
                    .ok_or_else(|| wasmtime::Error::msg("child runs need a run"))?;
                let states = services
                    .children_state(ids.clone())
                    .await
                    .map_err(|e| wasmtime::Error::msg(format!("could not read child runs: {e}")))?;
                let mut ended = Vec::with_capacity(states.len());
                for state in states {
                    match state {
                        ChildState::Ended(result) => ended.push(result),
                        ChildState::Going => {
                            self.journal()
                                .record(Kind::ChildrenPending, digest, Vec::new());
                            return Err(wasmtime::Error::new(Suspend {
                                wait: WaitFor::Runs(ids),
                            }));
                        }
                    }
                }
                self.journal().record(
                    Kind::ChildrenResult,
                    digest,
                    serde_json::to_vec(&ended).unwrap_or_default(),
                );
                ended
            }
        };
        Ok(Ok(ids
            .into_iter()
            .zip(results)
            .map(|(id, result)| WitChildOutcome {
                id,
                outcome: match result {
                    ChildResult::Ok(output) => WitChildResult::Ok(output),
                    ChildResult::Error {
                        name,
                        message,
                        stack,
                    } => WitChildResult::Error(wit::ErrorInfo {
                        name,
                        message,
                        stack,
                    }),
                },
            })
            .collect()))
    }
}

impl bindings::kiln::task::metadata::Host for HostState {
    async fn get(&mut self, target: WitTarget) -> wasmtime::Result<String> {
        let target = metadata_target(target);
        let digest = journal::digest(&[b"metadata.get", format!("{target:?}").as_bytes()]);
        let replayed = self
            .journal()
            .replayed(Kind::MetadataRead, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return Ok(String::from_utf8_lossy(&value).into_owned());
        }
        let value = match self.services.clone() {
            Some(services) => services
                .metadata(target)
                .await
                .map_err(|e| wasmtime::Error::msg(format!("could not read metadata: {e}")))?,
            None => "{}".to_owned(),
        };
        self.journal()
            .record(Kind::MetadataRead, digest, value.clone().into_bytes());
        Ok(value)
    }

    async fn update(
        &mut self,
        target: WitTarget,
        operations: Vec<WitOperation>,
    ) -> wasmtime::Result<Result<String, String>> {
        let target = metadata_target(target);
        let changes: Vec<MetadataChange> = operations.into_iter().map(change).collect();
        let digest = changes
            .iter()
            .fold(
                Digest::new().part(b"metadata.update").part(&[target as u8]),
                MetadataChange::digest,
            )
            .finish();
        let replayed = self
            .journal()
            .replayed(Kind::MetadataWrite, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's metadata entry is corrupt: {e}"))
            });
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("metadata needs a run".into()));
        };
        let flushed = self.flush()?;
        let result = services
            .update_metadata(target, changes, flushed.clone(), digest)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("could not change metadata: {e}")))?;
        if result.is_err() {
            self.unflush(flushed);
            self.journal().record(
                Kind::MetadataWrite,
                digest,
                serde_json::to_vec(&result).unwrap_or_default(),
            );
        }
        Ok(result)
    }
}

fn metadata_target(t: WitTarget) -> MetadataTarget {
    match t {
        WitTarget::Current => MetadataTarget::Current,
        WitTarget::Parent => MetadataTarget::Parent,
        WitTarget::Root => MetadataTarget::Root,
    }
}

fn change(op: WitOperation) -> MetadataChange {
    match op {
        WitOperation::Set((key, v)) => MetadataChange::Set(key, v),
        WitOperation::Del(key) => MetadataChange::Delete(key),
        WitOperation::Append((key, v)) => MetadataChange::Append(key, v),
        WitOperation::Remove((key, v)) => MetadataChange::Remove(key, v),
        WitOperation::Increment((key, by)) => MetadataChange::Increment(key, by),
        WitOperation::Replace(v) => MetadataChange::Replace(v),
    }
}

use bindings::kiln::task::metadata::{Operation as WitOperation, Target as WitTarget};

impl HostState {
    /// Triggers child runs once: a replay returns the runs the first execution made.
    async fn trigger(
        &mut self,
        items: Vec<WitTriggerItem>,
        wait: bool,
    ) -> wasmtime::Result<Result<Vec<ChildRun>, String>> {
        let items: Vec<ChildItem> = items
            .into_iter()
            .map(|i| ChildItem {
                task_id: i.task_id,
                payload: i.payload,
                idempotency_key: i.options.idempotency_key,
                tags: i.options.tags,
                delay_ms: i.options.delay_ms,
                ttl_ms: i.options.ttl_ms,
                queue: i.options.queue,
                concurrency_key: i.options.concurrency_key,
                machine: i.options.machine,
                max_attempts: i.options.max_attempts,
                metadata: i.options.metadata,
            })
            .collect();
        let digest = items
            .iter()
            .fold(
                Digest::new().part(if wait {
                    b"trigger-and-wait"
                } else {
                    b"trigger"
                }),
                ChildItem::digest,
            )
            .finish();
        let replayed = self
            .journal()
            .replayed(Kind::Trigger, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's trigger entry is corrupt: {e}"))
            });
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("child runs can only be triggered by a run".into()));
        };
        let flushed = self.flush()?;
        let result = services
            .trigger_children(items, wait, flushed.clone(), digest)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("could not trigger child runs: {e}")))?;
        if result.is_err() {
            // Nothing was stored: keep the entries for the next checkpoint, and the refusal too.
            self.unflush(flushed);
            self.journal().record(
                Kind::Trigger,
                digest,
                serde_json::to_vec(&result).unwrap_or_default(),
            );
        }
        Ok(result)
    }
}

use bindings::kiln::task::tasks::{
    ChildOutcome as WitChildOutcome, ChildResult as WitChildResult, ChildRun as WitChildRun,
    TriggerItem as WitTriggerItem,
};
use bindings::kiln::task::wait::{
    Token as WitToken, TokenError as WitTokenError, TokenOptions as WitTokenOptions,
};

/// Most tags on a wait token (Trigger.dev's).
pub const MAX_TOKEN_TAGS: usize = 10;

/// Checks a token request as the API does: tags and idempotency key within Trigger.dev's bounds.
pub fn check_token_request(request: &TokenRequest) -> Result<(), String> {
    if request.tags.len() > MAX_TOKEN_TAGS {
        return Err(format!(
            "tags: a wait token may have at most {MAX_TOKEN_TAGS} tags, not {}",
            request.tags.len()
        ));
    }
    if let Some(tag) = request
        .tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > 128)
    {
        return Err(format!("tags: `{tag}` must be 1–128 characters"));
    }
    if request
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 2_048)
    {
        return Err("idempotencyKey: must be 1–2048 bytes".into());
    }
    Ok(())
}

/// The guest's wall clock: the engine's clock, journaled.
struct JournaledWallClock {
    journal: Arc<Mutex<Journal>>,
    clock: Arc<dyn Clock>,
}

impl wasmtime_wasi::HostWallClock for JournaledWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        let live = || {
            u64::try_from(self.clock.now())
                .unwrap_or(0)
                .saturating_mul(1_000_000)
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // A divergence is remembered by the journal and fails the attempt at its next wait or end.
        let ns = journal
            .call(Kind::WallClock, 0, || journal::number(live()))
            .ok()
            .and_then(|v| journal::as_number(&v))
            .unwrap_or_else(live);
        Duration::from_nanos(ns)
    }
}

/// The guest's monotonic clock: real nanoseconds since the Unix epoch, never going back,
/// journaled. Absolute, so it keeps counting across checkpoints and hosts. (Real time rather than
/// the engine's clock: a guest measuring elapsed time must see time pass under a manual clock.)
struct JournaledMonotonicClock {
    journal: Arc<Mutex<Journal>>,
    last: AtomicU64,
}

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let live = || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            self.last.fetch_max(now, Ordering::Relaxed).max(now)
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let ns = journal
            .call(Kind::MonotonicClock, 0, || journal::number(live()))
            .ok()
            .and_then(|v| journal::as_number(&v))
            .unwrap_or_else(live);
        self.last.fetch_max(ns, Ordering::Relaxed);
        ns
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl bindings::kiln::task::types::Host for HostState {}

impl bindings::kiln::task::log::Host for HostState {
    fn log(
        &mut self,
        level: bindings::kiln::task::log::Level,
        message: String,
        attributes: Option<String>,
    ) {
        use bindings::kiln::task::log::Level as L;
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        // Attributes that are not a JSON object are kept as a string attribute, not dropped.
        let attributes = attributes.map(|a| match serde_json::from_str::<serde_json::Value>(&a) {
            Ok(v @ serde_json::Value::Object(_)) => v.to_string(),
            _ => serde_json::json!({ "value": a }).to_string(),
        });
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(level, message, attributes);
    }
}

/// Sums every linear memory and table of the component instance against one limit
/// (`StoreLimits` would apply the limit to each memory separately). Tables count
/// [`TABLE_ELEMENT_BYTES`] per element and may not pass [`MAX_TABLE_ELEMENTS`] each.
struct MemoryLimiter {
    limit: usize,
    used: usize,
    /// The growth that was denied; makes the trap that follows an OOM.
    denied: Option<Denied>,
}

/// A growth the limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// Memories and tables together would have used this many bytes.
    Bytes(usize),
    /// One table would have held this many elements.
    TableElements(usize),
}

impl MemoryLimiter {
    /// Moves one memory or table from `current` to `desired` bytes if the sum stays in the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.denied = Some(Denied::Bytes(next));
            return false;
        }
        self.used = next;
        true
    }

    /// Says what was denied, for the crash message.
    fn denial_message(&self, denied: Denied) -> String {
        match denied {
            Denied::Bytes(requested) => format!(
                "the attempt ran out of memory: its memories and tables asked for {requested} bytes in total, the limit is {} bytes (choose a larger machine)",
                self.limit
            ),
            Denied::TableElements(requested) => format!(
                "the attempt ran out of memory: a table asked for {requested} elements, the limit is {MAX_TABLE_ELEMENTS} per table"
            ),
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.denied = Some(Denied::TableElements(desired));
            return Ok(false);
        }
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

impl Sandbox {
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::build(config, true, true)
    }

    /// The sandbox with fuel metering and epoch interruption on as asked: the host runs with
    /// both; benchmarks compare the four combinations, built by this same code.
    fn build(config: &SandboxConfig, fuel: bool, epochs: bool) -> anyhow::Result<Sandbox> {
        let mut wasm = Config::new();
        wasm.consume_fuel(fuel)
            .epoch_interruption(epochs)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        // Instances come from a pool sized for the configured concurrency plus deploy checks.
        let slots = u32::try_from(config.concurrency.max(1))
            .unwrap_or(u32::MAX / 64)
            .saturating_add(8);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(16))
            .total_memories(slots.saturating_mul(4))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(4 << 30)
            .table_elements(MAX_TABLE_ELEMENTS);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            env!("CARGO_PKG_VERSION").hash(&mut h);
            format!("{:016x}", h.finish())
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        scratch::add_to_linker(&mut linker)?;
        bindings::Task::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        if epochs {
            let (ticking_engine, stop) = (engine.clone(), ticker_stop.clone());
            std::thread::Builder::new()
                .name("kiln-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        ticking_engine.increment_epoch();
                    }
                })?;
        }
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                ticker_stop,
                compilations: AtomicU64::new(0),
                fingerprint,
                live: Arc::default(),
                scratch: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Compiles and links an upload. CPU-heavy: runs on the blocking pool.
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Prepared, CompileError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.compile_blocking(&bytes))
            .await
            .map_err(|e| CompileError::Invalid(format!("compilation stopped: {e}")))?
    }

    fn compile_blocking(&self, bytes: &[u8]) -> Result<Prepared, CompileError> {
        const MAGIC: &[u8; 4] = b"\0asm";
        const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(CompileError::NotWasm);
        }
        if bytes[4..8] == CORE_VERSION {
            return Err(CompileError::CoreModule);
        }
        let engine = &self.inner.engine;
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        let component =
            Component::new(engine, bytes).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        self.link(component)
    }

    /// How many components this process compiled from wasm bytes.
    /// Guest instances (stores) alive now: executing attempts, and `definitions()` calls.
    pub fn live_instances(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Gives executions scratch directories under `root` (emptied now: nothing there belongs to
    /// an execution of this process).
    pub fn use_scratch_dirs(&self, root: &std::path::Path) -> anyhow::Result<()> {
        let pool = scratch::ScratchPool::new(root).map_err(|e| {
            anyhow::anyhow!(
                "cannot prepare the scratch directories in {}: {e}; check the data dir is writable",
                root.display()
            )
        })?;
        let _ = self.inner.scratch.set(Arc::new(pool));
        Ok(())
    }

    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Names the engine configuration; artifacts are only loaded by an engine with the same one.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The compiled machine code of a component, to be loaded later with [`Sandbox::load_artifact`].
    pub fn artifact(&self, prepared: &Prepared) -> anyhow::Result<Vec<u8>> {
        Ok(prepared.component.serialize()?)
    }

    /// Loads an artifact written by [`Sandbox::artifact`] from the host's own data dir.
    pub fn load_artifact(&self, path: &std::path::Path) -> Result<Prepared, CompileError> {
        // SAFETY: `deserialize_file` trusts the file to be machine code wasmtime produced for a
        // compatible engine. kiln only passes files it wrote itself, into its own data dir, named
        // by the component digest and this engine's fingerprint; they never come from a client.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize_file(&self.inner.engine, path) }.map_err(|e| {
                CompileError::Invalid(format!("cannot load the compiled artifact: {e:#}"))
            })?;
        self.link(component)
    }

    /// Checks exports and imports and links the component against kiln's host interfaces.
    fn link(&self, component: Component) -> Result<Prepared, CompileError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let exported: Vec<String> = ty
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(name, _)| name.to_owned())
            .collect();
        let missing: Vec<String> = ["definitions", "run"]
            .into_iter()
            .filter(|f| !exported.iter().any(|e| e == f))
            .map(|f| format!("`{f}`"))
            .collect();
        if !missing.is_empty() {
            return Err(CompileError::MissingExports {
                missing: missing.join(" and "),
            });
        }
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            CompileError::UnsupportedImport {
                detail: describe_link_error(&e),
            }
        })?;
        let pre = bindings::TaskPre::new(instance_pre).map_err(|e| {
            CompileError::Invalid(format!("exports do not match kiln:task/task: {e:#}"))
        })?;
        Ok(Prepared { pre, component })
    }

    fn new_store(
        &self,
        memory: u64,
        fuel: u64,
        deadline: Option<Instant>,
        cancel: CancelHandle,
        attempt: u32,
        replay: Replay,
    ) -> Store<HostState> {
        let journal = Journal::replaying(replay.journal);
        let mut logs = LogBuffer::new(attempt);
        logs.mute_while(journal.replaying_flag());
        let logs = Arc::new(Mutex::new(logs));
        let journal = Arc::new(Mutex::new(journal));
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(logs.clone(), LogLevel::Info))
            .stderr(GuestOutput::new(logs.clone(), LogLevel::Error))
            .wall_clock(JournaledWallClock {
                journal: journal.clone(),
                clock: replay.clock.clone(),
            })
            .monotonic_clock(JournaledMonotonicClock {
                journal: journal.clone(),
                last: AtomicU64::new(0),
            })
            .envs(&replay.env);
        // Randomness replays by construction: every generator is seeded from the run's seed.
        {
            use rand_wasi::SeedableRng;
            let seeded = |salt: u64| rand_wasi::rngs::StdRng::seed_from_u64(replay.seed ^ salt);
            wasi.secure_random(seeded(0x5ec0_0000_0000_0001))
                .insecure_random(seeded(0x1a5e_0000_0000_0002))
                .insecure_random_seed(u128::from(replay.seed) << 64 | u128::from(!replay.seed));
        }
        let http_hooks = http::KilnHttpHooks::new(replay.http, journal.clone(), logs.clone());
        // Every execution starts from an empty scratch directory: a replay writes again what the
        // run wrote before its checkpoint, so the guest finds it as it was.
        let scratch_quota = match &replay.scratch {
            Some(scratch) => {
                let made = wasi
                    .preopened_dir(&scratch.dir, "/tmp", wasmtime_wasi::FsPerms::ReadWrite)
                    .map(|_| ());
                match made {
                    Ok(()) => Some(Arc::new(scratch::ScratchQuota::new(
                        scratch.quota_bytes,
                        logs.clone(),
                    ))),
                    Err(e) => {
                        logs.lock().unwrap_or_else(|e| e.into_inner()).push(
                            LogLevel::Error,
                            format!(
                                "the scratch directory could not be made, so /tmp is missing: {e:#}"
                            ),
                            None,
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks,
            scratch_quota,
            logs,
            limiter: MemoryLimiter {
                limit: usize::try_from(memory).unwrap_or(usize::MAX),
                used: 0,
                denied: None,
            },
            cancel,
            deadline,
            stop: Arc::new(AtomicU8::new(STOP_NONE)),
            journal,
            clock: replay.clock,
            wait_threshold: replay.wait_threshold,
            services: replay.services,
            _live: {
                self.inner.live.fetch_add(1, Ordering::Relaxed);
                Live(self.inner.live.clone())
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Fuel cannot fail to be set when fuel is enabled, which `Sandbox::new` does.
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.0.load(Ordering::Relaxed) {
                state.stop.store(STOP_CANCELED, Ordering::Relaxed);
                return Ok(UpdateDeadline::Interrupt);
            }
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                state.stop.store(STOP_TIMEOUT, Ordering::Relaxed);
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield each tick so a CPU-bound guest never holds up the runtime's other work.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Calls `definitions()` in a fresh instance with deploy-time limits.
    pub async fn definitions(
        &self,
        prepared: &Prepared,
    ) -> Result<Vec<DeclaredTask>, GuestFailure> {
        let mut store = self.new_store(
            DEFINITIONS_MEMORY,
            DEFINITIONS_FUEL,
            Some(Instant::now() + DEFINITIONS_TIMEOUT),
            CancelHandle::default(),
            0,
            Replay::fresh(),
        );
        let result = async {
            let task = prepared.pre.instantiate_async(&mut store).await?;
            task.call_definitions(&mut store).await
        }
        .await;
        match result {
            Ok(defs) => Ok(defs.into_iter().map(declared).collect()),
            Err(e) => Err(classify(&store, &e)),
        }
    }

    /// Executes one attempt of `run` in a fresh instance.
    pub async fn run(&self, prepared: &Prepared, req: AttemptRequest) -> AttemptReport {
        let machine = req.context.machine;
        let fuel = req.fuel;
        // Held until the execution ends (then emptied and given back).
        let lease = match (self.inner.scratch.get(), req.scratch_bytes) {
            (Some(pool), Some(quota)) => match pool.lend() {
                Ok(lease) => Some((lease, quota)),
                Err(e) => {
                    tracing::error!(error = %e, "no scratch directory for this execution");
                    None
                }
            },
            _ => None,
        };
        let started = Instant::now();
        let deadline = req.max_duration.map(|d| started + d);
        let mut store = self.new_store(
            machine.memory_bytes(),
            fuel,
            deadline,
            req.cancel,
            req.context.attempt,
            Replay {
                journal: req.journal,
                seed: req.seed,
                clock: req.clock,
                wait_threshold: req.wait_threshold,
                services: Some(req.services),
                env: req.env,
                http: req.http,
                scratch: lease.as_ref().map(|(lease, quota)| Scratch {
                    dir: lease.dir.clone(),
                    quota_bytes: *quota,
                }),
            },
        );
        let ctx = wit_context(&req.context);
        let task_id = req.context.task_id.clone();
        let result = async {
            let task = prepared.pre.instantiate_async(&mut store).await?;
            task.call_run(&mut store, &task_id, &req.payload, &ctx)
                .await
        }
        .await;
        let compute = started.elapsed();
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let unfinished = store.data().journal().unfinished();
        let outcome = match result {
            // A guest that ended out of step with its journal diverged, whatever it returned.
            Ok(_) if unfinished.is_some() => {
                let d = unfinished.unwrap_or_else(|| Divergence(String::new()));
                AttemptOutcome::Failed(nondeterministic(&d))
            }
            Ok(Ok(output)) => check_output(output),
            Ok(Err(error)) => {
                let (abort, info) = match error {
                    wit::TaskError::Error(info) => (false, info),
                    wit::TaskError::Abort(info) => (true, info),
                };
                AttemptOutcome::TaskError {
                    abort,
                    name: info.name,
                    message: info.message,
                    stack: info.stack,
                }
            }
            Err(e) => match e.downcast_ref::<Suspend>() {
                Some(s) => match store.data().journal().take_recorded() {
                    Ok(recorded) => AttemptOutcome::Suspended {
                        wait: s.wait.clone(),
                        recorded,
                    },
                    Err(message) => AttemptOutcome::Failed(GuestFailure {
                        kind: TrapKind::Crash,
                        message,
                        stack: None,
                    }),
                },
                None => AttemptOutcome::Failed(classify(&store, &e)),
            },
        };
        let logs = store
            .data()
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        AttemptReport {
            outcome,
            fuel_used,
            compute,
            logs,
        }
    }
}

fn check_output(output: String) -> AttemptOutcome {
    if output.len() > MAX_OUTPUT_BYTES {
        return AttemptOutcome::InvalidOutput(format!(
            "the task returned {} bytes of output; the limit is {MAX_OUTPUT_BYTES} bytes",
            output.len()
        ));
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        Ok(_) => AttemptOutcome::Output(output),
        Err(e) => {
            AttemptOutcome::InvalidOutput(format!("the task returned output that is not JSON: {e}"))
        }
    }
}

fn nondeterministic(d: &Divergence) -> GuestFailure {
    GuestFailure {
        kind: TrapKind::Nondeterministic,
        message: d.to_string(),
        stack: None,
    }
}

/// Turns a failed guest call into a run-level classification with a one-line message.
fn classify(store: &Store<HostState>, error: &wasmtime::Error) -> GuestFailure {
    let state = store.data();
    let divergence = error
        .downcast_ref::<Divergence>()
        .cloned()
        .or_else(|| state.journal().divergence().cloned());
    if let Some(d) = divergence {
        return nondeterministic(&d);
    }
    let trap = error.downcast_ref::<Trap>().copied();
    let stack = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string())
        .filter(|s| !s.trim().is_empty());
    let stop = state.stop.load(Ordering::Relaxed);
    let (kind, message) = if trap == Some(Trap::Interrupt) && stop == STOP_CANCELED {
        (TrapKind::Canceled, "the attempt was canceled".to_owned())
    } else if trap == Some(Trap::Interrupt) && stop == STOP_TIMEOUT {
        (
            TrapKind::Timeout,
            "the attempt ran past its time limit".to_owned(),
        )
    } else if trap == Some(Trap::OutOfFuel) {
        (
            TrapKind::FuelExhausted,
            "the attempt used up its fuel budget (a runaway loop?)".to_owned(),
        )
    } else if let Some(denied) = state.limiter.denied {
        (TrapKind::OutOfMemory, state.limiter.denial_message(denied))
    } else {
        let detail = match trap {
            Some(t) => t.to_string(),
            None => format!("{error:#}"),
        };
        let panic = state
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error_lines(3);
        let message = if panic.is_empty() {
            format!("the task crashed: {detail}")
        } else {
            format!("the task crashed: {detail}: {panic}")
        };
        (TrapKind::Crash, message)
    };
    GuestFailure {
        kind,
        message,
        stack,
    }
}

/// wasmtime names the missing import in its link error; keep that part, drop the rest.
fn describe_link_error(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    match text.split_once("component imports ") {
        Some((_, rest)) => rest.split(", but").next().unwrap_or(rest).trim().to_owned(),
        None => text,
    }
}

fn declared(t: wit::TaskDefinition) -> DeclaredTask {
    DeclaredTask {
        id: t.id,
        description: t.description,
        queue_name: t.queue.as_ref().map(|q| q.name.clone()),
        queue_concurrency_limit: t.queue.and_then(|q| q.concurrency_limit),
        retry: t.retry.map(|r| DeclaredRetry {
            max_attempts: r.max_attempts,
            factor: r.factor,
            min_timeout_ms: r.min_timeout_ms,
            max_timeout_ms: r.max_timeout_ms,
            randomize: r.randomize,
            out_of_memory_machine: r.out_of_memory_machine,
        }),
        max_duration_ms: t.max_duration_ms,
        ttl_ms: t.ttl_ms,
        machine: t.machine,
        schedule: t.schedule.map(|s| DeclaredSchedule {
            cron: s.cron,
            timezone: s.timezone,
        }),
    }
}

fn wit_context(c: &RunContext) -> wit::RunContext {
    wit::RunContext {
        run_id: c.run_id.clone(),
        task_id: c.task_id.clone(),
        attempt: c.attempt,
        version: c.version.clone(),
        environment: c.environment.clone(),
        tags: c.tags.clone(),
        idempotency_key: c.idempotency_key.clone(),
        queue: c.queue.clone(),
        machine: c.machine.as_str().to_owned(),
        parent_run_id: c.parent_run_id.clone(),
        root_run_id: c.root_run_id.clone(),
        created_at_ms: c.created_at_ms,
    }
}

/// Timestamp for a log line written now.
fn log_time() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limiter_sums_every_memory_and_remembers_a_denial() {
        let mut l = MemoryLimiter {
            limit: 100,
            used: 0,
            denied: None,
        };
        assert!(l.memory_growing(0, 60, None).unwrap(), "a first memory");
        assert!(
            l.memory_growing(0, 30, None).unwrap(),
            "a second memory: 90 in all"
        );
        assert!(
            !l.memory_growing(30, 50, None).unwrap(),
            "110 in all is over the limit"
        );
        assert_eq!(l.denied, Some(Denied::Bytes(110)));
        assert_eq!(l.used, 90, "a denied growth uses nothing");
        assert!(
            l.memory_growing(60, 70, None).unwrap(),
            "growing within the limit still works"
        );
    }

    #[test]
    fn tables_count_against_the_memory_limit_and_have_an_element_cap() {
        let mut l = MemoryLimiter {
            limit: 100 * TABLE_ELEMENT_BYTES,
            used: 0,
            denied: None,
        };
        assert!(l.memory_growing(0, 50 * TABLE_ELEMENT_BYTES, None).unwrap());
        assert!(
            l.table_growing(0, 40, None).unwrap(),
            "90 slots' worth in all"
        );
        assert!(
            !l.table_growing(40, 60, None).unwrap(),
            "110 slots' worth is over the limit"
        );
        assert_eq!(l.denied, Some(Denied::Bytes(110 * TABLE_ELEMENT_BYTES)));
        assert!(l.denial_message(l.denied.unwrap()).contains("880 bytes"));

        let mut l = MemoryLimiter {
            limit: usize::MAX,
            used: 0,
            denied: None,
        };
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(
            !l.table_growing(MAX_TABLE_ELEMENTS, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
        assert_eq!(
            l.denied,
            Some(Denied::TableElements(MAX_TABLE_ELEMENTS + 1))
        );
    }
}
