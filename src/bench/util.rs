//! What the scenarios share: starting a host on a temp data dir, triggering runs and polling the
//! store until they finish (or stall), and the arithmetic of the report (medians, percentiles,
//! digit grouping). Nothing here measures; the scenarios do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::engine::{Engine, TriggerItem};
use crate::host::{self, HostConfig, RunningHost};
use crate::model::{Environment, Run, RunStatus, TriggerOptions};
use crate::store::Store;

/// How often the scenarios poll the store for one run (the latency scenario has its own,
/// faster, `LATENCY_POLL`).
pub(super) const POLL: Duration = Duration::from_millis(2);
/// A scenario that sees no run finish for this long stops with an error instead of hanging.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Resident memory of this process in MB (Linux; 0 elsewhere).
pub(super) fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The pool tuning every host and baseline of this benchmark run uses (`--pool-*` flags), so
/// kiln and its bare loop are measured with the same configuration.
static POOL: std::sync::OnceLock<crate::sandbox::PoolTuning> = std::sync::OnceLock::new();

pub(super) fn set_pool_tuning(tuning: crate::sandbox::PoolTuning) {
    let _ = POOL.set(tuning);
}

pub(super) fn pool_tuning() -> crate::sandbox::PoolTuning {
    POOL.get().copied().unwrap_or_default()
}

pub(super) async fn start_host(
    dir: &Path,
    concurrency: usize,
    deploy: Vec<PathBuf>,
) -> anyhow::Result<RunningHost> {
    start_host_on(dir, None, concurrency, deploy).await
}

/// A host on `dir` whose store is the PostgreSQL `database` (a URL) if given, else SQLite in
/// `dir`.
pub(super) async fn start_host_on(
    dir: &Path,
    database: Option<&str>,
    concurrency: usize,
    deploy: Vec<PathBuf>,
) -> anyhow::Result<RunningHost> {
    host::start(host_config(dir, database, concurrency, deploy)).await
}

/// The configuration [`start_host_on`] starts a host with.
pub(super) fn host_config(
    dir: &Path,
    database: Option<&str>,
    concurrency: usize,
    deploy: Vec<PathBuf>,
) -> HostConfig {
    let mut config = HostConfig::new(dir.to_path_buf(), ([127, 0, 0, 1], 0).into());
    config.database = database.map(str::to_owned);
    config.concurrency = concurrency;
    config.deploy = deploy;
    config.pool = pool_tuning();
    config
}

pub(super) fn read_guest(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(super) fn noop_item(task: &str, payload: &str) -> TriggerItem {
    TriggerItem {
        task_id: task.to_owned(),
        payload: payload.to_owned(),
        options: TriggerOptions::default(),
    }
}

/// Triggers one run through the engine; returns its id.
pub(super) async fn trigger(
    engine: &Arc<Engine>,
    env: &Environment,
    task: &str,
    payload: &str,
) -> anyhow::Result<String> {
    Ok(engine.trigger(env, noop_item(task, payload)).await?.run.id)
}

pub(super) async fn load(store: &Store, env_id: &str, id: &str) -> anyhow::Result<Run> {
    store
        .run(env_id, id)
        .await?
        .with_context(|| format!("run {id} is not in the store"))
}

/// Polls the store until run `id` is COMPLETED; any other final status is an error.
pub(super) async fn wait_completed(
    store: &Store,
    env_id: &str,
    id: &str,
    poll: Duration,
) -> anyhow::Result<Run> {
    let deadline = Instant::now() + STALL_TIMEOUT;
    loop {
        let run = load(store, env_id, id).await?;
        if run.status == RunStatus::Completed {
            return Ok(run);
        }
        if run.status.is_final() {
            let why = run.error.map(|e| e.message).unwrap_or_default();
            bail!("run {id} ended {}: {why}", run.status);
        }
        if Instant::now() > deadline {
            bail!(
                "run {id} is still {} after {}s",
                run.status,
                STALL_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// `STATUS=count` for the statuses a stuck benchmark could be in.
pub(super) async fn status_counts(store: &Store, env_id: &str) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for status in [
        RunStatus::Queued,
        RunStatus::Dequeued,
        RunStatus::Executing,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Crashed,
        RunStatus::SystemFailure,
    ] {
        let n = store.count_runs(env_id, status).await?;
        if n > 0 {
            parts.push(format!("{status}={n}"));
        }
    }
    Ok(parts.join(" "))
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// `12345.6` → `12,346`.
pub(super) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A directory under the system temp dir, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(what: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(crate::model::new_id(&format!("kiln-bench-{what}")));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
