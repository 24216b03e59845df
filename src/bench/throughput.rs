//! The throughput scenario: no-op runs through the engine until the store has all of them
//! COMPLETED, against `BareLoop`, the same component called by bare wasmtime at the same
//! concurrency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::report::Row;
use super::util::{
    POLL, STALL_TIMEOUT, TempDir, load, noop_item, read_guest, start_host, status_counts,
    thousands, trigger, wait_completed,
};
use crate::engine::{Engine, MAX_BATCH_ITEMS};
use crate::model::{Environment, RunStatus};
use crate::sandbox::{Prepared, Sandbox, SandboxConfig};

/// The targets from the performance issue.
const TARGET_RUNS_PER_SEC: f64 = 10_000.0;
const TARGET_COST_RATIO: f64 = 2.0;

/// Configuration of the throughput scenario.
#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    pub runs: usize,
    pub concurrency: usize,
    /// The `bench` guest.
    pub bench_wasm: PathBuf,
}

/// What the throughput scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub runs: usize,
    pub concurrency: usize,
    /// Runs found COMPLETED in the store at the end.
    pub completed: u64,
    /// First trigger call to the last run seen COMPLETED in the store.
    pub kiln_secs: f64,
    pub kiln_runs_per_sec: f64,
    pub kiln_us_per_run: f64,
    /// The bare loop (mean of one pass before and one after kiln's).
    pub bare_secs: f64,
    pub bare_runs_per_sec: f64,
    pub bare_us_per_run: f64,
    /// kiln's wall time per run ÷ the bare loop's.
    pub ratio: f64,
    /// The bare loop from a single task, for context: on few cores, concurrent instantiation
    /// contends in the kernel (the pool's page decommits), so the bare loop can be faster alone.
    pub bare_sequential_runs_per_sec: f64,
}

impl ThroughputReport {
    pub(super) fn rows(&self) -> Vec<Row> {
        let what = format!(
            "{} no-op runs, {} at once",
            thousands(self.runs as f64),
            self.concurrency
        );
        vec![
            Row::new(
                "throughput",
                format!("runs/s ({what})"),
                thousands(self.kiln_runs_per_sec),
            )
            .baseline_only(thousands(self.bare_runs_per_sec))
            .target(
                format!("≥ {}", thousands(TARGET_RUNS_PER_SEC)),
                self.kiln_runs_per_sec >= TARGET_RUNS_PER_SEC,
            ),
            Row::new(
                "throughput",
                "wall time per run (µs)",
                format!("{:.1}", self.kiln_us_per_run),
            )
            .baseline(format!("{:.1}", self.bare_us_per_run), self.ratio)
            .target(
                format!("≤ {TARGET_COST_RATIO}×"),
                self.ratio <= TARGET_COST_RATIO,
            ),
            Row::new("throughput", "bare loop alone, 1 at once (runs/s)", "")
                .baseline_only(thousands(self.bare_sequential_runs_per_sec)),
        ]
    }
}

/// N no-op runs through the engine until the store has all of them COMPLETED, against a bare
/// wasmtime loop over the same component at the same concurrency.
pub async fn throughput(config: &ThroughputConfig) -> anyhow::Result<ThroughputReport> {
    let n = config.runs.max(1);
    let concurrency = config.concurrency.max(1);
    let bytes = read_guest(&config.bench_wasm)?;
    let dir = TempDir::new("throughput")?;
    let host = start_host(dir.path(), concurrency, vec![config.bench_wasm.clone()]).await?;
    let result = async {
        let (engine, env) = (host.engine.clone(), host.dev.clone());
        // One run through first: the first claim, reads and commits warm caches up.
        let warm = trigger(&engine, &env, "noop", "null").await?;
        wait_completed(engine.store(), &env.id, &warm, POLL).await?;

        let bare = BareLoop::new(concurrency, bytes).await?;
        bare.run("noop", "null", n.min(200), concurrency).await?; // warm-up
        let bare_before = bare.run("noop", "null", n, concurrency).await?;
        let bare_sequential = bare.run("noop", "null", n, 1).await?;

        let timed = noop_runs(&engine, &env, n).await?;
        let (kiln, done) = (timed.elapsed, timed.completed);

        let bare_after = bare.run("noop", "null", n, concurrency).await?;
        let bare = (bare_before + bare_after) / 2;
        let kiln_us = kiln.as_secs_f64() * 1e6 / n as f64;
        let bare_us = bare.as_secs_f64() * 1e6 / n as f64;
        anyhow::Ok(ThroughputReport {
            runs: n,
            concurrency,
            completed: done,
            kiln_secs: kiln.as_secs_f64(),
            kiln_runs_per_sec: n as f64 / kiln.as_secs_f64(),
            kiln_us_per_run: kiln_us,
            bare_secs: bare.as_secs_f64(),
            bare_runs_per_sec: n as f64 / bare.as_secs_f64(),
            bare_us_per_run: bare_us,
            bare_sequential_runs_per_sec: n as f64 / bare_sequential.as_secs_f64(),
            ratio: kiln_us / bare_us,
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}

/// How long `n` runs took from the first trigger until the store had them COMPLETED.
pub(super) struct Timed {
    pub elapsed: Duration,
    /// Of the `n`, the runs found COMPLETED at the end.
    pub completed: u64,
}

/// Triggers `n` no-op runs with `Engine::trigger_many` (in batches of the most it takes) and polls
/// until the store has all of them COMPLETED; a stall is an error.
pub(super) async fn noop_runs(
    engine: &Arc<Engine>,
    env: &Environment,
    n: usize,
) -> anyhow::Result<Timed> {
    let store = engine.store();
    let done_before = store.count_runs(&env.id, RunStatus::Completed).await?;
    let started = Instant::now();
    let mut left = n;
    let mut last = None;
    while left > 0 {
        let batch = left.min(MAX_BATCH_ITEMS);
        let items = (0..batch).map(|_| noop_item("noop", "null")).collect();
        let inserted = engine.trigger_many(env, items, false).await?;
        last = inserted.last().map(|i| i.run.id.clone());
        left -= batch;
    }
    let last = last.context("no run was triggered")?;
    // Runs start in queue order, so the last one triggered is among the last to finish:
    // poll it (a key lookup), and count (which scans every run of the environment, and so
    // would load the machine under test more as runs pile up) only once it has finished, or
    // once a second to notice a stall.
    let target = done_before + n as u64;
    let (mut done, mut progress_at, mut counted_at) = (done_before, Instant::now(), Instant::now());
    loop {
        tokio::time::sleep(POLL).await;
        let last_finished = load(store, &env.id, &last).await?.status.is_final();
        if !last_finished && counted_at.elapsed() < Duration::from_secs(1) {
            continue;
        }
        counted_at = Instant::now();
        let now_done = store.count_runs(&env.id, RunStatus::Completed).await?;
        if now_done >= target {
            done = now_done;
            break;
        }
        if now_done > done {
            done = now_done;
            progress_at = Instant::now();
        } else if progress_at.elapsed() > STALL_TIMEOUT {
            bail!(
                "only {} of {n} runs completed, none in the last {}s; statuses: {}",
                done - done_before,
                STALL_TIMEOUT.as_secs(),
                status_counts(store, &env.id).await?
            );
        }
    }
    Ok(Timed {
        elapsed: started.elapsed(),
        completed: done - done_before,
    })
}

/// A standalone sandbox (configured as the host's) with one component compiled.
struct BareLoop {
    sandbox: Sandbox,
    prepared: Prepared,
}

impl BareLoop {
    async fn new(concurrency: usize, bytes: Vec<u8>) -> anyhow::Result<BareLoop> {
        let sandbox = Sandbox::new(&SandboxConfig {
            concurrency,
            pool: super::util::pool_tuning(),
            quick_tier: false,
        })?;
        let prepared = sandbox.compile(bytes).await?;
        Ok(BareLoop { sandbox, prepared })
    }

    async fn run(
        &self,
        task: &str,
        payload: &str,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<Duration> {
        self.sandbox
            .bare_loop(&self.prepared, task, payload, n, concurrency)
            .await
    }
}
