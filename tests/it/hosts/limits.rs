//! Limits across hosts: a queue's, a concurrency key's and an environment's limit hold for the
//! runs of every host on the database together. The test samples the shared database over and
//! over while the runs execute: no sample may show more runs holding a slot (dequeued or
//! executing) than the limit allows. Fairness across environments holds with two hosts too.
//!
//! The attempts' recorded start and end times (which `queues.rs` checks on one host) do not serve
//! here: they are stamped by different hosts, a start with the time its claim began, before the
//! claim waited for a connection and the environment's lock, so under load a start is recorded
//! up to a few hundred milliseconds before the end of the attempt whose slot it took.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{admin_key, finished, first_host, join, other_host};
use crate::restart::ServeProcess;

/// Samples a count over the shared database, one statement after another, until stopped: the
/// largest it saw.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(i64, usize)>,
}

impl Sampler {
    /// `sql` counts runs holding a slot (dequeued or executing), at one moment.
    async fn start(dir: &Path, sql: String) -> Sampler {
        let url = crate::support::test_database(dir).expect("a test database");
        let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test database");
        tokio::spawn(connection);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut most, mut samples) = (0i64, 0usize);
            while !stopped.load(Ordering::Relaxed) {
                let row = db.query_one(&sql, &[]).await.expect("a sample");
                most = most.max(row.get::<_, i64>(0));
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (most, samples)
        });
        Sampler { stop, task }
    }

    async fn most(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        let (most, samples) = self.task.await.expect("the sampler");
        assert!(samples > 10, "only {samples} samples");
        most
    }
}

/// Two hosts with `concurrency` slots each on a new database (the first deploys hello), and
/// their data dirs.
fn two_hosts(
    concurrency: &str,
) -> (
    tempfile::TempDir,
    ServeProcess,
    tempfile::TempDir,
    ServeProcess,
) {
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &["--concurrency", concurrency]);
    let b_dir = join(a_dir.path());
    let b = other_host(b_dir.path(), &["--concurrency", concurrency]);
    (a_dir, a, b_dir, b)
}

/// Runs of `queue` holding a slot, at one moment.
fn holding(queue: &str) -> String {
    format!(
        "SELECT count(*) FROM runs WHERE queue = '{queue}' AND status IN ('DEQUEUED', 'EXECUTING')"
    )
}

/// Triggers `(task, payload, options)` all at once, each through the hosts in turn; the run ids,
/// in order.
async fn trigger_spread(hosts: &[&ServeProcess], runs: Vec<(&str, Value, Value)>) -> Vec<String> {
    let mut requests = tokio::task::JoinSet::new();
    for (n, (task, payload, options)) in runs.into_iter().enumerate() {
        let host = hosts[n % hosts.len()];
        let (url, key) = (
            format!("{}/api/v1/tasks/{task}/trigger", host.url),
            host.key.clone(),
        );
        requests.spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "payload": payload, "options": options }))
                .send()
                .await
                .expect("the host answers");
            let (status, body) = crate::support::read(resp).await;
            assert_eq!(status, 200, "{body}");
            (n, body["id"].as_str().unwrap().to_owned())
        });
    }
    let mut answered = requests.join_all().await;
    answered.sort();
    answered.into_iter().map(|(_, id)| id).collect()
}

/// Waits for the runs, read through the hosts in turn: each must be COMPLETED.
async fn all_complete(hosts: &[&ServeProcess], ids: &[String]) {
    for (n, id) in ids.iter().enumerate() {
        let run = finished(hosts[n % hosts.len()], id).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_concurrency_key_limits_hold_across_hosts() {
    postgres_only!();
    let (a_dir, a, _b_dir, b) = two_hosts("8");
    // `wait`'s own queue is limited to 1 through host B; host A must hold to it as well.
    let q = b
        .call(
            Method::POST,
            "/api/v1/queues/wait/concurrency/override",
            Some(json!({ "type": "task", "concurrencyLimit": 1 })),
        )
        .await;
    assert_eq!(q["concurrency"]["override"], 1, "{q}");
    let limited = Sampler::start(a_dir.path(), holding("limited")).await;
    let waits = Sampler::start(a_dir.path(), holding("task/wait")).await;
    let per_key = Sampler::start(
        a_dir.path(),
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM runs \
         WHERE queue = 'task/single' AND status IN ('DEQUEUED', 'EXECUTING') \
         GROUP BY concurrency_key) AS held"
            .to_owned(),
    )
    .await;

    let spin = json!({ "ms": 200 });
    let mut runs: Vec<(&str, Value, Value)> = Vec::new();
    for _ in 0..8 {
        // `limited` and `limited-too` share the queue `limited` (limit 2).
        runs.push(("limited", spin.clone(), json!({})));
        runs.push(("limited-too", spin.clone(), json!({})));
        // Sleeps in place (under the wait threshold), holding its slot without the CPU.
        runs.push(("wait", json!({ "ms": 200 }), json!({})));
    }
    // `single`'s queue allows one run at a time per concurrency key.
    for key in ["user-a", "user-b"] {
        for _ in 0..4 {
            runs.push(("single", spin.clone(), json!({ "concurrencyKey": key })));
        }
    }
    let ids = trigger_spread(&[&a, &b], runs).await;
    all_complete(&[&a, &b], &ids).await;
    for (what, sampler, limit) in [
        ("queue `limited` (limit 2)", limited, 2),
        ("queue `task/wait` (override 1)", waits, 1),
        (
            "one concurrency key of `single` (limit 1 per key)",
            per_key,
            1,
        ),
    ] {
        let seen = sampler.most().await;
        assert!(
            (1..=limit).contains(&seen),
            "{what}: {seen} runs held a slot at once across the two hosts"
        );
        eprintln!("{what}: at most {seen} runs held a slot at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_limit_holds_across_hosts() {
    postgres_only!();
    let (a_dir, a, _b_dir, b) = two_hosts("8");
    // Set through host A, with host B already running.
    let env = a
        .call_as(
            &admin_key(a_dir.path()),
            Method::PUT,
            "/api/v1/admin/environments/default/dev",
            Some(json!({ "concurrencyLimit": 2 })),
        )
        .await;
    assert_eq!(env["concurrencyLimit"], 2, "{env}");
    let holding = Sampler::start(
        a_dir.path(),
        "SELECT count(*) FROM runs WHERE status IN ('DEQUEUED', 'EXECUTING')".to_owned(),
    )
    .await;
    let mut runs: Vec<(&str, Value, Value)> = Vec::new();
    for _ in 0..6 {
        runs.push(("wait", json!({ "ms": 200 }), json!({})));
        runs.push(("spin", json!({ "ms": 200 }), json!({})));
        runs.push(("echo", json!({ "n": 1 }), json!({})));
        runs.push(("hello", json!(null), json!({})));
        runs.push(("limited", json!({ "ms": 200 }), json!({})));
    }
    let ids = trigger_spread(&[&b, &a], runs).await;
    all_complete(&[&a, &b], &ids).await;
    let seen = holding.most().await;
    assert!(
        (1..=2).contains(&seen),
        "{seen} runs of the environment held a slot at once across the two hosts (limit 2)"
    );
}

/// Fairness across environments holds with two hosts: each host's scheduler visits the
/// environments with ready runs in turn, one run per visit (deficit round-robin with unit cost),
/// and both claim from the one database, so an environment flooded with runs delays another's
/// by about a round, not by the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_flooding_two_hosts_does_not_hold_up_another() {
    postgres_only!();
    let (a_dir, a, _b_dir, b) = two_hosts("2");
    let made = a
        .call_as(
            &admin_key(a_dir.path()),
            Method::POST,
            "/api/v1/admin/keys",
            Some(json!({ "project": "default", "environment": "quiet" })),
        )
        .await;
    let quiet_key = made["key"].as_str().expect("a key").to_owned();
    let hello = std::fs::read(crate::support::guest_path(crate::support::guests::HELLO))
        .expect("the hello guest");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/deployments?wait=true", b.url))
        .bearer_auth(&quiet_key)
        .header("content-type", "application/wasm")
        .body(hello)
        .send()
        .await
        .expect("the upload is sent");
    let (status, body) = crate::support::read(resp).await;
    assert!(status.is_success(), "{body}");

    const FLOOD: usize = 80;
    let flood = trigger_spread(
        &[&a, &b],
        (0..FLOOD)
            .map(|_| ("spin", json!({ "ms": 250 }), json!({})))
            .collect(),
    )
    .await;
    let mut quiet = Vec::new();
    for n in 0..4 {
        let host = if n % 2 == 0 { &a } else { &b };
        let run = host
            .call_as(
                &quiet_key,
                Method::POST,
                "/api/v1/tasks/spin/trigger",
                Some(json!({ "payload": { "ms": 250 } })),
            )
            .await;
        quiet.push(run["id"].as_str().expect("a run id").to_owned());
    }
    for id in &quiet {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let run = a
                .call_as(&quiet_key, Method::GET, &format!("/api/v3/runs/{id}"), None)
                .await;
            if run["status"] == "COMPLETED" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{run:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Four slots in all, 250 ms a run: the flood takes five seconds, the quiet environment's four
    // runs about two rounds of it. Counted from the runs' times once all are done, so reading
    // them takes no part.
    let mut quiet_done = String::new();
    for id in &quiet {
        let run = a
            .call_as(&quiet_key, Method::GET, &format!("/api/v3/runs/{id}"), None)
            .await;
        quiet_done = quiet_done.max(sortable(&run["finishedAt"]));
    }
    all_complete(&[&a, &b], &flood).await;
    let mut before = 0;
    for id in &flood {
        let run = a
            .call(Method::GET, &format!("/api/v3/runs/{id}"), None)
            .await;
        before += usize::from(sortable(&run["startedAt"]) < quiet_done);
    }
    assert!(
        before <= FLOOD / 2,
        "{before} of the flood's {FLOOD} runs started before the quiet environment's four had \
         completed (at {quiet_done})"
    );
}

/// An API time (`…T20:00:50.79Z`) with its fraction padded to milliseconds, so times compare as
/// strings.
fn sortable(time: &Value) -> String {
    let time = time.as_str().expect("a time").trim_end_matches('Z');
    let (seconds, fraction) = time.split_once('.').unwrap_or((time, ""));
    format!("{seconds}.{fraction:0<3}")
}
