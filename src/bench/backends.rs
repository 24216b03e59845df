//! The backends scenario: the same measurements through a host on SQLite and through a host on
//! PostgreSQL, side by side in one run — no-op throughput as the throughput scenario drives it,
//! and trigger → start as the latency scenario samples it — reported PostgreSQL ÷ SQLite; and the
//! same throughput through two hosts sharing one PostgreSQL database, reported two ÷ one. Each
//! measurement gets hosts of its own on a fresh store: new data dirs, and for PostgreSQL a new
//! database made on the server of `--database` and dropped after.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use super::latency::{LATENCY_HOLD_MS, Samples, sample};
use super::report::Row;
use super::throughput::{Timed, noop_runs};
use super::util::{POLL, TempDir, host_config, start_host_on, thousands, trigger, wait_completed};
use super::{LatencyStats, Percentiles};
use crate::host::RunningHost;
use crate::store::postgres_scratch::{create_scratch_database, drop_database, runs_by_host};

/// What the scratch databases are called before their ULID.
const SCRATCH_PREFIX: &str = "kiln_bench";

/// Configuration of the backends scenario.
#[derive(Debug, Clone)]
pub struct BackendsConfig {
    /// No-op runs of the throughput measurement.
    pub runs: usize,
    /// Runs sampled one at a time for trigger → start.
    pub latency_runs: usize,
    pub concurrency: usize,
    /// The `bench` guest.
    pub bench_wasm: PathBuf,
    /// A database on the PostgreSQL server to measure (`postgres://USER@HOST:PORT/DATABASE`),
    /// through which a scratch database is made for each measurement; the user must be able to
    /// create databases.
    pub database: String,
}

/// What one backend measured.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// `Store::durability()` of the hosts' store.
    pub durability: &'static str,
    /// Runs found COMPLETED at the end of the throughput measurement.
    pub completed: u64,
    /// First trigger call to the last run seen COMPLETED in the store.
    pub secs: f64,
    pub runs_per_sec: f64,
    pub us_per_run: f64,
    /// In-process trigger → start, one run at a time (the latency scenario's sample).
    pub latency: LatencyStats,
    /// The scratch databases the measurements ran on (dropped since); empty for SQLite.
    pub databases: Vec<String>,
}

/// What the backends scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct BackendsReport {
    pub runs: usize,
    pub latency_runs: usize,
    pub concurrency: usize,
    /// How long each sampled run stays EXECUTING (the `sleep` task).
    pub hold_ms: u64,
    /// The server measured, without a password.
    pub server: String,
    pub sqlite: BackendReport,
    pub postgres: BackendReport,
    /// PostgreSQL's wall time per run ÷ SQLite's (above 1: PostgreSQL is slower).
    pub throughput_ratio: f64,
    /// PostgreSQL's trigger → start ÷ SQLite's, at p50 and at p99.
    pub latency_p50_ratio: f64,
    pub latency_p99_ratio: f64,
    /// Two hosts on one PostgreSQL database, the runs triggered through the first.
    pub two_hosts: TwoHostsReport,
    /// Two hosts' wall time per run ÷ one host's, both on PostgreSQL (below 1: two drain faster).
    pub two_hosts_ratio: f64,
}

/// What two hosts sharing one PostgreSQL database measured.
#[derive(Debug, Clone, Serialize)]
pub struct TwoHostsReport {
    pub completed: u64,
    pub secs: f64,
    pub runs_per_sec: f64,
    pub us_per_run: f64,
    /// Runs each host started, most first (both must have taken part).
    pub runs_by_host: Vec<u64>,
}

impl BackendsReport {
    pub fn rows(&self) -> Vec<Row> {
        let (pg, lite) = (&self.postgres, &self.sqlite);
        let what = format!(
            "{} no-op runs, {} at once",
            thousands(self.runs as f64),
            self.concurrency
        );
        let start = |b: &BackendReport| b.latency.start_observed;
        let percentile = |name: &str, p: fn(&Percentiles) -> f64, ratio: f64| {
            Row::new(
                "backends",
                format!(
                    "PostgreSQL vs SQLite: trigger → start, polled, {name} (ms, {} runs)",
                    self.latency_runs
                ),
                format!("{:.2}", p(&start(pg))),
            )
            .baseline(format!("{:.2}", p(&start(lite))), ratio)
        };
        vec![
            // Words in the metric column, which is left-aligned, so the numbers' columns stay
            // narrow.
            Row::new(
                "backends",
                format!("SQLite durability: {}", lite.durability),
                "",
            ),
            Row::new(
                "backends",
                format!("PostgreSQL durability: {}", pg.durability),
                "",
            ),
            Row::new(
                "backends",
                format!("PostgreSQL vs SQLite: runs/s ({what})"),
                thousands(pg.runs_per_sec),
            )
            .baseline_only(thousands(lite.runs_per_sec)),
            Row::new(
                "backends",
                "PostgreSQL vs SQLite: wall time per run (µs)",
                format!("{:.1}", pg.us_per_run),
            )
            .baseline(format!("{:.1}", lite.us_per_run), self.throughput_ratio),
            percentile("p50", |p| p.p50_ms, self.latency_p50_ratio),
            percentile("p99", |p| p.p99_ms, self.latency_p99_ratio),
            Row::new(
                "backends",
                format!("two PostgreSQL hosts vs one: runs/s ({what} each)"),
                thousands(self.two_hosts.runs_per_sec),
            )
            .baseline_only(thousands(pg.runs_per_sec)),
            Row::new(
                "backends",
                format!(
                    "two PostgreSQL hosts vs one: wall time per run (µs; runs started per host: {})",
                    self.two_hosts
                        .runs_by_host
                        .iter()
                        .map(|n| thousands(*n as f64))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
                format!("{:.1}", self.two_hosts.us_per_run),
            )
            .baseline(format!("{:.1}", pg.us_per_run), self.two_hosts_ratio),
        ]
    }
}

/// Throughput, then trigger → start, each on SQLite and then on a fresh PostgreSQL database.
pub async fn backends(config: &BackendsConfig) -> anyhow::Result<BackendsReport> {
    let runs = config.runs.max(1);
    let latency_runs = config.latency_runs.max(1);
    let concurrency = config.concurrency.max(1);
    let server = &config.database;

    let (lite_throughput, _) = measure(config, None, Measurement::Throughput(runs)).await?;
    let (pg_throughput, pg_throughput_db) =
        measure(config, Some(server), Measurement::Throughput(runs)).await?;
    let (lite_latency, _) = measure(config, None, Measurement::Latency(latency_runs)).await?;
    let (pg_latency, pg_latency_db) =
        measure(config, Some(server), Measurement::Latency(latency_runs)).await?;
    let (two_hosts, two_hosts_db) =
        measure(config, Some(server), Measurement::TwoHosts(runs)).await?;
    let Measured::TwoHosts(two_timed, by_host) = two_hosts else {
        anyhow::bail!("a measurement returned another's figures");
    };
    let two_secs = two_timed.elapsed.as_secs_f64();
    let two_hosts = TwoHostsReport {
        completed: two_timed.completed,
        secs: two_secs,
        runs_per_sec: runs as f64 / two_secs,
        us_per_run: two_secs * 1e6 / runs as f64,
        runs_by_host: by_host,
    };

    let backend = |throughput: Measured, latency: Measured, databases: Vec<String>| {
        let (Measured::Throughput(durability, timed), Measured::Latency(latency)) =
            (throughput, latency)
        else {
            anyhow::bail!("a measurement returned another's figures");
        };
        let secs = timed.elapsed.as_secs_f64();
        anyhow::Ok(BackendReport {
            durability,
            completed: timed.completed,
            secs,
            runs_per_sec: runs as f64 / secs,
            us_per_run: secs * 1e6 / runs as f64,
            latency,
            databases,
        })
    };
    let sqlite = backend(lite_throughput, lite_latency, Vec::new())?;
    let postgres = backend(
        pg_throughput,
        pg_latency,
        [pg_throughput_db, pg_latency_db, two_hosts_db]
            .into_iter()
            .flatten()
            .collect(),
    )?;
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    let (pg_start, lite_start) = (
        postgres.latency.start_observed,
        sqlite.latency.start_observed,
    );
    Ok(BackendsReport {
        runs,
        latency_runs,
        concurrency,
        hold_ms: LATENCY_HOLD_MS,
        server: without_password(server),
        throughput_ratio: ratio(postgres.us_per_run, sqlite.us_per_run),
        two_hosts_ratio: ratio(two_hosts.us_per_run, postgres.us_per_run),
        latency_p50_ratio: ratio(pg_start.p50_ms, lite_start.p50_ms),
        latency_p99_ratio: ratio(pg_start.p99_ms, lite_start.p99_ms),
        sqlite,
        postgres,
        two_hosts,
    })
}

#[derive(Clone, Copy)]
enum Measurement {
    /// This many no-op runs through the host until all are COMPLETED.
    Throughput(usize),
    /// This many `sleep` runs one at a time, each sampled from trigger to start.
    Latency(usize),
    /// This many no-op runs through the first of two hosts sharing one database (PostgreSQL
    /// only), until all are COMPLETED.
    TwoHosts(usize),
}

/// What one host measured.
enum Measured {
    /// The store's durability, and how long the runs took.
    Throughput(&'static str, Timed),
    Latency(LatencyStats),
    /// How long the runs took, and how many each host started.
    TwoHosts(Timed, Vec<u64>),
}

/// Runs one measurement on a host of its own: SQLite in a new data dir, or, with `server`, a
/// new database on that PostgreSQL server, dropped after. Returns that database's name too.
async fn measure(
    config: &BackendsConfig,
    server: Option<&str>,
    what: Measurement,
) -> anyhow::Result<(Measured, Option<String>)> {
    let dir = TempDir::new("backends")?;
    let Some(server) = server else {
        return Ok((on_host(config, &dir, None, what).await?, None));
    };
    let name = create_scratch_database(server, SCRATCH_PREFIX)
        .await
        .context("the backends scenario makes a database for each measurement")?;
    let url = database_url(server, &name);
    let measured = match what {
        Measurement::TwoHosts(n) => on_two_hosts(config, &dir, &url, n).await,
        _ => on_host(config, &dir, Some(&url), what).await,
    };
    drop_database(server, &name).await;
    Ok((measured?, Some(name)))
}

async fn on_host(
    config: &BackendsConfig,
    dir: &TempDir,
    database: Option<&str>,
    what: Measurement,
) -> anyhow::Result<Measured> {
    let host = start_host_on(
        dir.path(),
        database,
        config.concurrency.max(1),
        vec![config.bench_wasm.clone()],
    )
    .await?;
    let measured = measure_on(&host, what).await;
    let stopped = host.shutdown().await;
    let measured = measured?;
    stopped?;
    Ok(measured)
}

/// Two hosts on the database `url`, each with the scenario's concurrency: the first (on `dir`)
/// deploys the guest and takes the triggers, the second (on a data dir of its own, with the
/// first's secrets key) claims from the same queue.
async fn on_two_hosts(
    config: &BackendsConfig,
    dir: &TempDir,
    url: &str,
    n: usize,
) -> anyhow::Result<Measured> {
    let concurrency = config.concurrency.max(1);
    let first = start_host_on(
        dir.path(),
        Some(url),
        concurrency,
        vec![config.bench_wasm.clone()],
    )
    .await?;
    let second_dir = TempDir::new("backends-second")?;
    let mut second_config = host_config(second_dir.path(), Some(url), concurrency, Vec::new());
    second_config.secrets_key_file = Some(dir.path().join(crate::secrets::KEY_FILE));
    let second = crate::host::start(second_config).await;
    let measured = match &second {
        Ok(_) => {
            let (engine, env) = (&first.engine, &first.dev);
            let warm = trigger(engine, env, "noop", "null").await?;
            wait_completed(engine.store(), &env.id, &warm, POLL).await?;
            noop_runs(engine, env, n).await
        }
        Err(e) => Err(anyhow::anyhow!("the second host did not start: {e:#}")),
    };
    if let Ok(second) = second {
        second.shutdown().await?;
    }
    first.shutdown().await?;
    let timed = measured?;
    let by_host = runs_by_host(url).await?;
    Ok(Measured::TwoHosts(timed, by_host))
}

async fn measure_on(host: &RunningHost, what: Measurement) -> anyhow::Result<Measured> {
    let (engine, env) = (&host.engine, &host.dev);
    match what {
        Measurement::Throughput(n) => {
            // One run through first, as the throughput scenario does: the first claim, reads
            // and commits warm caches (and the pool's connections) up.
            let warm = trigger(engine, env, "noop", "null").await?;
            wait_completed(engine.store(), &env.id, &warm, POLL).await?;
            let timed = noop_runs(engine, env, n).await?;
            Ok(Measured::Throughput(engine.store().durability(), timed))
        }
        Measurement::TwoHosts(_) => anyhow::bail!("two hosts are measured by on_two_hosts"),
        Measurement::Latency(n) => {
            let payload = format!("{{\"ms\":{LATENCY_HOLD_MS}}}");
            for _ in 0..(n / 10).clamp(1, 20) {
                sample(host, None, &payload, &mut Samples::default()).await?;
            }
            let mut samples = Samples::default();
            for _ in 0..n {
                sample(host, None, &payload, &mut samples).await?;
            }
            Ok(Measured::Latency(samples.stats()))
        }
    }
}

/// The URL of database `name` on the server of `server` (a URL, or a key=value string).
fn database_url(server: &str, name: &str) -> String {
    let Some((scheme, rest)) = server.split_once("://") else {
        // In a key=value string the last `dbname` counts.
        return format!("{server} dbname={name}");
    };
    let (address, query) = rest.find('?').map_or((rest, ""), |at| rest.split_at(at));
    let authority = address.split_once('/').map_or(address, |(a, _)| a);
    format!("{scheme}://{authority}/{name}{query}")
}

/// `server` with the password of its URL (`user:password@`) left out.
pub(super) fn without_password(server: &str) -> String {
    let Some((scheme, rest)) = server.split_once("://") else {
        return server
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some(("password", _)) => "password=…",
                _ => kv,
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{host}{}", &rest[end..])
        }
        None => server.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_database_replaces_the_urls_own() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/kiln_x"),
            ("postgres://u@h:5432", "postgres://u@h:5432/kiln_x"),
            (
                "postgresql://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/kiln_x?sslmode=disable",
            ),
            (
                "host=h user=u dbname=db",
                "host=h user=u dbname=db dbname=kiln_x",
            ),
        ];
        for (server, url) in cases {
            assert_eq!(database_url(server, "kiln_x"), url, "{server}");
        }
    }

    #[test]
    fn the_shown_server_has_no_password() {
        let cases = [
            ("postgres://u:secret@h:5432/db", "postgres://u@h:5432/db"),
            ("postgres://u@h/db?x=1", "postgres://u@h/db?x=1"),
            ("postgres://h/db", "postgres://h/db"),
            ("host=h password=secret", "host=h password=…"),
        ];
        for (server, shown) in cases {
            assert_eq!(without_password(server), shown, "{server}");
        }
    }
}
