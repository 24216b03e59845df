//! Building the sandbox: the wasmtime `Config` (fuel, epochs, deterministic floats), the pooling
//! allocator sized from the configured concurrency, the engine fingerprint that names compiled
//! artifacts, the linker with every host import, and the epoch ticker thread.
//!
//! Nothing here executes a guest; it must never relax a limit the execution relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

use super::limits::MAX_TABLE_ELEMENTS;
use super::{HostState, Inner, Sandbox, bindings, file_times, scratch};

/// How often the epoch advances. Bounds how late a cancel, a timeout or a yield to the async
/// runtime can come.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sizing of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Attempts that may execute at once; sizes the instance pool.
    pub concurrency: usize,
    /// How the pool gives memory back between instances.
    pub pool: PoolTuning,
    /// Also build a second engine with wasmtime's baseline compiler (Winch), which compiles big
    /// components about 8× faster into code 1.4–2.8× slower: their first tier (see `deploy`).
    pub quick_tier: bool,
}

impl SandboxConfig {
    /// A sandbox for `concurrency` attempts at once, with the default pool tuning and no quick
    /// tier.
    pub fn new(concurrency: usize) -> SandboxConfig {
        SandboxConfig {
            concurrency,
            pool: PoolTuning::default(),
            quick_tier: false,
        }
    }
}

/// How the instance pool resets a slot for its next instance. Returning pages to the kernel
/// (`madvise`) costs a TLB shootdown on every core each time; keeping the first bytes of each
/// memory and table resident and zeroing them in place (only the pages an instance touched, with
/// Linux's `PAGEMAP_SCAN` where the kernel has it) avoids most of them, at the price of that much
/// resident memory per pool slot. `kiln bench` measures both sides; see BENCHMARKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTuning {
    /// Bytes of each linear memory kept resident (zeroed in place) between instances.
    pub memory_keep_resident: usize,
    /// Bytes of each table kept resident between instances.
    pub table_keep_resident: usize,
    /// Decommits queued before they are flushed together (1: each at once). A queued decommit
    /// keeps the memory it frees resident until the batch is flushed, so anything above 1 lets
    /// the host's RSS pass its memory pool.
    pub decommit_batch: usize,
}

impl Default for PoolTuning {
    fn default() -> PoolTuning {
        PoolTuning {
            memory_keep_resident: 8 << 20,
            table_keep_resident: 1 << 20,
            decommit_batch: 1,
        }
    }
}

impl Sandbox {
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::build(config, true, true)
    }

    /// The sandbox with fuel metering and epoch interruption on as asked: the host runs with
    /// both; benchmarks compare the four combinations, built by this same code.
    pub(super) fn build(
        config: &SandboxConfig,
        fuel: bool,
        epochs: bool,
    ) -> anyhow::Result<Sandbox> {
        let engine = new_engine(config, fuel, epochs, Strategy::Cranelift)?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            env!("CARGO_PKG_VERSION").hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let linker = new_linker(&engine)?;
        let quick = match config.quick_tier {
            true => {
                let engine = new_engine(config, fuel, epochs, Strategy::Winch)?;
                let linker = new_linker(&engine)?;
                Some(super::Tier { engine, linker })
            }
            false => None,
        };

        let ticker_stop = Arc::new(AtomicBool::new(false));
        if epochs {
            let mut ticking = vec![engine.clone()];
            ticking.extend(quick.as_ref().map(|q| q.engine.clone()));
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("kiln-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &ticking {
                            engine.increment_epoch();
                        }
                    }
                })?;
        }
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                quick,
                ticker_stop,
                compilations: AtomicU64::new(0),
                fingerprint,
                live: Arc::default(),
                scratch: std::sync::OnceLock::new(),
            }),
        })
    }
}

/// An engine with kiln's settings (fuel, epochs, deterministic floats) and its instance pool,
/// compiling with `strategy`.
fn new_engine(
    config: &SandboxConfig,
    fuel: bool,
    epochs: bool,
    strategy: Strategy,
) -> anyhow::Result<Engine> {
    let mut wasm = Config::new();
    wasm.strategy(strategy);
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
        .table_elements(MAX_TABLE_ELEMENTS)
        .linear_memory_keep_resident(config.pool.memory_keep_resident)
        .table_keep_resident(config.pool.table_keep_resident)
        .decommit_batch_size(config.pool.decommit_batch.max(1))
        .pagemap_scan(wasmtime::Enabled::Auto);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&wasm)?)
}

/// The linker with every host import kiln gives a guest.
fn new_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    scratch::add_to_linker(&mut linker)?;
    file_times::add_to_linker(&mut linker)?;
    bindings::Task::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}
