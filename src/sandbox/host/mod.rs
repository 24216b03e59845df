//! kiln's own host interfaces (`kiln:task/*`), one file each, in the manner of wasmtime-wasi's
//! `p2/host/`: `wait` (durations, times, wait tokens), `tasks` (child runs), `metadata` and `log`.
//!
//! Every answer that could differ on a replay is journaled; a guest's bad input comes back as the
//! interface's error value, never as a host panic.

mod log;
mod metadata;
mod tasks;
mod wait;

use super::HostState;
use super::bindings;

impl bindings::kiln::task::types::Host for HostState {}
