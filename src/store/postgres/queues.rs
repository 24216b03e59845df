//! Queues and the ready queue's lanes: the queries the scheduler and the queue API run.
//!
//! The ready index (`runs_ready`, migration V1) is ordered by lane then score, so claiming the head
//! of a lane is an index seek that never passes another lane's runs, however many are queued.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::store::*;

pub(super) const QUEUE_COLUMNS: &str = "id, environment_id, name, kind, concurrency_limit, override_limit, \
     overridden_at, paused, created_at, updated_at";

pub(super) fn queue_from_row(row: &Row) -> Result<Queue, StoreError> {
    let kind: String = get(row, 3)?;
    Ok(Queue {
        id: get(row, 0)?,
        environment_id: get(row, 1)?,
        name: get(row, 2)?,
        kind: QueueKind::parse(&kind).ok_or_else(|| corrupt("queue kind", &kind))?,
        concurrency_limit: opt_int(row, 4)?,
        override_limit: opt_int(row, 5)?,
        overridden_at: get(row, 6)?,
        paused: flag(row, 7)?,
        created_at: get(row, 8)?,
        updated_at: get(row, 9)?,
    })
}

/// Creates the queues a deployment's tasks run on and sets their limits from the definitions. An
/// override set over the API and the pause flag stay.
///
/// Two deployments of an environment at once (two hosts) upsert the same rows: they are written
/// in name order, so each waits for the other's row locks in the same order and neither deadlocks.
/// When two tasks name the same queue, the later task's limit wins, as it does written in task
/// order.
pub(super) async fn sync_queues(
    c: &impl GenericClient,
    environment_id: &str,
    tasks: &[TaskDefinition],
    now: Millis,
) -> Result<(), StoreError> {
    let mut limits: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for task in tasks {
        let limit = task.queue.as_ref().and_then(|q| q.concurrency_limit);
        limits.insert(task_queue_name(task), limit);
    }
    for (name, limit) in limits {
        exec(
            c,
            "INSERT INTO queues (id, environment_id, name, kind, concurrency_limit, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (environment_id, name) DO UPDATE SET \
               concurrency_limit = excluded.concurrency_limit, updated_at = excluded.updated_at",
            &[
                &new_id("queue"),
                &environment_id,
                &name,
                &QueueKind::of(&name).as_str(),
                &limit.map(i64::from),
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Makes sure a queue named at trigger time exists (without a limit of its own).
///
/// Race-free: two triggers naming a new queue at once both insert with `ON CONFLICT DO NOTHING`;
/// the second waits for the first's commit and then does nothing, so the queue is made once.
pub(super) async fn ensure_queue(
    c: &impl GenericClient,
    environment_id: &str,
    name: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let exists = query_opt(
        c,
        "SELECT 1 FROM queues WHERE environment_id = $1 AND name = $2",
        &[&environment_id, &name],
    )
    .await?
    .is_some();
    if !exists {
        exec(
            c,
            "INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (environment_id, name) DO NOTHING",
            &[
                &new_id("queue"),
                &environment_id,
                &name,
                &QueueKind::of(name).as_str(),
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Makes the queues of several runs (as [`ensure_queue`]) and locks their depth rows, in
/// (environment, queue) order, for the rest of the caller's transaction.
///
/// Every run that enters or leaves QUEUED updates its queue's `queue_depths` row (a trigger), so
/// a transaction that inserts runs of several queues holds several of those row locks; taken in
/// the order the runs come, two such transactions with the queues the other way round would
/// deadlock. Taken here in one order first, they cannot. One queue needs no such step.
pub(super) async fn lock_queues(
    c: &impl GenericClient,
    queues: BTreeMap<(String, String), Millis>,
) -> Result<(), StoreError> {
    if queues.len() < 2 {
        return Ok(());
    }
    for ((environment_id, name), now) in &queues {
        ensure_queue(c, environment_id, name, *now).await?;
    }
    let (environments, names): (Vec<String>, Vec<String>) = queues.into_keys().unzip();
    query(
        c,
        "SELECT 1 FROM queue_depths \
         WHERE (environment_id, queue) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
         ORDER BY environment_id, queue FOR UPDATE",
        &[&environments, &names],
    )
    .await?;
    Ok(())
}

pub(super) async fn find_queue(
    c: &impl GenericClient,
    environment_id: &str,
    queue: &QueueRef,
) -> Result<Option<Queue>, StoreError> {
    let (column, value) = match queue {
        QueueRef::Id(id) => ("id", id.clone()),
        QueueRef::Task(task) => ("name", format!("{TASK_QUEUE_PREFIX}{task}")),
        QueueRef::Custom(name) => ("name", name.clone()),
    };
    Ok(query_opt(
        c,
        &format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = $1 AND {column} = $2"),
        &[&environment_id, &value],
    )
    .await?
    .as_ref()
    .map(queue_from_row)
    .transpose()?
    // `custom` never finds a task's own queue.
    .filter(|q| !matches!(queue, QueueRef::Custom(_)) || q.kind == QueueKind::Custom))
}

/// The lanes with ready runs, by skipping through the ready index in one recursive query (a
/// loose index scan): each step is one seek to the first entry past the lane before, never a
/// pass over every queued run (a `SELECT DISTINCT` reads each of a million entries at a start
/// with a million queued). Lanes come in index order: environment, queue, then concurrency key
/// with no key last (PostgreSQL's index order; SQLite's puts it first).
///
/// A step tries, in order, the same queue's next key, the same queue's runs without a key (after
/// a lane with one), the environment's next queue, then the next environment; `LIMIT 1` over
/// the `UNION ALL` stops at the first that finds one.
pub(super) const READY_LANES: &str = "\
WITH RECURSIVE lanes (environment_id, queue, concurrency_key) AS ( \
  (SELECT environment_id, queue, concurrency_key FROM runs \
   WHERE status = 'QUEUED' AND backoff = 0 \
   ORDER BY environment_id, queue, concurrency_key LIMIT 1) \
  UNION ALL \
  SELECT n.environment_id, n.queue, n.concurrency_key FROM lanes l CROSS JOIN LATERAL ( \
    (SELECT environment_id, queue, concurrency_key FROM runs \
     WHERE status = 'QUEUED' AND backoff = 0 AND environment_id = l.environment_id \
       AND queue = l.queue AND concurrency_key > l.concurrency_key \
     ORDER BY environment_id, queue, concurrency_key LIMIT 1) \
    UNION ALL \
    (SELECT environment_id, queue, concurrency_key FROM runs \
     WHERE status = 'QUEUED' AND backoff = 0 AND environment_id = l.environment_id \
       AND queue = l.queue AND concurrency_key IS NULL AND l.concurrency_key IS NOT NULL \
     LIMIT 1) \
    UNION ALL \
    (SELECT environment_id, queue, concurrency_key FROM runs \
     WHERE status = 'QUEUED' AND backoff = 0 AND environment_id = l.environment_id \
       AND queue > l.queue \
     ORDER BY environment_id, queue, concurrency_key LIMIT 1) \
    UNION ALL \
    (SELECT environment_id, queue, concurrency_key FROM runs \
     WHERE status = 'QUEUED' AND backoff = 0 AND environment_id > l.environment_id \
     ORDER BY environment_id, queue, concurrency_key LIMIT 1) \
    LIMIT 1 \
  ) n \
) \
SELECT environment_id, queue, concurrency_key FROM lanes";

pub(super) async fn ready_lanes_in(c: &impl GenericClient) -> Result<Vec<Lane>, StoreError> {
    query(c, READY_LANES, &[])
        .await?
        .iter()
        .map(lane_from_row)
        .collect()
}

impl PostgresStore {
    /// Runs holding a slot (DEQUEUED or EXECUTING) on any host, in an environment or one of its
    /// queues.
    pub async fn holding(
        &self,
        environment_id: &str,
        queue: Option<&str>,
    ) -> Result<u32, StoreError> {
        let store = self.clone();
        let (environment_id, queue) = (environment_id.to_owned(), queue.map(str::to_owned));
        self.on_runtime(async move {
            let c = store.reader().await?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM runs WHERE environment_id = $1 \
                       AND ($2::text IS NULL OR queue = $2) \
                       AND status IN ('DEQUEUED', 'EXECUTING')",
                    &[&environment_id, &queue],
                )
                .await?;
            Ok(u32::try_from(row.get::<_, i64>(0).max(0)).unwrap_or(u32::MAX))
        })
        .await
    }

    pub async fn ready_lanes(&self) -> Result<Vec<Lane>, StoreError> {
        ready_lanes_in(&self.reader().await?).await
    }

    pub async fn all_queues(&self) -> Result<Vec<Queue>, StoreError> {
        query(
            &self.reader().await?,
            &format!("SELECT {QUEUE_COLUMNS} FROM queues"),
            &[],
        )
        .await?
        .iter()
        .map(queue_from_row)
        .collect()
    }

    pub async fn environment_queues(&self, environment_id: &str) -> Result<Vec<Queue>, StoreError> {
        query(
            &self.reader().await?,
            &format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = $1 ORDER BY name"),
            &[&environment_id],
        )
        .await?
        .iter()
        .map(queue_from_row)
        .collect()
    }

    pub async fn list_queues(
        &self,
        environment_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Queue>, u64), StoreError> {
        let c = self.reader().await?;
        let total: u64 = int(
            &query_one(
                &c,
                "SELECT count(*) FROM queues WHERE environment_id = $1",
                &[&environment_id],
            )
            .await?,
            0,
        )?;
        let page = query(
            &c,
            &format!(
                "SELECT {QUEUE_COLUMNS} FROM queues WHERE environment_id = $1 \
                 ORDER BY name LIMIT $2 OFFSET $3"
            ),
            &[&environment_id, &(limit as i64), &(offset as i64)],
        )
        .await?
        .iter()
        .map(queue_from_row)
        .collect::<Result<_, _>>()?;
        Ok((page, total))
    }

    pub async fn queue(
        &self,
        environment_id: &str,
        queue: QueueRef,
    ) -> Result<Option<Queue>, StoreError> {
        find_queue(&self.reader().await?, environment_id, &queue).await
    }

    pub async fn queued_count(&self, environment_id: &str, queue: &str) -> Result<u64, StoreError> {
        // Kept by triggers on `runs` (migration V1): one row, however many are queued.
        let queued: Option<i64> = query_opt(
            &self.reader().await?,
            "SELECT queued FROM queue_depths WHERE environment_id = $1 AND queue = $2",
            &[&environment_id, &queue],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        Ok(u64::try_from(queued.unwrap_or(0)).unwrap_or(0))
    }

    pub async fn set_queue_paused(
        &self,
        environment_id: &str,
        queue: QueueRef,
        paused: bool,
        now: Millis,
    ) -> Result<Option<Queue>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(q) = find_queue(&tx, environment_id, &queue).await? else {
            return Ok(None);
        };
        // The queue as this update left it (a concurrent override of its limit included).
        let row = query_opt(
            &tx,
            &format!(
                "UPDATE queues SET paused = $2, updated_at = $3 WHERE id = $1 RETURNING {QUEUE_COLUMNS}"
            ),
            &[&q.id, &i64::from(paused), &now],
        )
        .await?;
        let updated = row.as_ref().map(queue_from_row).transpose()?;
        tx.commit().await?;
        Ok(updated)
    }

    pub async fn override_queue_limit(
        &self,
        environment_id: &str,
        queue: QueueRef,
        limit: Option<u32>,
        now: Millis,
    ) -> Result<Option<Queue>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(q) = find_queue(&tx, environment_id, &queue).await? else {
            return Ok(None);
        };
        let overridden_at = limit.map(|_| now);
        // The queue as this update left it (a concurrent pause included).
        let row = query_opt(
            &tx,
            &format!(
                "UPDATE queues SET override_limit = $2, overridden_at = $3, updated_at = $4 \
                 WHERE id = $1 RETURNING {QUEUE_COLUMNS}"
            ),
            &[&q.id, &limit.map(i64::from), &overridden_at, &now],
        )
        .await?;
        let updated = row.as_ref().map(queue_from_row).transpose()?;
        tx.commit().await?;
        Ok(updated)
    }
}

#[cfg(test)]
#[path = "queues_tests.rs"]
pub(super) mod tests;
