//! The command line: `kiln serve` runs the host; every other command is an HTTP client of a
//! running host's API (never SQL, never wasmtime). This file is only clap's top level and the
//! dispatch to the commands, each of which has a file of its own.

mod client;
mod deploy;
mod env_vars;
mod keys;
mod queues;
mod runs;
mod schedules;
mod serve;
mod tokens;
mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::ClientArgs;
use keys::KeysCommand;
use runs::RunsCommand;
use serve::ServeArgs;
use trigger::TriggerArgs;

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
    /// Upload `.wasm` components; together they become the environment's newest version, which
    /// replaces the whole task set (each task is run by the component that defines it; a task id
    /// in two components is refused). The host compiles them in the background; this follows
    /// its progress and ends when the version is stored or refused.
    Deploy {
        /// The component files (build guests with `cargo build --target wasm32-wasip2`, or a
        /// TypeScript or Python project with its SDK's build command).
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
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

/// Entry point of the binary.
/// With `RUST_BACKTRACE` set, std captures a backtrace for every error a library makes, and
/// wasmtime makes one each time a store is dropped: that alone cost a tenth of a host's CPU.
/// Panics keep their backtraces (`RUST_BACKTRACE` governs those); libraries' errors do not,
/// unless `RUST_LIB_BACKTRACE` asks for them.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before the runtime or any other thread exists, so
        // nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0");
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_library_backtraces();
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
        Command::Serve(args) => serve::serve(args).await,
        Command::Deploy { files, client } => deploy::deploy(files, client).await,
        Command::Trigger {
            task,
            payload,
            options,
            client,
        } => trigger::trigger(task, payload, &options, client).await,
        Command::Runs(cmd) => runs::runs(cmd).await,
        Command::Schedules(cmd) => schedules::run(cmd).await,
        Command::Keys(cmd) => keys::keys(cmd).await,
        Command::Queues(cmd) => queues::queues(cmd).await,
        Command::Envs(cmd) => queues::envs(cmd).await,
        Command::Tokens(cmd) => tokens::tokens(cmd).await,
        Command::Env(cmd) => env_vars::env(cmd).await,
        Command::Bench(args) => crate::bench::main(args).await,
    }
}
