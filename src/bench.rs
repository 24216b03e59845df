//! `kiln bench`: performance scenarios, each measured side by side with a baseline in the same
//! process on the same machine and reported as a ratio, because the machines kiln is measured on
//! are shared and noisy and absolute numbers from two runs do not compare. `BENCHMARKS.md` at the
//! repository root says what each scenario measures, its targets, and the latest numbers.
//!
//! Scenarios drive a real host in-process (`host::start` on a temp data dir, API on a loopback
//! port) through what the host itself uses — the engine's trigger and queue calls, the store's
//! queries and lane claim, a manual clock for the waits, and, as an HTTP client like `cli`, the
//! API. They never change how the host behaves. The baselines come from `sandbox::baseline`, so
//! wasmtime stays inside `sandbox`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::engine::{Engine, MAX_BATCH_ITEMS, TriggerItem};
use crate::host::{self, HostConfig, RunningHost};
use crate::model::{Environment, Lane, QueueRef, Run, RunStatus, TriggerOptions};
use crate::sandbox::baseline::Metering;
use crate::sandbox::{Prepared, Sandbox, SandboxConfig};
use crate::store::Store;

/// Where `kiln bench` looks for the guests by default (relative to the current directory).
pub const DEFAULT_GUEST_DIR: &str = "guest-examples/target/wasm32-wasip2/release";

/// The command that builds the guests into [`DEFAULT_GUEST_DIR`].
const BUILD_GUESTS: &str =
    "(cd guest-examples && cargo build --release --target wasm32-wasip2), or run ./scripts/bench";

/// Default runs of the throughput scenario.
pub const DEFAULT_THROUGHPUT_RUNS: usize = 2_000;
/// Default runs of the latency scenario (one at a time, so each costs a few milliseconds).
pub const DEFAULT_LATENCY_RUNS: usize = 200;
/// Default calls of each sandbox variant (tens of ms each; the machine is noisy).
pub const DEFAULT_SANDBOX_REPEAT: usize = 15;
/// Default cold starts (a few hundred ms each).
pub const DEFAULT_COLD_START_REPEAT: usize = 5;
/// Default size of the data the `hash` task generates and hashes.
pub const DEFAULT_HASH_MB: u32 = 10;

/// How long a `sleep` run of the latency scenario stays EXECUTING: long enough that a poller
/// every ~0.1 ms sees the status, short enough that 200 runs take seconds. The guest sleeps
/// rather than spins: a busy guest holds its tokio worker until the next epoch tick, which
/// delayed the poller and added milliseconds to the measured p99.
const LATENCY_HOLD_MS: u64 = 5;
/// How often the latency scenario polls the store for the run's status. Below tokio's 1 ms
/// timer granularity, so the pause is a blocking sleep on the blocking pool.
const LATENCY_POLL: Duration = Duration::from_micros(100);
/// How often the other scenarios poll the store for one run.
const POLL: Duration = Duration::from_millis(2);
/// A scenario that sees no run finish for this long stops with an error instead of hanging.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The targets from the performance issue.
const TARGET_RUNS_PER_SEC: f64 = 10_000.0;
const TARGET_COST_RATIO: f64 = 2.0;
const TARGET_LATENCY_P50_MS: f64 = 1.0;
const TARGET_LATENCY_P99_MS: f64 = 5.0;
const TARGET_METERING_RATIO: f64 = 1.15;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// No-op runs through the engine until all are COMPLETED, vs a bare wasmtime loop.
    Throughput,
    /// Trigger → attempt start at light load, in-process and over HTTP.
    Latency,
    /// A compute-bound guest with fuel and epochs on vs off.
    Sandbox,
    /// Deploy → first run, and host restart → first run.
    ColdStart,
    /// Claim cost and drain rate with 1k, 100k and 1M runs queued.
    Queue,
    /// Runs checkpointed on waits: memory while they wait, resume rate, journal and replay cost.
    Waits,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Sandbox,
        Scenario::ColdStart,
        Scenario::Queue,
        Scenario::Waits,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Sandbox => "sandbox",
            Scenario::ColdStart => "cold-start",
            Scenario::Queue => "queue",
            Scenario::Waits => "waits",
        }
    }
}

/// Arguments of `kiln bench`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Each scenario runs a real host in this process (temp data dir, API on 127.0.0.1:0) next to a
baseline, and reports kiln ÷ baseline as well as the raw numbers:

  throughput  N no-op runs triggered with Engine::trigger_many (1,000 a call) until all are
              COMPLETED in the store, vs a bare wasmtime loop calling the same component's `run`
              (same engine configuration, a fresh store per call, no database) from as many
              tokio tasks as --concurrency.
  latency     one run at a time: the trigger call, and trigger → attempt start, observed by
              polling the store every ~0.1 ms and from the stored millisecond timestamps;
              in-process (Engine::trigger) and over HTTP (POST /api/v1/tasks/sleep/trigger).
  sandbox     the `hash` task over --hash-mb MiB through the bare path with fuel metering and
              epoch interruption each on and off.
  cold-start  deploy → first run COMPLETED on a fresh data dir, and host restart → first run,
              vs compiling and calling the component with bare wasmtime.
  queue       for each backlog (--queue-sizes, default 1k, 100k, 1M): fill a paused queue with
              Engine::trigger_many, time the store's lane claim (the dispatcher's own call) over
              1,000 runs in claims of 50, then resume and time the dispatcher draining 1,000 runs
              to COMPLETED. Reported per run and as a ratio to the smallest backlog (flat = 1×).
  waits       --waiting N runs (default 10,000) of `wait` checkpointed on a one-hour wait (the
              host's clock is a manual one): host RSS before and with them waiting, then the clock
              moves and all resume to COMPLETED (runs/s). Then, one run at a time, a run that
              hashes 4 MiB before its wait: journal bytes per wait, trigger → WAITING, clock move →
              COMPLETED, and the replay's compute time ÷ the original execution's.

The guests come from --guest-dir; build them with
  (cd guest-examples && cargo build --release --target wasm32-wasip2)
Build kiln with --release (./scripts/bench does both): numbers from a debug build are
meaningless. BENCHMARKS.md says what the numbers mean and holds the latest ones.")]
pub struct BenchArgs {
    /// Scenario to run (repeatable; default: all of them).
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    pub scenarios: Vec<Scenario>,
    /// Runs of the throughput and latency scenarios (default: 2000 and 200).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Repetitions of each sandbox variant and of each cold start; medians are reported
    /// (default: 15 and 5).
    #[arg(long, value_name = "N")]
    pub repeat: Option<usize>,
    /// Attempts the host executes at once (as `serve --concurrency`); the bare loop uses as many
    /// tokio tasks.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// MiB the `hash` task of the sandbox scenario generates and hashes.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_HASH_MB)]
    pub hash_mb: u32,
    /// Runs the waits scenario checkpoints at once (default 10000).
    #[arg(long, value_name = "N")]
    pub waiting: Option<usize>,
    /// Backlogs of the queue scenario (default: 1000, 100000 and 1000000).
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub queue_sizes: Vec<usize>,
    /// Directory holding bench.wasm and hello.wasm.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_GUEST_DIR)]
    pub guest_dir: PathBuf,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `kiln bench`.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this kiln is a debug build; its numbers are meaningless. Use ./scripts/bench or `cargo run --release -- bench`"
        );
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .filter(|s| args.scenarios.contains(s))
            .collect()
    };
    let bench_wasm = guest(&args.guest_dir, "bench")?;
    let hello_wasm = guest(&args.guest_dir, "hello")?;
    let concurrency = args.concurrency.max(1);

    let mut results = Results {
        kiln_version: env!("CARGO_PKG_VERSION"),
        durability: crate::store::DURABILITY,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        date: jiff::Timestamp::now().to_string(),
        machine: MachineInfo::here(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        throughput: None,
        latency: None,
        sandbox: None,
        cold_start: None,
        queue: None,
        waits: None,
        rows: Vec::new(),
    };
    for scenario in scenarios {
        eprintln!("running {} …", scenario.name());
        match scenario {
            Scenario::Throughput => {
                let r = throughput(&ThroughputConfig {
                    runs: args.runs.unwrap_or(DEFAULT_THROUGHPUT_RUNS),
                    concurrency,
                    bench_wasm: bench_wasm.clone(),
                })
                .await
                .context("the throughput scenario failed")?;
                results.rows.extend(r.rows());
                results.throughput = Some(r);
            }
            Scenario::Latency => {
                // Half of the throughput just measured, if it was (the issue's "50 % of max").
                let load = results
                    .throughput
                    .as_ref()
                    .map_or(DEFAULT_LATENCY_LOAD, |t| t.kiln_runs_per_sec / 2.0);
                let r = latency(&LatencyConfig {
                    runs: args.runs.unwrap_or(DEFAULT_LATENCY_RUNS),
                    concurrency,
                    bench_wasm: bench_wasm.clone(),
                    load_runs_per_sec: load,
                })
                .await
                .context("the latency scenario failed")?;
                results.rows.extend(r.rows());
                results.latency = Some(r);
            }
            Scenario::Sandbox => {
                let r = sandbox(&SandboxBenchConfig {
                    repeat: args.repeat.unwrap_or(DEFAULT_SANDBOX_REPEAT),
                    mb: args.hash_mb,
                    bench_wasm: bench_wasm.clone(),
                })
                .await
                .context("the sandbox scenario failed")?;
                results.rows.extend(r.rows());
                results.sandbox = Some(r);
            }
            Scenario::ColdStart => {
                let r = cold_start(&ColdStartConfig {
                    repeat: args.repeat.unwrap_or(DEFAULT_COLD_START_REPEAT),
                    concurrency,
                    hello_wasm: hello_wasm.clone(),
                })
                .await
                .context("the cold-start scenario failed")?;
                results.rows.extend(r.rows());
                results.cold_start = Some(r);
            }
            Scenario::Queue => {
                let sizes = if args.queue_sizes.is_empty() {
                    DEFAULT_QUEUE_SIZES.to_vec()
                } else {
                    args.queue_sizes.clone()
                };
                let r = queue_scale(&QueueScaleConfig {
                    sizes,
                    concurrency,
                    bench_wasm: bench_wasm.clone(),
                })
                .await
                .context("the queue scenario failed")?;
                results.rows.extend(r.rows());
                results.queue = Some(r);
            }
            Scenario::Waits => {
                let r = waits(&WaitsConfig {
                    waiting: args.waiting.unwrap_or(DEFAULT_WAITING),
                    repeat: args.repeat.unwrap_or(DEFAULT_COLD_START_REPEAT),
                    concurrency,
                    bench_wasm: bench_wasm.clone(),
                })
                .await
                .context("the waits scenario failed")?;
                results.rows.extend(r.rows());
                results.waits = Some(r);
            }
        }
    }

    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", render(&results));
    }
    Ok(())
}

fn guest(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.wasm"));
    if !path.is_file() {
        bail!(
            "{} not found; build the guests first: {BUILD_GUESTS} (or pass --guest-dir)",
            path.display()
        );
    }
    Ok(path)
}

/// Everything one `kiln bench` run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub kiln_version: &'static str,
    /// The store's durability setting, which every figure was measured with.
    pub durability: &'static str,
    /// `release` or `debug` (whose numbers mean nothing).
    pub build: &'static str,
    pub date: String,
    pub machine: MachineInfo,
    pub command: String,
    pub throughput: Option<ThroughputReport>,
    pub latency: Option<LatencyReport>,
    pub sandbox: Option<SandboxReport>,
    pub cold_start: Option<ColdStartReport>,
    pub queue: Option<QueueScaleReport>,
    pub waits: Option<WaitsReport>,
    /// The printed table.
    pub rows: Vec<Row>,
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub cpu_model: String,
    pub os: &'static str,
}

impl MachineInfo {
    fn here() -> MachineInfo {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        MachineInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            os: std::env::consts::OS,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub metric: String,
    pub kiln: String,
    pub baseline: String,
    /// kiln ÷ baseline, where there is a baseline.
    pub ratio: Option<f64>,
    pub target: String,
    /// `Some(true)` when a target exists and is met (all of its parts).
    pub met: Option<bool>,
    /// `met` in words, naming the part missed when a target has several.
    pub verdict: String,
}

impl Row {
    fn new(scenario: &'static str, metric: impl Into<String>, kiln: impl Into<String>) -> Row {
        Row {
            scenario,
            metric: metric.into(),
            kiln: kiln.into(),
            baseline: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
            verdict: String::new(),
        }
    }

    fn baseline(mut self, baseline: impl Into<String>, ratio: f64) -> Row {
        self.baseline = baseline.into();
        self.ratio = Some(ratio);
        self
    }

    /// A baseline to show without a ratio (the ratio is on another row).
    fn baseline_only(mut self, baseline: impl Into<String>) -> Row {
        self.baseline = baseline.into();
        self
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self.verdict = if met { "met" } else { "MISSED" }.into();
        self
    }

    /// A target of named parts, each met or not.
    fn targets(mut self, parts: &[(String, bool)]) -> Row {
        let text =
            |f: fn(&(String, bool)) -> String| parts.iter().map(f).collect::<Vec<_>>().join(", ");
        self.target = text(|(t, _)| t.clone());
        self.met = Some(parts.iter().all(|(_, met)| *met));
        self.verdict = if self.met == Some(true) {
            "met".into()
        } else {
            text(|(t, met)| {
                let part = t.split_whitespace().next().unwrap_or_default();
                format!("{part} {}", if *met { "met" } else { "MISSED" })
            })
        };
        self
    }
}

fn render(results: &Results) -> String {
    let m = &results.machine;
    let mut out = format!(
        "kiln {} ({} build) · {} · {} CPUs, {} · {} · {}\n\n",
        results.kiln_version,
        results.build,
        results.date,
        m.cpus,
        m.cpu_model,
        m.os,
        results.durability
    );
    let header = [
        "scenario",
        "metric",
        "kiln",
        "baseline",
        "kiln ÷ baseline",
        "target",
        "",
    ];
    let cells: Vec<[String; 7]> = results
        .rows
        .iter()
        .map(|r| {
            [
                r.scenario.to_owned(),
                r.metric.clone(),
                r.kiln.clone(),
                r.baseline.clone(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.target.clone(),
                r.verdict.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Numbers are right-aligned, words left-aligned.
            if (2..=4).contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
            s.push_str("  ");
        }
        format!("{}\n", s.trim_end())
    };
    out.push_str(&line(&header.map(str::to_owned)));
    out.push_str(&line(&widths.map(|w| "─".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Throughput

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
    fn rows(&self) -> Vec<Row> {
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

        let store = engine.store();
        let done_before = store.count_runs(&env.id, RunStatus::Completed).await?;
        let started = Instant::now();
        let mut left = n;
        let mut last = None;
        while left > 0 {
            let batch = left.min(MAX_BATCH_ITEMS);
            let items = (0..batch).map(|_| noop_item("noop", "null")).collect();
            let inserted = engine.trigger_many(&env, items, false).await?;
            last = inserted.last().map(|i| i.run.id.clone());
            left -= batch;
        }
        let last = last.context("no run was triggered")?;
        // Runs start in queue order, so the last one triggered is among the last to finish:
        // poll it (a key lookup), and count (which scans every run of the environment, and so
        // would load the machine under test more as runs pile up) only once it has finished, or
        // once a second to notice a stall.
        let target = done_before + n as u64;
        let (mut done, mut progress_at, mut counted_at) =
            (done_before, Instant::now(), Instant::now());
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
        let kiln = started.elapsed();

        let bare_after = bare.run("noop", "null", n, concurrency).await?;
        let bare = (bare_before + bare_after) / 2;
        let kiln_us = kiln.as_secs_f64() * 1e6 / n as f64;
        let bare_us = bare.as_secs_f64() * 1e6 / n as f64;
        Ok(ThroughputReport {
            runs: n,
            concurrency,
            completed: done - done_before,
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

/// A standalone sandbox (configured as the host's) with one component compiled.
struct BareLoop {
    sandbox: Sandbox,
    prepared: Prepared,
}

impl BareLoop {
    async fn new(concurrency: usize, bytes: Vec<u8>) -> anyhow::Result<BareLoop> {
        let sandbox = Sandbox::new(&SandboxConfig { concurrency })?;
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

// ---------------------------------------------------------------------------------------------
// Latency

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
    fn rows(&self) -> Vec<Row> {
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

struct Http {
    client: reqwest::Client,
    url: String,
    key: String,
}

#[derive(Default)]
struct Samples {
    call: Vec<f64>,
    observed: Vec<f64>,
    stored: Vec<f64>,
    missed: usize,
}

impl Samples {
    fn stats(self) -> LatencyStats {
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
async fn sample(
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
        .attempts(&id)
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

// ---------------------------------------------------------------------------------------------
// Sandbox

/// Configuration of the sandbox scenario.
#[derive(Debug, Clone)]
pub struct SandboxBenchConfig {
    /// Calls of each variant; the median is reported.
    pub repeat: usize,
    /// MiB the `hash` task hashes.
    pub mb: u32,
    pub bench_wasm: PathBuf,
}

/// Median time of one `hash` call per metering variant.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxReport {
    pub mb: u32,
    pub repeat: usize,
    /// Fuel and epochs on: what the host runs with.
    pub host_ms: f64,
    pub fuel_only_ms: f64,
    pub epochs_only_ms: f64,
    pub unmetered_ms: f64,
    /// host ÷ unmetered: what metering costs in all.
    pub metering_ratio: f64,
    /// host ÷ epochs only: what fuel adds.
    pub fuel_ratio: f64,
    /// host ÷ fuel only: what epochs add.
    pub epoch_ratio: f64,
}

impl SandboxReport {
    fn rows(&self) -> Vec<Row> {
        let what = format!("hash {} MiB (ms)", self.mb);
        vec![
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs none"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.unmetered_ms), self.metering_ratio)
            .target(
                format!("≤ {TARGET_METERING_RATIO}×"),
                self.metering_ratio <= TARGET_METERING_RATIO,
            ),
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs epochs only"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.epochs_only_ms), self.fuel_ratio),
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs fuel only"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.fuel_only_ms), self.epoch_ratio),
        ]
    }
}

/// The `hash` task through the bare path in four sandboxes: fuel and epochs each on or off.
/// The variants take turns, so drift in the machine's speed spreads over all of them.
pub async fn sandbox(config: &SandboxBenchConfig) -> anyhow::Result<SandboxReport> {
    let bytes = read_guest(&config.bench_wasm)?;
    let payload = format!("{{\"mb\":{}}}", config.mb);
    let variants = [
        Metering::HOST,
        Metering {
            fuel: true,
            epochs: false,
        },
        Metering {
            fuel: false,
            epochs: true,
        },
        Metering {
            fuel: false,
            epochs: false,
        },
    ];
    let mut prepared = Vec::new();
    let mut expected: Option<String> = None;
    for metering in variants {
        let sandbox = Sandbox::with_metering(&SandboxConfig { concurrency: 1 }, metering)?;
        let p = sandbox.compile(bytes.clone()).await?;
        // Warm-up, and a check that every variant computes the same thing.
        let output = sandbox.bare_call(&p, "hash", &payload).await?;
        match &expected {
            None => expected = Some(output),
            Some(e) if *e != output => {
                bail!("sandboxes disagree on the hash: {e} vs {output} ({metering:?})")
            }
            Some(_) => {}
        }
        prepared.push((sandbox, p));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..config.repeat.max(1) {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (sandbox, p) = &prepared[i];
            let started = Instant::now();
            sandbox.bare_call(p, "hash", &payload).await?;
            times[i].push(ms(started.elapsed()));
        }
    }
    let [host, fuel_only, epochs_only, unmetered] =
        [0, 1, 2, 3].map(|i| median(std::mem::take(&mut times[i])));
    Ok(SandboxReport {
        mb: config.mb,
        repeat: config.repeat.max(1),
        host_ms: host,
        fuel_only_ms: fuel_only,
        epochs_only_ms: epochs_only,
        unmetered_ms: unmetered,
        metering_ratio: host / unmetered,
        fuel_ratio: host / epochs_only,
        epoch_ratio: host / fuel_only,
    })
}

// ---------------------------------------------------------------------------------------------
// Cold start

/// Configuration of the cold-start scenario.
#[derive(Debug, Clone)]
pub struct ColdStartConfig {
    pub repeat: usize,
    pub concurrency: usize,
    /// The `hello` guest.
    pub hello_wasm: PathBuf,
}

/// Medians over the repetitions, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStartReport {
    pub repeat: usize,
    /// `host::start` on a fresh data dir (creates the database and the dev key).
    pub fresh_start_ms: f64,
    /// `Engine::deploy` (compile, `definitions()`, insert).
    pub deploy_ms: f64,
    /// From the deploy call to the first run seen COMPLETED in the store.
    pub deploy_to_first_run_ms: f64,
    /// Bare wasmtime: compile the component and call `run` once, in an existing sandbox.
    pub bare_compile_and_call_ms: f64,
    /// `host::start` on the data dir of a stopped host.
    pub restart_ms: f64,
    /// From the start call to the first run seen COMPLETED (the component is compiled again on
    /// first use).
    pub restart_to_first_run_ms: f64,
    /// Bare wasmtime: create a sandbox, compile, call `run` once.
    pub bare_new_sandbox_compile_and_call_ms: f64,
}

impl ColdStartReport {
    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new(
                "cold-start",
                "host start, fresh data dir (ms)",
                format!("{:.1}", self.fresh_start_ms),
            ),
            Row::new(
                "cold-start",
                "deploy call (ms)",
                format!("{:.1}", self.deploy_ms),
            ),
            Row::new(
                "cold-start",
                "deploy → first run completed (ms)",
                format!("{:.1}", self.deploy_to_first_run_ms),
            )
            .baseline(
                format!("{:.1}", self.bare_compile_and_call_ms),
                self.deploy_to_first_run_ms / self.bare_compile_and_call_ms,
            ),
            Row::new(
                "cold-start",
                "host restart (ms)",
                format!("{:.1}", self.restart_ms),
            ),
            Row::new(
                "cold-start",
                "restart → first run completed (ms)",
                format!("{:.1}", self.restart_to_first_run_ms),
            )
            .baseline(
                format!("{:.1}", self.bare_new_sandbox_compile_and_call_ms),
                self.restart_to_first_run_ms / self.bare_new_sandbox_compile_and_call_ms,
            ),
        ]
    }
}

/// Deploy → first run on a fresh data dir, then restart → first run on the same dir; the
/// baselines compile and call the same component with bare wasmtime.
pub async fn cold_start(config: &ColdStartConfig) -> anyhow::Result<ColdStartReport> {
    let bytes = read_guest(&config.hello_wasm)?;
    let concurrency = config.concurrency.max(1);
    let payload = r#"{"name":"bench"}"#;
    let mut fresh_start = Vec::new();
    let mut deploy = Vec::new();
    let mut deploy_to_run = Vec::new();
    let mut restart = Vec::new();
    let mut restart_to_run = Vec::new();
    let mut bare_compile = Vec::new();
    let mut bare_new = Vec::new();
    for _ in 0..config.repeat.max(1) {
        let dir = TempDir::new("cold-start")?;

        let started = Instant::now();
        let host = start_host(dir.path(), concurrency, Vec::new()).await?;
        fresh_start.push(ms(started.elapsed()));
        let result = async {
            let (engine, env) = (&host.engine, &host.dev);
            let started = Instant::now();
            engine.deploy(env, bytes.clone()).await?;
            deploy.push(ms(started.elapsed()));
            let id = trigger(engine, env, "hello", payload).await?;
            wait_completed(engine.store(), &env.id, &id, Duration::from_millis(1)).await?;
            deploy_to_run.push(ms(started.elapsed()));
            anyhow::Ok(())
        }
        .await;
        host.shutdown().await?;
        result?;

        let started = Instant::now();
        let host = start_host(dir.path(), concurrency, Vec::new()).await?;
        restart.push(ms(started.elapsed()));
        let result = async {
            let (engine, env) = (&host.engine, &host.dev);
            let id = trigger(engine, env, "hello", payload).await?;
            wait_completed(engine.store(), &env.id, &id, Duration::from_millis(1)).await?;
            restart_to_run.push(ms(started.elapsed()));
            anyhow::Ok(())
        }
        .await;
        host.shutdown().await?;
        result?;

        let started = Instant::now();
        let sandbox = Sandbox::new(&SandboxConfig { concurrency })?;
        let created = started.elapsed();
        let started = Instant::now();
        let prepared = sandbox.compile(bytes.clone()).await?;
        sandbox.bare_call(&prepared, "hello", payload).await?;
        let compile_and_call = started.elapsed();
        bare_compile.push(ms(compile_and_call));
        bare_new.push(ms(created + compile_and_call));
    }
    Ok(ColdStartReport {
        repeat: config.repeat.max(1),
        fresh_start_ms: median(fresh_start),
        deploy_ms: median(deploy),
        deploy_to_first_run_ms: median(deploy_to_run),
        bare_compile_and_call_ms: median(bare_compile),
        restart_ms: median(restart),
        restart_to_first_run_ms: median(restart_to_run),
        bare_new_sandbox_compile_and_call_ms: median(bare_new),
    })
}

// ---------------------------------------------------------------------------------------------
// Queue scale

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
    fn rows(&self) -> Vec<Row> {
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
        let size = size.max(QUEUE_PROBE_RUNS * 2);
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

        // Fill; keep the id of the last run the drain must reach (runs leave in trigger order).
        let drain_last_index = QUEUE_PROBE_RUNS * 2 - 1;
        let mut drain_last = None;
        let started = Instant::now();
        let mut filled = 0;
        while filled < size {
            let batch = (size - filled).min(MAX_BATCH_ITEMS);
            let items = (0..batch).map(|_| noop_item("noop", "null")).collect();
            let inserted = engine.trigger_many(&env, items, false).await?;
            if (filled..filled + batch).contains(&drain_last_index) {
                drain_last = Some(inserted[drain_last_index - filled].run.id.clone());
            }
            filled += batch;
        }
        let fill_us = started.elapsed().as_secs_f64() * 1e6 / size as f64;
        let drain_last = drain_last.context("the backlog is too small to drain")?;

        // The claim alone, on the paused queue (the dispatcher leaves it alone meanwhile).
        let lane = Lane {
            environment_id: env.id.clone(),
            queue: "task/noop".into(),
            concurrency_key: None,
        };
        let started = Instant::now();
        let mut claimed = 0;
        while claimed < QUEUE_PROBE_RUNS {
            let got = engine
                .store()
                .claim_lanes(vec![(lane.clone(), QUEUE_CLAIM_BATCH)], engine.now())
                .await?;
            claimed += got.iter().map(Vec::len).sum::<usize>();
        }
        let claim_us = started.elapsed().as_secs_f64() * 1e6 / claimed as f64;

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
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let point = result?;
    stopped?;
    Ok(point)
}

// ---------------------------------------------------------------------------------------------
// Waits

/// Default runs the waits scenario checkpoints at once.
pub const DEFAULT_WAITING: usize = 10_000;
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
    fn rows(&self) -> Vec<Row> {
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

/// Resident memory of this process in MB (Linux; 0 elsewhere).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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
async fn wait_status(
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

// ---------------------------------------------------------------------------------------------
// Helpers

async fn start_host(
    dir: &Path,
    concurrency: usize,
    deploy: Vec<PathBuf>,
) -> anyhow::Result<RunningHost> {
    let mut config = HostConfig::new(dir.to_path_buf(), ([127, 0, 0, 1], 0).into());
    config.concurrency = concurrency;
    config.deploy = deploy;
    host::start(config).await
}

fn read_guest(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn noop_item(task: &str, payload: &str) -> TriggerItem {
    TriggerItem {
        task_id: task.to_owned(),
        payload: payload.to_owned(),
        options: TriggerOptions::default(),
    }
}

/// Triggers one run through the engine; returns its id.
async fn trigger(
    engine: &Arc<Engine>,
    env: &Environment,
    task: &str,
    payload: &str,
) -> anyhow::Result<String> {
    Ok(engine.trigger(env, noop_item(task, payload)).await?.run.id)
}

async fn load(store: &Store, env_id: &str, id: &str) -> anyhow::Result<Run> {
    store
        .run(env_id, id)
        .await?
        .with_context(|| format!("run {id} is not in the store"))
}

/// Polls the store until run `id` is COMPLETED; any other final status is an error.
async fn wait_completed(
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
async fn status_counts(store: &Store, env_id: &str) -> anyhow::Result<String> {
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

fn ms(d: Duration) -> f64 {
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// `12345.6` → `12,346`.
fn thousands(x: f64) -> String {
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
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(crate::model::new_id(&format!("kiln-bench-{what}")));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
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
    fn latency_percentiles_come_from_the_histogram() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_ms - 100.0).abs() < 0.1, "{p:?}");
        // Sub-millisecond samples keep their precision.
        let p = Percentiles::of(vec![0.25; 10]);
        assert!((p.p50_ms - 0.25).abs() < 0.001, "{p:?}");
    }

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
