//! The timer passes over runs: delayed runs whose time came, retry backoffs that ended, TTLs that
//! passed, and the earliest deadline of all of them. Each is one set-based statement over at most
//! `limit` runs.
//!
//! Two hosts may run a pass at once: each statement picks its runs with `FOR NO KEY UPDATE SKIP
//! LOCKED`, so a run another pass (or any transaction) holds is left to it, and each run moves
//! once; a run another pass moved meanwhile no longer matches when its lock is granted. The
//! pick is a materialized CTE, run once: as an `IN (…)` subquery PostgreSQL may run it again
//! for the same statement, and a second run passes over the rows the first locked and returns
//! more, so the statement would move more than `limit` runs.

use std::sync::LazyLock;

use super::PostgresStore;
use super::lifecycle::{child_ended, lock_ends};
use super::rows::*;
use crate::model::*;
use crate::store::codec::status_guard;
use crate::store::*;

/// DELAYED runs whose time came go to QUEUED (the state machine's `Enqueue`).
pub(super) static ENQUEUE_DELAYED: LazyLock<String> = LazyLock::new(|| {
    let guard = status_guard(Step::Enqueue, RunStatus::Queued, &[RunStatus::Delayed]);
    format!(
        "WITH due AS MATERIALIZED (SELECT id FROM runs WHERE {guard} AND available_at <= $1 \
                                   ORDER BY available_at LIMIT $2 \
                                   FOR NO KEY UPDATE SKIP LOCKED) \
         UPDATE runs SET status = '{queued}', updated_at = $1 FROM due \
         WHERE {guard} AND runs.id = due.id \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str()
    )
});

/// Runs that never started and whose TTL passed expire (`Expire`; the table's condition says
/// "never started").
pub(super) static EXPIRE_DUE: LazyLock<String> = LazyLock::new(|| {
    let guard = status_guard(Step::Expire, RunStatus::Expired, &[]);
    format!(
        "WITH due AS MATERIALIZED (SELECT id FROM runs WHERE {guard} \
                                   AND expires_at IS NOT NULL AND expires_at <= $1 \
                                   ORDER BY expires_at LIMIT $3 \
                                   FOR NO KEY UPDATE SKIP LOCKED) \
         UPDATE runs SET status = '{expired}', updated_at = $1, expired_at = $1, finished_at = $1, \
           error = $2 FROM due \
         WHERE {guard} AND runs.id = due.id \
         RETURNING runs.id",
        expired = RunStatus::Expired.as_str()
    )
});

impl PostgresStore {
    pub async fn enqueue_delayed(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Lane>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let lanes = query(&tx, &ENQUEUE_DELAYED, &[&now, &(limit as i64)])
            .await?
            .iter()
            .map(lane_from_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(lanes)
    }

    pub async fn end_backoffs(&self, now: Millis, limit: usize) -> Result<Vec<Lane>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let lanes = query(
            &tx,
            "WITH due AS MATERIALIZED (SELECT id FROM runs WHERE status = 'QUEUED' \
                                       AND backoff = 1 AND available_at <= $1 \
                                       ORDER BY available_at LIMIT $2 \
                                       FOR NO KEY UPDATE SKIP LOCKED) \
             UPDATE runs SET backoff = 0 FROM due WHERE runs.id = due.id \
             RETURNING environment_id, queue, concurrency_key",
            &[&now, &(limit as i64)],
        )
        .await?
        .iter()
        .map(lane_from_row)
        .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(lanes)
    }

    pub async fn expire_due(
        &self,
        now: Millis,
        error: RunError,
        limit: usize,
    ) -> Result<(usize, Vec<Lane>), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let expired: Vec<String> = query(
            &tx,
            &EXPIRE_DUE,
            &[&now, &encode_error(&error), &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
        // The ends' locks in their one order before each end takes its own (see `lock_ends`).
        lock_ends(&tx, &expired).await?;
        let mut resumed = Vec::new();
        for id in &expired {
            resumed.extend(child_ended(&tx, id, now).await?);
        }
        tx.commit().await?;
        Ok((expired.len(), resumed))
    }

    pub async fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        let c = self.reader().await?;
        let row = query_one(
            &c,
            "SELECT min(t) FROM ( \
               SELECT min(available_at) AS t FROM runs WHERE status = 'DELAYED' \
               UNION ALL SELECT min(available_at) FROM runs WHERE status = 'QUEUED' AND backoff = 1 \
               UNION ALL SELECT min(completes_at) FROM waitpoints \
                 WHERE status = 'PENDING' AND completes_at IS NOT NULL \
               UNION ALL SELECT min(expires_at) FROM runs \
                 WHERE status IN ('QUEUED', 'PENDING_VERSION') AND expires_at IS NOT NULL \
                   AND attempt_count = 0) AS deadlines",
            &[],
        )
        .await?;
        get(&row, 0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::run_fixtures::*;
    use super::super::testing::TestDatabase;
    use super::*;

    fn expired_error() -> RunError {
        RunError {
            code: Some("TTL".into()),
            name: "Error".into(),
            message: "expired".into(),
            stack: None,
        }
    }

    #[tokio::test]
    async fn due_runs_move_on_at_most_limit_at_a_time() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        assert_eq!(store.next_timer().await.expect("none"), None);
        for (id, at) in [("d1", 10), ("d2", 20), ("d3", 30), ("d4", 99)] {
            insert_run(&c, id, "a", "DELAYED").await;
            c.execute(
                "UPDATE runs SET available_at = $2 WHERE id = $1",
                &[&id, &(at as i64)],
            )
            .await
            .expect("a delay");
        }
        for (id, at) in [("b1", 15), ("b2", 95)] {
            insert_run(&c, id, "b", "QUEUED").await;
            c.execute(
                "UPDATE runs SET backoff = 1, available_at = $2 WHERE id = $1",
                &[&id, &(at as i64)],
            )
            .await
            .expect("a backoff");
        }
        assert_eq!(store.next_timer().await.expect("the next"), Some(10));

        let lanes = store.enqueue_delayed(50, 2).await.expect("enqueued");
        assert_eq!(lanes.len(), 2);
        assert_eq!(status_of(&c, "d1").await, "QUEUED");
        assert_eq!(status_of(&c, "d2").await, "QUEUED");
        assert_eq!(status_of(&c, "d3").await, "DELAYED", "beyond the limit");
        assert_eq!(
            store.enqueue_delayed(50, 10).await.expect("enqueued").len(),
            1
        );
        assert_eq!(status_of(&c, "d4").await, "DELAYED", "not due");

        let lanes = store.end_backoffs(50, 10).await.expect("ended");
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].queue, "b");
        let backoff: i64 = c
            .query_one("SELECT backoff FROM runs WHERE id = 'b1'", &[])
            .await
            .expect("the run")
            .get(0);
        assert_eq!(backoff, 0);
        assert_eq!(store.next_timer().await.expect("the next"), Some(95));
    }

    #[tokio::test]
    async fn a_run_that_never_started_expires_and_its_waiting_parent_resumes() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        insert_run(&c, "parent", "a", "WAITING").await;
        for (id, started) in [("fresh", 0), ("retrying", 1)] {
            insert_run(&c, id, "b", "QUEUED").await;
            c.execute(
                "UPDATE runs SET expires_at = 5, attempt_count = $2 WHERE id = $1",
                &[&id, &(started as i64)],
            )
            .await
            .expect("a ttl");
        }
        c.batch_execute(
            "INSERT INTO run_waiters (child_run_id, parent_run_id) VALUES ('fresh', 'parent')",
        )
        .await
        .expect("a waiter");
        assert_eq!(store.next_timer().await.expect("the next"), Some(5));
        let (expired, resumed) = store
            .expire_due(10, expired_error(), 10)
            .await
            .expect("expired");
        assert_eq!(expired, 1, "a run already under way does not expire");
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].queue, "a");
        let row = c
            .query_one(
                "SELECT status, expired_at, finished_at, error FROM runs WHERE id = 'fresh'",
                &[],
            )
            .await
            .expect("the run");
        assert_eq!(row.get::<_, String>(0), "EXPIRED");
        assert_eq!(row.get::<_, Option<i64>>(1), Some(10));
        assert_eq!(row.get::<_, Option<i64>>(2), Some(10));
        assert!(row.get::<_, String>(3).contains("expired"));
        assert_eq!(status_of(&c, "parent").await, "QUEUED");
        assert_eq!(status_of(&c, "retrying").await, "QUEUED");
    }

    /// Two passes over the same due runs at once (two hosts), each holding its transaction open
    /// a while: each run moves once, by one of them.
    #[tokio::test]
    async fn two_passes_at_once_move_each_run_once() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        for i in 0..10 {
            insert_run(&c, &format!("d{i}"), "a", "DELAYED").await;
            insert_run(&c, &format!("x{i}"), "b", "QUEUED").await;
        }
        c.batch_execute("UPDATE runs SET expires_at = 1 WHERE id LIKE 'x%'")
            .await
            .expect("ttls");
        slow_commits(&c, "runs", "true", 0.3).await;
        let (one, two) = tokio::join!(store.enqueue_delayed(50, 6), store.enqueue_delayed(50, 6));
        let (one, two) = (one.expect("enqueued"), two.expect("enqueued"));
        assert_eq!(one.len() + two.len(), 10, "{} + {}", one.len(), two.len());
        assert!(one.len() <= 6 && two.len() <= 6);
        let queued: i64 = c
            .query_one(
                "SELECT count(*) FROM runs WHERE id LIKE 'd%' AND status = 'QUEUED'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(queued, 10);
        let depth: i64 = c
            .query_one("SELECT queued FROM queue_depths WHERE queue = 'a'", &[])
            .await
            .expect("depth")
            .get(0);
        assert_eq!(depth, 10, "each run counted into its queue once");

        let (one, two) = tokio::join!(
            store.expire_due(50, expired_error(), 6),
            store.expire_due(50, expired_error(), 6)
        );
        let (one, two) = (one.expect("expired").0, two.expect("expired").0);
        assert_eq!(one + two, 10);
        let ids: HashSet<String> = c
            .query("SELECT id FROM runs WHERE status = 'EXPIRED'", &[])
            .await
            .expect("expired")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids.len(), 10);
    }
}
