//! `kiln:task/tasks`: triggering child runs, and waiting for them to end.
//!
//! A trigger is done once: a replay returns the runs the first execution made, and the results
//! it waited for come from the journal.

use crate::sandbox::bindings::kiln::task::tasks::{
    ChildOutcome as WitChildOutcome, ChildResult as WitChildResult, ChildRun as WitChildRun,
    TriggerItem as WitTriggerItem,
};
use crate::sandbox::bindings::{self, wit};
use crate::sandbox::classify::host_failure;
use crate::sandbox::journal::{Call, Format, JournalValue, Kind, calls};
use crate::sandbox::state::Suspend;
use crate::sandbox::{ChildItem, ChildResult, ChildRun, ChildState, HostState, WaitFor};

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
        let (recorded, call) = {
            let call = calls::wait_children(&ids);
            let mut journal = self.journal();
            journal
                .skip_markers(Kind::ChildrenPending, &call)
                .map_err(wasmtime::Error::new)?;
            let recorded = journal
                .replayed(Kind::ChildrenResult, &call)
                .map_err(wasmtime::Error::new)?;
            (recorded, calls::digested(call.digest(Format::CURRENT)))
        };
        let results: Vec<ChildResult> = match recorded {
            Some(entry) => Vec::<ChildResult>::decode(entry.format, &entry.value)
                .ok_or_else(|| host_failure("the journal's child results are corrupt"))?,
            None => {
                let services = self
                    .services
                    .clone()
                    .ok_or_else(|| wasmtime::Error::msg("child runs need a run"))?;
                let states = services
                    .children_state(ids.clone())
                    .await
                    .map_err(|e| host_failure(format!("could not read child runs: {e}")))?;
                let mut ended = Vec::with_capacity(states.len());
                for state in states {
                    match state {
                        ChildState::Ended(result) => ended.push(result),
                        ChildState::Going => {
                            self.journal()
                                .record(Kind::ChildrenPending, &call, Vec::new());
                            return Err(wasmtime::Error::new(Suspend {
                                wait: WaitFor::Runs(ids),
                            }));
                        }
                    }
                }
                self.journal()
                    .record(Kind::ChildrenResult, &call, ended.encode());
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
        let (replayed, digest) = {
            let call = calls::trigger(&items, wait);
            let replayed = self
                .journal()
                .replayed(Kind::Trigger, &call)
                .map_err(wasmtime::Error::new)?;
            (replayed, call.digest(Format::CURRENT))
        };
        if let Some(entry) = replayed {
            return Result::<Vec<ChildRun>, String>::decode(entry.format, &entry.value)
                .ok_or_else(|| host_failure("the journal's trigger entry is corrupt"));
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("child runs can only be triggered by a run".into()));
        };
        let flushed = self.flush()?;
        let result = match services
            .trigger_children(items, wait, flushed.clone(), digest)
            .await
        {
            Ok(result) => result,
            Err(e) => {
                // Nothing was stored: what was flushed goes back, to be stored at the end.
                self.unflush(flushed);
                return Err(host_failure(format!("could not trigger child runs: {e}")));
            }
        };
        if result.is_err() {
            // Nothing was stored: keep the entries for the next checkpoint, and the refusal too.
            self.unflush(flushed);
            self.journal()
                .record(Kind::Trigger, &calls::digested(digest), result.encode());
        }
        Ok(result)
    }
}
