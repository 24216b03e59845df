//! Bulk actions: made with their runs in one transaction, read, listed, advanced one batch at a
//! time (compare-and-set on how far they got, so a batch is counted once), aborted, and found
//! again unfinished when the host starts.
//!
//! The compare-and-set holds across hosts too: an `UPDATE … WHERE processed = $2` that finds the
//! row changed by a concurrent transaction re-checks its condition on the committed row, so of
//! two workers counting the same batch, one does.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::store::*;

const COLUMNS: &str = "id, environment_id, name, kind, status, total, processed, success, failure, \
     created_at, completed_at";

fn action_from_row(r: &Row) -> Result<BulkAction, StoreError> {
    let kind: String = get(r, 3)?;
    let status: String = get(r, 4)?;
    Ok(BulkAction {
        id: get(r, 0)?,
        environment_id: get(r, 1)?,
        name: get(r, 2)?,
        kind: BulkKind::parse(&kind).ok_or_else(|| corrupt("bulk kind", &kind))?,
        status: BulkStatus::parse(&status).ok_or_else(|| corrupt("bulk status", &status))?,
        total: int(r, 5)?,
        processed: int(r, 6)?,
        success: int(r, 7)?,
        failure: int(r, 8)?,
        created_at: get(r, 9)?,
        completed_at: get(r, 10)?,
    })
}

async fn load(c: &impl GenericClient, id: &str) -> Result<Option<BulkAction>, StoreError> {
    query_opt(
        c,
        &format!("SELECT {COLUMNS} FROM bulk_actions WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(action_from_row)
    .transpose()
}

impl PostgresStore {
    pub async fn create_bulk_action(&self, new: NewBulkAction) -> Result<BulkAction, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = new_id("bulk");
        // An action with no runs is done when made.
        let (status, completed_at) = if new.run_ids.is_empty() {
            (BulkStatus::Completed, Some(new.now))
        } else {
            (BulkStatus::Pending, None)
        };
        exec(
            &tx,
            "INSERT INTO bulk_actions (id, environment_id, name, kind, status, total, created_at, updated_at, completed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            &[
                &id,
                &new.environment_id,
                &new.name,
                &new.kind.as_str(),
                &status.as_str(),
                &(new.run_ids.len() as i64),
                &new.now,
                &completed_at,
            ],
        )
        .await?;
        // Every run in one statement, at its position (0, 1, …) in the list.
        exec(
            &tx,
            "INSERT INTO bulk_action_runs (bulk_id, position, run_id) \
             SELECT $1, position - 1, run_id FROM unnest($2::text[]) WITH ORDINALITY AS u(run_id, position)",
            &[&id, &new.run_ids],
        )
        .await?;
        let action = load(&tx, &id)
            .await?
            .ok_or(StoreError::NotFound("bulk action"))?;
        tx.commit().await?;
        Ok(action)
    }

    pub async fn bulk_action(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<BulkAction>, StoreError> {
        Ok(load(&self.reader().await?, id)
            .await?
            .filter(|a| a.environment_id == environment_id))
    }

    pub async fn list_bulk_actions(
        &self,
        environment_id: &str,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<BulkAction>, bool), StoreError> {
        // Newest first: `after` pages to older actions, `before` back to newer ones.
        let backwards = before.is_some();
        let (cursor, sql) = match (&before, &after) {
            (Some(b), _) => (Some(b.clone()), " AND id > $2 ORDER BY id ASC LIMIT $3"),
            (None, Some(a)) => (Some(a.clone()), " AND id < $2 ORDER BY id DESC LIMIT $3"),
            (None, None) => (None, " AND $2::text IS NULL ORDER BY id DESC LIMIT $3"),
        };
        let mut actions: Vec<BulkAction> = query(
            &self.reader().await?,
            &format!("SELECT {COLUMNS} FROM bulk_actions WHERE environment_id = $1{sql}"),
            &[&environment_id, &cursor, &((limit + 1) as i64)],
        )
        .await?
        .iter()
        .map(action_from_row)
        .collect::<Result<_, _>>()?;
        let more = actions.len() > limit;
        actions.truncate(limit);
        if backwards {
            actions.reverse();
        }
        Ok((actions, more))
    }

    pub async fn bulk_action_runs(
        &self,
        id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        query(
            &self.reader().await?,
            "SELECT run_id FROM bulk_action_runs WHERE bulk_id = $1 AND position >= $2 \
             ORDER BY position LIMIT $3",
            &[&id, &i64::from(from), &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    pub async fn record_bulk_progress(
        &self,
        id: &str,
        progress: BulkProgress,
    ) -> Result<Option<BulkAction>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Counted once: only if no other worker moved it on meanwhile. An aborted action keeps
        // the counts of the batch it was in.
        exec(
            &tx,
            "UPDATE bulk_actions SET processed = processed + $3, success = success + $4, \
               failure = failure + $5, updated_at = $6, \
               status = CASE WHEN status = 'PENDING' AND processed + $3 >= total THEN 'COMPLETED' ELSE status END, \
               completed_at = CASE WHEN status = 'PENDING' AND processed + $3 >= total THEN $6 ELSE completed_at END \
             WHERE id = $1 AND processed = $2",
            &[
                &id,
                &i64::from(progress.from),
                &i64::from(progress.done),
                &i64::from(progress.success),
                &i64::from(progress.failure),
                &progress.now,
            ],
        )
        .await?;
        let action = load(&tx, id).await?;
        tx.commit().await?;
        Ok(action)
    }

    pub async fn abort_bulk_action(
        &self,
        environment_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<BulkAction>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE bulk_actions SET status = 'ABORTED', completed_at = $3, updated_at = $3 \
             WHERE id = $1 AND environment_id = $2 AND status = 'PENDING'",
            &[&id, &environment_id, &now],
        )
        .await?;
        let action = load(&tx, id)
            .await?
            .filter(|a| a.environment_id == environment_id);
        tx.commit().await?;
        Ok(action)
    }

    pub async fn pending_bulk_actions(&self) -> Result<Vec<BulkAction>, StoreError> {
        query(
            &self.reader().await?,
            &format!("SELECT {COLUMNS} FROM bulk_actions WHERE status = 'PENDING' ORDER BY id"),
            &[],
        )
        .await?
        .iter()
        .map(action_from_row)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::queues::tests::tenant;
    use super::*;

    fn new_action(runs: &[&str], now: Millis) -> NewBulkAction {
        NewBulkAction {
            environment_id: "e".into(),
            name: Some("cleanup".into()),
            kind: BulkKind::Cancel,
            run_ids: runs.iter().map(|r| (*r).to_owned()).collect(),
            now,
        }
    }

    fn progress(from: u32, done: u32, now: Millis) -> BulkProgress {
        BulkProgress {
            from,
            done,
            success: done,
            failure: 0,
            now,
        }
    }

    /// Two workers counting the same batch at once (two hosts) count it once; the last batch
    /// completes the action.
    #[tokio::test]
    async fn a_batch_is_counted_once_and_the_last_completes_the_action() {
        let (_db, store) = tenant().await;
        let action = store
            .create_bulk_action(new_action(&["r1", "r2", "r3"], 1))
            .await
            .expect("an action");
        assert_eq!(
            (
                action.status,
                action.total,
                action.processed,
                action.name.as_deref()
            ),
            (BulkStatus::Pending, 3, 0, Some("cleanup"))
        );
        assert_eq!(
            store
                .bulk_action_runs(&action.id, 1, 10)
                .await
                .expect("runs"),
            ["r2", "r3"]
        );
        assert_eq!(
            store
                .bulk_action_runs(&action.id, 0, 1)
                .await
                .expect("runs"),
            ["r1"]
        );

        let counts = (0..4).map(|_| store.record_bulk_progress(&action.id, progress(0, 2, 2)));
        for counted in futures_util::future::join_all(counts).await {
            counted.expect("a count");
        }
        let now = store
            .bulk_action("e", &action.id)
            .await
            .expect("read")
            .expect("the action");
        assert_eq!(
            (now.processed, now.success, now.status),
            (2, 2, BulkStatus::Pending)
        );
        let done = store
            .record_bulk_progress(&action.id, progress(2, 1, 3))
            .await
            .expect("a count")
            .expect("the action");
        assert_eq!(
            (done.processed, done.status, done.completed_at),
            (3, BulkStatus::Completed, Some(3))
        );
        assert!(
            store
                .pending_bulk_actions()
                .await
                .expect("pending")
                .is_empty()
        );
        assert!(
            store
                .bulk_action("f", &action.id)
                .await
                .expect("read")
                .is_none()
        );

        let empty = store
            .create_bulk_action(new_action(&[], 4))
            .await
            .expect("an action");
        assert_eq!(
            (empty.status, empty.completed_at),
            (BulkStatus::Completed, Some(4))
        );
    }

    #[tokio::test]
    async fn actions_are_aborted_while_pending_and_listed_newest_first() {
        let (_db, store) = tenant().await;
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                store
                    .create_bulk_action(new_action(&["r"], n))
                    .await
                    .expect("an action")
                    .id,
            );
            // Ids made a millisecond apart sort by creation.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let pending = store.pending_bulk_actions().await.expect("pending");
        assert_eq!(
            pending.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
            ids
        );

        let aborted = store
            .abort_bulk_action("e", &ids[0], 9)
            .await
            .expect("abort")
            .expect("the action");
        assert_eq!(
            (aborted.status, aborted.completed_at),
            (BulkStatus::Aborted, Some(9))
        );
        let again = store
            .abort_bulk_action("e", &ids[0], 10)
            .await
            .expect("abort")
            .expect("the action");
        assert_eq!(
            again.completed_at,
            Some(9),
            "a finished action stays as it is"
        );
        assert!(
            store
                .abort_bulk_action("f", &ids[1], 9)
                .await
                .expect("abort")
                .is_none()
        );
        // Progress on an aborted action is counted but does not complete it.
        let counted = store
            .record_bulk_progress(&ids[0], progress(0, 1, 11))
            .await
            .expect("a count")
            .expect("the action");
        assert_eq!(
            (counted.processed, counted.status),
            (1, BulkStatus::Aborted)
        );

        let page = |after: Option<&str>, before: Option<&str>| {
            let store = store.clone();
            let (after, before) = (after.map(str::to_owned), before.map(str::to_owned));
            async move {
                let (actions, more) = store
                    .list_bulk_actions("e", 2, after, before)
                    .await
                    .expect("a page");
                (actions.into_iter().map(|a| a.id).collect::<Vec<_>>(), more)
            }
        };
        assert_eq!(
            page(None, None).await,
            (vec![ids[2].clone(), ids[1].clone()], true)
        );
        assert_eq!(
            page(Some(&ids[1]), None).await,
            (vec![ids[0].clone()], false)
        );
        assert_eq!(
            page(None, Some(&ids[0])).await,
            (vec![ids[2].clone(), ids[1].clone()], false)
        );
    }
}
