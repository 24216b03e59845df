//! Deploying through the engine: the deployer validates and stores the version; the engine then
//! applies its queues' limits, queues the runs that waited for a version with its tasks, and syncs
//! the environment's declarative schedules.

use super::*;

impl Engine {
    /// Deploys one component as the environment's new version (see [`Engine::deploy_components`]).
    pub async fn deploy(
        &self,
        env: &Environment,
        bytes: Vec<u8>,
    ) -> Result<Deployment, EngineError> {
        self.deploy_components(env, vec![Upload::unnamed(bytes)])
            .await
    }

    /// Deploys components together as one new version (each task run by the component that
    /// defines it), waiting for it to compile, and queues the runs that were waiting for a
    /// version with their tasks. [`Engine::start_deploy`] does the same in the background.
    pub async fn deploy_components(
        &self,
        env: &Environment,
        uploads: Vec<Upload>,
    ) -> Result<Deployment, EngineError> {
        let admitted = self.deployer.admit(env, uploads)?;
        let progress = admitted.progress();
        self.deploy_admitted(env, admitted, &progress).await
    }

    /// What a stored version changes: its queues' limits, the runs that waited for its tasks,
    /// the environment's declarative schedules, and the artifacts no run needs any more.
    pub(super) async fn apply_deployment(
        &self,
        env: &Environment,
        deployment: &Deployment,
    ) -> Result<(), EngineError> {
        // The deployment set its queues' limits from the definitions.
        for queue in self.store.environment_queues(&env.id).await? {
            self.apply_queue(&queue);
        }
        let tasks = deployment.tasks().map(|t| t.id.clone()).collect();
        let lanes = self
            .store
            .enqueue_pending_version(&env.id, tasks, self.now())
            .await?;
        if !lanes.is_empty() {
            tracing::info!(version = %deployment.version, "queued runs that waited for a version");
            self.activate(lanes);
        }
        // The deployment is stored either way; a failure here is repaired at the next start.
        if let Err(e) = self.sync_declarative(env, deployment).await {
            tracing::error!(error = %e, version = %deployment.version, "updating the declarative schedules failed");
        }
        self.wake.notify_one();
        self.prune_artifacts().await;
        Ok(())
    }

    /// Removes the compiled artifacts of components no run can use any more (after a deploy,
    /// and at start). A failure is logged: it only costs disk space.
    pub async fn prune_artifacts(&self) {
        match self.store.usable_component_digests().await {
            Ok(usable) => {
                let usable = usable.into_iter().collect();
                let (files, bytes) = self.deployer.prune_artifacts(&usable);
                if files > 0 {
                    tracing::info!(files, bytes, "removed compiled artifacts no run can use");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list the components runs may use"),
        }
    }
}

impl Engine {
    /// Loads the code of every environment's latest version into memory (from its artifact, or
    /// compiled if this data dir has none, as on a host that just joined a shared database)
    /// before the dispatcher claims a run: a claimed run would otherwise hold its slot, and count
    /// an attempt, through the compile. A component that does not load is left to the attempt
    /// that needs it, which reports why.
    pub async fn load_latest_versions(&self) {
        let environments = match self.store.environments().await {
            Ok(environments) => environments,
            Err(e) => {
                tracing::warn!(error = %e, "reading the environments to load their versions failed");
                return;
            }
        };
        for info in environments {
            let env = &info.environment.id;
            let Ok(Some(deployment)) = self.store.latest_deployment(env).await else {
                continue;
            };
            for component in &deployment.components {
                if let Err(e) = self.deployer.prepared(env, &component.digest).await {
                    tracing::warn!(component = component.label(), error = %e, "loading a component at start failed");
                }
            }
        }
    }
}
