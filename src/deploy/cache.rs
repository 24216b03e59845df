//! The compiled components kept in memory, by content digest, within a budget of machine code:
//! past it the least recently used are dropped. Nothing is lost by an eviction — the artifact on
//! disk (or the stored bytes) brings the component back — so the budget bounds the host's memory
//! whatever clients deploy.

use std::collections::HashMap;

use crate::sandbox::Prepared;

struct Cached {
    prepared: Prepared,
    bytes: usize,
    used: u64,
}

/// An LRU of compiled components under a byte budget.
pub(super) struct CompiledCache {
    entries: HashMap<String, Cached>,
    bytes: usize,
    budget: usize,
    /// Counts uses, so the least recently used entry has the smallest `used`.
    clock: u64,
}

impl CompiledCache {
    pub(super) fn new(budget: usize) -> CompiledCache {
        CompiledCache {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    pub(super) fn get(&mut self, digest: &str) -> Option<Prepared> {
        self.clock += 1;
        let entry = self.entries.get_mut(digest)?;
        entry.used = self.clock;
        Some(entry.prepared.clone())
    }

    /// Keeps `prepared`, then drops the least recently used others until the budget holds (the
    /// newest is kept even when it alone is over it: it is about to run).
    pub(super) fn insert(&mut self, digest: String, prepared: Prepared) {
        self.clock += 1;
        let bytes = prepared.code_bytes();
        let entry = Cached {
            prepared,
            bytes,
            used: self.clock,
        };
        if let Some(old) = self.entries.insert(digest.clone(), entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.evict(&digest);
    }

    pub(super) fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        let newest = self
            .entries
            .iter()
            .max_by_key(|(_, e)| e.used)
            .map(|(d, _)| d.clone());
        if let Some(newest) = newest {
            self.evict(&newest);
        }
    }

    fn evict(&mut self, keep: &str) {
        while self.bytes > self.budget {
            let oldest = self
                .entries
                .iter()
                .filter(|(d, _)| d.as_str() != keep)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone());
            let Some(oldest) = oldest else {
                return;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.bytes;
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}
