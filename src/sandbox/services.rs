//! What an executing run may ask of the host besides the journal — wait tokens, child runs,
//! metadata — as the [`RunServices`] trait the engine implements, with the values that cross it.
//!
//! The sandbox only describes these requests; it never stores or schedules anything itself.

use super::journal::Entry;
use crate::model::LogLine;

/// A wait token to make, as the guest asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub timeout_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    pub idempotency_key_ttl_ms: Option<u64>,
    pub tags: Vec<String>,
}

/// A wait token as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCreated {
    pub id: String,
    pub url: String,
    pub is_cached: bool,
}

/// Where a token the guest waits for stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    Waiting,
    /// Completed with this JSON data.
    Completed(String),
    /// Timed out; the message says when.
    TimedOut(String),
    /// No token of the run's environment has this id.
    NotFound,
}

/// What an attempt recorded since its last checkpoint, stored with the next effect: journal
/// entries and log lines (so a replay, which drops log lines, loses none).
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    pub entries: Vec<Entry>,
    pub logs: Vec<LogLine>,
}

/// What an executing run may ask of the host, besides the journal. Implemented by the engine;
/// calls that have effects commit them together with the journal recorded so far.
pub trait RunServices: Send + Sync {
    /// Resolves once the attempt's start is durable (it may execute before): whatever leaves the
    /// sandbox other than through the store — outbound HTTP — waits for it. `Err`: the start was
    /// lost with its transaction, so the attempt must not reach out at all.
    fn start_durable(&self) -> futures_util::future::BoxFuture<'static, Result<(), String>>;

    /// Makes a wait token and, in the same transaction, appends `flushed` (the journal recorded
    /// since the last checkpoint) and the token's own entry (kind `CreateToken`, `digest`).
    fn create_token(
        &self,
        request: TokenRequest,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<TokenCreated, String>>;

    /// Where a token of the run's environment stands.
    fn token_state(
        &self,
        id: String,
    ) -> futures_util::future::BoxFuture<'static, Result<TokenState, String>>;

    /// Triggers child runs (on the parent's version when `wait`) and, in the same transaction,
    /// appends `flushed` and the call's own entry (kind `Trigger`, `digest`). `Ok(Err(why))`:
    /// the items were refused and nothing was stored.
    #[allow(clippy::type_complexity)]
    fn trigger_children(
        &self,
        items: Vec<ChildItem>,
        wait: bool,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<Result<Vec<ChildRun>, String>, String>>;

    /// Where child runs of the run's environment stand, in the order asked.
    fn children_state(
        &self,
        ids: Vec<String>,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<ChildState>, String>>;

    /// The metadata of the run, its parent or its root (JSON text).
    fn metadata(
        &self,
        target: MetadataTarget,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>>;

    /// Applies metadata changes and, in the same transaction, appends `flushed` and the call's
    /// own entry (kind `MetadataWrite`). `Ok(Err)`: refused, nothing stored.
    #[allow(clippy::type_complexity)]
    fn update_metadata(
        &self,
        target: MetadataTarget,
        changes: Vec<MetadataChange>,
        flushed: Flushed,
        digest: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<Result<String, String>, String>>;
}

/// One metadata change as the guest asked; values are JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataChange {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Remove(String, String),
    Increment(String, f64),
    Replace(String),
}

/// Whose metadata a run reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataTarget {
    Current,
    Parent,
    Root,
}

/// A child run to trigger, as the guest asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildItem {
    pub task_id: String,
    /// JSON text.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub tags: Vec<String>,
    pub delay_ms: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub queue: Option<String>,
    pub concurrency_key: Option<String>,
    pub machine: Option<String>,
    pub max_attempts: Option<u32>,
    /// JSON text.
    pub metadata: Option<String>,
}

/// A triggered child run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRun {
    pub id: String,
    pub is_cached: bool,
}

/// How a child run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildResult {
    /// Its output (JSON text).
    Ok(String),
    Error {
        name: String,
        message: String,
        stack: Option<String>,
    },
}

/// Where a child run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    Going,
    Ended(ChildResult),
}

/// Most tags on a wait token (Trigger.dev's).
pub const MAX_TOKEN_TAGS: usize = 10;

/// Checks a token request as the API does: tags and idempotency key within Trigger.dev's bounds.
pub fn check_token_request(request: &TokenRequest) -> Result<(), String> {
    if request.tags.len() > MAX_TOKEN_TAGS {
        return Err(format!(
            "tags: a wait token may have at most {MAX_TOKEN_TAGS} tags, not {}",
            request.tags.len()
        ));
    }
    if let Some(tag) = request
        .tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > 128)
    {
        return Err(format!("tags: `{tag}` must be 1–128 characters"));
    }
    if request
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 2_048)
    {
        return Err("idempotencyKey: must be 1–2048 bytes".into());
    }
    Ok(())
}
