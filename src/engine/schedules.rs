//! Cron schedules in the engine: creating and changing imperative schedules (validated with
//! [`crate::schedule`]), keeping an environment's declarative schedules in step with its deployed
//! version, and firing due schedules from the dispatcher's timer pass.
//!
//! A fire plans its run here (payload, next fire time, the run's options resolved like any
//! trigger) and the store carries it out in one transaction with compare-and-set on the
//! schedule's `next_fire_at`, so a fire never makes two runs. A host that was stopped across
//! several ticks fires once, for the latest tick, and then keeps to the cron.

use std::collections::HashMap;

use super::{Engine, TriggerItem};
use crate::model::{Deployment, Environment, Millis, RunStatus, TriggerOptions};
use crate::schedule::{self, CronSchedule, FirePlan, Schedule, ScheduleType, SpecError};
use crate::store::{DeclaredSchedule, ScheduleFire, ScheduleRefusal, ScheduleSpec, StoreError};

/// Most schedules one environment may have (declarative and imperative together), so a client
/// cannot grow the timer pass without bound.
pub const MAX_SCHEDULES: usize = 10_000;
/// Longest deduplication key or external id.
pub const MAX_SCHEDULE_KEY_LEN: usize = 2_048;
/// Schedules fired per timer pass, so one pass never holds the writer for long.
const SCHEDULE_BATCH: usize = 500;
/// How long the timer pass waits before looking again after a store error.
const RETRY_AFTER_ERROR_MS: Millis = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(
        "task `{task}` is not in the latest deployed version ({version}); deploy a version that has it, or use one of: {available}"
    )]
    UnknownTask {
        task: String,
        version: String,
        available: String,
    },
    #[error(
        "task `{0}` cannot be scheduled: no version is deployed in this environment yet; deploy a component with `kiln deploy <file.wasm>` first"
    )]
    NothingDeployed(String),
    #[error("schedule `{0}` not found")]
    NotFound(String),
    #[error(
        "schedule `{0}` is declarative: it comes from its task's definition; change or remove the task's cron and deploy"
    )]
    Declarative(String),
    #[error("this environment has {0} schedules, the most it may have; delete some first")]
    TooMany(usize),
    #[error("{0} must be 1 to {MAX_SCHEDULE_KEY_LEN} characters")]
    BadKey(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a client asks a schedule to be.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub task: String,
    pub cron: String,
    /// IANA name; `None` is UTC.
    pub timezone: Option<String>,
    pub external_id: Option<String>,
}

fn check_key(field: &'static str, value: &str) -> Result<(), ScheduleError> {
    if value.is_empty() || value.len() > MAX_SCHEDULE_KEY_LEN {
        return Err(ScheduleError::BadKey(field));
    }
    Ok(())
}

impl Engine {
    /// Validates a request against the cron rules and the environment's latest version; returns
    /// the fields to store and the first fire time from now.
    async fn schedule_spec(
        &self,
        env: &Environment,
        request: ScheduleRequest,
    ) -> Result<(ScheduleSpec, Millis), ScheduleError> {
        let cron = CronSchedule::parse(&request.cron, request.timezone.as_deref())?;
        if let Some(external) = &request.external_id {
            check_key("externalId", external)?;
        }
        let deployment = self
            .store
            .latest_deployment(&env.id)
            .await?
            .ok_or_else(|| ScheduleError::NothingDeployed(request.task.clone()))?;
        if !deployment.tasks().any(|t| t.id == request.task) {
            let available: Vec<&str> = deployment.tasks().map(|t| t.id.as_str()).collect();
            return Err(ScheduleError::UnknownTask {
                task: request.task,
                version: deployment.version.clone(),
                available: available.join(", "),
            });
        }
        let next = cron
            .next_after(self.now())
            .ok_or_else(|| SpecError::NeverFires(request.cron.clone()))?;
        Ok((
            ScheduleSpec {
                task_id: request.task,
                cron: cron.expression().to_owned(),
                timezone: cron.timezone().to_owned(),
                external_id: request.external_id,
            },
            next,
        ))
    }

    /// Lets the timer pass know of a schedule's (maybe earlier) next fire.
    fn schedule_changed(&self, schedule: &Schedule) {
        self.arm_timer(schedule.next_fire_at);
        self.wake.notify_one();
    }

    /// Creates an imperative schedule, or updates the one with this deduplication key. Returns
    /// the schedule and whether it is new.
    pub async fn create_schedule(
        &self,
        env: &Environment,
        deduplication_key: String,
        request: ScheduleRequest,
    ) -> Result<(Schedule, bool), ScheduleError> {
        check_key("deduplicationKey", &deduplication_key)?;
        let (spec, next) = self.schedule_spec(env, request).await?;
        let (schedule, created) = self
            .store
            .upsert_schedule(
                &env.id,
                deduplication_key,
                spec,
                next,
                MAX_SCHEDULES,
                self.now(),
            )
            .await?
            .map_err(|r| refusal(r, ""))?;
        self.schedule_changed(&schedule);
        Ok((schedule, created))
    }

    /// Replaces the task, cron, time zone and external id of an imperative schedule.
    pub async fn update_schedule(
        &self,
        env: &Environment,
        id: &str,
        request: ScheduleRequest,
    ) -> Result<Schedule, ScheduleError> {
        // Report a missing or declarative schedule before any problem with the request.
        if self.schedule(env, id).await?.kind == ScheduleType::Declarative {
            return Err(ScheduleError::Declarative(id.to_owned()));
        }
        let (spec, next) = self.schedule_spec(env, request).await?;
        let schedule = self
            .store
            .update_schedule(&env.id, id, spec, next, self.now())
            .await?
            .map_err(|r| refusal(r, id))?;
        self.schedule_changed(&schedule);
        Ok(schedule)
    }

    /// Deletes an imperative schedule; returns it as it was.
    pub async fn delete_schedule(
        &self,
        env: &Environment,
        id: &str,
    ) -> Result<Schedule, ScheduleError> {
        self.store
            .delete_schedule(&env.id, id)
            .await?
            .map_err(|r| refusal(r, id))
    }

    /// Activates or deactivates a schedule. An activated schedule fires from its next tick after
    /// now; a deactivated one has no next fire.
    pub async fn set_schedule_active(
        &self,
        env: &Environment,
        id: &str,
        active: bool,
    ) -> Result<Schedule, ScheduleError> {
        let current = self.schedule(env, id).await?;
        let next =
            CronSchedule::parse(&current.cron, Some(&current.timezone))?.next_after(self.now());
        let schedule = self
            .store
            .set_schedule_active(&env.id, id, active, next, self.now())
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))?;
        self.schedule_changed(&schedule);
        Ok(schedule)
    }

    /// A schedule of the environment.
    pub async fn schedule(&self, env: &Environment, id: &str) -> Result<Schedule, ScheduleError> {
        self.store
            .schedule(&env.id, id)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))
    }

    /// A page (from 1) of the environment's schedules, newest first, and how many there are.
    pub async fn list_schedules(
        &self,
        env: &Environment,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<Schedule>, u64), ScheduleError> {
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        Ok(self.store.list_schedules(&env.id, offset, per_page).await?)
    }

    /// Makes the environment's declarative schedules those `deployment` declares.
    pub(super) async fn sync_declarative(
        &self,
        env: &Environment,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let declared: Vec<DeclaredSchedule> = deployment
            .tasks()
            .filter_map(|t| {
                let s = t.schedule.as_ref()?;
                let cron = CronSchedule::parse(&s.cron, Some(&s.timezone)).ok()?;
                Some(DeclaredSchedule {
                    task_id: t.id.clone(),
                    cron: cron.expression().to_owned(),
                    timezone: cron.timezone().to_owned(),
                    next_fire_at: cron.next_after(now),
                })
            })
            .collect();
        let removed = self
            .store
            .sync_declarative_schedules(&env.id, declared, now)
            .await?;
        if removed > 0 {
            tracing::info!(schedules = removed, version = %deployment.version, "removed declarative schedules the new version no longer declares");
        }
        self.arm_timer(self.store.next_schedule_fire().await?);
        self.wake.notify_one();
        Ok(())
    }

    /// Brings every environment's declarative schedules in step with its latest version (a host
    /// that stopped between a deploy and its schedule update catches up here).
    pub async fn sync_declarative_schedules(&self) -> Result<(), StoreError> {
        for env in self.store.deployed_environments().await? {
            if let Some(latest) = self.store.latest_deployment(&env.id).await? {
                self.sync_declarative(&env, &latest).await?;
            }
        }
        Ok(())
    }

    /// Fires the schedules that are due (a batch per call). Returns when the timer pass should
    /// look at schedules again: now if more may be due, else the next fire time.
    pub(super) async fn fire_schedules(&self, now: Millis) -> Option<Millis> {
        let retry = Some(now.saturating_add(RETRY_AFTER_ERROR_MS));
        let due = match self.store.due_schedules(now, SCHEDULE_BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "reading due schedules failed");
                return retry;
            }
        };
        if !due.is_empty() {
            let full = due.len() == SCHEDULE_BATCH;
            let mut latest: HashMap<String, Option<Deployment>> = HashMap::new();
            let mut fires = Vec::with_capacity(due.len());
            for s in due {
                let Some(expected) = s.next_fire_at else {
                    continue;
                };
                if !latest.contains_key(&s.environment.id) {
                    match self.store.latest_deployment(&s.environment.id).await {
                        Ok(d) => latest.insert(s.environment.id.clone(), d),
                        Err(e) => {
                            tracing::error!(error = %e, "reading the deployment of a schedule failed");
                            return retry;
                        }
                    };
                }
                let deployment = latest.get(&s.environment.id).and_then(Option::as_ref);
                fires.push(self.plan_fire(&s, expected, deployment, now));
            }
            match self.store.fire_schedules(fires).await {
                Ok(inserted) => {
                    for i in inserted.iter().flatten().filter(|i| !i.cached) {
                        self.arm_timer(i.run.expires_at);
                    }
                    self.activate(
                        inserted
                            .iter()
                            .flatten()
                            .filter(|i| !i.cached && i.run.status == RunStatus::Queued)
                            .map(|i| i.run.lane()),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "firing schedules failed");
                    return retry;
                }
            }
            if full {
                return Some(now);
            }
        }
        match self.store.next_schedule_fire().await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "reading the next schedule fire failed");
                retry
            }
        }
    }

    /// The fire of a due schedule: its run (unless the task is in no deployed version, when the
    /// tick passes without one) and its next fire time.
    fn plan_fire(
        &self,
        s: &Schedule,
        expected: Millis,
        deployment: Option<&Deployment>,
        now: Millis,
    ) -> ScheduleFire {
        let cron = match CronSchedule::parse(&s.cron, Some(&s.timezone)) {
            Ok(cron) => cron,
            Err(e) => {
                // Stored schedules were valid; a time zone can still leave the database.
                tracing::error!(schedule = %s.id, error = %e, "the schedule no longer parses; it stops firing");
                return ScheduleFire {
                    schedule_id: s.id.clone(),
                    expected_next: expected,
                    timestamp: expected,
                    next_fire_at: None,
                    run: None,
                };
            }
        };
        let plan = FirePlan::new(&cron, expected, now);
        let deployment = deployment.filter(|d| d.tasks().any(|t| t.id == s.task_id));
        if deployment.is_none() {
            tracing::warn!(schedule = %s.id, task = %s.task_id, "the task is in no deployed version; the tick passes without a run");
        }
        let run = deployment.map(|d| {
            let item = TriggerItem {
                task_id: s.task_id.clone(),
                payload: schedule::payload(s, &plan),
                options: TriggerOptions {
                    idempotency_key: Some(schedule::fire_key(&s.id, plan.timestamp)),
                    ..TriggerOptions::default()
                },
            };
            self.new_run(&s.environment.id, item, Some(d), now)
        });
        ScheduleFire {
            schedule_id: s.id.clone(),
            expected_next: expected,
            timestamp: plan.timestamp,
            next_fire_at: plan.next_fire_at(),
            run,
        }
    }
}

fn refusal(r: ScheduleRefusal, id: &str) -> ScheduleError {
    match r {
        ScheduleRefusal::NotFound => ScheduleError::NotFound(id.to_owned()),
        ScheduleRefusal::Declarative => ScheduleError::Declarative(id.to_owned()),
        ScheduleRefusal::TooMany(n) => ScheduleError::TooMany(n),
    }
}
