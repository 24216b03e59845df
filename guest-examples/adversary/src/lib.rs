//! Adversarial tasks: each pushes one sandbox limit, so the host's tests can check the limit is
//! obeyed (a legal amount) and enforced (too much). None of them is retried on an ordinary crash,
//! to keep the tests short.
//!
//! | task        | payload                  | does                                                          |
//! |-------------|--------------------------|---------------------------------------------------------------|
//! | `loop`      | anything                 | loops forever (ends by fuel, time limit or cancel)             |
//! | `alloc`     | `{"mb": N}`              | allocates and touches N MiB in 1 MiB chunks; `{"mb": N}` back |
//! | `alloc-oom-retry` | `{"mb": N}`        | as `alloc`; out of memory retries once on `small-2x`          |
//! | `recurse`   | `{"depth": N}`           | recurses N frames deep; `{"depth": N}` back                   |
//! | `log-flood` | `{"lines": N}`           | logs N lines (half via `log`, half via stdout)                |
//! | `output`    | `{"mb": N}`              | returns a JSON string of N MiB                                |
//! | `oob`       | anything                 | reads far outside linear memory (a trap)                      |
//! | `divide`    | `{"by": N}`              | 100 / N (N = 0 panics)                                        |
//! | `log-effects` | `{"lines"?, "pause_ms"?, "effects"?, "wait_ms"?, "after"?}` | logs `lines` lines, pauses, then `effects` times logs an empty line and changes its metadata, waits `wait_ms`, logs `after` lines |
//! | `reserve`   | `{"mb": N, "then": T}`   | tries to reserve N MiB (`try_reserve`); if refused, logs it and then: `panic`, `alloc` (until out of memory), `expect` (panics at once, logging nothing) or `return` |
//! | `file-times` | `{"wait_ms": N}`        | writes `/tmp/a.txt`, reads its times and identity, waits N ms, reads them again, writes `/tmp/b.txt` and reads its time (logging the first reading) |
//! | `bad-token` | `{"wait_ms": N}`         | asks for a wait token with 11 tags (refused), waits N ms; `{"refused": why}` |
//! | `sockets`   | `{"connect": "ip:port"}` | tries a TCP connect, a TCP listener, a UDP socket and a name lookup; each outcome back |

use std::hint::black_box;

use kiln_sdk::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

kiln_sdk::tasks![
    Task::new("loop", spin_forever).retry(Retry::never()),
    Task::new("alloc", alloc).retry(Retry::never()),
    Task::new("alloc-oom-retry", alloc).retry(
        Retry::attempts(2)
            .min_timeout_ms(100)
            .randomize(false)
            .out_of_memory_machine("small-2x")
    ),
    Task::new("recurse", recurse).retry(Retry::never()),
    Task::new("log-flood", log_flood).retry(Retry::never()),
    Task::new("output", output).retry(Retry::never()),
    Task::new("oob", oob).retry(Retry::never()),
    Task::new("divide", divide).retry(Retry::never()),
    Task::new("log-effects", log_effects).retry(Retry::never()),
    Task::new("reserve", reserve).retry(Retry::never()),
    Task::new("bad-token", bad_token).retry(Retry::never()),
    Task::new("file-times", file_times).retry(Retry::never()),
    Task::new("sockets", sockets).retry(Retry::never()),
];

fn spin_forever(_payload: IgnoredAny, _ctx: &Context) -> Result<(), TaskError> {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

#[derive(Deserialize)]
struct Mb {
    mb: usize,
}

fn alloc(payload: Mb, _ctx: &Context) -> Result<Value, TaskError> {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..payload.mb {
        // Touch every page so the memory is really used, not just reserved.
        chunks.push(vec![(i % 251) as u8 + 1; CHUNK]);
    }
    black_box(&chunks);
    Ok(json!({ "mb": chunks.len() }))
}

#[derive(Deserialize)]
struct Depth {
    depth: u64,
}

fn down(n: u64) -> u64 {
    // The array keeps each frame large and `black_box` keeps the recursion from being optimized.
    let frame = black_box([n; 16]);
    if n == 0 {
        frame[0]
    } else {
        black_box(down(n - 1) + frame[1] - n + 1)
    }
}

fn recurse(payload: Depth, _ctx: &Context) -> Result<Value, TaskError> {
    let reached = down(payload.depth);
    Ok(json!({ "depth": payload.depth, "reached": reached }))
}

#[derive(Deserialize)]
struct Lines {
    lines: u64,
}

fn log_flood(payload: Lines, _ctx: &Context) -> Result<Value, TaskError> {
    for i in 0..payload.lines {
        if i % 2 == 0 {
            kiln_sdk::info!("flood line {i}");
        } else {
            println!("flood line {i}");
        }
    }
    Ok(json!({ "lines": payload.lines }))
}

fn output(payload: Mb, _ctx: &Context) -> Result<String, TaskError> {
    Ok("x".repeat(payload.mb << 20))
}

fn oob(_payload: IgnoredAny, _ctx: &Context) -> Result<u64, TaskError> {
    // The top of the 32-bit address space is beyond any memory a task gets: the read traps.
    let far = black_box(0xFFFF_FFF0usize) as *const u64;
    // SAFETY: deliberately not safe — this guest exists to show the host contains the trap.
    Ok(unsafe { far.read_volatile() })
}

#[derive(Deserialize)]
struct By {
    by: i64,
}

fn divide(payload: By, _ctx: &Context) -> Result<i64, TaskError> {
    Ok(black_box(100) / black_box(payload.by))
}

#[derive(Deserialize)]
struct WaitMs {
    wait_ms: u64,
}

/// A refused request must replay as refused: the wait after it checkpoints the run.
fn bad_token(payload: WaitMs, _ctx: &Context) -> Result<Value, TaskError> {
    use kiln_sdk::wait::{self, TokenOptions};
    let refused = match wait::create_token(TokenOptions {
        tags: (0..11).map(|i| format!("tag-{i}")).collect(),
        ..TokenOptions::default()
    }) {
        Ok(token) => return Err(TaskError::abort(format!("token {} was made", token.id))),
        Err(e) => e.to_string(),
    };
    wait::for_duration(std::time::Duration::from_millis(payload.wait_ms));
    Ok(json!({ "refused": refused }))
}

#[derive(Deserialize)]
struct LogEffects {
    #[serde(default)]
    lines: u64,
    #[serde(default)]
    pause_ms: u64,
    #[serde(default)]
    effects: u64,
    #[serde(default)]
    wait_ms: u64,
    #[serde(default)]
    after: u64,
}

/// Every effect (here a metadata change) stores the log lines written before it; the per-attempt
/// log cap must hold however often that happens, for empty lines too, and across a checkpoint.
fn log_effects(payload: LogEffects, _ctx: &Context) -> Result<Value, TaskError> {
    use std::time::Duration;
    for i in 0..payload.lines {
        kiln_sdk::info!("line {i}");
    }
    if payload.pause_ms > 0 {
        kiln_sdk::wait::for_duration(Duration::from_millis(payload.pause_ms));
    }
    for _ in 0..payload.effects {
        kiln_sdk::log::info("");
        kiln_sdk::metadata::current()
            .increment("effects", 1.0)
            .map_err(|e| TaskError::abort(e.to_string()))?;
    }
    if payload.wait_ms > 0 {
        kiln_sdk::wait::for_duration(Duration::from_millis(payload.wait_ms));
    }
    for i in 0..payload.after {
        kiln_sdk::info!("after {i}");
    }
    Ok(json!({ "lines": payload.lines, "effects": payload.effects, "after": payload.after }))
}

#[derive(Deserialize)]
struct Reserve {
    mb: usize,
    then: String,
}

/// A refused reservation the guest goes on from must not make a later, unrelated trap an
/// out-of-memory; running out of memory after it must still be one.
fn reserve(payload: Reserve, ctx: &Context) -> Result<Value, TaskError> {
    let mut buffer: Vec<u8> = Vec::new();
    let refused = buffer.try_reserve_exact(payload.mb << 20);
    if payload.then == "expect" {
        refused.clone().expect("the reservation was refused");
    }
    if refused.is_err() {
        kiln_sdk::warn!("could not reserve {} MiB; going on without", payload.mb);
    }
    match payload.then.as_str() {
        "panic" => panic!("an unrelated bug after the refused reservation"),
        "alloc" => {
            alloc(Mb { mb: usize::MAX }, ctx)?;
        }
        _ => {}
    }
    Ok(json!({ "refused": refused.is_err() }))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A file time as text, `seconds.nanoseconds` (exact, unlike a JSON number past 2^53).
fn time_text(t: Option<wasip2::filesystem::types::Datetime>) -> String {
    t.map_or("none".into(), |t| {
        format!("{}.{:09}", t.seconds, t.nanoseconds)
    })
}

/// File times and identities the guest reads under `/tmp` must replay like any other reading,
/// and follow the run's clock.
fn file_times(payload: WaitMs, _ctx: &Context) -> Result<Value, TaskError> {
    use wasip2::filesystem::preopens;
    use wasip2::filesystem::types::{Descriptor, PathFlags};
    let failed = |e: wasip2::filesystem::types::ErrorCode| TaskError::abort(format!("{e:?}"));
    let tmp: Descriptor = preopens::get_directories()
        .into_iter()
        .find_map(|(dir, path)| (path == "/tmp").then_some(dir))
        .ok_or_else(|| TaskError::abort("no /tmp"))?;
    let read = |name: &str| -> Result<(String, String, String), TaskError> {
        let stat = tmp.stat_at(PathFlags::empty(), name).map_err(failed)?;
        let hash = tmp
            .metadata_hash_at(PathFlags::empty(), name)
            .map_err(failed)?;
        // Through std as well: a descriptor's own stat and hash.
        let std_modified = std::fs::File::open(format!("/tmp/{name}"))
            .and_then(|f| f.metadata())
            .and_then(|m| m.modified())
            .map_err(|e| TaskError::abort(e.to_string()))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok((
            time_text(stat.data_modification_timestamp),
            format!("{:x}.{:x}", hash.upper, hash.lower),
            std_modified.to_string(),
        ))
    };
    let before_ms = wall_ms();
    std::fs::write("/tmp/a.txt", "a").map_err(|e| TaskError::abort(e.to_string()))?;
    let (modified, hash, std_modified) = read("a.txt")?;
    kiln_sdk::info!("a.txt: modified {modified}, hash {hash}, std {std_modified}");
    kiln_sdk::wait::for_duration(std::time::Duration::from_millis(payload.wait_ms));
    let (modified_after, hash_after, _) = read("a.txt")?;
    std::fs::write("/tmp/b.txt", "b").map_err(|e| TaskError::abort(e.to_string()))?;
    let (b_modified, b_hash, _) = read("b.txt")?;
    Ok(json!({
        "before_ms": before_ms,
        "modified": modified,
        "hash": hash,
        "std_modified": std_modified,
        "modified_after": modified_after,
        "hash_after": hash_after,
        "b_modified": b_modified,
        "b_hash": b_hash,
        "after_ms": wall_ms(),
    }))
}

/// Payload of `sockets`.
#[derive(Deserialize)]
struct Connect {
    connect: String,
}

/// Every way out through `wasi:sockets`, as a task's own code would try it: each outcome is
/// `"ok"` or the error's kind.
fn sockets(payload: Connect, _ctx: &Context) -> Result<Value, TaskError> {
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    fn outcome<T>(r: std::io::Result<T>) -> Value {
        match r {
            Ok(_) => Value::from("ok"),
            Err(e) => Value::from(format!("{:?}: {e}", e.kind())),
        }
    }
    Ok(json!({
        "tcp_connect": outcome(TcpStream::connect(payload.connect.as_str())),
        "tcp_listen": outcome(TcpListener::bind("127.0.0.1:0")),
        "udp_bind": outcome(UdpSocket::bind("127.0.0.1:0")),
        "lookup": outcome(("localhost", 80).to_socket_addrs()),
    }))
}
