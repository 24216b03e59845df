//! Queues, environment limits and the ready queue's lanes: the queries the scheduler and the queue
//! API run.
//!
//! The ready index (`runs_ready`, migration V5) is ordered by lane then score, so claiming the head
//! of a lane is an index seek that never passes another lane's runs, however many are queued.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries::lane_from_row;
use super::{Store, StoreError};
use crate::model::{
    Environment, Lane, Millis, Queue, QueueKind, QueueRef, Run, TASK_QUEUE_PREFIX, TaskDefinition,
    new_id,
};

const QUEUE_COLUMNS: &str = "id, environment_id, name, kind, concurrency_limit, override_limit, \
     overridden_at, paused, created_at, updated_at";

/// An environment as an admin sees it.
#[derive(Debug, Clone)]
pub struct EnvironmentInfo {
    pub environment: Environment,
    /// `None`: the host's default.
    pub concurrency_limit: Option<u32>,
    /// Outbound HTTP rules (`scheme://host[:port]`); empty: no host.
    pub allowed_outbound_hosts: Vec<String>,
}

fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    let kind: String = row.get(3)?;
    Ok(Queue {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        name: row.get(2)?,
        kind: QueueKind::parse(&kind)
            .ok_or_else(|| super::queries::corrupt_col(3, "queue kind", &kind))?,
        concurrency_limit: row.get(4)?,
        override_limit: row.get(5)?,
        overridden_at: row.get(6)?,
        paused: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

/// The queue every run of `task` uses unless the task or the trigger names another.
pub fn task_queue_name(task: &TaskDefinition) -> String {
    match &task.queue {
        Some(q) => q.name.clone(),
        None => format!("{TASK_QUEUE_PREFIX}{}", task.id),
    }
}

/// Creates the queues a deployment's tasks run on and sets their limits from the definitions. An
/// override set over the API and the pause flag stay.
pub(super) fn sync_queues(
    c: &Connection,
    environment_id: &str,
    tasks: &[TaskDefinition],
    now: Millis,
) -> Result<(), StoreError> {
    let mut upsert = c.prepare_cached(
        "INSERT INTO queues (id, environment_id, name, kind, concurrency_limit, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
         ON CONFLICT (environment_id, name) DO UPDATE SET \
           concurrency_limit = excluded.concurrency_limit, updated_at = excluded.updated_at",
    )?;
    for task in tasks {
        let name = task_queue_name(task);
        let limit = task.queue.as_ref().and_then(|q| q.concurrency_limit);
        upsert.execute(params![
            new_id("queue"),
            environment_id,
            name,
            QueueKind::of(&name).as_str(),
            limit,
            now
        ])?;
    }
    Ok(())
}

/// Makes sure a queue named at trigger time exists (without a limit of its own).
pub(super) fn ensure_queue(
    c: &Connection,
    environment_id: &str,
    name: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let exists = c
        .prepare_cached("SELECT 1 FROM queues WHERE environment_id = ?1 AND name = ?2")?
        .exists(params![environment_id, name])?;
    if !exists {
        c.prepare_cached(
            "INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![
            new_id("queue"),
            environment_id,
            name,
            QueueKind::of(name).as_str(),
            now
        ])?;
    }
    Ok(())
}

fn find_queue(
    c: &Connection,
    environment_id: &str,
    queue: &QueueRef,
) -> Result<Option<Queue>, StoreError> {
    let (column, value) = match queue {
        QueueRef::Id(id) => ("id", id.clone()),
        QueueRef::Task(task) => ("name", format!("{TASK_QUEUE_PREFIX}{task}")),
        QueueRef::Custom(name) => ("name", name.clone()),
    };
    Ok(c.prepare_cached(&format!(
        "SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = ?1 AND {column} = ?2"
    ))?
    .query_row(params![environment_id, value], queue_from_row)
    .optional()?
    // `custom` never finds a task's own queue.
    .filter(|q| !matches!(queue, QueueRef::Custom(_)) || q.kind == QueueKind::Custom))
}

impl Store {
    /// Claims the heads of several lanes (up to `count` runs each, in score order) in one
    /// transaction and one `UPDATE … RETURNING`; the runs are DEQUEUED. Returns each lane's runs,
    /// in the order asked.
    pub async fn claim_lanes(
        &self,
        lanes: Vec<(Lane, usize)>,
        now: Millis,
    ) -> Result<Vec<Vec<Run>>, StoreError> {
        self.write(move |c| {
            let mut heads: Vec<Vec<String>> = Vec::with_capacity(lanes.len());
            let mut head = c.prepare_cached(
                "SELECT id FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
                   AND environment_id = ?1 AND queue = ?2 AND concurrency_key IS ?3 \
                 ORDER BY score LIMIT ?4",
            )?;
            for (lane, count) in &lanes {
                heads.push(
                    head.query_map(
                        params![
                            lane.environment_id,
                            lane.queue,
                            lane.concurrency_key,
                            *count as i64
                        ],
                        |r| r.get(0),
                    )?
                    .collect::<Result<_, _>>()?,
                );
            }
            let ids: Vec<&String> = heads.iter().flatten().collect();
            if ids.is_empty() {
                return Ok(heads.iter().map(|_| Vec::new()).collect());
            }
            let claimed = c
                .prepare_cached(
                    "UPDATE runs SET status = 'DEQUEUED', updated_at = ?1 \
                     WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'QUEUED' \
                     RETURNING id",
                )?
                .query_map(
                    params![
                        now,
                        serde_json::to_string(&ids)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?
                    ],
                    |r| r.get::<_, String>(0),
                )?
                .count();
            if claimed != ids.len() {
                // The writer is the only one changing runs, so the heads it just read are QUEUED.
                return Err(StoreError::Corrupt(format!(
                    "claimed {claimed} of {} queued runs",
                    ids.len()
                )));
            }
            let mut out = Vec::with_capacity(heads.len());
            for lane in heads {
                let mut runs = Vec::with_capacity(lane.len());
                for id in lane {
                    runs.push(
                        super::queries::load_run(c, &id)?.ok_or(StoreError::NotFound("run"))?,
                    );
                }
                out.push(runs);
            }
            Ok(out)
        })
        .await
    }

    /// Every lane with ready runs (read once at start; afterwards the engine tracks them).
    pub async fn ready_lanes(&self) -> Result<Vec<Lane>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(
                "SELECT DISTINCT environment_id, queue, concurrency_key FROM runs \
                 WHERE status = 'QUEUED' AND backoff = 0",
            )?
            .query_map([], lane_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Ends the retry backoff of queued runs whose time has come. Returns their lanes.
    pub async fn end_backoffs(&self, now: Millis, limit: usize) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE runs SET backoff = 0 \
                 WHERE id IN (SELECT id FROM runs WHERE status = 'QUEUED' AND backoff = 1 \
                              AND available_at <= ?1 ORDER BY available_at LIMIT ?2) \
                 RETURNING environment_id, queue, concurrency_key",
            )?
            .query_map(params![now, limit as i64], lane_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Every queue of every environment (the scheduler's limits at start).
    pub async fn all_queues(&self) -> Result<Vec<Queue>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(&format!("SELECT {QUEUE_COLUMNS} FROM queues"))?
                .query_map([], queue_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The queues of a deployment's environment, as the deployment left them.
    pub async fn environment_queues(&self, environment_id: &str) -> Result<Vec<Queue>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = ?1 ORDER BY name"
            ))?
            .query_map([environment_id], queue_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// One page of an environment's queues by name, and how many there are.
    pub async fn list_queues(
        &self,
        environment_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Queue>, u64), StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let total: i64 = c.query_row(
                "SELECT count(*) FROM queues WHERE environment_id = ?1",
                [&environment_id],
                |r| r.get(0),
            )?;
            let page = c
                .prepare_cached(&format!(
                    "SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = ?1 \
                     ORDER BY name LIMIT ?2 OFFSET ?3"
                ))?
                .query_map(
                    params![environment_id, limit as i64, offset as i64],
                    queue_from_row,
                )?
                .collect::<Result<_, _>>()?;
            Ok((page, total as u64))
        })
        .await
    }

    /// A queue of the environment, if it has one by that reference.
    pub async fn queue(
        &self,
        environment_id: &str,
        queue: QueueRef,
    ) -> Result<Option<Queue>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| find_queue(c, &environment_id, &queue))
            .await
    }

    /// How many runs wait in a queue (ready or in retry backoff).
    pub async fn queued_count(&self, environment_id: &str, queue: &str) -> Result<u64, StoreError> {
        let (environment_id, queue) = (environment_id.to_owned(), queue.to_owned());
        self.read(move |c| {
            let ready: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM runs WHERE status = 'QUEUED' AND backoff = 0 \
                     AND environment_id = ?1 AND queue = ?2",
                )?
                .query_row(params![environment_id, queue], |r| r.get(0))?;
            let waiting: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM runs WHERE status = 'QUEUED' AND backoff = 1 \
                     AND environment_id = ?1 AND queue = ?2",
                )?
                .query_row(params![environment_id, queue], |r| r.get(0))?;
            Ok((ready + waiting) as u64)
        })
        .await
    }

    /// Pauses or resumes a queue. `None` if the environment has no such queue.
    pub async fn set_queue_paused(
        &self,
        environment_id: &str,
        queue: QueueRef,
        paused: bool,
        now: Millis,
    ) -> Result<Option<Queue>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let Some(q) = find_queue(c, &environment_id, &queue)? else {
                return Ok(None);
            };
            c.execute(
                "UPDATE queues SET paused = ?2, updated_at = ?3 WHERE id = ?1",
                params![q.id, paused, now],
            )?;
            Ok(Some(Queue {
                paused,
                updated_at: now,
                ..q
            }))
        })
        .await
    }

    /// Overrides a queue's limit (`None`: back to its definition's). `None` if the environment has
    /// no such queue.
    pub async fn override_queue_limit(
        &self,
        environment_id: &str,
        queue: QueueRef,
        limit: Option<u32>,
        now: Millis,
    ) -> Result<Option<Queue>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let Some(q) = find_queue(c, &environment_id, &queue)? else {
                return Ok(None);
            };
            let overridden_at = limit.map(|_| now);
            c.execute(
                "UPDATE queues SET override_limit = ?2, overridden_at = ?3, updated_at = ?4 WHERE id = ?1",
                params![q.id, limit, overridden_at, now],
            )?;
            Ok(Some(Queue {
                override_limit: limit,
                overridden_at,
                updated_at: now,
                ..q
            }))
        })
        .await
    }

    /// An environment's own limits (the host's where it has none).
    pub async fn environment_limits(
        &self,
        environment_id: &str,
    ) -> Result<crate::model::EnvironmentLimits, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT max_component_bytes, max_payload_bytes FROM environments WHERE id = ?1",
            )?
            .query_row([environment_id], |r| {
                Ok(crate::model::EnvironmentLimits {
                    max_component_bytes: r.get(0)?,
                    max_payload_bytes: r.get(1)?,
                })
            })
            .optional()?
            .unwrap_or_default())
        })
        .await
    }

    /// Every environment with its concurrency limit and limits.
    pub async fn environments(&self) -> Result<Vec<EnvironmentInfo>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare(&format!("{ENVIRONMENT_SELECT} ORDER BY p.slug, e.slug"))?
                    .query_map([], environment_info)?
                    .collect::<Result<_, _>>()?,
            )
        })
        .await
    }

    /// Changes an environment's limits (each `Some` field: set, `Some(None)`: back to the host's
    /// default). `None` if there is no such environment.
    pub async fn update_environment(
        &self,
        project: &str,
        environment: &str,
        change: EnvironmentChange,
    ) -> Result<Option<EnvironmentInfo>, StoreError> {
        let (project, environment) = (project.to_owned(), environment.to_owned());
        self.write(move |c| {
            let found = c
                .prepare(&format!(
                    "{ENVIRONMENT_SELECT} WHERE p.slug = ?1 AND e.slug = ?2"
                ))?
                .query_row(params![project, environment], environment_info)
                .optional()?;
            let Some(mut info) = found else {
                return Ok(None);
            };
            if let Some(limit) = change.concurrency_limit {
                info.concurrency_limit = limit;
            }
            let limits = &mut info.environment.limits;
            if let Some(max) = change.max_component_bytes {
                limits.max_component_bytes = max;
            }
            if let Some(max) = change.max_payload_bytes {
                limits.max_payload_bytes = max;
            }
            if let Some(hosts) = change.allowed_outbound_hosts {
                info.allowed_outbound_hosts = hosts;
            }
            let hosts = (!info.allowed_outbound_hosts.is_empty())
                .then(|| serde_json::to_string(&info.allowed_outbound_hosts).unwrap_or_default());
            c.execute(
                "UPDATE environments SET concurrency_limit = ?2, max_component_bytes = ?3, \
                   max_payload_bytes = ?4, allowed_outbound_hosts = ?5 WHERE id = ?1",
                params![
                    info.environment.id,
                    info.concurrency_limit,
                    info.environment.limits.max_component_bytes,
                    info.environment.limits.max_payload_bytes,
                    hosts
                ],
            )?;
            Ok(Some(info))
        })
        .await
    }
}

/// A change of an environment's limits; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentChange {
    pub concurrency_limit: Option<Option<u32>>,
    pub max_component_bytes: Option<Option<u64>>,
    pub max_payload_bytes: Option<Option<u64>>,
    /// The whole new allow-list (empty: no host).
    pub allowed_outbound_hosts: Option<Vec<String>>,
}

const ENVIRONMENT_SELECT: &str = "SELECT e.id, p.slug, e.slug, e.concurrency_limit, \
     e.max_component_bytes, e.max_payload_bytes, e.allowed_outbound_hosts FROM environments e \
     JOIN projects p ON p.id = e.project_id";

/// An environment's stored allow-list.
pub(super) fn outbound_hosts(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn environment_info(r: &Row<'_>) -> rusqlite::Result<EnvironmentInfo> {
    Ok(EnvironmentInfo {
        environment: Environment {
            id: r.get(0)?,
            project_slug: r.get(1)?,
            slug: r.get(2)?,
            limits: crate::model::EnvironmentLimits {
                max_component_bytes: r.get(4)?,
                max_payload_bytes: r.get(5)?,
            },
        },
        concurrency_limit: r.get(3)?,
        allowed_outbound_hosts: outbound_hosts(r.get(6)?),
    })
}
