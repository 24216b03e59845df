//! Triggering: validating a batch of triggers, resolving each run's options against its task's
//! definition and the host's defaults (trigger > task > host), inserting them in one transaction,
//! and arming the timers and lanes of what was inserted.

use super::*;

/// Most tags on one run (Trigger.dev's `MAX_TAGS_PER_RUN`).
pub const MAX_TAGS: usize = 10;

/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;

/// Most items in one batch trigger.
pub const MAX_BATCH_ITEMS: usize = 1_000;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 2_048;

/// Largest payload a trigger may carry (Trigger.dev's limit).
pub const MAX_PAYLOAD_BYTES: usize = 3 << 20;

/// Longest concurrency key.
pub const MAX_CONCURRENCY_KEY_LEN: usize = 1_024;

/// Longest queue name.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// Longest task id (as deployed tasks are checked).
pub const MAX_TASK_ID_LEN: usize = 128;

/// A trigger option outside the limits, with the option's name (Trigger.dev's spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOption {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidOption {
    InvalidOption {
        field,
        message: message.into(),
    }
}

/// Whether `id` can name a task: 1–128 characters of letters, digits, `-`, `_` and `.`.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TASK_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// At most [`MAX_TAGS`] tags of 1 to [`MAX_TAG_LEN`] characters.
pub fn check_tags(tags: &[String]) -> Result<(), InvalidOption> {
    if let Some(tag) = tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > MAX_TAG_LEN)
    {
        return Err(invalid(
            "tags",
            format!(
                "each tag must be 1 to {MAX_TAG_LEN} characters; one has {}",
                tag.chars().count()
            ),
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            "tags",
            format!("at most {MAX_TAGS} tags per run; got {}", tags.len()),
        ));
    }
    Ok(())
}

/// 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] characters.
pub fn check_idempotency_key(key: &str) -> Result<(), InvalidOption> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid(
            "idempotencyKey",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    Ok(())
}

/// 1–128 characters of letters, digits, `-`, `_`, `.` and `/`.
pub fn check_queue_name(name: &str) -> Result<(), InvalidOption> {
    let ok = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !ok {
        return Err(invalid(
            "queue",
            format!(
                "queue names are 1–{MAX_QUEUE_NAME_LEN} characters of letters, digits, `-`, `_`, `.` and `/`"
            ),
        ));
    }
    Ok(())
}

/// 1 to [`MAX_CONCURRENCY_KEY_LEN`] bytes.
pub fn check_concurrency_key(key: &str) -> Result<(), InvalidOption> {
    if key.is_empty() || key.len() > MAX_CONCURRENCY_KEY_LEN {
        return Err(invalid(
            "concurrencyKey",
            format!("must be 1 to {MAX_CONCURRENCY_KEY_LEN} characters"),
        ));
    }
    Ok(())
}

/// A JSON object of at most [`MAX_METADATA_BYTES`] bytes.
pub fn check_metadata(text: &str) -> Result<(), InvalidOption> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(invalid(
            "metadata",
            format!(
                "is {} bytes; the limit is {MAX_METADATA_BYTES} bytes",
                text.len()
            ),
        ));
    }
    if !matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    ) {
        return Err(invalid("metadata", "must be a JSON object"));
    }
    Ok(())
}

/// The limits every trigger is held to, whichever door it comes through: the API, a batch, a
/// run's child trigger or a schedule's fire.
pub fn check_trigger(task_id: &str, o: &TriggerOptions) -> Result<(), InvalidOption> {
    if !valid_task_id(task_id) {
        return Err(invalid(
            "taskIdentifier",
            format!(
                "`{task_id}` is not a task id (1–{MAX_TASK_ID_LEN} characters of letters, digits, `-`, `_` and `.`)"
            ),
        ));
    }
    check_tags(&o.tags)?;
    if let Some(key) = &o.idempotency_key {
        check_idempotency_key(key)?;
    }
    if let Some(queue) = &o.queue {
        check_queue_name(queue)?;
    }
    if let Some(key) = &o.concurrency_key {
        check_concurrency_key(key)?;
    }
    if let Some(metadata) = &o.metadata {
        check_metadata(metadata)?;
    }
    if let Some(n) = o.max_attempts
        && !(1..=MAX_ATTEMPTS_CAP).contains(&n)
    {
        return Err(invalid(
            "maxAttempts",
            format!("must be a whole number from 1 to {MAX_ATTEMPTS_CAP}"),
        ));
    }
    Ok(())
}

/// One run to trigger.
#[derive(Debug, Clone)]
pub struct TriggerItem {
    pub task_id: String,
    /// JSON text.
    pub payload: String,
    pub options: TriggerOptions,
}

/// The largest payload an environment takes: its own limit, within the host's.
pub(super) fn payload_limit(limits: &crate::model::EnvironmentLimits) -> usize {
    limits.max_payload_bytes.map_or(MAX_PAYLOAD_BYTES, |m| {
        usize::try_from(m)
            .unwrap_or(usize::MAX)
            .min(MAX_PAYLOAD_BYTES)
    })
}

impl Engine {
    /// Triggers one run. A repeat of a live idempotency key returns the earlier run, `cached`.
    pub async fn trigger(
        &self,
        env: &Environment,
        item: TriggerItem,
    ) -> Result<Inserted, EngineError> {
        let mut inserted = self.trigger_many(env, vec![item], false).await?;
        inserted.pop().ok_or(EngineError::BatchSize(0))
    }

    /// Triggers several runs in one transaction (`batch`: as one batch, with a batch id on each).
    pub async fn trigger_many(
        &self,
        env: &Environment,
        items: Vec<TriggerItem>,
        batch: bool,
    ) -> Result<Vec<Inserted>, EngineError> {
        let runs = self
            .prepare_runs(&env.id, payload_limit(&env.limits), items, None)
            .await?;
        let batch_id = batch.then(|| crate::model::new_id("batch"));
        // The dispatcher may claim the runs while their insert is on its way to disk (its claim
        // commits with the insert or after it); the trigger is answered once the insert is durable.
        let staged = self.store.insert_runs_staged(runs, batch_id).await?;
        self.inserted(&staged.value);
        staged.durable.wait().await?;
        Ok(staged.value)
    }

    /// Arms the timers and activates the lanes of newly inserted runs.
    pub(super) fn inserted(&self, inserted: &[Inserted]) {
        for i in inserted.iter().filter(|i| !i.cached) {
            self.arm_timer(
                i.run
                    .delay_until
                    .filter(|_| i.run.status == RunStatus::Delayed),
            );
            self.arm_timer(i.run.expires_at);
        }
        self.activate(
            inserted
                .iter()
                .filter(|i| !i.cached && i.run.status == RunStatus::Queued)
                .map(|i| i.run.lane()),
        );
    }

    /// Resolves triggers into runs to insert (against the latest version, or the one each locks
    /// to); `parent` links child runs into their tree.
    pub(super) async fn prepare_runs(
        &self,
        env_id: &str,
        max_payload: usize,
        items: Vec<TriggerItem>,
        parent: Option<ParentLink>,
    ) -> Result<Vec<NewRun>, EngineError> {
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            return Err(EngineError::BatchSize(items.len()));
        }
        for (index, item) in items.iter().enumerate() {
            check_trigger(&item.task_id, &item.options).map_err(|e| {
                EngineError::InvalidTrigger {
                    item: (items.len() > 1).then_some(index),
                    task: item.task_id.clone(),
                    field: e.field,
                    message: e.message,
                }
            })?;
        }
        if let Some(item) = items.iter().find(|i| i.payload.len() > max_payload) {
            return Err(EngineError::PayloadTooLarge {
                size: Some(item.payload.len()),
                limit: max_payload,
            });
        }
        let now = self.now();
        let latest = self.store.latest_deployment(env_id).await?;
        let mut locked: HashMap<String, Deployment> = HashMap::new();
        let mut runs = Vec::with_capacity(items.len());
        for item in items {
            let deployment = match &item.options.lock_to_version {
                Some(version) => {
                    if !locked.contains_key(version) {
                        let d = self
                            .store
                            .deployment_by_version(env_id, version)
                            .await?
                            .ok_or_else(|| EngineError::UnknownVersion(version.clone()))?;
                        locked.insert(version.clone(), d);
                    }
                    let d = &locked[version];
                    if !d.tasks().any(|t| t.id == item.task_id) {
                        return Err(EngineError::TaskNotInVersion {
                            task: item.task_id,
                            version: version.clone(),
                        });
                    }
                    Some(d)
                }
                None => latest.as_ref(),
            };
            let mut run = self.new_run(env_id, item, deployment, now);
            run.parent = parent.clone();
            runs.push(run);
        }
        Ok(runs)
    }

    /// Resolves a trigger's options against its task's definition and the host defaults
    /// (trigger > task > host).
    pub(super) fn new_run(
        &self,
        env_id: &str,
        item: TriggerItem,
        deployment: Option<&Deployment>,
        now: Millis,
    ) -> NewRun {
        let o = item.options;
        let task = deployment.and_then(|d| d.tasks().find(|t| t.id == item.task_id));
        let delay_until = o
            .delay
            .map(|d| match d {
                Delay::For(d) => {
                    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }
                Delay::Until(at) => at,
            })
            .filter(|at| *at > now);
        let status = if delay_until.is_some() {
            RunStatus::Delayed
        } else if task.is_none() {
            RunStatus::PendingVersion
        } else {
            RunStatus::Queued
        };
        let mut retry = task
            .map(|t| t.retry.resolve(self.config.default_retry))
            .unwrap_or(self.config.default_retry);
        if let Some(n) = o.max_attempts {
            retry.max_attempts = n;
        }
        let ttl = match o.ttl {
            Some(ttl) if ttl.is_zero() => None,
            Some(ttl) => Some(ttl),
            None => task.and_then(|t| t.ttl).or(self.config.default_ttl),
        };
        let queue_timestamp = delay_until.unwrap_or(now);
        let key_ttl = o.idempotency_key_ttl.unwrap_or(DEFAULT_IDEMPOTENCY_KEY_TTL);
        NewRun {
            environment_id: env_id.to_owned(),
            status,
            payload: item.payload,
            queue: o
                .queue
                .or_else(|| task.and_then(|t| t.queue.as_ref()).map(|q| q.name.clone()))
                .unwrap_or_else(|| format!("{TASK_QUEUE_PREFIX}{}", item.task_id)),
            task_id: item.task_id,
            machine: o
                .machine
                .or_else(|| task.and_then(|t| t.machine))
                .unwrap_or(self.config.default_machine),
            retry,
            oom_machine: task.and_then(|t| t.retry.out_of_memory_machine),
            queue_timestamp,
            priority_ms: o.priority_ms,
            delay_until,
            ttl,
            expires_at: ttl.map(|t| {
                queue_timestamp.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
            }),
            idempotency: o.idempotency_key.map(|k| {
                (
                    k,
                    now.saturating_add(i64::try_from(key_ttl.as_millis()).unwrap_or(i64::MAX)),
                )
            }),
            idempotency_options: o.idempotency_key_options,
            tags: o.tags,
            metadata: o.metadata,
            max_duration: o.max_duration.or_else(|| task.and_then(|t| t.max_duration)),
            concurrency_key: o.concurrency_key,
            lock_to_version: o.lock_to_version,
            parent: None,
            now,
        }
    }
}
