//! Reads for the dashboard's charts and run pages, from what the store keeps anyway: runs' times
//! and statuses, attempts, waitpoints and the waiters of tokens and children.
//!
//! Read-only, and every query is scoped to one environment. These scan an environment's runs (no
//! index is kept for them), so they are bounded by a row limit and meant for a person looking at
//! a page, never for a request path of the engine.

use super::PostgresStore;
use super::rows::{corrupt, get, int, query, query_opt, run_in_env};
use crate::model::*;
use crate::store::*;

/// When a run entered its queue the first time and when it left it (its first attempt, or its
/// end without one), for runs that are not DELAYED; the window test runs outside. (`left` is a
/// keyword in PostgreSQL: the column is `left_at`.)
const FIRST_SPANS: &str = "SELECT r.queue, GREATEST(r.created_at, coalesce(r.delay_until, r.created_at)) AS entered, \
       coalesce(a.started_at, r.finished_at, \
         CASE WHEN r.status IN ('QUEUED', 'PENDING_VERSION') THEN NULL ELSE r.updated_at END) AS left_at \
     FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.number = 1 \
     WHERE r.environment_id = $1 AND r.status <> 'DELAYED'";

/// A retry's wait: from an attempt's end to the next attempt's start (still waiting while the
/// run is queued). The attempt that ended the run makes an empty span, dropped outside.
const RETRY_SPANS: &str = "SELECT r.queue, a.finished_at AS entered, \
       coalesce(b.started_at, \
         CASE WHEN r.status IN ('QUEUED', 'PENDING_VERSION') THEN NULL \
         ELSE coalesce(r.finished_at, r.updated_at) END) AS left_at \
     FROM attempts a JOIN runs r ON r.id = a.run_id \
     LEFT JOIN attempts b ON b.run_id = a.run_id AND b.number = a.number + 1 \
     WHERE r.environment_id = $1 AND a.finished_at IS NOT NULL";

impl PostgresStore {
    pub async fn runs_by_status(
        &self,
        environment_id: &str,
        from: Millis,
        bucket_ms: i64,
        buckets: u32,
    ) -> Result<Vec<StatusCount>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let to = from.saturating_add(bucket_ms.saturating_mul(i64::from(buckets)));
        let c = self.reader().await?;
        // `created_at >= from`, so the division is of a non-negative number: PostgreSQL's
        // truncation and SQLite's agree.
        query(
            &c,
            "SELECT (created_at - $2) / $3, status, count(*) FROM runs \
             WHERE environment_id = $1 AND created_at >= $2 AND created_at < $4 \
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[&environment_id, &from, &bucket_ms, &to],
        )
        .await?
        .iter()
        .map(|r| {
            let status: String = get(r, 1)?;
            Ok(StatusCount {
                bucket: u32::try_from(get::<i64>(r, 0)?).unwrap_or(0),
                status: RunStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
                count: get::<i64>(r, 2)? as u64,
            })
        })
        .collect()
    }

    pub async fn queue_spans(
        &self,
        environment_id: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<QueueSpans, StoreError> {
        let c = self.reader().await?;
        let mut spans: Vec<QueueSpan> = query(
            &c,
            &format!(
                "SELECT queue, entered, left_at FROM ({FIRST_SPANS} UNION ALL {RETRY_SPANS}) spans \
                 WHERE entered < $3 AND (left_at IS NULL OR (left_at > $2 AND left_at > entered)) \
                 ORDER BY entered DESC LIMIT $4"
            ),
            &[
                &environment_id,
                &from,
                &to,
                &(limit.saturating_add(1).min(i64::MAX as usize) as i64),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(QueueSpan {
                queue: get(r, 0)?,
                entered: get(r, 1)?,
                left: get(r, 2)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
        let truncated = spans.len() > limit;
        spans.truncate(limit);
        Ok(QueueSpans { spans, truncated })
    }

    pub async fn run_durations(
        &self,
        environment_id: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<Vec<RunDuration>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT task_id, GREATEST(finished_at - started_at, 0), compute_ms FROM runs \
             WHERE environment_id = $1 AND finished_at >= $2 AND finished_at < $3 \
               AND started_at IS NOT NULL \
             ORDER BY finished_at DESC LIMIT $4",
            &[
                &environment_id,
                &from,
                &to,
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(RunDuration {
                task_id: get(r, 0)?,
                wall_ms: get::<i64>(r, 1)? as u64,
                compute_ms: get::<i64>(r, 2)? as u64,
            })
        })
        .collect()
    }

    pub async fn run_waits(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<WaitRecord>, StoreError> {
        let c = self.reader().await?;
        if !run_in_env(&c, environment_id, run_id).await? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // Time waits are the run's own waitpoints; tokens are waited for through waiters.
        for r in query(
            &c,
            "SELECT id, created_at, completes_at, completed_at FROM waitpoints \
             WHERE run_id = $1 AND environment_id = $2 AND kind = 'DATETIME' ORDER BY created_at",
            &[&run_id, &environment_id],
        )
        .await?
        {
            out.push(WaitRecord {
                kind: WaitKind::DateTime,
                id: get(&r, 0)?,
                since: get(&r, 1)?,
                deadline: get(&r, 2)?,
                done_at: get(&r, 3)?,
                timed_out: false,
            });
        }
        for r in query(
            &c,
            "SELECT w.id, w.created_at, w.completes_at, w.completed_at, w.status \
             FROM waitpoint_waiters ww JOIN waitpoints w ON w.id = ww.waitpoint_id \
             WHERE ww.run_id = $1 AND w.environment_id = $2 ORDER BY w.created_at",
            &[&run_id, &environment_id],
        )
        .await?
        {
            out.push(WaitRecord {
                kind: WaitKind::Token,
                id: get(&r, 0)?,
                since: get(&r, 1)?,
                deadline: get(&r, 2)?,
                done_at: get(&r, 3)?,
                timed_out: get::<String>(&r, 4)? == "TIMED_OUT",
            });
        }
        // Children waited for together were triggered together: one batch, or one child.
        let rows: Vec<(String, Millis, Option<Millis>, String)> = query(
            &c,
            "SELECT ch.id, ch.created_at, ch.finished_at, coalesce(ch.batch_id, ch.id) \
             FROM run_waiters rw JOIN runs ch ON ch.id = rw.child_run_id \
             WHERE rw.parent_run_id = $1 AND ch.environment_id = $2 ORDER BY ch.created_at, ch.id",
            &[&run_id, &environment_id],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?)))
        .collect::<Result<_, StoreError>>()?;
        out.extend(crate::store::codec::child_waits(rows));
        out.sort_by_key(|w| w.since);
        Ok(out)
    }

    pub async fn run_tree(
        &self,
        environment_id: &str,
        run_id: &str,
        limit: usize,
    ) -> Result<Vec<TreeNode>, StoreError> {
        let c = self.reader().await?;
        let root: Option<String> = query_opt(
            &c,
            "SELECT coalesce(root_run_id, id) FROM runs WHERE id = $1 AND environment_id = $2",
            &[&run_id, &environment_id],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        let Some(root) = root else {
            return Ok(Vec::new());
        };
        // Depth is at most 25 (the engine's cap); the walk follows the parent index.
        query(
            &c,
            "WITH RECURSIVE tree(id, level) AS ( \
               SELECT $1::text, 0 \
               UNION ALL \
               SELECT r.id, tree.level + 1 FROM runs r JOIN tree ON r.parent_run_id = tree.id \
               WHERE tree.level < 32 \
             ) \
             SELECT r.id, r.task_id, r.status, r.parent_run_id, r.depth, r.created_at, r.finished_at \
             FROM runs r WHERE r.environment_id = $2 AND r.id IN (SELECT id FROM tree) \
             ORDER BY r.depth, r.id LIMIT $3",
            &[&root, &environment_id, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await?
        .iter()
        .map(|r| {
            let status: String = get(r, 2)?;
            Ok(TreeNode {
                id: get(r, 0)?,
                task_id: get(r, 1)?,
                status: RunStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
                parent_run_id: get(r, 3)?,
                depth: int(r, 4)?,
                created_at: get(r, 5)?,
                finished_at: get(r, 6)?,
            })
        })
        .collect()
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
