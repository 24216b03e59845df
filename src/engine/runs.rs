//! What a client does to a run: cancel (cascading to its children), replay, reschedule, tags,
//! metadata, and forgetting an idempotency key.

use super::*;

/// How many times a compare-and-set is retried against concurrent changes before giving up.
pub(super) const CAS_RETRIES: usize = 8;

/// What a replay changes from the original run; `None` (and default options) keep the
/// original's payload, tags, machine and metadata.
#[derive(Debug, Clone, Default)]
pub struct ReplayChanges {
    /// JSON text.
    pub payload: Option<String>,
    pub tags: Option<Vec<String>>,
    pub options: TriggerOptions,
}

/// Metadata operations for a run, its parent and its root (the metadata endpoint's
/// `operations`, `parentOperations` and `rootOperations`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataChanges {
    pub current: Vec<MetadataOp>,
    pub parent: Vec<MetadataOp>,
    pub root: Vec<MetadataOp>,
}

/// The result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    /// The run had already finished with this status; nothing changed.
    AlreadyFinished(RunStatus),
}

impl Engine {
    /// A new run with the same task, payload, tags and metadata, on the latest version, but for
    /// what `changes` gives instead (Trigger.dev's replay body).
    pub async fn replay(
        &self,
        env: &Environment,
        run_id: &str,
        changes: ReplayChanges,
    ) -> Result<Run, EngineError> {
        let run = self.find(env, run_id).await?;
        let mut options = changes.options;
        options.tags = changes.tags.unwrap_or(run.tags);
        options.machine = options.machine.or(Some(run.machine));
        options.metadata = options.metadata.or(run.metadata);
        let item = TriggerItem {
            task_id: run.task_id,
            payload: changes.payload.unwrap_or(run.payload),
            options,
        };
        Ok(self.trigger(env, item).await?.run)
    }

    /// Changes the delay of a DELAYED run.
    pub async fn reschedule(
        &self,
        env: &Environment,
        run_id: &str,
        delay: Delay,
    ) -> Result<Run, EngineError> {
        let run = self.find(env, run_id).await?;
        if transition(&run_state(&run), Event::Reschedule, self.now()).is_err() {
            return Err(EngineError::NotDelayed(run.status));
        }
        let now = self.now();
        let until = match delay {
            Delay::For(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Delay::Until(at) => at.max(now),
        };
        match self.store.reschedule(&env.id, &run.id, until, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                let status = self.find(env, run_id).await?.status;
                return Err(EngineError::NotDelayed(status));
            }
            Err(e) => return Err(e.into()),
        }
        self.wake();
        self.find(env, run_id).await
    }

    /// Adds tags to a run (at most [`MAX_TAGS`] in all).
    pub async fn add_tags(
        &self,
        env: &Environment,
        run_id: &str,
        tags: Vec<String>,
    ) -> Result<Vec<String>, EngineError> {
        let run = self.find(env, run_id).await?;
        self.store
            .add_tags(&env.id, &run.id, tags, MAX_TAGS, self.now())
            .await?
            .map_err(EngineError::TooManyTags)
    }

    /// Applies metadata operations to a run's metadata; returns the new metadata (JSON text).
    pub async fn update_metadata(
        &self,
        env: &Environment,
        run_id: &str,
        changes: MetadataChanges,
    ) -> Result<String, EngineError> {
        let run = self.find(env, run_id).await?;
        // A run without a parent is its own parent and root (Trigger.dev's rule).
        let parent = run.parent_run_id.clone().unwrap_or_else(|| run.id.clone());
        let root = run.root_run_id.clone().unwrap_or_else(|| run.id.clone());
        let mut current = None;
        for (id, ops) in [
            (&run.id, changes.current),
            (&parent, changes.parent),
            (&root, changes.root),
        ] {
            if ops.is_empty() && id != &run.id {
                continue;
            }
            let now = self.now();
            let after = self
                .store
                .change_metadata(&env.id, id, now, ops, None)
                .await??;
            if id == &run.id {
                current = Some(after);
            }
        }
        Ok(current.unwrap_or_else(|| "{}".to_owned()))
    }

    /// Forgets an idempotency key so the next trigger with it makes a new run.
    pub async fn reset_idempotency_key(
        &self,
        env: &Environment,
        key: &str,
        task_id: Option<String>,
    ) -> Result<usize, EngineError> {
        Ok(self
            .store
            .reset_idempotency_key(&env.id, key, task_id)
            .await?)
    }

    pub(super) async fn find(&self, env: &Environment, run_id: &str) -> Result<Run, EngineError> {
        self.store
            .run(&env.id, run_id)
            .await?
            .ok_or_else(|| EngineError::RunNotFound(run_id.to_owned()))
    }

    /// Cancels a run in any non-final status; an executing attempt is interrupted within one
    /// epoch tick (25 ms if it waits inside a host call), on another host sharing the database
    /// as soon as that host hears of the cancel.
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
            let Ok(t) = transition(&run_state(&run), Event::Cancel, self.now()) else {
                return Ok(CancelOutcome::AlreadyFinished(run.status));
            };
            let update = RunUpdate {
                error: Some(RunError::coded("TASK_RUN_CANCELLED", "Canceled by user")),
                ..run_update(&run, &t, self.now())
            };
            match self.end_run(&run, update, AttemptStatus::Canceled).await {
                Ok(resumed) => {
                    self.activate(resumed);
                    if t.effects.contains(&Effect::InterruptAttempt)
                        && let Some(handle) = self.executing_handle(&run.id)
                    {
                        handle.cancel();
                    }
                    // Its children go with it.
                    for child in self.store.live_children(&env.id, &run.id).await? {
                        Box::pin(self.cancel(env, &child)).await?;
                    }
                    return Ok(CancelOutcome::Canceled);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended)
    }

    /// Applies a change that ends a run not executing now. A checkpointed attempt (the run waits,
    /// or was queued to continue) is closed with `attempt_status` and its journal dropped.
    pub(super) async fn end_run(
        &self,
        run: &Run,
        update: RunUpdate,
        attempt_status: AttemptStatus,
    ) -> Result<Vec<Lane>, StoreError> {
        if run.checkpointed && run.status != RunStatus::Executing {
            let error = update.error.clone();
            Engine::durably(self.store.finish_attempt(FinishAttempt::closing(
                update,
                run.attempt_count,
                attempt_status,
                error,
            )))
            .await
        } else {
            self.store.update_run(update).await
        }
    }

    pub(super) fn executing_handle(&self, run_id: &str) -> Option<CancelHandle> {
        self.executing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .cloned()
    }
}
