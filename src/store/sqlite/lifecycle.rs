//! What ends or resumes a run, in the caller's transaction: the compare-and-set of a status
//! change, the record of an attempt's end, the resumption of WAITING runs (a parent whose children
//! all ended, the waiters of a completed token, a due time).
//!
//! Every path that gives a run a final status goes through [`apply_update`], which resumes the
//! parents waiting for it in the same transaction; so no path that ends a run can strand a parent.

use std::sync::LazyLock;

use super::rows::exec;
use rusqlite::{Connection, OptionalExtension, params};

use super::guards::status_guard;
use super::journal::insert_logs;
use super::rows::*;
use crate::model::*;
use crate::store::*;

/// A WAITING run goes back to QUEUED (`Resume`), keeping its score.
pub(super) static RESUME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = ?2, backoff = 0, updated_at = ?2 \
         WHERE id = ?1 AND {guard} \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// The WAITING runs that wait for a waitpoint go back to QUEUED (`Resume`).
pub(super) static RESUME_WAITERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = ?2, backoff = 0, updated_at = ?2 \
         WHERE {guard} AND id IN (SELECT run_id FROM waitpoint_waiters WHERE waitpoint_id = ?1) \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// The WAITING runs among a JSON array of ids go back to QUEUED (`Resume`): due waits resume in
/// one statement however many they are.
pub(super) static RESUME_MANY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = ?2, backoff = 0, updated_at = ?2 \
         WHERE {guard} AND id IN (SELECT value FROM json_each(?1)) \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// Statuses in which a run has ended, as SQL.
pub(super) const FINAL: &str =
    "('COMPLETED', 'CANCELED', 'FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'EXPIRED', 'TIMED_OUT')";

/// Records an attempt's end (or checkpoint) and the run's change; returns whether the run had
/// been canceled meanwhile (the attempt is then recorded as canceled, the run left as it is).
pub(super) fn record_attempt(
    c: &Connection,
    finish: FinishAttempt,
) -> Result<(bool, Vec<Lane>), StoreError> {
    let FinishAttempt {
        update,
        attempt,
        claim: _,
        attempt_status,
        attempt_error,
        output,
        fuel_used,
        compute_ms,
        logs,
    } = finish;
    let (canceled, resumed) =
        match apply_with_usage(c, &update, output.as_deref(), fuel_used, compute_ms) {
            Ok(resumed) => (false, resumed),
            Err(StoreError::Conflict) => {
                let status: Option<String> = c
                    .query_row(
                        "SELECT status FROM runs WHERE id = ?1 AND environment_id = ?2",
                        params![update.run_id, update.environment_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if status.as_deref() != Some(RunStatus::Canceled.as_str()) {
                    return Err(StoreError::Conflict);
                }
                (true, Vec::new())
            }
            Err(e) => return Err(e),
        };
    let attempt_status = if canceled {
        AttemptStatus::Canceled
    } else {
        attempt_status
    };
    if canceled {
        // The run keeps its CANCELED status and gets no output; the attempt's usage still counts.
        exec(
            c,
            "UPDATE runs SET fuel_used = fuel_used + ?2, compute_ms = compute_ms + ?3 WHERE id = ?1",
            params![update.run_id, fuel_used as i64, compute_ms as i64],
        )?;
    }
    // A checkpointed attempt is still under way: no end time yet.
    exec(
        c,
        "UPDATE attempts SET status = ?3, \
           finished_at = CASE WHEN ?3 = 'EXECUTING' THEN NULL ELSE ?4 END, error = ?5, \
           fuel_used = fuel_used + ?6, compute_ms = compute_ms + ?7 \
         WHERE run_id = ?1 AND number = ?2",
        params![
            update.run_id,
            attempt,
            attempt_status.as_str(),
            update.now,
            attempt_error.as_ref().map(encode_error),
            fuel_used as i64,
            compute_ms as i64,
        ],
    )?;
    insert_logs(c, &update.run_id, &logs)?;
    // An attempt that ended needs its journal no more.
    if attempt_status != AttemptStatus::Executing {
        c.prepare_cached("DELETE FROM journal_segments WHERE run_id = ?1 AND attempt = ?2")?
            .execute(params![update.run_id, attempt])?;
    }
    Ok((canceled, resumed))
}

pub(super) fn apply_update(c: &Connection, u: &RunUpdate) -> Result<Vec<Lane>, StoreError> {
    apply_with_usage(c, u, None, 0, 0)
}

/// [`apply_update`], adding an attempt's output and usage to the run in the same statement.
fn apply_with_usage(
    c: &Connection,
    u: &RunUpdate,
    output: Option<&str>,
    fuel_used: u64,
    compute_ms: u64,
) -> Result<Vec<Lane>, StoreError> {
    // The engine computed the change with the state machine; a change its table lacks is a bug,
    // refused rather than stored.
    if !allowed(u.expected, u.status) {
        return Err(StoreError::Refused(format!(
            "run {}: the state machine has no edge from {} to {}",
            u.run_id, u.expected, u.status
        )));
    }
    let finished = u.status.is_final().then_some(u.now);
    let changed = exec(
        c,
        "UPDATE runs SET status = ?3, updated_at = ?4, available_at = coalesce(?5, available_at), \
           error = coalesce(?6, error), finished_at = coalesce(?7, finished_at), \
           machine = coalesce(?8, machine), \
           backoff = (?3 = 'QUEUED' AND coalesce(?5, available_at) > ?4), checkpointed = ?9, \
           output = coalesce(?11, output), fuel_used = fuel_used + ?12, \
           compute_ms = compute_ms + ?13 \
         WHERE id = ?1 AND status = ?2 AND environment_id = ?10",
        params![
            u.run_id,
            u.expected.as_str(),
            u.status.as_str(),
            u.now,
            u.available_at,
            u.error.as_ref().map(encode_error),
            finished,
            u.machine.map(Machine::as_str),
            u.checkpointed,
            u.environment_id,
            output,
            fuel_used as i64,
            compute_ms as i64,
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::Conflict);
    }
    if u.status.is_final() {
        return super::lifecycle::child_ended(c, &u.run_id, u.now);
    }
    Ok(Vec::new())
}

/// A run ended: forget its copy of the environment variables, and resume the parents that
/// waited for it and now have all their results.
pub(super) fn child_ended(
    c: &Connection,
    child: &str,
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    super::run_env::forget_run_env(c, child)?;
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

/// Queues `parent` if it is WAITING and none of the children it waits for is still going.
pub(super) fn resume_if_done(
    c: &Connection,
    parent: &str,
    now: Millis,
) -> Result<Option<Lane>, StoreError> {
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
    Ok(c.prepare_cached(&RESUME)?
        .query_row(params![run, now], lane_from_row)
        .optional()?)
}

/// Puts those of `runs` that are WAITING back in their queues, in one statement; their lanes.
pub(super) fn resume_many(
    c: &Connection,
    runs: &[String],
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(runs).map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(c.prepare_cached(&RESUME_MANY)?
        .query_map(params![ids, now], lane_from_row)?
        .collect::<Result<_, _>>()?)
}

/// Puts the WAITING runs that wait for `waitpoint` back in their queues; returns their lanes.
pub(super) fn resume_waiters(
    c: &Connection,
    waitpoint: &str,
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    Ok(c.prepare_cached(&RESUME_WAITERS)?
        .query_map(params![waitpoint, now], lane_from_row)?
        .collect::<Result<_, _>>()?)
}

/// Completes a token still waiting (data, or the timeout error) and resumes its waiters. `None`
/// if it was already done: a token completes once.
pub(super) fn finish_token(
    c: &Connection,
    id: &str,
    status: TokenStatus,
    output: &str,
    now: Millis,
) -> Result<Option<Vec<Lane>>, StoreError> {
    let changed = c
        .prepare_cached(
            "UPDATE waitpoints SET status = ?2, output = ?3, output_is_error = ?4, completed_at = ?5 \
             WHERE id = ?1 AND kind = 'MANUAL' AND status = 'PENDING'",
        )?
        .execute(params![
            id,
            match status {
                TokenStatus::TimedOut => "TIMED_OUT",
                _ => "COMPLETED",
            },
            output,
            status == TokenStatus::TimedOut,
            now
        ])?;
    if changed == 0 {
        return Ok(None);
    }
    resume_waiters(c, id, now).map(Some)
}

/// Whether a status string is final (kept next to [`FINAL`] so the two agree).
#[cfg(test)]
pub(super) fn is_final_sql(status: &str) -> bool {
    FINAL.contains(&format!("'{status}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_list_of_final_statuses_matches_the_model() {
        for s in RunStatus::ALL {
            assert_eq!(is_final_sql(s.as_str()), s.is_final(), "{s}");
        }
    }
}
