//! The CLI against a real `kiln serve` process.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::restart::ServeProcess;
use crate::support::{guest_path, guests};

/// Runs the `kiln` binary as a client of `host`.
pub fn kiln(host: &ServeProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_API_URL", &host.url)
        .env("KILN_SECRET_KEY", &host.key)
        .output()
        .expect("kiln runs")
}

/// Its stdout, once it succeeded.
pub fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kiln failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_trigger_get_list_logs_and_cancel_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &[]);

    let hello = guest_path(guests::HELLO);
    let out = ok(kiln(&host, &["deploy", hello.to_str().unwrap()]));
    assert!(
        out.starts_with("deployed version ") && out.contains("hello"),
        "{out}"
    );

    let id = ok(kiln(&host, &["trigger", "hello", r#"{"name":"Ada"}"#]))
        .trim()
        .to_owned();
    assert!(id.starts_with("run_"), "{id}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let run: Value = loop {
        let run: Value =
            serde_json::from_str(&ok(kiln(&host, &["runs", "get", &id, "--json"]))).unwrap();
        if run["status"] == "COMPLETED" {
            break run;
        }
        assert!(Instant::now() < deadline, "{run:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["output"]["message"], "Hello, Ada!");

    let text = ok(kiln(&host, &["runs", "get", &id]));
    assert!(
        text.contains("COMPLETED") && text.contains("Hello, Ada!"),
        "{text}"
    );
    assert!(
        text.contains("greeting Ada"),
        "runs get shows the logs: {text}"
    );

    let list = ok(kiln(
        &host,
        &["runs", "list", "--status", "completed", "--task", "hello"],
    ));
    assert!(list.contains(&id), "{list}");
    let none = ok(kiln(&host, &["runs", "list", "--status", "FAILED"]));
    assert_eq!(none.trim(), "no runs");

    let args = [
        "trigger",
        "echo",
        "7",
        "--tag",
        "cli",
        "--idempotency-key",
        "cli-1",
        "--priority",
        "5",
    ];
    let first = ok(kiln(&host, &args)).trim().to_owned();
    assert_eq!(
        ok(kiln(&host, &args)).trim(),
        first,
        "the idempotency key returns the same run"
    );
    let tagged = ok(kiln(&host, &["runs", "list", "--tag", "cli"]));
    assert!(tagged.contains(&first), "{tagged}");
    let delayed = ok(kiln(&host, &["trigger", "echo", "1", "--delay", "1h"]))
        .trim()
        .to_owned();
    let moved = ok(kiln(
        &host,
        &["runs", "reschedule", &delayed, "--delay", "2h"],
    ));
    assert!(moved.contains("now starts at"), "{moved}");
    let shown = ok(kiln(&host, &["runs", "get", &delayed]));
    assert!(
        shown.contains("DELAYED") && shown.contains("delayed   until"),
        "{shown}"
    );
    let tags = ok(kiln(&host, &["runs", "tag", &delayed, "a", "b"]));
    assert_eq!(tags.trim(), "tags: a, b");
    let replay = ok(kiln(&host, &["runs", "replay", &id])).trim().to_owned();
    assert!(replay.starts_with("run_") && replay != id);
    let bad = kiln(&host, &["trigger", "echo", "1", "--delay", "someday"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("options.delay"));

    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = admin.trim();
    let created = kiln(
        &host,
        &[
            "keys",
            "create",
            "--project",
            "acme",
            "--env",
            "prod",
            "--admin-key",
            admin,
        ],
    );
    let new_key = ok(created).trim().to_owned();
    assert!(new_key.starts_with("tr_prod_"), "{new_key}");
    let listed = ok(kiln(&host, &["keys", "list", "--admin-key", admin]));
    assert!(
        listed.contains("acme/prod") && !listed.contains(&new_key),
        "{listed}"
    );
    let key_id = listed
        .lines()
        .find(|l| l.contains("acme/prod"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let revoked = ok(kiln(
        &host,
        &["keys", "revoke", key_id, "--admin-key", admin],
    ));
    assert!(revoked.contains("revoked"), "{revoked}");

    let logs = ok(kiln(&host, &["runs", "logs", &id]));
    assert!(logs.contains("greeting Ada"), "{logs}");

    let cancel = ok(kiln(&host, &["runs", "cancel", &id]));
    assert!(cancel.contains("already finished"), "{cancel}");

    let bad = kiln(&host, &["trigger", "hello", "{oops"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid JSON"));

    let missing = kiln(&host, &["runs", "get", "run_nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found (HTTP 404)"));
}

#[test]
fn a_client_command_without_a_host_says_how_to_start_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["runs", "list"])
        .env("KILN_API_URL", "http://127.0.0.1:9")
        .env("KILN_SECRET_KEY", "tr_dev_x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln serve"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["deploy", "--help"],
        vec!["trigger", "--help"],
        vec!["runs", "--help"],
        vec!["runs", "list", "--help"],
        vec!["runs", "get", "--help"],
        vec!["runs", "cancel", "--help"],
        vec!["runs", "logs", "--help"],
        vec!["runs", "replay", "--help"],
        vec!["runs", "reschedule", "--help"],
        vec!["runs", "tag", "--help"],
        vec!["keys", "create", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "revoke", "--help"],
        vec!["env", "--help"],
        vec!["env", "import", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_environment_limits_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &["--environment-concurrency", "7"]);

    let list = ok(kiln(&host, &["queues", "list"]));
    assert!(
        list.contains("task/echo  limit environment's  running 0  queued 0"),
        "{list}"
    );
    assert!(list.contains("limited  limit 2"), "{list}");
    assert!(list.contains("task/single  limit 1"), "{list}");

    let paused = ok(kiln(&host, &["queues", "pause", "task/echo"]));
    assert!(paused.contains("PAUSED"), "{paused}");
    let id = ok(kiln(&host, &["trigger", "echo", "1"])).trim().to_owned();
    let got: Value =
        serde_json::from_str(&ok(kiln(&host, &["queues", "get", "task/echo", "--json"]))).unwrap();
    assert_eq!(
        (got["paused"].clone(), got["queued"].clone()),
        (Value::Bool(true), 1.into())
    );
    let resumed = ok(kiln(&host, &["queues", "resume", "task/echo"]));
    assert!(!resumed.contains("PAUSED"), "{resumed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok(kiln(&host, &["runs", "get", &id])).contains("COMPLETED") {
        assert!(Instant::now() < deadline, "the resumed run never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let limited = ok(kiln(&host, &["queues", "limit", "limited", "1"]));
    assert!(limited.starts_with("limited  limit 1"), "{limited}");
    let reset = ok(kiln(&host, &["queues", "reset", "limited"]));
    assert!(reset.starts_with("limited  limit 2"), "{reset}");
    let too_high = kiln(&host, &["queues", "limit", "limited", "8"]);
    assert!(!too_high.status.success());
    assert!(
        String::from_utf8_lossy(&too_high.stderr).contains("environment's limit of 7"),
        "{too_high:?}"
    );
    let missing = kiln(&host, &["queues", "get", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("queue `nope` not found"));

    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = admin.trim();
    let envs = ok(kiln(&host, &["envs", "list", "--admin-key", admin]));
    assert!(
        envs.starts_with("default/dev  limit 7  running 0"),
        "{envs}"
    );
    let set = ok(kiln(
        &host,
        &["envs", "limit", "--env", "dev", "20", "--admin-key", admin],
    ));
    assert!(set.starts_with("default/dev  limit 20"), "{set}");
    let bad = kiln(
        &host,
        &[
            "envs",
            "limit",
            "--env",
            "dev",
            "many",
            "--admin-key",
            admin,
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("whole number or `default`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_for_a_token_completed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &[]);
    let run = ok(kiln(&host, &["trigger", "approve", "{}"]))
        .trim()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let list = ok(kiln(&host, &["tokens", "list", "--status", "waiting"]));
        if let Some(id) = list
            .split_whitespace()
            .find(|w| w.starts_with("waitpoint_"))
        {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no token appeared: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bad = kiln(&host, &["tokens", "complete", &token, "{not json"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid JSON"));
    ok(kiln(
        &host,
        &["tokens", "complete", &token, r#"{"approved":true}"#],
    ));
    let shown = ok(kiln(&host, &["tokens", "get", &token]));
    assert!(
        shown.contains("COMPLETED") && shown.contains(r#"{"approved":true}"#),
        "{shown}"
    );
    let output = loop {
        let got: Value =
            serde_json::from_str(&ok(kiln(&host, &["runs", "get", &run, "--json"]))).unwrap();
        if got["status"] == "COMPLETED" {
            break got["output"].clone();
        }
        assert!(Instant::now() < deadline, "{got:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(output["data"]["approved"], true);

    let made = ok(kiln(
        &host,
        &["tokens", "create", "--timeout", "1h", "--tag", "cli"],
    ));
    assert!(made.trim().starts_with("waitpoint_"), "{made}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_watch_follows_a_run_until_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &["--wait-threshold", "100ms"]);
    let id = ok(kiln(&host, &["trigger", "wait", r#"{"ms":1000}"#]))
        .trim()
        .to_owned();
    let out = ok(kiln(&host, &["runs", "watch", &id]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("WAITING")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("COMPLETED")), "{out}");
    assert!(out.contains("output: {"), "{out}");
    let missing = kiln(&host, &["runs", "watch", "run_nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &[]);
    ok(kiln(&host, &["env", "set", "API_KEY", "sk-1"]));
    ok(kiln(&host, &["env", "set", "API_KEY", "sk-2"]));
    assert_eq!(ok(kiln(&host, &["env", "get", "API_KEY"])), "sk-2\n");

    let file = dir.path().join("vars.env");
    std::fs::write(
        &file,
        "# production settings\nexport REGION=eu\nAPI_KEY=\"from file\"\n",
    )
    .unwrap();
    let out = kiln(&host, &["env", "import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("imported 1 of 2")
            && stderr.contains("kept the existing values of API_KEY"),
        "{stderr}"
    );
    assert_eq!(ok(kiln(&host, &["env", "list"])), "API_KEY\nREGION\n");
    ok(kiln(
        &host,
        &["env", "import", file.to_str().unwrap(), "--override"],
    ));
    assert_eq!(
        ok(kiln(&host, &["env", "list", "--show-values"])),
        "API_KEY=from file\nREGION=eu\n"
    );
    ok(kiln(&host, &["env", "rm", "REGION"]));
    let missing = kiln(&host, &["env", "get", "REGION"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("`REGION` not found"),
        "{missing:?}"
    );
    // Another environment than the key's is not found.
    let other = kiln(
        &host,
        &["env", "list", "--project", "acme", "--env", "prod"],
    );
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("not found for this key"),
        "{other:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggering_a_task_no_version_has_says_the_run_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &[]);
    let out = kiln(&host, &["trigger", "not-deployed", "{}"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = ok(out).trim().to_owned();
    assert!(id.starts_with("run_"), "{id}");
    assert!(
        stderr.contains("PENDING_VERSION") && stderr.contains("kiln deploy"),
        "says why the run waits and what to do: {stderr}"
    );
    // A task that is deployed gets no such note.
    let hello = guest_path(guests::HELLO);
    ok(kiln(&host, &["deploy", hello.to_str().unwrap()]));
    let out = kiln(&host, &["trigger", "hello", "{}"]);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
}
