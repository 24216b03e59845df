//! Batches: runs triggered together. A two-phase batch (Trigger.dev's v3 batch API) is made with
//! the number of runs it will have, gets its items later (each index once, however often a
//! client sends it), and is sealed once every index has arrived.

use super::{IdempotencyKeyOptions, Millis};

/// A batch's status, as Trigger.dev's `RetrieveBatchV2Response` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    /// Not sealed: some indexes have not arrived.
    Pending,
    /// Sealed; some runs have not finished.
    Processing,
    /// Sealed and every run finished.
    Completed,
    /// Sealed and every run finished, but some items could not become runs.
    PartialFailed,
    /// No item could become a run, or the batch was not sealed in time.
    Aborted,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Pending => "PENDING",
            BatchStatus::Processing => "PROCESSING",
            BatchStatus::Completed => "COMPLETED",
            BatchStatus::PartialFailed => "PARTIAL_FAILED",
            BatchStatus::Aborted => "ABORTED",
        }
    }
}

/// How long a two-phase batch may wait for its items (Trigger.dev's `BATCH_SEAL_TIMEOUT_MS`).
pub const BATCH_SEAL_TIMEOUT_MS: Millis = 30 * 60 * 1000;

/// An item that could not become a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItemError {
    pub index: u32,
    pub task_id: String,
    pub message: String,
    /// Trigger.dev's code, e.g. `PAYLOAD_TOO_LARGE`.
    pub code: Option<String>,
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: String,
    pub environment_id: String,
    /// The runs it will have (its items' count).
    pub run_count: u32,
    pub sealed: bool,
    pub sealed_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The key the batch was made with (as the SDK sent it, hashed) and the user's.
    pub idempotency_key: Option<String>,
    pub idempotency_key_options: Option<IdempotencyKeyOptions>,
    /// Its runs, by item index (an item with an idempotency key may be an earlier run).
    pub runs: Vec<String>,
    pub errors: Vec<BatchItemError>,
    /// How many of its runs have not finished.
    pub unfinished: u32,
}

impl Batch {
    /// The status at `now`.
    pub fn status(&self, now: Millis) -> BatchStatus {
        if !self.sealed {
            return if now - self.created_at > BATCH_SEAL_TIMEOUT_MS {
                BatchStatus::Aborted
            } else {
                BatchStatus::Pending
            };
        }
        if self.runs.is_empty() && !self.errors.is_empty() {
            BatchStatus::Aborted
        } else if self.unfinished > 0 {
            BatchStatus::Processing
        } else if self.errors.is_empty() {
            BatchStatus::Completed
        } else {
            BatchStatus::PartialFailed
        }
    }

    /// How many indexes have arrived (as runs or as failed items).
    pub fn enqueued(&self) -> u32 {
        u32::try_from(self.runs.len() + self.errors.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_pending_until_sealed_then_completed_once_its_runs_finish() {
        let mut b = Batch {
            id: "batch_1".into(),
            environment_id: "env".into(),
            run_count: 2,
            sealed: false,
            sealed_at: None,
            created_at: 0,
            updated_at: 0,
            idempotency_key: None,
            idempotency_key_options: None,
            runs: vec!["run_1".into()],
            errors: Vec::new(),
            unfinished: 1,
        };
        assert_eq!(b.status(1), BatchStatus::Pending);
        assert_eq!(b.status(BATCH_SEAL_TIMEOUT_MS + 1), BatchStatus::Aborted);
        b.sealed = true;
        b.runs.push("run_2".into());
        assert_eq!(b.status(1), BatchStatus::Processing);
        b.unfinished = 0;
        assert_eq!(b.status(1), BatchStatus::Completed);
        b.errors.push(BatchItemError {
            index: 2,
            task_id: "t".into(),
            message: "too large".into(),
            code: Some("PAYLOAD_TOO_LARGE".into()),
        });
        assert_eq!(b.status(1), BatchStatus::PartialFailed);
        b.runs.clear();
        assert_eq!(b.status(1), BatchStatus::Aborted);
    }
}
