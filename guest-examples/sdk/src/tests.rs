//! Unit tests of the SDK that run natively (`cargo test -p kiln-sdk`): everything except the
//! log import, which only exists inside a kiln component.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::__private;
use crate::bindings::kiln::task::types as wit;
use crate::{Context, ErrorKind, Queue, Retry, Schedule, Task, TaskError};

fn run_context(task_id: &str, attempt: u32) -> wit::RunContext {
    wit::RunContext {
        run_id: "run_1".into(),
        task_id: task_id.into(),
        attempt,
        version: "20261130.1".into(),
        environment: "dev".into(),
        tags: vec!["a".into(), "b".into()],
        idempotency_key: Some("key".into()),
        queue: format!("task/{task_id}"),
        machine: "small-1x".into(),
        parent_run_id: None,
        root_run_id: None,
        created_at_ms: 1_700_000_000_000,
    }
}

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

fn greet(p: Greet, ctx: &Context) -> Result<Greeting, TaskError> {
    Ok(Greeting {
        message: format!("Hello, {}! ({})", p.name, ctx.attempt()),
    })
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("greet", greet),
        Task::new("echo", |p: Value, _: &Context| Ok(p)),
        Task::new("fails", |_: Value, _: &Context| -> Result<(), _> {
            Err(TaskError::abort("no")
                .with_name("Nope")
                .with_stack("at fails"))
        }),
        // A map with non-string keys cannot be serialized to JSON.
        Task::new("bad-output", |_: Value, _: &Context| {
            Ok(BTreeMap::from([((1, 2), 3)]))
        }),
    ]
}

fn info(e: wit::TaskError) -> (bool, wit::ErrorInfo) {
    match e {
        wit::TaskError::Error(i) => (false, i),
        wit::TaskError::Abort(i) => (true, i),
    }
}

#[test]
fn runs_the_task_with_the_requested_id() {
    let out = __private::run(
        tasks(),
        "greet".into(),
        r#"{"name":"Ada"}"#.into(),
        run_context("greet", 2),
    );
    assert_eq!(out.unwrap(), r#"{"message":"Hello, Ada! (2)"}"#);
    let out = __private::run(
        tasks(),
        "echo".into(),
        r#"[1,{"x":null}]"#.into(),
        run_context("echo", 1),
    );
    assert_eq!(out.unwrap(), r#"[1,{"x":null}]"#);
}

#[test]
fn unknown_task_is_an_abort_named_task_not_found() {
    let err =
        __private::run(tasks(), "nope".into(), "{}".into(), run_context("nope", 1)).unwrap_err();
    let (abort, info) = info(err);
    assert!(abort);
    assert_eq!(info.name, "TaskNotFound");
    assert!(info.message.contains("`nope`"), "{}", info.message);
    assert!(info.message.contains("greet, echo"), "{}", info.message);
}

#[test]
fn bad_payload_is_an_abort_named_task_payload_parsed_error() {
    let err = __private::run(
        tasks(),
        "greet".into(),
        r#"{"nom":1}"#.into(),
        run_context("greet", 1),
    )
    .unwrap_err();
    let (abort, info) = info(err);
    assert!(abort);
    assert_eq!(info.name, "TaskPayloadParsedError");
    assert!(
        info.message.contains("missing field `name`"),
        "{}",
        info.message
    );
}

#[test]
fn unserializable_output_is_an_error_named_task_output_error() {
    let err = __private::run(
        tasks(),
        "bad-output".into(),
        "null".into(),
        run_context("bad-output", 1),
    )
    .unwrap_err();
    let (abort, info) = info(err);
    assert!(!abort);
    assert_eq!(info.name, "TaskOutputError");
}

#[test]
fn handler_errors_keep_kind_name_and_stack() {
    let err =
        __private::run(tasks(), "fails".into(), "1".into(), run_context("fails", 1)).unwrap_err();
    let (abort, info) = info(err);
    assert!(abort);
    assert_eq!((info.name.as_str(), info.message.as_str()), ("Nope", "no"));
    assert_eq!(info.stack.as_deref(), Some("at fails"));
}

#[test]
fn definitions_keep_order_and_every_field() {
    let list = vec![
        Task::new("a", |_: Value, _: &Context| Ok(()))
            .description("first")
            .queue(Queue::named("shared").concurrency_limit(4))
            .retry(
                Retry::attempts(3)
                    .factor(2.0)
                    .min_timeout_ms(100)
                    .max_timeout_ms(1000)
                    .randomize(false)
                    .out_of_memory_machine("large-1x"),
            )
            .max_duration(Duration::from_secs(30))
            .ttl(Duration::from_millis(1500))
            .machine("small-2x"),
        Task::new("b", |_: Value, _: &Context| Ok(())),
    ];
    let defs = __private::definitions(list);
    assert_eq!(defs.len(), 2);
    let a = &defs[0];
    assert_eq!(a.id, "a");
    assert_eq!(a.description.as_deref(), Some("first"));
    let q = a.queue.as_ref().unwrap();
    assert_eq!((q.name.as_str(), q.concurrency_limit), ("shared", Some(4)));
    let r = a.retry.as_ref().unwrap();
    assert_eq!(r.max_attempts, Some(3));
    assert_eq!(r.factor, Some(2.0));
    assert_eq!(r.min_timeout_ms, Some(100));
    assert_eq!(r.max_timeout_ms, Some(1000));
    assert_eq!(r.randomize, Some(false));
    assert_eq!(r.out_of_memory_machine.as_deref(), Some("large-1x"));
    assert_eq!(a.max_duration_ms, Some(30_000));
    assert_eq!(a.ttl_ms, Some(1500));
    assert_eq!(a.machine.as_deref(), Some("small-2x"));
    let b = &defs[1];
    assert_eq!(b.id, "b");
    assert!(b.description.is_none() && b.queue.is_none() && b.retry.is_none());
    assert!(b.max_duration_ms.is_none() && b.ttl_ms.is_none() && b.machine.is_none());
}

#[test]
fn concurrency_limit_without_a_queue_limits_the_tasks_own_queue() {
    let noop = |_: Value, _: &Context| Ok(());
    let q = Task::new("t", noop)
        .queue_concurrency_limit(2)
        .definition()
        .queue
        .unwrap();
    assert_eq!((q.name.as_str(), q.concurrency_limit), ("task/t", Some(2)));
    let q = Task::new("t", noop)
        .queue_concurrency_limit(2)
        .queue("named")
        .definition()
        .queue
        .unwrap();
    assert_eq!((q.name.as_str(), q.concurrency_limit), ("named", Some(2)));
}

#[test]
fn std_errors_convert_with_question_mark() {
    fn parse(s: &str) -> Result<u32, TaskError> {
        Ok(s.parse::<u32>()?)
    }
    let err = parse("x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Error);
    assert!(err.name().ends_with("ParseIntError"), "{}", err.name());
    assert_eq!(err.message(), "invalid digit found in string");
    assert_eq!(err.stack(), None);

    let json_err = serde_json::from_str::<Value>("{").unwrap_err();
    let err = TaskError::from(json_err);
    assert!(err.name().starts_with("serde_json"), "{}", err.name());
    assert!(!err.is_abort());
}

#[test]
fn error_sources_go_into_the_stack() {
    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err = TaskError::from(Outer("x".parse::<u32>().unwrap_err()));
    assert_eq!(err.message(), "outer failed");
    assert_eq!(
        err.stack(),
        Some("Caused by:\n    invalid digit found in string")
    );
    assert_eq!(err.to_string(), format!("{}: outer failed", err.name()));
}

#[test]
fn context_accessors() {
    let ctx = Context::from(run_context("greet", 3));
    assert_eq!(ctx.run_id(), "run_1");
    assert_eq!(ctx.task_id(), "greet");
    assert_eq!(ctx.attempt(), 3);
    assert_eq!(ctx.version(), "20261130.1");
    assert_eq!(ctx.environment(), "dev");
    assert_eq!(ctx.tags(), ["a", "b"]);
    assert_eq!(ctx.idempotency_key(), Some("key"));
    assert_eq!(ctx.queue(), "task/greet");
    assert_eq!(ctx.machine(), "small-1x");
    assert_eq!(ctx.parent_run_id(), None);
    assert_eq!(ctx.root_run_id(), None);
    assert_eq!(ctx.created_at_ms(), 1_700_000_000_000);
    assert_eq!(
        ctx.created_at(),
        std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
    );
}

#[test]
fn payload_helpers_accept_null_and_anything() {
    let ctx = Context::from(run_context("t", 1));
    let opt = Task::new("t", |p: Option<Greet>, _: &Context| Ok(p.map(|g| g.name)));
    assert_eq!(opt.invoke("null", &ctx).unwrap(), "null");
    let any = Task::new("t", |_: serde::de::IgnoredAny, _: &Context| {
        Ok(json!({"ok": true}))
    });
    assert_eq!(
        any.invoke(r#"{"whatever":[1,2]}"#, &ctx).unwrap(),
        r#"{"ok":true}"#
    );
}

#[test]
fn a_cron_schedule_goes_into_the_definition() {
    let noop = |_: Value, _: &Context| Ok(());
    let s = Task::new("t", noop)
        .cron("0 9 * * *")
        .definition()
        .schedule
        .unwrap();
    assert_eq!((s.cron.as_str(), s.timezone), ("0 9 * * *", None));
    let s = Task::new("t", noop)
        .schedule(Schedule::cron("30 2 * * *").timezone("Europe/Berlin"))
        .definition()
        .schedule
        .unwrap();
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_deref()),
        ("30 2 * * *", Some("Europe/Berlin"))
    );
    assert!(Task::new("t", noop).definition().schedule.is_none());
}
