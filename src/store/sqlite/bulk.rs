//! Bulk actions: made with their runs in one transaction, read, listed, advanced one batch at a
//! time (compare-and-set on how far they got, so a batch is counted once), aborted, and found
//! again unfinished when the host starts.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::corrupt_col;
use crate::model::*;
use crate::store::*;

const COLUMNS: &str = "id, environment_id, name, kind, status, total, processed, success, failure, \
     created_at, completed_at";

fn action_from_row(r: &Row<'_>) -> rusqlite::Result<BulkAction> {
    let kind: String = r.get(3)?;
    let status: String = r.get(4)?;
    Ok(BulkAction {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        name: r.get(2)?,
        kind: BulkKind::parse(&kind).ok_or_else(|| corrupt_col(3, "bulk kind", &kind))?,
        status: BulkStatus::parse(&status).ok_or_else(|| corrupt_col(4, "bulk status", &status))?,
        total: r.get(5)?,
        processed: r.get(6)?,
        success: r.get(7)?,
        failure: r.get(8)?,
        created_at: r.get(9)?,
        completed_at: r.get(10)?,
    })
}

fn load(c: &Connection, id: &str) -> Result<Option<BulkAction>, StoreError> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM bulk_actions WHERE id = ?1"))?
            .query_row([id], action_from_row)
            .optional()?,
    )
}

impl SqliteStore {
    pub async fn create_bulk_action(&self, new: NewBulkAction) -> Result<BulkAction, StoreError> {
        self.write(move |c| {
            let id = new_id("bulk");
            // An action with no runs is done when made.
            let (status, completed_at) = if new.run_ids.is_empty() {
                (BulkStatus::Completed, Some(new.now))
            } else {
                (BulkStatus::Pending, None)
            };
            c.execute(
                "INSERT INTO bulk_actions (id, environment_id, name, kind, status, total, created_at, updated_at, completed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
                params![
                    id,
                    new.environment_id,
                    new.name,
                    new.kind.as_str(),
                    status.as_str(),
                    new.run_ids.len() as i64,
                    new.now,
                    completed_at
                ],
            )?;
            let mut insert = c.prepare_cached(
                "INSERT INTO bulk_action_runs (bulk_id, position, run_id) VALUES (?1, ?2, ?3)",
            )?;
            for (position, run) in new.run_ids.iter().enumerate() {
                insert.execute(params![id, position as i64, run])?;
            }
            load(c, &id)?.ok_or(StoreError::NotFound("bulk action"))
        })
        .await
    }

    pub async fn bulk_action(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<BulkAction>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| Ok(load(c, &id)?.filter(|a| a.environment_id == environment_id)))
            .await
    }

    pub async fn list_bulk_actions(
        &self,
        environment_id: &str,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<BulkAction>, bool), StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            // Newest first: `after` pages to older actions, `before` back to newer ones.
            let backwards = before.is_some();
            let (cursor, sql) = match (&before, &after) {
                (Some(b), _) => (Some(b.clone()), " AND id > ?2 ORDER BY id ASC LIMIT ?3"),
                (None, Some(a)) => (Some(a.clone()), " AND id < ?2 ORDER BY id DESC LIMIT ?3"),
                (None, None) => (None, " AND ?2 IS NULL ORDER BY id DESC LIMIT ?3"),
            };
            let mut actions: Vec<BulkAction> = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM bulk_actions WHERE environment_id = ?1{sql}"
                ))?
                .query_map(
                    params![environment_id, cursor, (limit + 1) as i64],
                    action_from_row,
                )?
                .collect::<Result<_, _>>()?;
            let more = actions.len() > limit;
            actions.truncate(limit);
            if backwards {
                actions.reverse();
            }
            Ok((actions, more))
        })
        .await
    }

    pub async fn bulk_action_runs(
        &self,
        id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT run_id FROM bulk_action_runs WHERE bulk_id = ?1 AND position >= ?2 \
                 ORDER BY position LIMIT ?3",
            )?
            .query_map(params![id, from, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn record_bulk_progress(
        &self,
        id: &str,
        progress: BulkProgress,
    ) -> Result<Option<BulkAction>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            // Counted once: only if no other worker moved it on meanwhile. An aborted action keeps
            // the counts of the batch it was in.
            c.execute(
                "UPDATE bulk_actions SET processed = processed + ?3, success = success + ?4, \
                   failure = failure + ?5, updated_at = ?6, \
                   status = CASE WHEN status = 'PENDING' AND processed + ?3 >= total THEN 'COMPLETED' ELSE status END, \
                   completed_at = CASE WHEN status = 'PENDING' AND processed + ?3 >= total THEN ?6 ELSE completed_at END \
                 WHERE id = ?1 AND processed = ?2",
                params![
                    id,
                    progress.from,
                    progress.done,
                    progress.success,
                    progress.failure,
                    progress.now
                ],
            )?;
            load(c, &id)
        })
        .await
    }

    pub async fn abort_bulk_action(
        &self,
        environment_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<BulkAction>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE bulk_actions SET status = 'ABORTED', completed_at = ?3, updated_at = ?3 \
                 WHERE id = ?1 AND environment_id = ?2 AND status = 'PENDING'",
                params![id, environment_id, now],
            )?;
            Ok(load(c, &id)?.filter(|a| a.environment_id == environment_id))
        })
        .await
    }

    pub async fn pending_bulk_actions(&self) -> Result<Vec<BulkAction>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM bulk_actions WHERE status = 'PENDING' ORDER BY id"
            ))?
            .query_map([], action_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }
}
