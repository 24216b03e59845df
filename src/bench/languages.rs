//! The languages scenario: the same four costs for a task component written in Rust, TypeScript
//! and Python — deploy, instantiate, a warm run, and a checkpointed wait's journal and replay —
//! each beside bare wasmtime doing the same with the same component, in one process.
//!
//! The Rust component is `hello` from the guest directory (its `hello` and `wait` tasks); the
//! TypeScript and Python ones are the examples (`examples/js`, `examples/python`) built with their
//! SDKs, whose `hello` and `nap` tasks do the same. A language whose component was not built is
//! reported as missing, with the command that builds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::Row;
use super::util::{POLL, TempDir, median, ms, pool_tuning, trigger, wait_completed};
use super::waits::wait_status;
use crate::host::{self, HostConfig};
use crate::model::RunStatus;
use crate::sandbox::{Sandbox, SandboxConfig, journal};

/// Where `kiln bench` looks for the TypeScript example's component by default.
pub const DEFAULT_JS_WASM: &str = "examples/js/dist/tasks.wasm";
/// Where `kiln bench` looks for the Python example's component by default.
pub const DEFAULT_PYTHON_WASM: &str = "examples/python/dist/app.wasm";

/// One language's component and how its tasks are called.
#[derive(Debug, Clone)]
pub struct LanguageComponent {
    pub language: &'static str,
    pub wasm: PathBuf,
    /// How to build it, for the message when it is missing.
    pub build: &'static str,
    /// A task that waits long enough to be checkpointed, and its payload.
    pub wait_task: &'static str,
    pub wait_payload: &'static str,
}

impl LanguageComponent {
    /// The three languages' components: Rust's from the guest directory, the others at the
    /// paths given.
    pub fn all(guest_dir: &Path, js: PathBuf, python: PathBuf) -> Vec<LanguageComponent> {
        vec![
            LanguageComponent {
                language: "Rust",
                wasm: guest_dir.join("hello.wasm"),
                build: "(cd guest-examples && cargo build --release --target wasm32-wasip2)",
                wait_task: "wait",
                wait_payload: r#"{"ms":6000}"#,
            },
            LanguageComponent {
                language: "TypeScript",
                wasm: js,
                build: "(cd examples/js && npm ci && npm run build)",
                wait_task: "nap",
                wait_payload: r#"{"seconds":6}"#,
            },
            LanguageComponent {
                language: "Python",
                wasm: python,
                build: "(cd examples/python && python3 -m kiln_sdk build app.py -o dist/app.wasm), with the SDK installed as sdks/python/README.md says",
                wait_task: "nap",
                wait_payload: r#"{"seconds":6}"#,
            },
        ]
    }
}

#[derive(Debug, Clone)]
pub struct LanguagesConfig {
    pub repeat: usize,
    pub concurrency: usize,
    pub components: Vec<LanguageComponent>,
}

/// One language's numbers (medians, in milliseconds), or why it is missing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LanguageReport {
    pub language: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    pub component_mb: f64,
    /// `Engine::deploy`: compile (a component of 4 MiB or more with the quick tier),
    /// `definitions()`, store.
    pub deploy_ms: f64,
    /// Bare wasmtime compiling the same bytes (with Cranelift, as a host without a quick tier).
    pub bare_compile_ms: f64,
    /// From the deploy call to the optimizing compiler's code in place (the deploy itself when
    /// the component was compiled optimized at once).
    pub optimized_ms: f64,
    /// Instantiating the compiled component in a fresh store, calling nothing.
    pub instantiate_ms: f64,
    /// Trigger → COMPLETED of `hello`, after a warm-up run.
    pub warm_run_ms: f64,
    /// Bare wasmtime: instantiate and call `hello` once.
    pub bare_call_ms: f64,
    /// Journal bytes stored at the wait task's checkpoint, clock reads among its entries, and
    /// the bytes the same entries took before clock reads were stored compactly.
    pub journal_bytes: f64,
    pub journal_entries: f64,
    pub journal_clock_reads: f64,
    pub journal_plain_bytes: f64,
    /// Trigger → WAITING (execute to the wait and store the checkpoint).
    pub to_checkpoint_ms: f64,
    /// Clock moved past the wait → COMPLETED (replay to the wait, then the rest).
    pub resume_ms: f64,
    /// Compute time of the replayed execution ÷ the first one's.
    pub replay_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LanguagesReport {
    pub repeat: usize,
    pub languages: Vec<LanguageReport>,
}

impl LanguagesReport {
    /// The scenario's lines of the table.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for l in &self.languages {
            let name = |what: &str| format!("{}: {what}", l.language);
            if let Some(why) = &l.missing {
                rows.push(Row::new("languages", name("not measured"), why.clone()));
                continue;
            }
            // A metric shown with `digits` decimals, and beside it its baseline when it has one.
            let row = |what: &str, value: f64, baseline: Option<f64>, digits: usize| {
                let row = Row::new("languages", name(what), format!("{value:.digits$}"));
                match baseline {
                    Some(b) => {
                        row.baseline(format!("{b:.digits$}"), value / b.max(f64::MIN_POSITIVE))
                    }
                    None => row,
                }
            };
            let journal = format!(
                "journal at the wait ({:.0} entries, {:.0} clock reads; bytes)",
                l.journal_entries, l.journal_clock_reads
            );
            rows.extend([
                row(
                    &format!("deploy, {:.1} MB (ms)", l.component_mb),
                    l.deploy_ms,
                    Some(l.bare_compile_ms),
                    0,
                ),
                row(
                    "deploy → optimized code in place (ms)",
                    l.optimized_ms,
                    None,
                    0,
                ),
                row("instantiate (ms)", l.instantiate_ms, None, 2),
                row(
                    "warm run, trigger → completed (ms)",
                    l.warm_run_ms,
                    Some(l.bare_call_ms),
                    2,
                ),
                row(&journal, l.journal_bytes, Some(l.journal_plain_bytes), 0),
                row("trigger → checkpointed (ms)", l.to_checkpoint_ms, None, 1),
                row("resume → completed (ms)", l.resume_ms, None, 1),
                row("replay compute ÷ first execution", l.replay_ratio, None, 2),
            ]);
        }
        rows
    }
}

/// Measures each language's component (see the module's documentation).
pub async fn languages(config: &LanguagesConfig) -> anyhow::Result<LanguagesReport> {
    let mut languages = Vec::new();
    for component in &config.components {
        if !component.wasm.is_file() {
            languages.push(LanguageReport::missing(
                component.language,
                format!(
                    "{} not found; build it with {} (or pass its path)",
                    component.wasm.display(),
                    component.build
                ),
            ));
            continue;
        }
        eprintln!("  {} ({})", component.language, component.wasm.display());
        languages.push(measure(config, component).await?);
    }
    Ok(LanguagesReport {
        repeat: config.repeat.max(1),
        languages,
    })
}

impl LanguageReport {
    fn missing(language: &'static str, why: String) -> LanguageReport {
        LanguageReport {
            language,
            missing: Some(why),
            ..LanguageReport::default()
        }
    }
}

async fn measure(
    config: &LanguagesConfig,
    component: &LanguageComponent,
) -> anyhow::Result<LanguageReport> {
    let bytes = super::util::read_guest(&component.wasm)?;
    let repeat = config.repeat.max(1);
    let dir = TempDir::new("languages")?;
    let clock = Arc::new(crate::model::ManualClock::new(crate::model::now_ms()));
    let mut host_config = HostConfig::new(dir.path().to_path_buf(), ([127, 0, 0, 1], 0).into());
    host_config.concurrency = config.concurrency.max(1);
    host_config.clock = clock.clone();
    host_config.pool = pool_tuning();
    let host = host::start(host_config).await?;
    let hello = r#"{"name":"bench"}"#;
    let result = async {
        let (engine, env) = (host.engine.clone(), host.dev.clone());
        let store = engine.store();

        let (mut deploy, mut optimized) = (Vec::new(), Vec::new());
        for _ in 0..repeat {
            let started = Instant::now();
            let deployment = engine.deploy(&env, bytes.clone()).await?;
            deploy.push(ms(started.elapsed()));
            // A component deployed on the quick tier is recompiled optimized in the background;
            // everything below is measured on the optimized code.
            let digest = deployment.first_digest().to_owned();
            let deadline = Instant::now() + Duration::from_secs(300);
            while engine.deployer().is_optimized(&digest) != Some(true) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the optimized code of {} did not arrive",
                    component.language
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            optimized.push(ms(started.elapsed()));
        }

        // A warm-up run, then one at a time.
        let id = trigger(&engine, &env, "hello", hello).await?;
        wait_completed(store, &env.id, &id, POLL).await?;
        let mut warm = Vec::new();
        for _ in 0..repeat.max(5) {
            let started = Instant::now();
            let id = trigger(&engine, &env, "hello", hello).await?;
            wait_completed(store, &env.id, &id, Duration::from_micros(200)).await?;
            warm.push(ms(started.elapsed()));
        }

        let (mut to_checkpoint, mut resume, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let (mut stored, mut entries, mut clocks, mut plain) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeat {
            let started = Instant::now();
            let id = trigger(&engine, &env, component.wait_task, component.wait_payload).await?;
            let waiting = wait_status(store, &env.id, &id, RunStatus::Waiting).await?;
            to_checkpoint.push(ms(started.elapsed()));
            let bytes = store.journal(&env.id, &id, waiting.attempt_count).await?;
            let decoded = journal::decode(&bytes)
                .ok_or_else(|| anyhow::anyhow!("run {id}'s journal does not decode"))?;
            stored.push(bytes.len() as f64);
            entries.push(decoded.len() as f64);
            clocks.push(
                decoded
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.kind,
                            journal::Kind::WallClock | journal::Kind::MonotonicClock
                        )
                    })
                    .count() as f64,
            );
            plain.push(journal::plain_size(&decoded) as f64);

            let started = Instant::now();
            clock.advance(Duration::from_secs(3_600));
            engine.wake();
            let done = wait_completed(store, &env.id, &id, POLL).await?;
            resume.push(ms(started.elapsed()));
            let first = waiting.compute_ms as f64;
            let replay = done.compute_ms.saturating_sub(waiting.compute_ms) as f64;
            if first > 0.0 {
                ratio.push(replay / first);
            }
        }

        // Bare wasmtime, beside it in the same process, configured as the host's sandbox.
        let sandbox = Sandbox::new(&SandboxConfig {
            concurrency: config.concurrency.max(1),
            pool: pool_tuning(),
            quick_tier: false,
        })?;
        let mut bare_compile = Vec::new();
        let mut prepared = None;
        for _ in 0..repeat {
            let started = Instant::now();
            prepared = Some(sandbox.compile(bytes.clone()).await?);
            bare_compile.push(ms(started.elapsed()));
        }
        let prepared = prepared.ok_or_else(|| anyhow::anyhow!("nothing compiled"))?;
        let (mut instantiate, mut bare_call) = (Vec::new(), Vec::new());
        sandbox.bare_call(&prepared, "hello", hello).await?;
        for _ in 0..repeat.max(5) {
            instantiate.push(ms(sandbox.bare_instantiate(&prepared).await?));
            let started = Instant::now();
            sandbox.bare_call(&prepared, "hello", hello).await?;
            bare_call.push(ms(started.elapsed()));
        }
        anyhow::Ok(LanguageReport {
            language: component.language,
            missing: None,
            component_mb: bytes.len() as f64 / 1e6,
            deploy_ms: median(deploy),
            optimized_ms: median(optimized),
            bare_compile_ms: median(bare_compile),
            instantiate_ms: median(instantiate),
            warm_run_ms: median(warm),
            bare_call_ms: median(bare_call),
            journal_bytes: median(stored),
            journal_entries: median(entries),
            journal_clock_reads: median(clocks),
            journal_plain_bytes: median(plain),
            to_checkpoint_ms: median(to_checkpoint),
            resume_ms: median(resume),
            replay_ratio: if ratio.is_empty() { 0.0 } else { median(ratio) },
        })
    }
    .await;
    let stopped = host.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}
