//! The store's error: what any backend reports, in domain terms (no database type leaves the
//! store). Callers match on it: `Conflict` is a lost compare-and-set, `Storage` a full or failing
//! disk (nothing of the write was stored; the same write succeeds later), `Refused` a write the
//! caller passes on.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set found the row in another state (or gone).
    #[error("the record changed concurrently; reload it and try again")]
    Conflict,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(
        "the database at {path} has schema version {found}, newer than this kiln understands ({known}); run a newer kiln or use another --data-dir"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "cannot open the database at {path}: {reason}; check the path exists, is writable and is not held by another process (another kiln, or a tool with it open)"
    )]
    Open { path: PathBuf, reason: String },
    /// A database server could not be reached or set up (PostgreSQL).
    #[error("cannot use the database {database}: {reason}")]
    OpenDatabase { database: String, reason: String },
    /// The database server is unreachable now; nothing of this request was stored.
    #[error(
        "the database is unreachable ({0}); nothing of this request was stored: try again once it is back"
    )]
    Unavailable(String),
    /// A text the request carries cannot be stored (PostgreSQL's text holds no NUL character);
    /// nothing was stored.
    #[error("{0}")]
    InvalidText(String),
    /// The database gave up this transaction to let others run (a deadlock, a serialization
    /// failure); nothing of it was stored and the same write may work now.
    #[error("the database could not run this write now ({0}); nothing of it was stored: try again")]
    Busy(String),
    #[error("database error: {0}")]
    Database(String),
    /// The database could not be written: the disk is full or failing. Nothing of the write was
    /// stored; the same write succeeds once space returns.
    #[error(
        "kiln could not write its database ({0}); the disk holding the data dir is probably full: free space there and try again (nothing of this request was stored)"
    )]
    Storage(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store could not run the write (shut down, or a transaction failed to begin; see the host log)"
    )]
    Closed,
    /// The write was refused for a reason the caller passes on; nothing was stored.
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// Whether the write failed for want of space (or a failing disk), because the database
    /// server is unreachable, or to let other transactions run: nothing was stored, and the same
    /// write may work later.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(_) | StoreError::Unavailable(_) | StoreError::Busy(_)
        )
    }
}
