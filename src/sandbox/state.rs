//! The state of one store: the WASI and HTTP contexts, log capture, the memory limiter, the
//! interrupt reasons, the journal and the run's services; with how an execution replays
//! ([`Replay`]), the unwinding error of a checkpoint ([`Suspend`]), and taking and putting back
//! what was recorded since the last checkpoint.
//!
//! It holds the state; the host interfaces that use it live in `host/`.

use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::file_times::FileIds;
use super::journal::{Entry, Journal};
use super::limits::{Activity, MemoryLimiter};
use super::output::LogBuffer;
use super::{
    CancelHandle, DEFAULT_WAIT_THRESHOLD, Flushed, Live, RunServices, WaitFor, http, scratch,
};
use crate::model::Clock;

/// Why the epoch callback interrupted the guest.
pub(super) const STOP_NONE: u8 = 0;
pub(super) const STOP_CANCELED: u8 = 1;
pub(super) const STOP_TIMEOUT: u8 = 2;

/// Per-store state: WASI context, log capture, memory accounting, the interrupt reasons and the
/// journal.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) logs: Arc<Mutex<LogBuffer>>,
    pub(super) limiter: MemoryLimiter,
    /// What shows the guest went on after a denied growth (`log` calls, `/tmp` writes; the
    /// journal and stdout count into it too).
    pub(super) activity: Activity,
    pub(super) cancel: CancelHandle,
    /// When `maxDuration` runs out; pushed back by in-place waits, which are not compute.
    pub(super) deadline: Option<Instant>,
    pub(super) stop: Arc<AtomicU8>,
    pub(super) journal: Arc<Mutex<Journal>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) wait_threshold: Duration,
    pub(super) services: Option<Arc<dyn RunServices>>,
    pub(super) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(super) http_hooks: http::KilnHttpHooks,
    /// The scratch directory's quota, when the attempt has one.
    pub(super) scratch_quota: Option<Arc<scratch::ScratchQuota>>,
    /// The identities `metadata-hash` gave files in this execution.
    pub(super) file_ids: FileIds,
    pub(super) _live: Live,
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

/// The error a wait returns to unwind the guest when the run checkpoints.
#[derive(Debug)]
pub(super) struct Suspend {
    pub(super) wait: WaitFor,
}

impl std::fmt::Display for Suspend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the run checkpoints waiting for {:?}", self.wait)
    }
}

impl std::error::Error for Suspend {}

impl HostState {
    pub(super) fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what was recorded since the last checkpoint, for an effect to store.
    pub(super) fn flush(&self) -> wasmtime::Result<Flushed> {
        let entries = self
            .journal()
            .take_recorded()
            .map_err(wasmtime::Error::msg)?;
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner()).drain();
        Ok(Flushed { entries, logs })
    }

    /// Puts back what [`HostState::flush`] took when the effect stored nothing.
    pub(super) fn unflush(&self, flushed: Flushed) {
        self.journal().restore(flushed.entries);
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(flushed.logs);
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
