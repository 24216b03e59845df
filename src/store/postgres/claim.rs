//! The claim that starts: one write takes the planned heads of lanes from QUEUED straight to
//! EXECUTING with their attempt rows (claim is start). Each run is locked to its version (the one
//! it is already locked to, the one it asked for, or the environment's latest) unless no version
//! has its task: then a run that never started parks in PENDING_VERSION. What the attempt runs
//! with — the run's copy of its environment's variables, the allow-list, the journal of a
//! checkpointed attempt — is read in the same write, so it matches what the claim did.
//!
//! The ready index (`runs_ready`) is ordered by lane then score, so a lane's head is an index
//! seek that never passes another lane's runs, however many are queued.
//!
//! Several claims may run at once (on one host's pool, or on hosts sharing the database): a
//! lane's heads are read with `FOR NO KEY UPDATE SKIP LOCKED`, so each claim locks the runs it
//! takes and passes over those another claim holds; two claims of one lane get different runs,
//! or none. (`NO KEY`: the rows' keys do not change, and a key-share lock — the one a foreign
//! key check takes when another transaction inserts a row naming the run — makes no claim pass
//! a run by.)
//!
//! **Limits are enforced here, across hosts.** The engine's scheduler plans within what its own
//! host holds; the claim counts what every host holds. It takes an advisory lock per environment
//! (sorted, before any row), so claims of one environment count one after the other and each
//! sees the runs the one before it started (committed before its lock was released); then it
//! counts the runs holding a slot (DEQUEUED or EXECUTING, the `runs_holding` index) of the
//! environment and of each lane, against the environment's limit (its own, else the host
//! default), the lane's queue limit (override, else definition; per concurrency key) and the
//! queue's pause flag, all as stored. A lane cut short by a limit answers `Claimed::Limited`.

use std::collections::HashMap;
use std::sync::LazyLock;

use deadpool_postgres::GenericClient;

use super::PostgresStore;
use super::deployments::NEWEST_FIRST;
use super::rows::{
    exec, flag, get, int, load_run, lock_sorted, outbound_hosts, query, query_one, query_opt,
};
use crate::model::{Lane, Millis, RunStatus, Step};
use crate::store::codec::status_guard;
use crate::store::{
    AttemptStart, Claimed, Durability, FinishAttempt, FinishedAndClaimed, Staged, StoreError,
    StoredVar,
};

/// A planned run starts a new attempt (`StartAttempt` from the queue), locked to its version.
pub(super) static START_CLAIMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{executing}', attempt_count = attempt_count + 1, \
           deployment_id = coalesce(deployment_id, $2), started_at = coalesce(started_at, $3), \
           updated_at = $3, host_id = $4, claim_id = $5 \
         WHERE id = $1 AND {guard} AND checkpointed = 0",
        executing = RunStatus::Executing.as_str(),
        guard = status_guard(
            Step::StartAttempt,
            RunStatus::Executing,
            &[RunStatus::Queued]
        )
    )
});

/// A planned run whose attempt has a checkpoint continues it (same attempt number).
pub(super) static CONTINUE_CLAIMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{executing}', updated_at = $2, host_id = $3, claim_id = $4 \
         WHERE id = $1 AND {guard} AND checkpointed = 1",
        executing = RunStatus::Executing.as_str(),
        guard = status_guard(
            Step::StartAttempt,
            RunStatus::Executing,
            &[RunStatus::Queued]
        )
    )
});

/// A planned run no version has a task for waits for one (`Park`, only if it never started).
pub(super) static PARK_CLAIMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{pending}', updated_at = $2 WHERE id = $1 AND {guard}",
        pending = RunStatus::PendingVersion.as_str(),
        guard = status_guard(Step::Park, RunStatus::PendingVersion, &[RunStatus::Queued])
    )
});

/// The columns of a head, from `runs`.
const HEAD_COLUMNS: &str =
    "id, environment_id, task_id, attempt_count, checkpointed, deployment_id, lock_to_version";

/// What a planned head needs for its start, read with the head.
struct Head {
    id: String,
    environment_id: String,
    task_id: String,
    attempt_count: u32,
    checkpointed: bool,
    deployment_id: Option<String>,
    lock_to_version: Option<String>,
}

/// Per-claim lookups that many runs of one environment share.
#[derive(Default)]
struct Lookups {
    /// (environment, version asked for) → the deployment that version is.
    deployments: HashMap<(String, Option<String>), Option<String>>,
    /// (deployment, task) → whether that deployment has the task.
    tasks: HashMap<(String, String), bool>,
    /// environment → its slugs, allow-list and whether it has variables.
    environments: HashMap<String, (String, String, Vec<String>, bool)>,
}

impl Lookups {
    async fn deployment(
        &mut self,
        c: &impl GenericClient,
        environment_id: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let key = (environment_id.to_owned(), version.map(str::to_owned));
        if let Some(found) = self.deployments.get(&key) {
            return Ok(found.clone());
        }
        let row = match version {
            Some(version) => {
                query_opt(
                    c,
                    "SELECT id FROM deployments WHERE environment_id = $1 AND version = $2",
                    &[&environment_id, &version],
                )
                .await?
            }
            // The newest, in the order `latest_deployment` reads (`deployments::NEWEST_FIRST`).
            None => {
                query_opt(
                    c,
                    &format!(
                        "SELECT id FROM deployments WHERE environment_id = $1 \
                         ORDER BY {NEWEST_FIRST} LIMIT 1"
                    ),
                    &[&environment_id],
                )
                .await?
            }
        };
        let found: Option<String> = row.map(|r| get(&r, 0)).transpose()?;
        self.deployments.insert(key, found.clone());
        Ok(found)
    }

    async fn has_task(
        &mut self,
        c: &impl GenericClient,
        deployment_id: &str,
        task_id: &str,
    ) -> Result<bool, StoreError> {
        let key = (deployment_id.to_owned(), task_id.to_owned());
        if let Some(has) = self.tasks.get(&key) {
            return Ok(*has);
        }
        let has = query_opt(
            c,
            "SELECT 1 FROM tasks WHERE deployment_id = $1 AND task_id = $2",
            &[&deployment_id, &task_id],
        )
        .await?
        .is_some();
        self.tasks.insert(key, has);
        Ok(has)
    }

    async fn environment(
        &mut self,
        c: &impl GenericClient,
        environment_id: &str,
    ) -> Result<(String, String, Vec<String>, bool), StoreError> {
        if let Some(found) = self.environments.get(environment_id) {
            return Ok(found.clone());
        }
        let row = query_one(
            c,
            "SELECT p.slug, e.slug, e.allowed_outbound_hosts FROM environments e \
             JOIN projects p ON p.id = e.project_id WHERE e.id = $1",
            &[&environment_id],
        )
        .await?;
        let (project, environment, hosts): (String, String, Option<String>) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        let has_vars = query_opt(
            c,
            "SELECT 1 FROM env_vars WHERE environment_id = $1 LIMIT 1",
            &[&environment_id],
        )
        .await?
        .is_some();
        let found = (project, environment, outbound_hosts(hosts), has_vars);
        self.environments
            .insert(environment_id.to_owned(), found.clone());
        Ok(found)
    }
}

/// The heads of one lane, up to `count`, in score order, each locked by this transaction until
/// it commits; heads another claim holds locked are passed over (`SKIP LOCKED`), and a head
/// another claim took meanwhile is no longer QUEUED when its lock is granted, so it is left out.
async fn heads(c: &impl GenericClient, lane: &Lane, count: usize) -> Result<Vec<Head>, StoreError> {
    // Two statements, not `concurrency_key IS NOT DISTINCT FROM $3`: only `=` and `IS NULL` seek
    // the ready index.
    let rows = match &lane.concurrency_key {
        Some(key) => {
            query(
                c,
                &format!(
                    "SELECT {HEAD_COLUMNS} FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
                       AND environment_id = $1 AND queue = $2 AND concurrency_key = $3 \
                     ORDER BY score LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED"
                ),
                &[&lane.environment_id, &lane.queue, key, &(count as i64)],
            )
            .await?
        }
        None => {
            query(
                c,
                &format!(
                    "SELECT {HEAD_COLUMNS} FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
                       AND environment_id = $1 AND queue = $2 AND concurrency_key IS NULL \
                     ORDER BY score LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED"
                ),
                &[&lane.environment_id, &lane.queue, &(count as i64)],
            )
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(Head {
                id: get(r, 0)?,
                environment_id: get(r, 1)?,
                task_id: get(r, 2)?,
                attempt_count: int(r, 3)?,
                checkpointed: flag(r, 4)?,
                deployment_id: get(r, 5)?,
                lock_to_version: get(r, 6)?,
            })
        })
        .collect()
}

/// Starts (or parks) one planned head.
async fn start(
    c: &impl GenericClient,
    head: Head,
    lookups: &mut Lookups,
    (host, claim): (&str, &str),
    now: Millis,
) -> Result<Claimed, StoreError> {
    let deployment = match &head.deployment_id {
        Some(id) => Some(id.clone()),
        None => {
            lookups
                .deployment(c, &head.environment_id, head.lock_to_version.as_deref())
                .await?
        }
    };
    let has_task = match &deployment {
        Some(d) => lookups.has_task(c, d, &head.task_id).await?,
        None => false,
    };
    if !has_task && head.attempt_count == 0 {
        let parked = exec(c, &PARK_CLAIMED, &[&head.id, &now]).await?;
        if parked != 1 {
            return Err(StoreError::Corrupt(format!("cannot park run {}", head.id)));
        }
        return Ok(Claimed::Parked { run_id: head.id });
    }
    // A started run whose version lost the task starts too; the engine fails it with the reason.
    let changed = if head.checkpointed {
        exec(c, &CONTINUE_CLAIMED, &[&head.id, &now, &host, &claim]).await?
    } else {
        exec(
            c,
            &START_CLAIMED,
            &[&head.id, &deployment, &now, &host, &claim],
        )
        .await?
    };
    if changed != 1 {
        // This transaction holds the head's row lock since it read it QUEUED: nothing else can
        // have changed it.
        return Err(StoreError::Corrupt(format!("cannot start run {}", head.id)));
    }
    let attempt = head.attempt_count + u32::from(!head.checkpointed);
    let (project, environment, allowed_outbound_hosts, has_vars) =
        lookups.environment(c, &head.environment_id).await?;
    if !head.checkpointed
        && let Some(deployment) = &deployment
    {
        exec(
            c,
            "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
             VALUES ($1, $2, 'EXECUTING', $3, $4)",
            &[&head.id, &i64::from(attempt), deployment, &now],
        )
        .await?;
    }
    if attempt == 1 && has_vars {
        super::run_env::snapshot_run_env(c, &head.id).await?;
    }
    // A run's copy exists only if its environment had variables when it first started.
    let env_vars: Vec<StoredVar> = if has_vars || attempt > 1 {
        super::run_env::run_env(c, &head.id).await?
    } else {
        Vec::new()
    };
    let journal = if head.checkpointed {
        Some(super::journal::read_journal(c, &head.id, attempt).await?)
    } else {
        None
    };
    let run = load_run(c, &head.id)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    Ok(Claimed::Started {
        run: Box::new(run),
        start: AttemptStart {
            claim: Some(claim.to_owned()),
            env_vars,
            allowed_outbound_hosts,
            project,
            environment,
        },
        journal,
    })
}

impl PostgresStore {
    /// The end first, committed, then the claim (a transaction of its own, answered as
    /// `claim_runs` is): each is a round trip to the server either way. A claim that fails after
    /// the end was committed answers no lane (the caller gives those slots back), so the end's
    /// answer is not lost with it.
    pub async fn finish_and_claim(
        &self,
        finish: FinishAttempt,
        lanes: Vec<(Lane, usize)>,
        now: Millis,
    ) -> Result<Staged<FinishedAndClaimed>, StoreError> {
        let finished = self.finish_attempt(finish).await.map(|staged| staged.value);
        let (claimed, durable) = match self.claim_runs(lanes, now).await {
            Ok(staged) => (staged.value, staged.durable),
            Err(e) if finished.is_ok() => {
                tracing::warn!(error = %e, "claiming runs after an end failed; trying again later");
                (Vec::new(), Durability::settled())
            }
            Err(e) => return Err(e),
        };
        Ok(Staged {
            value: FinishedAndClaimed { finished, claimed },
            durable,
        })
    }

    /// Answered as soon as its statements ran, before the commit (claim is start, as on SQLite):
    /// the attempt may begin while the commit is on its way, and `durable` settles with it. The
    /// claimed runs' rows stay locked by this transaction until then, so the attempt's end (an
    /// update of the same rows) is ordered after its start.
    pub async fn claim_runs(
        &self,
        lanes: Vec<(Lane, usize)>,
        now: Millis,
    ) -> Result<Staged<Vec<Vec<Claimed>>>, StoreError> {
        let c = self.conn().await?;
        let host = self.host_id();
        let default_environment_limit = self.default_environment_limit;
        let (ran, value) = tokio::sync::oneshot::channel();
        let (settle, durable) = Durability::pending();
        tokio::spawn(async move {
            let mut c = c;
            let tx = match c.transaction().await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = ran.send(Err(StoreError::from(e)));
                    return;
                }
            };
            match claim_in(&tx, &lanes, &host, default_environment_limit, now).await {
                Ok(claimed) => {
                    if ran.send(Ok(claimed)).is_err() {
                        // Nobody will run what was claimed: nothing of it is kept.
                        let _ = tx.rollback().await;
                        let _ = settle.send(Some(Err(StoreError::Closed)));
                        return;
                    }
                    let committed = tx.commit().await.map_err(StoreError::from);
                    let _ = settle.send(Some(committed));
                }
                // Rolled back as the transaction drops.
                Err(e) => {
                    let _ = ran.send(Err(e));
                }
            }
        });
        let value = value.await.map_err(|_| StoreError::Closed)??;
        Ok(Staged { value, durable })
    }
}

/// The claim's statements, in `tx`.
async fn claim_in(
    tx: &deadpool_postgres::Transaction<'_>,
    lanes: &[(Lane, usize)],
    host: &str,
    default_environment_limit: u32,
    now: Millis,
) -> Result<Vec<Vec<Claimed>>, StoreError> {
    let mut lookups = Lookups::default();
    // Every run this claim starts carries one token; a later claim of a run gives it another.
    let claim = format!("{host}/{}", ulid::Ulid::new());
    let mut slots = Slots::lock(tx, lanes, default_environment_limit).await?;
    // The lanes are claimed in one order (by environment, queue and key) whatever order they
    // are asked in: starting a run updates its queue's count (`queue_depths`, one row per
    // queue, locked until the commit), so two claims taking the same queues in opposite
    // orders would deadlock. They are answered in the order asked.
    let mut order: Vec<usize> = (0..lanes.len()).collect();
    order.sort_by_key(|&i| {
        let lane = &lanes[i].0;
        (&lane.environment_id, &lane.queue, &lane.concurrency_key)
    });
    let mut out: Vec<Vec<Claimed>> = lanes.iter().map(|_| Vec::new()).collect();
    for index in order {
        let (lane, count) = &lanes[index];
        let room = slots.room(tx, lane).await?;
        let heads = match room.min(*count) {
            0 => Vec::new(),
            n => heads(tx, lane, n).await?,
        };
        // Cut short by the limit, not by the lane running out of ready runs.
        let limited = room < *count && heads.len() == room;
        let mut claimed = Vec::new();
        let mut started = 0;
        for head in heads {
            let c = start(tx, head, &mut lookups, (host, &claim), now).await?;
            started += usize::from(matches!(c, Claimed::Started { .. }));
            claimed.push(c);
        }
        slots.took(lane, started);
        if limited {
            claimed.push(Claimed::Limited);
        }
        out[index] = claimed;
    }
    Ok(out)
}

/// The class of the advisory locks claims take per environment (the second key is the
/// environment id's hash), apart from the other classes and the one-key locks.
const SLOTS_LOCK: i32 = 0x6b73_6c74; // "kslt"

/// Which runs hold a slot, as one claim counts them.
struct Slots {
    default_environment_limit: u32,
    /// environment → (its limit, runs holding a slot counting this claim's).
    environments: HashMap<String, (u32, u32)>,
}

impl Slots {
    /// Takes the claim's environment locks, in one order (sorted by key).
    async fn lock(
        c: &impl GenericClient,
        lanes: &[(Lane, usize)],
        default_environment_limit: u32,
    ) -> Result<Slots, StoreError> {
        let environments: Vec<&str> = lanes
            .iter()
            .map(|(lane, _)| lane.environment_id.as_str())
            .collect();
        lock_sorted(c, SLOTS_LOCK, &environments).await?;
        Ok(Slots {
            default_environment_limit,
            environments: HashMap::new(),
        })
    }

    /// How many more runs `lane` may start now, under its queue's and environment's limits.
    async fn room(&mut self, c: &impl GenericClient, lane: &Lane) -> Result<usize, StoreError> {
        let (env_limit, env_holding) = match self.environments.get(&lane.environment_id) {
            Some(found) => *found,
            None => {
                let row = query_one(
                    c,
                    "SELECT e.concurrency_limit, (SELECT count(*) FROM runs r \
                       WHERE r.environment_id = e.id AND r.status IN ('DEQUEUED', 'EXECUTING')) \
                     FROM environments e WHERE e.id = $1",
                    &[&lane.environment_id],
                )
                .await?;
                let limit: Option<i64> = get(&row, 0)?;
                let holding: i64 = get(&row, 1)?;
                let found = (
                    limit.map_or(self.default_environment_limit, clamp),
                    clamp(holding),
                );
                self.environments.insert(lane.environment_id.clone(), found);
                found
            }
        };
        // The queue's settings (none if it has no row) and the lane's runs holding a slot, in
        // one round trip.
        let row = query_one(
            c,
            "SELECT q.paused, coalesce(q.override_limit, q.concurrency_limit), \
               (SELECT count(*) FROM runs r WHERE r.environment_id = $1 AND r.queue = $2 \
                  AND r.concurrency_key IS NOT DISTINCT FROM $3 \
                  AND r.status IN ('DEQUEUED', 'EXECUTING')) \
             FROM (SELECT 1) one \
             LEFT JOIN queues q ON q.environment_id = $1 AND q.name = $2",
            &[&lane.environment_id, &lane.queue, &lane.concurrency_key],
        )
        .await?;
        if get::<Option<i64>>(&row, 0)? == Some(1) {
            return Ok(0);
        }
        let queue_limit = get::<Option<i64>>(&row, 1)?.map(clamp);
        let lane_limit = queue_limit.map_or(env_limit, |l| l.min(env_limit));
        let lane_holding = clamp(get::<i64>(&row, 2)?);
        let room = lane_limit
            .saturating_sub(lane_holding)
            .min(env_limit.saturating_sub(env_holding));
        Ok(room as usize)
    }

    /// Counts `started` runs of `lane` as holding slots of its environment now.
    fn took(&mut self, lane: &Lane, started: usize) {
        if let Some((_, holding)) = self.environments.get_mut(&lane.environment_id) {
            *holding = holding.saturating_add(u32::try_from(started).unwrap_or(u32::MAX));
        }
    }
}

/// A count or limit as stored, in the engine's range.
fn clamp(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
