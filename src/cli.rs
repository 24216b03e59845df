//! The command line: `kiln serve` runs the host; every other command is an HTTP client of a
//! running host's API (never SQL, never wasmtime).

mod env_vars;
mod queues;
mod schedules;
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use std::time::Duration;

use crate::host::{
    self, ADMIN_KEY_FILE, DEFAULT_ENVIRONMENT_CONCURRENCY, DEFAULT_MAX_COMPONENT_BYTES,
    DEFAULT_MEMORY_POOL_BYTES, DEV_KEY_FILE, HostConfig,
};
use crate::model::{DEFAULT_FUEL_BUDGET, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "A WebAssembly task host: deploy Wasm components, trigger runs, watch them complete"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: the API, the scheduler and the sandbox, with embedded SQLite.
    Serve(ServeArgs),
    /// Upload a `.wasm` component; it becomes the environment's newest version.
    Deploy {
        /// The component file (build guests with `cargo build --target wasm32-wasip2`).
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Trigger a run of a task; prints the run id.
    Trigger {
        /// Task id, as declared by the deployed component.
        task: String,
        /// JSON payload (default `null`); `-` reads it from standard input.
        payload: Option<String>,
        #[command(flatten)]
        options: Box<TriggerArgs>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Inspect and manage runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Cron schedules that trigger tasks: create, list, get, update, delete, activate,
    /// deactivate, and the time zones they can use.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Manage projects, environments and their secret keys (with the host's admin key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect queues, pause and resume them, override their concurrency limits.
    #[command(subcommand)]
    Queues(queues::QueuesCommand),
    /// Environments' concurrency limits (with the host's admin key).
    #[command(subcommand)]
    Envs(queues::EnvsCommand),
    /// Wait tokens: make, list, show, and complete them (runs waiting for one resume).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Environment variables tasks see (stored encrypted): list, get, set, rm, import a .env file.
    #[command(subcommand)]
    Env(env_vars::EnvCommand),
    /// Measure throughput, latency, metering and cold starts against baselines (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status (repeatable), e.g. FAILED.
        #[arg(long)]
        status: Vec<String>,
        /// Only runs of this task (repeatable).
        #[arg(long)]
        task: Vec<String>,
        /// Only runs with this tag (repeatable: any of them).
        #[arg(long)]
        tag: Vec<String>,
        /// How many runs to show (1–100).
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Continue after this run id (the `next` cursor of a previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a run: status, attempts, output or error.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a run that has not finished.
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a run's log lines.
    Logs {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a run as it changes (status, attempts, output) until it finishes.
    Watch {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Trigger a new run with the same task, payload and tags, on the latest version.
    Replay {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change when a DELAYED run starts.
    Reschedule {
        id: String,
        /// A duration from now (`30s`, `1h`) or an ISO 8601 date.
        #[arg(long)]
        delay: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add tags to a run.
    Tag {
        id: String,
        /// Tags to add (at most 10 on a run).
        #[arg(required = true)]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Trigger options, as in Trigger.dev's `options` (each is checked by the host).
#[derive(Debug, Args)]
struct TriggerArgs {
    /// Start no earlier than this: a duration (`30s`, `1h30m`) or an ISO 8601 date.
    #[arg(long)]
    delay: Option<String>,
    /// Expire the run if it has not started within this duration (`0` opts out of defaults).
    #[arg(long)]
    ttl: Option<String>,
    /// Seconds of head start in the queue.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<f64>,
    /// A repeat trigger with this key returns the existing run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// How long the idempotency key holds (default 30d).
    #[arg(long)]
    idempotency_key_ttl: Option<String>,
    /// Tag the run (repeatable, at most 10).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Attempts at most, overriding the task's retry policy.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Compute-time limit of an attempt, in seconds (at least 5).
    #[arg(long)]
    max_duration: Option<f64>,
    /// Machine preset, e.g. small-2x.
    #[arg(long)]
    machine: Option<String>,
    /// Run on this named queue.
    #[arg(long)]
    queue: Option<String>,
    /// Concurrency key (per-user queues).
    #[arg(long)]
    concurrency_key: Option<String>,
    /// Initial metadata: a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Run on this deployed version instead of the latest.
    #[arg(long)]
    lock_to_version: Option<String>,
}

impl TriggerArgs {
    /// The `options` object of the trigger request.
    fn to_json(&self) -> anyhow::Result<Value> {
        let mut o = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_owned(), v);
            }
        };
        put("delay", self.delay.clone().map(Value::from));
        put("ttl", self.ttl.clone().map(Value::from));
        put("priority", self.priority.map(Value::from));
        put(
            "idempotencyKey",
            self.idempotency_key.clone().map(Value::from),
        );
        put(
            "idempotencyKeyTTL",
            self.idempotency_key_ttl.clone().map(Value::from),
        );
        put(
            "tags",
            (!self.tags.is_empty()).then(|| Value::from(self.tags.clone())),
        );
        put("maxAttempts", self.max_attempts.map(Value::from));
        put("maxDuration", self.max_duration.map(Value::from));
        put("machine", self.machine.clone().map(Value::from));
        put(
            "queue",
            self.queue.clone().map(|q| serde_json::json!({ "name": q })),
        );
        put(
            "concurrencyKey",
            self.concurrency_key.clone().map(Value::from),
        );
        put(
            "lockToVersion",
            self.lock_to_version.clone().map(Value::from),
        );
        if let Some(m) = &self.metadata {
            let m: Value = serde_json::from_str(m).context("--metadata must be a JSON object")?;
            put("metadata", Some(m));
        }
        Ok(Value::Object(o))
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a secret key for an environment (creating the project and environment if new);
    /// prints the key once.
    Create {
        /// Project name, e.g. `acme`.
        #[arg(long, default_value = "default")]
        project: String,
        /// Environment name, e.g. `dev`, `staging`, `prod`.
        #[arg(long = "env")]
        environment: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List every key: id, project, environment, prefix, and whether it is revoked.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key: requests with it are refused at once.
    Revoke {
        /// The key's id (`key_…`, from `kiln keys list`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// URL of the kiln API.
    #[arg(long, env = "KILN_API_URL", default_value = "http://127.0.0.1:3030")]
    api_url: String,
    /// The host's admin key; default: the one in <data-dir>/admin.key.
    #[arg(long, env = "KILN_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Data dir of a local host, to find its admin key.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the SQLite database and the dev key live.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
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
    /// Largest component upload, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_COMPONENT_BYTES)]
    max_component_bytes: usize,
    /// Deploy this component to the dev environment at start unless the latest version already
    /// has the same bytes (repeatable).
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

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration; use forms like 30s, 15m, 1h30m, 2d"))
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// URL of the kiln API.
    #[arg(long, env = "KILN_API_URL", default_value = "http://127.0.0.1:3030")]
    api_url: String,
    /// Secret API key; default: the one in <data-dir>/dev.key.
    #[arg(long, env = "KILN_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Data dir of a local host, to find its dev key.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Deploy { file, client } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let c = Client::new(&client)?;
            let d = c
                .send(
                    c.post("/api/v1/deployments")
                        .header("content-type", "application/wasm")
                        .header("content-length", bytes.len())
                        .body(upload_with_progress(bytes)),
                )
                .await?;
            if client.json {
                return print_json(&d);
            }
            let tasks: Vec<&str> = d["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].as_str())
                .collect();
            println!(
                "deployed version {} with tasks [{}]",
                s(&d["version"]),
                tasks.join(", ")
            );
            Ok(())
        }
        Command::Trigger {
            task,
            payload,
            options,
            client,
        } => {
            let payload = match payload.as_deref() {
                None => Value::Null,
                Some("-") => {
                    let text = std::io::read_to_string(std::io::stdin())
                        .context("cannot read the payload from standard input")?;
                    parse_payload(&text)?
                }
                Some(text) => parse_payload(text)?,
            };
            let c = Client::new(&client)?;
            let path = format!("/api/v1/tasks/{}/trigger", encode(&task));
            let body = serde_json::json!({ "payload": payload, "options": options.to_json()? });
            let r = c.send(c.post(&path).json(&body)).await?;
            if client.json {
                return print_json(&r);
            }
            if r["isCached"] == true {
                eprintln!("an earlier run has this idempotency key; no new run was made");
            }
            println!("{}", s(&r["id"]));
            Ok(())
        }
        Command::Runs(cmd) => runs(cmd).await,
        Command::Schedules(cmd) => schedules::run(cmd).await,
        Command::Keys(cmd) => keys(cmd).await,
        Command::Queues(cmd) => queues::queues(cmd).await,
        Command::Envs(cmd) => queues::envs(cmd).await,
        Command::Tokens(cmd) => tokens::tokens(cmd).await,
        Command::Env(cmd) => env_vars::env(cmd).await,
        Command::Bench(args) => crate::bench::main(args).await,
    }
}

/// Components above this size report upload progress on stderr.
const PROGRESS_FROM_BYTES: usize = 4 << 20;

/// The request body of an upload: sent in chunks, reporting progress on stderr for a large
/// component, then saying that the host is compiling it (which takes a while for big ones).
fn upload_with_progress(bytes: Vec<u8>) -> reqwest::Body {
    const CHUNK: usize = 256 << 10;
    let total = bytes.len();
    if total < PROGRESS_FROM_BYTES {
        return reqwest::Body::from(bytes);
    }
    let mib = |n: usize| n as f64 / f64::from(1 << 20);
    eprintln!("uploading {:.1} MiB", mib(total));
    let chunks: Vec<bytes::Bytes> = bytes
        .chunks(CHUNK)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let mut sent = 0usize;
    let mut last_tenth = 0;
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        sent += chunk.len();
        let tenth = sent * 10 / total;
        if tenth > last_tenth {
            last_tenth = tenth;
            eprintln!(
                "  {:>3}% ({:.1} of {:.1} MiB)",
                tenth * 10,
                mib(sent),
                mib(total)
            );
        }
        if sent == total {
            eprintln!("uploaded; the host is compiling and checking the component…");
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

fn parse_payload(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| {
        format!("the payload is not valid JSON: {text:?} (quote it for the shell, e.g. '{{\"name\":\"Ada\"}}')")
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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

async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let show = |k: &Value| {
        let revoked = k["revokedAt"]
            .as_str()
            .map(|r| format!("  revoked {r}"))
            .unwrap_or_default();
        println!(
            "{}  {}/{}  {}…  created {}{revoked}",
            s(&k["id"]),
            s(&k["project"]),
            s(&k["environment"]),
            s(&k["prefix"]),
            s(&k["createdAt"])
        );
    };
    match cmd {
        KeysCommand::Create {
            project,
            environment,
            admin,
        } => {
            let c = Client::admin(&admin)?;
            let body = serde_json::json!({ "project": project, "environment": environment });
            let k = c.send(c.post("/api/v1/admin/keys").json(&body)).await?;
            if admin.json {
                return print_json(&k);
            }
            println!("{}", s(&k["key"]));
            eprintln!(
                "secret key {} for {}/{}: shown once, store it now",
                s(&k["id"]),
                s(&k["project"]),
                s(&k["environment"])
            );
        }
        KeysCommand::List { admin } => {
            let c = Client::admin(&admin)?;
            let list = c.send(c.get("/api/v1/admin/keys")).await?;
            if admin.json {
                return print_json(&list);
            }
            list["data"].as_array().into_iter().flatten().for_each(show);
        }
        KeysCommand::Revoke { id, admin } => {
            let c = Client::admin(&admin)?;
            let k = c
                .send(c.post(&format!("/api/v1/admin/keys/{}/revoke", encode(&id))))
                .await?;
            if admin.json {
                return print_json(&k);
            }
            show(&k);
        }
    }
    Ok(())
}

/// The `data:` payloads of a Server-Sent Events response, one per event.
fn sse_data(
    response: reqwest::Response,
) -> impl futures_util::Stream<Item = anyhow::Result<String>> {
    futures_util::stream::unfold(
        (response.bytes_stream(), String::new()),
        |(mut body, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    return Some((Ok(data), (body, buffer)));
                }
                match futures_util::StreamExt::next(&mut body).await {
                    Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Some(Err(e)) => {
                        return Some((
                            Err(anyhow::Error::new(e).context("the stream broke")),
                            (body, buffer),
                        ));
                    }
                    None => return None,
                }
            }
        },
    )
}

/// Prints a line of the host's startup banner. A closed stdout (`kiln serve | head -1`) must not
/// stop the host, so write errors are ignored.
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn runs(cmd: RunsCommand) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::List {
            status,
            task,
            tag,
            limit,
            after,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query = vec![("page[size]".to_owned(), limit.to_string())];
            if !status.is_empty() {
                query.push(("filter[status]".into(), status.join(",").to_uppercase()));
            }
            if !task.is_empty() {
                query.push(("filter[taskIdentifier]".into(), task.join(",")));
            }
            if !tag.is_empty() {
                query.push(("filter[tag]".into(), tag.join(",")));
            }
            if let Some(after) = after {
                query.push(("page[after]".into(), after));
            }
            let page = c.send(c.get("/api/v1/runs").query(&query)).await?;
            if client.json {
                return print_json(&page);
            }
            let runs = page["data"].as_array().cloned().unwrap_or_default();
            if runs.is_empty() {
                println!("no runs");
            }
            for r in &runs {
                println!(
                    "{}  {:<15} {:<20} {}",
                    s(&r["id"]),
                    s(&r["status"]),
                    s(&r["taskIdentifier"]),
                    s(&r["createdAt"])
                );
            }
            if let Some(next) = page["pagination"]["next"].as_str() {
                println!("more: kiln runs list --after {next}");
            }
            Ok(())
        }
        RunsCommand::Get { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.get(&format!("/api/v3/runs/{}", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!(
                "{}  {}  {}",
                s(&r["id"]),
                s(&r["taskIdentifier"]),
                s(&r["status"])
            );
            println!(
                "  version   {}",
                r["version"].as_str().unwrap_or("(not started)")
            );
            println!("  created   {}", s(&r["createdAt"]));
            if let Some(f) = r["finishedAt"].as_str() {
                println!("  finished  {f}");
            }
            if let Some(d) = r["delayedUntil"].as_str() {
                println!("  delayed   until {d}");
            }
            if let Some(t) = r["ttl"].as_str() {
                println!("  ttl       {t}");
            }
            if let Some(tags) = r["tags"].as_array().filter(|t| !t.is_empty()) {
                let tags: Vec<String> = tags.iter().map(s).collect();
                println!("  tags      {}", tags.join(", "));
            }
            if let Some(k) = r["idempotencyKey"].as_str() {
                println!("  idem. key {k}");
            }
            if let Some(m) = r.get("metadata") {
                println!("  metadata  {m}");
            }
            println!("  attempts  {}", r["attemptCount"]);
            println!(
                "  usage     {} fuel, {} ms",
                r["usage"]["fuel"], r["usage"]["computeMs"]
            );
            println!("  payload   {}", r["payload"]);
            if let Some(output) = r.get("output") {
                println!("  output    {output}");
            }
            if let Some(e) = r.get("error") {
                println!("  error     {}: {}", s(&e["name"]), s(&e["message"]));
            }
            for a in r["attempts"].as_array().into_iter().flatten() {
                let err = a
                    .get("error")
                    .map(|e| format!(" — {}", s(&e["message"])))
                    .unwrap_or_default();
                println!("  attempt {} {}{err}", a["number"], s(&a["status"]));
            }
            // The first log lines, so one command shows what happened; `runs logs` has them all.
            const SHOWN_LOG_LINES: usize = 20;
            let path = format!("/api/v1/runs/{}/logs", encode(&id));
            let logs = c.send(c.get(&path)).await?;
            let lines = logs["data"].as_array().cloned().unwrap_or_default();
            if !lines.is_empty() {
                println!("  logs");
            }
            for l in lines.iter().take(SHOWN_LOG_LINES) {
                println!(
                    "    #{} {:<5} {}",
                    l["attempt"],
                    s(&l["level"]),
                    s(&l["message"])
                );
            }
            if lines.len() > SHOWN_LOG_LINES {
                println!("    … more: kiln runs logs {id}");
            }
            Ok(())
        }
        RunsCommand::Cancel { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.post(&format!("/api/v2/runs/{}/cancel", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            match r["message"].as_str() {
                Some(m) => println!("{m}"),
                None => println!("canceled {}", s(&r["id"])),
            }
            Ok(())
        }
        RunsCommand::Replay { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.post(&format!("/api/v1/runs/{}/replay", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!("{}", s(&r["id"]));
            Ok(())
        }
        RunsCommand::Reschedule { id, delay, client } => {
            let c = Client::new(&client)?;
            let path = format!("/api/v1/runs/{}/reschedule", encode(&id));
            let r = c
                .send(c.post(&path).json(&serde_json::json!({ "delay": delay })))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!("{} now starts at {}", s(&r["id"]), s(&r["delayedUntil"]));
            Ok(())
        }
        RunsCommand::Tag { id, tags, client } => {
            let c = Client::new(&client)?;
            let path = format!("/api/v1/runs/{}/tags", encode(&id));
            let r = c
                .send(c.post(&path).json(&serde_json::json!({ "tags": tags })))
                .await?;
            if client.json {
                return print_json(&r);
            }
            let all: Vec<String> = r["tags"].as_array().into_iter().flatten().map(s).collect();
            println!("tags: {}", all.join(", "));
            Ok(())
        }
        RunsCommand::Watch { id, client } => {
            let c = Client::new(&client)?;
            let path = format!("/realtime/v1/runs/{}", encode(&id));
            let response = c.open(c.get(&path)).await?;
            let mut last = String::new();
            let mut events = Box::pin(sse_data(response));
            while let Some(data) = futures_util::StreamExt::next(&mut events).await {
                let run: Value = serde_json::from_str(&data?)?;
                if client.json {
                    println!("{run}");
                    continue;
                }
                let line = format!(
                    "{}  attempt {}",
                    s(&run["status"]),
                    run["attemptCount"].as_u64().unwrap_or(0)
                );
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if run["isCompleted"] == true {
                    if let Some(output) = run.get("output") {
                        println!("output: {output}");
                    }
                    if let Some(error) = run.get("error") {
                        println!("error: {}", s(&error["message"]));
                    }
                }
            }
            Ok(())
        }
        RunsCommand::Logs { id, client } => {
            let c = Client::new(&client)?;
            let mut after = 0i64;
            let mut all = Vec::new();
            loop {
                let page = c
                    .send(
                        c.get(&format!("/api/v1/runs/{}/logs", encode(&id)))
                            .query(&[("after", after)]),
                    )
                    .await?;
                let lines = page["data"].as_array().cloned().unwrap_or_default();
                if !client.json {
                    for l in &lines {
                        let attrs = l
                            .get("attributes")
                            .map(|a| format!(" {a}"))
                            .unwrap_or_default();
                        println!(
                            "{} #{} {:<5} {}{attrs}",
                            s(&l["at"]),
                            l["attempt"],
                            s(&l["level"]),
                            s(&l["message"])
                        );
                    }
                }
                all.extend(lines);
                match page["next"].as_i64() {
                    Some(next) => after = next,
                    None => break,
                }
            }
            if client.json {
                return print_json(&Value::Array(all));
            }
            Ok(())
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Reads a key file `kiln serve` wrote into its data dir.
fn read_key(data_dir: &Path, file: &str, how: &str) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no key: {how}, or run from the directory where `kiln serve` created {}",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let key = match &args.secret_key {
            Some(k) => k.clone(),
            None => read_key(
                &args.data_dir,
                DEV_KEY_FILE,
                "set KILN_SECRET_KEY or --secret-key",
            )?,
        };
        Ok(Client::with_key(&args.api_url, key))
    }

    fn admin(args: &AdminArgs) -> anyhow::Result<Client> {
        let key = match &args.admin_key {
            Some(k) => k.clone(),
            None => read_key(
                &args.data_dir,
                ADMIN_KEY_FILE,
                "set KILN_ADMIN_KEY or --admin-key",
            )?,
        };
        Ok(Client::with_key(&args.api_url, key))
    }

    fn with_key(api_url: &str, key: String) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: api_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends a request and returns the response if it succeeded (for streams); errors as `send`.
    async fn open(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!(
                "cannot reach kiln at {}: start it with `kiln serve` (or set KILN_API_URL to where it runs)",
                self.base
            ),
            Err(e) => return Err(e).context(format!("request to {} failed", self.base)),
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} ({status})")
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!(
                "cannot reach kiln at {}: start it with `kiln serve` (or set KILN_API_URL to where it runs)",
                self.base
            ),
            Err(e) => return Err(e).context(format!("request to {} failed", self.base)),
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the response failed")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = body["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }
}
