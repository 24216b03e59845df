//! The timer passes over runs: delayed runs whose time came, retry backoffs that ended, TTLs that
//! passed, and the earliest deadline of all of them. Each is one set-based statement.

use rusqlite::params;

use std::sync::LazyLock;

use super::SqliteStore;
use super::guards::status_guard;
use super::rows::*;
use crate::model::*;
use crate::store::*;

/// DELAYED runs whose time came go to QUEUED (the state machine's `Enqueue`).
pub(super) static ENQUEUE_DELAYED: LazyLock<String> = LazyLock::new(|| {
    let guard = status_guard(Step::Enqueue, RunStatus::Queued, &[RunStatus::Delayed]);
    format!(
        "UPDATE runs SET status = '{queued}', updated_at = ?1 \
         WHERE {guard} AND id IN (SELECT id FROM runs WHERE {guard} AND available_at <= ?1 \
                                  ORDER BY available_at LIMIT ?2) \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str()
    )
});

/// Runs that never started and whose TTL passed expire (`Expire`; the table's condition says
/// "never started").
pub(super) static EXPIRE_DUE: LazyLock<String> = LazyLock::new(|| {
    let guard = status_guard(Step::Expire, RunStatus::Expired, &[]);
    format!(
        "UPDATE runs SET status = '{expired}', updated_at = ?1, expired_at = ?1, finished_at = ?1, \
           error = ?2 \
         WHERE {guard} AND id IN (SELECT id FROM runs WHERE {guard} \
                                  AND expires_at IS NOT NULL AND expires_at <= ?1 \
                                  ORDER BY expires_at LIMIT ?3) \
         RETURNING id",
        expired = RunStatus::Expired.as_str()
    )
});

impl SqliteStore {
    pub async fn enqueue_delayed(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached(&ENQUEUE_DELAYED)?
                .query_map(params![now, limit as i64], lane_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

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

    pub async fn expire_due(
        &self,
        now: Millis,
        error: RunError,
        limit: usize,
    ) -> Result<(usize, Vec<Lane>), StoreError> {
        self.write(move |c| {
            let expired: Vec<String> = c
                .prepare_cached(&EXPIRE_DUE)?
                .query_map(params![now, encode_error(&error), limit as i64], |r| {
                    r.get(0)
                })?
                .collect::<Result<_, _>>()?;
            let mut resumed = Vec::new();
            for id in &expired {
                resumed.extend(super::lifecycle::child_ended(c, id, now)?);
            }
            Ok((expired.len(), resumed))
        })
        .await
    }

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
}
