//! Waiting inside a run: [`for_duration`] and [`until`], and wait tokens ([`create_token`],
//! [`for_token`]) that something outside the run completes.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! kiln_sdk::wait::for_duration(Duration::from_secs(3600));
//! ```
//!
//! A short wait (up to the host's in-place threshold, 5 s by default) sleeps and keeps the run's
//! slot. A longer one **checkpoints** the run: kiln frees the slot and the memory, and when the
//! time comes it runs the task again from the start, answering every host call the task already
//! made — clock readings, randomness, earlier waits — from its record, so the task continues from
//! the wait as if it had slept. Work before a wait must therefore lead to the same calls when it
//! runs again (it does, unless it reads something kiln does not record, such as a global counter
//! kept across runs); if it does not, the run fails with `TASK_NONDETERMINISTIC`.
//!
//! Log lines written before the wait are not written twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::kiln::task::wait as wit;

/// Waits `duration` (rounded down to milliseconds).
pub fn for_duration(duration: Duration) {
    wit::for_duration(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
}

/// Waits until `at`; returns at once if it has passed.
pub fn until(at: SystemTime) {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    wit::until(ms);
}

/// How to make a wait token; see [`create_token`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenOptions {
    /// The token times out this long after it is made (default: never).
    pub timeout: Option<Duration>,
    /// Making a token with a key that is still live returns that token instead.
    pub idempotency_key: Option<String>,
    /// How long the key stays live (default 30 days).
    pub idempotency_key_ttl: Option<Duration>,
    /// Up to 10 tags, each 1–128 characters.
    pub tags: Vec<String>,
}

/// A wait token: something outside the run completes it with JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `waitpoint_…`: complete it with `POST /api/v1/waitpoints/tokens/{id}/complete` or
    /// `kiln tokens complete`.
    pub id: String,
    /// POSTing JSON to this URL completes the token, without a secret key.
    pub url: String,
    /// The idempotency key matched an earlier token.
    pub is_cached: bool,
}

/// Why waiting for a token ended without data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token's timeout passed first.
    TimedOut(String),
    /// No such token, invalid options, or data that does not fit the type asked for.
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::TimedOut(m) => write!(f, "the wait token timed out: {m}"),
            TokenError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TokenError {}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Makes a wait token. Made once: when the run replays after a checkpoint, this returns the same
/// token.
///
/// ```no_run
/// use std::time::Duration;
/// use kiln_sdk::wait::{self, TokenOptions};
///
/// let token = wait::create_token(TokenOptions {
///     timeout: Some(Duration::from_secs(24 * 3600)),
///     ..TokenOptions::default()
/// })?;
/// kiln_sdk::info!("approve at {}", token.url);
/// let approval: serde_json::Value = wait::for_token(&token.id)?;
/// # Ok::<(), wait::TokenError>(())
/// ```
pub fn create_token(options: TokenOptions) -> Result<Token, TokenError> {
    let options = wit::TokenOptions {
        timeout_ms: options.timeout.map(millis),
        idempotency_key: options.idempotency_key,
        idempotency_key_ttl_ms: options.idempotency_key_ttl.map(millis),
        tags: options.tags,
    };
    wit::create_token(&options)
        .map(|t| Token {
            id: t.id,
            url: t.url,
            is_cached: t.is_cached,
        })
        .map_err(TokenError::from)
}

/// Waits until the token is completed and returns its data, or its timeout passes. The run is
/// checkpointed meanwhile (no memory, no slot) unless the token is already done.
pub fn for_token<T: serde::de::DeserializeOwned>(id: &str) -> Result<T, TokenError> {
    let data = wit::for_token(id).map_err(TokenError::from)?;
    serde_json::from_str(&data).map_err(|e| {
        TokenError::Invalid(format!(
            "the data of wait token `{id}` does not fit the type asked for: {e}"
        ))
    })
}

impl From<wit::TokenError> for TokenError {
    fn from(e: wit::TokenError) -> TokenError {
        match e {
            wit::TokenError::TimedOut(m) => TokenError::TimedOut(m),
            wit::TokenError::Invalid(m) => TokenError::Invalid(m),
        }
    }
}
