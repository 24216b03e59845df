//! Two-phase batches (Trigger.dev's v3 batch API): made with their run count, items added each
//! index once (a repeated index is deduplicated, never run twice), sealed once every index has
//! arrived, and read with their runs by index and their failed items.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::lifecycle::FINAL;
use super::runs::{insert_or_find, record_batch_item};
use crate::model::*;
use crate::store::*;

fn load_batch(c: &Connection, environment_id: &str, id: &str) -> Result<Option<Batch>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT id, environment_id, run_count, sealed, sealed_at, created_at, updated_at, \
               idempotency_key, idempotency_key_user, idempotency_key_scope \
             FROM batches WHERE id = ?1 AND environment_id = ?2",
        )?
        .query_row(params![id, environment_id], |r| {
            let user: Option<String> = r.get(8)?;
            let scope: Option<String> = r.get(9)?;
            Ok(Batch {
                id: r.get(0)?,
                environment_id: r.get(1)?,
                run_count: r.get(2)?,
                sealed: r.get(3)?,
                sealed_at: r.get(4)?,
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
                idempotency_key: r.get(7)?,
                idempotency_key_options: match (user, scope) {
                    (Some(key), Some(scope)) => IdempotencyScope::parse(&scope)
                        .map(|scope| IdempotencyKeyOptions { key, scope }),
                    _ => None,
                },
                runs: Vec::new(),
                errors: Vec::new(),
                unfinished: 0,
            })
        })
        .optional()?;
    let Some(mut batch) = row else {
        return Ok(None);
    };
    let mut items = c.prepare_cached(
        "SELECT idx, task_id, run_id, error, error_code FROM batch_items WHERE batch_id = ?1 ORDER BY idx",
    )?;
    let rows = items.query_map([id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        match row? {
            (_, _, Some(run), _, _) => batch.runs.push(run),
            (index, task_id, None, error, code) => batch.errors.push(BatchItemError {
                index,
                task_id,
                message: error.unwrap_or_default(),
                code,
            }),
        }
    }
    batch.unfinished = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM batch_items i JOIN runs r ON r.id = i.run_id \
             WHERE i.batch_id = ?1 AND r.status NOT IN {FINAL}"
        ))?
        .query_row([id], |r| r.get(0))?;
    Ok(Some(batch))
}

impl SqliteStore {
    pub async fn create_batch(&self, new: NewBatch) -> Result<(Batch, bool), StoreError> {
        self.write(move |c| {
            if let Some((key, _)) = &new.idempotency {
                let found: Option<(String, Option<Millis>)> = c
                    .prepare_cached(
                        "SELECT id, idempotency_expires_at FROM batches \
                         WHERE environment_id = ?1 AND idempotency_key = ?2",
                    )?
                    .query_row(params![new.environment_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                match found {
                    Some((id, expires)) if expires.is_none_or(|at| at > new.now) => {
                        let batch = load_batch(c, &new.environment_id, &id)?
                            .ok_or(StoreError::NotFound("batch"))?;
                        return Ok((batch, true));
                    }
                    // An expired key is released for the new batch.
                    Some((id, _)) => {
                        c.execute(
                            "UPDATE batches SET idempotency_key = NULL WHERE id = ?1",
                            [id],
                        )?;
                    }
                    None => {}
                }
            }
            let id = new_id("batch");
            c.execute(
                "INSERT INTO batches (id, environment_id, run_count, created_at, updated_at, sealed, \
                   idempotency_key, idempotency_key_user, idempotency_key_scope, idempotency_expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    new.environment_id,
                    new.run_count,
                    new.now,
                    new.idempotency.as_ref().map(|(k, _)| k),
                    new.idempotency_options.as_ref().map(|o| &o.key),
                    new.idempotency_options.as_ref().map(|o| o.scope.as_str()),
                    new.idempotency.as_ref().map(|(_, at)| at),
                ],
            )?;
            let batch =
                load_batch(c, &new.environment_id, &id)?.ok_or(StoreError::NotFound("batch"))?;
            Ok((batch, false))
        })
        .await
    }

    pub async fn batch(&self, environment_id: &str, id: &str) -> Result<Option<Batch>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| load_batch(c, &environment_id, &id))
            .await
    }

    pub async fn add_batch_items(
        &self,
        environment_id: &str,
        batch_id: &str,
        items: Vec<NewBatchItem>,
        now: Millis,
    ) -> Result<Result<ItemsAdded, BatchRefusal>, StoreError> {
        let (environment_id, batch_id) = (environment_id.to_owned(), batch_id.to_owned());
        self.write(move |c| {
            let sealed: Option<bool> = c
                .prepare_cached("SELECT sealed FROM batches WHERE id = ?1 AND environment_id = ?2")?
                .query_row(params![batch_id, environment_id], |r| r.get(0))
                .optional()?;
            match sealed {
                None => return Ok(Err(BatchRefusal::NotFound)),
                Some(true) => return Ok(Err(BatchRefusal::Sealed)),
                Some(false) => {}
            }
            let mut added = ItemsAdded::default();
            let mut has =
                c.prepare_cached("SELECT 1 FROM batch_items WHERE batch_id = ?1 AND idx = ?2")?;
            for item in items {
                if has.exists(params![batch_id, item.index])? {
                    added.deduplicated += 1;
                    continue;
                }
                let index = item.index as usize;
                match &item.run {
                    Ok(new) => {
                        let inserted = insert_or_find(c, new, Some(&batch_id))?;
                        record_batch_item(
                            c,
                            &batch_id,
                            index,
                            &item.task_id,
                            Ok(&inserted.run.id),
                            now,
                        )?;
                        added.inserted.push(inserted);
                    }
                    Err(e) => record_batch_item(c, &batch_id, index, &item.task_id, Err(e), now)?,
                }
                added.accepted += 1;
            }
            c.execute(
                "UPDATE batches SET updated_at = ?2 WHERE id = ?1",
                params![batch_id, now],
            )?;
            Ok(Ok(added))
        })
        .await
    }

    pub async fn seal_batch(
        &self,
        environment_id: &str,
        batch_id: &str,
        now: Millis,
    ) -> Result<Option<Sealing>, StoreError> {
        let (environment_id, batch_id) = (environment_id.to_owned(), batch_id.to_owned());
        self.write(move |c| {
            let found: Option<(u32, bool)> = c
                .prepare_cached(
                    "SELECT run_count, sealed FROM batches WHERE id = ?1 AND environment_id = ?2",
                )?
                .query_row(params![batch_id, environment_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((expected, sealed)) = found else {
                return Ok(None);
            };
            let enqueued: u32 = c
                .prepare_cached("SELECT count(*) FROM batch_items WHERE batch_id = ?1")?
                .query_row([&batch_id], |r| r.get(0))?;
            let seal = !sealed && enqueued >= expected;
            if seal {
                c.execute(
                    "UPDATE batches SET sealed = 1, sealed_at = ?2, updated_at = ?2 WHERE id = ?1",
                    params![batch_id, now],
                )?;
            }
            Ok(Some(Sealing {
                sealed: sealed || seal,
                enqueued,
                expected,
            }))
        })
        .await
    }
}
