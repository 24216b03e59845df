//! The integration tests: one binary, one module per area. Each test drives a real host (real
//! SQLite in a temp dir, real wasmtime, real guests from `guest-examples/`, and the TypeScript and Python
//! examples built with their SDKs) over loopback HTTP.

mod api;
mod batches;
mod bench;
mod bulk;
mod chaos;
mod children;
mod cli;
mod compat;
mod cors;
mod dashboard;
mod deploy;
mod deploy_background;
mod deploy_components;
mod env_vars;
mod hosts;
mod http;
mod js;
mod limits;
mod options;
mod public_tokens;
mod python;
mod queues;
mod realtime;
mod restart;
mod runs;
mod schedules;
mod scratch;
mod sdk_build;
mod sdk_scenarios;
mod storage;
mod store;
mod support;
mod tenants;
mod tidy;
mod tokens;
mod waits;
