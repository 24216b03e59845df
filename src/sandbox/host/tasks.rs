//! `kiln:task/tasks`: triggering child runs, and waiting for them to end.
//!
//! A trigger is done once: a replay returns the runs the first execution made, and the results
//! it waited for come from the journal.

use crate::sandbox::bindings::kiln::task::tasks::{
    ChildOutcome as WitChildOutcome, ChildResult as WitChildResult, ChildRun as WitChildRun,
    TriggerItem as WitTriggerItem,
};
use crate::sandbox::bindings::{self, wit};
use crate::sandbox::journal::{self, Digest, Kind};
use crate::sandbox::state::Suspend;
use crate::sandbox::{ChildItem, ChildResult, ChildRun, ChildState, HostState, WaitFor};

impl ChildItem {
    /// Adds the item to a call's digest, field by field (the payload is not copied).
    fn digest(d: Digest, item: &ChildItem) -> Digest {
        let number = |n: Option<u64>| n.map(u64::to_le_bytes);
        let d = d
            .part(item.task_id.as_bytes())
            .part(item.payload.as_bytes())
            .optional(item.idempotency_key.as_deref().map(str::as_bytes));
        let d = item
            .tags
            .iter()
            .fold(d.part(&[item.tags.len() as u8]), |d, t| {
                d.part(t.as_bytes())
            });
        d.optional(number(item.delay_ms).as_ref().map(|b| &b[..]))
            .optional(number(item.ttl_ms).as_ref().map(|b| &b[..]))
            .optional(item.queue.as_deref().map(str::as_bytes))
            .optional(item.concurrency_key.as_deref().map(str::as_bytes))
            .optional(item.machine.as_deref().map(str::as_bytes))
            .optional(
                number(item.max_attempts.map(u64::from))
                    .as_ref()
                    .map(|b| &b[..]),
            )
            .optional(item.metadata.as_deref().map(str::as_bytes))
    }
}

impl bindings::kiln::task::tasks::Host for HostState {
    async fn batch_trigger(
        &mut self,
        items: Vec<WitTriggerItem>,
    ) -> wasmtime::Result<Result<Vec<WitChildRun>, String>> {
        Ok(self.trigger(items, false).await?.map(|runs| {
            runs.into_iter()
                .map(|r| WitChildRun {
                    id: r.id,
                    is_cached: r.is_cached,
                })
                .collect()
        }))
    }

    async fn batch_trigger_and_wait(
        &mut self,
        items: Vec<WitTriggerItem>,
    ) -> wasmtime::Result<Result<Vec<WitChildOutcome>, String>> {
        let runs = match self.trigger(items, true).await? {
            Ok(runs) => runs,
            Err(why) => return Ok(Err(why)),
        };
        let ids: Vec<String> = runs.into_iter().map(|r| r.id).collect();
        let digest = journal::digest(&[b"wait-children", ids.join(",").as_bytes()]);
        let recorded = {
            let mut journal = self.journal();
            journal
                .skip_markers(Kind::ChildrenPending, digest)
                .map_err(wasmtime::Error::new)?;
            journal
                .replayed(Kind::ChildrenResult, digest)
                .map_err(wasmtime::Error::new)?
        };
        let results: Vec<ChildResult> = match recorded {
            Some(value) => serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's child results are corrupt: {e}"))
            })?,
            None => {
                let services = self
                    .services
                    .clone()
                    .ok_or_else(|| wasmtime::Error::msg("child runs need a run"))?;
                let states = services
                    .children_state(ids.clone())
                    .await
                    .map_err(|e| wasmtime::Error::msg(format!("could not read child runs: {e}")))?;
                let mut ended = Vec::with_capacity(states.len());
                for state in states {
                    match state {
                        ChildState::Ended(result) => ended.push(result),
                        ChildState::Going => {
                            self.journal()
                                .record(Kind::ChildrenPending, digest, Vec::new());
                            return Err(wasmtime::Error::new(Suspend {
                                wait: WaitFor::Runs(ids),
                            }));
                        }
                    }
                }
                self.journal().record(
                    Kind::ChildrenResult,
                    digest,
                    serde_json::to_vec(&ended).unwrap_or_default(),
                );
                ended
            }
        };
        Ok(Ok(ids
            .into_iter()
            .zip(results)
            .map(|(id, result)| WitChildOutcome {
                id,
                outcome: match result {
                    ChildResult::Ok(output) => WitChildResult::Ok(output),
                    ChildResult::Error {
                        name,
                        message,
                        stack,
                    } => WitChildResult::Error(wit::ErrorInfo {
                        name,
                        message,
                        stack,
                    }),
                },
            })
            .collect()))
    }
}

impl HostState {
    /// Triggers child runs once: a replay returns the runs the first execution made.
    async fn trigger(
        &mut self,
        items: Vec<WitTriggerItem>,
        wait: bool,
    ) -> wasmtime::Result<Result<Vec<ChildRun>, String>> {
        let items: Vec<ChildItem> = items
            .into_iter()
            .map(|i| ChildItem {
                task_id: i.task_id,
                payload: i.payload,
                idempotency_key: i.options.idempotency_key,
                tags: i.options.tags,
                delay_ms: i.options.delay_ms,
                ttl_ms: i.options.ttl_ms,
                queue: i.options.queue,
                concurrency_key: i.options.concurrency_key,
                machine: i.options.machine,
                max_attempts: i.options.max_attempts,
                metadata: i.options.metadata,
            })
            .collect();
        let digest = items
            .iter()
            .fold(
                Digest::new().part(if wait {
                    b"trigger-and-wait"
                } else {
                    b"trigger"
                }),
                ChildItem::digest,
            )
            .finish();
        let replayed = self
            .journal()
            .replayed(Kind::Trigger, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's trigger entry is corrupt: {e}"))
            });
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("child runs can only be triggered by a run".into()));
        };
        let flushed = self.flush()?;
        let result = services
            .trigger_children(items, wait, flushed.clone(), digest)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("could not trigger child runs: {e}")))?;
        if result.is_err() {
            // Nothing was stored: keep the entries for the next checkpoint, and the refusal too.
            self.unflush(flushed);
            self.journal().record(
                Kind::Trigger,
                digest,
                serde_json::to_vec(&result).unwrap_or_default(),
            );
        }
        Ok(result)
    }
}
