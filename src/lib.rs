//! kiln: a WebAssembly task host. Upload Wasm components that declare tasks, trigger runs over a
//! Trigger.dev-compatible API, and kiln executes each attempt in a wasmtime sandbox, with runs
//! scheduled from SQLite.
//!
//! `ARCHITECTURE.md` at the repository root maps the modules and their invariants.

// Two exceptions, each with its `// SAFETY:` comment: loading a compiled artifact this host
// wrote (`sandbox::Sandbox::load_artifact`), and quieting library backtraces before any thread
// exists (`cli::quiet_library_backtraces`).
#![deny(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod dashboard;
pub mod deploy;
pub mod engine;
pub mod host;
pub mod keys;
pub mod metadata;
pub mod model;
pub mod sandbox;
pub mod schedule;
pub mod secrets;
pub mod store;
