//! The claim that starts: one write takes the planned heads of lanes from QUEUED straight to
//! EXECUTING with their attempt rows (claim is start). Each run is locked to its version (the one
//! it is already locked to, the one it asked for, or the environment's latest) unless no version
//! has its task: then a run that never started parks in PENDING_VERSION. What the attempt runs
//! with — the run's copy of its environment's variables, the allow-list, the journal of a
//! checkpointed attempt — is read in the same write, so it matches what the claim did.
//!
//! The ready index (`runs_ready`, migration V5) is ordered by lane then score, so a lane's head is
//! an index seek that never passes another lane's runs, however many are queued.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::guards::status_guard;
use super::lifecycle::record_attempt;
use super::rows::{load_run, outbound_hosts};
use crate::model::{Lane, Millis, RunStatus, Step};
use crate::store::{
    AttemptStart, Claimed, FinishAttempt, FinishedAndClaimed, Staged, StoreError, StoredVar,
};

/// A planned run starts a new attempt (`StartAttempt` from the queue), locked to its version.
pub(super) static START_CLAIMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{executing}', attempt_count = attempt_count + 1, \
           deployment_id = coalesce(deployment_id, ?2), started_at = coalesce(started_at, ?3), \
           updated_at = ?3 \
         WHERE id = ?1 AND {guard} AND checkpointed = 0",
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
        "UPDATE runs SET status = '{executing}', updated_at = ?2 \
         WHERE id = ?1 AND {guard} AND checkpointed = 1",
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
        "UPDATE runs SET status = '{pending}', updated_at = ?2 WHERE id = ?1 AND {guard}",
        pending = RunStatus::PendingVersion.as_str(),
        guard = status_guard(Step::Park, RunStatus::PendingVersion, &[RunStatus::Queued])
    )
});

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
    fn deployment(
        &mut self,
        c: &Connection,
        environment_id: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let key = (environment_id.to_owned(), version.map(str::to_owned));
        if let Some(found) = self.deployments.get(&key) {
            return Ok(found.clone());
        }
        let found = match version {
            Some(version) => c
                .prepare_cached(
                    "SELECT id FROM deployments WHERE environment_id = ?1 AND version = ?2",
                )?
                .query_row(params![environment_id, version], |r| r.get(0))
                .optional()?,
            None => c
                .prepare_cached(
                    "SELECT id FROM deployments WHERE environment_id = ?1 \
                     ORDER BY created_at DESC, rowid DESC LIMIT 1",
                )?
                .query_row([environment_id], |r| r.get(0))
                .optional()?,
        };
        self.deployments.insert(key, found.clone());
        Ok(found)
    }

    fn has_task(
        &mut self,
        c: &Connection,
        deployment_id: &str,
        task_id: &str,
    ) -> Result<bool, StoreError> {
        let key = (deployment_id.to_owned(), task_id.to_owned());
        if let Some(has) = self.tasks.get(&key) {
            return Ok(*has);
        }
        let has = c
            .prepare_cached("SELECT 1 FROM tasks WHERE deployment_id = ?1 AND task_id = ?2")?
            .exists(params![deployment_id, task_id])?;
        self.tasks.insert(key, has);
        Ok(has)
    }

    fn environment(
        &mut self,
        c: &Connection,
        environment_id: &str,
    ) -> Result<(String, String, Vec<String>, bool), StoreError> {
        if let Some(found) = self.environments.get(environment_id) {
            return Ok(found.clone());
        }
        let (project, environment, hosts) = c
            .prepare_cached(
                "SELECT p.slug, e.slug, e.allowed_outbound_hosts FROM environments e \
                 JOIN projects p ON p.id = e.project_id WHERE e.id = ?1",
            )?
            .query_row([environment_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
        let has_vars = c
            .prepare_cached("SELECT 1 FROM env_vars WHERE environment_id = ?1 LIMIT 1")?
            .exists([environment_id])?;
        let found = (project, environment, outbound_hosts(hosts), has_vars);
        self.environments
            .insert(environment_id.to_owned(), found.clone());
        Ok(found)
    }
}

/// The heads of a lane with a concurrency key, in score order. No `LIMIT ?`: SQLite prepares a
/// statement again on every run whose LIMIT is a bound parameter, and the ready index gives the
/// order, so stepping stops after the rows wanted without reading the rest of the lane.
const HEADS_KEYED: &str = "SELECT id, environment_id, task_id, attempt_count, checkpointed, deployment_id, \
       lock_to_version FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
       AND environment_id = ?1 AND queue = ?2 AND concurrency_key = ?3 ORDER BY score";

/// The heads of a lane without a concurrency key (two statements, not `concurrency_key IS ?`:
/// SQLite prepares that one again whenever the parameter changes between NULL and a value).
const HEADS_UNKEYED: &str = "SELECT id, environment_id, task_id, attempt_count, checkpointed, deployment_id, \
       lock_to_version FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
       AND environment_id = ?1 AND queue = ?2 AND concurrency_key IS NULL ORDER BY score";

/// The heads of one lane, up to `count`, in score order.
fn heads(c: &Connection, lane: &Lane, count: usize) -> Result<Vec<Head>, StoreError> {
    let head = |r: &rusqlite::Row<'_>| {
        Ok(Head {
            id: r.get(0)?,
            environment_id: r.get(1)?,
            task_id: r.get(2)?,
            attempt_count: r.get(3)?,
            checkpointed: r.get(4)?,
            deployment_id: r.get(5)?,
            lock_to_version: r.get(6)?,
        })
    };
    let mut statement;
    let rows = match &lane.concurrency_key {
        Some(key) => {
            statement = c.prepare_cached(HEADS_KEYED)?;
            statement.query_map(params![lane.environment_id, lane.queue, key], head)?
        }
        None => {
            statement = c.prepare_cached(HEADS_UNKEYED)?;
            statement.query_map(params![lane.environment_id, lane.queue], head)?
        }
    };
    Ok(rows.take(count).collect::<Result<_, _>>()?)
}

/// Starts (or parks) one planned head.
fn start(
    c: &Connection,
    head: Head,
    lookups: &mut Lookups,
    now: Millis,
) -> Result<Claimed, StoreError> {
    let deployment = match &head.deployment_id {
        Some(id) => Some(id.clone()),
        None => lookups.deployment(c, &head.environment_id, head.lock_to_version.as_deref())?,
    };
    let has_task = match &deployment {
        Some(d) => lookups.has_task(c, d, &head.task_id)?,
        None => false,
    };
    if !has_task && head.attempt_count == 0 {
        let parked = c
            .prepare_cached(&PARK_CLAIMED)?
            .execute(params![head.id, now])?;
        if parked != 1 {
            return Err(StoreError::Corrupt(format!("cannot park run {}", head.id)));
        }
        return Ok(Claimed::Parked { run_id: head.id });
    }
    // A started run whose version lost the task starts too; the engine fails it with the reason.
    let changed = if head.checkpointed {
        c.prepare_cached(&CONTINUE_CLAIMED)?
            .execute(params![head.id, now])?
    } else {
        c.prepare_cached(&START_CLAIMED)?
            .execute(params![head.id, deployment, now])?
    };
    if changed != 1 {
        // The writer is the only one changing runs, so the head it just read is still QUEUED.
        return Err(StoreError::Corrupt(format!("cannot start run {}", head.id)));
    }
    let attempt = head.attempt_count + u32::from(!head.checkpointed);
    let (project, environment, allowed_outbound_hosts, has_vars) =
        lookups.environment(c, &head.environment_id)?;
    if !head.checkpointed
        && let Some(deployment) = &deployment
    {
        c.prepare_cached(
            "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
             VALUES (?1, ?2, 'EXECUTING', ?3, ?4)",
        )?
        .execute(params![head.id, attempt, deployment, now])?;
    }
    if attempt == 1 && has_vars {
        super::run_env::snapshot_run_env(c, &head.id)?;
    }
    // A run's copy exists only if its environment had variables when it first started.
    let env_vars: Vec<StoredVar> = if has_vars || attempt > 1 {
        super::run_env::run_env(c, &head.id)?
    } else {
        Vec::new()
    };
    let journal = if head.checkpointed {
        Some(super::journal::read_journal(c, &head.id, attempt)?)
    } else {
        None
    };
    let run = load_run(c, &head.id)?.ok_or(StoreError::NotFound("run"))?;
    Ok(Claimed::Started {
        run: Box::new(run),
        start: AttemptStart {
            claim: None,
            env_vars,
            allowed_outbound_hosts,
            project,
            environment,
        },
        journal,
    })
}

/// Claims and starts the heads of `lanes`, each lane's runs in the order asked.
fn claim_lanes(
    c: &Connection,
    lanes: &[(Lane, usize)],
    now: Millis,
) -> Result<Vec<Vec<Claimed>>, StoreError> {
    let mut lookups = Lookups::default();
    let mut out = Vec::with_capacity(lanes.len());
    for (lane, count) in lanes {
        let mut claimed = Vec::new();
        for head in heads(c, lane, *count)? {
            claimed.push(start(c, head, &mut lookups, now)?);
        }
        out.push(claimed);
    }
    Ok(out)
}

impl SqliteStore {
    pub async fn claim_runs(
        &self,
        lanes: Vec<(Lane, usize)>,
        now: Millis,
    ) -> Result<Staged<Vec<Vec<Claimed>>>, StoreError> {
        self.write_staged(move |c| claim_lanes(c, &lanes, now))
            .await
    }

    pub async fn finish_and_claim(
        &self,
        finish: FinishAttempt,
        lanes: Vec<(Lane, usize)>,
        now: Millis,
    ) -> Result<Staged<FinishedAndClaimed>, StoreError> {
        self.write_staged(move |c| {
            // The end in a savepoint of its own: one that fails leaves nothing, and the claim
            // still runs.
            let finished = super::within_savepoint(c, |c| {
                record_attempt(c, finish).map(|(_, resumed)| resumed)
            })?;
            let claimed = claim_lanes(c, &lanes, now)?;
            Ok(FinishedAndClaimed { finished, claimed })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus, params};

    use super::super::fixtures::{insert_run, tenant};
    use super::super::migrations::MIGRATIONS;
    use super::{HEADS_KEYED, HEADS_UNKEYED, heads};
    use crate::model::Lane;

    /// A lane's heads come in score order, as many as asked for, and reading them again with
    /// another count runs the same prepared statement (a bound `LIMIT` made SQLite prepare it again
    /// on every claim: a quarter of the writer's time under load).
    #[test]
    fn heads_come_in_score_order_without_preparing_again() {
        let c = Connection::open_in_memory().expect("a database");
        for sql in MIGRATIONS {
            c.execute_batch(sql).expect("a migration");
        }
        tenant(&c);
        for (n, score) in [30, 10, 20, 40].into_iter().enumerate() {
            let id = format!("r{n}");
            insert_run(&c, &id, "a", "QUEUED");
            c.execute(
                "UPDATE runs SET score = ?2 WHERE id = ?1",
                params![id, score],
            )
            .expect("its score");
        }
        insert_run(&c, "keyed", "a", "QUEUED");
        c.execute_batch("UPDATE runs SET concurrency_key = 'k' WHERE id = 'keyed'")
            .expect("its key");
        let lane = |key: Option<&str>| Lane {
            environment_id: "e".into(),
            queue: "a".into(),
            concurrency_key: key.map(str::to_owned),
        };
        let ids = |count, key| -> Vec<String> {
            heads(&c, &lane(key), count)
                .expect("the heads")
                .into_iter()
                .map(|h| h.id)
                .collect()
        };
        for _ in 0..3 {
            assert_eq!(ids(1, None), ["r1"]);
            assert_eq!(ids(3, None), ["r1", "r2", "r0"]);
            assert_eq!(ids(10, None), ["r1", "r2", "r0", "r3"]);
            assert_eq!(ids(2, Some("k")), ["keyed"]);
            assert!(ids(2, Some("other")).is_empty());
        }
        for sql in [HEADS_KEYED, HEADS_UNKEYED] {
            let statement = c.prepare_cached(sql).expect("the cached statement");
            assert_eq!(statement.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
        // The index gives the order, so stepping stops after the heads wanted.
        for (sql, args) in [
            (HEADS_UNKEYED, vec!["e", "a"]),
            (HEADS_KEYED, vec!["e", "a", "k"]),
        ] {
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("the plan")
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .expect("its rows")
                .collect::<Result<_, _>>()
                .expect("its rows");
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX runs_ready"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}
