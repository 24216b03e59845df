//! The cold-start scenario: deploy → first run on a fresh data dir and restart → first run,
//! against bare wasmtime compiling (or loading the precompiled artifact of) the same component
//! and calling it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::Row;
use super::util::{TempDir, median, ms, read_guest, start_host, trigger, wait_completed};
use crate::sandbox::{Sandbox, SandboxConfig};

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
    /// From the start call to the first run seen COMPLETED (the host loads the artifact it
    /// compiled at deploy).
    pub restart_to_first_run_ms: f64,
    /// Bare wasmtime: create a sandbox, compile, call `run` once.
    pub bare_new_sandbox_compile_and_call_ms: f64,
    /// Bare wasmtime: create a sandbox, load the precompiled artifact from a file, call `run`
    /// once (what a restarted host has to do, without its database).
    pub bare_new_sandbox_load_and_call_ms: f64,
}

impl ColdStartReport {
    pub(super) fn rows(&self) -> Vec<Row> {
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
                format!("{:.1}", self.bare_new_sandbox_load_and_call_ms),
                self.restart_to_first_run_ms / self.bare_new_sandbox_load_and_call_ms,
            ),
            Row::new(
                "cold-start",
                "bare: new sandbox, compile, call (ms)",
                format!("{:.1}", self.bare_new_sandbox_compile_and_call_ms),
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
    let mut bare_load = Vec::new();
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
        let sandbox = Sandbox::new(&SandboxConfig::new(concurrency))?;
        let created = started.elapsed();
        let started = Instant::now();
        let prepared = sandbox.compile(bytes.clone()).await?;
        sandbox.bare_call(&prepared, "hello", payload).await?;
        let compile_and_call = started.elapsed();
        bare_compile.push(ms(compile_and_call));
        bare_new.push(ms(created + compile_and_call));

        let artifact = dir.path().join("bare-artifact");
        std::fs::write(&artifact, sandbox.artifact(&prepared)?)?;
        drop(sandbox);
        let started = Instant::now();
        let sandbox = Sandbox::new(&SandboxConfig::new(concurrency))?;
        let loaded = sandbox.load_artifact(&artifact)?;
        sandbox.bare_call(&loaded, "hello", payload).await?;
        bare_load.push(ms(started.elapsed()));
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
        bare_new_sandbox_load_and_call_ms: median(bare_load),
    })
}
