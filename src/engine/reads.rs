//! The read side the API uses: runs with what the run API shows beside them, lists, logs,
//! deployments, keys and the commit ticks realtime follows. Everything a handler reads goes through
//! here (or through the engine's other methods), never to the store directly, and every read of a
//! tenant's data is scoped to the caller's environment.

use tokio::sync::{broadcast, watch};

use super::{Engine, EngineError};
use crate::model::{Attempt, Deployment, Environment, LogLine, Run, RunStatus, WaitingFor};
use crate::store::{KeyInfo, NewKey, RunChanges, RunFilter, RunPage};

/// A run with its attempts and, while it waits, what it waits for.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub waiting_for: Vec<WaitingFor>,
}

impl Engine {
    /// The environment of an active secret key (looked up by its SHA-256 digest).
    pub async fn environment_for_key(
        &self,
        key_hash: [u8; 32],
    ) -> Result<Option<Environment>, EngineError> {
        Ok(self.store.environment_for_key(key_hash).await?)
    }

    /// Whether this is an admin key of the host (by digest).
    pub async fn is_admin_key(&self, key_hash: [u8; 32]) -> Result<bool, EngineError> {
        Ok(self.store.is_admin_key(key_hash).await?)
    }

    /// A run of the environment; another environment's run is not found, like a missing one.
    pub async fn run(&self, env: &Environment, run_id: &str) -> Result<Run, EngineError> {
        self.find(env, run_id).await
    }

    /// A run as the run API shows it, `None` if the environment has no such run.
    pub async fn run_view(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Option<RunView>, EngineError> {
        let Some(run) = self.store.run(environment_id, run_id).await? else {
            return Ok(None);
        };
        let attempts = self.store.attempts(environment_id, &run.id).await?;
        let waiting_for = if run.status == RunStatus::Waiting {
            self.store.waiting_for(environment_id, &run.id).await?
        } else {
            Vec::new()
        };
        Ok(Some(RunView {
            run,
            attempts,
            waiting_for,
        }))
    }

    /// The attempts of a run of the environment, oldest first.
    pub async fn attempts(
        &self,
        env: &Environment,
        run_id: &str,
    ) -> Result<Vec<Attempt>, EngineError> {
        let run = self.find(env, run_id).await?;
        Ok(self.store.attempts(&env.id, &run.id).await?)
    }

    /// A page of the environment's runs, newest first.
    pub async fn list_runs(
        &self,
        env: &Environment,
        filter: RunFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<RunPage, EngineError> {
        Ok(self
            .store
            .list_runs(&env.id, filter, limit, after, before)
            .await?)
    }

    /// Log lines of a run of the environment, at most `limit` after line `after`.
    pub async fn logs(
        &self,
        env: &Environment,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogLine)>, EngineError> {
        let run = self.find(env, run_id).await?;
        Ok(self.store.logs(&env.id, &run.id, after, limit).await?)
    }

    /// The environment's deployments, newest first.
    pub async fn deployments(&self, env: &Environment) -> Result<Vec<Deployment>, EngineError> {
        Ok(self.store.list_deployments(&env.id).await?)
    }

    /// The environment's newest deployment.
    pub async fn latest_deployment(&self, env: &Environment) -> Result<Deployment, EngineError> {
        self.store
            .latest_deployment(&env.id)
            .await?
            .ok_or(EngineError::NothingDeployed)
    }

    /// Ticks after every committed write.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.store.commits()
    }

    /// The runs each committed write group changed, from now on (realtime follows it).
    pub fn changes(&self) -> broadcast::Receiver<RunChanges> {
        self.store.changes()
    }

    /// Keeps resolving the runs each commit changed until `until` (realtime is followed).
    pub fn want_changes_until(&self, until: crate::model::Millis) {
        self.store.want_changes_until(until);
    }

    /// Runs by id, of any environment: for watchers of [`Engine::changes`], which keep only
    /// their own environment's. One read however many.
    pub async fn changed_runs(&self, ids: Vec<String>) -> Result<Vec<Run>, EngineError> {
        Ok(self.store.changed_runs(ids).await?)
    }

    /// Runs by id (any environment's, as [`Engine::changed_runs`]) as the run API shows them.
    pub async fn run_views(&self, ids: Vec<String>) -> Result<Vec<RunView>, EngineError> {
        Ok(self
            .store
            .runs_in_detail(ids)
            .await?
            .into_iter()
            .map(|d| RunView {
                run: d.run,
                attempts: d.attempts,
                waiting_for: d.waiting_for,
            })
            .collect())
    }

    /// Makes a secret key for `project`/`environment` (creating them on first use), kept as its
    /// digest and a sealed copy.
    pub async fn create_key(
        &self,
        project: &str,
        environment: &str,
        key: NewKey,
    ) -> Result<KeyInfo, EngineError> {
        let key = crate::keys::sealed(key, &self.secrets);
        Ok(self
            .store
            .create_key(project, environment, key, self.now())
            .await?)
    }

    /// Every secret key of the host (never the secret), newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, EngineError> {
        Ok(self.store.list_keys().await?)
    }

    /// Revokes a key; `None` if there is no such key.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<KeyInfo>, EngineError> {
        Ok(self.store.revoke_key(id, self.now()).await?)
    }
}
