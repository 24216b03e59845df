//! The latency scenario: one run at a time, trigger → attempt start as polled from the store and
//! as stored, in-process and over HTTP, then in-process again under a background load.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::report::Row;
use super::util::{
    STALL_TIMEOUT, TempDir, load, ms, noop_item, start_host, thousands, trigger, wait_completed,
};
use crate::engine::MAX_BATCH_ITEMS;
use crate::host::RunningHost;
use crate::model::RunStatus;

/// How long a `sleep` run of the latency scenario stays EXECUTING: long enough that a poller
/// every ~0.1 ms sees the status, short enough that 200 runs take seconds. The guest sleeps
/// rather than spins: a busy guest holds its tokio worker until the next epoch tick, which
/// delayed the poller and added milliseconds to the measured p99.
pub(super) const LATENCY_HOLD_MS: u64 = 5;
/// How often the latency scenario polls the store for the run's status. Below tokio's 1 ms
/// timer granularity, so the pause is a blocking sleep on the blocking pool.
const LATENCY_POLL: Duration = Duration::from_micros(100);

/// The targets from the performance issue.
const TARGET_LATENCY_P50_MS: f64 = 1.0;
const TARGET_LATENCY_P99_MS: f64 = 5.0;

/// Configuration of the latency scenario.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    pub runs: usize,
    pub concurrency: usize,
    pub bench_wasm: PathBuf,
    /// No-op runs per second triggered in the background for the loaded measurement.
    pub load_runs_per_sec: f64,
}

/// Background load of the latency scenario when the throughput scenario did not run first.
pub const DEFAULT_LATENCY_LOAD: f64 = 500.0;

/// p50 and p99 of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From an HDR histogram of the samples in microseconds (3 significant digits, up to a minute).
    fn of(ms: Vec<f64>) -> Percentiles {
        let Ok(mut histogram) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        else {
            return Percentiles {
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        };
        for v in ms {
            // Saturates at the bound rather than failing on an outlier.
            histogram.saturating_record((v * 1e3).round().max(1.0) as u64);
        }
        let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
        Percentiles {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: histogram.max() as f64 / 1e3,
        }
    }

    fn show(&self, decimals: usize) -> String {
        format!("{:.d$} / {:.d$}", self.p50_ms, self.p99_ms, d = decimals)
    }
}

/// Latencies of one way of triggering.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// The trigger call: `Engine::trigger`, or the HTTP request, until it returned (the run is
    /// durably inserted by then).
    pub trigger_call: Percentiles,
    /// From just before the trigger call until a poll of the store saw the run EXECUTING (or
    /// later). Resolution: the poll interval, ~0.1 ms plus one store read.
    pub start_observed: Percentiles,
    /// `attempts.started_at − runs.created_at` as stored: whole milliseconds, so ±1 ms.
    pub start_stored: Percentiles,
    /// Runs first seen already COMPLETED (their observed start is late by the attempt's length).
    pub missed_executing: usize,
}

/// What the latency scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub runs: usize,
    /// How long each run stays EXECUTING (the `sleep` task), so the poller sees it start.
    pub hold_ms: u64,
    pub in_process: LatencyStats,
    pub http: LatencyStats,
    /// In-process again, with no-op runs triggered in the background at `load_runs_per_sec`.
    pub loaded: LatencyStats,
    pub load_runs_per_sec: f64,
}

impl LatencyReport {
    pub(super) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (how, s) in [("in-process", &self.in_process), ("HTTP", &self.http)] {
            rows.push(Row::new(
                "latency",
                format!("{how}: trigger call p50 / p99 (ms)"),
                s.trigger_call.show(2),
            ));
            let p = &s.start_observed;
            rows.push(
                Row::new(
                    "latency",
                    format!("{how}: trigger → start, polled, p50 / p99 (ms)"),
                    p.show(2),
                )
                .targets(&[
                    (
                        format!("p50 ≤ {TARGET_LATENCY_P50_MS} ms"),
                        p.p50_ms <= TARGET_LATENCY_P50_MS,
                    ),
                    (
                        format!("p99 ≤ {TARGET_LATENCY_P99_MS} ms"),
                        p.p99_ms <= TARGET_LATENCY_P99_MS,
                    ),
                ]),
            );
            rows.push(Row::new(
                "latency",
                format!("{how}: trigger → start, stored ms, p50 / p99"),
                s.start_stored.show(0),
            ));
        }
        rows.push(Row::new(
            "latency",
            format!(
                "in-process at {} runs/s load: trigger → start, polled, p50 / p99 (ms)",
                thousands(self.load_runs_per_sec)
            ),
            self.loaded.start_observed.show(2),
        ));
        rows
    }
}

/// One run at a time: trigger, watch it start, wait for it to finish; in-process, then over HTTP.
pub async fn latency(config: &LatencyConfig) -> anyhow::Result<LatencyReport> {
    let n = config.runs.max(1);
    let dir = TempDir::new("latency")?;
    let host = start_host(
        dir.path(),
        config.concurrency.max(1),
        vec![config.bench_wasm.clone()],
    )
    .await?;
    let result = async {
        let key = std::fs::read_to_string(&host.key_file)
            .with_context(|| format!("cannot read {}", host.key_file.display()))?
            .trim()
            .to_owned();
        let http = Http {
            client: reqwest::Client::new(),
            url: format!("http://{}", host.addr),
            key,
        };
        let payload = format!("{{\"ms\":{LATENCY_HOLD_MS}}}");
        let warm_up = (n / 10).clamp(1, 20);
        let mut in_process = Samples::default();
        let mut over_http = Samples::default();
        for _ in 0..warm_up {
            sample(&host, None, &payload, &mut Samples::default()).await?;
            sample(&host, Some(&http), &payload, &mut Samples::default()).await?;
        }
        for _ in 0..n {
            sample(&host, None, &payload, &mut in_process).await?;
        }
        for _ in 0..n {
            sample(&host, Some(&http), &payload, &mut over_http).await?;
        }
        // The same in-process samples while no-op runs arrive in the background.
        let load = background_load(&host, config.load_runs_per_sec);
        let mut loaded = Samples::default();
        let sampled = async {
            for _ in 0..n {
                sample(&host, None, &payload, &mut loaded).await?;
            }
            anyhow::Ok(())
        }
        .await;
        load.abort();
        sampled?;
        Ok::<_, anyhow::Error>(LatencyReport {
            runs: n,
            hold_ms: LATENCY_HOLD_MS,
            in_process: in_process.stats(),
            http: over_http.stats(),
            loaded: loaded.stats(),
            load_runs_per_sec: config.load_runs_per_sec,
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}

/// Triggers no-op runs at `per_sec` (a batch every 10 ms) until aborted.
fn background_load(host: &RunningHost, per_sec: f64) -> tokio::task::JoinHandle<()> {
    let (engine, env) = (host.engine.clone(), host.dev.clone());
    let per_tick = (per_sec / 100.0).max(0.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut owed = 0.0;
        loop {
            tick.tick().await;
            owed += per_tick;
            let batch = (owed as usize).min(MAX_BATCH_ITEMS);
            if batch == 0 {
                continue;
            }
            owed -= batch as f64;
            let items = (0..batch).map(|_| noop_item("noop", "null")).collect();
            if let Err(e) = engine.trigger_many(&env, items, false).await {
                tracing::warn!(error = %e, "the latency scenario's background load failed");
                return;
            }
        }
    })
}

pub(super) struct Http {
    client: reqwest::Client,
    url: String,
    key: String,
}

#[derive(Default)]
pub(super) struct Samples {
    call: Vec<f64>,
    observed: Vec<f64>,
    stored: Vec<f64>,
    missed: usize,
}

impl Samples {
    pub(super) fn stats(self) -> LatencyStats {
        LatencyStats {
            trigger_call: Percentiles::of(self.call),
            start_observed: Percentiles::of(self.observed),
            start_stored: Percentiles::of(self.stored),
            missed_executing: self.missed,
        }
    }
}

/// Triggers one `sleep` run (in-process, or over HTTP when `http` is given), polls until it is
/// seen started, waits for it to complete, and records the three latencies.
pub(super) async fn sample(
    host: &RunningHost,
    http: Option<&Http>,
    payload: &str,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let (engine, env) = (&host.engine, &host.dev);
    let store = engine.store();
    let started = Instant::now();
    let id = match http {
        None => trigger(engine, env, "sleep", payload).await?,
        Some(http) => {
            let body = format!("{{\"payload\":{payload}}}");
            let response = http
                .client
                .post(format!("{}/api/v1/tasks/sleep/trigger", http.url))
                .bearer_auth(&http.key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let value: serde_json::Value = response.json().await?;
            if !status.is_success() {
                bail!("the trigger request failed with {status}: {value}");
            }
            value["id"]
                .as_str()
                .context("the trigger response has no run id")?
                .to_owned()
        }
    };
    let call = started.elapsed();
    let seen_at = Instant::now() + STALL_TIMEOUT;
    let first_seen = loop {
        let run = load(store, &env.id, &id).await?;
        if matches!(run.status, RunStatus::Executing | RunStatus::Completed) {
            break run.status;
        }
        if run.status.is_final() {
            bail!("run {id} ended {} before it was seen executing", run.status);
        }
        if Instant::now() > seen_at {
            bail!("run {id} did not start within {}s", STALL_TIMEOUT.as_secs());
        }
        // Sub-millisecond pause: tokio's timer cannot, so sleep on the blocking pool.
        tokio::task::spawn_blocking(|| std::thread::sleep(LATENCY_POLL)).await?;
    };
    let observed = started.elapsed();
    let run = wait_completed(store, &env.id, &id, Duration::from_millis(1)).await?;
    let attempt = store
        .attempts(&env.id, &id)
        .await?
        .into_iter()
        .next()
        .context("a completed run has no attempt")?;
    samples.call.push(ms(call));
    samples.observed.push(ms(observed));
    samples
        .stored
        .push((attempt.started_at - run.created_at) as f64);
    samples.missed += usize::from(first_seen == RunStatus::Completed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_ms - 100.0).abs() < 0.1, "{p:?}");
        // Sub-millisecond samples keep their precision.
        let p = Percentiles::of(vec![0.25; 10]);
        assert!((p.p50_ms - 0.25).abs() < 0.001, "{p:?}");
    }
}
