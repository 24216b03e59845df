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

mod backends;
mod cold_start;
mod languages;
mod latency;
mod queue_scale;
mod report;
mod sandbox;
mod throughput;
mod util;
mod waits;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub use backends::{BackendReport, BackendsConfig, BackendsReport, backends};
pub use cold_start::{ColdStartConfig, ColdStartReport, cold_start};
pub use languages::{
    DEFAULT_JS_WASM, DEFAULT_PYTHON_WASM, LanguageComponent, LanguageReport, LanguagesConfig,
    LanguagesReport, languages,
};
pub use latency::{
    DEFAULT_LATENCY_LOAD, LatencyConfig, LatencyReport, LatencyStats, Percentiles, latency,
};
pub use queue_scale::{
    DEFAULT_QUEUE_SIZES, QueueScaleConfig, QueueScalePoint, QueueScaleReport, queue_scale,
};
pub use report::{MachineInfo, Results, Row};
pub use sandbox::{SandboxBenchConfig, SandboxReport, sandbox};
pub use throughput::{ThroughputConfig, ThroughputReport, throughput};
pub use waits::{DEFAULT_WAITING, WaitsConfig, WaitsReport, waits};

use report::render;

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
    /// A Rust, a TypeScript and a Python component: deploy, instantiate, warm run, journal and
    /// replay of a wait.
    Languages,
    /// Throughput and trigger → start through a host on SQLite vs one on PostgreSQL (needs
    /// --database; each PostgreSQL measurement on a new database made on that server).
    Backends,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Sandbox,
        Scenario::ColdStart,
        Scenario::Queue,
        Scenario::Waits,
        Scenario::Languages,
        Scenario::Backends,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Sandbox => "sandbox",
            Scenario::ColdStart => "cold-start",
            Scenario::Queue => "queue",
            Scenario::Waits => "waits",
            Scenario::Languages => "languages",
            Scenario::Backends => "backends",
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
  cold-start  deploy → first run COMPLETED on a fresh data dir vs compiling and calling the
              component with bare wasmtime; host restart → first run vs a new bare sandbox
              loading the precompiled artifact from a file and calling it.
  queue       for each backlog (--queue-sizes, default 1k, 100k, 1M): fill a paused queue with
              Engine::trigger_many, time the store's lane claim (the dispatcher's own call) over
              1,000 runs in claims of 50, top the backlog up to its size again, then resume and
              time the dispatcher draining 1,000 runs to COMPLETED, then stop the host and time
              its restart with the backlog still queued. Reported per run and as a ratio to the
              smallest backlog (flat = 1×).
  waits       --waiting N runs (default 100,000) of `wait` checkpointed on a one-hour wait (the
              host's clock is a manual one): host RSS before and with them waiting, then the clock
              moves and all resume to COMPLETED (runs/s). Then, one run at a time, a run that
              hashes 4 MiB before its wait: journal bytes per wait, trigger → WAITING, clock move →
              COMPLETED, and the replay's compute time ÷ the original execution's.
  languages   the Rust `hello` guest and the TypeScript and Python examples (--js-wasm,
              --python-wasm; a language not built is reported missing): Engine::deploy vs bare
              compile, instantiation, a warm `hello` trigger → COMPLETED vs a bare instantiate+call,
              and a 6 s wait: journal bytes at the checkpoint (and what the same entries took
              before clock reads were stored compactly), trigger → WAITING, resume → COMPLETED,
              replay compute ÷ first execution.
  backends    with --database: the throughput scenario's N no-op runs and the latency scenario's
              in-process trigger → start, each through a host on SQLite and through a host on
              PostgreSQL (same guest, concurrency and runs), reported PostgreSQL ÷ SQLite with
              each store's durability. Every PostgreSQL measurement runs on a new database
              (kiln_bench_<ulid>) made through the --database URL's server and dropped after, so
              its user must be able to create databases. Run only when --database is given.

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
    /// Runs the waits scenario checkpoints at once (default 100000).
    #[arg(long, value_name = "N")]
    pub waiting: Option<usize>,
    /// Backlogs of the queue scenario (default: 1000, 100000 and 1000000).
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub queue_sizes: Vec<usize>,
    /// The TypeScript example's component, for the languages scenario.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_JS_WASM)]
    pub js_wasm: PathBuf,
    /// The Python example's component, for the languages scenario.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PYTHON_WASM)]
    pub python_wasm: PathBuf,
    /// Directory holding bench.wasm and hello.wasm.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_GUEST_DIR)]
    pub guest_dir: PathBuf,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// MiB of each guest memory the pool keeps resident between instances (as `serve
    /// --pool-keep-resident-mib`; the host and its baselines both use it).
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub pool_keep_resident_mib: usize,
    /// KiB of each table kept resident between instances.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub pool_table_keep_resident_kib: usize,
    /// Slot resets queued before their pages go back together (as `serve --pool-decommit-batch`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub pool_decommit_batch: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A database on the PostgreSQL server the backends scenario measures
    /// (`postgres://USER@HOST:PORT/DATABASE`, its user able to create databases); the scenario
    /// runs only when this is given.
    #[arg(long, value_name = "URL", env = "KILN_BENCH_DATABASE")]
    pub database: Option<String>,
}

/// Runs `kiln bench`.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    util::set_pool_tuning(crate::sandbox::PoolTuning {
        memory_keep_resident: args.pool_keep_resident_mib.saturating_mul(1 << 20),
        table_keep_resident: args.pool_table_keep_resident_kib.saturating_mul(1 << 10),
        decommit_batch: args.pool_decommit_batch,
    });
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this kiln is a debug build; its numbers are meaningless. Use ./scripts/bench or `cargo run --release -- bench`"
        );
    }
    if args.scenarios.contains(&Scenario::Backends) && args.database.is_none() {
        bail!(
            "the backends scenario needs a PostgreSQL server: pass --database postgres://USER@HOST:PORT/DATABASE (or set KILN_BENCH_DATABASE)"
        );
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL
            .into_iter()
            .filter(|s| *s != Scenario::Backends || args.database.is_some())
            .collect()
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
        command: command_line(args.database.as_deref()),
        throughput: None,
        latency: None,
        sandbox: None,
        cold_start: None,
        queue: None,
        waits: None,
        languages: None,
        backends: None,
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
                // Half of the throughput just measured, if it was (the "50 % of max").
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
            Scenario::Languages => {
                let r = languages(&LanguagesConfig {
                    repeat: args.repeat.unwrap_or(DEFAULT_COLD_START_REPEAT),
                    concurrency,
                    components: LanguageComponent::all(
                        &args.guest_dir,
                        args.js_wasm.clone(),
                        args.python_wasm.clone(),
                    ),
                })
                .await
                .context("the languages scenario failed")?;
                results.rows.extend(r.rows());
                results.languages = Some(r);
            }
            Scenario::Backends => {
                let r = backends(&BackendsConfig {
                    runs: args.runs.unwrap_or(DEFAULT_THROUGHPUT_RUNS),
                    latency_runs: args.runs.unwrap_or(DEFAULT_LATENCY_RUNS),
                    concurrency,
                    bench_wasm: bench_wasm.clone(),
                    database: args.database.clone().context("checked above")?,
                })
                .await
                .context("the backends scenario failed")?;
                results.rows.extend(r.rows());
                results.backends = Some(r);
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

/// This process's command line, a --database URL's password left out.
fn command_line(database: Option<&str>) -> String {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match database {
        Some(url) => command.replace(url, &backends::without_password(url)),
        None => command,
    }
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
