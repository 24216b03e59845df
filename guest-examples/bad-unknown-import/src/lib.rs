//! A component kiln must refuse at deploy: it exports the `kiln:task/task` world properly but
//! also imports `example:unknown/thing`, an interface kiln does not provide.
//!
//! Written with raw `wit-bindgen` (not the SDK) because its world is not kiln's: the world
//! below includes `kiln:task/task` (from the repository's `wit/` folder) and adds the import,
//! whose package lives in this crate's `wit/` folder. `run()` calls `ping()` so the import is
//! not dropped when the component is linked.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    inline: "
        package example:bad-unknown-import;

        world task-with-unknown-import {
            include kiln:task/task@0.1.0;
            import example:unknown/thing;
        }
    ",
    world: "example:bad-unknown-import/task-with-unknown-import",
    // Generate bindings for the interfaces of the other packages too (kiln:task, example:unknown).
    generate_all,
});

use example::unknown::thing;

struct Component;

impl Guest for Component {
    fn definitions() -> Vec<TaskDefinition> {
        vec![TaskDefinition {
            id: "ping".to_string(),
            description: Some("Calls an import kiln does not provide".to_string()),
            queue: None,
            retry: None,
            max_duration_ms: None,
            ttl_ms: None,
            machine: None,
            schedule: None,
        }]
    }

    fn run(_task_id: String, _payload: String, _ctx: RunContext) -> Result<String, TaskError> {
        Ok(format!("{{\"pong\":{}}}", thing::ping()))
    }
}

export!(Component);
