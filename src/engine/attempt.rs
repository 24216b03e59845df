//! Executing one attempt of a claimed run: its deployment and compiled component, its share of the
//! memory pool, the start (recorded before the guest runs), the sandbox call, and the record of how
//! it ended — a checkpoint, a retry, or a final status. A claimed run that cannot start ends too
//! (parked for a version, or SYSTEM_FAILURE); none is left claimed.

use super::*;

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

impl Engine {
    /// Executes one attempt of a claimed (DEQUEUED) run and records its end. The run's slot is
    /// released when this returns, however it returns.
    pub(super) async fn execute(self: Arc<Self>, run: Run, _slot: Slot) {
        let deployment = match self.deployment_for(&run).await {
            Ok(Some(d)) => d,
            Ok(None) => return self.park_or_fail(&run).await,
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
        // Wait until the machine's memory fits in the pool; the run holds its slot meanwhile.
        let need_mib = u32::try_from(run.machine.memory_bytes() >> 20).unwrap_or(u32::MAX);
        if need_mib > self.memory_pool_mib {
            let message = format!(
                "machine {} needs {need_mib} MiB but the host lends at most {} MiB at once; pick a smaller machine or raise --memory-pool-mib",
                run.machine, self.memory_pool_mib
            );
            return self.fail_unstarted(&run, "SYSTEM_FAILURE", message).await;
        }
        let Ok(_memory) = self.memory.clone().acquire_many_owned(need_mib).await else {
            return;
        };
        let Ok(started) = transition(&run_state(&run), Event::StartAttempt, self.now()) else {
            return;
        };
        let attempt = started.state.attempt_count;
        let cancel = CancelHandle::default();
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone(), cancel.clone());
        let _unregister = Unregister(&self.executing, &run.id, cancel.clone());
        let env = match self
            .until_stored(&run.id, || {
                self.store.start_attempt(
                    &run.environment_id,
                    &run.id,
                    &deployment.id,
                    attempt,
                    self.now(),
                )
            })
            .await
        {
            Ok(env) => env,
            Err(StoreError::Conflict) => return, // canceled while claimed
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not start attempt");
                return;
            }
        };
        let http = Arc::new(self.http_policy(&env));
        let env = match env_vars::open_all(&self.secrets, &env.env_vars) {
            Ok(env) => env,
            Err(e) => {
                return self
                    .fail_started(&run, &started.state, attempt, e.to_string())
                    .await;
            }
        };
        let task = deployment.tasks.iter().find(|t| t.id == run.task_id);
        // A checkpointed attempt replays what it observed before.
        let journal = if run.checkpointed {
            match self
                .store
                .journal(&run.environment_id, &run.id, attempt)
                .await
                .map(|b| journal::decode(&b))
            {
                Ok(Some(entries)) => entries,
                Ok(None) => {
                    let message = "the run's checkpoint is corrupt; it cannot continue".to_owned();
                    return self
                        .fail_started(&run, &started.state, attempt, message)
                        .await;
                }
                Err(e) => {
                    tracing::error!(run = %run.id, error = %e, "could not read the run's journal");
                    return self
                        .fail_started(&run, &started.state, attempt, format!("{e}"))
                        .await;
                }
            }
        } else {
            Vec::new()
        };
        let request = AttemptRequest {
            payload: run.payload.clone(),
            fuel: run.machine.fuel_budget(self.config.fuel_budget),
            context: RunContext {
                run_id: run.id.clone(),
                task_id: run.task_id.clone(),
                attempt,
                version: deployment.version.clone(),
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
            http,
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
                version: deployment.version.clone(),
                root_run_id: run.root_run_id.clone(),
                parent_run_id: run.parent_run_id.clone(),
                depth: run.depth,
            }),
        };
        let report = self.sandbox.run(&prepared, request).await;
        let executing = RunState {
            status: RunStatus::Executing,
            ..started.state
        };
        let now = self.now();
        let compute_ms = u64::try_from(report.compute.as_millis()).unwrap_or(u64::MAX);
        if let AttemptOutcome::Suspended { wait, recorded } = report.outcome {
            let Ok(t) = transition(&executing, Event::Suspend, now) else {
                return;
            };
            let checkpoint = FinishAttempt {
                update: RunUpdate {
                    expected: RunStatus::Executing,
                    ..run_update(&run, &t, now)
                },
                attempt,
                attempt_status: AttemptStatus::Executing,
                attempt_error: None,
                output: None,
                fuel_used: report.fuel_used,
                compute_ms,
                logs: report.logs,
            };
            let entries = journal::encode(&recorded);
            let stored = match wait {
                WaitFor::Until(until) => {
                    let stored = self
                        .until_stored(&run.id, || {
                            self.store
                                .checkpoint(checkpoint.clone(), entries.clone(), until)
                        })
                        .await;
                    self.arm_timer(Some(until));
                    stored
                }
                // The token may have been completed meanwhile: then the run is queued at once.
                WaitFor::Token(token) => self
                    .until_stored(&run.id, || {
                        self.store.checkpoint_on_token(
                            checkpoint.clone(),
                            entries.clone(),
                            token.clone(),
                        )
                    })
                    .await
                    .map(|lane| self.activate(lane)),
                // Children that all ended meanwhile queue the run at once, too.
                WaitFor::Runs(children) => self
                    .until_stored(&run.id, || {
                        self.store.checkpoint_on_runs(
                            checkpoint.clone(),
                            entries.clone(),
                            children.clone(),
                        )
                    })
                    .await
                    .map(|lane| self.activate(lane)),
            };
            match stored {
                Ok(()) => self.wake.notify_one(),
                Err(e) => {
                    tracing::error!(run = %run.id, error = %e, "could not checkpoint the run")
                }
            }
            return;
        }
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
                expected: RunStatus::Executing,
                error: if t.state.status.is_final() {
                    error.clone()
                } else {
                    None
                },
                ..run_update(&run, &t, now)
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
            compute_ms,
            logs: report.logs,
        };
        match self
            .until_stored(&run.id, || self.store.finish_attempt(finish.clone()))
            .await
        {
            Ok(resumed) => {
                self.activate(resumed);
                match requeue_at {
                    Some(at) if at <= now => self.activate([run.lane()]),
                    Some(at) => {
                        self.arm_timer(Some(at));
                        self.wake.notify_one();
                    }
                    None => {}
                }
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not record the attempt's end")
            }
        }
    }

    /// The HTTP policy of an attempt: its environment's allow-list and the host's limits.
    pub(super) fn http_policy(&self, start: &crate::store::AttemptStart) -> HttpPolicy {
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

    /// A claimed run whose task is in no usable version waits for a deploy (PENDING_VERSION) if it
    /// never started; a started run's locked version cannot lose the task, so that is a failure.
    pub(super) async fn park_or_fail(&self, run: &Run) {
        let Ok(t) = transition(&run_state(run), Event::Park, self.now()) else {
            let message = format!(
                "task `{}` is not in the deployed version the run is locked to",
                run.task_id
            );
            return self
                .fail_unstarted(run, "COULD_NOT_FIND_TASK", message)
                .await;
        };
        let update = run_update(run, &t, self.now());
        if let Err(e) = self.store.update_run(update).await {
            tracing::error!(run = %run.id, error = %e, "could not park the run");
        }
    }

    /// An attempt that started but cannot go on (its checkpoint cannot be read) fails as
    /// SYSTEM_FAILURE.
    pub(super) async fn fail_started(
        &self,
        run: &Run,
        started: &RunState,
        attempt: u32,
        message: String,
    ) {
        let executing = RunState {
            status: RunStatus::Executing,
            ..*started
        };
        let kind = FailureKind::System;
        let now = self.now();
        let Ok(t) = transition(&executing, Event::Fail { kind, jitter: 0.0 }, now) else {
            return;
        };
        let error = RunError::coded(kind.code().unwrap_or("SYSTEM_FAILURE"), message);
        let update = RunUpdate {
            expected: RunStatus::Executing,
            error: Some(error.clone()),
            ..run_update(run, &t, now)
        };
        let finish = FinishAttempt::closing(update, attempt, AttemptStatus::Failed, Some(error));
        match self.store.finish_attempt(finish).await {
            Ok(resumed) => self.activate(resumed),
            Err(e) => tracing::error!(run = %run.id, error = %e, "could not fail the run"),
        }
    }

    pub(super) async fn deployment_for(&self, run: &Run) -> Result<Option<Deployment>, StoreError> {
        let deployment = match (&run.deployment_id, &run.lock_to_version) {
            (Some(id), _) => self.store.deployment(&run.environment_id, id).await?,
            (None, Some(version)) => {
                self.store
                    .deployment_by_version(&run.environment_id, version)
                    .await?
            }
            (None, None) => self.store.latest_deployment(&run.environment_id).await?,
        };
        Ok(deployment.filter(|d| d.tasks.iter().any(|t| t.id == run.task_id)))
    }

    /// A claimed run that cannot start fails as SYSTEM_FAILURE without an attempt.
    pub(super) async fn fail_unstarted(&self, run: &Run, code: &str, message: String) {
        let kind = FailureKind::System;
        let Ok(t) = transition(
            &run_state(run),
            Event::Fail { kind, jitter: 0.0 },
            self.now(),
        ) else {
            return;
        };
        let update = RunUpdate {
            error: Some(RunError::coded(code, message)),
            ..run_update(run, &t, self.now())
        };
        match self.end_run(run, update, AttemptStatus::Failed).await {
            Ok(resumed) => self.activate(resumed),
            Err(e) => tracing::error!(run = %run.id, error = %e, "could not fail the run"),
        }
    }
}
