//! What a failed guest call was: divergence from the journal, the host failing a call the guest
//! made ([`HostFailure`]: a store that could not be read or written, a corrupt journal), cancel,
//! time limit, fuel, a denied memory growth the guest did not go on from (`limits`), or a crash
//! whose message carries the trap and the guest's last stderr lines.
//!
//! Every failure becomes a [`GuestFailure`] value for the run's status; nothing here may panic
//! on what the guest left behind, and nothing the host got wrong may count as the guest's crash.

use std::sync::atomic::Ordering;

use wasmtime::{Store, Trap};

use super::journal::Divergence;
use super::state::{HostState, STOP_CANCELED, STOP_TIMEOUT};

/// A guest call that did not return normally.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestFailure {
    pub kind: TrapKind,
    pub message: String,
    /// The wasm backtrace, when wasmtime captured one.
    pub stack: Option<String>,
}

/// How a guest call ended abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// A trap: panic, `unreachable`, out-of-bounds access, stack overflow.
    Crash,
    /// A memory growth was denied by the machine's limit.
    OutOfMemory,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The time limit passed.
    Timeout,
    /// The attempt was canceled.
    Canceled,
    /// On replay the guest made other host calls than the journal recorded.
    Nondeterministic,
    /// The host could not carry out a call the guest made (its store failed, its journal is
    /// corrupt): not the guest's fault.
    Host,
}

/// The error a host call returns when the host, not the guest, failed: it ends the attempt as
/// [`TrapKind::Host`].
#[derive(Debug)]
pub(super) struct HostFailure(pub(super) String);

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostFailure {}

/// A [`HostFailure`] as the error of a host call.
pub(super) fn host_failure(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostFailure(message.into()))
}

pub(super) fn nondeterministic(d: &Divergence) -> GuestFailure {
    GuestFailure {
        kind: TrapKind::Nondeterministic,
        message: d.to_string(),
        stack: None,
    }
}

/// Turns a failed guest call into a run-level classification with a one-line message.
pub(super) fn classify(store: &Store<HostState>, error: &wasmtime::Error) -> GuestFailure {
    let state = store.data();
    let divergence = error
        .downcast_ref::<Divergence>()
        .cloned()
        .or_else(|| state.journal().divergence().cloned());
    if let Some(d) = divergence {
        return nondeterministic(&d);
    }
    let trap = error.downcast_ref::<Trap>().copied();
    let stack = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string())
        .filter(|s| !s.trim().is_empty());
    let stop = state.stop.load(Ordering::Relaxed);
    let host = error.downcast_ref::<HostFailure>();
    let (kind, message) = if host.is_some() && state.cancel.is_canceled() {
        // A call the cancel overtook (its effect found the run canceled).
        (TrapKind::Canceled, "the attempt was canceled".to_owned())
    } else if let Some(HostFailure(why)) = host {
        (
            TrapKind::Host,
            format!("kiln could not carry out a call of the task: {why}"),
        )
    } else if trap == Some(Trap::Interrupt) && stop == STOP_CANCELED {
        (TrapKind::Canceled, "the attempt was canceled".to_owned())
    } else if trap == Some(Trap::Interrupt) && stop == STOP_TIMEOUT {
        (
            TrapKind::Timeout,
            "the attempt ran past its time limit".to_owned(),
        )
    } else if trap == Some(Trap::OutOfFuel) {
        (
            TrapKind::FuelExhausted,
            "the attempt used up its fuel budget (a runaway loop?)".to_owned(),
        )
    } else if let Some(denied) = state.limiter.pending_denial() {
        (TrapKind::OutOfMemory, state.limiter.denial_message(denied))
    } else {
        let detail = match trap {
            Some(t) => t.to_string(),
            None => format!("{error:#}"),
        };
        let panic = state
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error_lines(3);
        let message = if panic.is_empty() {
            format!("the task crashed: {detail}")
        } else {
            format!("the task crashed: {detail}: {panic}")
        };
        (TrapKind::Crash, message)
    };
    GuestFailure {
        kind,
        message,
        stack,
    }
}
