//! The SQL, next to the code that runs it. Each public async method on [`Store`] is one unit of work.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::json;

use super::{Store, StoreError};
use crate::model::{
    Attempt, AttemptStatus, Deployment, Environment, Lane, LogLevel, LogLine, Machine, Millis,
    QueueDefinition, RetryDefinition, RetryPolicy, Run, RunError, RunStatus, TaskDefinition,
    TaskSchedule, TokenStatus, new_id,
};

/// A secret key about to be stored: the plaintext (shown once) and its SHA-256 digest.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub plaintext: String,
    pub hash: [u8; 32],
}

/// What a start found or created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub dev: Environment,
    /// The dev environment's first key, when this start created it.
    pub dev_key: Option<String>,
    /// The host's first admin key, when this start created it.
    pub admin_key: Option<String>,
}

/// A stored key as shown to an admin: never the secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub project: String,
    pub environment: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A run to insert, every option resolved by the engine.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub environment_id: String,
    pub task_id: String,
    /// QUEUED, DELAYED or PENDING_VERSION.
    pub status: RunStatus,
    pub payload: String,
    pub queue: String,
    pub machine: Machine,
    pub retry: RetryPolicy,
    pub oom_machine: Option<Machine>,
    /// Queue timestamp: the trigger time, or the delay's end.
    pub queue_timestamp: Millis,
    pub priority_ms: i64,
    pub delay_until: Option<Millis>,
    pub ttl: Option<std::time::Duration>,
    pub expires_at: Option<Millis>,
    /// The key and when it stops matching repeats.
    pub idempotency: Option<(String, Millis)>,
    pub tags: Vec<String>,
    pub metadata: Option<String>,
    pub max_duration: Option<std::time::Duration>,
    pub concurrency_key: Option<String>,
    pub lock_to_version: Option<String>,
    /// Set for a child run: its parent, root and depth.
    pub parent: Option<ParentLink>,
    pub now: Millis,
}

/// Where a child run hangs in its tree.
#[derive(Debug, Clone)]
pub struct ParentLink {
    pub parent_run_id: String,
    pub root_run_id: String,
    pub depth: u32,
}

/// A run as inserted, or the run an idempotency key already pointed to.
#[derive(Debug, Clone)]
pub struct Inserted {
    pub run: Run,
    pub cached: bool,
}

/// Filters of the runs list; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub statuses: Vec<RunStatus>,
    pub task_ids: Vec<String>,
    pub versions: Vec<String>,
    /// Runs carrying any of these tags.
    pub tags: Vec<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
    pub batch_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One page of runs, newest first, with cursors for the neighbouring pages.
#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Id to pass as `after` for the next (older) page.
    pub next: Option<String>,
    /// Id to pass as `before` for the previous (newer) page.
    pub previous: Option<String>,
}

/// A status change computed by the engine, applied with compare-and-set on `expected`.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    pub run_id: String,
    pub expected: RunStatus,
    pub status: RunStatus,
    pub available_at: Option<Millis>,
    pub error: Option<RunError>,
    /// The machine for the next attempt, when it changes.
    pub machine: Option<Machine>,
    /// Whether the current attempt has a checkpoint after the change.
    pub checkpointed: bool,
    pub now: Millis,
}

/// The end of one attempt: the run's new state, the attempt's result, usage and logs.
#[derive(Debug, Clone)]
pub struct FinishAttempt {
    pub update: RunUpdate,
    pub attempt: u32,
    pub attempt_status: AttemptStatus,
    /// The attempt's own error; the run's error (in `update`) is only set once it is final.
    pub attempt_error: Option<RunError>,
    pub output: Option<String>,
    pub fuel_used: u64,
    pub compute_ms: u64,
    pub logs: Vec<LogLine>,
}

impl FinishAttempt {
    /// Closes an attempt kiln ends itself (recovery, cancel, a failure outside the guest): no
    /// output, no usage, no logs of its own.
    pub fn closing(
        update: RunUpdate,
        attempt: u32,
        attempt_status: AttemptStatus,
        attempt_error: Option<RunError>,
    ) -> FinishAttempt {
        FinishAttempt {
            update,
            attempt,
            attempt_status,
            attempt_error,
            output: None,
            fuel_used: 0,
            compute_ms: 0,
            logs: Vec::new(),
        }
    }
}

const RUN_COLUMNS: &str = "r.id, r.environment_id, r.task_id, r.status, r.payload, r.output, r.error, \
     r.deployment_id, d.version, r.queue, r.machine, r.max_attempts, r.retry_factor, r.retry_min_ms, \
     r.retry_max_ms, r.retry_randomize, r.attempt_count, r.queue_ts, r.available_at, r.created_at, \
     r.updated_at, r.started_at, r.finished_at, r.fuel_used, r.compute_ms, e.slug, r.priority_ms, \
     r.delay_until, r.ttl_ms, r.expires_at, r.expired_at, r.idempotency_key, r.tags, r.metadata, \
     r.max_duration_ms, r.concurrency_key, r.lock_to_version, r.batch_id, r.oom_machine, r.seed, \
     r.checkpointed, r.parent_run_id, r.root_run_id, r.depth";

const RUN_FROM: &str = "runs r JOIN environments e ON e.id = r.environment_id \
     LEFT JOIN deployments d ON d.id = r.deployment_id";

/// Records an attempt's end (or checkpoint) and the run's change; returns whether the run had
/// been canceled meanwhile (the attempt is then recorded as canceled, the run left as it is).
pub(super) fn record_attempt(
    c: &Connection,
    finish: FinishAttempt,
) -> Result<(bool, Vec<Lane>), StoreError> {
    let FinishAttempt {
        update,
        attempt,
        attempt_status,
        attempt_error,
        output,
        fuel_used,
        compute_ms,
        logs,
    } = finish;
    let (canceled, resumed) = match apply_update(c, &update) {
        Ok(resumed) => (false, resumed),
        Err(StoreError::Conflict) => {
            let status: Option<String> = c
                .query_row(
                    "SELECT status FROM runs WHERE id = ?1",
                    [&update.run_id],
                    |r| r.get(0),
                )
                .optional()?;
            if status.as_deref() != Some(RunStatus::Canceled.as_str()) {
                return Err(StoreError::Conflict);
            }
            (true, Vec::new())
        }
        Err(e) => return Err(e),
    };
    let attempt_status = if canceled {
        AttemptStatus::Canceled
    } else {
        attempt_status
    };
    c.execute(
        "UPDATE runs SET output = coalesce(?2, output), fuel_used = fuel_used + ?3, \
           compute_ms = compute_ms + ?4 WHERE id = ?1",
        params![
            update.run_id,
            if canceled { None } else { output },
            fuel_used as i64,
            compute_ms as i64
        ],
    )?;
    // A checkpointed attempt is still under way: no end time yet.
    c.execute(
        "UPDATE attempts SET status = ?3, \
           finished_at = CASE WHEN ?3 = 'EXECUTING' THEN NULL ELSE ?4 END, error = ?5, \
           fuel_used = fuel_used + ?6, compute_ms = compute_ms + ?7 \
         WHERE run_id = ?1 AND number = ?2",
        params![
            update.run_id,
            attempt,
            attempt_status.as_str(),
            update.now,
            attempt_error.as_ref().map(encode_error),
            fuel_used as i64,
            compute_ms as i64,
        ],
    )?;
    insert_logs(c, &update.run_id, &logs)?;
    // An attempt that ended needs its journal no more.
    if attempt_status != AttemptStatus::Executing {
        c.prepare_cached("DELETE FROM journal_segments WHERE run_id = ?1 AND attempt = ?2")?
            .execute(params![update.run_id, attempt])?;
    }
    Ok((canceled, resumed))
}

/// What an attempt runs with (see [`Store::start_attempt`]).
#[derive(Debug, Clone, Default)]
pub struct AttemptStart {
    pub env_vars: Vec<super::env_vars::StoredVar>,
    pub allowed_outbound_hosts: Vec<String>,
    /// The run's project and environment slugs.
    pub project: String,
    pub environment: String,
}

fn attempt_start(c: &Connection, run_id: &str) -> Result<AttemptStart, StoreError> {
    let (project, environment, hosts) = c
        .prepare_cached(
            "SELECT p.slug, e.slug, e.allowed_outbound_hosts FROM runs r \
             JOIN environments e ON e.id = r.environment_id JOIN projects p ON p.id = e.project_id \
             WHERE r.id = ?1",
        )?
        .query_row([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
    Ok(AttemptStart {
        env_vars: super::env_vars::run_env(c, run_id)?,
        allowed_outbound_hosts: super::queues::outbound_hosts(hosts),
        project,
        environment,
    })
}

/// Whether `candidate` is `run` or one of its ancestors.
fn is_ancestor_or_self(c: &Connection, candidate: &str, run: &str) -> Result<bool, StoreError> {
    let mut current = Some(run.to_owned());
    // Trees are at most 25 deep; the bound also stops a corrupt cycle.
    for _ in 0..64 {
        let Some(id) = current else {
            return Ok(false);
        };
        if id == candidate {
            return Ok(true);
        }
        current = c
            .prepare_cached("SELECT parent_run_id FROM runs WHERE id = ?1")?
            .query_row([&id], |r| r.get(0))
            .optional()?
            .flatten();
    }
    Ok(false)
}

fn insert_logs(c: &Connection, run_id: &str, logs: &[LogLine]) -> Result<(), StoreError> {
    let mut insert = c.prepare_cached(
        "INSERT INTO run_logs (run_id, attempt, at, level, message, attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for line in logs {
        insert.execute(params![
            run_id,
            line.attempt,
            line.at,
            line.level.as_str(),
            line.message,
            line.attributes
        ])?;
    }
    Ok(())
}

pub(super) fn lane_from_row(row: &Row<'_>) -> rusqlite::Result<Lane> {
    Ok(Lane {
        environment_id: row.get(0)?,
        queue: row.get(1)?,
        concurrency_key: row.get(2)?,
    })
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let status: String = row.get(3)?;
    let machine: String = row.get(10)?;
    let error: Option<String> = row.get(6)?;
    Ok(Run {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        task_id: row.get(2)?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt_col(3, "status", &status))?,
        payload: row.get(4)?,
        output: row.get(5)?,
        error: error.as_deref().map(decode_error),
        deployment_id: row.get(7)?,
        version: row.get(8)?,
        queue: row.get(9)?,
        machine: Machine::parse(&machine).ok_or_else(|| corrupt_col(10, "machine", &machine))?,
        retry: RetryPolicy {
            max_attempts: row.get(11)?,
            factor: row.get(12)?,
            min_timeout_ms: row.get(13)?,
            max_timeout_ms: row.get(14)?,
            randomize: row.get(15)?,
        },
        attempt_count: row.get(16)?,
        queue_timestamp: row.get(17)?,
        available_at: row.get(18)?,
        created_at: row.get(19)?,
        updated_at: row.get(20)?,
        started_at: row.get(21)?,
        finished_at: row.get(22)?,
        fuel_used: row.get::<_, i64>(23)? as u64,
        compute_ms: row.get::<_, i64>(24)? as u64,
        environment_slug: row.get(25)?,
        priority_ms: row.get(26)?,
        delay_until: row.get(27)?,
        ttl: row.get::<_, Option<i64>>(28)?.map(ms_duration),
        expires_at: row.get(29)?,
        expired_at: row.get(30)?,
        idempotency_key: row.get(31)?,
        tags: serde_json::from_str(&row.get::<_, String>(32)?).unwrap_or_default(),
        metadata: row.get(33)?,
        max_duration: row.get::<_, Option<i64>>(34)?.map(ms_duration),
        concurrency_key: row.get(35)?,
        lock_to_version: row.get(36)?,
        batch_id: row.get(37)?,
        oom_machine: {
            let m: Option<String> = row.get(38)?;
            m.map(|m| Machine::parse(&m).ok_or_else(|| corrupt_col(38, "machine", &m)))
                .transpose()?
        },
        seed: row.get::<_, i64>(39)? as u64,
        checkpointed: row.get(40)?,
        parent_run_id: row.get(41)?,
        root_run_id: row.get(42)?,
        depth: row.get(43)?,
    })
}

fn ms_duration(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn corrupt_col(index: usize, name: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("unknown {name} {value:?}").into(),
    )
}

fn encode_error(e: &RunError) -> String {
    json!({ "code": e.code, "name": e.name, "message": e.message, "stack": e.stack }).to_string()
}

fn decode_error(text: &str) -> RunError {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    RunError {
        code: s("code"),
        name: s("name").unwrap_or_else(|| "Error".into()),
        message: s("message").unwrap_or_default(),
        stack: s("stack"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Makes sure project `default` with environment `dev` exists. A dev environment that never
    /// had a key gets `dev_key` (returned, to be shown once); a host that never had an admin key
    /// gets `admin_key` (returned likewise).
    pub async fn bootstrap(
        &self,
        dev_key: NewKey,
        admin_key: NewKey,
        now: Millis,
    ) -> Result<Bootstrapped, StoreError> {
        self.write(move |c| {
            let env = ensure_environment(c, "default", "dev", now)?;
            let keys: i64 = c.query_row(
                "SELECT count(*) FROM api_keys WHERE environment_id = ?1",
                [&env.id],
                |r| r.get(0),
            )?;
            let dev_key = if keys == 0 {
                insert_key(c, &env.id, &dev_key, now)?;
                Some(dev_key.plaintext)
            } else {
                None
            };
            let admins: i64 = c.query_row("SELECT count(*) FROM admin_keys", [], |r| r.get(0))?;
            let admin_key = if admins == 0 {
                c.execute(
                    "INSERT INTO admin_keys (id, key_hash, created_at) VALUES (?1, ?2, ?3)",
                    params![new_id("admin"), &admin_key.hash[..], now],
                )?;
                Some(admin_key.plaintext)
            } else {
                None
            };
            Ok(Bootstrapped {
                dev: env,
                dev_key,
                admin_key,
            })
        })
        .await
    }

    /// Whether this is an admin key of the host.
    pub async fn is_admin_key(&self, key_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT 1 FROM admin_keys WHERE key_hash = ?1",
                [&key_hash[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    /// Creates a secret key for an environment, creating the project and environment if needed.
    pub async fn create_key(
        &self,
        project: &str,
        environment: &str,
        key: NewKey,
        now: Millis,
    ) -> Result<KeyInfo, StoreError> {
        let (project, environment) = (project.to_owned(), environment.to_owned());
        self.write(move |c| {
            let env = ensure_environment(c, &project, &environment, now)?;
            let id = insert_key(c, &env.id, &key, now)?;
            load_key(c, &id)?.ok_or(StoreError::NotFound("key"))
        })
        .await
    }

    /// Every secret key of the host (never the secret itself), newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.read(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM api_keys ORDER BY created_at DESC, id DESC")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter()
                .filter_map(|id| load_key(c, id).transpose())
                .collect()
        })
        .await
    }

    /// Revokes a key; requests with it are refused from now on. `None` if there is no such key.
    pub async fn revoke_key(&self, id: &str, now: Millis) -> Result<Option<KeyInfo>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )?;
            load_key(c, &id)
        })
        .await
    }

    /// The environment an active key belongs to.
    pub async fn environment_for_key(
        &self,
        key_hash: [u8; 32],
    ) -> Result<Option<Environment>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
                 FROM api_keys k \
                 JOIN environments e ON e.id = k.environment_id \
                 JOIN projects p ON p.id = e.project_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
                [&key_hash[..]],
                |r| {
                    Ok(Environment {
                        id: r.get(0)?,
                        project_slug: r.get(1)?,
                        slug: r.get(2)?,
                        limits: crate::model::EnvironmentLimits {
                            max_component_bytes: r.get(3)?,
                            max_payload_bytes: r.get(4)?,
                        },
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Stores the component (if new) and a deployment with the next version of the day
    /// (`YYYYMMDD.N`), with its tasks, in one transaction.
    pub async fn insert_deployment(
        &self,
        environment_id: &str,
        digest: &[u8; 32],
        bytes: Vec<u8>,
        tasks: Vec<TaskDefinition>,
        day: String,
        now: Millis,
    ) -> Result<Deployment, StoreError> {
        let environment_id = environment_id.to_owned();
        let digest = hex(digest);
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO components (digest, bytes, created_at) VALUES (?1, ?2, ?3)",
                params![digest, bytes, now],
            )?;
            let prefix = format!("{day}.");
            let last: Option<i64> = c.query_row(
                "SELECT max(CAST(substr(version, ?2) AS INTEGER)) FROM deployments \
                 WHERE environment_id = ?1 AND version LIKE ?3",
                params![environment_id, prefix.len() as i64 + 1, format!("{prefix}%")],
                |r| r.get(0),
            )?;
            let version = format!("{day}.{}", last.unwrap_or(0) + 1);
            let id = new_id("deployment");
            c.execute(
                "INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, environment_id, version, digest, now],
            )?;
            for (position, t) in tasks.iter().enumerate() {
                insert_task(c, &id, position, t)?;
            }
            super::queues::sync_queues(c, &environment_id, &tasks, now)?;
            Ok(Deployment {
                id,
                environment_id,
                version,
                component_digest: digest,
                created_at: now,
                tasks,
            })
        })
        .await
    }

    /// The newest deployment of an environment.
    pub async fn latest_deployment(
        &self,
        environment_id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT id FROM deployments WHERE environment_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [&environment_id],
                    |r| r.get(0),
                )
                .optional()?;
            id.map(|id| load_deployment(c, &id)).transpose()
        })
        .await
    }

    /// A deployment by id.
    pub async fn deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let exists: bool = c
                .query_row("SELECT 1 FROM deployments WHERE id = ?1", [&id], |_| {
                    Ok(true)
                })
                .optional()?
                .unwrap_or(false);
            if exists {
                load_deployment(c, &id).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
    }

    /// An environment's deployments, newest first.
    pub async fn list_deployments(
        &self,
        environment_id: &str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM deployments WHERE environment_id = ?1 ORDER BY created_at DESC, rowid DESC")?
                .query_map([&environment_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter().map(|id| load_deployment(c, id)).collect()
        })
        .await
    }

    /// The bytes of a stored component.
    pub async fn component_bytes(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let digest = digest.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT bytes FROM components WHERE digest = ?1",
                [&digest],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound("component"))
        })
        .await
    }

    /// Inserts runs in one transaction, as one batch when `batch_id` is given. A run whose
    /// idempotency key matches a live key of an earlier run is not inserted: the earlier run is
    /// returned with `cached: true`. A key whose run failed or expired is released and reused.
    pub async fn insert_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.write(move |c| insert_all(c, runs, batch_id.as_deref()))
            .await
    }

    /// Inserts a run's child runs (as [`Store::insert_runs`]) and, in the same transaction,
    /// appends the parent's journal and marks it as having one. `Conflict` (and nothing stored)
    /// if the parent is no longer executing.
    pub async fn insert_child_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
        journal: JournalWith<[Inserted]>,
        waiting: bool,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.write(move |c| {
            let now = runs.first().map_or(0, |r| r.now);
            let parent = journal.run_id.clone();
            let inserted = insert_all(c, runs, batch_id.as_deref())?;
            // An idempotency key can hand back the parent or one of its ancestors as a "child":
            // waiting for it would never end.
            if waiting {
                for i in inserted.iter().filter(|i| i.cached) {
                    if is_ancestor_or_self(c, &i.run.id, &parent)? {
                        return Err(StoreError::Refused(format!(
                            "idempotency key `{}` names run {}, which this run descends from; it would wait for itself",
                            i.run.idempotency_key.as_deref().unwrap_or_default(),
                            i.run.id
                        )));
                    }
                }
            }
            commit_journal(c, journal, inserted.as_slice(), now)?;
            Ok(inserted)
        })
        .await
    }

    /// Forgets an idempotency key (for one task, or every task of the environment). Returns how
    /// many keys were removed.
    pub async fn reset_idempotency_key(
        &self,
        environment_id: &str,
        key: &str,
        task_id: Option<String>,
    ) -> Result<usize, StoreError> {
        let (environment_id, key) = (environment_id.to_owned(), key.to_owned());
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM idempotency_keys WHERE environment_id = ?1 AND key = ?2 \
                 AND (?3 IS NULL OR task_id = ?3)",
                params![environment_id, key, task_id],
            )?)
        })
        .await
    }

    /// Moves DELAYED runs whose time has come to QUEUED. Returns the lanes of the runs moved.
    pub async fn enqueue_delayed(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE runs SET status = 'QUEUED', updated_at = ?1 \
                 WHERE id IN (SELECT id FROM runs WHERE status = 'DELAYED' AND available_at <= ?1 \
                              ORDER BY available_at LIMIT ?2) \
                 RETURNING environment_id, queue, concurrency_key",
            )?
            .query_map(params![now, limit as i64], lane_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Expires runs that were not started before their TTL. Returns how many expired.
    pub async fn expire_due(
        &self,
        now: Millis,
        error: RunError,
        limit: usize,
    ) -> Result<(usize, Vec<Lane>), StoreError> {
        self.write(move |c| {
            let expired: Vec<String> = c
                .prepare_cached(
                    "UPDATE runs SET status = 'EXPIRED', updated_at = ?1, expired_at = ?1, finished_at = ?1, error = ?2 \
                     WHERE id IN (SELECT id FROM runs WHERE status IN ('QUEUED', 'PENDING_VERSION') \
                                  AND expires_at IS NOT NULL AND expires_at <= ?1 AND attempt_count = 0 \
                                  ORDER BY expires_at LIMIT ?3) \
                     RETURNING id",
                )?
                .query_map(params![now, encode_error(&error), limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut resumed = Vec::new();
            for id in &expired {
                resumed.extend(super::children::child_ended(c, id, now)?);
            }
            Ok((expired.len(), resumed))
        })
        .await
    }

    /// Queues the environment's PENDING_VERSION runs of these tasks (a version with them was
    /// deployed). They keep their queue order.
    pub async fn enqueue_pending_version(
        &self,
        environment_id: &str,
        task_ids: Vec<String>,
        now: Millis,
    ) -> Result<Vec<Lane>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let mut lanes = Vec::new();
            let mut stmt = c.prepare_cached(
                "UPDATE runs SET status = 'QUEUED', available_at = ?3, updated_at = ?3, backoff = 0 \
                 WHERE environment_id = ?1 AND task_id = ?2 AND status = 'PENDING_VERSION' \
                 RETURNING environment_id, queue, concurrency_key",
            )?;
            for task in &task_ids {
                for lane in stmt.query_map(params![environment_id, task, now], lane_from_row)? {
                    let lane = lane?;
                    if !lanes.contains(&lane) {
                        lanes.push(lane);
                    }
                }
            }
            Ok(lanes)
        })
        .await
    }

    /// Gives a DELAYED run a new delay (compare-and-set on DELAYED); its TTL counts from the new
    /// enqueue time.
    pub async fn reschedule(
        &self,
        run_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        self.write(move |c| {
            let changed = c.execute(
                "UPDATE runs SET available_at = ?2, delay_until = ?2, queue_ts = ?2, score = ?2 - priority_ms, \
                   expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE ?2 + ttl_ms END, updated_at = ?3 \
                 WHERE id = ?1 AND status = 'DELAYED'",
                params![run_id, until, now],
            )?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            Ok(())
        })
        .await
    }

    /// Adds tags to a run, keeping order and dropping repeats. `Ok(Err(n))` when the result would
    /// have `n` tags, more than `max`; nothing changes then.
    pub async fn add_tags(
        &self,
        run_id: &str,
        tags: Vec<String>,
        max: usize,
        now: Millis,
    ) -> Result<Result<Vec<String>, usize>, StoreError> {
        let run_id = run_id.to_owned();
        self.write(move |c| {
            let (environment_id, current): (String, String) = c.query_row(
                "SELECT environment_id, tags FROM runs WHERE id = ?1",
                [&run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut all: Vec<String> = serde_json::from_str(&current).unwrap_or_default();
            for tag in tags {
                if !all.contains(&tag) {
                    all.push(tag);
                }
            }
            if all.len() > max {
                return Ok(Err(all.len()));
            }
            write_tags(c, &run_id, &environment_id, &all)?;
            c.execute(
                "UPDATE runs SET updated_at = ?2 WHERE id = ?1",
                params![run_id, now],
            )?;
            Ok(Ok(all))
        })
        .await
    }

    /// Replaces a run's metadata with what `change` makes of the current value, atomically.
    /// `change` returning `Err` leaves it untouched and passes the error through. With `journal`
    /// (a change a run makes), the run's journal segment — `journal.entries` gets the new
    /// metadata — and the mark that its attempt has a journal commit with the change.
    pub async fn change_metadata<E: Send + 'static>(
        &self,
        run_id: &str,
        now: Millis,
        change: impl FnOnce(Option<String>) -> Result<String, E> + Send + 'static,
        journal: Option<JournalWith<str>>,
    ) -> Result<Result<String, E>, StoreError> {
        let run_id = run_id.to_owned();
        self.write(move |c| {
            let current: Option<String> =
                c.query_row("SELECT metadata FROM runs WHERE id = ?1", [&run_id], |r| {
                    r.get(0)
                })?;
            let next = match change(current) {
                Ok(next) => next,
                Err(e) => return Ok(Err(e)),
            };
            c.execute(
                "UPDATE runs SET metadata = ?2, updated_at = ?3 WHERE id = ?1",
                params![run_id, next, now],
            )?;
            if let Some(journal) = journal {
                commit_journal(c, journal, next.as_str(), now)?;
            }
            Ok(Ok(next))
        })
        .await
    }

    /// The deployment of an environment with this version.
    pub async fn deployment_by_version(
        &self,
        environment_id: &str,
        version: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let (environment_id, version) = (environment_id.to_owned(), version.to_owned());
        self.read(move |c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT id FROM deployments WHERE environment_id = ?1 AND version = ?2",
                    params![environment_id, version],
                    |r| r.get(0),
                )
                .optional()?;
            id.map(|id| load_deployment(c, &id)).transpose()
        })
        .await
    }

    /// How many of an environment's runs have `status` (a scan of the environment's runs: for
    /// benchmarks and checks, not for request paths).
    pub async fn count_runs(
        &self,
        environment_id: &str,
        status: RunStatus,
    ) -> Result<u64, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM runs WHERE environment_id = ?1 AND status = ?2",
                )?
                .query_row(params![environment_id, status.as_str()], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// A run of an environment (another environment's run is `None`, like a missing one).
    pub async fn run(&self, environment_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| Ok(load_run(c, &run_id)?.filter(|r| r.environment_id == environment_id)))
            .await
    }

    /// A page of an environment's runs, newest first. `after` continues to older runs, `before`
    /// goes back to newer ones.
    pub async fn list_runs(
        &self,
        environment_id: &str,
        filter: RunFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<RunPage, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut sql =
                format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.environment_id = ?");
            let mut args: Vec<rusqlite::types::Value> = vec![environment_id.into()];
            let mut in_list = |sql: &mut String, col: &str, values: Vec<String>| {
                if !values.is_empty() {
                    sql.push_str(&format!(
                        " AND {col} IN ({})",
                        vec!["?"; values.len()].join(",")
                    ));
                    args.extend(values.into_iter().map(Into::into));
                }
            };
            in_list(
                &mut sql,
                "r.status",
                filter
                    .statuses
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            );
            in_list(&mut sql, "r.task_id", filter.task_ids);
            in_list(&mut sql, "d.version", filter.versions);
            if !filter.tags.is_empty() {
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag IN ({}))",
                    vec!["?"; filter.tags.len()].join(",")
                ));
                args.extend(filter.tags.into_iter().map(Into::into));
            }
            let mut compare = |cond: &str, value: Option<rusqlite::types::Value>| {
                if let Some(v) = value {
                    sql.push_str(cond);
                    args.push(v);
                }
            };
            compare(" AND r.created_at >= ?", filter.created_from.map(Into::into));
            compare(" AND r.created_at <= ?", filter.created_to.map(Into::into));
            compare(" AND r.batch_id = ?", filter.batch_id.map(Into::into));
            compare(" AND r.idempotency_key = ?", filter.idempotency_key.map(Into::into));
            let backwards = before.is_some() && after.is_none();
            if let Some(after) = &after {
                sql.push_str(" AND r.id < ?");
                args.push(after.clone().into());
            } else if let Some(before) = &before {
                sql.push_str(" AND r.id > ?");
                args.push(before.clone().into());
            }
            sql.push_str(if backwards {
                " ORDER BY r.id ASC"
            } else {
                " ORDER BY r.id DESC"
            });
            sql.push_str(" LIMIT ?");
            args.push(((limit + 1) as i64).into());
            let mut runs: Vec<Run> = c
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), run_from_row)?
                .collect::<Result<_, _>>()?;
            let more = runs.len() > limit;
            runs.truncate(limit);
            if backwards {
                runs.reverse();
            }
            let first = runs.first().map(|r| r.id.clone());
            let last = runs.last().map(|r| r.id.clone());
            let (next, previous) = if backwards {
                (last, first.filter(|_| more))
            } else {
                (last.filter(|_| more), first.filter(|_| after.is_some()))
            };
            Ok(RunPage {
                runs,
                next,
                previous,
            })
        })
        .await
    }

    /// The earliest delayed-run enqueue, retry backoff end or TTL expiry, if any.
    pub async fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT min(t) FROM ( \
                   SELECT min(available_at) AS t FROM runs WHERE status = 'DELAYED' \
                   UNION ALL SELECT min(available_at) FROM runs WHERE status = 'QUEUED' AND backoff = 1 \
                   UNION ALL SELECT min(completes_at) FROM waitpoints \
                     WHERE status = 'PENDING' AND completes_at IS NOT NULL \
                   UNION ALL SELECT min(expires_at) FROM runs \
                     WHERE status IN ('QUEUED', 'PENDING_VERSION') AND expires_at IS NOT NULL \
                       AND attempt_count = 0)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Runs a previous process claimed or was executing when it stopped.
    pub async fn in_flight_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.status IN ('DEQUEUED', 'EXECUTING')"
            ))?
            .query_map([], run_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// DEQUEUED → EXECUTING: locks the run to `deployment_id` (if not yet locked) and opens
    /// attempt `attempt`. Returns what the attempt runs with: the run's environment variables
    /// (copied from its environment when its first attempt starts, so every attempt and replay
    /// sees the same) and its environment's outbound HTTP allow-list.
    pub async fn start_attempt(
        &self,
        run_id: &str,
        deployment_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<AttemptStart, StoreError> {
        let (run_id, deployment_id) = (run_id.to_owned(), deployment_id.to_owned());
        self.write(move |c| {
            // A checkpointed attempt continues: same number, its row stays.
            let continued = c.execute(
                "UPDATE runs SET status = 'EXECUTING', updated_at = ?3 \
                 WHERE id = ?1 AND status = 'DEQUEUED' AND attempt_count = ?2 AND checkpointed = 1",
                params![run_id, attempt, now],
            )?;
            if continued == 1 {
                return attempt_start(c, &run_id);
            }
            let changed = c.execute(
                "UPDATE runs SET status = 'EXECUTING', attempt_count = ?2, \
                   deployment_id = coalesce(deployment_id, ?3), \
                   started_at = coalesce(started_at, ?4), updated_at = ?4 \
                 WHERE id = ?1 AND status = 'DEQUEUED' AND attempt_count = ?2 - 1 AND checkpointed = 0",
                params![run_id, attempt, deployment_id, now],
            )?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            c.execute(
                "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
                 VALUES (?1, ?2, 'EXECUTING', ?3, ?4)",
                params![run_id, attempt, deployment_id, now],
            )?;
            if attempt == 1 {
                super::env_vars::snapshot_run_env(c, &run_id)?;
            }
            attempt_start(c, &run_id)
        })
        .await
    }

    /// Applies a status change with compare-and-set. Returns the run as stored after it.
    /// The lanes returned are of parents the change resumed (a child that ended).
    pub async fn update_run(&self, update: RunUpdate) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| apply_update(c, &update)).await
    }

    /// Records the end of an attempt and applies the run's new status, in one transaction.
    ///
    /// If the run was canceled meanwhile, the attempt is still recorded (as CANCELED) with its
    /// usage and logs, and the run keeps its CANCELED status.
    /// The lanes returned are of parents the run's end resumed.
    pub async fn finish_attempt(&self, finish: FinishAttempt) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| record_attempt(c, finish).map(|(_, resumed)| resumed))
            .await
    }

    /// Checkpoints an executing attempt that waits until `until`, in one transaction: the run
    /// becomes WAITING (in `checkpoint.update`), the journal recorded since the last checkpoint is
    /// appended, a DATETIME waitpoint is created, and the logs and usage so far are stored. A run
    /// canceled meanwhile keeps its status; the attempt is recorded as canceled.
    pub async fn checkpoint(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(());
            }
            super::tokens::append_journal(c, &run_id, attempt, journal, now)?;
            c.execute(
                "INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, created_at) \
                 SELECT ?1, environment_id, id, 'DATETIME', 'PENDING', ?2, ?3 FROM runs WHERE id = ?4",
                params![new_id("waitpoint"), until, now, run_id],
            )?;
            Ok(())
        })
        .await
    }

    /// The journal of an attempt: its segments in order, concatenated.
    pub async fn journal(&self, run_id: &str, attempt: u32) -> Result<Vec<u8>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut out = Vec::new();
            let mut stmt = c.prepare_cached(
                "SELECT entries FROM journal_segments WHERE run_id = ?1 AND attempt = ?2 ORDER BY segment",
            )?;
            let mut rows = stmt.query(params![run_id, attempt])?;
            while let Some(row) = rows.next()? {
                out.extend_from_slice(row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?);
            }
            Ok(out)
        })
        .await
    }

    /// Completes DATETIME waitpoints whose time came and times out wait tokens whose timeout
    /// passed (`timed_out(timeout_at)` is the error they complete with), and puts the WAITING runs
    /// waiting for them back in the queue (keeping their score). Returns those runs' lanes.
    pub async fn resume_due(
        &self,
        now: Millis,
        limit: usize,
        timed_out: impl Fn(Millis) -> String + Send + 'static,
    ) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| {
            let due: Vec<(String, String, Option<String>, Millis)> = c
                .prepare_cached(
                    "SELECT id, kind, run_id, completes_at FROM waitpoints WHERE status = 'PENDING' \
                     AND completes_at IS NOT NULL AND completes_at <= ?1 \
                     ORDER BY completes_at LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut lanes = Vec::new();
            for (id, kind, run, at) in due {
                if kind == "MANUAL" {
                    let error = timed_out(at);
                    let resumed =
                        super::tokens::finish_token(c, &id, TokenStatus::TimedOut, &error, now)?;
                    lanes.extend(resumed.into_iter().flatten());
                    continue;
                }
                c.prepare_cached(
                    "UPDATE waitpoints SET status = 'COMPLETED', completed_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now])?;
                // A run canceled while it waited stays canceled.
                if let Some(run) = run {
                    lanes.extend(super::children::resume(c, &run, now)?);
                }
            }
            Ok(lanes)
        })
        .await
    }

    /// The attempts of a run, oldest first.
    pub async fn attempts(&self, run_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT run_id, number, status, deployment_id, started_at, finished_at, error, fuel_used, compute_ms \
                 FROM attempts WHERE run_id = ?1 ORDER BY number",
            )?
            .query_map([&run_id], |r| {
                let status: String = r.get(2)?;
                let error: Option<String> = r.get(6)?;
                Ok(Attempt {
                    run_id: r.get(0)?,
                    number: r.get(1)?,
                    status: AttemptStatus::parse(&status).ok_or_else(|| corrupt_col(2, "attempt status", &status))?,
                    deployment_id: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    error: error.as_deref().map(decode_error),
                    fuel_used: r.get::<_, i64>(7)? as u64,
                    compute_ms: r.get::<_, i64>(8)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// A run's log lines in the order they were written, at most `limit` after line `after`.
    pub async fn logs(
        &self,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, attempt, at, level, message, attributes FROM run_logs \
                 WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![run_id, after, limit as i64], |r| {
                let level: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    LogLine {
                        attempt: r.get(1)?,
                        at: r.get(2)?,
                        level: LogLevel::parse(&level)
                            .ok_or_else(|| corrupt_col(3, "log level", &level))?,
                        message: r.get(4)?,
                        attributes: r.get(5)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn apply_update(c: &Connection, u: &RunUpdate) -> Result<Vec<Lane>, StoreError> {
    let finished = u.status.is_final().then_some(u.now);
    let changed = c.execute(
        "UPDATE runs SET status = ?3, updated_at = ?4, available_at = coalesce(?5, available_at), \
           error = coalesce(?6, error), finished_at = coalesce(?7, finished_at), \
           machine = coalesce(?8, machine), \
           backoff = (?3 = 'QUEUED' AND coalesce(?5, available_at) > ?4), checkpointed = ?9 \
         WHERE id = ?1 AND status = ?2",
        params![
            u.run_id,
            u.expected.as_str(),
            u.status.as_str(),
            u.now,
            u.available_at,
            u.error.as_ref().map(encode_error),
            finished,
            u.machine.map(Machine::as_str),
            u.checkpointed,
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::Conflict);
    }
    if u.status.is_final() {
        return super::children::child_ended(c, &u.run_id, u.now);
    }
    Ok(Vec::new())
}

pub(super) fn load_run(c: &Connection, id: &str) -> Result<Option<Run>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ?1"
    ))?
    .query_row([id], run_from_row)
    .optional()?)
}

fn insert_task(
    c: &Connection,
    deployment_id: &str,
    position: usize,
    t: &TaskDefinition,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tasks (deployment_id, position, task_id, description, queue_name, queue_limit, \
           retry_max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, retry_oom_machine, \
           max_duration_ms, ttl_ms, machine, schedule_cron, schedule_timezone) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            deployment_id,
            position as i64,
            t.id,
            t.description,
            t.queue.as_ref().map(|q| &q.name),
            t.queue.as_ref().and_then(|q| q.concurrency_limit),
            t.retry.max_attempts,
            t.retry.factor,
            t.retry.min_timeout_ms.map(|v| v as i64),
            t.retry.max_timeout_ms.map(|v| v as i64),
            t.retry.randomize,
            t.retry.out_of_memory_machine.map(Machine::as_str),
            t.max_duration.map(|d| d.as_millis() as i64),
            t.ttl.map(|d| d.as_millis() as i64),
            t.machine.map(Machine::as_str),
            t.schedule.as_ref().map(|s| &s.cron),
            t.schedule.as_ref().map(|s| &s.timezone),
        ],
    )?;
    Ok(())
}

fn load_deployment(c: &Connection, id: &str) -> Result<Deployment, StoreError> {
    let (environment_id, version, component_digest, created_at) = c.query_row(
        "SELECT environment_id, version, component_digest, created_at FROM deployments WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let machine = |v: Option<String>, col: usize| -> rusqlite::Result<Option<Machine>> {
        v.map(|s| Machine::parse(&s).ok_or_else(|| corrupt_col(col, "machine", &s)))
            .transpose()
    };
    let tasks = c
        .prepare_cached(
            "SELECT task_id, description, queue_name, queue_limit, retry_max_attempts, retry_factor, \
               retry_min_ms, retry_max_ms, retry_randomize, retry_oom_machine, max_duration_ms, ttl_ms, machine, \
               schedule_cron, schedule_timezone \
             FROM tasks WHERE deployment_id = ?1 ORDER BY position",
        )?
        .query_map([id], |r| {
            let queue_name: Option<String> = r.get(2)?;
            Ok(TaskDefinition {
                id: r.get(0)?,
                description: r.get(1)?,
                queue: queue_name.map(|name| QueueDefinition {
                    name,
                    concurrency_limit: r.get(3).ok().flatten(),
                }),
                retry: RetryDefinition {
                    max_attempts: r.get(4)?,
                    factor: r.get(5)?,
                    min_timeout_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    max_timeout_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    randomize: r.get(8)?,
                    out_of_memory_machine: machine(r.get(9)?, 9)?,
                },
                max_duration: r
                    .get::<_, Option<i64>>(10)?
                    .map(|v| std::time::Duration::from_millis(v as u64)),
                ttl: r
                    .get::<_, Option<i64>>(11)?
                    .map(|v| std::time::Duration::from_millis(v as u64)),
                machine: machine(r.get(12)?, 12)?,
                schedule: r.get::<_, Option<String>>(13)?.map(|cron| TaskSchedule {
                    cron,
                    timezone: r
                        .get::<_, Option<String>>(14)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| crate::schedule::DEFAULT_TIMEZONE.to_owned()),
                }),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Deployment {
        id: id.to_owned(),
        environment_id,
        version,
        component_digest,
        created_at,
        tasks,
    })
}

/// The run a live idempotency key points to, unless that run failed or expired (then the key is
/// released so a new run can take it).
pub(super) fn live_idempotent_run(c: &Connection, new: &NewRun) -> Result<Option<Run>, StoreError> {
    let Some((key, _)) = &new.idempotency else {
        return Ok(None);
    };
    let found: Option<(String, Millis)> = c
        .prepare_cached(
            "SELECT run_id, expires_at FROM idempotency_keys WHERE environment_id = ?1 AND task_id = ?2 AND key = ?3",
        )?
        .query_row(params![new.environment_id, new.task_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((run_id, expires_at)) = found else {
        return Ok(None);
    };
    if expires_at > new.now
        && let Some(run) = load_run(c, &run_id)?
        && !run.status.is_failure()
    {
        return Ok(Some(run));
    }
    c.execute(
        "DELETE FROM idempotency_keys WHERE environment_id = ?1 AND task_id = ?2 AND key = ?3",
        params![new.environment_id, new.task_id, key],
    )?;
    Ok(None)
}

fn insert_all(
    c: &Connection,
    runs: Vec<NewRun>,
    batch_id: Option<&str>,
) -> Result<Vec<Inserted>, StoreError> {
    if let (Some(batch), Some(first)) = (batch_id, runs.first()) {
        c.execute(
            "INSERT INTO batches (id, environment_id, run_count, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![batch, first.environment_id, runs.len() as i64, first.now],
        )?;
    }
    let mut out = Vec::with_capacity(runs.len());
    for new in runs {
        if let Some(existing) = live_idempotent_run(c, &new)? {
            out.push(Inserted {
                run: existing,
                cached: true,
            });
            continue;
        }
        let id = insert_one(c, &new, batch_id)?;
        out.push(Inserted {
            run: load_run(c, &id)?.ok_or(StoreError::NotFound("run"))?,
            cached: false,
        });
    }
    Ok(out)
}

/// A run's journal to store together with an effect the run has (children it triggers, a token
/// it makes, a metadata change): `entries(effect)` returns the encoded entries the attempt recorded
/// since the last checkpoint followed by the call's own entry, which names the effect's result.
pub struct JournalWith<T: ?Sized> {
    pub run_id: String,
    pub attempt: u32,
    pub entries: EntriesFor<T>,
    /// Log lines written since the last checkpoint, stored with the effect.
    pub logs: Vec<LogLine>,
}

/// Builds a journal segment once the effect's result is known.
pub type EntriesFor<T> = Box<dyn FnOnce(&T) -> Vec<u8> + Send>;

/// Appends the segment of `journal` for `effect` and marks the run as having a journal, in the
/// caller's transaction. `Conflict` if the run is no longer executing (canceled meanwhile).
pub(super) fn commit_journal<T: ?Sized>(
    c: &Connection,
    journal: JournalWith<T>,
    effect: &T,
    now: Millis,
) -> Result<(), StoreError> {
    let entries = (journal.entries)(effect);
    super::tokens::append_journal(c, &journal.run_id, journal.attempt, entries, now)?;
    insert_logs(c, &journal.run_id, &journal.logs)?;
    let marked = c.execute(
        "UPDATE runs SET checkpointed = 1 WHERE id = ?1 AND status = 'EXECUTING'",
        [&journal.run_id],
    )?;
    if marked == 0 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

pub(super) fn insert_one(
    c: &Connection,
    new: &NewRun,
    batch_id: Option<&str>,
) -> Result<String, StoreError> {
    super::queues::ensure_queue(c, &new.environment_id, &new.queue, new.now)?;
    let id = new_id("run");
    let available_at = new.delay_until.unwrap_or(new.now);
    c.prepare_cached(
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, \
           queue_ts, available_at, created_at, updated_at, priority_ms, score, delay_until, ttl_ms, \
           expires_at, idempotency_key, metadata, max_duration_ms, concurrency_key, lock_to_version, batch_id, \
           oom_machine, seed, parent_run_id, root_run_id, depth) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?17, ?18, ?19, \
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
    )?
    .execute(params![
        id,
        new.environment_id,
        new.task_id,
        new.status.as_str(),
        new.payload,
        new.queue,
        new.machine.as_str(),
        new.retry.max_attempts,
        new.retry.factor,
        new.retry.min_timeout_ms as i64,
        new.retry.max_timeout_ms as i64,
        new.retry.randomize,
        new.queue_timestamp,
        available_at,
        new.now,
        new.priority_ms,
        new.queue_timestamp.saturating_sub(new.priority_ms),
        new.delay_until,
        new.ttl.map(duration_ms),
        new.expires_at,
        new.idempotency.as_ref().map(|(k, _)| k),
        new.metadata,
        new.max_duration.map(duration_ms),
        new.concurrency_key,
        new.lock_to_version,
        batch_id,
        new.oom_machine.map(Machine::as_str),
        rand::random::<i64>(),
        new.parent.as_ref().map(|p| &p.parent_run_id),
        new.parent.as_ref().map(|p| &p.root_run_id),
        new.parent.as_ref().map_or(0, |p| p.depth),
    ])?;
    if !new.tags.is_empty() {
        write_tags(c, &id, &new.environment_id, &new.tags)?;
    }
    if let Some((key, expires_at)) = &new.idempotency {
        c.execute(
            "INSERT INTO idempotency_keys (environment_id, task_id, key, run_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![new.environment_id, new.task_id, key, id, expires_at],
        )?;
    }
    Ok(id)
}

fn write_tags(
    c: &Connection,
    run_id: &str,
    environment_id: &str,
    tags: &[String],
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE runs SET tags = ?2 WHERE id = ?1",
        params![run_id, serde_json::Value::from(tags.to_vec()).to_string()],
    )?;
    let mut insert = c.prepare_cached(
        "INSERT OR IGNORE INTO run_tags (run_id, environment_id, tag) VALUES (?1, ?2, ?3)",
    )?;
    for tag in tags {
        insert.execute(params![run_id, environment_id, tag])?;
    }
    Ok(())
}

/// The environment `project`/`environment`, created (with its project) if it does not exist.
fn ensure_environment(
    c: &Connection,
    project: &str,
    environment: &str,
    now: Millis,
) -> Result<Environment, StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO projects (id, slug, created_at) VALUES (?1, ?2, ?3)",
        params![new_id("proj"), project, now],
    )?;
    let project_id: String =
        c.query_row("SELECT id FROM projects WHERE slug = ?1", [project], |r| {
            r.get(0)
        })?;
    c.execute(
        "INSERT OR IGNORE INTO environments (id, project_id, slug, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![new_id("env"), project_id, environment, now],
    )?;
    Ok(Environment {
        id: c.query_row(
            "SELECT id FROM environments WHERE project_id = ?1 AND slug = ?2",
            params![project_id, environment],
            |r| r.get(0),
        )?,
        project_slug: project.to_owned(),
        slug: environment.to_owned(),
        limits: Default::default(),
    })
}

/// Length of the key prefix kept for display (the `tr_<env>_` part and a few secret characters).
const KEY_PREFIX_CHARS: usize = 12;

fn insert_key(
    c: &Connection,
    environment_id: &str,
    key: &NewKey,
    now: Millis,
) -> Result<String, StoreError> {
    let id = new_id("key");
    let prefix: String = key.plaintext.chars().take(KEY_PREFIX_CHARS).collect();
    c.execute(
        "INSERT INTO api_keys (id, environment_id, key_hash, created_at, prefix) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, environment_id, &key.hash[..], now, prefix],
    )?;
    Ok(id)
}

fn load_key(c: &Connection, id: &str) -> Result<Option<KeyInfo>, StoreError> {
    Ok(c.query_row(
        "SELECT k.id, p.slug, e.slug, k.prefix, k.created_at, k.revoked_at FROM api_keys k \
         JOIN environments e ON e.id = k.environment_id JOIN projects p ON p.id = e.project_id \
         WHERE k.id = ?1",
        [id],
        |r| {
            Ok(KeyInfo {
                id: r.get(0)?,
                project: r.get(1)?,
                environment: r.get(2)?,
                prefix: r.get(3)?,
                created_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        },
    )
    .optional()?)
}
