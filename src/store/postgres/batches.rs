//! Two-phase batches (Trigger.dev's v3 batch API): made with their run count, items added each
//! index once (a repeated index is deduplicated, never run twice), sealed once every index has
//! arrived, and read with their runs by index and their failed items.
//!
//! Several hosts may take requests for one batch at once: a batch's idempotency key is claimed
//! by inserting the batch (`ON CONFLICT DO NOTHING` on its unique index, then a re-read), and
//! adding items or sealing locks the batch's row first, so those writes of one batch run one
//! after the other, as they do in one writer.

use deadpool_postgres::GenericClient;

use super::PostgresStore;
use super::lifecycle::FINAL;
use super::queues::lock_queues;
use super::rows::*;
use super::runs::{insert_or_find, queues_of, record_batch_item};
use crate::model::*;
use crate::store::*;

/// How often a batch with an idempotency key is tried before giving up with `Conflict` (each
/// failed try means another request made the key's batch meanwhile; the next finds it).
const CLAIM_TRIES: usize = 4;

async fn load_batch(
    c: &impl GenericClient,
    environment_id: &str,
    id: &str,
) -> Result<Option<Batch>, StoreError> {
    let Some(r) = query_opt(
        c,
        "SELECT id, environment_id, run_count, sealed, sealed_at, created_at, updated_at, \
           idempotency_key, idempotency_key_user, idempotency_key_scope \
         FROM batches WHERE id = $1 AND environment_id = $2",
        &[&id, &environment_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let user: Option<String> = get(&r, 8)?;
    let scope: Option<String> = get(&r, 9)?;
    let mut batch = Batch {
        id: get(&r, 0)?,
        environment_id: get(&r, 1)?,
        run_count: int(&r, 2)?,
        sealed: flag(&r, 3)?,
        sealed_at: get(&r, 4)?,
        created_at: get(&r, 5)?,
        updated_at: get(&r, 6)?,
        idempotency_key: get(&r, 7)?,
        idempotency_key_options: match (user, scope) {
            (Some(key), Some(scope)) => {
                IdempotencyScope::parse(&scope).map(|scope| IdempotencyKeyOptions { key, scope })
            }
            _ => None,
        },
        runs: Vec::new(),
        errors: Vec::new(),
        unfinished: 0,
    };
    for row in query(
        c,
        "SELECT idx, task_id, run_id, error, error_code FROM batch_items WHERE batch_id = $1 ORDER BY idx",
        &[&id],
    )
    .await?
    {
        match get::<Option<String>>(&row, 2)? {
            Some(run) => batch.runs.push(run),
            None => batch.errors.push(BatchItemError {
                index: int(&row, 0)?,
                task_id: get(&row, 1)?,
                message: get::<Option<String>>(&row, 3)?.unwrap_or_default(),
                code: get(&row, 4)?,
            }),
        }
    }
    batch.unfinished = int(
        &query_one(
            c,
            &format!(
                "SELECT count(*) FROM batch_items i JOIN runs r ON r.id = i.run_id \
                 WHERE i.batch_id = $1 AND r.status NOT IN {FINAL}"
            ),
            &[&id],
        )
        .await?,
        0,
    )?;
    Ok(Some(batch))
}

/// Locks a batch of the environment for the rest of the transaction and says whether it is
/// sealed (`None`: no such batch). Adding items (each index once) and sealing (once every index
/// is there) read the batch's items and then write: a second request for the batch waits here
/// for the first to commit, and then reads what it stored.
async fn lock_batch(
    c: &impl GenericClient,
    environment_id: &str,
    batch_id: &str,
) -> Result<Option<(u32, bool)>, StoreError> {
    query_opt(
        c,
        "SELECT run_count, sealed FROM batches WHERE id = $1 AND environment_id = $2 \
         FOR NO KEY UPDATE",
        &[&batch_id, &environment_id],
    )
    .await?
    .map(|r| Ok((int(&r, 0)?, flag(&r, 1)?)))
    .transpose()
}

impl PostgresStore {
    pub async fn create_batch(&self, new: NewBatch) -> Result<(Batch, bool), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        for _ in 0..CLAIM_TRIES {
            if let Some((key, _)) = &new.idempotency {
                let found = query_opt(
                    &tx,
                    "SELECT id, idempotency_expires_at FROM batches \
                     WHERE environment_id = $1 AND idempotency_key = $2",
                    &[&new.environment_id, key],
                )
                .await?;
                if let Some(row) = found {
                    let (id, expires): (String, Option<Millis>) = (get(&row, 0)?, get(&row, 1)?);
                    if expires.is_none_or(|at| at > new.now) {
                        let batch = load_batch(&tx, &new.environment_id, &id)
                            .await?
                            .ok_or(StoreError::NotFound("batch"))?;
                        tx.commit().await?;
                        return Ok((batch, true));
                    }
                    // An expired key is released for the new batch (only by the batch that had it
                    // as read, so a batch another request made with it meanwhile keeps it).
                    exec(
                        &tx,
                        "UPDATE batches SET idempotency_key = NULL \
                         WHERE id = $1 AND idempotency_key = $2",
                        &[&id, key],
                    )
                    .await?;
                }
            }
            let id = new_id("batch");
            // With a key, a concurrent request making the key's batch makes this wait for its
            // commit and then insert nothing: the next try finds its batch.
            let made = exec(
                &tx,
                "INSERT INTO batches (id, environment_id, run_count, created_at, updated_at, sealed, \
                   idempotency_key, idempotency_key_user, idempotency_key_scope, idempotency_expires_at) \
                 VALUES ($1, $2, $3, $4, $4, 0, $5, $6, $7, $8) \
                 ON CONFLICT (environment_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING",
                &[
                    &id,
                    &new.environment_id,
                    &i64::from(new.run_count),
                    &new.now,
                    &new.idempotency.as_ref().map(|(k, _)| k.as_str()),
                    &new.idempotency_options.as_ref().map(|o| o.key.as_str()),
                    &new.idempotency_options.as_ref().map(|o| o.scope.as_str()),
                    &new.idempotency.as_ref().map(|(_, at)| *at),
                ],
            )
            .await?;
            if made == 1 {
                let batch = load_batch(&tx, &new.environment_id, &id)
                    .await?
                    .ok_or(StoreError::NotFound("batch"))?;
                tx.commit().await?;
                return Ok((batch, false));
            }
        }
        Err(StoreError::Conflict)
    }

    pub async fn batch(&self, environment_id: &str, id: &str) -> Result<Option<Batch>, StoreError> {
        load_batch(&self.reader().await?, environment_id, id).await
    }

    pub async fn add_batch_items(
        &self,
        environment_id: &str,
        batch_id: &str,
        items: Vec<NewBatchItem>,
        now: Millis,
    ) -> Result<Result<ItemsAdded, BatchRefusal>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        match lock_batch(&tx, environment_id, batch_id).await? {
            None => return Ok(Err(BatchRefusal::NotFound)),
            Some((_, true)) => return Ok(Err(BatchRefusal::Sealed)),
            Some((_, false)) => {}
        }
        // The queues of every run the items may make, locked in one order (see `lock_queues`).
        lock_queues(
            &tx,
            queues_of(items.iter().filter_map(|i| i.run.as_ref().ok())),
        )
        .await?;
        let mut added = ItemsAdded::default();
        for item in items {
            let has = query_opt(
                &tx,
                "SELECT 1 FROM batch_items WHERE batch_id = $1 AND idx = $2",
                &[&batch_id, &i64::from(item.index)],
            )
            .await?;
            if has.is_some() {
                added.deduplicated += 1;
                continue;
            }
            let index = item.index as usize;
            match &item.run {
                Ok(new) => {
                    let inserted = insert_or_find(&tx, new, Some(batch_id)).await?;
                    record_batch_item(
                        &tx,
                        batch_id,
                        index,
                        &item.task_id,
                        Ok(&inserted.run.id),
                        now,
                    )
                    .await?;
                    added.inserted.push(inserted);
                }
                Err(e) => {
                    record_batch_item(&tx, batch_id, index, &item.task_id, Err(e), now).await?
                }
            }
            added.accepted += 1;
        }
        exec(
            &tx,
            "UPDATE batches SET updated_at = $2 WHERE id = $1",
            &[&batch_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(added))
    }

    pub async fn seal_batch(
        &self,
        environment_id: &str,
        batch_id: &str,
        now: Millis,
    ) -> Result<Option<Sealing>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some((expected, sealed)) = lock_batch(&tx, environment_id, batch_id).await? else {
            return Ok(None);
        };
        let enqueued: u32 = int(
            &query_one(
                &tx,
                "SELECT count(*) FROM batch_items WHERE batch_id = $1",
                &[&batch_id],
            )
            .await?,
            0,
        )?;
        let seal = !sealed && enqueued >= expected;
        if seal {
            exec(
                &tx,
                "UPDATE batches SET sealed = 1, sealed_at = $2, updated_at = $2 WHERE id = $1",
                &[&batch_id, &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Sealing {
            sealed: sealed || seal,
            enqueued,
            expected,
        }))
    }
}

#[cfg(test)]
#[path = "batches_tests.rs"]
mod tests;
