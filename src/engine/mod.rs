//! The run engine: triggering, the dispatcher that claims queued runs and executes their attempts,
//! cancellation, and recovery after a restart.
//!
//! Decisions come from the pure state machine in [`state`]; this module carries out its effects
//! (store writes with compare-and-set, sandbox calls, interrupts). It knows nothing of HTTP or SQL
//! text and talks to wasmtime only through `sandbox`.

pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::deploy::Deployer;
use crate::model::{
    AttemptStatus, Deployment, Environment, Machine, Millis, RetryPolicy, Run, RunError, RunStatus,
    now_ms,
};
use crate::sandbox::{AttemptOutcome, AttemptRequest, CancelHandle, RunContext, Sandbox, TrapKind};
use crate::store::{FinishAttempt, NewRun, RunUpdate, Store, StoreError};
use state::{Effect, Event, FailureKind, RunState, transition};

/// Largest payload a trigger may carry (Trigger.dev's limit).
pub const MAX_PAYLOAD_BYTES: usize = 3 << 20;

/// How many times a compare-and-set is retried against concurrent changes before giving up.
const CAS_RETRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "task `{task}` is not in the latest deployed version ({version}); deploy a version that declares it"
    )]
    UnknownTask { task: String, version: String },
    #[error(
        "no version is deployed in this environment yet; deploy a component with `kiln deploy <file.wasm>` first"
    )]
    NothingDeployed,
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("the payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge { size: usize },
    #[error("the run changed concurrently too many times; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Host-wide defaults and sizes of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts executing at once.
    pub concurrency: usize,
    /// Retry policy for what a task does not set.
    pub default_retry: RetryPolicy,
    pub default_machine: Machine,
}

/// The result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    /// The run had already finished with this status; nothing changed.
    AlreadyFinished(RunStatus),
}

/// The engine; shared by the API and the dispatcher.
pub struct Engine {
    store: Store,
    sandbox: Sandbox,
    deployer: Arc<Deployer>,
    config: EngineConfig,
    wake: Notify,
    executing: Mutex<HashMap<String, CancelHandle>>,
}

impl Engine {
    pub fn new(
        store: Store,
        sandbox: Sandbox,
        deployer: Arc<Deployer>,
        config: EngineConfig,
    ) -> Engine {
        Engine {
            store,
            sandbox,
            deployer,
            config,
            wake: Notify::new(),
            executing: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    /// Creates a QUEUED run of `task_id` on the latest deployed version and wakes the dispatcher.
    pub async fn trigger(
        &self,
        env: &Environment,
        task_id: &str,
        payload: String,
    ) -> Result<Run, EngineError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EngineError::PayloadTooLarge {
                size: payload.len(),
            });
        }
        let deployment = self
            .store
            .latest_deployment(&env.id)
            .await?
            .ok_or(EngineError::NothingDeployed)?;
        let task = deployment
            .tasks
            .iter()
            .find(|t| t.id == task_id)
            .ok_or_else(|| EngineError::UnknownTask {
                task: task_id.to_owned(),
                version: deployment.version.clone(),
            })?;
        let run = self
            .store
            .insert_run(NewRun {
                environment_id: env.id.clone(),
                task_id: task_id.to_owned(),
                payload,
                queue: task
                    .queue
                    .as_ref()
                    .map(|q| q.name.clone())
                    .unwrap_or_else(|| format!("task/{task_id}")),
                machine: task.machine.unwrap_or(self.config.default_machine),
                retry: task.retry.resolve(self.config.default_retry),
                now: now_ms(),
            })
            .await?;
        self.wake.notify_one();
        Ok(run)
    }

    /// Cancels a run in any non-final status; an executing attempt is interrupted within one
    /// epoch tick.
    pub async fn cancel(
        &self,
        env: &Environment,
        run_id: &str,
    ) -> Result<CancelOutcome, EngineError> {
        for _ in 0..CAS_RETRIES {
            let run = self
                .store
                .run(&env.id, run_id)
                .await?
                .ok_or_else(|| EngineError::RunNotFound(run_id.to_owned()))?;
            if run.status.is_final() {
                return Ok(CancelOutcome::AlreadyFinished(run.status));
            }
            let Ok(t) = transition(&run_state(&run), Event::Cancel, now_ms()) else {
                return Ok(CancelOutcome::AlreadyFinished(run.status));
            };
            let update = RunUpdate {
                run_id: run.id.clone(),
                expected: run.status,
                status: t.state.status,
                available_at: None,
                error: Some(RunError {
                    code: Some("TASK_RUN_CANCELLED".into()),
                    name: "Error".into(),
                    message: "Canceled by user".into(),
                    stack: None,
                }),
                now: now_ms(),
            };
            match self.store.update_run(update).await {
                Ok(()) => {
                    if t.effects.contains(&Effect::InterruptAttempt)
                        && let Some(handle) = self.executing_handle(&run.id)
                    {
                        handle.cancel();
                    }
                    return Ok(CancelOutcome::Canceled);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended)
    }

    fn executing_handle(&self, run_id: &str) -> Option<CancelHandle> {
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .cloned()
    }

    /// Puts runs a previous process left claimed or executing back on their way: claimed runs are
    /// queued again, executing ones count as a stalled attempt (retried per policy).
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let runs = self.store.in_flight_runs().await?;
        let count = runs.len();
        for run in runs {
            let now = now_ms();
            let Ok(t) = transition(&run_state(&run), Event::Recover, now) else {
                continue;
            };
            let requeue_at = requeue_time(&t.effects);
            let error = RunError {
                code: FailureKind::Stalled.code().map(str::to_owned),
                name: "Error".into(),
                message: "the host stopped while this attempt was executing".into(),
                stack: None,
            };
            let update = RunUpdate {
                run_id: run.id.clone(),
                expected: run.status,
                status: t.state.status,
                available_at: requeue_at,
                error: t.state.status.is_final().then(|| error.clone()),
                now,
            };
            let result = if run.status == RunStatus::Executing {
                self.store
                    .finish_attempt(FinishAttempt {
                        update,
                        attempt: run.attempt_count,
                        attempt_status: AttemptStatus::Failed,
                        attempt_error: Some(error),
                        output: None,
                        fuel_used: 0,
                        compute_ms: 0,
                        logs: Vec::new(),
                    })
                    .await
            } else {
                self.store.update_run(update).await
            };
            if let Err(e) = result {
                tracing::warn!(run = %run.id, error = %e, "could not recover run");
            }
        }
        Ok(count)
    }

    /// Runs the dispatcher until `shutdown` turns true; then waits for executing attempts.
    pub async fn dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            let free = self.config.concurrency.saturating_sub(running.len());
            let mut claimed_all = false;
            if free > 0 {
                match self.store.claim_ready(now_ms(), free).await {
                    Ok(runs) => {
                        claimed_all = runs.len() == free;
                        for run in runs {
                            running.spawn(self.clone().execute(run));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming runs failed"),
                }
            }
            // Sleep until something can change: a trigger, a finished attempt, or the next due run.
            let sleep_for = if claimed_all {
                None
            } else {
                match self.store.next_due().await {
                    Ok(Some(at)) => Some(Duration::from_millis(
                        at.saturating_sub(now_ms()).max(0) as u64
                    )),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the next due run failed");
                        Some(Duration::from_secs(1))
                    }
                }
            };
            if free == 0 || !claimed_all {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::from_secs(3600))), if sleep_for.is_some() && free > 0 => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Executes one attempt of a claimed (DEQUEUED) run and records its end.
    async fn execute(self: Arc<Self>, run: Run) {
        let deployment = match self.deployment_for(&run).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let message = format!(
                    "task `{}` is not in the deployed version the run needs; deploy a version that declares it",
                    run.task_id
                );
                return self
                    .fail_unstarted(&run, "COULD_NOT_FIND_TASK", message)
                    .await;
            }
            Err(e) => {
                return self
                    .fail_unstarted(&run, "SYSTEM_FAILURE", format!("{e}"))
                    .await;
            }
        };
        let prepared = match self.deployer.prepared(&deployment).await {
            Ok(p) => p,
            Err(e) => {
                return self
                    .fail_unstarted(&run, "COULD_NOT_IMPORT_TASK", format!("{e}"))
                    .await;
            }
        };
        let Ok(started) = transition(&run_state(&run), Event::StartAttempt, now_ms()) else {
            return;
        };
        let attempt = started.state.attempt_count;
        let cancel = CancelHandle::default();
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone(), cancel.clone());
        let _unregister = Unregister(&self.executing, &run.id);
        match self
            .store
            .start_attempt(&run.id, &deployment.id, attempt, now_ms())
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict) => return, // canceled while claimed
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not start attempt");
                return;
            }
        }
        let task = deployment.tasks.iter().find(|t| t.id == run.task_id);
        let request = AttemptRequest {
            payload: run.payload.clone(),
            context: RunContext {
                run_id: run.id.clone(),
                task_id: run.task_id.clone(),
                attempt,
                version: deployment.version.clone(),
                environment: run.environment_slug.clone(),
                tags: Vec::new(),
                idempotency_key: None,
                queue: run.queue.clone(),
                machine: run.machine,
                parent_run_id: None,
                root_run_id: None,
                created_at_ms: u64::try_from(run.created_at).unwrap_or(0),
            },
            max_duration: task.and_then(|t| t.max_duration),
            cancel,
        };
        let report = self.sandbox.run(&prepared, request).await;
        let executing = RunState {
            status: RunStatus::Executing,
            ..started.state
        };
        let now = now_ms();
        let (event, output, error) = outcome_event(report.outcome);
        let t = match transition(&executing, event, now) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "invalid transition at attempt end");
                return;
            }
        };
        let requeue_at = requeue_time(&t.effects);
        let finish = FinishAttempt {
            update: RunUpdate {
                run_id: run.id.clone(),
                expected: RunStatus::Executing,
                status: t.state.status,
                available_at: requeue_at,
                error: if t.state.status.is_final() {
                    error.clone()
                } else {
                    None
                },
                now,
            },
            attempt,
            attempt_status: if error.is_some() {
                AttemptStatus::Failed
            } else {
                AttemptStatus::Completed
            },
            attempt_error: error,
            output,
            fuel_used: report.fuel_used,
            compute_ms: u64::try_from(report.compute.as_millis()).unwrap_or(u64::MAX),
            logs: report.logs,
        };
        if let Err(e) = self.store.finish_attempt(finish).await {
            tracing::error!(run = %run.id, error = %e, "could not record the attempt's end");
        }
        if requeue_at.is_some() {
            self.wake.notify_one();
        }
    }

    async fn deployment_for(&self, run: &Run) -> Result<Option<Deployment>, StoreError> {
        let deployment = match &run.deployment_id {
            Some(id) => self.store.deployment(id).await?,
            None => self.store.latest_deployment(&run.environment_id).await?,
        };
        Ok(deployment.filter(|d| d.tasks.iter().any(|t| t.id == run.task_id)))
    }

    /// A claimed run that cannot start fails as SYSTEM_FAILURE without an attempt.
    async fn fail_unstarted(&self, run: &Run, code: &str, message: String) {
        let kind = FailureKind::System;
        let Ok(t) = transition(&run_state(run), Event::Fail { kind, jitter: 0.0 }, now_ms()) else {
            return;
        };
        let update = RunUpdate {
            run_id: run.id.clone(),
            expected: run.status,
            status: t.state.status,
            available_at: None,
            error: Some(RunError {
                code: Some(code.into()),
                name: "Error".into(),
                message,
                stack: None,
            }),
            now: now_ms(),
        };
        if let Err(e) = self.store.update_run(update).await {
            tracing::error!(run = %run.id, error = %e, "could not fail the run");
        }
    }
}

/// Removes a run's cancel handle when its attempt ends, however it ends.
struct Unregister<'a>(&'a Mutex<HashMap<String, CancelHandle>>, &'a str);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.1);
    }
}

fn run_state(run: &Run) -> RunState {
    RunState {
        status: run.status,
        attempt_count: run.attempt_count,
        retry: run.retry,
    }
}

/// Maps an attempt's outcome to the state machine's event, the output to store and the error.
fn outcome_event(outcome: AttemptOutcome) -> (Event, Option<String>, Option<RunError>) {
    let jitter = rand::random::<f64>();
    let fail = |kind: FailureKind, name: String, message: String, stack: Option<String>| {
        (
            Event::Fail { kind, jitter },
            None,
            Some(RunError {
                code: kind.code().map(str::to_owned),
                name,
                message,
                stack,
            }),
        )
    };
    match outcome {
        AttemptOutcome::Output(output) => (Event::Succeed, Some(output), None),
        AttemptOutcome::TaskError {
            abort,
            name,
            message,
            stack,
        } => {
            let kind = if abort {
                FailureKind::Abort
            } else {
                FailureKind::User
            };
            fail(kind, name, message, stack)
        }
        AttemptOutcome::InvalidOutput(message) => fail(
            FailureKind::InvalidOutput,
            "TaskOutputError".into(),
            message,
            None,
        ),
        AttemptOutcome::Failed(f) => {
            let kind = match f.kind {
                TrapKind::Crash => FailureKind::Crashed,
                TrapKind::OutOfMemory => FailureKind::OutOfMemory,
                TrapKind::FuelExhausted => FailureKind::FuelExhausted,
                TrapKind::Timeout => FailureKind::MaxDuration,
                // The run is already CANCELED; the attempt's end is recorded as canceled.
                TrapKind::Canceled => FailureKind::Abort,
            };
            fail(kind, "Error".into(), f.message, f.stack)
        }
    }
}

/// When a transition puts the run back in the queue, if it does.
fn requeue_time(effects: &[Effect]) -> Option<Millis> {
    effects.iter().find_map(|e| match e {
        Effect::RequeueAt(at) => Some(*at),
        _ => None,
    })
}
