//! Several hosts on one PostgreSQL database (so the PostgreSQL suite only,
//! `KILN_TEST_BACKEND=postgres`): `kiln serve` processes sharing a database with `--host-lease 2`.
//! One run per idempotency key whichever host is asked, a token completed on one host resuming a
//! run another started, a cancel through one host stopping the attempt another executes, a
//! killed host's runs reclaimed by another after its lease (and by itself at once when restarted
//! on its dir), a cron tick firing once, and a host with another secrets key refused. Limits
//! across hosts are in `hosts/limits.rs`, chaos with three hosts in `hosts/chaos.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::restart::ServeProcess;

/// Every host's lease: a killed host's runs are another's 2 s after its last renewal.
const LEASE: &[&str] = &["--host-lease", "2"];

/// Returns from the test unless the suite runs on PostgreSQL (SQLite is one host's database).
macro_rules! postgres_only {
    () => {
        if !$crate::support::on_postgres() {
            eprintln!(
                "skipped: hosts share a database on PostgreSQL only (KILN_TEST_BACKEND=postgres)"
            );
            return;
        }
    };
}

mod chaos;
mod limits;

/// `LEASE` and then `extra`.
fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    LEASE.iter().copied().chain(extra.iter().copied()).collect()
}

/// The first host on a fresh database: it makes the database's keys and deploys the hello guest.
fn first_host(dir: &Path, extra: &[&str]) -> ServeProcess {
    ServeProcess::start(dir, &flags(extra))
}

/// A host on a dir made by [`join`] (or one it ran on before); it deploys nothing.
fn other_host(dir: &Path, extra: &[&str]) -> ServeProcess {
    ServeProcess::spawn(dir, &flags(extra), &[], |_| {})
}

/// A data dir for another host on the database of the host on `first`: the database's URL, the
/// same secrets key, and the key files only the first host writes.
fn join(first: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "test-database-url",
        kiln::secrets::KEY_FILE,
        kiln::host::DEV_KEY_FILE,
        kiln::host::ADMIN_KEY_FILE,
    ] {
        std::fs::copy(first.join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("copying {file} from the first host's dir: {e}"));
    }
    dir
}

fn admin_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(kiln::host::ADMIN_KEY_FILE))
        .expect("admin.key")
        .trim()
        .to_owned()
}

async fn run(host: &ServeProcess, id: &str) -> Value {
    host.call(Method::GET, &format!("/api/v3/runs/{id}"), None)
        .await
}

/// Polls the run through `host` until `done` holds, for at most `within`.
async fn poll(
    host: &ServeProcess,
    id: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let run = run(host, id).await;
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} was not {what} within {within:?}: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finished(host: &ServeProcess, id: &str) -> Value {
    poll(host, id, "final", Duration::from_secs(90), |r| {
        r["isCompleted"] == true
    })
    .await
}

/// Triggers through `host`, with options.
async fn trigger(host: &ServeProcess, task: &str, payload: Value, options: Value) -> String {
    let body = json!({ "payload": payload, "options": options });
    let answer = host
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{task}/trigger"),
            Some(body),
        )
        .await;
    answer["id"].as_str().expect("a run id").to_owned()
}

/// The `wait` task's log lines that start `before the wait` (one per execution that did not
/// replay its wait from the journal).
async fn before_the_wait(host: &ServeProcess, id: &str) -> usize {
    let logs = host
        .call(Method::GET, &format!("/api/v1/runs/{id}/logs"), None)
        .await;
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("before the wait"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_with_one_key_sent_to_two_hosts_at_once_make_one_run_per_key() {
    postgres_only!();
    let (a_dir, keys, per_host) = (tempfile::tempdir().unwrap(), 40, 3);
    let a = first_host(a_dir.path(), &[]);
    let b_dir = join(a_dir.path());
    let b = other_host(b_dir.path(), &[]);
    // Every key's triggers go out together, half of them to each host.
    let mut requests = tokio::task::JoinSet::new();
    for k in 0..keys {
        for i in 0..per_host * 2 {
            let host = if i % 2 == 0 { &a } else { &b };
            let (url, key) = (
                format!("{}/api/v1/tasks/hello/trigger", host.url),
                host.key.clone(),
            );
            requests.spawn(async move {
                let body = json!({
                    "payload": { "name": format!("k{k}-{i}") },
                    "options": { "idempotencyKey": format!("key-{k}") },
                });
                let resp = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .expect("the host answers");
                let (status, body) = crate::support::read(resp).await;
                assert_eq!(status, 200, "key-{k} (request {i}): {body}");
                (k, body)
            });
        }
    }
    let mut answers: Vec<Vec<Value>> = vec![Vec::new(); keys];
    for (k, body) in requests.join_all().await {
        answers[k].push(body);
    }
    let mut ids = std::collections::HashSet::new();
    for (k, answers) in answers.iter().enumerate() {
        let named: std::collections::HashSet<&str> =
            answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(
            named.len(),
            1,
            "key-{k} made {} runs: {answers:#?}",
            named.len()
        );
        let fresh = answers.iter().filter(|a| a["isCached"] == false).count();
        assert_eq!(fresh, 1, "key-{k}: one answer made the run: {answers:#?}");
        let id = named.into_iter().next().unwrap().to_owned();
        // Both hosts find it by its key, and it ran once, with one of the payloads sent.
        for host in [&a, &b] {
            let list = host
                .call(
                    Method::GET,
                    &format!("/api/v1/runs?filter[idempotencyKey]=key-{k}"),
                    None,
                )
                .await;
            let listed: Vec<&str> = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            assert_eq!(listed, [id.as_str()], "key-{k} through {}", host.url);
        }
        let done = finished(&b, &id).await;
        assert_eq!(done["status"], "COMPLETED", "{done:#}");
        let name = done["payload"]["name"].as_str().unwrap().to_owned();
        assert!(name.starts_with(&format!("k{k}-")), "{done:#}");
        assert_eq!(done["output"]["message"], format!("Hello, {name}!"));
        ids.insert(id);
    }
    assert_eq!(ids.len(), keys, "no two keys share a run");
    let all = a
        .call(Method::GET, "/api/v1/runs?page[size]=100", None)
        .await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        keys,
        "one run per key and no other: {all:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_runs_of_a_killed_host_resume_on_another() {
    postgres_only!();
    let args = ["--wait-threshold", "100ms"];
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &args);
    // Started with host A alone, so their first part ran there.
    let approval = trigger(&a, "approve", json!({}), json!({})).await;
    let timed = trigger(&a, "wait", json!({ "ms": 6_000 }), json!({})).await;
    for id in [&approval, &timed] {
        poll(&a, id, "WAITING", Duration::from_secs(30), |r| {
            r["status"] == "WAITING"
        })
        .await;
    }
    let b_dir = join(a_dir.path());
    let b = other_host(b_dir.path(), &args);
    // And a timer host A makes while host B runs.
    let later = trigger(&a, "wait", json!({ "ms": 1_500 }), json!({})).await;
    poll(&a, &later, "WAITING", Duration::from_secs(30), |r| {
        r["status"] == "WAITING"
    })
    .await;
    a.kill();

    let tokens = b
        .call(
            Method::GET,
            "/api/v1/waitpoints/tokens?filter[status]=WAITING",
            None,
        )
        .await;
    let waiting = tokens["data"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "the approve run's token: {tokens:#}");
    let token = waiting[0]["id"].as_str().unwrap().to_owned();
    b.call(
        Method::POST,
        &format!("/api/v1/waitpoints/tokens/{token}/complete"),
        Some(json!({ "data": { "through": "b" } })),
    )
    .await;
    let run = finished(&b, &approval).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(
        run["output"],
        json!({ "token": token, "data": { "through": "b" } }),
        "{run:#}"
    );
    assert_eq!(run["attemptCount"], 1, "resumed, not retried: {run:#}");
    // The timers fire on host B, which resumes the runs from their checkpoints.
    for id in [&timed, &later] {
        let run = finished(&b, id).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        assert_eq!(run["attemptCount"], 1, "resumed, not retried: {run:#}");
        assert_eq!(
            before_the_wait(&b, id).await,
            1,
            "the part before the wait ran once: {run:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_host_stops_the_attempt_another_executes() {
    postgres_only!();
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &["--concurrency", "1"]);
    let busy = trigger(&a, "spin", json!({ "ms": 120_000 }), json!({})).await;
    poll(&a, &busy, "EXECUTING", Duration::from_secs(30), |r| {
        r["status"] == "EXECUTING"
    })
    .await;
    let b_dir = join(a_dir.path());
    let b = other_host(b_dir.path(), &["--concurrency", "1"]);
    let answer = b
        .call(
            Method::POST,
            &format!("/api/v2/runs/{busy}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(answer["id"], busy.as_str(), "{answer}");
    let canceled = poll(
        &b,
        &busy,
        "CANCELED with its attempt",
        Duration::from_secs(30),
        |r| r["status"] == "CANCELED" && r["attempts"][0]["status"] == "CANCELED",
    )
    .await;
    assert_eq!(canceled["attemptCount"], 1, "{canceled:#}");
    let through_a = run(&a, &busy).await;
    assert_eq!(through_a["status"], "CANCELED", "{through_a:#}");

    // Host A stopped executing it: with host B gone, host A's one slot takes the next run, long
    // before the canceled spin would have ended.
    b.kill();
    let next = trigger(&a, "hello", json!({ "name": "next" }), json!({})).await;
    let run = poll(
        &a,
        &next,
        "run by host A (its one slot still held by the canceled attempt?)",
        Duration::from_secs(30),
        |r| r["isCompleted"] == true,
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_runs_are_reclaimed_by_another_once_its_lease_passes() {
    postgres_only!();
    let args = ["--wait-threshold", "100ms", "--concurrency", "4"];
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &args);
    let within = Duration::from_secs(30);
    // Waits (a checkpoint), then computes after resuming.
    let resumed = trigger(
        &a,
        "wait",
        json!({ "ms": 1_000, "spin_ms": 12_000 }),
        json!({}),
    )
    .await;
    poll(&a, &resumed, "WAITING", within, |r| {
        r["status"] == "WAITING"
    })
    .await;
    let spins = [
        trigger(&a, "spin", json!({ "ms": 12_000 }), json!({})).await,
        trigger(&a, "spin", json!({ "ms": 12_000 }), json!({})).await,
    ];
    for id in spins.iter().chain([&resumed]) {
        poll(&a, id, "EXECUTING", within, |r| r["status"] == "EXECUTING").await;
    }

    // Host B joins while host A executes them, and leaves them alone past a lease: A renews it.
    let b_dir = join(a_dir.path());
    let b = other_host(b_dir.path(), &args);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in spins.iter().chain([&resumed]) {
        let run = run(&b, id).await;
        assert!(
            run["status"] == "EXECUTING" && run["attemptCount"] == 1,
            "a live host's run changed hands (or the spin ended before the kill): {run:#}"
        );
    }
    a.kill();

    // Host B reclaims them once host A's lease has passed, as a restart would.
    for id in &spins {
        let run = finished(&b, id).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        assert_eq!(run["attemptCount"], 2, "{run:#}");
        assert_eq!(run["attempts"][0]["status"], "FAILED", "{run:#}");
        assert_eq!(
            run["attempts"][0]["error"]["code"], "TASK_RUN_STALLED_EXECUTING",
            "{run:#}"
        );
    }
    let run = finished(&b, &resumed).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(
        run["attemptCount"], 1,
        "a checkpointed attempt continues from its journal: {run:#}"
    );
    assert_eq!(before_the_wait(&b, &resumed).await, 1, "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restarted_on_its_dir_reclaims_its_runs_at_once() {
    postgres_only!();
    // A lease far longer than the test waits: only the restarted host can reclaim the run.
    let args = ["--host-lease", "60", "--concurrency", "1"];
    let a_dir = tempfile::tempdir().unwrap();
    let a = ServeProcess::start(a_dir.path(), &args);
    let id = trigger(&a, "spin", json!({ "ms": 60_000 }), json!({})).await;
    poll(&a, &id, "EXECUTING", Duration::from_secs(30), |r| {
        r["status"] == "EXECUTING"
    })
    .await;
    let b_dir = join(a_dir.path());
    let b = ServeProcess::spawn(b_dir.path(), &args, &[], |_| {});
    a.kill();
    let a = ServeProcess::spawn(a_dir.path(), &args, &[], |_| {});
    let run = poll(
        &b,
        &id,
        "reclaimed by its restarted host (not after the 60 s lease)",
        Duration::from_secs(30),
        |r| r["attemptCount"] == 2,
    )
    .await;
    assert_eq!(run["attempts"][0]["status"], "FAILED", "{run:#}");
    assert_eq!(
        run["attempts"][0]["error"]["code"], "TASK_RUN_STALLED_EXECUTING",
        "{run:#}"
    );
    // Host B's slot stayed free for its own work meanwhile.
    let next = trigger(&b, "hello", json!(null), json!({})).await;
    assert_eq!(finished(&b, &next).await["status"], "COMPLETED");
    let cancel = format!("/api/v2/runs/{id}/cancel");
    a.call(Method::POST, &cancel, Some(json!({}))).await;
}

/// Waits until the `echo` runs the schedule made cover `n` ticks, reading through the hosts in
/// turn and checking on every read that no tick made two runs; the run of each tick's timestamp.
async fn ticks(hosts: &[&ServeProcess], n: usize) -> std::collections::BTreeMap<String, String> {
    // A minute's cron: the first tick is at most a minute away, then one a minute.
    let deadline = Instant::now() + Duration::from_secs(70 * n as u64 + 20);
    for turn in 0.. {
        let host = hosts[turn % hosts.len()];
        let page = host
            .call(
                Method::GET,
                "/api/v1/runs?filter[taskIdentifier]=echo&page[size]=100",
                None,
            )
            .await;
        let mut by_tick: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in page["data"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let run = run(host, id).await;
            let tick = run["payload"]["timestamp"].as_str().unwrap().to_owned();
            by_tick.entry(tick).or_default().push(id.to_owned());
        }
        for (tick, runs) in &by_tick {
            assert_eq!(
                runs.len(),
                1,
                "the tick of {tick} made {} runs: {runs:?}",
                runs.len()
            );
        }
        if by_tick.len() >= n {
            return by_tick
                .into_iter()
                .map(|(t, mut r)| (t, r.remove(0)))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the schedule fired {} of {n} ticks: {by_tick:?}",
            by_tick.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_once_per_tick_across_three_hosts() {
    postgres_only!();
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &[]);
    let (b_dir, c_dir) = (join(a_dir.path()), join(a_dir.path()));
    let (b, c) = (other_host(b_dir.path(), &[]), other_host(c_dir.path(), &[]));
    let schedule = a
        .call(
            Method::POST,
            "/api/v1/schedules",
            Some(
                json!({ "task": "echo", "cron": "* * * * *", "deduplicationKey": "every-minute" }),
            ),
        )
        .await;
    let id = schedule["id"].as_str().unwrap();
    for host in [&b, &c] {
        let seen = host
            .call(Method::GET, &format!("/api/v1/schedules/{id}"), None)
            .await;
        assert_eq!(seen["nextRun"], schedule["nextRun"], "{seen:#}");
    }
    let first = ticks(&[&a, &b, &c], 1).await;
    // The host the schedule was made on goes; the other two fire the next tick, once.
    a.kill();
    let both = ticks(&[&b, &c], 2).await;
    assert_eq!(both.iter().next(), first.iter().next(), "{both:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = ticks(&[&c, &b], 2).await;
    for (tick, run_id) in &both {
        assert_eq!(again.get(tick), Some(run_id), "{again:?}");
        let run = finished(&b, run_id).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        assert_eq!(run["output"]["timestamp"], tick.as_str(), "{run:#}");
        assert_eq!(run["output"]["scheduleId"], id, "{run:#}");
    }
}

/// Starts `kiln serve` on `dir` (the database it names) expecting it to refuse: its exit status
/// and everything it wrote.
async fn refused(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> String {
    let (out, err) = (dir.join("serve.out"), dir.join("serve.err"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(flags(extra))
        .env(
            "KILN_DATABASE_URL",
            crate::support::test_database(dir).expect("a test database"),
        )
        .env_remove("KILN_SECRETS_KEY_FILE")
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("kiln serve starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let written = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap()
    );
    assert!(
        !status.success() && status.code().is_some(),
        "a host whose secrets key differs from the database's started ({status}): {written}"
    );
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_another_secrets_key_is_refused_by_the_database() {
    postgres_only!();
    let a_dir = tempfile::tempdir().unwrap();
    let a = first_host(a_dir.path(), &[]);
    let base = "/api/v1/projects/default/envvars/dev";
    a.call(
        Method::POST,
        base,
        Some(json!({ "name": "GREETING", "value": "hello from a" })),
    )
    .await;

    // A data dir of its own: the host makes a secrets key of its own at start.
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        a_dir.path().join("test-database-url"),
        b_dir.path().join("test-database-url"),
    )
    .unwrap();
    let written = refused(b_dir.path(), &[], &[]).await;
    assert!(written.contains("secrets key"), "{written}");
    // A key file named by the flag or the variable is held to the same rule.
    let wrong = b_dir.path().join("wrong.key");
    std::fs::write(&wrong, "ab".repeat(32)).unwrap();
    let flag = refused(
        b_dir.path(),
        &["--secrets-key-file", wrong.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(flag.contains("secrets key"), "{flag}");
    let variable = refused(b_dir.path(), &[], &[("KILN_SECRETS_KEY_FILE", &wrong)]).await;
    assert!(variable.contains("secrets key"), "{variable}");

    // The first host's key, named by the flag, is let in, and opens what host A sealed.
    let c_dir = tempfile::tempdir().unwrap();
    for file in ["test-database-url", kiln::host::DEV_KEY_FILE] {
        std::fs::copy(a_dir.path().join(file), c_dir.path().join(file)).unwrap();
    }
    let key = a_dir.path().join(kiln::secrets::KEY_FILE);
    let c = other_host(c_dir.path(), &["--secrets-key-file", key.to_str().unwrap()]);
    a.kill();
    let id = trigger(&c, "env", json!({ "names": ["GREETING"] }), json!({})).await;
    let run = finished(&c, &id).await;
    let value = "hello from a";
    assert_eq!(
        run["output"]["before"]["GREETING"],
        json!({ "len": value.len(), "sum": value.bytes().map(u64::from).sum::<u64>() }),
        "{run:#}"
    );
}
