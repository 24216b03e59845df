//! `RunHost`: what an executing run asks of the host — wait tokens and child runs — carried out
//! by the engine on behalf of one attempt.
//!
//! Calls with effects a replay must not repeat (making a token, triggering children) commit the
//! effect together with the journal the attempt recorded before it and the call's own entry, in
//! one store transaction; the run is then marked as having a journal, so a host that dies right
//! after continues the attempt from it and finds the same token or children.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Engine, EngineError, TriggerItem};
use crate::metadata::MetadataOp;
use crate::model::{Delay, Machine, RunStatus, TokenStatus, TriggerOptions, WaitToken};
use crate::sandbox::journal::{self, Entry, JournalValue, Kind};
use crate::sandbox::{
    ChildItem, ChildResult, ChildRun, ChildState, Flushed, MetadataChange, MetadataTarget,
    RunServices, TokenCreated, TokenRequest, TokenState,
};
use crate::store::{Durability, Inserted, JournalWith, ParentLink, StoreError};

/// What an executing run asks of the host, on behalf of one attempt.
pub(super) struct RunHost {
    pub engine: Arc<Engine>,
    pub run_id: String,
    pub environment_id: String,
    pub attempt: u32,
    /// The version the run executes on: children that are waited for run on it too.
    pub version: String,
    /// Where the run hangs in its tree (children hang one level below).
    pub root_run_id: Option<String>,
    pub parent_run_id: Option<String>,
    pub depth: u32,
    /// When the claim that started the attempt is durable.
    pub started: Durability,
    /// The claim that started the attempt (see `AttemptStart::claim`): effects carry it.
    pub claim: Option<String>,
}

impl RunHost {
    /// Whose journal an effect commits with: the run, its environment, the attempt and its
    /// claim.
    fn journal_of(&self) -> JournalOf {
        (
            self.run_id.clone(),
            self.environment_id.clone(),
            self.attempt,
            self.claim.clone(),
        )
    }

    /// The run whose metadata `target` names (a run without a parent is its own parent and root).
    fn metadata_run(&self, target: MetadataTarget) -> String {
        match target {
            MetadataTarget::Current => None,
            MetadataTarget::Parent => self.parent_run_id.clone(),
            MetadataTarget::Root => self.root_run_id.clone(),
        }
        .unwrap_or_else(|| self.run_id.clone())
    }
}

/// A guest's metadata change as the metadata module's operation.
fn metadata_op(change: MetadataChange) -> Result<MetadataOp, String> {
    let value = |text: String| {
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| format!("a metadata value is not JSON: {e}"))
    };
    Ok(match change {
        MetadataChange::Set(key, v) => MetadataOp::Set {
            key,
            value: value(v)?,
        },
        MetadataChange::Delete(key) => MetadataOp::Delete { key },
        MetadataChange::Append(key, v) => MetadataOp::Append {
            key,
            value: value(v)?,
        },
        MetadataChange::Remove(key, v) => MetadataOp::Remove {
            key,
            value: value(v)?,
        },
        MetadataChange::Increment(key, by) => MetadataOp::Increment { key, by },
        MetadataChange::Replace(v) => match value(v)? {
            serde_json::Value::Object(value) => MetadataOp::Update { value },
            _ => return Err("replace: metadata must be a JSON object".into()),
        },
    })
}

/// Deepest nesting of child runs (Trigger.dev refuses deeper trees too).
const MAX_DEPTH: u32 = 25;

/// A guest's child item as a trigger. Its options are held to the limits of every trigger when
/// the engine prepares the runs (`check_trigger`); here only what the guest's form adds.
fn trigger_item(item: ChildItem, version: Option<&str>) -> Result<TriggerItem, String> {
    let at = |field: &str| format!("task `{}`: {field}", item.task_id);
    if serde_json::from_str::<serde::de::IgnoredAny>(&item.payload).is_err() {
        return Err(at("the payload is not valid JSON"));
    }
    let machine = match &item.machine {
        None => None,
        Some(m) => Some(
            Machine::parse(m)
                .ok_or_else(|| at(&format!("machine `{m}` is not a machine preset")))?,
        ),
    };
    let ms = |v: u64| std::time::Duration::from_millis(v);
    Ok(TriggerItem {
        task_id: item.task_id,
        payload: item.payload,
        options: TriggerOptions {
            idempotency_key: item.idempotency_key,
            tags: item.tags,
            delay: item.delay_ms.map(|d| Delay::For(ms(d))),
            // A zero TTL opts out, as over the API.
            ttl: item.ttl_ms.map(ms),
            queue: item.queue,
            concurrency_key: item.concurrency_key,
            machine,
            max_attempts: item.max_attempts,
            metadata: item.metadata,
            lock_to_version: version.map(str::to_owned),
            ..TriggerOptions::default()
        },
    })
}

fn child_state(run: Option<crate::model::Run>, id: &str) -> ChildState {
    let Some(run) = run else {
        return ChildState::Ended(ChildResult::Error {
            name: "Error".into(),
            message: format!("child run `{id}` not found"),
            stack: None,
        });
    };
    if !run.status.is_final() {
        return ChildState::Going;
    }
    if run.status == RunStatus::Completed {
        return ChildState::Ended(ChildResult::Ok(run.output.unwrap_or_else(|| "null".into())));
    }
    let error = run.error.unwrap_or_else(|| {
        crate::model::RunError::coded(
            "TASK_RUN_FAILED",
            format!("the child run ended {}", run.status),
        )
    });
    ChildState::Ended(ChildResult::Error {
        name: error.name,
        message: error.message,
        stack: error.stack,
    })
}

/// Waits until the attempt's start is durable: an effect of an attempt whose start was lost
/// must not be stored either (it would belong to no attempt).
async fn after_start(started: Durability) -> Result<(), String> {
    started.wait().await.map_err(|e| {
        format!("the attempt's start could not be stored, so it may not reach out: {e}")
    })
}

impl RunServices for RunHost {
    fn start_durable(&self) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(after_start(self.started.clone()))
    }

    fn create_token(
        &self,
        request: TokenRequest,
        flushed: Flushed,
        digest: u64,
    ) -> BoxFuture<'static, Result<TokenCreated, String>> {
        let engine = self.engine.clone();
        let new = engine.new_token(&self.environment_id, &request);
        let journal_of = self.journal_of();
        let started = self.started.clone();
        Box::pin(async move {
            after_start(started).await?;
            let entries_engine = engine.clone();
            let answer = move |(token, cached): &(WaitToken, bool)| {
                Ok::<_, String>(TokenCreated {
                    id: token.id.clone(),
                    url: entries_engine.token_url(&token.id),
                    is_cached: *cached,
                })
            };
            // Like a start, a checkpoint or an end, the effect waits out a full disk.
            let stored = engine
                .until_stored(&journal_of.0, || {
                    let journal = effect_journal(
                        journal_of.clone(),
                        flushed.clone(),
                        Kind::CreateToken,
                        digest,
                        answer.clone(),
                    );
                    engine.store.create_token(new.clone(), Some(journal))
                })
                .await;
            let (token, cached) = match stored {
                Ok(made) => made,
                Err(StoreError::Conflict) => {
                    return Err("the run was canceled while it made a wait token".into());
                }
                Err(e) => return Err(e.to_string()),
            };
            engine.arm_timer(token.timeout_at);
            engine.wake.notify_one();
            Ok(TokenCreated {
                url: engine.token_url(&token.id),
                id: token.id,
                is_cached: cached,
            })
        })
    }

    fn trigger_children(
        &self,
        items: Vec<ChildItem>,
        wait: bool,
        flushed: Flushed,
        digest: u64,
    ) -> BoxFuture<'static, Result<Result<Vec<ChildRun>, String>, String>> {
        let engine = self.engine.clone();
        let (journal_of, env_id) = (self.journal_of(), self.environment_id.clone());
        let version = wait.then(|| self.version.clone());
        let link = ParentLink {
            parent_run_id: self.run_id.clone(),
            root_run_id: self
                .root_run_id
                .clone()
                .unwrap_or_else(|| self.run_id.clone()),
            depth: self.depth + 1,
        };
        let started = self.started.clone();
        Box::pin(async move {
            after_start(started).await?;
            if link.depth > MAX_DEPTH {
                return Ok(Err(format!("child runs may nest at most {MAX_DEPTH} deep")));
            }
            let mut triggers = Vec::with_capacity(items.len());
            for item in items {
                match trigger_item(item, version.as_deref()) {
                    Ok(t) => triggers.push(t),
                    Err(why) => return Ok(Err(why)),
                }
            }
            let batch = triggers.len() > 1;
            // Children take their environment's payload limit, as triggers over the API do.
            let limits = match engine.store.environment_limits(&env_id).await {
                Ok(limits) => limits,
                Err(e) => return Err(e.to_string()),
            };
            let max_payload = super::trigger::payload_limit(&limits);
            let runs = match engine
                .prepare_runs(&env_id, max_payload, triggers, Some(link))
                .await
            {
                Ok(runs) => runs,
                Err(EngineError::Store(e)) => return Err(e.to_string()),
                Err(refused) => return Ok(Err(refused.to_string())),
            };
            let batch_id = batch.then(|| crate::model::new_id("batch"));
            let stored = engine
                .until_stored(&journal_of.0, || {
                    let journal = effect_journal(
                        journal_of.clone(),
                        flushed.clone(),
                        Kind::Trigger,
                        digest,
                        |inserted: &[Inserted]| Ok::<_, String>(children(inserted)),
                    );
                    engine.store.insert_child_runs(
                        runs.clone(),
                        batch_id.clone(),
                        journal,
                        version.is_some(),
                    )
                })
                .await;
            let inserted = match stored {
                Ok(inserted) => inserted,
                Err(StoreError::Refused(why)) => return Ok(Err(why)),
                Err(StoreError::Conflict) => {
                    return Err("the run was canceled while it triggered child runs".into());
                }
                Err(e) => return Err(e.to_string()),
            };
            engine.inserted(&inserted);
            Ok(Ok(children(&inserted)))
        })
    }

    fn children_state(
        &self,
        ids: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<ChildState>, String>> {
        let engine = self.engine.clone();
        let env_id = self.environment_id.clone();
        Box::pin(async move {
            let runs = engine
                .store
                .runs_by_id(&env_id, ids.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(runs
                .into_iter()
                .zip(&ids)
                .map(|(run, id)| child_state(run, id))
                .collect())
        })
    }

    fn metadata(&self, target: MetadataTarget) -> BoxFuture<'static, Result<String, String>> {
        let engine = self.engine.clone();
        let (env_id, run_id) = (self.environment_id.clone(), self.metadata_run(target));
        Box::pin(async move {
            let run = engine
                .store
                .run(&env_id, &run_id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(run
                .and_then(|r| r.metadata)
                .unwrap_or_else(|| "{}".to_owned()))
        })
    }

    fn update_metadata(
        &self,
        target: MetadataTarget,
        changes: Vec<MetadataChange>,
        flushed: Flushed,
        digest: u64,
    ) -> BoxFuture<'static, Result<Result<String, String>, String>> {
        let engine = self.engine.clone();
        let target_run = self.metadata_run(target);
        let (journal_of, env_id) = (self.journal_of(), self.environment_id.clone());
        let started = self.started.clone();
        Box::pin(async move {
            after_start(started).await?;
            let ops = match changes
                .into_iter()
                .map(metadata_op)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(ops) => ops,
                Err(why) => return Ok(Err(why)),
            };
            let now = engine.now();
            let stored = engine
                .until_stored(&journal_of.0, || {
                    let journal = effect_journal(
                        journal_of.clone(),
                        flushed.clone(),
                        Kind::MetadataWrite,
                        digest,
                        |next: &str| Ok::<_, String>(next.to_owned()),
                    );
                    engine.store.change_metadata(
                        &env_id,
                        &target_run,
                        now,
                        ops.clone(),
                        Some(journal),
                    )
                })
                .await;
            match stored {
                Ok(result) => Ok(result.map_err(|e| e.to_string())),
                Err(StoreError::Conflict) => {
                    Err("the run was canceled while it changed metadata".into())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn token_state(&self, id: String) -> BoxFuture<'static, Result<TokenState, String>> {
        let engine = self.engine.clone();
        let environment_id = self.environment_id.clone();
        Box::pin(async move {
            let token = engine
                .store
                .token(&environment_id, &id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match token {
                None => TokenState::NotFound,
                Some(t) => match t.status {
                    TokenStatus::Waiting => TokenState::Waiting,
                    TokenStatus::Completed => {
                        TokenState::Completed(t.output.unwrap_or_else(|| "null".into()))
                    }
                    TokenStatus::TimedOut => TokenState::TimedOut(
                        t.output
                            .and_then(|o| {
                                serde_json::from_str::<serde_json::Value>(&o).ok()?["message"]
                                    .as_str()
                                    .map(str::to_owned)
                            })
                            .unwrap_or_else(|| "the wait token timed out".into()),
                    ),
                },
            })
        })
    }
}

/// The run, environment, attempt and claim an effect's journal belongs to.
type JournalOf = (String, String, u32, Option<String>);

/// The journal segment an effect commits: what the attempt flushed, then the call's own entry,
/// whose value (what a replay answers) is `answer(effect)` in the journal's encoding.
fn effect_journal<T: ?Sized, A: JournalValue>(
    (run_id, environment_id, attempt, claim): JournalOf,
    flushed: Flushed,
    kind: Kind,
    digest: u64,
    answer: impl FnOnce(&T) -> A + Send + 'static,
) -> JournalWith<T> {
    let Flushed { mut entries, logs } = flushed;
    JournalWith {
        run_id,
        environment_id,
        attempt,
        claim,
        logs,
        entries: Box::new(move |effect: &T| {
            entries.push(Entry::new(kind, digest, answer(effect).encode()));
            journal::encode(&entries)
        }),
    }
}

fn children(inserted: &[Inserted]) -> Vec<ChildRun> {
    inserted
        .iter()
        .map(|i| ChildRun {
            id: i.run.id.clone(),
            is_cached: i.cached,
        })
        .collect()
}
