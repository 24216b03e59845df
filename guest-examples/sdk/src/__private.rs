//! Support code for the expansion of [`tasks!`](crate::tasks). Not part of the public API.

use crate::bindings;
use crate::error::TASK_NOT_FOUND;
use crate::{Context, Task, TaskError};

/// The definitions of `tasks`, in order.
pub fn definitions(tasks: Vec<Task>) -> Vec<bindings::TaskDefinition> {
    tasks.iter().map(Task::definition).collect()
}

/// Runs the task of `tasks` whose id is `task_id`.
pub fn run(
    tasks: Vec<Task>,
    task_id: String,
    payload: String,
    ctx: bindings::RunContext,
) -> Result<String, bindings::TaskError> {
    let ctx = Context::from(ctx);
    match tasks.iter().find(|t| t.id() == task_id) {
        Some(task) => task.invoke(&payload, &ctx).map_err(Into::into),
        None => Err(not_found(&tasks, &task_id).into()),
    }
}

/// The abort for a `task_id` that none of `tasks` has.
fn not_found(tasks: &[Task], task_id: &str) -> TaskError {
    let offered: Vec<&str> = tasks.iter().map(Task::id).collect();
    let offered = if offered.is_empty() {
        "none".to_string()
    } else {
        offered.join(", ")
    };
    TaskError::abort(format!(
        "this component has no task `{task_id}`; it offers: {offered}"
    ))
    .with_name(TASK_NOT_FOUND)
}
