//! A component whose `run` hands the host bytes that are not UTF-8 as its output string.
//!
//! Written with raw `wit-bindgen`, because the SDK only ever returns valid JSON. The host must
//! turn the bad value into a failed run, never into a host error.

wit_bindgen::generate!({
    path: "../../wit",
    world: "kiln:task/task",
});

struct Component;

impl Guest for Component {
    fn definitions() -> Vec<TaskDefinition> {
        vec![TaskDefinition {
            id: "bad-utf8".to_string(),
            description: Some("Returns output that is not UTF-8".to_string()),
            queue: None,
            retry: None,
            max_duration_ms: None,
            ttl_ms: None,
            machine: None,
            schedule: None,
        }]
    }

    fn run(_task_id: String, _payload: String, _ctx: RunContext) -> Result<String, TaskError> {
        // SAFETY: deliberately not safe — the point is to hand the host invalid UTF-8.
        Ok(unsafe { String::from_utf8_unchecked(vec![b'"', 0xff, 0xfe, b'"']) })
    }
}

export!(Component);
