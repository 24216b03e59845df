//! Child runs: the parents checkpointed until their children end, and the results they resume
//! with.
//!
//! A child reaching a final status resumes, in the same transaction, every WAITING parent whose
//! awaited children have all ended; so no path that ends a run can strand its parent.

use rusqlite::{Connection, OptionalExtension, params};

use super::queries::{lane_from_row, load_run, record_attempt};
use super::{FinishAttempt, Store, StoreError};
use crate::model::{Lane, Millis, Run, WaitingFor};

/// Statuses in which a run has ended, as SQL.
const FINAL: &str =
    "('COMPLETED', 'CANCELED', 'FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'EXPIRED', 'TIMED_OUT')";

/// Queues `parent` if it is WAITING and none of the children it waits for is still going.
fn resume_if_done(c: &Connection, parent: &str, now: Millis) -> Result<Option<Lane>, StoreError> {
    let pending = c
        .prepare_cached(&format!(
            "SELECT 1 FROM run_waiters w JOIN runs r ON r.id = w.child_run_id \
             WHERE w.parent_run_id = ?1 AND r.status NOT IN {FINAL} LIMIT 1"
        ))?
        .exists([parent])?;
    if pending {
        return Ok(None);
    }
    resume(c, parent, now)
}

/// Puts a WAITING run back in its queue (keeping its score); its lane, or `None` if it was not
/// waiting (canceled meanwhile, say).
pub(super) fn resume(c: &Connection, run: &str, now: Millis) -> Result<Option<Lane>, StoreError> {
    Ok(c.prepare_cached(
        "UPDATE runs SET status = 'QUEUED', available_at = ?2, backoff = 0, updated_at = ?2 \
         WHERE id = ?1 AND status = 'WAITING' \
         RETURNING environment_id, queue, concurrency_key",
    )?
    .query_row(params![run, now], lane_from_row)
    .optional()?)
}

/// A run ended: forget its copy of the environment variables, and resume the parents that
/// waited for it and now have all their results.
pub(super) fn child_ended(
    c: &Connection,
    child: &str,
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    super::env_vars::forget_run_env(c, child)?;
    let parents: Vec<String> = c
        .prepare_cached("SELECT parent_run_id FROM run_waiters WHERE child_run_id = ?1")?
        .query_map([child], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut lanes = Vec::new();
    for parent in parents {
        lanes.extend(resume_if_done(c, &parent, now)?);
    }
    Ok(lanes)
}

impl Store {
    /// Checkpoints an executing attempt that waits for child runs `children` to end (as
    /// [`Store::checkpoint`] does for a time). If they had all ended by the time this commits,
    /// the run goes straight back to its queue: returns its lane.
    pub async fn checkpoint_on_runs(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        children: Vec<String>,
    ) -> Result<Option<Lane>, StoreError> {
        self.write(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(None);
            }
            super::tokens::append_journal(c, &run_id, attempt, journal, now)?;
            let mut wait = c.prepare_cached(
                "INSERT OR IGNORE INTO run_waiters (child_run_id, parent_run_id) VALUES (?1, ?2)",
            )?;
            for child in &children {
                wait.execute(params![child, run_id])?;
            }
            resume_if_done(c, &run_id, now)
        })
        .await
    }

    /// The child runs of an environment by id, as they are now (`None` for an unknown id).
    pub async fn runs_by_id(
        &self,
        environment_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Run>>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(load_run(c, &id)?.filter(|r| r.environment_id == environment_id));
            }
            Ok(out)
        })
        .await
    }

    /// What a run waits for now: pending waitpoints and children that have not ended.
    pub async fn waiting_for(&self, run_id: &str) -> Result<Vec<WaitingFor>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut out: Vec<WaitingFor> = c
                .prepare_cached(
                    "SELECT id, kind, completes_at FROM waitpoints \
                     WHERE status = 'PENDING' AND (run_id = ?1 OR id IN \
                       (SELECT waitpoint_id FROM waitpoint_waiters WHERE run_id = ?1)) \
                     ORDER BY id",
                )?
                .query_map([&run_id], |r| {
                    let (id, kind, at): (String, String, Option<Millis>) =
                        (r.get(0)?, r.get(1)?, r.get(2)?);
                    Ok(match (kind.as_str(), at) {
                        ("DATETIME", Some(completes_at)) => {
                            WaitingFor::DateTime { id, completes_at }
                        }
                        _ => WaitingFor::Token { id, timeout_at: at },
                    })
                })?
                .collect::<Result<_, _>>()?;
            let children = c
                .prepare_cached(&format!(
                    "SELECT w.child_run_id FROM run_waiters w JOIN runs r ON r.id = w.child_run_id \
                     WHERE w.parent_run_id = ?1 AND r.status NOT IN {FINAL} ORDER BY w.child_run_id"
                ))?
                .query_map([&run_id], |r| Ok(WaitingFor::Run { id: r.get(0)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(children);
            Ok(out)
        })
        .await
    }

    /// Bytes and segments of every stored journal (for the benchmark).
    pub async fn journal_size(&self) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT coalesce(sum(length(entries)), 0), count(*) FROM journal_segments",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
        .await
    }

    /// Ids of a run's children that have not ended.
    pub async fn live_children(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT id FROM runs WHERE parent_run_id = ?1 AND status NOT IN {FINAL}"
            ))?
            .query_map([run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// Whether a status string is final (kept next to [`FINAL`] so the two agree).
#[cfg(test)]
fn is_final_sql(status: &str) -> bool {
    FINAL.contains(&format!("'{status}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    #[test]
    fn the_sql_list_of_final_statuses_matches_the_model() {
        for s in RunStatus::ALL {
            assert_eq!(is_final_sql(s.as_str()), s.is_final(), "{s}");
        }
    }
}
