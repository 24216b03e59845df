//! The per-store memory limiter: every linear memory and table of an instance summed against the
//! machine's limit, with a cap on table elements, and the denial remembered so the trap that
//! follows is classified as out of memory.
//!
//! It never lets a guest grow past its machine, and never panics on the sizes a guest asks for.

use wasmtime::ResourceLimiter;

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
    /// The growth that was denied; makes the trap that follows an OOM.
    pub(super) denied: Option<Denied>,
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
    /// Moves one memory or table from `current` to `desired` bytes if the sum stays in the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.denied = Some(Denied::Bytes(next));
            return false;
        }
        self.used = next;
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
            self.denied = Some(Denied::TableElements(desired));
            return Ok(false);
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
        let mut l = MemoryLimiter {
            limit: 100,
            used: 0,
            denied: None,
        };
        assert!(l.memory_growing(0, 60, None).unwrap(), "a first memory");
        assert!(
            l.memory_growing(0, 30, None).unwrap(),
            "a second memory: 90 in all"
        );
        assert!(
            !l.memory_growing(30, 50, None).unwrap(),
            "110 in all is over the limit"
        );
        assert_eq!(l.denied, Some(Denied::Bytes(110)));
        assert_eq!(l.used, 90, "a denied growth uses nothing");
        assert!(
            l.memory_growing(60, 70, None).unwrap(),
            "growing within the limit still works"
        );
    }

    #[test]
    fn tables_count_against_the_memory_limit_and_have_an_element_cap() {
        let mut l = MemoryLimiter {
            limit: 100 * TABLE_ELEMENT_BYTES,
            used: 0,
            denied: None,
        };
        assert!(l.memory_growing(0, 50 * TABLE_ELEMENT_BYTES, None).unwrap());
        assert!(
            l.table_growing(0, 40, None).unwrap(),
            "90 slots' worth in all"
        );
        assert!(
            !l.table_growing(40, 60, None).unwrap(),
            "110 slots' worth is over the limit"
        );
        assert_eq!(l.denied, Some(Denied::Bytes(110 * TABLE_ELEMENT_BYTES)));
        assert!(l.denial_message(l.denied.unwrap()).contains("880 bytes"));

        let mut l = MemoryLimiter {
            limit: usize::MAX,
            used: 0,
            denied: None,
        };
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(
            !l.table_growing(MAX_TABLE_ELEMENTS, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
        assert_eq!(
            l.denied,
            Some(Denied::TableElements(MAX_TABLE_ELEMENTS + 1))
        );
    }
}
