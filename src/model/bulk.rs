//! Bulk actions (Trigger.dev's `runs.bulk`): cancel or replay a set of runs, fixed when the
//! action is made (by ids or by a filter), carried out in the background in bounded batches,
//! counted, abortable.

use super::Millis;

/// What a bulk action does to each of its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    Cancel,
    Replay,
}

impl BulkKind {
    /// Trigger.dev's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkKind::Cancel => "CANCEL",
            BulkKind::Replay => "REPLAY",
        }
    }

    pub fn parse(s: &str) -> Option<BulkKind> {
        [BulkKind::Cancel, BulkKind::Replay]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a bulk action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStatus {
    /// Some runs are still to be done.
    Pending,
    Completed,
    /// Stopped before its end (its counts say how far it got).
    Aborted,
}

impl BulkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkStatus::Pending => "PENDING",
            BulkStatus::Completed => "COMPLETED",
            BulkStatus::Aborted => "ABORTED",
        }
    }

    pub fn parse(s: &str) -> Option<BulkStatus> {
        [
            BulkStatus::Pending,
            BulkStatus::Completed,
            BulkStatus::Aborted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A bulk action as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkAction {
    pub id: String,
    pub environment_id: String,
    pub name: Option<String>,
    pub kind: BulkKind,
    pub status: BulkStatus,
    /// Its runs, fixed when it was made.
    pub total: u32,
    /// Runs done so far (in order: the next batch starts here).
    pub processed: u32,
    /// Runs it did something to, and runs it could not (a cancel of a finished run).
    pub success: u32,
    pub failure: u32,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
}
