//! Cron schedules: the API and CLI, fires at the right ticks (across daylight-saving changes,
//! driven by a manual clock), one catch-up run after a stopped host, and declarative schedules
//! from deployed task definitions.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::model::{Clock, ManualClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::{kiln, ok};
use crate::restart::ServeProcess;
use crate::support::{Options, TestHost, guest, guests};

fn ms(iso: &str) -> i64 {
    iso.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{iso}: {e}"))
        .as_millisecond()
}

/// Moves a manual clock forward to `iso` and wakes the host's timers.
fn advance_to(host: &TestHost, clock: &ManualClock, iso: &str) {
    let by = ms(iso) - clock.now();
    assert!(by >= 0, "the clock is already past {iso}");
    clock.advance(Duration::from_millis(by as u64));
    host.wake();
}

fn manual(start: &str) -> (Options, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(ms(start)));
    (
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
        clock,
    )
}

async fn create(host: &TestHost, body: Value) -> Value {
    let (status, schedule) = host.post("/api/v1/schedules", body).await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    schedule
}

async fn schedule(host: &TestHost, id: &str) -> Value {
    let (status, schedule) = host.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    schedule
}

/// The runs of a task, oldest first, each as retrieved (with its payload).
async fn runs_of(host: &TestHost, task: &str) -> Vec<Value> {
    let (status, page) = host
        .get(&format!(
            "/api/v1/runs?filter[taskIdentifier]={task}&page[size]=100"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut runs = Vec::new();
    for r in page["data"].as_array().unwrap().iter().rev() {
        runs.push(host.run(r["id"].as_str().unwrap()).await);
    }
    runs
}

/// Waits until the task has `n` runs; returns them, oldest first.
async fn wait_runs(host: &TestHost, task: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = runs_of(host, task).await;
        assert!(runs.len() <= n, "more than {n} runs of {task}: {runs:#?}");
        if runs.len() == n {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "{task} never had {n} runs: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that the task still has exactly `n` runs after the host had time to make more.
async fn still_runs(host: &TestHost, task: &str, n: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs_of(host, task).await.len(), n, "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_changed_and_deleted_over_the_api() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;

    let first = create(
        &host,
        json!({
            "task": "echo",
            "cron": "0 9 * * *",
            "timezone": "Europe/Berlin",
            "externalId": "user-1",
            "deduplicationKey": "daily-echo",
        }),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sched_"), "{first}");
    assert_eq!(first["task"], "echo");
    assert_eq!(first["type"], "IMPERATIVE");
    assert_eq!(first["active"], true);
    assert_eq!(first["deduplicationKey"], "daily-echo");
    assert_eq!(first["externalId"], "user-1");
    assert_eq!(first["generator"]["type"], "CRON");
    assert_eq!(first["generator"]["expression"], "0 9 * * *");
    assert!(first["generator"]["description"].as_str().unwrap().len() > 5);
    assert_eq!(first["timezone"], "Europe/Berlin");
    assert!(ms(first["nextRun"].as_str().unwrap()) > kiln::model::now_ms());
    assert_eq!(first["environments"][0]["type"], "DEVELOPMENT");

    // The same deduplication key updates the schedule instead of making a second one.
    let again = create(
        &host,
        json!({ "task": "echo", "cron": "0 10 * * *", "deduplicationKey": "daily-echo" }),
    )
    .await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["generator"]["expression"], "0 10 * * *");
    assert_eq!(again["timezone"], "UTC");
    assert_eq!(schedule(&host, &id).await, again);

    // The hello guest declares one schedule; with ours that makes two.
    let (_, list) = host.get("/api/v1/schedules").await;
    assert_eq!(list["pagination"]["count"], 2, "{list}");
    let declared = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "DECLARATIVE")
        .expect("the declared schedule")
        .clone();
    assert_eq!(declared["task"], "new-year");
    assert_eq!(declared["deduplicationKey"], Value::Null);

    let (status, updated) = host
        .request(
            Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(json!({ "task": "hello", "cron": "*/15 * * * *", "externalId": "user-2" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["task"], "hello");
    assert_eq!(updated["generator"]["expression"], "*/15 * * * *");
    assert_eq!(updated["externalId"], "user-2");
    assert_eq!(updated["deduplicationKey"], "daily-echo");

    let (_, off) = host
        .post(&format!("/api/v1/schedules/{id}/deactivate"), json!({}))
        .await;
    assert_eq!(
        (off["active"].clone(), off["nextRun"].clone()),
        (json!(false), Value::Null)
    );
    let (_, on) = host
        .post(&format!("/api/v1/schedules/{id}/activate"), json!({}))
        .await;
    assert_eq!(on["active"], true);
    assert!(on["nextRun"].is_string(), "{on}");

    // Pages.
    for key in ["a", "b"] {
        create(
            &host,
            json!({ "task": "echo", "cron": "0 0 * * *", "deduplicationKey": key }),
        )
        .await;
    }
    let (_, page) = host.get("/api/v1/schedules?page=2&perPage=3").await;
    assert_eq!(
        page["pagination"],
        json!({ "currentPage": 2, "totalPages": 2, "count": 4 })
    );
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    // Bad requests name the field and store nothing.
    for (body, field) in [
        (
            json!({ "task": "echo", "cron": "61 * * * *", "deduplicationKey": "x" }),
            "cron `61 * * * *`",
        ),
        (
            json!({ "task": "echo", "cron": "0 9 * * * *", "deduplicationKey": "x" }),
            "cron `0 9 * * * *`",
        ),
        (
            json!({ "task": "echo", "cron": "0 0 30 2 *", "deduplicationKey": "x" }),
            "never fires",
        ),
        (
            json!({ "task": "echo", "cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons", "deduplicationKey": "x" }),
            "timezone `Mars/Olympus_Mons`",
        ),
        (
            json!({ "task": "echo", "cron": "0 9 * * *" }),
            "`deduplicationKey` is required",
        ),
        (
            json!({ "cron": "0 9 * * *", "deduplicationKey": "x" }),
            "`task` is required",
        ),
        (
            json!({ "task": "nope", "cron": "0 9 * * *", "deduplicationKey": "x" }),
            "task `nope` is not in the latest deployed version",
        ),
        (
            json!({ "task": "echo", "cron": 5, "deduplicationKey": "x" }),
            "`cron` must be a string",
        ),
        (
            json!({ "task": "echo", "cron": "0 9 * * *", "deduplicationKey": "x", "window": "1h" }),
            "unknown field `window`",
        ),
        (
            json!({ "task": "echo", "cron": "0 9 * * *", "deduplicationKey": "" }),
            "deduplicationKey must be 1 to",
        ),
    ] {
        let (status, error) = host.post("/api/v1/schedules", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let (status, error) = host.get("/api/v1/schedules?perPage=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (_, list) = host.get("/api/v1/schedules").await;
    assert_eq!(list["pagination"]["count"], 4, "nothing stored: {list}");

    // Declarative schedules change only with a deploy.
    let path = format!("/api/v1/schedules/{}", declared["id"].as_str().unwrap());
    let (status, error) = host.request(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"].as_str().unwrap().contains("declarative"));
    let (status, _) = host
        .request(
            Method::PUT,
            &path,
            Some(json!({ "task": "echo", "cron": "0 9 * * *" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another environment sees none of them: its requests answer 404 like a missing id.
    let (_, other) = host.new_environment_key("acme", "prod").await;
    let (_, theirs) = host
        .request_as(&other, Method::GET, "/api/v1/schedules", None)
        .await;
    assert_eq!(theirs["pagination"]["count"], 0, "{theirs}");
    let one = format!("/api/v1/schedules/{id}");
    for (method, path, body) in [
        (Method::GET, one.clone(), None),
        (
            Method::PUT,
            one.clone(),
            Some(json!({ "task": "echo", "cron": "0 9 * * *" })),
        ),
        (Method::DELETE, one.clone(), None),
        (Method::POST, format!("{one}/activate"), None),
        (Method::POST, format!("{one}/deactivate"), None),
    ] {
        let (status, error) = host.request_as(&other, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert!(error["error"].as_str().unwrap().contains("not found"));
    }
    assert_eq!(schedule(&host, &id).await["active"], true, "untouched");

    let (_, zones) = host.get("/api/v1/timezones").await;
    let zones: Vec<&str> = zones["timezones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z.as_str().unwrap())
        .collect();
    assert_eq!(zones[0], "UTC");
    assert!(zones.contains(&"Europe/Berlin") && zones.contains(&"America/New_York"));
    let (_, without) = host.get("/api/v1/timezones?excludeUtc=true").await;
    assert!(
        !without["timezones"]
            .as_array()
            .unwrap()
            .contains(&json!("UTC"))
    );

    let (status, deleted) = host.request(Method::DELETE, &one, None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], id.as_str());
    let (status, _) = host.get(&one).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_at_its_tick_with_the_schedule_payload() {
    let (options, clock) = manual("2027-01-01T09:30:00Z");
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let s = create(
        &host,
        json!({ "task": "echo", "cron": "0 * * * *", "externalId": "ext-1", "deduplicationKey": "hourly" }),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["nextRun"], "2027-01-01T10:00:00Z");

    advance_to(&host, &clock, "2027-01-01T09:59:00Z");
    still_runs(&host, "echo", 0).await;

    advance_to(&host, &clock, "2027-01-01T10:00:00Z");
    let runs = wait_runs(&host, "echo", 1).await;
    let run = host.wait_final(runs[0]["id"].as_str().unwrap()).await;
    let payload = &run["payload"];
    assert_eq!(payload["type"], "IMPERATIVE");
    assert_eq!(payload["timestamp"], "2027-01-01T10:00:00Z");
    assert_eq!(payload.get("lastTimestamp"), None, "{payload}");
    assert_eq!(payload["timezone"], "UTC");
    assert_eq!(payload["scheduleId"], id);
    assert_eq!(payload["externalId"], "ext-1");
    assert_eq!(
        payload["upcoming"],
        json!([
            "2027-01-01T11:00:00Z",
            "2027-01-01T12:00:00Z",
            "2027-01-01T13:00:00Z",
            "2027-01-01T14:00:00Z",
            "2027-01-01T15:00:00Z"
        ])
    );
    assert_eq!(run["output"], *payload, "echo returns the payload");
    assert_eq!(
        run["idempotencyKey"],
        format!("{id}:2027-01-01T10:00:00Z"),
        "one run per schedule and tick"
    );
    assert_eq!(schedule(&host, id).await["nextRun"], "2027-01-01T11:00:00Z");

    advance_to(&host, &clock, "2027-01-01T11:00:00Z");
    let runs = wait_runs(&host, "echo", 2).await;
    assert_eq!(runs[1]["payload"]["timestamp"], "2027-01-01T11:00:00Z");
    assert_eq!(runs[1]["payload"]["lastTimestamp"], "2027-01-01T10:00:00Z");

    // A deactivated schedule does not fire; activated, it fires from its next tick.
    host.post(&format!("/api/v1/schedules/{id}/deactivate"), json!({}))
        .await;
    advance_to(&host, &clock, "2027-01-01T12:30:00Z");
    still_runs(&host, "echo", 2).await;
    let (_, on) = host
        .post(&format!("/api/v1/schedules/{id}/activate"), json!({}))
        .await;
    assert_eq!(on["nextRun"], "2027-01-01T13:00:00Z");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_keep_to_local_time_across_daylight_saving_changes() {
    // New York: 2027-03-14 02:00 EST jumps to 03:00 EDT; 2027-11-07 02:00 EDT falls back to 01:00.
    let (options, clock) = manual("2027-03-13T12:00:00Z");
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let spring = create(
        &host,
        json!({ "task": "echo", "cron": "30 2 * * *", "timezone": "America/New_York", "deduplicationKey": "spring" }),
    )
    .await;
    let spring_id = spring["id"].as_str().unwrap();
    // 02:30 does not exist on the 14th: it runs once, at 03:00 EDT.
    assert_eq!(spring["nextRun"], "2027-03-14T07:00:00Z");
    advance_to(&host, &clock, "2027-03-14T07:00:00Z");
    let runs = wait_runs(&host, "echo", 1).await;
    assert_eq!(runs[0]["payload"]["timestamp"], "2027-03-14T07:00:00Z");
    assert_eq!(runs[0]["payload"]["timezone"], "America/New_York");
    // The next day it is 02:30 EDT again.
    assert_eq!(
        schedule(&host, spring_id).await["nextRun"],
        "2027-03-15T06:30:00Z"
    );
    advance_to(&host, &clock, "2027-03-15T06:30:00Z");
    let runs = wait_runs(&host, "echo", 2).await;
    assert_eq!(runs[1]["payload"]["timestamp"], "2027-03-15T06:30:00Z");
    host.request(
        Method::DELETE,
        &format!("/api/v1/schedules/{spring_id}"),
        None,
    )
    .await;

    advance_to(&host, &clock, "2027-11-06T12:00:00Z");
    let fall = create(
        &host,
        json!({ "task": "echo", "cron": "30 1 * * *", "timezone": "America/New_York", "deduplicationKey": "fall" }),
    )
    .await;
    let fall_id = fall["id"].as_str().unwrap();
    // 01:30 happens twice on the 7th (EDT, then EST): it runs once, at the first.
    assert_eq!(fall["nextRun"], "2027-11-07T05:30:00Z");
    advance_to(&host, &clock, "2027-11-07T05:30:00Z");
    let runs = wait_runs(&host, "echo", 3).await;
    assert_eq!(runs[2]["payload"]["timestamp"], "2027-11-07T05:30:00Z");
    assert_eq!(
        schedule(&host, fall_id).await["nextRun"],
        "2027-11-08T06:30:00Z"
    );
    advance_to(&host, &clock, "2027-11-07T06:45:00Z");
    still_runs(&host, "echo", 3).await;
    advance_to(&host, &clock, "2027-11-08T06:30:00Z");
    let runs = wait_runs(&host, "echo", 4).await;
    assert_eq!(runs[3]["payload"]["timestamp"], "2027-11-08T06:30:00Z");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_across_several_ticks_fires_once_and_keeps_to_the_cron() {
    let (options, clock) = manual("2027-01-01T09:30:00Z");
    let host = TestHost::start_with(options).await;
    host.deploy(guests::HELLO).await;
    let s = create(
        &host,
        json!({ "task": "echo", "cron": "0 * * * *", "deduplicationKey": "hourly" }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let dir = host.dir.clone();
    let temp = host.stop().await;

    // Down from 09:30 to 14:20: the ticks of 10:00 to 14:00 are missed.
    clock.advance(Duration::from_millis(
        (ms("2027-01-01T14:20:00Z") - clock.now()) as u64,
    ));
    let options = Options {
        clock: Some(clock.clone()),
        ..Options::default()
    };
    let host = TestHost::start_in(&dir, options).await;
    let runs = wait_runs(&host, "echo", 1).await;
    still_runs(&host, "echo", 1).await;
    let payload = &runs[0]["payload"];
    assert_eq!(payload["timestamp"], "2027-01-01T14:00:00Z", "{payload}");
    assert_eq!(payload["upcoming"][0], "2027-01-01T15:00:00Z");
    assert_eq!(
        schedule(&host, &id).await["nextRun"],
        "2027-01-01T15:00:00Z"
    );

    advance_to(&host, &clock, "2027-01-01T15:00:00Z");
    let runs = wait_runs(&host, "echo", 2).await;
    assert_eq!(runs[1]["payload"]["timestamp"], "2027-01-01T15:00:00Z");
    assert_eq!(runs[1]["payload"]["lastTimestamp"], "2027-01-01T14:00:00Z");
    host.stop().await;
    drop(temp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_schedule_fires_and_a_deploy_without_it_removes_it() {
    // Midnight on New Year's Day in Berlin is 23:00 UTC the day before.
    let (options, clock) = manual("2027-12-31T22:00:00Z");
    let host = TestHost::start_with(options).await;
    let deployment = host.deploy(guests::HELLO).await;
    let task = deployment["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "new-year")
        .unwrap();
    assert_eq!(
        task["schedule"],
        json!({ "cron": "0 0 1 1 *", "timezone": "Europe/Berlin" })
    );
    let (_, list) = host.get("/api/v1/schedules").await;
    assert_eq!(list["pagination"]["count"], 1, "{list}");
    let declared = &list["data"][0];
    assert_eq!(declared["type"], "DECLARATIVE");
    assert_eq!(declared["task"], "new-year");
    assert_eq!(declared["timezone"], "Europe/Berlin");
    assert_eq!(declared["nextRun"], "2027-12-31T23:00:00Z");
    let id = declared["id"].as_str().unwrap().to_owned();

    advance_to(&host, &clock, "2027-12-31T23:00:00Z");
    let runs = wait_runs(&host, "new-year", 1).await;
    let run = host.wait_final(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["output"]["type"], "DECLARATIVE");
    assert_eq!(run["output"]["timestamp"], "2027-12-31T23:00:00Z");
    assert_eq!(run["output"]["scheduleId"], id.as_str());
    assert_eq!(run["output"]["timezone"], "Europe/Berlin");

    // Deploying the same declaration again keeps the one schedule.
    host.deploy(guests::HELLO).await;
    let (_, list) = host.get("/api/v1/schedules").await;
    assert_eq!(list["pagination"]["count"], 1, "{list}");
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["nextRun"], "2028-12-31T23:00:00Z");

    // A version without the task's cron removes the schedule.
    host.deploy(guests::BENCH).await;
    let (_, list) = host.get("/api/v1/schedules").await;
    assert_eq!(list["pagination"]["count"], 0, "{list}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_with_a_bad_schedule_is_refused_naming_the_task_and_field() {
    let host = TestHost::start().await;
    let (status, body) = host.upload(guest(guests::BAD_SCHEDULE)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("task `bad-cron`: schedule cron `61 * * * *`"),
        "{message}"
    );
    assert!(
        message.contains("task `bad-zone`: schedule timezone `Mars/Olympus_Mons`"),
        "{message}"
    );
    let (_, deployments) = host.get("/api/v1/deployments").await;
    assert_eq!(deployments["data"], json!([]), "nothing stored");
    let (_, schedules) = host.get("/api/v1/schedules").await;
    assert_eq!(schedules["pagination"]["count"], 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = ServeProcess::start(dir.path(), &[]);

    let created: Value = serde_json::from_str(&ok(kiln(
        &host,
        &[
            "schedules",
            "create",
            "--task",
            "echo",
            "--cron",
            "0 9 * * 1-5",
            "--timezone",
            "Europe/Berlin",
            "--external-id",
            "user-1",
            "--deduplication-key",
            "weekday-echo",
            "--json",
        ],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["timezone"], "Europe/Berlin");

    let line = ok(kiln(
        &host,
        &[
            "schedules",
            "create",
            "--task",
            "echo",
            "--cron",
            "0 10 * * 1-5",
            "--dedup-key",
            "weekday-echo",
        ],
    ));
    assert!(
        line.starts_with(id) && line.contains("0 10 * * 1-5 (UTC)"),
        "the key updates the schedule: {line}"
    );

    let list = ok(kiln(&host, &["schedules", "list"]));
    assert!(list.contains(id) && list.contains("new-year"), "{list}");
    let shown = ok(kiln(&host, &["schedules", "get", id]));
    assert!(
        shown.contains("IMPERATIVE  active") && shown.contains("weekday-echo"),
        "{shown}"
    );

    let updated = ok(kiln(
        &host,
        &["schedules", "update", id, "--timezone", "America/New_York"],
    ));
    assert!(
        updated.contains("echo") && updated.contains("0 10 * * 1-5 (America/New_York)"),
        "fields not given are kept: {updated}"
    );
    let off = ok(kiln(&host, &["schedules", "deactivate", id]));
    assert_eq!(off.trim(), format!("deactivated {id}"));
    assert!(ok(kiln(&host, &["schedules", "get", id])).contains("inactive"));
    let on = ok(kiln(&host, &["schedules", "activate", id]));
    assert!(
        on.starts_with(&format!("activated {id}; next run 20")),
        "{on}"
    );

    let zones = ok(kiln(&host, &["schedules", "timezones"]));
    assert_eq!(zones.lines().next(), Some("UTC"));
    assert!(zones.lines().any(|z| z == "Asia/Tokyo"));
    let zones = ok(kiln(&host, &["schedules", "timezones", "--exclude-utc"]));
    assert!(!zones.lines().any(|z| z == "UTC"));

    let bad = kiln(
        &host,
        &[
            "schedules",
            "create",
            "--task",
            "echo",
            "--cron",
            "0 9 * *",
            "--dedup-key",
            "x",
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("cron `0 9 * *`") && err.contains("(HTTP 400)"),
        "{err}"
    );

    let deleted = ok(kiln(&host, &["schedules", "delete", id]));
    assert_eq!(deleted.trim(), format!("deleted {id}"));
    let missing = kiln(&host, &["schedules", "get", id]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found (HTTP 404)"));

    for args in [
        vec!["schedules", "--help"],
        vec!["schedules", "create", "--help"],
        vec!["schedules", "list", "--help"],
        vec!["schedules", "get", "--help"],
        vec!["schedules", "update", "--help"],
        vec!["schedules", "delete", "--help"],
        vec!["schedules", "activate", "--help"],
        vec!["schedules", "deactivate", "--help"],
        vec!["schedules", "timezones", "--help"],
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
