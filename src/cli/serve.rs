//! `kiln serve`: the host's flags and their duration parsers, and the start-up banner. It starts
//! `host` and serves until a signal; it is the one command that is not a client of the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::host::{
    self, DEFAULT_ENVIRONMENT_CONCURRENCY, DEFAULT_MAX_COMPONENT_BYTES, DEFAULT_MEMORY_POOL_BYTES,
    HostConfig,
};
use crate::model::{DEFAULT_FUEL_BUDGET, parse_duration};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Where the SQLite database (unless --database), the secrets key, the key files and the
    /// compiled components live.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
    /// Keep runs in this PostgreSQL database (`postgres://USER@HOST:PORT/DATABASE`) instead of
    /// SQLite in the data dir; it is migrated at start. Several hosts may share one database,
    /// each with a data dir of its own and the same secrets key.
    #[arg(long, env = "KILN_DATABASE_URL")]
    database: Option<String>,
    /// With --database: how long the runs this host started stay its own after it last renewed
    /// its lease (it renews every third of it). Once a host's lease lapsed (the host was killed
    /// or cut off from the database), another host takes its runs over; a host cut off stops
    /// writing before that.
    #[arg(long, env = "KILN_HOST_LEASE", default_value = "15s", value_parser = parse_lease)]
    host_lease: Duration,
    /// The secrets key that seals environment variables (default: secrets.key in the data dir,
    /// made on first start). Hosts sharing a database must all use the first host's key.
    #[arg(long, env = "KILN_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:3030")]
    listen: SocketAddr,
    /// Attempts executing at once, over all environments.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Runs one environment may hold at once (dequeued or executing) unless the admin sets
    /// another limit for it (`kiln envs limit`); a queue's limit never exceeds it.
    #[arg(long, default_value_t = DEFAULT_ENVIRONMENT_CONCURRENCY)]
    environment_concurrency: u32,
    /// Largest component upload, in bytes (each component of a deploy of several, too).
    #[arg(long, default_value_t = DEFAULT_MAX_COMPONENT_BYTES)]
    max_component_bytes: usize,
    /// Largest deploy of several components, in bytes together (never below
    /// --max-component-bytes).
    #[arg(long, default_value_t = crate::deploy::DEFAULT_MAX_DEPLOY_BYTES)]
    max_deploy_bytes: usize,
    /// Machine code of compiled components kept in memory, in MiB; past it the least recently
    /// used are dropped and load again from their artifact on disk when a run needs them.
    #[arg(long, default_value_t = 1024)]
    compiled_cache_mib: usize,
    /// Compile every component with the optimizing compiler only. By default a component of
    /// 4 MiB or more (a TypeScript or Python one) is compiled first with wasmtime's baseline
    /// compiler, about 8× faster into code 1.4–2.8× slower, so its deploy and first runs need not
    /// wait; the optimizing compiler's code replaces it in the background.
    #[arg(long)]
    no_quick_tier: bool,
    /// MiB of each guest memory the instance pool keeps resident between instances (zeroed in
    /// place instead of returned to the kernel, which costs every core a TLB flush); uses up to
    /// that much RSS per concurrency slot.
    #[arg(long, default_value_t = 8)]
    pool_keep_resident_mib: usize,
    /// Slot resets the pool queues before returning their pages to the kernel together (above 1,
    /// the freed memory stays resident meanwhile, so RSS may pass the memory pool).
    #[arg(long, default_value_t = 1)]
    pool_decommit_batch: usize,
    /// Deploy this component to the dev environment at start (repeatable: all the files given
    /// become one version, each task run by the component that defines it), unless the latest
    /// version already has the same components in the same order.
    #[arg(long)]
    deploy: Vec<PathBuf>,
    /// TTL of runs whose trigger and task set none, e.g. `10m` (default: none).
    #[arg(long, value_parser = duration_arg)]
    default_ttl: Option<Duration>,
    /// Compute-time limit of attempts whose trigger and task set none, e.g. `1h` (at least 5s;
    /// default: none).
    #[arg(long, value_parser = max_duration_arg)]
    default_max_duration: Option<Duration>,
    /// Fuel budget of one attempt on small-1x (bigger machines get more, by vCPU); a runaway loop
    /// ends as FUEL_EXHAUSTED when it is used up.
    #[arg(long, default_value_t = DEFAULT_FUEL_BUDGET)]
    fuel_budget: u64,
    /// Guest memory lent out at once, in MiB: an attempt starts only when its machine's memory
    /// fits (small-1x: 512 MiB).
    #[arg(long, default_value_t = DEFAULT_MEMORY_POOL_BYTES >> 20)]
    memory_pool_mib: u64,
    /// Waits in a task up to this long sleep in place and keep the run's slot; longer ones
    /// checkpoint the run (no instance, no slot) and resume it when the time comes.
    /// (Milliseconds are allowed here, e.g. `500ms`.)
    #[arg(long, value_parser = wait_threshold_arg, default_value = "5s")]
    wait_threshold: Duration,
    /// Outbound HTTP requests one attempt may send.
    #[arg(long, default_value_t = 100)]
    http_max_requests: u32,
    /// Largest HTTP response body a task may receive, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    http_max_response_bytes: usize,
    /// Longest an HTTP request may take, from sending it to having its whole response
    /// (milliseconds are allowed, e.g. `500ms`).
    #[arg(long, value_parser = wait_threshold_arg, default_value = "60s")]
    http_timeout: Duration,
    /// Longest wait for an HTTP connection.
    #[arg(long, value_parser = wait_threshold_arg, default_value = "10s")]
    http_connect_timeout: Duration,
    /// MiB a run may write to its scratch directory `/tmp` (default: its machine's memory).
    #[arg(long)]
    scratch_mib: Option<u64>,
    /// The API's base URL as clients reach it (behind a proxy, say), for the callback URLs of
    /// wait tokens; default: http://<listen address>.
    #[arg(long, env = "KILN_PUBLIC_URL")]
    public_url: Option<String>,
}

fn max_duration_arg(text: &str) -> Result<Duration, String> {
    let d = duration_arg(text)?;
    if d < Duration::from_secs(5) {
        return Err("the maximum duration must be at least 5s".into());
    }
    Ok(d)
}

fn wait_threshold_arg(text: &str) -> Result<Duration, String> {
    match text.strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(Duration::from_millis(ms)),
        _ => duration_arg(text),
    }
}

/// A lease: seconds (`15`) or a duration (`15s`, `1m`, `1500ms`), at least a second.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => wait_threshold_arg(text)?,
    };
    if lease < Duration::from_secs(1) {
        return Err(format!(
            "`{text}` is too short for a lease; give at least 1s (hosts renew every third of it)"
        ));
    }
    Ok(lease)
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration; use forms like 30s, 15m, 1h30m, 2d"))
}

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "kiln=info".into()),
        )
        .init();
    let running = host::start(HostConfig {
        concurrency: args.concurrency,
        environment_concurrency: args.environment_concurrency,
        max_component_bytes: args.max_component_bytes,
        max_deploy_bytes: args.max_deploy_bytes,
        compiled_cache_bytes: args.compiled_cache_mib.saturating_mul(1 << 20),
        quick_tier: !args.no_quick_tier,
        pool: crate::sandbox::PoolTuning {
            memory_keep_resident: args.pool_keep_resident_mib.saturating_mul(1 << 20),
            decommit_batch: args.pool_decommit_batch,
            ..crate::sandbox::PoolTuning::default()
        },
        deploy: args.deploy,
        default_ttl: args.default_ttl,
        default_max_duration: args.default_max_duration,
        fuel_budget: args.fuel_budget,
        memory_pool_bytes: args.memory_pool_mib.saturating_mul(1 << 20),
        wait_threshold: args.wait_threshold,
        public_url: args.public_url,
        http_limits: crate::sandbox::http::HttpLimits {
            max_requests: args.http_max_requests,
            max_response_bytes: args.http_max_response_bytes,
            connect_timeout: args.http_connect_timeout,
            total_timeout: args.http_timeout,
        },
        scratch_bytes: args.scratch_mib.map(|m| m.saturating_mul(1 << 20)),
        database: args.database.clone(),
        host_lease: args.host_lease,
        secrets_key_file: args.secrets_key_file.clone(),
        ..HostConfig::new(args.data_dir.clone(), args.listen)
    })
    .await?;
    say(format!("kiln listening on http://{}", running.addr));
    match &running.new_key {
        Some(_) => say(format!(
            "created the dev environment's secret key in {}",
            running.key_file.display()
        )),
        None => say(format!("dev secret key: {}", running.key_file.display())),
    }
    say(format!(
        "dashboard: http://{}/dashboard/ (sign in with the key in {})",
        running.addr,
        running.key_file.display()
    ));
    for (file, version, tasks) in &running.deployed {
        say(format!(
            "deployed {} as version {version} with tasks [{}]",
            file.display(),
            tasks.join(", ")
        ));
    }
    if let Some((_, _, tasks)) = running.deployed.first()
        && let Some(task) = tasks.first()
    {
        let hint = if running.addr.to_string() == "127.0.0.1:3030" {
            String::new()
        } else {
            format!("KILN_API_URL=http://{} ", running.addr)
        };
        say(format!(
            "try it:  {hint}kiln trigger {task} '{{\"name\":\"Ada\"}}'   then   {hint}kiln runs get <run id>"
        ));
    }
    running.serve_until_signal().await
}

/// Prints a line of the host's startup banner. A closed stdout (`kiln serve | head -1`) must not
/// stop the host, so write errors are ignored.
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
