//! Deploys in the background. An upload passes its cheap checks at once, then waits for the
//! compiler and compiles while the client follows its progress (`GET /api/v1/deploys/{id}`);
//! the version exists only when every component compiled and declared valid tasks. Runs
//! triggered meanwhile for a task only the new version has wait as `PENDING_VERSION` and are
//! queued when it lands.
//!
//! Deploys under way live in this process only: a host that stops drops them unanswered (nothing
//! was stored, so the client deploys again). Finished ones are kept for an hour so a client that
//! looked away can still read how it ended.

use std::collections::VecDeque;

use crate::deploy::{Admitted, Progress, Snapshot};

use super::*;

/// Deploys of one environment that may be unfinished at once.
pub const MAX_DEPLOYS_PER_ENVIRONMENT: usize = 2;
/// Deploys of the whole host that may be unfinished at once (each holds its components' bytes).
pub const MAX_DEPLOYS: usize = 8;
/// How long a finished deploy can still be read.
const KEEP_FINISHED: Duration = Duration::from_secs(60 * 60);
/// Finished deploys kept at most, the oldest going first.
const MAX_KEPT: usize = 256;

/// How a deploy stands.
#[derive(Debug, Clone)]
pub enum DeployState {
    /// Waiting for the compiler, compiling or checking: how far it got.
    Running(Snapshot),
    Deployed(Arc<Deployment>),
    /// Refused, with the error the deploy would have answered had the client waited.
    Failed(Arc<EngineError>),
}

/// A deploy as a client reads it.
#[derive(Debug, Clone)]
pub struct DeployView {
    pub id: String,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    /// Each component's name (its file name, else its content digest) and size in bytes.
    pub components: Vec<(String, usize)>,
    pub state: DeployState,
}

enum Outcome {
    Running(Arc<Progress>),
    Deployed(Arc<Deployment>),
    Failed(Arc<EngineError>),
}

struct Job {
    id: String,
    environment_id: String,
    created_at: Millis,
    components: Vec<(String, usize)>,
    outcome: Mutex<(Outcome, Option<Millis>)>,
    /// Becomes true when the deploy ends.
    done: watch::Sender<bool>,
}

impl Job {
    fn view(&self) -> DeployView {
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        DeployView {
            id: self.id.clone(),
            created_at: self.created_at,
            finished_at: outcome.1,
            components: self.components.clone(),
            state: match &outcome.0 {
                Outcome::Running(progress) => DeployState::Running(progress.snapshot()),
                Outcome::Deployed(d) => DeployState::Deployed(d.clone()),
                Outcome::Failed(e) => DeployState::Failed(e.clone()),
            },
        }
    }

    fn finished_at(&self) -> Option<Millis> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// The deploys this host is running or has finished lately, oldest first.
#[derive(Default)]
pub(super) struct Deploys {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Deploys {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// Starts a deploy in the background after its cheap checks (which refuse it at once), and
    /// answers how it stands. Refused while the environment or the host has as many unfinished
    /// deploys as it may.
    pub fn start_deploy(
        self: &Arc<Self>,
        env: &Environment,
        uploads: Vec<Upload>,
    ) -> Result<DeployView, EngineError> {
        let admitted = self.deployer.admit(env, uploads)?;
        let components: Vec<(String, usize)> = admitted
            .components()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect();
        let progress = Arc::new(admitted.progress());
        let now = self.now();
        let job = {
            let mut jobs = self.deploys.lock();
            forget_old(&mut jobs, now);
            let unfinished = jobs.iter().filter(|j| j.finished_at().is_none());
            let (all, here) = unfinished.fold((0, 0), |(all, here), j| {
                (all + 1, here + usize::from(j.environment_id == env.id))
            });
            if here >= MAX_DEPLOYS_PER_ENVIRONMENT {
                return Err(EngineError::TooManyDeploys {
                    count: here,
                    limit: MAX_DEPLOYS_PER_ENVIRONMENT,
                    scope: "this environment",
                });
            }
            if all >= MAX_DEPLOYS {
                return Err(EngineError::TooManyDeploys {
                    count: all,
                    limit: MAX_DEPLOYS,
                    scope: "the host",
                });
            }
            let job = Arc::new(Job {
                id: crate::model::new_id("deploy"),
                environment_id: env.id.clone(),
                created_at: now,
                components,
                outcome: Mutex::new((Outcome::Running(progress.clone()), None)),
                done: watch::channel(false).0,
            });
            jobs.push_back(job.clone());
            job
        };
        let view = job.view();
        let (engine, env) = (self.clone(), env.clone());
        tokio::spawn(async move {
            let ended = engine.deploy_admitted(&env, admitted, &progress).await;
            let outcome = match ended {
                Ok(deployment) => {
                    tracing::info!(deploy = %job.id, version = %deployment.version, "deployed");
                    Outcome::Deployed(Arc::new(deployment))
                }
                Err(e) => {
                    tracing::info!(deploy = %job.id, error = %e, "deploy refused");
                    Outcome::Failed(Arc::new(e))
                }
            };
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = (outcome, Some(engine.now()));
            job.done.send_replace(true);
        });
        Ok(view)
    }

    /// How a deploy of this environment stands, while it runs and for an hour after it ended.
    pub fn deploy_status(&self, env: &Environment, id: &str) -> Option<DeployView> {
        self.deploy_job(env, id).map(|job| job.view())
    }

    /// How a deploy stands once it ended, or after `timeout` if it has not.
    pub async fn wait_deploy(
        &self,
        env: &Environment,
        id: &str,
        timeout: Duration,
    ) -> Option<DeployView> {
        let job = self.deploy_job(env, id)?;
        let mut done = job.done.subscribe();
        // An error here is a closed channel: the job, which holds the sender, is gone.
        let _ = tokio::time::timeout(timeout, done.wait_for(|d| *d)).await;
        Some(job.view())
    }

    fn deploy_job(&self, env: &Environment, id: &str) -> Option<Arc<Job>> {
        self.deploys
            .lock()
            .iter()
            .find(|j| j.id == id && j.environment_id == env.id)
            .cloned()
    }

    /// Compiles and checks admitted components, stores them as the next version, and applies it
    /// (see [`Engine::deploy_components`]).
    pub(super) async fn deploy_admitted(
        &self,
        env: &Environment,
        admitted: Admitted,
        progress: &Progress,
    ) -> Result<Deployment, EngineError> {
        let deployment = self
            .deployer
            .deploy_admitted(env, admitted, progress)
            .await?;
        self.apply_deployment(env, &deployment).await?;
        Ok(deployment)
    }
}

/// Drops finished deploys past their time, and the oldest past the count kept.
fn forget_old(jobs: &mut VecDeque<Arc<Job>>, now: Millis) {
    let keep = i64::try_from(KEEP_FINISHED.as_millis()).unwrap_or(i64::MAX);
    jobs.retain(|j| {
        j.finished_at()
            .is_none_or(|at| now.saturating_sub(at) < keep)
    });
    let mut finished = jobs.iter().filter(|j| j.finished_at().is_some()).count();
    while finished > MAX_KEPT {
        let Some(oldest) = jobs.iter().position(|j| j.finished_at().is_some()) else {
            break;
        };
        jobs.remove(oldest);
        finished -= 1;
    }
}
