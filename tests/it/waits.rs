//! Waits: short ones sleep in place, long ones checkpoint the run (no instance, no slot) and
//! replay its journal when the time comes — on the same host, after a restart, or after the host
//! was killed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, Param, StoredDb, TestHost, guests};

/// The `wait` task's log messages, in order.
async fn messages(host: &TestHost, id: &str) -> Vec<String> {
    let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The run finished once, as one attempt, with what it read before its first wait replayed
/// exactly (the log line written then names the same clock and random values as the output).
async fn assert_replayed_faithfully(host: &TestHost, id: &str, waits: u32) -> Value {
    let run = host.wait_final(id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run:#}");
    assert_eq!(run["attempts"][0]["status"], "COMPLETED");
    let output = &run["output"];
    let lines = messages(host, id).await;
    let before = format!(
        "before the wait: clock {}, random {}",
        output["before_ms"], output["random"]
    );
    assert_eq!(
        lines.iter().filter(|l| **l == before).count(),
        1,
        "the first execution's reading, logged once: {lines:?}"
    );
    for i in 1..=waits {
        let after = format!("after wait {i}");
        assert_eq!(
            lines.iter().filter(|l| **l == after).count(),
            1,
            "{lines:?}"
        );
    }
    assert_eq!(lines.len(), 1 + waits as usize, "{lines:?}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_sleeps_in_place_and_keeps_its_slot() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("wait", json!({ "ms": 400 })).await;
    host.wait_status(&id, "EXECUTING").await;
    let mut statuses = Vec::new();
    let run = loop {
        let run = host.run(&id).await;
        statuses.push(run["status"].as_str().unwrap().to_owned());
        if run["isCompleted"] == true {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!statuses.iter().any(|s| s == "WAITING"), "{statuses:?}");
    let out = &run["output"];
    assert!(out["after_ms"].as_u64().unwrap() >= out["before_ms"].as_u64().unwrap() + 400);
    assert_replayed_faithfully(&host, &id, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_checkpoints_holds_nothing_and_resumes() {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    let id = host
        .trigger("wait", json!({ "ms": 1_500, "times": 2 }))
        .await;
    let waiting = host.wait_status(&id, "WAITING").await;
    assert_eq!(waiting["isWaiting"], true, "{waiting:#}");
    assert_eq!(
        waiting["attempts"][0]["status"], "EXECUTING",
        "the attempt is under way"
    );
    assert_eq!(waiting["waitpoints"][0]["type"], "DATETIME", "{waiting:#}");
    // Checkpointed: no instance, no slot.
    assert_eq!(host.live_instances(), 0);
    let (_, queue) = host.get("/api/v1/queues/wait?type=task").await;
    assert_eq!(queue["running"], 0, "{queue}");

    let run = assert_replayed_faithfully(&host, &id, 2).await;
    let out = &run["output"];
    assert!(
        out["after_ms"].as_u64().unwrap() >= out["before_ms"].as_u64().unwrap() + 3_000,
        "{out}"
    );
    assert_eq!(host.live_instances(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_wait_resumes_when_the_clock_says_so() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("wait", json!({ "ms": 3_600_000 })).await;
    host.wait_status(&id, "WAITING").await;
    clock.advance(Duration::from_secs(3_599));
    host.wake();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.run(&id).await["status"], "WAITING");
    clock.advance(Duration::from_secs(1));
    host.wake();
    let run = assert_replayed_faithfully(&host, &id, 1).await;
    let out = &run["output"];
    assert_eq!(
        out["after_ms"].as_u64().unwrap() - out["before_ms"].as_u64().unwrap(),
        3_600_000,
        "the guest's clock is the engine's: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        wait_threshold: Some(Duration::from_millis(100)),
        ..Options::default()
    };
    let host = TestHost::start_in(dir.path(), options()).await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("wait", json!({ "ms": 1_500 })).await;
    host.wait_status(&id, "WAITING").await;
    host.stop().await;

    let host = TestHost::start_in(dir.path(), options()).await;
    assert_replayed_faithfully(&host, &id, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_canceled_while_waiting_stays_canceled() {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    let id = host.trigger("wait", json!({ "ms": 600 })).await;
    host.wait_status(&id, "WAITING").await;
    let (status, _) = host
        .post(&format!("/api/v2/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let run = host.run(&id).await;
    assert_eq!(run["status"], "CANCELED", "{run:#}");
    assert_eq!(host.live_instances(), 0);
    // Its attempt is closed too.
    assert_eq!(run["attempts"][0]["status"], "CANCELED", "{run:#}");
    assert!(run["attempts"][0]["completedAt"].is_string(), "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_sleep_sleeps_in_place_and_counts_as_compute() {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    host.deploy(guests::BENCH).await;
    // `std::thread::sleep` in the guest: a WASI clock wait, not a kiln wait.
    let id = host.trigger("sleep", json!({ "ms": 400 })).await;
    let mut statuses = Vec::new();
    let run = loop {
        let run = host.run(&id).await;
        statuses.push(run["status"].as_str().unwrap().to_owned());
        if run["isCompleted"] == true {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert!(!statuses.iter().any(|s| s == "WAITING"), "{statuses:?}");
    assert!(
        run["usage"]["computeMs"].as_u64().unwrap() >= 400,
        "a WASI sleep counts as compute: {run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_does_not_match_the_journal_fails_the_attempt_and_a_retry_starts_fresh() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    // One attempt only: the run fails; two: the second starts fresh, without the journal.
    let once = host
        .trigger_with(
            "wait",
            json!({ "ms": 3_600_000 }),
            json!({ "maxAttempts": 1 }),
        )
        .await;
    let twice = host
        .trigger_with(
            "wait",
            json!({ "ms": 3_600_000 }),
            json!({ "maxAttempts": 2 }),
        )
        .await;
    for id in [&once, &twice] {
        host.wait_status(id, "WAITING").await;
        // Tamper with the stored journal: the first recorded call now has another digest.
        let db = StoredDb::open(&host.dir).await;
        let mut entries: Vec<u8> = db
            .one(
                "SELECT entries FROM journal_segments WHERE run_id = ?1",
                &[Param::Text(id)],
            )
            .await;
        entries[1] ^= 0xff;
        db.execute(
            "UPDATE journal_segments SET entries = ?2 WHERE run_id = ?1",
            &[Param::Text(id), Param::Bytes(&entries)],
        )
        .await;
    }

    clock.advance(Duration::from_secs(3_600));
    host.wake();
    let run = host.wait_final(&once).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["error"]["code"], "TASK_NONDETERMINISTIC", "{run:#}");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("on replay") && message.contains("but the recorded run made"),
        "names both calls: {message}"
    );
    // The retry (after its backoff) is a second attempt that waits again from the start.
    let retried = loop {
        clock.advance(Duration::from_secs(60));
        host.wake();
        let run = host.run(&twice).await;
        if run["status"] == "WAITING" && run["attempts"].as_array().map_or(0, Vec::len) == 2 {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = &retried["attempts"][0];
    assert_eq!(first["status"], "FAILED", "{retried:#}");
    assert_eq!(
        first["error"]["code"], "TASK_NONDETERMINISTIC",
        "{retried:#}"
    );
}

/// A run checkpointed by a kiln that wrote the first journal format (before formats had
/// numbers) resumes after an upgrade: its stored journal is rewritten here to that format, the
/// replay accepts it, and the second checkpoint appends entries of the current format after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_stored_by_the_previous_format_replays_after_an_upgrade() {
    use kiln::sandbox::journal::{self, Call, Format, Kind, calls};

    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let ms = 3_600_000u64;
    let id = host.trigger("wait", json!({ "ms": ms, "times": 2 })).await;
    let first = host.wait_status(&id, "WAITING").await["waitpoints"][0]["completesAt"].clone();
    assert!(first.is_string(), "{first}");

    let db = StoredDb::open(&host.dir).await;
    let stored: Vec<u8> = db
        .one(
            "SELECT entries FROM journal_segments WHERE run_id = ?1",
            &[Param::Text(&id)],
        )
        .await;
    let mut entries = journal::decode(&stored).unwrap();
    assert!(entries.iter().all(|e| e.format == Format::CURRENT));
    for e in &mut entries {
        e.digest = match e.kind {
            Kind::WallClock => calls::wall_clock().digest(Format::V1),
            Kind::MonotonicClock => calls::monotonic_clock().digest(Format::V1),
            Kind::Wait => calls::for_duration(ms).digest(Format::V1),
            other => panic!("the wait task made a {other:?} call"),
        };
        e.format = Format::V1;
    }
    let old = journal::encode(&entries);
    assert_eq!(old[0] >> 5, 0, "the first format has no format bits");
    db.execute(
        "UPDATE journal_segments SET entries = ?2 WHERE run_id = ?1",
        &[Param::Text(&id), Param::Bytes(&old)],
    )
    .await;

    clock.advance(Duration::from_secs(3_600));
    host.wake();
    let again = host
        .wait_for(&id, "waiting again", |r| {
            // A run between its resume and its next checkpoint may show no waitpoint at all.
            let at = &r["waitpoints"][0]["completesAt"];
            r["status"] == "WAITING" && at.is_string() && *at != first
        })
        .await;
    let segments: Vec<Vec<u8>> = db
        .column(
            "SELECT entries FROM journal_segments WHERE run_id = ?1 ORDER BY segment",
            &[Param::Text(&id)],
        )
        .await;
    drop(db);
    assert_eq!(
        segments.len(),
        2,
        "the old segment, then the new one: {again:#}"
    );
    let new = journal::decode(&segments[1]).unwrap();
    assert!(!new.is_empty() && new.iter().all(|e| e.format == Format::CURRENT));

    clock.advance(Duration::from_secs(3_600));
    host.wake();
    assert_replayed_faithfully(&host, &id, 2).await;
}
