//! Wait tokens: waitpoints completed from outside a run, with their status and timeout error.

use super::Millis;

/// Where a wait token stands (Trigger.dev's `WAITING`, `COMPLETED`, `TIMED_OUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Waiting,
    Completed,
    TimedOut,
}

impl TokenStatus {
    /// Trigger.dev's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Waiting => "WAITING",
            TokenStatus::Completed => "COMPLETED",
            TokenStatus::TimedOut => "TIMED_OUT",
        }
    }

    pub fn parse(s: &str) -> Option<TokenStatus> {
        match s {
            "WAITING" => Some(TokenStatus::Waiting),
            "COMPLETED" => Some(TokenStatus::Completed),
            "TIMED_OUT" => Some(TokenStatus::TimedOut),
            _ => None,
        }
    }
}

/// The error a timed-out token completes with (Trigger.dev's shape and code).
pub fn token_timeout_error(at: Millis) -> String {
    let when = jiff::Timestamp::from_millisecond(at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    serde_json::json!({
        "code": "TRIGGER_WAITPOINT_TIMEOUT",
        "message": format!("Waitpoint timed out at {when}"),
    })
    .to_string()
}

/// A wait token: a waitpoint completed from outside the run, with JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitToken {
    pub id: String,
    pub environment_id: String,
    pub status: TokenStatus,
    pub idempotency_key: Option<String>,
    pub idempotency_expires_at: Option<Millis>,
    pub tags: Vec<String>,
    /// JSON text: the completion data, or the timeout error when `output_is_error`.
    pub output: Option<String>,
    pub output_is_error: bool,
    pub timeout_at: Option<Millis>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
}

/// A wait token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub environment_id: String,
    pub timeout_at: Option<Millis>,
    /// The key and when it stops matching repeats.
    pub idempotency: Option<(String, Millis)>,
    pub tags: Vec<String>,
    pub now: Millis,
}
