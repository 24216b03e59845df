//! How a task fails: [`TaskError`], an ordinary (retried) error or an abort (never retried).

use std::fmt;

use crate::bindings::kiln::task::types as wit;

/// Name of the abort a run fails with when its payload does not deserialize into the handler's
/// payload type (Trigger.dev's name for it).
pub const PAYLOAD_PARSE_ERROR: &str = "TaskPayloadParsedError";

/// Name of the ordinary error an attempt fails with when its output does not serialize to JSON.
pub const OUTPUT_ERROR: &str = "TaskOutputError";

/// Name of the abort `run()` fails with when the component has no task with the requested id.
pub const TASK_NOT_FOUND: &str = "TaskNotFound";

/// Whether kiln may retry a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An ordinary failure: retried according to the task's [`Retry`](crate::Retry) policy.
    Error,
    /// A failure that must not be retried (Trigger.dev's `AbortTaskRunError`).
    Abort,
}

/// The error a task handler returns: a kind, a name, a message and an optional stack.
///
/// Build one with [`TaskError::error`] or [`TaskError::abort`], or let `?` convert any
/// [`std::error::Error`] into an ordinary error:
///
/// ```
/// use kiln_sdk::prelude::*;
///
/// fn parse(text: &str) -> Result<u32, TaskError> {
///     let n: u32 = text.parse()?; // ParseIntError → ordinary error
///     if n == 0 {
///         return Err(TaskError::abort("zero is never going to work").with_name("ZeroError"));
///     }
///     Ok(n)
/// }
///
/// let err = parse("x").unwrap_err();
/// assert!(!err.is_abort());
/// assert_eq!(err.message(), "invalid digit found in string");
/// assert!(parse("0").unwrap_err().is_abort());
/// ```
///
/// Like `anyhow::Error`, `TaskError` does not itself implement [`std::error::Error`]: that is
/// what lets it convert from every type that does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct TaskError {
    kind: ErrorKind,
    name: String,
    message: String,
    stack: Option<String>,
}

impl TaskError {
    /// An ordinary error, retried according to the task's retry policy. Its name is `Error`.
    pub fn error(message: impl Into<String>) -> TaskError {
        TaskError::new(ErrorKind::Error, "Error", message)
    }

    /// An error that is not retried: the run fails at once. Its name is `AbortTaskRunError`.
    pub fn abort(message: impl Into<String>) -> TaskError {
        TaskError::new(ErrorKind::Abort, "AbortTaskRunError", message)
    }

    /// An error of the given kind, name and message.
    pub fn new(kind: ErrorKind, name: impl Into<String>, message: impl Into<String>) -> TaskError {
        TaskError {
            kind,
            name: name.into(),
            message: message.into(),
            stack: None,
        }
    }

    /// Replaces the error's name (Trigger.dev shows it before the message).
    pub fn with_name(mut self, name: impl Into<String>) -> TaskError {
        self.name = name.into();
        self
    }

    /// Attaches a stack trace or any other detail (Trigger.dev's `stackTrace`).
    pub fn with_stack(mut self, stack: impl Into<String>) -> TaskError {
        self.stack = Some(stack.into());
        self
    }

    /// Whether the error is retried or not.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the error is an abort, which kiln never retries.
    pub fn is_abort(&self) -> bool {
        self.kind == ErrorKind::Abort
    }

    /// The error's name, e.g. `Error` or `TaskPayloadParsedError`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error's stack trace or detail, if any.
    pub fn stack(&self) -> Option<&str> {
        self.stack.as_deref()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Any [`std::error::Error`] becomes an ordinary error: its name is the error's Rust type name
/// (e.g. `core::num::error::ParseIntError`), its message is its `Display`, and its chain of
/// [`source`](std::error::Error::source)s, if any, goes into the stack as `Caused by:` lines.
impl<E: std::error::Error> From<E> for TaskError {
    fn from(error: E) -> TaskError {
        let mut err = TaskError::error(error.to_string()).with_name(std::any::type_name::<E>());
        let mut source = error.source();
        if source.is_some() {
            let mut stack = String::from("Caused by:");
            while let Some(cause) = source {
                stack.push_str("\n    ");
                stack.push_str(&cause.to_string());
                source = cause.source();
            }
            err.stack = Some(stack);
        }
        err
    }
}

impl From<TaskError> for wit::TaskError {
    fn from(e: TaskError) -> wit::TaskError {
        let info = wit::ErrorInfo {
            name: e.name,
            message: e.message,
            stack: e.stack,
        };
        match e.kind {
            ErrorKind::Error => wit::TaskError::Error(info),
            ErrorKind::Abort => wit::TaskError::Abort(info),
        }
    }
}
