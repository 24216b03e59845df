//! A component kiln must refuse at deploy: its task id `not a valid id!` has a space and a `!`
//! (ids are 1–128 characters of letters, digits, `-`, `_` and `.`).

use kiln_sdk::prelude::*;
use kiln_sdk::serde_json::Value;

kiln_sdk::tasks![Task::new("not a valid id!", noop)];

fn noop(_payload: Value, _ctx: &Context) -> Result<(), TaskError> {
    Ok(())
}
