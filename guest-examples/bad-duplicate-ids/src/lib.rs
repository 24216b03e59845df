//! A component kiln must refuse at deploy: two tasks share the id `dup`.

use kiln_sdk::prelude::*;
use kiln_sdk::serde_json::Value;

kiln_sdk::tasks![Task::new("dup", first), Task::new("dup", second)];

fn first(_payload: Value, _ctx: &Context) -> Result<u32, TaskError> {
    Ok(1)
}

fn second(_payload: Value, _ctx: &Context) -> Result<u32, TaskError> {
    Ok(2)
}
