//! Queues and the ready queue's lanes: the queries the scheduler and the queue API run.
//!
//! The ready index (`runs_ready`, migration V5) is ordered by lane then score, so claiming the head
//! of a lane is an index seek that never passes another lane's runs, however many are queued.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::*;
use super::rows::{exec, query_one};
use crate::model::*;
use crate::store::*;

pub(super) const QUEUE_COLUMNS: &str = "id, environment_id, name, kind, concurrency_limit, override_limit, \
     overridden_at, paused, created_at, updated_at";

pub(super) fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    let kind: String = row.get(3)?;
    Ok(Queue {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        name: row.get(2)?,
        kind: QueueKind::parse(&kind)
            .ok_or_else(|| super::rows::corrupt_col(3, "queue kind", &kind))?,
        concurrency_limit: row.get(4)?,
        override_limit: row.get(5)?,
        overridden_at: row.get(6)?,
        paused: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
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

pub(super) fn find_queue(
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

/// The lanes with ready runs, by skipping through the ready index: one seek per lane to the
/// first entry past it, never a pass over every queued run (a `SELECT DISTINCT` read each of a
/// million entries at a start with a million queued). Lanes come in index order: environment,
/// queue, then concurrency key with no key first.
pub(super) fn ready_lanes_in(c: &Connection) -> Result<Vec<Lane>, StoreError> {
    const READY: &str = "SELECT environment_id, queue, concurrency_key FROM runs \
                         WHERE status = 'QUEUED' AND backoff = 0";
    const ORDER: &str = "ORDER BY environment_id, queue, concurrency_key LIMIT 1";
    let first = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Option<Lane>, StoreError> {
        Ok(c.prepare_cached(&format!("{READY} {sql} {ORDER}"))?
            .query_row(p, lane_from_row)
            .optional()?)
    };
    let mut lanes = Vec::new();
    let mut next = first("", &[])?;
    while let Some(lane) = next {
        let (e, q) = (&lane.environment_id, &lane.queue);
        // The same queue's next key, else the environment's next queue, else the next environment.
        next = match &lane.concurrency_key {
            None => first(
                "AND environment_id = ?1 AND queue = ?2 AND concurrency_key IS NOT NULL",
                &[e, q],
            )?,
            Some(k) => first(
                "AND environment_id = ?1 AND queue = ?2 AND concurrency_key > ?3",
                &[e, q, k],
            )?,
        };
        if next.is_none() {
            next = first("AND environment_id = ?1 AND queue > ?2", &[e, q])?;
        }
        if next.is_none() {
            next = first("AND environment_id > ?1", &[e])?;
        }
        lanes.push(lane);
    }
    Ok(lanes)
}

impl SqliteStore {
    pub async fn ready_lanes(&self) -> Result<Vec<Lane>, StoreError> {
        self.read(ready_lanes_in).await
    }

    pub async fn all_queues(&self) -> Result<Vec<Queue>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(&format!("SELECT {QUEUE_COLUMNS} FROM queues"))?
                .query_map([], queue_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

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

    pub async fn list_queues(
        &self,
        environment_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Queue>, u64), StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let total: i64 = query_one(
                c,
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

    pub async fn queue(
        &self,
        environment_id: &str,
        queue: QueueRef,
    ) -> Result<Option<Queue>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| find_queue(c, &environment_id, &queue))
            .await
    }

    pub async fn queued_count(&self, environment_id: &str, queue: &str) -> Result<u64, StoreError> {
        let (environment_id, queue) = (environment_id.to_owned(), queue.to_owned());
        self.read(move |c| {
            // Kept by triggers on `runs` (migration V18): one row, however many are queued.
            let queued: Option<i64> = c
                .prepare_cached(
                    "SELECT queued FROM queue_depths WHERE environment_id = ?1 AND queue = ?2",
                )?
                .query_row(params![environment_id, queue], |r| r.get(0))
                .optional()?;
            Ok(u64::try_from(queued.unwrap_or(0)).unwrap_or(0))
        })
        .await
    }

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
            exec(
                c,
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
            exec(
                c,
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
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::super::fixtures::{insert_run, tenant};
    use super::super::migrations::MIGRATIONS;

    /// The skip through the ready index finds exactly the lanes a `SELECT DISTINCT` finds, with
    /// and without concurrency keys, across queues and environments, and every step is a seek on
    /// the ready index.
    #[test]
    fn ready_lanes_skip_through_the_index_to_the_same_lanes() {
        let c = Connection::open_in_memory().expect("a database");
        for sql in MIGRATIONS {
            c.execute_batch(sql).expect("a migration");
        }
        tenant(&c);
        c.execute_batch(
            "INSERT INTO environments (id, project_id, slug, created_at) VALUES ('f', 'p', 'prod', 0);",
        )
        .expect("another environment");
        let runs = [
            ("a", None, "QUEUED"),
            ("a", None, "QUEUED"),
            ("a", Some("k1"), "QUEUED"),
            ("a", Some("k2"), "QUEUED"),
            ("a", Some("k2"), "QUEUED"),
            ("b", Some("k1"), "QUEUED"),
            ("b", Some("k3"), "EXECUTING"),
            ("c", None, "COMPLETED"),
        ];
        for (n, (queue, key, status)) in runs.into_iter().enumerate() {
            let id = format!("r{n}");
            insert_run(&c, &id, queue, status);
            c.execute(
                "UPDATE runs SET concurrency_key = ?2 WHERE id = ?1",
                params![id, key],
            )
            .expect("its key");
        }
        insert_run(&c, "other", "a", "QUEUED");
        insert_run(&c, "backing-off", "d", "QUEUED");
        c.execute_batch(
            "UPDATE runs SET environment_id = 'f' WHERE id = 'other';
             UPDATE runs SET backoff = 1 WHERE id = 'backing-off';",
        )
        .expect("an environment and a backoff");
        let distinct: Vec<(String, String, Option<String>)> = c
            .prepare(
                "SELECT DISTINCT environment_id, queue, concurrency_key FROM runs \
                 WHERE status = 'QUEUED' AND backoff = 0 ORDER BY 1, 2, 3",
            )
            .expect("the lanes")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("its rows")
            .collect::<Result<_, _>>()
            .expect("its rows");
        let skipped: Vec<(String, String, Option<String>)> = super::ready_lanes_in(&c)
            .expect("the skip")
            .into_iter()
            .map(|l| (l.environment_id, l.queue, l.concurrency_key))
            .collect();
        assert_eq!(distinct.len(), 5, "{distinct:?}");
        assert_eq!(skipped, distinct);
        for sql in [
            "AND environment_id = ?1 AND queue = ?2 AND concurrency_key IS NOT NULL",
            "AND environment_id = ?1 AND queue = ?2 AND concurrency_key > ?3",
            "AND environment_id = ?1 AND queue > ?2",
            "AND environment_id > ?1",
        ] {
            let plan: String = c
                .query_row(
                    &format!(
                        "EXPLAIN QUERY PLAN SELECT environment_id, queue, concurrency_key FROM runs \
                         WHERE status = 'QUEUED' AND backoff = 0 {sql} \
                         ORDER BY environment_id, queue, concurrency_key LIMIT 1"
                    ),
                    params!["e", "a", "k"][..sql.matches('?').count()].as_ref(),
                    |r| r.get(3),
                )
                .expect("a plan");
            assert!(
                plan.contains("SEARCH runs USING COVERING INDEX runs_ready"),
                "{sql}: {plan}"
            );
        }
    }
}
