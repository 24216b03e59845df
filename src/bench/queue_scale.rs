//! The queue scenario: the store's lane claim and the dispatcher's drain at growing backlogs,
//! each relative to the smallest (flat is the goal).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::report::Row;
use super::util::{POLL, TempDir, noop_item, start_host, thousands, wait_completed};
use crate::engine::MAX_BATCH_ITEMS;
use crate::model::{Lane, QueueRef};

/// Default backlogs of the queue scenario.
pub const DEFAULT_QUEUE_SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Runs claimed, and runs drained, at each backlog.
const QUEUE_PROBE_RUNS: usize = 1_000;
/// Runs per claim when timing the claim alone (the dispatcher claims as many as it has slots).
const QUEUE_CLAIM_BATCH: usize = 50;
/// Most a claim or the drain may cost at the largest backlog, relative to the smallest.
const TARGET_QUEUE_FLATNESS: f64 = 1.5;

/// Configuration of the queue scenario.
#[derive(Debug, Clone)]
pub struct QueueScaleConfig {
    pub sizes: Vec<usize>,
    pub concurrency: usize,
    pub bench_wasm: PathBuf,
}

/// One backlog of the queue scenario.
#[derive(Debug, Clone, Serialize)]
pub struct QueueScalePoint {
    pub queued: usize,
    /// Engine::trigger_many into a queue already this deep.
    pub fill_us_per_run: f64,
    /// The store's lane claim (select the lane's head, one UPDATE … RETURNING, load the runs).
    pub claim_us_per_run: f64,
    /// The dispatcher taking runs off this backlog to COMPLETED.
    pub drain_runs_per_sec: f64,
    /// `host::start` on the data dir with this backlog until the host serves: recovery (of the
    /// runs the claim probe left EXECUTING, too), the scheduler's load, the artifacts' prune.
    pub restart_ms: f64,
}

/// What the queue scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct QueueScaleReport {
    pub points: Vec<QueueScalePoint>,
    /// Claim cost at the largest backlog ÷ at the smallest.
    pub claim_ratio: f64,
    /// Drain time per run at the largest backlog ÷ at the smallest.
    pub drain_ratio: f64,
}

impl QueueScaleReport {
    pub(super) fn rows(&self) -> Vec<Row> {
        let Some(first) = self.points.first() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for p in &self.points {
            let queued = thousands(p.queued as f64);
            rows.push(
                Row::new(
                    "queue",
                    format!("claim µs/run, {queued} queued"),
                    format!("{:.1}", p.claim_us_per_run),
                )
                .baseline(
                    format!("{:.1}", first.claim_us_per_run),
                    p.claim_us_per_run / first.claim_us_per_run,
                ),
            );
            rows.push(
                Row::new(
                    "queue",
                    format!("drain runs/s, {queued} queued"),
                    thousands(p.drain_runs_per_sec),
                )
                .baseline(
                    thousands(first.drain_runs_per_sec),
                    first.drain_runs_per_sec / p.drain_runs_per_sec,
                ),
            );
            rows.push(Row::new(
                "queue",
                format!("trigger µs/run into {queued} queued"),
                format!("{:.1}", p.fill_us_per_run),
            ));
            rows.push(
                Row::new(
                    "queue",
                    format!(
                        "host restart, {queued} queued, {} interrupted (ms)",
                        thousands(QUEUE_PROBE_RUNS as f64)
                    ),
                    format!("{:.1}", p.restart_ms),
                )
                .baseline(
                    format!("{:.1}", first.restart_ms),
                    p.restart_ms / first.restart_ms,
                ),
            );
        }
        if self.points.len() > 1 {
            rows.push(
                Row::new("queue", "largest ÷ smallest backlog, per run", "").targets(&[
                    (
                        format!(
                            "claim ≤ {TARGET_QUEUE_FLATNESS}× ({:.2}×)",
                            self.claim_ratio
                        ),
                        self.claim_ratio <= TARGET_QUEUE_FLATNESS,
                    ),
                    (
                        format!(
                            "drain ≤ {TARGET_QUEUE_FLATNESS}× ({:.2}×)",
                            self.drain_ratio
                        ),
                        self.drain_ratio <= TARGET_QUEUE_FLATNESS,
                    ),
                ]),
            );
        }
        rows
    }
}

/// Dequeue cost at growing backlogs: the claim alone, and the whole dispatcher draining runs.
pub async fn queue_scale(config: &QueueScaleConfig) -> anyhow::Result<QueueScaleReport> {
    let mut points = Vec::new();
    for &size in &config.sizes {
        let size = size.max(QUEUE_PROBE_RUNS);
        eprintln!("  {} queued …", thousands(size as f64));
        points.push(queue_point(config, size).await?);
    }
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("no queue sizes to measure"),
    };
    Ok(QueueScaleReport {
        claim_ratio: last.claim_us_per_run / first.claim_us_per_run,
        drain_ratio: first.drain_runs_per_sec / last.drain_runs_per_sec,
        points,
    })
}

async fn queue_point(config: &QueueScaleConfig, size: usize) -> anyhow::Result<QueueScalePoint> {
    let dir = TempDir::new("queue")?;
    let host = start_host(
        dir.path(),
        config.concurrency.max(1),
        vec![config.bench_wasm.clone()],
    )
    .await?;
    let result = async {
        let (engine, env) = (host.engine.clone(), host.dev.clone());
        let noop = || QueueRef::Task("noop".into());
        engine.pause_queue(&env, noop(), true).await?;

        // Fill to the backlog's size.
        let fill = |count: usize| {
            let engine = engine.clone();
            let env = env.clone();
            async move {
                let mut ids = Vec::with_capacity(count);
                while ids.len() < count {
                    let batch = (count - ids.len()).min(MAX_BATCH_ITEMS);
                    let items = (0..batch).map(|_| noop_item("noop", "null")).collect();
                    let inserted = engine.trigger_many(&env, items, false).await?;
                    ids.extend(inserted.into_iter().map(|t| t.run.id));
                }
                anyhow::Ok(ids)
            }
        };
        let started = Instant::now();
        let mut queued = fill(size).await?;
        let fill_us = started.elapsed().as_secs_f64() * 1e6 / size as f64;

        // The claim alone, on the paused queue (the dispatcher leaves it alone meanwhile).
        let lane = Lane {
            environment_id: env.id.clone(),
            queue: "task/noop".into(),
            concurrency_key: None,
        };
        let started = Instant::now();
        let mut claimed = 0;
        while claimed < QUEUE_PROBE_RUNS {
            // The claim starts the runs it takes (claim is start); timed until it is durable.
            let got = engine
                .store()
                .claim_runs(vec![(lane.clone(), QUEUE_CLAIM_BATCH)], engine.now())
                .await?;
            got.durable.wait().await?;
            let took = got.value.iter().map(Vec::len).sum::<usize>();
            if took == 0 {
                bail!("the paused queue gave only {claimed} of its {size} runs to the claim");
            }
            claimed += took;
        }
        let claim_us = started.elapsed().as_secs_f64() * 1e6 / claimed as f64;

        // Top the backlog up to its size again, so the drain starts from it too; runs leave in
        // trigger order, so the drain's last run is the probe's count past the claimed ones.
        queued.extend(fill(claimed).await?);
        let drain_last = queued
            .get(claimed + QUEUE_PROBE_RUNS - 1)
            .cloned()
            .context("the backlog is too small to drain")?;

        // The dispatcher drains the next runs.
        let started = Instant::now();
        engine.pause_queue(&env, noop(), false).await?;
        wait_completed(engine.store(), &env.id, &drain_last, POLL).await?;
        let drain = started.elapsed();
        anyhow::Ok(QueueScalePoint {
            queued: size,
            fill_us_per_run: fill_us,
            claim_us_per_run: claim_us,
            drain_runs_per_sec: QUEUE_PROBE_RUNS as f64 / drain.as_secs_f64(),
            restart_ms: 0.0,
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let mut point = result?;
    stopped?;

    // A restart with the backlog still queued.
    let started = Instant::now();
    let again = start_host(dir.path(), config.concurrency.max(1), Vec::new()).await?;
    point.restart_ms = started.elapsed().as_secs_f64() * 1e3;
    again.shutdown().await?;
    Ok(point)
}
