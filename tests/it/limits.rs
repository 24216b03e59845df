//! Sandbox limits: whatever a guest does becomes a run status with a clear code and message, and
//! the host and other runs do not notice. Each limit is tested obeyed and violated.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::restart::ServeProcess;
use crate::support::{self, Options, TestHost, guests};

async fn adversary(options: Options) -> TestHost {
    let host = TestHost::start_with(options).await;
    host.deploy(guests::ADVERSARY).await;
    host
}

async fn run(host: &TestHost, task: &str, payload: Value) -> Value {
    let id = host.trigger(task, payload).await;
    host.wait_final(&id).await
}

fn message(run: &Value) -> &str {
    run["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_obeyed_and_exhausted() {
    let host = adversary(Options {
        fuel_budget: 200_000_000,
        ..Options::default()
    })
    .await;
    let ok = run(&host, "alloc", json!({ "mb": 1 })).await;
    assert_eq!(ok["status"], "COMPLETED", "{ok:#}");

    let looped = run(&host, "loop", json!(null)).await;
    assert_eq!(looped["status"], "CRASHED", "{looped:#}");
    assert_eq!(looped["error"]["code"], "FUEL_EXHAUSTED");
    assert_eq!(looped["attemptCount"], 1, "fuel exhaustion is not retried");
    let fuel = looped["usage"]["fuel"].as_u64().unwrap();
    assert!(fuel >= 200_000_000, "the whole budget was used: {fuel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_obeyed_and_violated() {
    let host = adversary(Options::default()).await;
    let ok = run(&host, "alloc", json!({ "mb": 100 })).await;
    assert_eq!(ok["status"], "COMPLETED", "{ok:#}");
    assert_eq!(ok["output"], json!({ "mb": 100 }));

    let bomb = run(&host, "alloc", json!({ "mb": 8192 })).await;
    assert_eq!(bomb["status"], "CRASHED", "{bomb:#}");
    assert_eq!(bomb["error"]["code"], "TASK_PROCESS_OOM_KILLED");
    assert!(
        message(&bomb).contains("the limit is 536870912 bytes"),
        "{}",
        message(&bomb)
    );
    assert_eq!(
        bomb["attemptCount"], 1,
        "no out-of-memory machine: no retry"
    );

    // The same work fits a bigger machine chosen at trigger time.
    let id = host
        .trigger_with(
            "alloc",
            json!({ "mb": 700 }),
            json!({ "machine": "small-2x" }),
        )
        .await;
    assert_eq!(host.wait_final(&id).await["status"], "COMPLETED");
}

/// A growth the machine refused makes the trap that follows it an out-of-memory, but not a trap
/// after the guest went on (here: it logged the refusal, then panicked for another reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trap_that_follows_a_denied_growth_is_out_of_memory() {
    let host = adversary(Options::default()).await;
    let reserve = |then: &str| json!({ "mb": 1024, "then": then });

    let recovered = run(&host, "reserve", reserve("return")).await;
    assert_eq!(recovered["status"], "COMPLETED", "{recovered:#}");
    assert_eq!(recovered["output"], json!({ "refused": true }));

    let panicked = run(&host, "reserve", reserve("panic")).await;
    assert_eq!(panicked["status"], "CRASHED", "{panicked:#}");
    assert_eq!(
        panicked["error"]["code"], "TASK_RUN_CRASHED",
        "{panicked:#}"
    );
    assert!(
        message(&panicked).contains("an unrelated bug"),
        "{panicked:#}"
    );

    for then in ["alloc", "expect"] {
        let oom = run(&host, "reserve", reserve(then)).await;
        assert_eq!(oom["status"], "CRASHED", "{then}: {oom:#}");
        assert_eq!(
            oom["error"]["code"], "TASK_PROCESS_OOM_KILLED",
            "{then}: {oom:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_retries_on_the_larger_machine() {
    let host = adversary(Options::default()).await;
    let run = run(&host, "alloc-oom-retry", json!({ "mb": 700 })).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attemptCount"], 2);
    assert_eq!(
        run["attempts"][0]["error"]["code"],
        "TASK_PROCESS_OOM_KILLED"
    );
    assert_eq!(run["machine"], "small-2x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_become_crashes_with_their_reason() {
    let host = adversary(Options::default()).await;
    let shallow = run(&host, "recurse", json!({ "depth": 100 })).await;
    assert_eq!(shallow["status"], "COMPLETED", "{shallow:#}");

    // Rust guests keep large frames on a shadow stack in linear memory, so a deep recursion ends
    // either on wasm's own stack limit or below the shadow stack's floor: both are crashes.
    let deep = run(&host, "recurse", json!({ "depth": 100_000_000 })).await;
    assert_eq!(deep["status"], "CRASHED", "{deep:#}");
    let why = message(&deep);
    assert!(
        why.contains("call stack exhausted") || why.contains("out of bounds memory access"),
        "{why}"
    );

    let oob = run(&host, "oob", json!(null)).await;
    assert_eq!(oob["status"], "CRASHED");
    assert!(
        message(&oob).contains("out of bounds memory access"),
        "{}",
        message(&oob)
    );

    let fine = run(&host, "divide", json!({ "by": 5 })).await;
    assert_eq!(fine["output"], json!(20));
    let zero = run(&host, "divide", json!({ "by": 0 })).await;
    assert_eq!(zero["status"], "CRASHED");
    assert!(
        message(&zero).contains("divide by zero"),
        "{}",
        message(&zero)
    );
    for crashed in [&deep, &oob, &zero] {
        assert_eq!(crashed["error"]["code"], "TASK_RUN_CRASHED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_limit_obeyed_and_violated() {
    let host = TestHost::start().await;
    let (status, body) = host.upload(support::wat_guest("table-bomb")).await;
    assert_eq!(status, 201, "{body:#}");

    let fits = run(&host, "table-bomb", json!(50_000)).await;
    assert_eq!(fits["status"], "COMPLETED", "{fits:#}");
    assert_eq!(fits["output"], json!(50_000));

    let bomb = run(&host, "table-bomb", json!(null)).await;
    assert_eq!(bomb["status"], "CRASHED", "{bomb:#}");
    assert_eq!(bomb["error"]["code"], "TASK_PROCESS_OOM_KILLED");
    assert!(
        message(&bomb).contains("a table asked for 1000001 elements, the limit is 1000000"),
        "{}",
        message(&bomb)
    );
    assert_eq!(bomb["attemptCount"], 1, "out of memory is not retried");

    // The host goes on running other work.
    let after = run(&host, "table-bomb", json!(10)).await;
    assert_eq!(after["status"], "COMPLETED", "{after:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_limit_obeyed_and_violated() {
    let host = adversary(Options::default()).await;
    let ok = run(&host, "output", json!({ "mb": 1 })).await;
    assert_eq!(ok["status"], "COMPLETED");
    assert_eq!(ok["output"].as_str().unwrap().len(), 1 << 20);

    let huge = run(&host, "output", json!({ "mb": 11 })).await;
    assert_eq!(huge["status"], "FAILED", "{:#}", huge["error"]);
    assert_eq!(huge["error"]["code"], "TASK_OUTPUT_ERROR");
    assert!(
        message(&huge).contains("the limit is 10485760 bytes"),
        "{}",
        message(&huge)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_fails_the_run() {
    let host = TestHost::start().await;
    host.deploy(guests::BAD_UTF8).await;
    let run = run(&host, "bad-utf8", json!(null)).await;
    assert!(run["isFailed"] == true, "{run:#}");
    assert!(
        message(&run).to_lowercase().contains("utf-8"),
        "{}",
        message(&run)
    );
    // The host is fine.
    let (status, _) = host.get("/api/v1/runs").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_capped_and_says_so() {
    let host = adversary(Options::default()).await;
    let small = run(&host, "log-flood", json!({ "lines": 100 })).await;
    let (_, logs) = host
        .get(&format!(
            "/api/v1/runs/{}/logs",
            small["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(logs["data"].as_array().unwrap().len(), 100);

    let flood = run(&host, "log-flood", json!({ "lines": 30_000 })).await;
    assert_eq!(flood["status"], "COMPLETED", "a flood is cut, not fatal");
    let id = flood["id"].as_str().unwrap();
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = host
            .get(&format!("/api/v1/runs/{id}/logs?after={after}"))
            .await;
        lines.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(lines.len(), 10_001, "10,000 lines and the note");
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "WARN");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("20000 log lines dropped"),
        "{last}"
    );
}

/// Every log line of a run, through all pages.
async fn all_logs(host: &TestHost, id: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = host
            .get(&format!("/api/v1/runs/{id}/logs?after={after}"))
            .await;
        lines.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return lines,
        }
    }
}

/// Each effect stores the lines logged before it; the cap is of the attempt, not of what is
/// buffered between effects, and an empty line counts too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_cap_holds_across_effects_that_store_the_lines() {
    let host = adversary(Options::default()).await;
    let id = host
        .trigger("log-effects", json!({ "lines": 9_990, "effects": 100 }))
        .await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let lines = all_logs(&host, &id).await;
    assert_eq!(lines.len(), 10_001, "10,000 lines and the note");
    let note = lines.last().unwrap()["message"].as_str().unwrap();
    assert!(note.starts_with("90 log lines dropped"), "{note}");
}

/// A checkpoint's replay does not store the lines again nor count them twice, but the attempt
/// that resumes keeps the count of what it stored before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_cap_holds_across_a_checkpoint_of_the_attempt() {
    let (options, clock) = Options::manual_clock();
    let host = adversary(options).await;
    let id = host
        .trigger(
            "log-effects",
            json!({ "lines": 6_000, "wait_ms": 3_600_000, "after": 6_000 }),
        )
        .await;
    host.wait_status(&id, "WAITING").await;
    clock.advance(Duration::from_secs(3_600));
    host.wake();
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let lines = all_logs(&host, &id).await;
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 10_001, "10,000 lines and the note");
    assert_eq!(messages[5_999], "line 5999");
    assert_eq!(
        messages[6_000], "after 0",
        "the replay stored nothing again"
    );
    assert_eq!(messages[9_999], "after 3999");
    assert!(
        messages[10_000].starts_with("2000 log lines dropped"),
        "{}",
        messages[10_000]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_spinning_guests_do_not_hold_up_another_tenant_or_the_api() {
    let host = TestHost::start_with(Options {
        concurrency: 3,
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    let (_, noisy) = host.new_environment_key("noisy", "prod").await;
    let (status, body) = host
        .upload_as(&noisy, crate::support::guest(guests::HELLO))
        .await;
    assert_eq!(status, 201, "{body}");
    // Two CPU-bound guests of the noisy tenant on a two-core machine.
    let mut spinners = Vec::new();
    for _ in 0..2 {
        let (_, run) = host
            .request_as(
                &noisy,
                reqwest::Method::POST,
                "/api/v1/tasks/spin/trigger",
                Some(json!({ "payload": { "ms": 8_000 } })),
            )
            .await;
        spinners.push(run["id"].as_str().unwrap().to_owned());
    }
    let spinner_status = |id: String| {
        let host = &host;
        let noisy = noisy.clone();
        async move {
            let (_, run) = host
                .request_as(
                    &noisy,
                    reqwest::Method::GET,
                    &format!("/api/v3/runs/{id}"),
                    None,
                )
                .await;
            run["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    for id in &spinners {
        while spinner_status(id.clone()).await != "EXECUTING" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let started = Instant::now();
    let (status, _) = host.get("/api/v1/runs").await;
    assert_eq!(status, 200, "the API answers");
    let quick = host.trigger("hello", json!({ "name": "neighbour" })).await;
    assert_eq!(host.wait_final(&quick).await["status"], "COMPLETED");
    // Behaviour, not a timing budget: the trivial run finished while both spinners still spin.
    for id in &spinners {
        assert_eq!(
            spinner_status(id.clone()).await,
            "EXECUTING",
            "after {:?}",
            started.elapsed()
        );
    }
    for id in &spinners {
        host.request_as(
            &noisy,
            reqwest::Method::POST,
            &format!("/api/v2/runs/{id}/cancel"),
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_loads_compiled_artifacts_instead_of_compiling() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    assert_eq!(host.compilations(), 1);
    let dir = host.dir.clone();
    let temp = host.stop().await;

    let host = TestHost::start_in(&dir, Options::default()).await;
    let id = host.trigger("hello", json!({ "name": "again" })).await;
    assert_eq!(host.wait_final(&id).await["status"], "COMPLETED");
    assert_eq!(
        host.compilations(),
        0,
        "the artifact was loaded, not compiled"
    );

    // A damaged artifact is not trusted blindly: the host compiles again.
    host.stop().await;
    for entry in std::fs::read_dir(dir.join("compiled")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let host = TestHost::start_in(&dir, Options::default()).await;
    let id = host.trigger("hello", json!({ "name": "third" })).await;
    assert_eq!(host.wait_final(&id).await["status"], "COMPLETED");
    assert_eq!(host.compilations(), 1);
    host.stop().await;
    drop(temp);
}

/// Peak resident memory of a process, from `/proc/<pid>/status`.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_memory_bombs_leave_the_host_within_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    let pool_mib = 1024;
    let host = ServeProcess::start_deploying(
        dir.path(),
        &[
            "--concurrency",
            "50",
            "--memory-pool-mib",
            &pool_mib.to_string(),
        ],
        &[crate::support::guest_path(guests::ADVERSARY)],
    );
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(host.trigger("alloc", json!({ "mb": 8192 })).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        let run = host.wait_for(id, |r| r["isCompleted"] == true).await;
        assert_eq!(run["status"], "CRASHED", "{run:#}");
        assert_eq!(run["error"]["code"], "TASK_PROCESS_OOM_KILLED");
        assert!(Instant::now() < deadline);
    }
    let peak = peak_rss_bytes(host.pid());
    // The pool, plus what the host itself needs (runtime, compiled code, SQLite cache).
    let bound = (pool_mib + 512) << 20;
    assert!(
        peak < bound,
        "peak RSS {} MiB over {} MiB",
        peak >> 20,
        bound >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_can_open_no_socket_and_look_up_no_name() {
    let host = adversary(Options::default()).await;
    // A listener the guest is told about: it must never see a connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let done = run(&host, "sockets", json!({ "connect": target })).await;
    assert_eq!(done["status"], "COMPLETED", "{done:#}");
    let output = &done["output"];
    for way in ["tcp_connect", "tcp_listen", "udp_bind", "lookup"] {
        let outcome = output[way].as_str().unwrap_or_default();
        assert!(
            outcome != "ok" && !outcome.is_empty(),
            "{way} was allowed: {output:#}"
        );
    }
    assert!(
        output["tcp_connect"]
            .as_str()
            .unwrap()
            .starts_with("PermissionDenied"),
        "{output:#}"
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host's listener: {other:?}"),
    }
    host.stop().await;
}
