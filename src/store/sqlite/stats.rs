//! Reads for the dashboard's charts and run pages, from what the store keeps anyway: runs' times
//! and statuses, attempts, waitpoints and the waiters of tokens and children.
//!
//! Read-only, and every query is scoped to one environment. These scan an environment's runs (no
//! index is kept for them), so they are bounded by a row limit and meant for a person looking at
//! a page, never for a request path of the engine.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{corrupt_col, run_in_env};
use crate::model::*;
use crate::store::*;

/// When a run entered its queue the first time and when it left it (its first attempt, or its
/// end without one), for runs that are not DELAYED; the window test runs outside.
const FIRST_SPANS: &str = "SELECT r.queue, max(r.created_at, coalesce(r.delay_until, r.created_at)) AS entered, \
       coalesce(a.started_at, r.finished_at, \
         CASE WHEN r.status IN ('QUEUED', 'PENDING_VERSION') THEN NULL ELSE r.updated_at END) AS left \
     FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.number = 1 \
     WHERE r.environment_id = ?1 AND r.status <> 'DELAYED'";

/// A retry's wait: from an attempt's end to the next attempt's start (still waiting while the
/// run is queued). The attempt that ended the run makes an empty span, dropped outside.
const RETRY_SPANS: &str = "SELECT r.queue, a.finished_at AS entered, \
       coalesce(b.started_at, \
         CASE WHEN r.status IN ('QUEUED', 'PENDING_VERSION') THEN NULL \
         ELSE coalesce(r.finished_at, r.updated_at) END) AS left \
     FROM attempts a JOIN runs r ON r.id = a.run_id \
     LEFT JOIN attempts b ON b.run_id = a.run_id AND b.number = a.number + 1 \
     WHERE r.environment_id = ?1 AND a.finished_at IS NOT NULL";

impl SqliteStore {
    pub async fn runs_by_status(
        &self,
        environment_id: &str,
        from: Millis,
        bucket_ms: i64,
        buckets: u32,
    ) -> Result<Vec<StatusCount>, StoreError> {
        let environment_id = environment_id.to_owned();
        let bucket_ms = bucket_ms.max(1);
        self.read(move |c| {
            let to = from.saturating_add(bucket_ms.saturating_mul(i64::from(buckets)));
            let mut stmt = c.prepare_cached(
                "SELECT (created_at - ?2) / ?3, status, count(*) FROM runs \
                 WHERE environment_id = ?1 AND created_at >= ?2 AND created_at < ?4 \
                 GROUP BY 1, 2 ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map(params![environment_id, from, bucket_ms, to], |r| {
                let status: String = r.get(1)?;
                Ok(StatusCount {
                    bucket: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    status: RunStatus::parse(&status)
                        .ok_or_else(|| corrupt_col(1, "status", &status))?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn queue_spans(
        &self,
        environment_id: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<QueueSpans, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT queue, entered, left FROM ({FIRST_SPANS} UNION ALL {RETRY_SPANS}) \
                 WHERE entered < ?3 AND (left IS NULL OR (left > ?2 AND left > entered)) \
                 ORDER BY entered DESC LIMIT ?4"
            ))?;
            let mut spans: Vec<QueueSpan> = stmt
                .query_map(
                    params![environment_id, from, to, limit.saturating_add(1) as i64],
                    |r| {
                        Ok(QueueSpan {
                            queue: r.get(0)?,
                            entered: r.get(1)?,
                            left: r.get(2)?,
                        })
                    },
                )?
                .collect::<Result<_, _>>()?;
            let truncated = spans.len() > limit;
            spans.truncate(limit);
            Ok(QueueSpans { spans, truncated })
        })
        .await
    }

    pub async fn run_durations(
        &self,
        environment_id: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<Vec<RunDuration>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT task_id, max(finished_at - started_at, 0), compute_ms FROM runs \
                 WHERE environment_id = ?1 AND finished_at >= ?2 AND finished_at < ?3 \
                   AND started_at IS NOT NULL \
                 ORDER BY finished_at DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![environment_id, from, to, limit as i64], |r| {
                Ok(RunDuration {
                    task_id: r.get(0)?,
                    wall_ms: r.get::<_, i64>(1)? as u64,
                    compute_ms: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn run_waits(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<WaitRecord>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            if !run_in_env(c, &environment_id, &run_id)? {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            // Time waits are the run's own waitpoints; tokens are waited for through waiters.
            let mut times = c.prepare_cached(
                "SELECT id, created_at, completes_at, completed_at FROM waitpoints \
                 WHERE run_id = ?1 AND environment_id = ?2 AND kind = 'DATETIME' ORDER BY created_at",
            )?;
            for row in times.query_map(params![run_id, environment_id], |r| {
                Ok(WaitRecord {
                    kind: WaitKind::DateTime,
                    id: r.get(0)?,
                    since: r.get(1)?,
                    deadline: r.get(2)?,
                    done_at: r.get(3)?,
                    timed_out: false,
                })
            })? {
                out.push(row?);
            }
            let mut tokens = c.prepare_cached(
                "SELECT w.id, w.created_at, w.completes_at, w.completed_at, w.status \
                 FROM waitpoint_waiters ww JOIN waitpoints w ON w.id = ww.waitpoint_id \
                 WHERE ww.run_id = ?1 AND w.environment_id = ?2 ORDER BY w.created_at",
            )?;
            for row in tokens.query_map(params![run_id, environment_id], |r| {
                Ok(WaitRecord {
                    kind: WaitKind::Token,
                    id: r.get(0)?,
                    since: r.get(1)?,
                    deadline: r.get(2)?,
                    done_at: r.get(3)?,
                    timed_out: r.get::<_, String>(4)? == "TIMED_OUT",
                })
            })? {
                out.push(row?);
            }
            // Children waited for together were triggered together: one batch, or one child.
            let mut children = c.prepare_cached(
                "SELECT ch.id, ch.created_at, ch.finished_at, coalesce(ch.batch_id, ch.id) \
                 FROM run_waiters rw JOIN runs ch ON ch.id = rw.child_run_id \
                 WHERE rw.parent_run_id = ?1 AND ch.environment_id = ?2 ORDER BY ch.created_at, ch.id",
            )?;
            let rows: Vec<(String, Millis, Option<Millis>, String)> = children
                .query_map(params![run_id, environment_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            out.extend(crate::store::codec::child_waits(rows));
            out.sort_by_key(|w| w.since);
            Ok(out)
        })
        .await
    }

    pub async fn run_tree(
        &self,
        environment_id: &str,
        run_id: &str,
        limit: usize,
    ) -> Result<Vec<TreeNode>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            let root: Option<String> = c
                .prepare_cached(
                    "SELECT coalesce(root_run_id, id) FROM runs WHERE id = ?1 AND environment_id = ?2",
                )?
                .query_row(params![run_id, environment_id], |r| r.get(0))
                .optional()?;
            let Some(root) = root else {
                return Ok(Vec::new());
            };
            // Depth is at most 25 (the engine's cap); the walk follows the parent index.
            let mut stmt = c.prepare_cached(
                "WITH RECURSIVE tree(id, level) AS ( \
                   SELECT ?1, 0 \
                   UNION ALL \
                   SELECT r.id, tree.level + 1 FROM runs r JOIN tree ON r.parent_run_id = tree.id \
                   WHERE tree.level < 32 \
                 ) \
                 SELECT r.id, r.task_id, r.status, r.parent_run_id, r.depth, r.created_at, r.finished_at \
                 FROM runs r WHERE r.environment_id = ?2 AND r.id IN (SELECT id FROM tree) \
                 ORDER BY r.depth, r.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![root, environment_id, limit as i64], |r| {
                let status: String = r.get(2)?;
                Ok(TreeNode {
                    id: r.get(0)?,
                    task_id: r.get(1)?,
                    status: RunStatus::parse(&status)
                        .ok_or_else(|| corrupt_col(2, "status", &status))?,
                    parent_run_id: r.get(3)?,
                    depth: r.get(4)?,
                    created_at: r.get(5)?,
                    finished_at: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
