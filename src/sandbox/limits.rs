//! The per-store memory limiter: every linear memory and table of an instance summed against the
//! machine's limit, with a cap on table elements, and the denial remembered so the trap that
//! follows is classified as out of memory — but only a trap that follows it.
//!
//! A denied growth is not always the end: `Vec::try_reserve` reports it and the guest may go on.
//! So a denial stays *pending* only until the guest shows it went on — any [`Activity`] (a call
//! of kiln's interfaces, a clock read, an HTTP request, a line on stdout, a write to `/tmp`) or
//! a growth that succeeds. A trap while a denial is pending is the out-of-memory (Rust's
//! allocator, refused, prints to stderr — which is not activity — and aborts with
//! `unreachable`); a trap after the guest went on is whatever it is.
//!
//! It never lets a guest grow past its machine, and never panics on the sizes a guest asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;

/// Counts what the guest asked of the host that shows it went on after a denied growth (shared
/// by the journal, the log capture and the scratch directory's writes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity(Arc<AtomicU64>);

impl Activity {
    pub(crate) fn touch(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Elements one table may hold (function tables of large guests stay far below).
pub(super) const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// What one table element costs against the machine's memory limit: a funcref slot is a pointer.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Sums every linear memory and table of the component instance against one limit
/// (`StoreLimits` would apply the limit to each memory separately). Tables count
/// [`TABLE_ELEMENT_BYTES`] per element and may not pass [`MAX_TABLE_ELEMENTS`] each.
pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    pub(super) used: usize,
    /// The growth denied last, and the [`Activity`] count then; cleared by a growth that succeeds.
    denied: Option<(Denied, u64)>,
    activity: Activity,
}

/// A growth the limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// Memories and tables together would have used this many bytes.
    Bytes(usize),
    /// One table would have held this many elements.
    TableElements(usize),
}

impl MemoryLimiter {
    pub(super) fn new(limit: usize, activity: Activity) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            used: 0,
            denied: None,
            activity,
        }
    }

    /// The denied growth the guest has not gone on from: what a trap now is caused by.
    pub(super) fn pending_denial(&self) -> Option<Denied> {
        self.denied
            .filter(|(_, at)| *at == self.activity.count())
            .map(|(denied, _)| denied)
    }

    fn deny(&mut self, denied: Denied) -> bool {
        self.denied = Some((denied, self.activity.count()));
        false
    }

    /// Moves one memory or table from `current` to `desired` bytes if the sum stays in the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            return self.deny(Denied::Bytes(next));
        }
        self.used = next;
        // The guest got memory after the denial: it went on.
        self.denied = None;
        true
    }

    /// Says what was denied, for the crash message.
    pub(super) fn denial_message(&self, denied: Denied) -> String {
        match denied {
            Denied::Bytes(requested) => format!(
                "the attempt ran out of memory: its memories and tables asked for {requested} bytes in total, the limit is {} bytes (choose a larger machine)",
                self.limit
            ),
            Denied::TableElements(requested) => format!(
                "the attempt ran out of memory: a table asked for {requested} elements, the limit is {MAX_TABLE_ELEMENTS} per table"
            ),
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(self.deny(Denied::TableElements(desired)));
        }
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limiter_sums_every_memory_and_remembers_a_denial() {
        let mut l = MemoryLimiter::new(100, Activity::default());
        assert!(l.memory_growing(0, 60, None).unwrap(), "a first memory");
        assert!(
            l.memory_growing(0, 30, None).unwrap(),
            "a second memory: 90 in all"
        );
        assert!(
            !l.memory_growing(30, 50, None).unwrap(),
            "110 in all is over the limit"
        );
        assert_eq!(l.pending_denial(), Some(Denied::Bytes(110)));
        assert_eq!(l.used, 90, "a denied growth uses nothing");
        assert!(
            l.memory_growing(60, 70, None).unwrap(),
            "growing within the limit still works"
        );
        assert_eq!(l.pending_denial(), None, "and the guest went on");
    }

    #[test]
    fn tables_count_against_the_memory_limit_and_have_an_element_cap() {
        let mut l = MemoryLimiter::new(100 * TABLE_ELEMENT_BYTES, Activity::default());
        assert!(l.memory_growing(0, 50 * TABLE_ELEMENT_BYTES, None).unwrap());
        assert!(
            l.table_growing(0, 40, None).unwrap(),
            "90 slots' worth in all"
        );
        assert!(
            !l.table_growing(40, 60, None).unwrap(),
            "110 slots' worth is over the limit"
        );
        let denied = l.pending_denial();
        assert_eq!(denied, Some(Denied::Bytes(110 * TABLE_ELEMENT_BYTES)));
        assert!(l.denial_message(denied.unwrap()).contains("880 bytes"));

        let mut l = MemoryLimiter::new(usize::MAX, Activity::default());
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(
            !l.table_growing(MAX_TABLE_ELEMENTS, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
        assert_eq!(
            l.pending_denial(),
            Some(Denied::TableElements(MAX_TABLE_ELEMENTS + 1))
        );
    }

    #[test]
    fn a_denial_the_guest_went_on_from_is_no_longer_pending() {
        let activity = Activity::default();
        let mut l = MemoryLimiter::new(100, activity.clone());
        assert!(!l.memory_growing(0, 200, None).unwrap());
        assert_eq!(l.pending_denial(), Some(Denied::Bytes(200)));
        activity.touch();
        assert_eq!(l.pending_denial(), None, "the guest called the host since");
        assert!(!l.memory_growing(0, 300, None).unwrap());
        assert_eq!(l.pending_denial(), Some(Denied::Bytes(300)), "a new denial");
    }
}
