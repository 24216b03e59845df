//! Structured logs, stored with the run and shown by `kiln runs logs`.
//!
//! Each line has a [`Level`], a message and, optionally, JSON attributes. Use the functions
//! ([`info`], [`log_with`], …) or the `format!`-style macros ([`info!`](crate::info),
//! [`warn!`](crate::warn), …):
//!
//! ```no_run
//! use kiln_sdk::log::{self, Level};
//! use serde_json::json;
//!
//! let user = "ada";
//! log::info("starting");
//! kiln_sdk::info!("processing {user}");
//! log::log_with(Level::Warn, "slow response", json!({ "ms": 1234, "user": user }));
//! ```
//!
//! Lines printed to stdout and stderr (`println!`, `eprintln!`) are stored too, without
//! attributes. Outside a kiln component (e.g. in native unit tests) these functions must not be
//! called: the host import they use does not exist there.

use crate::bindings::kiln::task::log as wit;

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail useful when debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the task recovered from.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> wit::Level {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// Records a log line at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    wit::log(level.into(), message.as_ref(), None);
}

/// Records a log line at `level` with structured `attributes`.
///
/// `attributes` should be a JSON object; `null` means none, and any other value is recorded as
/// `{"value": attributes}`.
pub fn log_with(level: Level, message: impl AsRef<str>, attributes: serde_json::Value) {
    let attributes = match attributes {
        serde_json::Value::Null => None,
        object @ serde_json::Value::Object(_) => Some(object.to_string()),
        other => Some(serde_json::json!({ "value": other }).to_string()),
    };
    wit::log(level.into(), message.as_ref(), attributes.as_deref());
}

/// Records a log line at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Records a log line at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Records a log line at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Records a log line at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Records a log line at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

/// Records a log line at [`Level::Trace`](crate::log::Level::Trace), formatted like
/// [`format!`]: `kiln_sdk::trace!("state = {state:?}")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Trace, ::std::format!($($arg)+))
    };
}

/// Records a log line at [`Level::Debug`](crate::log::Level::Debug), formatted like
/// [`format!`]: `kiln_sdk::debug!("got {} rows", rows.len())`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Debug, ::std::format!($($arg)+))
    };
}

/// Records a log line at [`Level::Info`](crate::log::Level::Info), formatted like
/// [`format!`]: `kiln_sdk::info!("greeting {name}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Info, ::std::format!($($arg)+))
    };
}

/// Records a log line at [`Level::Warn`](crate::log::Level::Warn), formatted like
/// [`format!`]: `kiln_sdk::warn!("retrying after {ms} ms")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Warn, ::std::format!($($arg)+))
    };
}

/// Records a log line at [`Level::Error`](crate::log::Level::Error), formatted like
/// [`format!`]: `kiln_sdk::error!("upload failed: {err}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Error, ::std::format!($($arg)+))
    };
}
