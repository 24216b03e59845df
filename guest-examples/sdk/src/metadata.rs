//! Run metadata: a JSON object per run (at most 256 KB) that the run API shows — progress,
//! counters, results so far. A run changes its own, its parent's or its root's.
//!
//! ```no_run
//! use kiln_sdk::metadata;
//!
//! metadata::current().set("progress", 0.5)?;
//! metadata::parent().increment("done", 1.0)?;
//! let all = metadata::current().get();
//! # Ok::<(), metadata::MetadataError>(())
//! ```
//!
//! Changes are made once: when the run replays after a checkpoint they are not applied again.

use serde::Serialize;
use serde_json::Value;

use crate::bindings::kiln::task::metadata as wit;

/// Why a change was refused (too large, a bad key, incrementing a non-number); nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetadataError {}

/// Whose metadata: see [`current`], [`parent`] and [`root`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata(wit::Target);

/// This run's metadata.
pub fn current() -> Metadata {
    Metadata(wit::Target::Current)
}

/// The parent run's metadata (this run's own when it has no parent).
pub fn parent() -> Metadata {
    Metadata(wit::Target::Parent)
}

/// The root run's metadata (this run's own when it has no parent).
pub fn root() -> Metadata {
    Metadata(wit::Target::Root)
}

fn json(value: impl Serialize) -> Result<String, MetadataError> {
    serde_json::to_string(&value)
        .map_err(|e| MetadataError(format!("the value cannot be serialized: {e}")))
}

impl Metadata {
    /// The whole object (`{}` when none).
    pub fn get(self) -> Value {
        serde_json::from_str(&wit::get(self.0)).unwrap_or(Value::Object(Default::default()))
    }

    fn apply(self, op: wit::Operation) -> Result<Value, MetadataError> {
        let next = wit::update(self.0, &[op]).map_err(MetadataError)?;
        Ok(serde_json::from_str(&next).unwrap_or(Value::Null))
    }

    /// Sets `key` (a name or a `$.a.b` path); returns the new metadata.
    pub fn set(self, key: &str, value: impl Serialize) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Set((key.to_owned(), json(value)?)))
    }

    /// Deletes `key`.
    pub fn del(self, key: &str) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Del(key.to_owned()))
    }

    /// Appends `value` to the array at `key` (making one).
    pub fn append(self, key: &str, value: impl Serialize) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Append((key.to_owned(), json(value)?)))
    }

    /// Removes `value` from the array at `key`.
    pub fn remove(self, key: &str, value: impl Serialize) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Remove((key.to_owned(), json(value)?)))
    }

    /// Adds `by` to the number at `key` (0 if absent).
    pub fn increment(self, key: &str, by: f64) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Increment((key.to_owned(), by)))
    }

    /// Replaces the whole object.
    pub fn replace(self, value: impl Serialize) -> Result<Value, MetadataError> {
        self.apply(wit::Operation::Replace(json(value)?))
    }
}
