//! What ends or resumes a run, in the caller's transaction: the compare-and-set of a status
//! change, the record of an attempt's end, the resumption of WAITING runs (a parent whose children
//! all ended, the waiters of a completed token, a due time).
//!
//! Every path that gives a run a final status goes through [`apply_update`], which resumes the
//! parents waiting for it in the same transaction; so no path that ends a run can strand a parent.
//!
//! PostgreSQL runs these transactions side by side, so a run's end, a parent's checkpoint and
//! another child's end can each miss what the others have not committed yet. Locks order them:
//! - a run's end and a checkpoint that waits for it take the same advisory lock ([`lock_ends`])
//!   before one reads the waiters and the other the run's status, so whichever comes second sees
//!   what the first did;
//! - resuming a parent locks its row first ([`resume_if_done`]), so two of its children ending at
//!   once check its other children one after the other;
//! - a token's waitpoint row is locked before the runs that wait for it (see `waits`).
//!
//! Locks are taken in one order, so these transactions cannot deadlock on each other: a token's
//! waitpoint row before the runs that wait for it; an ending run's own row before its end lock;
//! end locks (several sorted) before a parent's row.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;

use super::journal::insert_logs;
use super::rows::*;
use crate::model::*;
use crate::store::codec::status_guard;
use crate::store::*;

/// A WAITING run goes back to QUEUED (`Resume`), keeping its score.
pub(super) static RESUME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = $2, backoff = 0, updated_at = $2 \
         WHERE id = $1 AND {guard} \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// The WAITING runs that wait for a waitpoint go back to QUEUED (`Resume`).
pub(super) static RESUME_WAITERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = $2, backoff = 0, updated_at = $2 \
         WHERE {guard} AND id IN (SELECT run_id FROM waitpoint_waiters WHERE waitpoint_id = $1) \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// The WAITING runs among an array of ids go back to QUEUED (`Resume`): due waits resume in one
/// statement however many they are.
pub(super) static RESUME_MANY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{queued}', available_at = $2, backoff = 0, updated_at = $2 \
         WHERE {guard} AND id = ANY($1) \
         RETURNING environment_id, queue, concurrency_key",
        queued = RunStatus::Queued.as_str(),
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// Locks a run that [`RESUME`] would resume (one it may take from WAITING).
static LOCK_RESUMABLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM runs WHERE id = $1 AND {guard} FOR NO KEY UPDATE",
        guard = status_guard(Step::Resume, RunStatus::Queued, &[])
    )
});

/// Statuses in which a run has ended, as SQL.
pub(super) const FINAL: &str =
    "('COMPLETED', 'CANCELED', 'FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'EXPIRED', 'TIMED_OUT')";

/// The class of the advisory locks [`lock_ends`] takes (the second key is a run id's hash; the
/// two-key space is apart from the host's one-key locks).
const ENDS_LOCK: i32 = 0x6b65_6e64; // "kend"

/// Takes the transaction's advisory locks on the ends of `runs`, in one order (sorted by key, so
/// two transactions locking overlapping sets cannot deadlock). A run's end takes its own (in
/// [`child_ended`], after its final status is written and before its waiters are read); a
/// checkpoint that waits for runs takes theirs before it writes anything. So a checkpoint
/// committing while a child ends either commits its waiters before the child reads them, or
/// reads the child's final status after it committed: the parent is resumed either way, once.
pub(super) async fn lock_ends(c: &impl GenericClient, runs: &[String]) -> Result<(), StoreError> {
    let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
    lock_sorted(c, ENDS_LOCK, &runs).await
}

/// Records an attempt's end (or checkpoint) and the run's change; returns whether the run had
/// been canceled meanwhile (the attempt is then recorded as canceled, the run left as it is).
/// With a claim, an executing run that another claim started since, or that another host took
/// over (this host's lease lapsed), is a [`StoreError::Conflict`]: nothing is recorded.
pub(super) async fn record_attempt(
    c: &impl GenericClient,
    finish: FinishAttempt,
) -> Result<(bool, Vec<Lane>), StoreError> {
    let FinishAttempt {
        update,
        attempt,
        claim,
        attempt_status,
        attempt_error,
        output,
        fuel_used,
        compute_ms,
        logs,
    } = finish;
    let (canceled, resumed) = match apply_with_usage(
        c,
        &update,
        output.as_deref(),
        fuel_used,
        compute_ms,
        claim.as_deref(),
    )
    .await
    {
        Ok(resumed) => (false, resumed),
        Err(StoreError::Conflict) => {
            let status: Option<String> = query_opt(
                c,
                "SELECT status FROM runs WHERE id = $1 AND environment_id = $2",
                &[&update.run_id, &update.environment_id],
            )
            .await?
            .map(|r| get(&r, 0))
            .transpose()?;
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
    let (fuel_used, compute_ms) = (fuel_used as i64, compute_ms as i64);
    if canceled {
        // The run keeps its CANCELED status and gets no output; the attempt's usage still counts.
        exec(
            c,
            "UPDATE runs SET fuel_used = fuel_used + $2, compute_ms = compute_ms + $3 WHERE id = $1",
            &[&update.run_id, &fuel_used, &compute_ms],
        )
        .await?;
    }
    // A checkpointed attempt is still under way: no end time yet.
    exec(
        c,
        "UPDATE attempts SET status = $3, \
           finished_at = CASE WHEN $3 = 'EXECUTING' THEN NULL ELSE $4::bigint END, error = $5, \
           fuel_used = fuel_used + $6, compute_ms = compute_ms + $7 \
         WHERE run_id = $1 AND number = $2",
        &[
            &update.run_id,
            &i64::from(attempt),
            &attempt_status.as_str(),
            &update.now,
            &attempt_error.as_ref().map(encode_error),
            &fuel_used,
            &compute_ms,
        ],
    )
    .await?;
    insert_logs(c, &update.run_id, &logs).await?;
    // An attempt that ended needs its journal no more.
    if attempt_status != AttemptStatus::Executing {
        exec(
            c,
            "DELETE FROM journal_segments WHERE run_id = $1 AND attempt = $2",
            &[&update.run_id, &i64::from(attempt)],
        )
        .await?;
    }
    Ok((canceled, resumed))
}

pub(super) async fn apply_update(
    c: &impl GenericClient,
    u: &RunUpdate,
) -> Result<Vec<Lane>, StoreError> {
    apply_with_usage(c, u, None, 0, 0, None).await
}

/// [`apply_update`], adding an attempt's output and usage to the run in the same statement.
async fn apply_with_usage(
    c: &impl GenericClient,
    u: &RunUpdate,
    output: Option<&str>,
    fuel_used: u64,
    compute_ms: u64,
    claim: Option<&str>,
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
    // A claim is answered before it commits (claim is start), so the end of the attempt it
    // started may come while the row still shows QUEUED to others; an `UPDATE … WHERE status =
    // 'EXECUTING'` would pass that row over without waiting. Locking the row first waits for
    // the claim's commit (or rollback) and then reads the status it left.
    // The same lock orders an attempt's own end after a takeover or a new claim of its run:
    // with `claim` (the attempt's), a run claimed since, or taken over, is not this attempt's
    // to end.
    if u.expected == RunStatus::Executing {
        let current: Option<Option<String>> = query_opt(
            c,
            "SELECT claim_id FROM runs WHERE id = $1 FOR NO KEY UPDATE",
            &[&u.run_id],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        if let (Some(claim), Some(current)) = (claim, &current)
            && current.as_deref() != Some(claim)
        {
            return Err(StoreError::Conflict);
        }
    }
    // The compare-and-set on the status: a concurrent change of the run waits for this one (the
    // row lock) and then finds the status it expected gone.
    let changed = exec(
        c,
        "UPDATE runs SET status = $3, updated_at = $4, available_at = coalesce($5, available_at), \
           error = coalesce($6, error), finished_at = coalesce($7, finished_at), \
           machine = coalesce($8, machine), \
           backoff = CASE WHEN $3 = 'QUEUED' AND coalesce($5, available_at) > $4 THEN 1 ELSE 0 END, \
           checkpointed = $9, output = coalesce($11, output), fuel_used = fuel_used + $12, \
           compute_ms = compute_ms + $13 \
         WHERE id = $1 AND status = $2 AND environment_id = $10",
        &[
            &u.run_id,
            &u.expected.as_str(),
            &u.status.as_str(),
            &u.now,
            &u.available_at,
            &u.error.as_ref().map(encode_error),
            &finished,
            &u.machine.map(Machine::as_str),
            &i64::from(u.checkpointed),
            &u.environment_id,
            &output,
            &(fuel_used as i64),
            &(compute_ms as i64),
        ],
    )
    .await?;
    if changed == 0 {
        return Err(StoreError::Conflict);
    }
    if u.status.is_final() {
        return child_ended(c, &u.run_id, u.now).await;
    }
    Ok(Vec::new())
}

/// A run ended: forget its copy of the environment variables, and resume the parents that
/// waited for it and now have all their results.
pub(super) async fn child_ended(
    c: &impl GenericClient,
    child: &str,
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    super::run_env::forget_run_env(c, child).await?;
    // Its final status is written: a checkpoint that waits for it and is under way commits its
    // waiters before this reads them, or reads that status once this commits (see `lock_ends`).
    lock_ends(c, &[child.to_owned()]).await?;
    let parents: Vec<String> = query(
        c,
        "SELECT parent_run_id FROM run_waiters WHERE child_run_id = $1 ORDER BY parent_run_id",
        &[&child],
    )
    .await?
    .iter()
    .map(|r| get(r, 0))
    .collect::<Result<_, _>>()?;
    let mut lanes = Vec::new();
    for parent in parents {
        lanes.extend(resume_if_done(c, &parent, now).await?);
    }
    Ok(lanes)
}

/// Queues `parent` if it is WAITING and none of the children it waits for is still going.
///
/// The parent's row is locked before its children are checked: two of its children ending at
/// once would each see the other still going (neither committed) and neither would resume it.
/// Locked, the second checks once the first committed, and sees both ended.
pub(super) async fn resume_if_done(
    c: &impl GenericClient,
    parent: &str,
    now: Millis,
) -> Result<Option<Lane>, StoreError> {
    if query_opt(c, &LOCK_RESUMABLE, &[&parent]).await?.is_none() {
        // Not waiting (resumed, or canceled meanwhile): nothing to resume.
        return Ok(None);
    }
    let pending = query_opt(
        c,
        &format!(
            "SELECT 1 FROM run_waiters w JOIN runs r ON r.id = w.child_run_id \
             WHERE w.parent_run_id = $1 AND r.status NOT IN {FINAL} LIMIT 1"
        ),
        &[&parent],
    )
    .await?
    .is_some();
    if pending {
        return Ok(None);
    }
    resume(c, parent, now).await
}

/// Puts a WAITING run back in its queue (keeping its score); its lane, or `None` if it was not
/// waiting (canceled meanwhile, say).
pub(super) async fn resume(
    c: &impl GenericClient,
    run: &str,
    now: Millis,
) -> Result<Option<Lane>, StoreError> {
    query_opt(c, &RESUME, &[&run, &now])
        .await?
        .as_ref()
        .map(lane_from_row)
        .transpose()
}

/// Puts those of `runs` that are WAITING back in their queues, in one statement; their lanes.
pub(super) async fn resume_many(
    c: &impl GenericClient,
    runs: &[String],
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    query(c, &RESUME_MANY, &[&runs, &now])
        .await?
        .iter()
        .map(lane_from_row)
        .collect()
}

/// Puts the WAITING runs that wait for `waitpoint` back in their queues; returns their lanes.
pub(super) async fn resume_waiters(
    c: &impl GenericClient,
    waitpoint: &str,
    now: Millis,
) -> Result<Vec<Lane>, StoreError> {
    query(c, &RESUME_WAITERS, &[&waitpoint, &now])
        .await?
        .iter()
        .map(lane_from_row)
        .collect()
}

/// Completes a token still waiting (data, or the timeout error) and resumes its waiters. `None`
/// if it was already done: a token completes once.
///
/// The compare-and-set locks the waitpoint's row: a checkpoint that waits for the token locks it
/// too before it reads its status (see `waits`), so the one that comes second sees the other's
/// waiter or status, and the run is resumed once.
pub(super) async fn finish_token(
    c: &impl GenericClient,
    id: &str,
    status: TokenStatus,
    output: &str,
    now: Millis,
) -> Result<Option<Vec<Lane>>, StoreError> {
    let changed = exec(
        c,
        "UPDATE waitpoints SET status = $2, output = $3, output_is_error = $4, completed_at = $5 \
         WHERE id = $1 AND kind = 'MANUAL' AND status = 'PENDING'",
        &[
            &id,
            &match status {
                TokenStatus::TimedOut => "TIMED_OUT",
                _ => "COMPLETED",
            },
            &output,
            &i64::from(status == TokenStatus::TimedOut),
            &now,
        ],
    )
    .await?;
    if changed == 0 {
        return Ok(None);
    }
    resume_waiters(c, id, now).await.map(Some)
}

/// Whether a status string is final (kept next to [`FINAL`] so the two agree).
#[cfg(test)]
pub(super) fn is_final_sql(status: &str) -> bool {
    FINAL.contains(&format!("'{status}'"))
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
