//! Deployments: the component bytes (content-addressed), versions (`YYYYMMDD.N`, assigned inside
//! the insert transaction) with their components in order (`deployment_components`), their task
//! definitions (each naming the component that defines it), and the runs a deploy releases from
//! PENDING_VERSION.

use rusqlite::{Connection, OptionalExtension, params};

use std::sync::LazyLock;

use super::SqliteStore;
use super::guards::status_guard;
use super::rows::*;
use super::rows::{exec, query_one};
use crate::model::*;
use crate::store::*;

pub(super) fn insert_task(
    c: &Connection,
    deployment_id: &str,
    component_digest: &str,
    position: usize,
    t: &TaskDefinition,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO tasks (deployment_id, position, task_id, description, queue_name, queue_limit, \
           retry_max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, retry_oom_machine, \
           max_duration_ms, ttl_ms, machine, schedule_cron, schedule_timezone, component_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
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
            component_digest,
        ],
    )?;
    Ok(())
}

pub(super) fn load_deployment(c: &Connection, id: &str) -> Result<Deployment, StoreError> {
    let (environment_id, version, created_at) = query_one(
        c,
        "SELECT environment_id, version, created_at FROM deployments WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let components: Vec<DeployedComponent> = c
        .prepare_cached(
            "SELECT component_digest, name FROM deployment_components \
             WHERE deployment_id = ?1 ORDER BY position",
        )?
        .query_map([id], |r| {
            Ok(DeployedComponent {
                digest: r.get(0)?,
                name: r.get(1)?,
                tasks: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let machine = |v: Option<String>, col: usize| -> rusqlite::Result<Option<Machine>> {
        v.map(|s| Machine::parse(&s).ok_or_else(|| corrupt_col(col, "machine", &s)))
            .transpose()
    };
    let tasks = c
        .prepare_cached(
            "SELECT task_id, description, queue_name, queue_limit, retry_max_attempts, retry_factor, \
               retry_min_ms, retry_max_ms, retry_randomize, retry_oom_machine, max_duration_ms, ttl_ms, machine, \
               schedule_cron, schedule_timezone, component_digest \
             FROM tasks WHERE deployment_id = ?1 ORDER BY position",
        )?
        .query_map([id], |r| {
            let queue_name: Option<String> = r.get(2)?;
            let component: Option<String> = r.get(15)?;
            let task = TaskDefinition {
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
            };
            Ok((component, task))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    crate::store::codec::assemble_deployment(
        id,
        environment_id,
        version,
        created_at,
        components,
        tasks,
    )
}

/// PENDING_VERSION runs of a task a deploy brought go to QUEUED (`Enqueue`), keeping their order.
pub(super) static ENQUEUE_PENDING_VERSION: LazyLock<String> = LazyLock::new(|| {
    let guard = status_guard(
        Step::Enqueue,
        RunStatus::Queued,
        &[RunStatus::PendingVersion],
    );
    format!(
        "UPDATE runs SET status = '{queued}', available_at = ?3, updated_at = ?3, backoff = 0 \
         WHERE environment_id = ?1 AND task_id = ?2 AND {guard} \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str()
    )
});

impl SqliteStore {
    pub async fn insert_deployment(
        &self,
        environment_id: &str,
        components: Vec<NewComponent>,
        day: String,
        now: Millis,
    ) -> Result<Deployment, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let Some(first) = components.first() else {
                return Err(StoreError::Refused(
                    "a deployment needs at least one component".into(),
                ));
            };
            let first = hex(&first.digest);
            let prefix = format!("{day}.");
            let last: Option<i64> = query_one(
                c,
                "SELECT max(CAST(substr(version, ?2) AS INTEGER)) FROM deployments \
                 WHERE environment_id = ?1 AND version LIKE ?3",
                params![environment_id, prefix.len() as i64 + 1, format!("{prefix}%")],
                |r| r.get(0),
            )?;
            let version = format!("{day}.{}", last.unwrap_or(0) + 1);
            let id = new_id("deployment");
            for component in &components {
                exec(
                    c,
                    "INSERT OR IGNORE INTO components (digest, bytes, created_at) VALUES (?1, ?2, ?3)",
                    params![hex(&component.digest), component.bytes, now],
                )?;
            }
            exec(
                c,
                "INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, environment_id, version, first, now],
            )?;
            let mut deployed = Vec::with_capacity(components.len());
            let mut position = 0;
            for (index, component) in components.into_iter().enumerate() {
                let digest = hex(&component.digest);
                exec(
                    c,
                    "INSERT INTO deployment_components (deployment_id, position, component_digest, name) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, index as i64, digest, component.name],
                )?;
                for t in &component.tasks {
                    insert_task(c, &id, &digest, position, t)?;
                    position += 1;
                }
                deployed.push(DeployedComponent {
                    digest,
                    name: component.name,
                    tasks: component.tasks,
                });
            }
            let deployment = Deployment {
                id,
                environment_id,
                version,
                created_at: now,
                components: deployed,
            };
            let tasks: Vec<TaskDefinition> = deployment.tasks().cloned().collect();
            super::queues::sync_queues(c, &deployment.environment_id, &tasks, now)?;
            Ok(deployment)
        })
        .await
    }

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

    pub async fn deployment(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| {
            let exists: bool = c
                .query_row(
                    "SELECT 1 FROM deployments WHERE id = ?1 AND environment_id = ?2",
                    params![id, environment_id],
                    |_| Ok(true),
                )
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

    pub async fn component_bytes(
        &self,
        environment_id: &str,
        digest: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let (environment_id, digest) = (environment_id.to_owned(), digest.to_owned());
        self.read(move |c| {
            // Content-addressed bytes are shared, but an environment reads only its own versions'.
            query_one(
                c,
                "SELECT bytes FROM components WHERE digest = ?2 AND EXISTS ( \
                   SELECT 1 FROM deployment_components dc JOIN deployments d ON d.id = dc.deployment_id \
                   WHERE dc.component_digest = ?2 AND d.environment_id = ?1)",
                params![environment_id, digest],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound("component"))
        })
        .await
    }

    pub async fn usable_component_digests(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT DISTINCT component_digest FROM deployment_components WHERE deployment_id IN ( \
                   SELECT (SELECT d.id FROM deployments d WHERE d.environment_id = e.id \
                           ORDER BY d.created_at DESC, d.rowid DESC LIMIT 1) FROM environments e \
                   UNION SELECT deployment_id FROM runs \
                     WHERE deployment_id IS NOT NULL AND status NOT IN {final_} \
                   UNION SELECT d.id FROM runs r JOIN deployments d \
                     ON d.environment_id = r.environment_id AND d.version = r.lock_to_version \
                     WHERE r.lock_to_version IS NOT NULL AND r.status NOT IN {final_})",
                final_ = super::lifecycle::FINAL
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn enqueue_pending_version(
        &self,
        environment_id: &str,
        task_ids: Vec<String>,
        now: Millis,
    ) -> Result<Vec<Lane>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let mut lanes = Vec::new();
            let mut stmt = c.prepare_cached(&ENQUEUE_PENDING_VERSION)?;
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
}
