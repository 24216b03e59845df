//! The guest's WASI clocks, journaled: a replay reads the same wall and monotonic times the first
//! execution read, so a checkpointed run resumes on the same path.
//!
//! A clock must never fail the guest: a divergence is remembered by the journal and reported at
//! the next wait or at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::{self, Journal, Kind, calls};
use crate::model::Clock;

/// The guest's wall clock: the engine's clock, journaled.
pub(super) struct JournaledWallClock {
    pub(super) journal: Arc<Mutex<Journal>>,
    pub(super) clock: Arc<dyn Clock>,
}

impl wasmtime_wasi::HostWallClock for JournaledWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        let live = || {
            u64::try_from(self.clock.now())
                .unwrap_or(0)
                .saturating_mul(1_000_000)
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // A divergence is remembered by the journal and fails the attempt at its next wait or end.
        let ns = journal
            .call(Kind::WallClock, &calls::wall_clock(), || {
                journal::number(live())
            })
            .ok()
            .and_then(|v| journal::as_number(&v))
            .unwrap_or_else(live);
        Duration::from_nanos(ns)
    }
}

/// The guest's monotonic clock: real nanoseconds since the Unix epoch, never going back,
/// journaled. Absolute, so it keeps counting across checkpoints and hosts. (Real time rather than
/// the engine's clock: a guest measuring elapsed time must see time pass under a manual clock.)
pub(super) struct JournaledMonotonicClock {
    pub(super) journal: Arc<Mutex<Journal>>,
    pub(super) last: AtomicU64,
}

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let live = || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            self.last.fetch_max(now, Ordering::Relaxed).max(now)
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let ns = journal
            .call(Kind::MonotonicClock, &calls::monotonic_clock(), || {
                journal::number(live())
            })
            .ok()
            .and_then(|v| journal::as_number(&v))
            .unwrap_or_else(live);
        self.last.fetch_max(ns, Ordering::Relaxed);
        ns
    }
}
