//! A component kiln must refuse at deploy: its `definitions()` panics, which traps.

use kiln_sdk::prelude::*;

kiln_sdk::tasks![exploding_task()];

/// Building the task list panics, so `definitions()` (and `run()`) trap.
fn exploding_task() -> Task {
    panic!("definitions() panicked on purpose")
}
