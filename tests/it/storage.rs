//! Storage faults: a disk that fills up under a running host. The host runs as a child process
//! whose file-size limit (`RLIMIT_FSIZE`) the test lowers to just above what its database uses,
//! so SQLite's next growing write fails as it would on a full disk, and raises again later.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::restart::ServeProcess;
use crate::support::{guest_path, guests};

/// Sets the largest file `pid` may write; `None` lifts the limit.
fn set_file_size_limit(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `prlimit` reads `limit` and writes nothing back (null old-limit pointer).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

async fn post(host: &ServeProcess, path: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", host.url))
        .bearer_auth(&host.key)
        .json(body)
        .send()
        .await
        .expect("the host answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_work_keeps_running_work_and_recovers() {
    if crate::support::on_postgres() {
        // The disk under SQLite's files; PostgreSQL's disk is the server's.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::spawn(
        dir.path(),
        &["--wait-threshold", "50ms"],
        &[guest_path(guests::HELLO)],
        |command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe `signal` runs between fork and exec. Ignoring
            // SIGXFSZ makes a write past the limit fail with EFBIG instead of killing the host.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        },
    );

    // Work under way when the disk fills: one run computing, one checkpointed on a wait.
    let spinning = host.trigger("spin", json!({ "ms": 1500 })).await;
    let waiting = host.trigger("wait", json!({ "ms": 1500 })).await;
    // And one changing its metadata step by step, each change an effect stored with its journal.
    let stepping = host
        .trigger("progress", json!({ "steps": 60, "ms": 40 }))
        .await;
    host.wait_for(&spinning, |r| r["status"] == "EXECUTING")
        .await;
    host.wait_for(&stepping, |r| r["metadata"]["steps"].as_u64() > Some(2))
        .await;
    host.wait_for(&waiting, |r| r["status"] == "WAITING").await;

    // The disk fills: no file may grow more than 64 KiB past what the database uses now.
    let db = dir.path().join("kiln.db");
    let wal = dir.path().join("kiln.db-wal");
    let cap = file_len(&db).max(file_len(&wal)) + (64 << 10);
    set_file_size_limit(host.pid(), Some(cap));

    let blob = "x".repeat(100_000);
    let mut accepted = Vec::new();
    let refusal = loop {
        let body = json!({ "payload": { "blob": blob, "n": accepted.len() } });
        let (status, answer) = post(&host, "/api/v1/tasks/echo/trigger", &body).await;
        match status {
            200 => accepted.push(answer["id"].as_str().unwrap().to_owned()),
            507 => break answer,
            other => panic!("a trigger on a full disk answered {other}: {answer}"),
        }
        assert!(
            accepted.len() < 90,
            "the file-size limit never stopped a write"
        );
    };
    let message = refusal["error"].as_str().unwrap();
    assert!(
        message.contains("full") && message.contains("free space"),
        "{message}"
    );
    // Reads go on working, and so do more refusals, without harm.
    for id in &accepted {
        host.call(reqwest::Method::GET, &format!("/api/v3/runs/{id}"), None)
            .await;
    }
    let again = json!({ "payload": { "blob": blob, "n": accepted.len() } });
    let (status, _) = post(&host, "/api/v1/tasks/echo/trigger", &again).await;
    assert_eq!(status, 507);
    // The running attempt ends and the wait comes due while nothing can be written.
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // Space returns: the running work finishes, what was accepted runs, new work is taken.
    set_file_size_limit(host.pid(), None);
    let spun = host
        .wait_for(&spinning, |r| r["status"] == "COMPLETED")
        .await;
    assert_eq!(spun["output"], json!({ "spun": 1500 }));
    assert_eq!(spun["attemptCount"], 1, "the attempt was kept, not retried");
    let waited = host
        .wait_for(&waiting, |r| r["status"] == "COMPLETED")
        .await;
    assert_eq!(waited["attemptCount"], 1);
    // Its metadata changes waited out the full disk: every step made once, in one attempt.
    let stepped = host
        .wait_for(&stepping, |r| r["status"] == "COMPLETED")
        .await;
    assert_eq!(stepped["attemptCount"], 1, "{stepped:#}");
    assert_eq!(stepped["metadata"]["steps"], 60, "{stepped:#}");
    assert_eq!(
        stepped["metadata"]["log"].as_array().map(Vec::len),
        Some(60),
        "{stepped:#}"
    );
    for (n, id) in accepted.iter().enumerate() {
        let run = host.wait_for(id, |r| r["status"] == "COMPLETED").await;
        assert_eq!(run["output"]["n"], n, "{id}");
    }
    let after = host.trigger("hello", json!({ "name": "after" })).await;
    host.wait_for(&after, |r| r["status"] == "COMPLETED").await;
    // Nothing refused was stored: the runs are exactly the ones answered 200.
    let page = host
        .call(reqwest::Method::GET, "/api/v1/runs?page[size]=100", None)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), accepted.len() + 4);
    host.kill();

    let db = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

/// A metadata change that meets a full disk is the host's failure, not the guest's: the attempt
/// is not counted as the task crashing, and the log lines written before the change (which
/// would have been stored with it) are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_that_meets_a_full_disk_is_no_crash_of_the_task_and_keeps_its_logs() {
    if crate::support::on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::spawn(
        dir.path(),
        &[],
        &[guest_path(guests::ADVERSARY)],
        |command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe `signal` runs between fork and exec (see above).
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        },
    );
    // Logs a line, pauses in place, then changes its metadata.
    let id = host
        .trigger(
            "log-effects",
            json!({ "lines": 1, "pause_ms": 1500, "effects": 1 }),
        )
        .await;
    host.wait_for(&id, |r| r["status"] == "EXECUTING").await;
    // The disk fills during the pause: no write may pass the first 4 KiB of any file, so the
    // change (and the attempt's end) cannot be stored until space returns.
    set_file_size_limit(host.pid(), Some(4096));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    set_file_size_limit(host.pid(), None);

    let run = host.wait_for(&id, |r| r["isCompleted"] == true).await;
    assert_ne!(run["error"]["code"], "TASK_RUN_CRASHED", "{run:#}");
    assert!(
        run["status"] == "COMPLETED" || run["error"]["code"] == "SYSTEM_FAILURE",
        "{run:#}"
    );
    let logs = host
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{id}/logs"),
            None,
        )
        .await;
    let lines: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "line 0").count(),
        1,
        "the line written before the change is stored once: {lines:?}"
    );
    host.kill();
}
