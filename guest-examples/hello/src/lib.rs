//! The example kiln task component. One component, fifteen tasks, each showing one behaviour a
//! task can have:
//!
//! | task    | does                                                                              |
//! |---------|-----------------------------------------------------------------------------------|
//! | `hello` | `{"name": "Ada"}` → `{"message": "Hello, Ada!"}`; logs and prints to stdout        |
//! | `flaky` | fails on attempt 1, succeeds on attempt 2+ with `{"attempt": N}`                   |
//! | `abort` | fails with an abort (never retried)                                               |
//! | `panic` | panics, which traps the component                                                 |
//! | `echo`  | returns its payload unchanged                                                     |
//! | `fail`  | always fails with an ordinary error; 2 attempts                                   |
//! | `spin`  | `{"ms": N}`: keeps the CPU busy for N milliseconds, then returns `{"spun": N}`     |
//! | `limited`, `limited-too` | `spin` on the shared queue `limited` (at most 2 at once)          |
//! | `single` | `spin` on its own queue, limited to 1 at once                                     |
//! | `approve` | `{"timeout_ms"?, "key"?}`: makes a wait token, waits for it; returns `{"token", "data"}` or `{"token", "timed_out"}` |
//! | `parent` | `{"items": [[task, payload, key?]…], "wait": bool}`: triggers the items as child runs; with `wait`, returns each child's `{"id", "ok"}` or `{"id", "error"}` in order, else their ids |
//! | `progress` | counts `steps` in metadata (this run's, and its parent's `children_done`), waiting `ms` after each step |
//! | `wait`  | `{"ms": N, "times": K, "spin_ms": S}`: reads the clock and randomness, then K times waits N ms and spins S ms; returns what it read |
//! | `new-year` | scheduled: fires at midnight on 1 January in Berlin; returns its schedule payload |

use kiln_sdk::prelude::*;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

kiln_sdk::tasks![
    Task::new("hello", hello).description("Greets someone by name"),
    Task::new("flaky", flaky)
        .description("Fails on the first attempt and succeeds on the next")
        .retry(
            Retry::attempts(3)
                .min_timeout_ms(100)
                .max_timeout_ms(1000)
                .factor(2.0)
                .randomize(false)
        ),
    Task::new("abort", abort).description("Always aborts, so it is never retried"),
    Task::new("panic", panic)
        .description("Always panics")
        .retry(Retry::attempts(2).min_timeout_ms(100).randomize(false)),
    Task::new("echo", echo).description("Returns its payload unchanged"),
    Task::new("fail", fail)
        .description("Always fails with an ordinary error")
        .retry(Retry::attempts(2).min_timeout_ms(100).randomize(false)),
    Task::new("spin", spin).description("Keeps the CPU busy for `ms` milliseconds"),
    Task::new("limited", spin)
        .description("Spins on the queue `limited`, which runs at most 2 at once")
        .queue(Queue::named("limited").concurrency_limit(2)),
    Task::new("limited-too", spin)
        .description("Spins on the queue `limited` too")
        .queue(Queue::named("limited").concurrency_limit(2)),
    Task::new("single", spin)
        .description("Spins on its own queue, one at a time")
        .queue_concurrency_limit(1),
    Task::new("wait", wait).description("Reads the clock and randomness, then waits"),
    Task::new("approve", approve).description("Waits for a wait token to be completed"),
    Task::new("parent", parent).description("Triggers child runs, and waits for them if asked"),
    Task::new("progress", progress).description("Counts its steps in metadata"),
    Task::new("fetch", fetch)
        .description("GETs each URL, waiting between them if asked; reports statuses and bodies"),
    Task::new("scratch", scratch)
        .description("Writes to /tmp, waits if asked, reads back, and tries to leave /tmp"),
    Task::new("env", env).description(
        "Reports the length and byte sum of environment variables (never their values), before and after a wait"
    ),
    Task::new("new-year", echo)
        .description("Returns its schedule payload; fires at midnight on New Year's Day in Berlin")
        .schedule(Schedule::cron("0 0 1 1 *").timezone("Europe/Berlin")),
];

/// Payload of `hello`; `null`, `{}` and a missing name all greet the world.
#[derive(Deserialize)]
struct HelloPayload {
    #[serde(default)]
    name: Option<String>,
}

/// Output of `hello`.
#[derive(Serialize)]
struct HelloOutput {
    message: String,
}

fn hello(payload: Option<HelloPayload>, _ctx: &Context) -> Result<HelloOutput, TaskError> {
    let name = payload
        .and_then(|p| p.name)
        .unwrap_or_else(|| "world".to_string());
    kiln_sdk::info!("greeting {name}");
    println!("hello from stdout");
    Ok(HelloOutput {
        message: format!("Hello, {name}!"),
    })
}

/// Output of `flaky`.
#[derive(Serialize)]
struct FlakyOutput {
    attempt: u32,
}

fn flaky(_payload: IgnoredAny, ctx: &Context) -> Result<FlakyOutput, TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::error("attempt 1 failed on purpose"));
    }
    Ok(FlakyOutput {
        attempt: ctx.attempt(),
    })
}

fn abort(_payload: IgnoredAny, _ctx: &Context) -> Result<(), TaskError> {
    Err(TaskError::abort("aborted on purpose"))
}

fn panic(_payload: IgnoredAny, _ctx: &Context) -> Result<(), TaskError> {
    panic!("panicked on purpose")
}

fn echo(payload: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(payload)
}

fn fail(_payload: IgnoredAny, _ctx: &Context) -> Result<(), TaskError> {
    Err(TaskError::error("failed on purpose"))
}

/// Payload and output of `spin`.
#[derive(Deserialize, Serialize)]
struct Spin {
    ms: u64,
}

#[derive(Serialize)]
struct Spun {
    spun: u64,
}

fn spin(payload: Spin, _ctx: &Context) -> Result<Spun, TaskError> {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(payload.ms);
    let mut counter = 0u64;
    while std::time::Instant::now() < until {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
    Ok(Spun { spun: payload.ms })
}

/// Payload of `wait`.
#[derive(Deserialize)]
struct WaitPayload {
    ms: u64,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    spin_ms: u64,
}

fn one() -> u32 {
    1
}

/// Output of `wait`: what the task read before its first wait, and when it finished.
#[derive(Serialize)]
struct Waited {
    before_ms: u64,
    random: u64,
    after_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn wait(payload: WaitPayload, ctx: &Context) -> Result<Waited, TaskError> {
    use std::hash::{BuildHasher, Hasher};
    let before_ms = now_ms();
    // `RandomState` draws its keys from WASI randomness.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(42);
    let random = hasher.finish();
    kiln_sdk::info!("before the wait: clock {before_ms}, random {random}");
    for i in 0..payload.times {
        kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.ms));
        kiln_sdk::info!("after wait {}", i + 1);
        spin(
            Spin {
                ms: payload.spin_ms,
            },
            ctx,
        )?;
    }
    Ok(Waited {
        before_ms,
        random,
        after_ms: now_ms(),
    })
}

/// Payload of `approve`.
#[derive(Deserialize)]
struct ApprovePayload {
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    key: Option<String>,
}

fn approve(payload: ApprovePayload, _ctx: &Context) -> Result<Value, TaskError> {
    use kiln_sdk::wait::{self, TokenError, TokenOptions};
    let token = wait::create_token(TokenOptions {
        timeout: payload.timeout_ms.map(std::time::Duration::from_millis),
        idempotency_key: payload.key,
        tags: vec!["approval".into()],
        ..TokenOptions::default()
    })
    .map_err(|e| TaskError::abort(e.to_string()))?;
    kiln_sdk::info!("waiting for token {}", token.id);
    match wait::for_token::<Value>(&token.id) {
        Ok(data) => Ok(serde_json::json!({ "token": token.id, "data": data })),
        Err(TokenError::TimedOut(message)) => {
            Ok(serde_json::json!({ "token": token.id, "timed_out": message }))
        }
        Err(e) => Err(TaskError::abort(e.to_string())),
    }
}

/// Payload of `parent`.
#[derive(Deserialize)]
struct ParentPayload {
    items: Vec<ChildSpec>,
    #[serde(default)]
    wait: bool,
    /// Wrap each child's payload as `{"payload": …, "pad": "xx…"}` with this many bytes of pad
    /// (to make payloads bigger than the parent's own).
    #[serde(default)]
    pad: usize,
}

/// `[task, payload]`, `[task, payload, idempotency key]`, or `{task, payload, options}` with the
/// trigger options a child may have.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChildSpec {
    Keyed(String, Value, String),
    Plain(String, Value),
    WithOptions {
        task: String,
        payload: Value,
        options: ChildOptions,
    },
}

/// A child's trigger options, as the parent was told to give them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ChildOptions {
    idempotency_key: Option<String>,
    tags: Vec<String>,
    queue: Option<String>,
    concurrency_key: Option<String>,
    max_attempts: Option<u32>,
    metadata: Option<Value>,
}

fn parent(payload: ParentPayload, _ctx: &Context) -> Result<Value, TaskError> {
    use kiln_sdk::child::{self, Item};
    let pad = payload.pad;
    let padded = |child: Value| {
        if pad == 0 {
            child
        } else {
            serde_json::json!({ "payload": child, "pad": "x".repeat(pad) })
        }
    };
    let items: Vec<Item> = payload
        .items
        .into_iter()
        .map(|spec| match spec {
            ChildSpec::Plain(task, child) => Item::new(task, padded(child)),
            ChildSpec::Keyed(task, child, key) => {
                let mut item = Item::new(task, padded(child));
                item.options.idempotency_key = Some(key);
                item
            }
            ChildSpec::WithOptions {
                task,
                payload,
                options,
            } => {
                let mut item = Item::new(task, padded(payload));
                item.options.idempotency_key = options.idempotency_key;
                item.options.tags = options.tags;
                item.options.queue = options.queue;
                item.options.concurrency_key = options.concurrency_key;
                item.options.max_attempts = options.max_attempts;
                item.options.metadata = options.metadata;
                item
            }
        })
        .collect();
    kiln_sdk::info!("triggering {} children", items.len());
    if !payload.wait {
        let runs = child::batch_trigger(items).map_err(|e| TaskError::abort(e.to_string()))?;
        return Ok(Value::from(
            runs.into_iter()
                .map(|r| Value::from(r.id))
                .collect::<Vec<_>>(),
        ));
    }
    let done = child::batch_trigger_and_wait::<Value>(items)
        .map_err(|e| TaskError::abort(e.to_string()))?;
    kiln_sdk::info!("all {} children ended", done.len());
    Ok(Value::from(
        done.into_iter()
            .map(|d| match d.result {
                Ok(output) => serde_json::json!({ "id": d.id, "ok": output }),
                Err(e) => serde_json::json!({ "id": d.id, "error": e.message }),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Payload of `progress`.
#[derive(Deserialize)]
struct ProgressPayload {
    steps: u32,
    #[serde(default)]
    ms: u64,
}

fn progress(payload: ProgressPayload, _ctx: &Context) -> Result<Value, TaskError> {
    use kiln_sdk::metadata;
    let fail = |e: metadata::MetadataError| TaskError::abort(e.to_string());
    metadata::current().set("status", "started").map_err(fail)?;
    for _ in 0..payload.steps {
        metadata::current().increment("steps", 1.0).map_err(fail)?;
        metadata::current().append("log", "step").map_err(fail)?;
        if payload.ms > 0 {
            kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.ms));
        }
    }
    metadata::parent()
        .increment("children_done", 1.0)
        .map_err(fail)?;
    if metadata::current().set("$.__proto__.x", 1).is_ok() {
        return Err(TaskError::abort("a forbidden key was accepted"));
    }
    Ok(metadata::current().get())
}

/// Payload of `env`.
#[derive(Deserialize)]
struct EnvPayload {
    names: Vec<String>,
    #[serde(default)]
    wait_ms: u64,
}

/// What a task may show of a secret: whether it is set, its length and the sum of its bytes.
fn fingerprint(names: &[String]) -> Value {
    let mut seen = serde_json::Map::new();
    for name in names {
        let value = match std::env::var(name) {
            Ok(v) => serde_json::json!({
                "len": v.len(),
                "sum": v.bytes().map(u64::from).sum::<u64>(),
            }),
            Err(_) => Value::Null,
        };
        seen.insert(name.clone(), value);
    }
    Value::Object(seen)
}

fn env(payload: EnvPayload, _ctx: &Context) -> Result<Value, TaskError> {
    let before = fingerprint(&payload.names);
    if payload.wait_ms > 0 {
        kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.wait_ms));
    }
    let after = fingerprint(&payload.names);
    Ok(serde_json::json!({ "before": before, "after": after }))
}

/// Payload of `fetch`.
#[derive(Deserialize)]
struct FetchPayload {
    urls: Vec<String>,
    /// Wait this long between requests (a checkpoint when over the host's threshold).
    #[serde(default)]
    wait_ms: u64,
    /// Send a stable `Idempotency-Key` with each request.
    #[serde(default)]
    idempotent: bool,
}

fn fetch(payload: FetchPayload, ctx: &Context) -> Result<Value, TaskError> {
    use kiln_sdk::http::{HttpError, Request};
    let mut results = Vec::new();
    for (i, url) in payload.urls.iter().enumerate() {
        if i > 0 && payload.wait_ms > 0 {
            kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.wait_ms));
        }
        let mut request = Request::get(url);
        if payload.idempotent {
            request = request.idempotent(ctx, &format!("fetch-{i}"));
        }
        results.push(match request.send() {
            Ok(r) => serde_json::json!({
                "status": r.status,
                "body": String::from_utf8_lossy(&r.body),
            }),
            Err(e) => serde_json::json!({
                "error": e.to_string(),
                "denied": e == HttpError::Denied,
            }),
        });
    }
    Ok(Value::from(results))
}

/// Payload of `scratch`.
#[derive(Deserialize)]
struct ScratchPayload {
    /// KiB to write to /tmp/data.bin.
    write_kb: usize,
    /// Wait this long after writing (a checkpoint when over the host's threshold).
    #[serde(default)]
    wait_ms: u64,
}

fn scratch(payload: ScratchPayload, _ctx: &Context) -> Result<Value, TaskError> {
    use std::io::Write;
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => Value::from("ok"),
        Err(e) => Value::from(format!("{:?}", e.kind())),
    };
    let wrote = outcome(std::fs::write(
        "/tmp/data.bin",
        vec![7u8; payload.write_kb << 10],
    ));
    // Appending is not idempotent: a replay must not leave two lines.
    let appended = outcome(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/tmp/log.txt")
            .and_then(|mut f| f.write_all(b"written once\n")),
    );
    if payload.wait_ms > 0 {
        kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.wait_ms));
    }
    let size = std::fs::metadata("/tmp/data.bin").map_or(0, |m| m.len());
    let log = std::fs::read_to_string("/tmp/log.txt").unwrap_or_default();
    // Ways out of /tmp, each of which must fail.
    let escapes: Vec<Value> = [
        std::fs::read("/etc/passwd").map(drop),
        std::fs::read("/tmp/../etc/passwd").map(drop),
        std::fs::read("../etc/passwd").map(drop),
        symlink_then_open("/etc", "out", "out/passwd"),
        symlink_then_open("../..", "up", "up/etc/passwd"),
    ]
    .into_iter()
    .map(outcome)
    .collect();
    Ok(serde_json::json!({
        "wrote": wrote,
        "appended": appended,
        "size": size,
        "log": log,
        "escapes": escapes,
    }))
}

/// Makes the symlink `name` → `target` in /tmp, then opens `path` through it (from /tmp).
fn symlink_then_open(target: &str, name: &str, path: &str) -> std::io::Result<()> {
    use wasip2::filesystem::preopens;
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let failed = |e: wasip2::filesystem::types::ErrorCode| std::io::Error::other(format!("{e:?}"));
    let (tmp, _) = preopens::get_directories()
        .into_iter()
        .find(|(_, at)| at == "/tmp")
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    tmp.symlink_at(target, name).map_err(failed)?;
    tmp.open_at(
        PathFlags::SYMLINK_FOLLOW,
        path,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    )
    .map(drop)
    .map_err(failed)
}
