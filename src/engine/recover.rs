//! Recovery at start: runs a previous process left claimed are queued again, runs it left executing
//! count as a stalled attempt — or continue from their journal when they have one.

use super::*;

impl Engine {
    /// Puts runs a previous process left claimed or executing back on their way: claimed runs are
    /// queued again, executing ones count as a stalled attempt (retried per policy).
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let runs = self.store.in_flight_runs().await?;
        let count = runs.len();
        for run in runs {
            let now = self.now();
            let Ok(t) = transition(&run_state(&run), Event::Recover, now) else {
                continue;
            };
            let error = RunError::coded(
                FailureKind::Stalled
                    .code()
                    .unwrap_or("TASK_RUN_STALLED_EXECUTING"),
                "the host stopped while this attempt was executing",
            );
            // A checkpointed attempt continues from its journal; any other executing one ended.
            let continues = t.state.checkpointed;
            let update = RunUpdate {
                error: t.state.status.is_final().then(|| error.clone()),
                ..run_update(&run, &t, now)
            };
            let result = if run.status == RunStatus::Executing {
                Engine::durably(self.store.finish_attempt(FinishAttempt::closing(
                    update,
                    run.attempt_count,
                    if continues {
                        AttemptStatus::Executing
                    } else {
                        AttemptStatus::Failed
                    },
                    (!continues).then_some(error),
                )))
                .await
            } else {
                self.store.update_run(update).await
            };
            match result {
                Ok(resumed) => self.activate(resumed),
                Err(e) => tracing::warn!(run = %run.id, error = %e, "could not recover run"),
            }
        }
        Ok(count)
    }
}
