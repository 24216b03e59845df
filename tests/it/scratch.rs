//! A run's scratch directory: `/tmp` for the guest, private to the run, as the run left it after a
//! wait, capped in size, impossible to leave, and emptied when the run ends.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, TestHost, guests};

async fn host(scratch_bytes: Option<u64>) -> TestHost {
    let host = TestHost::start_with(Options {
        wait_threshold: Some(Duration::from_millis(50)),
        scratch_bytes,
        ..Options::default()
    })
    .await;
    host.deploy(guests::HELLO).await;
    host
}

/// Waits (up to 5 s: directories are emptied on the blocking pool) until `dir` holds no files.
async fn emptied(dir: &std::path::Path) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let files = files_under(dir);
        if files == 0 || std::time::Instant::now() > deadline {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files (not directories) anywhere under `dir`.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

fn escapes_failed(output: &Value) {
    let escapes = output["escapes"].as_array().unwrap();
    assert_eq!(escapes.len(), 5);
    for (i, e) in escapes.iter().enumerate() {
        assert_ne!(e, "ok", "escape {i} left /tmp: {output:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_tmp_is_kept_across_its_wait_cannot_be_left_and_goes_when_it_ends() {
    let host = host(None).await;
    let id = host
        .trigger("scratch", json!({ "write_kb": 64, "wait_ms": 400 }))
        .await;
    host.wait_status(&id, "WAITING").await;
    // A waiting run keeps nothing on disk: its resume rebuilds /tmp by replaying its writes.
    let root = host.dir.join("scratch");
    assert_eq!(emptied(&root).await, 0, "nothing kept while the run waits");

    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let output = &run["output"];
    assert_eq!(output["wrote"], "ok");
    assert_eq!(
        output["size"],
        64 << 10,
        "the file written before the wait is there after it"
    );
    assert_eq!(
        output["log"], "written once\n",
        "the replay rebuilt /tmp as it was, not appended twice"
    );
    escapes_failed(output);
    assert_eq!(emptied(&root).await, 0, "emptied when the run ended");

    // Another run does not see this run's files.
    let other = host.trigger("scratch", json!({ "write_kb": 0 })).await;
    let other = host.wait_final(&other).await;
    assert_eq!(other["output"]["log"], "written once\n");
    assert_eq!(other["output"]["size"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_quota_is_obeyed_and_enforced() {
    let host = host(Some(1 << 20)).await;
    let fits = host.trigger("scratch", json!({ "write_kb": 512 })).await;
    let fits = host.wait_final(&fits).await;
    assert_eq!(fits["output"]["wrote"], "ok", "{fits:#}");
    assert_eq!(fits["output"]["size"], 512 << 10);

    let over = host.trigger("scratch", json!({ "write_kb": 2048 })).await;
    let over = host.wait_final(&over).await;
    assert_eq!(
        over["status"], "COMPLETED",
        "a full /tmp is an error the task handles"
    );
    // Through a stream (how std writes files) the guest sees an I/O error; the log says why.
    assert_ne!(over["output"]["wrote"], "ok", "{over:#}");
    assert!(
        over["output"]["size"].as_u64().unwrap() <= 1 << 20,
        "no more than the quota was written: {over:#}"
    );
    let (_, logs) = host
        .get(&format!(
            "/api/v1/runs/{}/logs",
            over["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        logs.to_string()
            .contains("the scratch directory /tmp is full: the run's machine allows 1048576 bytes"),
        "{logs}"
    );
}

/// Seconds and nanoseconds as the `file-times` task writes them, in milliseconds.
fn time_ms(text: &Value) -> i64 {
    let (s, ns) = text.as_str().unwrap().split_once('.').unwrap();
    s.parse::<i64>().unwrap() * 1000 + ns.parse::<i64>().unwrap() / 1_000_000
}

/// File times under `/tmp` are readings like any other: the replay after a checkpoint reads the
/// times (and identities) the first execution read, although it wrote the file again later, and
/// they follow the run's clock, not the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_times_in_tmp_replay_and_follow_the_runs_clock() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    host.deploy(guests::ADVERSARY).await;
    let id = host
        .trigger("file-times", json!({ "wait_ms": 3_600_000 }))
        .await;
    host.wait_status(&id, "WAITING").await;
    // Real time passes before the replay writes the file again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    clock.advance(Duration::from_secs(3_600));
    host.wake();
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let out = &run["output"];

    let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    let first: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str()?.strip_prefix("a.txt: "))
        .collect();
    let replayed = format!(
        "modified {}, hash {}, std {}",
        out["modified"].as_str().unwrap(),
        out["hash"].as_str().unwrap(),
        out["std_modified"].as_str().unwrap()
    );
    assert_eq!(
        first,
        [replayed.as_str()],
        "the replay read what the first execution read"
    );
    assert_eq!(
        out["hash_after"], out["hash"],
        "a file keeps its identity across the wait"
    );
    assert_ne!(out["b_hash"], out["hash"]);

    let (before, after) = (
        out["before_ms"].as_i64().unwrap(),
        out["after_ms"].as_i64().unwrap(),
    );
    assert!(after - before >= 3_600_000, "{out:#}");
    let near = |t: i64, clock: i64| (t - clock).abs() < 1_000;
    assert!(near(time_ms(&out["modified"]), before), "{out:#}");
    assert!(
        near(time_ms(&out["b_modified"]), after),
        "the run's clock after the wait: {out:#}"
    );
}
