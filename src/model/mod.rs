//! Domain types shared by every module: runs, attempts, deployments, task definitions, machines,
//! queues, tokens, tenants, batches, bulk actions — one file per group — and the clock, ids and the duration/date parsers.
//!
//! These are plain data. They never derive `Serialize` for the wire (the `api` module owns the wire
//! shapes) and they know nothing of SQL or wasmtime. Where a value crosses into a database it goes
//! through the `as_str`/`parse` pairs defined here so the spelling lives in one place.

mod batch;
mod bulk;
mod lifecycle;
mod queue;
mod run;
mod task;
mod tenant;
mod token;

use std::time::Duration;

pub use batch::*;
pub use bulk::*;
pub use lifecycle::{Condition, EDGES, Edge, INITIAL, Step, allowed, edge_for, guard};
pub use queue::*;
pub use run::*;
pub use task::*;
pub use tenant::*;
pub use token::*;

/// Milliseconds since the Unix epoch. All stored timestamps use this unit.
pub type Millis = i64;

/// Current wall-clock time in [`Millis`].
pub fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// Where the engine reads the time. The host uses [`SystemClock`]; tests that span hours use
/// [`ManualClock`] and move it forward.
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Default fuel budget of an attempt on `small-1x`: about five minutes of busy compute on a
/// current core. A safety net against runaway loops, not a quota; `maxDuration` is the time limit.
pub const DEFAULT_FUEL_BUDGET: u64 = 600_000_000_000;

/// Default lifetime of an idempotency key (Trigger.dev's).
pub const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Makes a new sortable id with a type prefix, e.g. `run_01JD…`.
///
/// ULIDs sort by creation time, which the runs list relies on for newest-first paging.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Parses a duration like Trigger.dev's: `"30s"`, `"15m"`, `"1h30m"`, `"2d"`, `"1w"` (units w, d, h,
/// m, s, in any combination, each a whole number).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Parses an ISO 8601 / RFC 3339 timestamp (`2026-11-30T12:00:00Z`) to [`Millis`].
pub fn parse_timestamp(text: &str) -> Option<Millis> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_trigger_dev() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h52m18s"), Some(Duration::from_secs(6738)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        for bad in ["", "10", "h", "1x", "1.5h", "-1h", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_parse_from_iso_8601() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_timestamp("2026-11-30T12:00:00.500+01:00").map(|t| t % 1000),
            Some(500)
        );
        assert_eq!(parse_timestamp("tomorrow"), None);
    }
}
