//! Bare-wasmtime baselines for `kiln bench`: a component's `run` called in a loop with no
//! scheduler, no database and no log storage, and sandboxes whose fuel metering and epoch
//! interruption can be switched off. They let the benchmark report what kiln, and metering, add
//! on top of wasmtime itself, measured side by side in one process.
//!
//! Nothing here is on a run's path: the host never builds an unmetered sandbox, which could not
//! stop a runaway guest.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::task::JoinSet;

use super::bindings::wit;
use super::execute::wit_context;
use super::{CancelHandle, Prepared, RunContext, Sandbox, SandboxConfig};
use crate::model::{DEFAULT_FUEL_BUDGET, Machine};

/// Which of the sandbox's interruption mechanisms a benchmark sandbox has on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metering {
    /// Fuel counting (compiled into the code: every block updates a counter).
    pub fuel: bool,
    /// Epoch interruption (compiled in: loop headers and calls check a deadline), with the same
    /// 10 ms ticker and yield-each-tick callback as the host.
    pub epochs: bool,
}

impl Metering {
    /// What the host runs with.
    pub const HOST: Metering = Metering {
        fuel: true,
        epochs: true,
    };
}

impl Sandbox {
    /// A sandbox configured like [`Sandbox::new`] except that fuel metering and epoch interruption
    /// are on only as `metering` says. Benchmarks compare these sandboxes with each other, so each
    /// one (including [`Metering::HOST`]) is built here, by the same code.
    pub fn with_metering(config: &SandboxConfig, metering: Metering) -> anyhow::Result<Sandbox> {
        Sandbox::build(config, metering.fuel, metering.epochs)
    }

    /// Calls `run(task_id, payload)` once in a fresh instance, with a store set up exactly as for
    /// an attempt on the default machine with the default fuel budget (fuel, memory limiter,
    /// epoch deadline, WASI with captured output), and returns the output. No database, no log
    /// storage, no output checks. A guest error is an error here: a baseline that measured
    /// failures would mean nothing.
    pub async fn bare_call(
        &self,
        prepared: &Prepared,
        task_id: &str,
        payload: &str,
    ) -> anyhow::Result<String> {
        let machine = Machine::default();
        let mut store = self.bench_store(prepared, machine);
        let ctx = wit_context(&bench_context(task_id, machine));
        let task = prepared
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        match task
            .call_run(&mut store, task_id, &payload.to_owned(), &ctx)
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| format!("calling `run` for task `{task_id}`"))?
        {
            Ok(output) => Ok(output),
            Err(wit::TaskError::Error(info) | wit::TaskError::Abort(info)) => {
                bail!("task `{task_id}` failed: {}: {}", info.name, info.message)
            }
        }
    }

    /// Instantiates the component once in a fresh store set up as for an attempt (see
    /// [`Sandbox::bare_call`]) and calls nothing; returns how long the instantiation took.
    pub async fn bare_instantiate(&self, prepared: &Prepared) -> anyhow::Result<Duration> {
        let mut store = self.bench_store(prepared, Machine::default());
        let started = Instant::now();
        prepared
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok(started.elapsed())
    }

    /// A store set up exactly as for an attempt on `machine` with the default fuel budget.
    fn bench_store(
        &self,
        prepared: &Prepared,
        machine: Machine,
    ) -> wasmtime::Store<super::HostState> {
        self.new_store(
            prepared.engine(),
            super::execute::Budget {
                memory: machine.memory_bytes(),
                fuel: machine.fuel_budget(DEFAULT_FUEL_BUDGET),
                deadline: None,
            },
            CancelHandle::default(),
            1,
            super::Replay::fresh(),
        )
    }

    /// Calls `run(task_id, payload)` `n` times from `concurrency` tokio tasks at once, each call
    /// in a fresh instance (see [`Sandbox::bare_call`]); returns the wall time of the whole loop.
    pub async fn bare_loop(
        &self,
        prepared: &Prepared,
        task_id: &str,
        payload: &str,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<Duration> {
        let concurrency = concurrency.clamp(1, n.max(1));
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for worker in 0..concurrency {
            // Spread `n` calls as evenly as the workers allow.
            let calls = n / concurrency + usize::from(worker < n % concurrency);
            let (this, prepared) = (self.clone(), prepared.clone());
            let (task_id, payload) = (task_id.to_owned(), payload.to_owned());
            workers.spawn(async move {
                for _ in 0..calls {
                    this.bare_call(&prepared, &task_id, &payload).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = workers.join_next().await {
            result.context("a baseline worker panicked")??;
        }
        Ok(started.elapsed())
    }
}

/// A run context like the engine's, for a run that exists nowhere.
fn bench_context(task_id: &str, machine: Machine) -> RunContext {
    RunContext {
        run_id: "run_bench".into(),
        task_id: task_id.to_owned(),
        attempt: 1,
        version: "bench".into(),
        environment: "bench".into(),
        tags: Vec::new(),
        idempotency_key: None,
        queue: format!("task/{task_id}"),
        machine,
        parent_run_id: None,
        root_run_id: None,
        created_at_ms: 0,
    }
}
