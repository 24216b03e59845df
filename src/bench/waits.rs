//! The waits scenario: runs checkpointed on a one-hour wait under a manual clock — host memory
//! while they wait, the resume rate, and for single runs the journal size and the replay's cost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::report::Row;
use super::util::{
    POLL, STALL_TIMEOUT, TempDir, load, median, ms, noop_item, rss_mb, status_counts, thousands,
    wait_completed,
};
use crate::engine::MAX_BATCH_ITEMS;
use crate::host::{self, HostConfig};
use crate::model::{Run, RunStatus};
use crate::store::Store;

/// Default runs the waits scenario checkpoints at once.
pub const DEFAULT_WAITING: usize = 100_000;
/// KiB the single runs hash before their wait (the compute a replay repeats).
const WAIT_COMPUTE_KB: u32 = 4 << 10;
/// The targets from the performance issue (per 100,000 waiting runs, and runs/s).
const TARGET_WAITING_MB_PER_100K: f64 = 200.0;
const TARGET_RESUMES_PER_SEC: f64 = 5_000.0;

/// Configuration of the waits scenario.
#[derive(Debug, Clone)]
pub struct WaitsConfig {
    pub waiting: usize,
    pub repeat: usize,
    pub concurrency: usize,
    pub bench_wasm: PathBuf,
}

/// What the waits scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct WaitsReport {
    pub waiting: usize,
    /// Triggering all of them until all are WAITING.
    pub checkpoint_runs_per_sec: f64,
    pub rss_idle_mb: f64,
    pub rss_waiting_mb: f64,
    /// Memory per 100,000 waiting runs, scaled from the measured count.
    pub mb_per_100k_waiting: f64,
    /// The clock moved past every wait until every run is COMPLETED.
    pub resume_runs_per_sec: f64,
    pub journal_bytes_per_wait: f64,
    /// Single runs, medians.
    pub trigger_to_waiting_ms: f64,
    pub resume_to_completed_ms: f64,
    pub original_compute_ms: f64,
    pub replay_compute_ms: f64,
    /// Replay compute ÷ original compute.
    pub replay_ratio: f64,
}

impl WaitsReport {
    pub(super) fn rows(&self) -> Vec<Row> {
        let n = thousands(self.waiting as f64);
        vec![
            Row::new(
                "waits",
                format!("host RSS with {n} runs waiting (MB)"),
                format!("{:.0}", self.rss_waiting_mb),
            )
            .baseline(
                format!("{:.0}", self.rss_idle_mb),
                self.rss_waiting_mb / self.rss_idle_mb,
            ),
            Row::new(
                "waits",
                "RSS above idle per 100,000 waiting (MB)",
                format!("{:.1}", self.mb_per_100k_waiting),
            )
            .target(
                format!("≤ {TARGET_WAITING_MB_PER_100K:.0} MB"),
                self.mb_per_100k_waiting <= TARGET_WAITING_MB_PER_100K,
            ),
            Row::new(
                "waits",
                format!("{n} runs to WAITING (runs/s)"),
                thousands(self.checkpoint_runs_per_sec),
            ),
            Row::new(
                "waits",
                format!("resume of {n} runs to COMPLETED (runs/s)"),
                thousands(self.resume_runs_per_sec),
            )
            .target(
                format!("≥ {}", thousands(TARGET_RESUMES_PER_SEC)),
                self.resume_runs_per_sec >= TARGET_RESUMES_PER_SEC,
            ),
            Row::new(
                "waits",
                "journal bytes per wait",
                format!("{:.0}", self.journal_bytes_per_wait),
            ),
            Row::new(
                "waits",
                "one run: trigger → WAITING / clock → COMPLETED (ms)",
                format!(
                    "{:.1} / {:.1}",
                    self.trigger_to_waiting_ms, self.resume_to_completed_ms
                ),
            ),
            Row::new(
                "waits",
                format!(
                    "replay compute (ms), {} MiB hashed before the wait",
                    WAIT_COMPUTE_KB >> 10
                ),
                format!("{:.1}", self.replay_compute_ms),
            )
            .baseline(
                format!("{:.1}", self.original_compute_ms),
                self.replay_ratio,
            ),
        ]
    }
}

/// Polls until the environment has `n` runs in `status` (or a stall).
async fn wait_count(store: &Store, env_id: &str, status: RunStatus, n: u64) -> anyhow::Result<()> {
    let (mut seen, mut progress_at) = (0, Instant::now());
    loop {
        let now = store.count_runs(env_id, status).await?;
        if now >= n {
            return Ok(());
        }
        if now > seen {
            seen = now;
            progress_at = Instant::now();
        } else if progress_at.elapsed() > STALL_TIMEOUT {
            bail!(
                "only {now} of {n} runs reached {status}; statuses: {}",
                status_counts(store, env_id).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs checkpointed on waits: memory, resume rate, and the cost of one checkpoint and replay.
pub async fn waits(config: &WaitsConfig) -> anyhow::Result<WaitsReport> {
    let dir = TempDir::new("waits")?;
    let clock = Arc::new(crate::model::ManualClock::new(crate::model::now_ms()));
    let mut host_config = HostConfig::new(dir.path().to_path_buf(), ([127, 0, 0, 1], 0).into());
    host_config.concurrency = config.concurrency.max(1);
    host_config.deploy = vec![config.bench_wasm.clone()];
    host_config.clock = clock.clone();
    let host = host::start(host_config).await?;
    let result = async {
        let (engine, env) = (host.engine.clone(), host.dev.clone());
        let store = engine.store();
        let hour = Duration::from_secs(3_600);
        let wait_item = |kb: u32| noop_item("wait", &format!(r#"{{"kb":{kb},"ms":3600000}}"#));
        // Warm up: one run through a checkpoint and back.
        let warm = engine.trigger(&env, wait_item(0)).await?.run.id;
        wait_status(store, &env.id, &warm, RunStatus::Waiting).await?;
        clock.advance(hour);
        engine.wake();
        wait_completed(store, &env.id, &warm, POLL).await?;
        let done_before = store.count_runs(&env.id, RunStatus::Completed).await?;

        let n = config.waiting.max(1);
        let rss_idle = rss_mb();
        let started = Instant::now();
        let mut left = n;
        while left > 0 {
            let batch = left.min(MAX_BATCH_ITEMS);
            engine
                .trigger_many(&env, (0..batch).map(|_| wait_item(0)).collect(), false)
                .await?;
            left -= batch;
        }
        wait_count(store, &env.id, RunStatus::Waiting, n as u64).await?;
        let checkpointing = started.elapsed();
        let (journal_bytes, _) = store.journal_size().await?;
        let rss_waiting = rss_mb();

        let started = Instant::now();
        clock.advance(hour);
        engine.wake();
        wait_count(store, &env.id, RunStatus::Completed, done_before + n as u64).await?;
        let resuming = started.elapsed();

        // One run at a time: latency and replay cost.
        let (mut to_waiting, mut to_done, mut original, mut replay) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..config.repeat.max(1) {
            let t = Instant::now();
            let id = engine
                .trigger(&env, wait_item(WAIT_COMPUTE_KB))
                .await?
                .run
                .id;
            let waiting = wait_status(store, &env.id, &id, RunStatus::Waiting).await?;
            to_waiting.push(ms(t.elapsed()));
            let t = Instant::now();
            clock.advance(hour);
            engine.wake();
            let done = wait_completed(store, &env.id, &id, POLL).await?;
            to_done.push(ms(t.elapsed()));
            original.push(waiting.compute_ms as f64);
            replay.push(done.compute_ms.saturating_sub(waiting.compute_ms) as f64);
        }
        let (original, replay) = (median(original), median(replay));
        anyhow::Ok(WaitsReport {
            waiting: n,
            checkpoint_runs_per_sec: n as f64 / checkpointing.as_secs_f64(),
            rss_idle_mb: rss_idle,
            rss_waiting_mb: rss_waiting,
            mb_per_100k_waiting: (rss_waiting - rss_idle).max(0.0) * 100_000.0 / n as f64,
            resume_runs_per_sec: n as f64 / resuming.as_secs_f64(),
            journal_bytes_per_wait: journal_bytes as f64 / n as f64,
            trigger_to_waiting_ms: median(to_waiting),
            resume_to_completed_ms: median(to_done),
            original_compute_ms: original,
            replay_compute_ms: replay,
            replay_ratio: if original > 0.0 {
                replay / original
            } else {
                0.0
            },
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}

/// Polls the store until run `id` has `status`.
pub(super) async fn wait_status(
    store: &Store,
    env_id: &str,
    id: &str,
    status: RunStatus,
) -> anyhow::Result<Run> {
    let deadline = Instant::now() + STALL_TIMEOUT;
    loop {
        let run = load(store, env_id, id).await?;
        if run.status == status {
            return Ok(run);
        }
        if run.status.is_final() || Instant::now() > deadline {
            bail!("run {id} is {} while waiting for {status}", run.status);
        }
        tokio::time::sleep(POLL).await;
    }
}
