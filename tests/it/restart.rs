//! Durability: committed runs survive a restart, and runs interrupted by a killed host are
//! recovered.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Options, TestHost, guest_path, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_committed_run_and_the_key() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let done = host.trigger("hello", json!({ "name": "before" })).await;
    let done_run = host.wait_final(&done).await;
    let key = host.key.clone();
    let dir = host.dir.clone();
    let temp = host.stop().await;

    let host = TestHost::start_in(&dir, Options::default()).await;
    assert_eq!(host.key, key, "the dev key is kept");
    let after = host.run(&done).await;
    for field in [
        "status",
        "output",
        "attemptCount",
        "version",
        "createdAt",
        "finishedAt",
    ] {
        assert_eq!(after[field], done_run[field], "{field}");
    }
    // The deployed version is still there and runs new work.
    let next = host.trigger("hello", json!({ "name": "after" })).await;
    assert_eq!(
        host.wait_final(&next).await["output"],
        json!({ "message": "Hello, after!" })
    );
    host.stop().await;
    drop(temp);
}

/// `kiln serve` as a child process, killed on drop.
pub struct ServeProcess {
    child: Child,
    pub url: String,
    pub key: String,
    /// Every line the host wrote to stdout (its log) after the one naming its address.
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// `kiln serve` with the hello guest deployed.
    pub fn start(dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start_deploying(dir, extra, &[guest_path(guests::HELLO)])
    }

    /// `kiln serve` with these components deployed at start, together as one version.
    pub fn start_deploying(
        dir: &Path,
        extra: &[&str],
        deploy: &[std::path::PathBuf],
    ) -> ServeProcess {
        ServeProcess::spawn(dir, extra, deploy, |_| {})
    }

    /// `kiln serve` with the hello guest deployed, its command adjusted by `tweak` first.
    pub fn spawn(
        dir: &Path,
        extra: &[&str],
        deploy: &[std::path::PathBuf],
        tweak: impl FnOnce(&mut Command),
    ) -> ServeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(
                deploy
                    .iter()
                    .flat_map(|p| [std::ffi::OsStr::new("--deploy"), p.as_os_str()]),
            )
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = crate::support::test_database(dir) {
            command.env("KILN_DATABASE_URL", url);
        }
        tweak(&mut command);
        let mut child = command.spawn().expect("kiln serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("kiln listening on ")
                    .map(|u| u.trim().to_owned())
            })
            .expect("kiln serve prints where it listens");
        // Keep draining stdout so the host never blocks on a full pipe.
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let key = std::fs::read_to_string(dir.join("dev.key"))
            .expect("dev.key")
            .trim()
            .to_owned();
        ServeProcess {
            child,
            url,
            key,
            output,
        }
    }

    /// What the host has written to its log so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call_as(&self.key, method, path, body).await
    }

    /// A request with another key; asserts a 2xx answer.
    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (status, body) = crate::support::read(req.send().await.expect("request")).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    pub async fn trigger(&self, task: &str, payload: Value) -> String {
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/tasks/{task}/trigger"),
                Some(json!({ "payload": payload })),
            )
            .await;
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self
                .call(reqwest::Method::GET, &format!("/api/v3/runs/{id}"), None)
                .await;
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not get there: {run:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_interrupted_by_a_killed_host_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &["--concurrency", "1"]);
    let executing = host.trigger("spin", json!({ "ms": 1500 })).await;
    host.wait_for(&executing, |r| r["status"] == "EXECUTING")
        .await;
    let queued = host.trigger("hello", json!({ "name": "queued" })).await;
    host.kill();

    let host = ServeProcess::start(dir.path(), &["--concurrency", "1"]);
    let run = host
        .wait_for(&executing, |r| r["isCompleted"] == true)
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attemptCount"], 2);
    assert_eq!(run["attempts"][0]["status"], "FAILED");
    assert_eq!(
        run["attempts"][0]["error"]["code"],
        "TASK_RUN_STALLED_EXECUTING"
    );
    let run = host.wait_for(&queued, |r| r["isCompleted"] == true).await;
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["attemptCount"], 1);
}

/// The `wait` task's log messages.
async fn messages(host: &ServeProcess, id: &str) -> Vec<String> {
    let logs = host
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{id}/logs"),
            None,
        )
        .await;
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_a_wait_resumes_the_run_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--wait-threshold", "100ms"];
    let host = ServeProcess::start(dir.path(), &args);
    let id = host.trigger("wait", json!({ "ms": 1_500 })).await;
    host.wait_for(&id, |r| r["status"] == "WAITING").await;
    host.kill();

    let host = ServeProcess::start(dir.path(), &args);
    let run = host.wait_for(&id, |r| r["isCompleted"] == true).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["attemptCount"], 1);
    let lines = messages(&host, &id).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        format!(
            "before the wait: clock {}, random {}",
            run["output"]["before_ms"], run["output"]["random"]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_a_resumed_run_computes_continues_it_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--wait-threshold", "100ms"];
    let host = ServeProcess::start(dir.path(), &args);
    // Waits (checkpoint), then computes for 3 s after resuming.
    let id = host
        .trigger("wait", json!({ "ms": 300, "spin_ms": 3_000 }))
        .await;
    host.wait_for(&id, |r| r["status"] == "WAITING").await;
    host.wait_for(&id, |r| r["status"] == "EXECUTING").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.kill();

    let host = ServeProcess::start(dir.path(), &args);
    let run = host.wait_for(&id, |r| r["isCompleted"] == true).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    // Not a stalled attempt: the attempt continued from its journal.
    assert_eq!(run["attemptCount"], 1, "{run:#}");
    let lines = messages(&host, &id).await;
    assert_eq!(
        lines[0],
        format!(
            "before the wait: clock {}, random {}",
            run["output"]["before_ms"], run["output"]["random"]
        ),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("before the wait"))
            .count(),
        1,
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_a_parent_waits_triggers_no_child_twice() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--wait-threshold", "100ms"];
    let host = ServeProcess::start(dir.path(), &args);
    let id = host
        .trigger(
            "parent",
            json!({ "items": [["wait", { "ms": 1_000 }], ["echo", "x"]], "wait": true }),
        )
        .await;
    host.wait_for(&id, |r| r["status"] == "WAITING").await;
    host.kill();

    let host = ServeProcess::start(dir.path(), &args);
    let run = host.wait_for(&id, |r| r["isCompleted"] == true).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["output"][1]["ok"], "x");
    let runs = host
        .call(reqwest::Method::GET, "/api/v1/runs?page[size]=100", None)
        .await;
    assert_eq!(
        runs["data"].as_array().unwrap().len(),
        3,
        "the parent and its two children: {runs:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestHost::start_in(dir.path(), Options::default()).await;
    let mut config =
        kiln::host::HostConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.concurrency = 1;
    let error = match kiln::host::start(config).await {
        Ok(_) => panic!("a second host started on a data dir in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("is in use by another kiln")
            && error.contains(&std::process::id().to_string()),
        "{error}"
    );
    // Once the first stops, the dir is free again.
    first.stop().await;
    let again = TestHost::start_in(dir.path(), Options::default()).await;
    again.stop().await;

    // And as a process: one line, a non-zero exit, nothing touched.
    let host = ServeProcess::start(dir.path(), &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("in use by another kiln (process {})", host.pid())),
        "{stderr}"
    );
}

/// Starts `kiln serve` on `dir` expecting it to refuse: returns its one-line error.
fn refused_start(dir: &Path) -> String {
    refused_start_on(dir, None)
}

/// [`refused_start`] with `--database` (a PostgreSQL URL).
fn refused_start_on(dir: &Path, database: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("KILN_DATABASE_URL");
    if let Some(url) = database {
        command.args(["--database", url]);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "kiln serve started on {dir:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_kiln_cannot_use_stops_the_start_and_is_left_as_it_is() {
    if crate::support::on_postgres() {
        // SQLite's files; the PostgreSQL cases are the next test's.
        return;
    }
    // Not a database at all.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kiln.db");
    let garbage = b"these bytes are not an SQLite database ".repeat(200);
    std::fs::write(&db, &garbage).unwrap();
    let error = refused_start(dir.path());
    assert!(
        error.contains(&db.display().to_string()) && error.contains("not a database"),
        "{error}"
    );
    assert!(
        std::fs::read(&db).unwrap() == garbage,
        "nothing overwritten"
    );

    // A database from a newer kiln.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kiln.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 9_999)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let error = refused_start(dir.path());
    assert!(
        error.contains("schema version 9999") && error.contains("run a newer kiln"),
        "{error}"
    );
    assert!(std::fs::read(&db).unwrap() == before, "nothing overwritten");

    // A database another process holds locked (not another kiln: that one the data dir lock
    // names): kiln waits its busy timeout, then says which file and what to do.
    let dir = tempfile::tempdir().unwrap();
    ServeProcess::start(dir.path(), &[]).kill();
    let db = dir.path().join("kiln.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let error = refused_start(dir.path());
    assert!(
        error.contains(&db.display().to_string()) && error.contains("locked"),
        "{error}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    // Released, the same data dir starts and still has its deployment.
    let host = ServeProcess::start_deploying(dir.path(), &[], &[]);
    let latest = host
        .call(reqwest::Method::GET, "/api/v1/deployments/latest", None)
        .await;
    assert!(latest["version"].is_string(), "{latest:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_callback_capabilities_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // A first start compiles the guest (whose trace would drown the log); the second, which
    // loads the compiled artifact, logs everything at trace level.
    ServeProcess::start(dir.path(), &[]).kill();
    let host = ServeProcess::spawn(dir.path(), &[], &[guest_path(guests::HELLO)], |command| {
        command.env("KILN_LOG", "trace");
    });
    let admin = std::fs::read_to_string(dir.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let created = host
        .call_as(
            &admin,
            reqwest::Method::POST,
            "/api/v1/admin/keys",
            Some(json!({ "project": "acme", "environment": "prod" })),
        )
        .await;
    let new_key = created["key"].as_str().unwrap().to_owned();
    // Good keys, a wrong key, and a token completed through its callback URL.
    let run = host.trigger("hello", json!({ "name": "log" })).await;
    host.wait_for(&run, |r| r["status"] == "COMPLETED").await;
    let wrong = "tr_dev_wrongwrongwrongwrongwrongwrong";
    let refused = http
        .get(format!("{}/api/v1/runs", host.url))
        .bearer_auth(wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    host.call_as(&new_key, reqwest::Method::GET, "/api/v1/runs", None)
        .await;
    let token = host
        .call(
            reqwest::Method::POST,
            "/api/v1/waitpoints/tokens",
            Some(json!({})),
        )
        .await;
    let url = token["url"].as_str().unwrap().to_owned();
    let capability = url.rsplit('/').next().unwrap().to_owned();
    let done = http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let forged = http
        .post(url.replace(&capability, &"0".repeat(capability.len())))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    // Let the log catch up with the requests, then look.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = host.output();
    assert!(
        log.lines().count() > 5,
        "the trace log has the requests: {log}"
    );
    for (what, secret) in [
        ("dev key", host.key.as_str()),
        ("admin key", admin.as_str()),
        ("new key", new_key.as_str()),
        ("wrong key", wrong),
        ("callback capability", capability.as_str()),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log");
    }
}

/// A PostgreSQL database kiln cannot use stops the start with one line saying which and what to
/// do: a server that does not answer, a URL that is not one, and a database from a newer kiln (in
/// the PostgreSQL suite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_kiln_cannot_use_stops_the_start() {
    if !crate::support::on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let error = refused_start_on(dir.path(), Some("postgres://kiln@127.0.0.1:1/nothing"));
    assert!(
        error.contains("postgres://kiln@127.0.0.1:1/nothing") && error.contains("cannot use"),
        "{error}"
    );
    let error = refused_start_on(dir.path(), Some("postgres://kiln@127.0.0.1:port/nothing"));
    assert!(
        error.contains("postgres://USER@HOST:PORT/DATABASE"),
        "{error}"
    );

    let held = tempfile::tempdir().unwrap();
    let url = crate::support::test_database(held.path()).expect("a test database");
    ServeProcess::start(held.path(), &[]).kill();
    let other = tempfile::tempdir().unwrap();

    // A database from a newer kiln.
    crate::support::StoredDb::open(held.path())
        .await
        .execute("UPDATE kiln_schema SET version = 9999", &[])
        .await;
    let error = refused_start_on(other.path(), Some(&url));
    assert!(
        error.contains("schema version is 9999") && error.contains("run a newer kiln"),
        "{error}"
    );
}
