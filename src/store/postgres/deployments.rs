//! Deployments: the component bytes (content-addressed), versions (`YYYYMMDD.N`, assigned inside
//! the insert transaction) with their components in order (`deployment_components`), their task
//! definitions (each naming the component that defines it), and the runs a deploy releases from
//! PENDING_VERSION.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::store::codec::status_guard;
use crate::store::*;

/// An environment's deployments newest first. SQLite breaks a tie of `created_at` by `rowid`
/// (insertion order); here versions do: deployments made in the same millisecond share their
/// day, and within a day a later deployment has the larger `N` (a longer version, or an equally
/// long one that sorts after).
pub(super) const NEWEST_FIRST: &str = "created_at DESC, length(version) DESC, version DESC";

pub(super) async fn insert_task(
    c: &impl GenericClient,
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &deployment_id,
            &(position as i64),
            &t.id,
            &t.description,
            &t.queue.as_ref().map(|q| &q.name),
            &t.queue
                .as_ref()
                .and_then(|q| q.concurrency_limit)
                .map(i64::from),
            &t.retry.max_attempts.map(i64::from),
            &t.retry.factor,
            // Stored as their bit patterns, as SQLite does, so every value reads back the same.
            &t.retry.min_timeout_ms.map(|v| v as i64),
            &t.retry.max_timeout_ms.map(|v| v as i64),
            &t.retry.randomize.map(i64::from),
            &t.retry.out_of_memory_machine.map(Machine::as_str),
            &t.max_duration.map(|d| d.as_millis() as i64),
            &t.ttl.map(|d| d.as_millis() as i64),
            &t.machine.map(Machine::as_str),
            &t.schedule.as_ref().map(|s| &s.cron),
            &t.schedule.as_ref().map(|s| &s.timezone),
            &component_digest,
        ],
    )
    .await?;
    Ok(())
}

fn machine(row: &Row, i: usize) -> Result<Option<Machine>, StoreError> {
    get::<Option<String>>(row, i)?
        .map(|s| Machine::parse(&s).ok_or_else(|| corrupt("machine", &s)))
        .transpose()
}

fn task_from_row(r: &Row) -> Result<(Option<String>, TaskDefinition), StoreError> {
    let queue_name: Option<String> = get(r, 2)?;
    let component: Option<String> = get(r, 15)?;
    let task = TaskDefinition {
        id: get(r, 0)?,
        description: get(r, 1)?,
        queue: queue_name
            .map(|name| {
                Ok::<_, StoreError>(QueueDefinition {
                    name,
                    concurrency_limit: opt_int(r, 3)?,
                })
            })
            .transpose()?,
        retry: RetryDefinition {
            max_attempts: opt_int(r, 4)?,
            factor: get(r, 5)?,
            min_timeout_ms: get::<Option<i64>>(r, 6)?.map(|v| v as u64),
            max_timeout_ms: get::<Option<i64>>(r, 7)?.map(|v| v as u64),
            randomize: get::<Option<i64>>(r, 8)?.map(|v| v != 0),
            out_of_memory_machine: machine(r, 9)?,
        },
        max_duration: get::<Option<i64>>(r, 10)?
            .map(|v| std::time::Duration::from_millis(v as u64)),
        ttl: get::<Option<i64>>(r, 11)?.map(|v| std::time::Duration::from_millis(v as u64)),
        machine: machine(r, 12)?,
        schedule: get::<Option<String>>(r, 13)?
            .map(|cron| {
                Ok::<_, StoreError>(TaskSchedule {
                    cron,
                    timezone: get::<Option<String>>(r, 14)?
                        .unwrap_or_else(|| crate::schedule::DEFAULT_TIMEZONE.to_owned()),
                })
            })
            .transpose()?,
    };
    Ok((component, task))
}

pub(super) async fn load_deployment(
    c: &impl GenericClient,
    id: &str,
) -> Result<Deployment, StoreError> {
    let row = query_one(
        c,
        "SELECT environment_id, version, created_at FROM deployments WHERE id = $1",
        &[&id],
    )
    .await?;
    let (environment_id, version, created_at) = (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
    let components: Vec<DeployedComponent> = query(
        c,
        "SELECT component_digest, name FROM deployment_components \
         WHERE deployment_id = $1 ORDER BY position",
        &[&id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(DeployedComponent {
            digest: get(r, 0)?,
            name: get(r, 1)?,
            tasks: Vec::new(),
        })
    })
    .collect::<Result<_, StoreError>>()?;
    let tasks = query(
        c,
        "SELECT task_id, description, queue_name, queue_limit, retry_max_attempts, retry_factor, \
           retry_min_ms, retry_max_ms, retry_randomize, retry_oom_machine, max_duration_ms, ttl_ms, machine, \
           schedule_cron, schedule_timezone, component_digest \
         FROM tasks WHERE deployment_id = $1 ORDER BY position",
        &[&id],
    )
    .await?
    .iter()
    .map(task_from_row)
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
        "UPDATE runs SET status = '{queued}', available_at = $3, updated_at = $3, backoff = 0 \
         WHERE environment_id = $1 AND task_id = $2 AND {guard} \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str()
    )
});

impl PostgresStore {
    pub async fn insert_deployment(
        &self,
        environment_id: &str,
        components: Vec<NewComponent>,
        day: String,
        now: Millis,
    ) -> Result<Deployment, StoreError> {
        let Some(first) = components.first() else {
            return Err(StoreError::Refused(
                "a deployment needs at least one component".into(),
            ));
        };
        let first = hex(&first.digest);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The version is the day's largest `N` plus one: two deploys to one environment at once
        // would read the same largest `N`. The environment's row stays locked until this
        // commits, so they take turns and the second reads the first's version. (`NO KEY
        // UPDATE`: inserts that reference the environment, such as triggers, are not held up.)
        exec(
            &tx,
            "SELECT 1 FROM environments WHERE id = $1 FOR NO KEY UPDATE",
            &[&environment_id],
        )
        .await?;
        let prefix = format!("{day}.");
        // SQLite's CAST reads a suffix that is not a number as 0; here such a suffix (never
        // written by kiln) is skipped, so the cast cannot fail.
        let last: Option<i64> = get(
            &query_one(
                &tx,
                "SELECT max(CASE WHEN n ~ '^[0-9]{1,18}$' THEN n::bigint END) FROM ( \
                   SELECT substr(version, length($2::text) + 1) AS n FROM deployments \
                   WHERE environment_id = $1 AND version LIKE $3) v",
                &[&environment_id, &prefix, &format!("{prefix}%")],
            )
            .await?,
            0,
        )?;
        let version = format!("{day}.{}", last.unwrap_or(0) + 1);
        let id = new_id("deployment");
        // Content-addressed: a deploy elsewhere storing the same bytes at once makes this insert
        // wait for it and then do nothing. In digest order, so two deploys sharing components
        // wait for each other in one order and never deadlock.
        let mut stored: Vec<(String, &[u8])> = components
            .iter()
            .map(|c| (hex(&c.digest), &c.bytes[..]))
            .collect();
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        stored.dedup_by(|a, b| a.0 == b.0);
        for (digest, bytes) in &stored {
            exec(
                &tx,
                "INSERT INTO components (digest, bytes, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[digest, bytes, &now],
            )
            .await?;
        }
        exec(
            &tx,
            "INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&id, &environment_id, &version, &first, &now],
        )
        .await?;
        let mut deployed = Vec::with_capacity(components.len());
        let mut position = 0;
        for (index, component) in components.into_iter().enumerate() {
            let digest = hex(&component.digest);
            exec(
                &tx,
                "INSERT INTO deployment_components (deployment_id, position, component_digest, name) \
                 VALUES ($1, $2, $3, $4)",
                &[&id, &(index as i64), &digest, &component.name],
            )
            .await?;
            for t in &component.tasks {
                insert_task(&tx, &id, &digest, position, t).await?;
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
            environment_id: environment_id.to_owned(),
            version,
            created_at: now,
            components: deployed,
        };
        let tasks: Vec<TaskDefinition> = deployment.tasks().cloned().collect();
        super::queues::sync_queues(&tx, &deployment.environment_id, &tasks, now).await?;
        tx.commit().await?;
        Ok(deployment)
    }

    pub async fn latest_deployment(
        &self,
        environment_id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let c = self.reader().await?;
        let id: Option<String> = query_opt(
            &c,
            &format!(
                "SELECT id FROM deployments WHERE environment_id = $1 ORDER BY {NEWEST_FIRST} LIMIT 1"
            ),
            &[&environment_id],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        match id {
            Some(id) => Ok(Some(load_deployment(&c, &id).await?)),
            None => Ok(None),
        }
    }

    pub async fn deployment(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let c = self.reader().await?;
        let exists = query_opt(
            &c,
            "SELECT 1 FROM deployments WHERE id = $1 AND environment_id = $2",
            &[&id, &environment_id],
        )
        .await?
        .is_some();
        if exists {
            load_deployment(&c, id).await.map(Some)
        } else {
            Ok(None)
        }
    }

    pub async fn deployment_by_version(
        &self,
        environment_id: &str,
        version: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let c = self.reader().await?;
        let id: Option<String> = query_opt(
            &c,
            "SELECT id FROM deployments WHERE environment_id = $1 AND version = $2",
            &[&environment_id, &version],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        match id {
            Some(id) => Ok(Some(load_deployment(&c, &id).await?)),
            None => Ok(None),
        }
    }

    pub async fn list_deployments(
        &self,
        environment_id: &str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let c = self.reader().await?;
        let ids: Vec<String> = query(
            &c,
            &format!(
                "SELECT id FROM deployments WHERE environment_id = $1 ORDER BY {NEWEST_FIRST}"
            ),
            &[&environment_id],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
        let mut deployments = Vec::with_capacity(ids.len());
        for id in &ids {
            deployments.push(load_deployment(&c, id).await?);
        }
        Ok(deployments)
    }

    pub async fn component_bytes(
        &self,
        environment_id: &str,
        digest: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let c = self.reader().await?;
        // Content-addressed bytes are shared, but an environment reads only its own versions'.
        query_opt(
            &c,
            "SELECT bytes FROM components WHERE digest = $2 AND EXISTS ( \
               SELECT 1 FROM deployment_components dc JOIN deployments d ON d.id = dc.deployment_id \
               WHERE dc.component_digest = $2 AND d.environment_id = $1)",
            &[&environment_id, &digest],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?
        .ok_or(StoreError::NotFound("component"))
    }

    pub async fn usable_component_digests(&self) -> Result<Vec<String>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            &format!(
                "SELECT DISTINCT component_digest FROM deployment_components WHERE deployment_id IN ( \
                   SELECT (SELECT d.id FROM deployments d WHERE d.environment_id = e.id \
                           ORDER BY d.created_at DESC, length(d.version) DESC, d.version DESC LIMIT 1) FROM environments e \
                   UNION SELECT deployment_id FROM runs \
                     WHERE deployment_id IS NOT NULL AND status NOT IN {final_} \
                   UNION SELECT d.id FROM runs r JOIN deployments d \
                     ON d.environment_id = r.environment_id AND d.version = r.lock_to_version \
                     WHERE r.lock_to_version IS NOT NULL AND r.status NOT IN {final_})",
                final_ = super::lifecycle::FINAL
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    pub async fn enqueue_pending_version(
        &self,
        environment_id: &str,
        task_ids: Vec<String>,
        now: Millis,
    ) -> Result<Vec<Lane>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let mut lanes = Vec::new();
        for task in &task_ids {
            for row in query(
                &tx,
                &ENQUEUE_PENDING_VERSION,
                &[&environment_id, task, &now],
            )
            .await?
            {
                let lane = lane_from_row(&row)?;
                if !lanes.contains(&lane) {
                    lanes.push(lane);
                }
            }
        }
        tx.commit().await?;
        Ok(lanes)
    }
}

#[cfg(test)]
#[path = "deployments_tests.rs"]
mod tests;
