//! The wasmtime sandbox: one `Engine` per process, the linker with kiln's host imports, and the
//! execution of `definitions()` and `run()` under fuel, memory and time limits.
//!
//! **The only module that imports wasmtime**, and the home of the one `bindgen!`. Whatever a guest
//! does — trap, loop, allocate without end, print without end, return garbage — comes back as a
//! value ([`AttemptOutcome`], [`GuestFailure`]); nothing on a guest-controlled path panics or grows
//! without a bound.

mod bindings;
mod classify;
mod clocks;
mod compile;
mod engine;
mod execute;
mod file_times;
mod host;
mod limits;
mod outcome;
mod request;
mod services;
mod state;

pub mod baseline;
pub mod http;
pub mod journal;
mod output;
pub mod scratch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use classify::{GuestFailure, TrapKind};
pub use compile::{CompileError, Prepared, check_header};
pub use engine::{EPOCH_TICK, PoolTuning, SandboxConfig};
pub use execute::MAX_OUTPUT_BYTES;
pub use outcome::{
    AttemptOutcome, AttemptReport, DeclaredRetry, DeclaredSchedule, DeclaredTask, WaitFor,
};
pub use request::{AttemptRequest, CancelHandle, DEFAULT_WAIT_THRESHOLD, RunContext};
pub use services::{
    ChildItem, ChildResult, ChildRun, ChildState, Flushed, MAX_TOKEN_TAGS, MetadataChange,
    MetadataTarget, RunServices, TokenCreated, TokenRequest, TokenState, check_token_request,
};
pub use state::{HostState, Replay, Scratch};

/// The process-wide sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    /// The baseline compiler's engine, when the sandbox has a quick tier.
    quick: Option<Tier>,
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

/// A second engine, compiling with Winch, and its linker.
struct Tier {
    engine: Engine,
    linker: Linker<HostState>,
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

impl Sandbox {
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

    /// Whether the sandbox can compile a component quickly into slower code first.
    pub fn has_quick_tier(&self) -> bool {
        self.inner.quick.is_some()
    }

    /// How many components this process compiled from wasm bytes.
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Names the engine configuration; artifacts are only loaded by an engine with the same one.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }
}
