//! Bulk actions (Trigger.dev's `runs.bulk`): cancel or replay a set of runs chosen by ids or by a
//! filter (the set is fixed when the action is made), carried out by a background task in batches
//! of [`BULK_BATCH`] runs, a few at once, each batch counted in one write; abortable between
//! batches, and carried on after a restart from the last batch counted.
//!
//! A batch interrupted by a stop is done again on the next start: a run it had canceled then
//! counts as a success if it was canceled after the action was made; a replay carries an
//! idempotency key per (action, run), so it is not made twice.

use std::sync::Arc;

use super::*;
use crate::model::{BulkAction, BulkKind, BulkStatus};
use crate::store::{BulkProgress, NewBulkAction, RunFilter};

/// Most runs an action by ids may name (Trigger.dev's `BULK_ACTION_MAX_RUN_IDS`).
pub const MAX_BULK_RUN_IDS: usize = 500;

/// Most runs a filter may select (kiln's bound on the set it fixes when the action is made).
pub const MAX_BULK_FILTER_RUNS: usize = 10_000;

/// Runs per batch, and the pause between batches (Trigger.dev's).
pub const BULK_BATCH: usize = 100;
const BULK_PAUSE: Duration = Duration::from_millis(200);

/// Runs of a batch done at once.
const AT_ONCE: usize = 5;

/// Which runs an action is for.
#[derive(Debug, Clone)]
pub enum BulkSelection {
    Ids(Vec<String>),
    Filter(RunFilter),
}

impl Engine {
    /// Makes a bulk action (its runs fixed now) and starts carrying it out.
    pub async fn create_bulk_action(
        self: &Arc<Self>,
        env: &Environment,
        kind: BulkKind,
        name: Option<String>,
        selection: BulkSelection,
    ) -> Result<BulkAction, EngineError> {
        let run_ids = match selection {
            BulkSelection::Ids(ids) => ids,
            BulkSelection::Filter(filter) => {
                let mut ids = Vec::new();
                let mut after = None;
                loop {
                    let page = self
                        .store
                        .list_runs(&env.id, filter.clone(), 100, after, None)
                        .await?;
                    ids.extend(page.runs.iter().map(|r| r.id.clone()));
                    if ids.len() >= MAX_BULK_FILTER_RUNS || page.next.is_none() {
                        break;
                    }
                    after = page.next;
                }
                ids.truncate(MAX_BULK_FILTER_RUNS);
                ids
            }
        };
        let action = self
            .store
            .create_bulk_action(NewBulkAction {
                environment_id: env.id.clone(),
                name,
                kind,
                run_ids,
                now: self.now(),
            })
            .await?;
        if action.status == BulkStatus::Pending {
            self.clone().carry_out(action.clone(), env.clone(), false);
        }
        Ok(action)
    }

    pub async fn bulk_action(
        &self,
        env: &Environment,
        id: &str,
    ) -> Result<Option<BulkAction>, EngineError> {
        Ok(self.store.bulk_action(&env.id, id).await?)
    }

    pub async fn list_bulk_actions(
        &self,
        env: &Environment,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<BulkAction>, bool), EngineError> {
        Ok(self
            .store
            .list_bulk_actions(&env.id, limit, after, before)
            .await?)
    }

    /// Aborts a pending action (it stops after its current batch); returns it as it is now.
    pub async fn abort_bulk_action(
        &self,
        env: &Environment,
        id: &str,
    ) -> Result<Option<BulkAction>, EngineError> {
        Ok(self
            .store
            .abort_bulk_action(&env.id, id, self.now())
            .await?)
    }

    /// Carries on the actions a stopped host left unfinished.
    pub async fn resume_bulk_actions(self: &Arc<Self>) -> Result<usize, EngineError> {
        let pending = self.store.pending_bulk_actions().await?;
        let count = pending.len();
        for action in pending {
            if let Some(env) = self.store.environment(&action.environment_id).await? {
                self.clone().carry_out(action, env, true);
            }
        }
        Ok(count)
    }

    fn carry_out(self: Arc<Self>, action: BulkAction, env: Environment, resumed: bool) {
        tokio::spawn(async move {
            if let Err(e) = self.run_bulk(action, &env, resumed).await {
                tracing::error!(error = %e, "a bulk action stopped; the next start carries it on");
            }
        });
    }

    async fn run_bulk(
        &self,
        mut action: BulkAction,
        env: &Environment,
        mut resumed: bool,
    ) -> Result<(), EngineError> {
        while action.status == BulkStatus::Pending && !self.stopping.load(Ordering::SeqCst) {
            let runs = self
                .store
                .bulk_action_runs(&action.id, action.processed, BULK_BATCH)
                .await?;
            let mut progress = BulkProgress {
                from: action.processed,
                done: u32::try_from(runs.len()).unwrap_or(u32::MAX),
                success: 0,
                failure: 0,
                now: 0,
            };
            for group in runs.chunks(AT_ONCE) {
                if self.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let outcomes = futures_util::future::join_all(
                    group
                        .iter()
                        .map(|run| self.bulk_one(&action, env, run, resumed)),
                )
                .await;
                for ok in outcomes {
                    if ok {
                        progress.success += 1;
                    } else {
                        progress.failure += 1;
                    }
                }
            }
            progress.now = self.now();
            action = match self
                .store
                .record_bulk_progress(&action.id, progress)
                .await?
            {
                Some(now) if now.processed == progress.from => return Ok(()), // another worker has it
                Some(now) => now,
                None => return Ok(()),
            };
            resumed = false;
            if action.status == BulkStatus::Pending {
                tokio::time::sleep(BULK_PAUSE).await;
                // Aborted meanwhile?
                match self.store.bulk_action(&env.id, &action.id).await? {
                    Some(now) => action = now,
                    None => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Does the action to one run; whether it counts as a success.
    async fn bulk_one(
        &self,
        action: &BulkAction,
        env: &Environment,
        run_id: &str,
        resumed: bool,
    ) -> bool {
        match action.kind {
            BulkKind::Cancel => match self.cancel(env, run_id).await {
                Ok(CancelOutcome::Canceled) => true,
                // Done again after a stop: this action may be what canceled it.
                Ok(CancelOutcome::AlreadyFinished(RunStatus::Canceled)) if resumed => self
                    .store
                    .run(&env.id, run_id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.updated_at >= action.created_at),
                Ok(CancelOutcome::AlreadyFinished(_)) | Err(_) => false,
            },
            BulkKind::Replay => {
                let changes = ReplayChanges {
                    options: TriggerOptions {
                        idempotency_key: Some(format!("{}:{run_id}", action.id)),
                        ..TriggerOptions::default()
                    },
                    ..ReplayChanges::default()
                };
                self.replay(env, run_id, changes).await.is_ok()
            }
        }
    }
}
