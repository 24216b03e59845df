//! Two-phase batches (Trigger.dev's v3 batch API): a batch is made with its run count (or found
//! by its idempotency key), its items arrive in chunks of a stream, each index once, and it is
//! sealed when the stream ends with every index in. Each item becomes a run as a trigger with its
//! options would (an idempotency key may give an earlier run), in one transaction per chunk.

use super::*;
use crate::model::{Batch, BatchItemError, IdempotencyKeyOptions};
use crate::store::{BatchRefusal, ItemsAdded, NewBatch, NewBatchItem, Sealing};

/// Most runs one batch may have (Trigger.dev's `STREAMING_BATCH_MAX_ITEMS`).
pub const MAX_BATCH_RUNS: u32 = 1_000;

/// The code of an item whose payload is over the limit (Trigger.dev's).
pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";

/// A batch to make.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub run_count: u32,
    pub idempotency_key: Option<String>,
    pub idempotency_key_options: Option<IdempotencyKeyOptions>,
}

/// One item of a batch's stream, parsed, or why it could not become a run.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub index: u32,
    pub task_id: String,
    pub trigger: Result<TriggerItem, BatchItemError>,
}

/// Why a batch's items were refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("Batch {0} not found")]
    NotFound(String),
    #[error("Invalid item at index {index}: {reason}")]
    InvalidItem { index: u32, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What adding one chunk of items did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkAdded {
    pub accepted: u32,
    pub deduplicated: u32,
    /// The batch was sealed already: nothing was added.
    pub sealed: bool,
}

impl Engine {
    /// Makes a batch that will have `run_count` runs; a live batch with the same idempotency key
    /// is returned instead (`true`), and its items are not to be sent again.
    pub async fn create_batch(
        &self,
        env: &Environment,
        request: BatchRequest,
    ) -> Result<(Batch, bool), EngineError> {
        if request.run_count == 0 || request.run_count > MAX_BATCH_RUNS {
            return Err(EngineError::BatchRunCount(request.run_count));
        }
        let now = self.now();
        let expires = now.saturating_add(
            i64::try_from(DEFAULT_IDEMPOTENCY_KEY_TTL.as_millis()).unwrap_or(i64::MAX),
        );
        let new = NewBatch {
            environment_id: env.id.clone(),
            run_count: request.run_count,
            idempotency: request.idempotency_key.map(|k| (k, expires)),
            idempotency_options: request.idempotency_key_options,
            now,
        };
        Ok(self.store.create_batch(new).await?)
    }

    /// A batch of the environment.
    pub async fn batch(&self, env: &Environment, id: &str) -> Result<Option<Batch>, EngineError> {
        Ok(self.store.batch(&env.id, id).await?)
    }

    /// Adds a chunk of a batch's items. A repeated index is counted, not run again; an item whose
    /// payload is too large becomes a failed item; any other invalid item refuses the chunk from
    /// it on (the items before it are kept).
    pub async fn add_batch_items(
        &self,
        env: &Environment,
        batch_id: &str,
        items: Vec<BatchItem>,
    ) -> Result<ChunkAdded, BatchError> {
        let limit = trigger::payload_limit(&env.limits);
        let mut prepared = Vec::with_capacity(items.len());
        let mut refused = None;
        let mut runnable = Vec::new();
        for item in items {
            match item.trigger {
                Ok(trigger) if trigger.payload.len() > limit => prepared.push(NewBatchItem {
                    index: item.index,
                    task_id: item.task_id.clone(),
                    run: Err(too_large(
                        item.index,
                        &item.task_id,
                        trigger.payload.len(),
                        limit,
                    )),
                }),
                Ok(trigger) => runnable.push((item.index, item.task_id, trigger)),
                Err(e) => prepared.push(NewBatchItem {
                    index: item.index,
                    task_id: item.task_id,
                    run: Err(e),
                }),
            }
        }
        // Resolve the runs together; if one is refused, find which and keep those before it.
        let triggers: Vec<TriggerItem> = runnable.iter().map(|(_, _, t)| t.clone()).collect();
        let runs = match self.prepare_runs(&env.id, limit, triggers, None).await {
            Ok(runs) => runs,
            Err(_) if !runnable.is_empty() => {
                let mut runs = Vec::new();
                for (index, _, trigger) in &runnable {
                    match self
                        .prepare_runs(&env.id, limit, vec![trigger.clone()], None)
                        .await
                    {
                        Ok(mut one) => runs.append(&mut one),
                        Err(e) => {
                            refused = Some(BatchError::InvalidItem {
                                index: *index,
                                reason: e.to_string(),
                            });
                            break;
                        }
                    }
                }
                runs
            }
            Err(_) => Vec::new(),
        };
        for ((index, task_id, _), run) in runnable.into_iter().zip(runs) {
            prepared.push(NewBatchItem {
                index,
                task_id,
                run: Ok(run),
            });
        }
        if let Some(BatchError::InvalidItem { index, .. }) = &refused {
            prepared.retain(|i| i.index < *index);
        }
        prepared.sort_by_key(|i| i.index);
        let added = match self
            .store
            .add_batch_items(&env.id, batch_id, prepared, self.now())
            .await
            .map_err(EngineError::from)?
        {
            Ok(added) => added,
            Err(BatchRefusal::NotFound) => return Err(BatchError::NotFound(batch_id.to_owned())),
            Err(BatchRefusal::Sealed) => {
                return Ok(ChunkAdded {
                    sealed: true,
                    ..ChunkAdded::default()
                });
            }
        };
        let ItemsAdded {
            accepted,
            deduplicated,
            inserted,
        } = added;
        self.inserted(&inserted);
        match refused {
            Some(e) => Err(e),
            None => Ok(ChunkAdded {
                accepted,
                deduplicated,
                sealed: false,
            }),
        }
    }

    /// The stream of items ended: seals the batch if every index has arrived.
    pub async fn seal_batch(
        &self,
        env: &Environment,
        batch_id: &str,
    ) -> Result<Sealing, BatchError> {
        self.store
            .seal_batch(&env.id, batch_id, self.now())
            .await
            .map_err(EngineError::from)?
            .ok_or_else(|| BatchError::NotFound(batch_id.to_owned()))
    }
}

/// The failed item of a payload over the limit.
pub fn too_large(index: u32, task_id: &str, size: usize, limit: usize) -> BatchItemError {
    BatchItemError {
        index,
        task_id: task_id.to_owned(),
        message: format!("the payload is {size} bytes; the limit is {limit} bytes"),
        code: Some(PAYLOAD_TOO_LARGE.to_owned()),
    }
}
