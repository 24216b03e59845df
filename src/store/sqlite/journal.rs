//! The journal writer: appends an attempt's journal segments and log lines, and commits the journal
//! together with an effect (a token, child runs, a metadata change) in the caller's transaction.
//!
//! A leaf: it changes no run status beyond marking an executing run as having a journal.

use rusqlite::{Connection, params};

use crate::model::*;
use crate::store::*;

/// Appends the segment of `journal` for `effect` and marks the run as having a journal, in the
/// caller's transaction. `Conflict` if the run is no longer executing (canceled meanwhile).
pub(super) fn commit_journal<T: ?Sized>(
    c: &Connection,
    journal: JournalWith<T>,
    effect: &T,
    now: Millis,
) -> Result<(), StoreError> {
    let entries = (journal.entries)(effect);
    super::journal::append_journal(c, &journal.run_id, journal.attempt, entries, now)?;
    insert_logs(c, &journal.run_id, &journal.logs)?;
    let marked = c.execute(
        "UPDATE runs SET checkpointed = 1 WHERE id = ?1 AND environment_id = ?2 AND status = 'EXECUTING'",
        params![journal.run_id, journal.environment_id],
    )?;
    if marked == 0 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

/// Appends a segment to an attempt's journal.
pub(super) fn append_journal(
    c: &Connection,
    run_id: &str,
    attempt: u32,
    entries: Vec<u8>,
    now: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO journal_segments (run_id, attempt, segment, entries, created_at) \
         SELECT ?1, ?2, coalesce(max(segment) + 1, 0), ?3, ?4 FROM journal_segments \
         WHERE run_id = ?1 AND attempt = ?2",
    )?
    .execute(params![run_id, attempt, entries, now])?;
    Ok(())
}

pub(super) fn insert_logs(
    c: &Connection,
    run_id: &str,
    logs: &[LogLine],
) -> Result<(), StoreError> {
    let mut insert = c.prepare_cached(
        "INSERT INTO run_logs (run_id, attempt, at, level, message, attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for line in logs {
        insert.execute(params![
            run_id,
            line.attempt,
            line.at,
            line.level.as_str(),
            line.message,
            line.attributes
        ])?;
    }
    Ok(())
}
