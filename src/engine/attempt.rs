//! Executing one attempt the claim started, and recording how it ended.
//!
//! **Claim is start, and the start is optimistic**: the claim that took the run from QUEUED to
//! EXECUTING was answered as soon as it ran, so the attempt executes while that commit is still on
//! its way to disk. Nothing leaves the sandbox before it is durable: an outbound HTTP request, a
//! token, child runs and a metadata change wait for it (`RunServices::start_durable`), so none is
//! stored for an attempt whose start was lost; a checkpoint and the end are store writes queued
//! after the start and guarded on the run's EXECUTING status, so they commit with it or after
//! it, and never for a lost start. The end is recorded the same way: the slot is given back as
//! soon as the end ran, and the attempt's task then waits for both commits ([`Engine::settle`]):
//! a start lost with its transaction means the attempt left no record and had no effect outside
//! the sandbox — the run is queued as it was and runs again, uncounted; an end lost with its
//! transaction (a full disk) is stored again until it is.
//!
//! Every path ends in a status: a run the claim started that cannot run (its version lacks the
//! task, its component does not load, its machine does not fit the memory pool, its variables or
//! checkpoint do not open) fails as SYSTEM_FAILURE with a code saying why.

use super::*;
use crate::store::AttemptStart;

/// Removes a run's cancel handle when its attempt ends, however it ends.
pub(super) struct Unregister<'a>(
    &'a Mutex<HashMap<String, CancelHandle>>,
    &'a str,
    CancelHandle,
);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut executing = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only its own: a newer execution of the run (resumed meanwhile) keeps its handle.
        if executing.get(self.1).is_some_and(|h| h.same(&self.2)) {
            executing.remove(self.1);
        }
    }
}

/// An attempt the claim started, with what it runs with.
pub(super) struct Started {
    /// The run as the claim left it: EXECUTING, locked to its version.
    pub run: Run,
    pub start: AttemptStart,
    /// The journal a checkpointed attempt replays.
    pub journal: Option<Vec<u8>>,
    /// When the claim that started it is durable.
    pub durable: Durability,
}

/// How an attempt ended, as the store records it.
#[derive(Clone)]
enum Ending {
    /// It waits: its checkpoint.
    Checkpoint {
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        wait: WaitFor,
    },
    /// It ended, or could not run: its end, and when the run is queued again if it retries.
    Finish {
        finish: FinishAttempt,
        requeue_at: Option<Millis>,
    },
}

impl Ending {
    /// The ending, recorded as the claim that started the attempt's: the store refuses it once
    /// the run was claimed again or taken over (on a shared database).
    fn claimed_by(mut self, claim: &Option<String>) -> Ending {
        match &mut self {
            Ending::Checkpoint { checkpoint, .. } => checkpoint.claim = claim.clone(),
            Ending::Finish { finish, .. } => finish.claim = claim.clone(),
        }
        self
    }
}

/// What an attempt's commits left open after its slot was given back (see [`Engine::settle`]),
/// to wait for beside the attempts that come after it on the same task.
pub(super) type Settling = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Engine {
    /// Executes one attempt the claim started and records how it ended. The slot is given back
    /// as soon as the end is recorded, or handed over: an attempt that ended claims the run that
    /// takes over its slot in the same write (one trip to the store per run, not two), and that
    /// run comes back to be executed next on the same task. First in the answer: the settling of
    /// what this attempt's commits left open.
    pub(super) async fn execute(
        self: Arc<Self>,
        started: Started,
        slot: Slot,
    ) -> (Settling, Option<(Started, Slot)>) {
        let ending = self
            .clone()
            .run_attempt(&started)
            .await
            .claimed_by(&started.start.claim);
        let (recorded, next) = match &ending {
            Ending::Finish { finish, requeue_at } => {
                self.finish_and_hand_over(&started.run, finish, *requeue_at, slot)
                    .await
            }
            Ending::Checkpoint {
                checkpoint,
                journal,
                wait,
            } => {
                let recorded = self
                    .record_checkpoint(&started.run, checkpoint, journal, wait)
                    .await;
                drop(slot);
                (recorded, None)
            }
        };
        let engine = self.clone();
        let settling: Settling =
            Box::pin(async move { engine.settle(&started, &ending, recorded).await });
        (settling, next)
    }

    /// Records an attempt's end and claims the next run the scheduler plans for its slot, in one
    /// write; the end alone when no run is ready, the host is stopping, or that write failed.
    async fn finish_and_hand_over(
        self: &Arc<Self>,
        run: &Run,
        finish: &FinishAttempt,
        requeue_at: Option<Millis>,
        slot: Slot,
    ) -> (Option<Durability>, Option<(Started, Slot)>) {
        let plan = if self.stopping.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            self.scheduler().plan(1)
        };
        let staged = if plan.is_empty() {
            None
        } else {
            let request = plan.iter().map(|c| (c.lane.clone(), c.count)).collect();
            let written = self
                .store
                .finish_and_claim(finish.clone(), request, self.now());
            match written.await {
                Ok(staged) => Some(staged),
                Err(e) => {
                    // Nothing of it was stored: the planned slot goes back.
                    tracing::warn!(run = %run.id, error = %e, "recording an end with the next claim failed; recording the end alone");
                    self.abandon(&plan);
                    None
                }
            }
        };
        let Some(staged) = staged else {
            let recorded = self.record_finish(run, finish, requeue_at).await;
            drop(slot);
            return (recorded, None);
        };
        let recorded = match staged.value.finished {
            Ok(resumed) => {
                self.activate(resumed);
                self.requeued(run, requeue_at);
                Some(staged.durable.clone())
            }
            // Not stored because the storage failed: stored alone, as it would have been.
            Err(e) if e.is_storage() => self.record_finish(run, finish, requeue_at).await,
            Err(e) => self.not_recorded(run, e),
        };
        let (mut starts, _) = self.started_from(&plan, staged.value.claimed, &staged.durable);
        let next = starts
            .pop()
            .map(|(started, lane)| (started, Slot::take(self, lane)));
        drop(slot);
        (recorded, next)
    }

    /// Runs the attempt in the sandbox (or finds why it cannot run).
    async fn run_attempt(self: Arc<Self>, started: &Started) -> Ending {
        let run = &started.run;
        // The component of the run's version that defines its task executes it, on every
        // attempt and every replay of a checkpoint (the run stays locked to its version).
        let deployment = self.deployment_of(run).await;
        let Some((deployment, component)) = deployment.as_deref().and_then(|d| {
            let component = d.component_of(&run.task_id)?;
            Some((d, component))
        }) else {
            let message = format!(
                "task `{}` is not in the deployed version the run is locked to",
                run.task_id
            );
            return self.unable(run, "COULD_NOT_FIND_TASK", message);
        };
        let prepared = match self
            .deployer
            .prepared(&run.environment_id, &component.digest)
            .await
        {
            Ok(p) => p,
            Err(e) => return self.unable(run, "COULD_NOT_IMPORT_TASK", e.to_string()),
        };
        // Wait until the machine's memory fits in the pool; the run holds its slot meanwhile.
        let need_mib = u32::try_from(run.machine.memory_bytes() >> 20).unwrap_or(u32::MAX);
        if need_mib > self.memory_pool_mib {
            let message = format!(
                "machine {} needs {need_mib} MiB but the host lends at most {} MiB at once; pick a smaller machine or raise --memory-pool-mib",
                run.machine, self.memory_pool_mib
            );
            return self.unable(run, "SYSTEM_FAILURE", message);
        }
        let Ok(_memory) = self.memory.clone().acquire_many_owned(need_mib).await else {
            return self.unable(run, "SYSTEM_FAILURE", "the host is stopping".into());
        };
        let env = match env_vars::open_all(&self.secrets, &started.start.env_vars) {
            Ok(env) => env,
            Err(e) => return self.unable(run, "SYSTEM_FAILURE", e.to_string()),
        };
        // A checkpointed attempt replays what it observed before.
        let journal = match &started.journal {
            None => Vec::new(),
            Some(bytes) => match journal::decode(bytes) {
                Some(entries) => entries,
                None => {
                    let message = "the run's checkpoint is corrupt; it cannot continue".to_owned();
                    return self.unable(run, "SYSTEM_FAILURE", message);
                }
            },
        };
        let cancel = CancelHandle::default();
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone(), cancel.clone());
        let _unregister = Unregister(&self.executing, &run.id, cancel.clone());
        let task = component.tasks.iter().find(|t| t.id == run.task_id);
        let request = self.request(started, &deployment.version, task, env, journal, cancel);
        let report = self.sandbox.run(&prepared, request).await;
        self.ending(run, report)
    }

    /// What the sandbox needs to execute the attempt.
    fn request(
        self: &Arc<Self>,
        started: &Started,
        version: &str,
        task: Option<&crate::model::TaskDefinition>,
        env: Vec<(String, String)>,
        journal: Vec<journal::Entry>,
        cancel: CancelHandle,
    ) -> AttemptRequest {
        let run = &started.run;
        let attempt = run.attempt_count;
        AttemptRequest {
            payload: run.payload.clone(),
            fuel: run.machine.fuel_budget(self.config.fuel_budget),
            context: RunContext {
                run_id: run.id.clone(),
                task_id: run.task_id.clone(),
                attempt,
                version: version.to_owned(),
                environment: run.environment_slug.clone(),
                tags: run.tags.clone(),
                idempotency_key: run.idempotency_key.clone(),
                queue: run.queue.clone(),
                machine: run.machine,
                parent_run_id: run.parent_run_id.clone(),
                root_run_id: run.root_run_id.clone(),
                created_at_ms: u64::try_from(run.created_at).unwrap_or(0),
            },
            max_duration: run
                .max_duration
                .or_else(|| task.and_then(|t| t.max_duration)),
            cancel,
            journal,
            seed: run.seed,
            clock: self.clock.clone(),
            wait_threshold: self.config.wait_threshold,
            env,
            http: Arc::new(self.http_policy(&started.start)),
            scratch_bytes: Some(
                self.config
                    .scratch_bytes
                    .unwrap_or_else(|| run.machine.memory_bytes()),
            ),
            services: Arc::new(run_host::RunHost {
                engine: self.clone(),
                run_id: run.id.clone(),
                environment_id: run.environment_id.clone(),
                attempt,
                version: version.to_owned(),
                root_run_id: run.root_run_id.clone(),
                parent_run_id: run.parent_run_id.clone(),
                depth: run.depth,
                started: started.durable.clone(),
                claim: started.start.claim.clone(),
            }),
        }
    }

    /// The state machine's decision on the attempt's report, as the store records it.
    fn ending(&self, run: &Run, report: crate::sandbox::AttemptReport) -> Ending {
        let now = self.now();
        let executing = run_state(run);
        let compute_ms = u64::try_from(report.compute.as_millis()).unwrap_or(u64::MAX);
        if let AttemptOutcome::Suspended { wait, recorded } = report.outcome {
            return match transition(&executing, Event::Suspend, now) {
                Ok(t) => Ending::Checkpoint {
                    checkpoint: FinishAttempt {
                        update: run_update(run, &t, now),
                        attempt: run.attempt_count,
                        claim: None,
                        attempt_status: AttemptStatus::Executing,
                        attempt_error: None,
                        output: None,
                        fuel_used: report.fuel_used,
                        compute_ms,
                        logs: report.logs,
                    },
                    journal: journal::encode(&recorded),
                    wait,
                },
                Err(e) => self.unable(run, "SYSTEM_FAILURE", e.to_string()),
            };
        }
        let (event, output, error) = outcome_event(report.outcome);
        let t = match transition(&executing, event, now) {
            Ok(t) => t,
            Err(e) => return self.unable(run, "SYSTEM_FAILURE", e.to_string()),
        };
        Ending::Finish {
            requeue_at: requeue_time(&t.effects),
            finish: FinishAttempt {
                update: RunUpdate {
                    error: if t.state.status.is_final() {
                        error.clone()
                    } else {
                        None
                    },
                    ..run_update(run, &t, now)
                },
                attempt: run.attempt_count,
                claim: None,
                attempt_status: if error.is_some() {
                    AttemptStatus::Failed
                } else {
                    AttemptStatus::Completed
                },
                attempt_error: error,
                output,
                fuel_used: report.fuel_used,
                compute_ms,
                logs: report.logs,
            },
        }
    }

    /// A started attempt that cannot run (or go on) fails as SYSTEM_FAILURE with `code`.
    fn unable(&self, run: &Run, code: &str, message: String) -> Ending {
        let kind = FailureKind::System;
        let now = self.now();
        let error = RunError::coded(code, message);
        // Executing → SYSTEM_FAILURE is an edge of every executing run.
        let update = match transition(&run_state(run), Event::Fail { kind, jitter: 0.0 }, now) {
            Ok(t) => run_update(run, &t, now),
            Err(_) => RunUpdate {
                status: RunStatus::SystemFailure,
                ..run_update(run, &transition_noop(run), now)
            },
        };
        let update = RunUpdate {
            error: Some(error.clone()),
            ..update
        };
        Ending::Finish {
            finish: FinishAttempt::closing(
                update,
                run.attempt_count,
                AttemptStatus::Failed,
                Some(error),
            ),
            requeue_at: None,
        }
    }

    /// Records a checkpoint as soon as it runs (before its commit). `None` when nothing was
    /// recorded: the run was no longer executing (its start was lost, or it was canceled and
    /// its attempt closed), or the write failed for good.
    async fn record_checkpoint(
        &self,
        run: &Run,
        checkpoint: &FinishAttempt,
        journal: &[u8],
        wait: &WaitFor,
    ) -> Option<Durability> {
        let stored = self
            .until_stored(&run.id, || self.store_checkpoint(checkpoint, journal, wait))
            .await;
        match stored {
            Ok(staged) => {
                if let WaitFor::Until(at) = wait {
                    self.arm_timer(Some(*at));
                }
                // A token done or children ended meanwhile queue the run at once.
                self.activate(staged.value);
                self.wake.notify_one();
                Some(staged.durable)
            }
            Err(e) => self.not_recorded(run, e),
        }
    }

    /// Records an attempt's end as soon as it runs, tried again while the storage fails; `None`
    /// as for [`Engine::record_checkpoint`].
    async fn record_finish(
        &self,
        run: &Run,
        finish: &FinishAttempt,
        requeue_at: Option<Millis>,
    ) -> Option<Durability> {
        let stored = self
            .until_stored(&run.id, || self.store.finish_attempt(finish.clone()))
            .await;
        match stored {
            Ok(staged) => {
                self.activate(staged.value);
                self.requeued(run, requeue_at);
                Some(staged.durable)
            }
            Err(e) => self.not_recorded(run, e),
        }
    }

    /// The checkpoint of a wait, whatever it waits for; the lane of a run it queued at once.
    async fn store_checkpoint(
        &self,
        checkpoint: &FinishAttempt,
        journal: &[u8],
        wait: &WaitFor,
    ) -> Result<Staged<Option<Lane>>, StoreError> {
        let (checkpoint, journal) = (checkpoint.clone(), journal.to_vec());
        match wait {
            WaitFor::Until(until) => {
                let staged = self.store.checkpoint(checkpoint, journal, *until).await?;
                Ok(Staged {
                    value: None,
                    durable: staged.durable,
                })
            }
            WaitFor::Token(token) => {
                self.store
                    .checkpoint_on_token(checkpoint, journal, token.clone())
                    .await
            }
            WaitFor::Runs(children) => {
                self.store
                    .checkpoint_on_runs(checkpoint, journal, children.clone())
                    .await
            }
        }
    }

    /// A run that retries goes back to its lane at once, or when its backoff ends.
    fn requeued(&self, run: &Run, requeue_at: Option<Millis>) {
        match requeue_at {
            Some(at) if at <= self.now() => self.activate([run.lane()]),
            Some(at) => {
                self.arm_timer(Some(at));
                self.wake.notify_one();
            }
            None => {}
        }
    }

    fn not_recorded(&self, run: &Run, e: StoreError) -> Option<Durability> {
        match e {
            // Not executing any more: settled by the start's durability (a lost start), or the
            // run was canceled and the attempt closed with it.
            StoreError::Conflict => {}
            e => {
                tracing::error!(run = %run.id, error = %e, "could not record the attempt's end")
            }
        }
        None
    }

    /// After the slot is free: waits until the start and the end are durable. A start lost with
    /// its transaction leaves the run queued as it was (its lane is activated again); an end lost
    /// with its transaction is stored again, until it is.
    async fn settle(&self, started: &Started, ending: &Ending, recorded: Option<Durability>) {
        let run = &started.run;
        if let Err(e) = started.durable.wait().await {
            tracing::warn!(run = %run.id, error = %e, "the attempt's start was not stored; the run is queued again");
            self.activate([run.lane()]);
            return;
        }
        let Some(recorded) = recorded else {
            return;
        };
        let Err(e) = recorded.wait().await else {
            return;
        };
        tracing::warn!(run = %run.id, error = %e, "the attempt's end was not stored; storing it again");
        let stored = match ending {
            Ending::Checkpoint {
                checkpoint,
                journal,
                wait,
            } => self
                .until_stored(&run.id, || {
                    Engine::durably(self.store_checkpoint(checkpoint, journal, wait))
                })
                .await
                .map(|lane| self.activate(lane)),
            Ending::Finish { finish, requeue_at } => self
                .until_stored(&run.id, || {
                    Engine::durably(self.store.finish_attempt(finish.clone()))
                })
                .await
                .map(|resumed| {
                    self.activate(resumed);
                    self.requeued(run, *requeue_at);
                }),
        };
        if let Err(e) = stored {
            tracing::error!(run = %run.id, error = %e, "could not store the attempt's end");
        }
    }

    /// Fails an executing run as SYSTEM_FAILURE with `code`, outside its attempt's task.
    pub(super) async fn fail_executing(&self, run: &Run, code: &str, message: String) {
        let Ending::Finish { finish, .. } = self.unable(run, code, message) else {
            return;
        };
        let stored = self
            .until_stored(&run.id, || {
                Engine::durably(self.store.finish_attempt(finish.clone()))
            })
            .await;
        match stored {
            Ok(resumed) => self.activate(resumed),
            Err(e) => tracing::error!(run = %run.id, error = %e, "could not fail the run"),
        }
    }

    /// The HTTP policy of an attempt: its environment's allow-list and the host's limits.
    pub(super) fn http_policy(&self, start: &AttemptStart) -> HttpPolicy {
        let allow = start
            .allowed_outbound_hosts
            .iter()
            .filter_map(|rule| match OutboundRule::parse(rule) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a stored outbound rule");
                    None
                }
            })
            .collect();
        HttpPolicy {
            allow,
            limits: self.config.http_limits.clone(),
            how_to_allow: format!(
                "the host's admin allows hosts per environment: `kiln envs set --project {} --env {} --allow-host scheme://host[:port]` (every rule of the environment, repeated)",
                start.project, start.environment
            ),
        }
    }

    /// The deployment a started run is locked to: from the engine's cache of deployments (they
    /// never change once stored), else the store.
    async fn deployment_of(&self, run: &Run) -> Option<Arc<Deployment>> {
        let id = run.deployment_id.as_ref()?;
        let cached = self
            .deployments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let deployment = match cached {
            Some(d) => d,
            None => {
                let loaded = match self.store.deployment(&run.environment_id, id).await {
                    Ok(found) => Arc::new(found?),
                    Err(e) => {
                        tracing::error!(run = %run.id, error = %e, "could not read the run's deployment");
                        return None;
                    }
                };
                let mut cache = self.deployments.lock().unwrap_or_else(|e| e.into_inner());
                // Deployments are small; a host keeps a bounded number of them in memory.
                if cache.len() >= MAX_CACHED_DEPLOYMENTS {
                    cache.clear();
                }
                cache.insert(id.clone(), loaded.clone());
                loaded
            }
        };
        Some(deployment)
    }
}

/// Deployments kept in memory by id before the cache starts over.
const MAX_CACHED_DEPLOYMENTS: usize = 1_024;

/// A transition that changes nothing (for an update that fails a run whatever the machine says).
fn transition_noop(run: &Run) -> Transition {
    Transition {
        state: run_state(run),
        effects: Vec::new(),
    }
}
