//! Waiting inside a run: [`for_duration`] and [`until`].
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
