use super::super::testing::TestDatabase;
use super::*;

/// A run row as these tests need it; every other column takes a plain value.
#[derive(Default)]
struct R<'a> {
    id: &'a str,
    task: &'a str,
    status: &'a str,
    queue: &'a str,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    delay_until: Option<i64>,
    compute_ms: i64,
    parent: Option<&'a str>,
    root: Option<&'a str>,
    depth: i64,
    batch: Option<&'a str>,
}

struct Fixture {
    _db: TestDatabase,
    store: PostgresStore,
    env: String,
    other: String,
    c: super::super::Conn,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut envs = Vec::new();
    for (n, name) in [(1u8, "prod"), (2, "staging")] {
        let key = NewKey {
            plaintext: format!("tr_{name}"),
            hash: [n; 32],
            sealed: None,
        };
        store.create_key("acme", name, key, 1).await.unwrap();
        envs.push(
            store
                .environment_for_key([n; 32])
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }
    let c = store.conn().await.unwrap();
    c.batch_execute(&format!(
        "INSERT INTO components (digest, bytes, created_at) VALUES ('d1', '\\x00', 1); \
         INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
         VALUES ('dep_1', '{}', '20240101.1', 'd1', 1);",
        envs[0]
    ))
    .await
    .unwrap();
    let other = envs.pop().unwrap();
    let env = envs.pop().unwrap();
    Fixture {
        _db: db,
        store,
        env,
        other,
        c,
    }
}

impl Fixture {
    async fn run(&self, env: &str, r: R<'_>) {
        let queue = if r.queue.is_empty() {
            "task/a"
        } else {
            r.queue
        };
        let task = if r.task.is_empty() { "a" } else { r.task };
        self.c
            .execute(
                "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
                   max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, \
                   queue_ts, available_at, created_at, updated_at, started_at, finished_at, \
                   delay_until, compute_ms, parent_run_id, root_run_id, depth, batch_id) \
                 VALUES ($1, $2, $3, $4, '{}', $5, 'small-1x', 3, 2.0, 1000, 10000, 1, \
                   $6, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &[
                    &r.id,
                    &env,
                    &task,
                    &r.status,
                    &queue,
                    &r.created_at,
                    &r.updated_at.max(r.created_at),
                    &r.started_at,
                    &r.finished_at,
                    &r.delay_until,
                    &r.compute_ms,
                    &r.parent,
                    &r.root,
                    &r.depth,
                    &r.batch,
                ],
            )
            .await
            .unwrap();
    }

    async fn attempt(&self, run: &str, number: i64, started: i64, finished: Option<i64>) {
        self.c
            .execute(
                "INSERT INTO attempts (run_id, number, status, deployment_id, started_at, finished_at) \
                 VALUES ($1, $2, 'FAILED', 'dep_1', $3, $4)",
                &[&run, &number, &started, &finished],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn runs_are_counted_by_bucket_and_status() {
    let f = fixture().await;
    for (id, at, status) in [
        ("run_1", 999, "QUEUED"),
        ("run_2", 1_000, "QUEUED"),
        ("run_3", 1_050, "QUEUED"),
        ("run_4", 1_099, "COMPLETED"),
        ("run_5", 1_250, "FAILED"),
        ("run_6", 1_299, "FAILED"),
        ("run_7", 1_300, "QUEUED"),
    ] {
        f.run(
            &f.env,
            R {
                id,
                status,
                created_at: at,
                ..Default::default()
            },
        )
        .await;
    }
    f.run(
        &f.other,
        R {
            id: "run_8",
            status: "QUEUED",
            created_at: 1_000,
            ..Default::default()
        },
    )
    .await;
    let counts = f.store.runs_by_status(&f.env, 1_000, 100, 3).await.unwrap();
    let got: Vec<(u32, RunStatus, u64)> = counts
        .iter()
        .map(|c| (c.bucket, c.status, c.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, RunStatus::Completed, 1),
            (0, RunStatus::Queued, 2),
            (2, RunStatus::Failed, 2)
        ]
    );
}

/// A window starting before the epoch: buckets count from its start, as SQLite's do.
#[tokio::test]
async fn buckets_of_a_window_before_zero_count_from_its_start() {
    let f = fixture().await;
    for (id, at) in [
        ("run_1", -251),
        ("run_2", -250),
        ("run_3", -151),
        ("run_4", -150),
        ("run_5", 0),
        ("run_6", 49),
    ] {
        f.run(
            &f.env,
            R {
                id,
                status: "QUEUED",
                created_at: at,
                ..Default::default()
            },
        )
        .await;
    }
    let counts = f.store.runs_by_status(&f.env, -250, 100, 3).await.unwrap();
    let got: Vec<(u32, u64)> = counts.iter().map(|c| (c.bucket, c.count)).collect();
    assert_eq!(got, vec![(0, 2), (1, 1), (2, 2)]);
    // A bucket of zero is taken as one millisecond.
    let counts = f.store.runs_by_status(&f.env, 0, 0, 100).await.unwrap();
    let got: Vec<(u32, u64)> = counts.iter().map(|c| (c.bucket, c.count)).collect();
    assert_eq!(got, vec![(0, 1), (49, 1)]);
}

#[tokio::test]
async fn queue_spans_are_first_waits_and_retry_waits() {
    let f = fixture().await;
    // Waited 100..150, failed at 200, retried at 300, completed at 350.
    f.run(
        &f.env,
        R {
            id: "run_a",
            status: "COMPLETED",
            created_at: 100,
            updated_at: 350,
            started_at: Some(150),
            finished_at: Some(350),
            ..Default::default()
        },
    )
    .await;
    f.attempt("run_a", 1, 150, Some(200)).await;
    f.attempt("run_a", 2, 300, Some(350)).await;
    // Queued after its delay, still waiting.
    f.run(
        &f.env,
        R {
            id: "run_b",
            status: "QUEUED",
            queue: "custom",
            created_at: 500,
            delay_until: Some(600),
            ..Default::default()
        },
    )
    .await;
    // Delayed: not in a queue yet.
    f.run(
        &f.env,
        R {
            id: "run_c",
            status: "DELAYED",
            created_at: 550,
            ..Default::default()
        },
    )
    .await;
    // Canceled before an attempt.
    f.run(
        &f.env,
        R {
            id: "run_d",
            status: "CANCELED",
            created_at: 700,
            updated_at: 750,
            ..Default::default()
        },
    )
    .await;
    f.run(
        &f.other,
        R {
            id: "run_e",
            status: "QUEUED",
            created_at: 700,
            ..Default::default()
        },
    )
    .await;

    let span = |queue: &str, entered: i64, left: Option<i64>| QueueSpan {
        queue: queue.to_owned(),
        entered,
        left,
    };
    let all = f.store.queue_spans(&f.env, 0, 1_000, 10).await.unwrap();
    assert_eq!(
        all,
        QueueSpans {
            spans: vec![
                span("task/a", 700, Some(750)),
                span("custom", 600, None),
                span("task/a", 200, Some(300)),
                span("task/a", 100, Some(150)),
            ],
            truncated: false,
        }
    );
    let latest = f.store.queue_spans(&f.env, 0, 1_000, 2).await.unwrap();
    assert!(latest.truncated);
    assert_eq!(latest.spans, all.spans[..2]);
    // Spans that ended before the window, or start after it, are left out.
    let window = f.store.queue_spans(&f.env, 160, 650, 10).await.unwrap();
    assert_eq!(
        window.spans,
        vec![span("custom", 600, None), span("task/a", 200, Some(300))]
    );
}

#[tokio::test]
async fn durations_are_of_runs_that_finished_in_the_window() {
    let f = fixture().await;
    for (id, started, finished, compute) in [
        ("run_1", Some(100), Some(400), 50),
        ("run_2", Some(500), Some(450), 10),
        ("run_3", None, Some(300), 0),
        ("run_4", Some(100), Some(2_000), 5),
        ("run_5", Some(100), None, 5),
    ] {
        f.run(
            &f.env,
            R {
                id,
                task: "t",
                status: "COMPLETED",
                created_at: 50,
                started_at: started,
                finished_at: finished,
                compute_ms: compute,
                ..Default::default()
            },
        )
        .await;
    }
    let durations = f.store.run_durations(&f.env, 0, 1_000, 10).await.unwrap();
    let got: Vec<(u64, u64)> = durations
        .iter()
        .map(|d| (d.wall_ms, d.compute_ms))
        .collect();
    // Newest end first; an end before the start counts as no time.
    assert_eq!(got, vec![(0, 10), (300, 50)]);
    assert_eq!(durations[0].task_id, "t");
    assert_eq!(
        f.store
            .run_durations(&f.env, 0, 1_000, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        f.store
            .run_durations(&f.other, 0, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_runs_waits_are_times_tokens_and_children() {
    let f = fixture().await;
    f.run(
        &f.env,
        R {
            id: "run_p",
            status: "WAITING",
            created_at: 10,
            ..Default::default()
        },
    )
    .await;
    for (id, at, finished, batch) in [
        ("run_c1", 40, Some(90), Some("batch_1")),
        ("run_c2", 45, Some(95), Some("batch_1")),
        ("run_c3", 60, None, None),
    ] {
        f.run(
            &f.env,
            R {
                id,
                status: if finished.is_some() {
                    "COMPLETED"
                } else {
                    "EXECUTING"
                },
                created_at: at,
                finished_at: finished,
                parent: Some("run_p"),
                batch,
                ..Default::default()
            },
        )
        .await;
        f.c.execute(
            "INSERT INTO run_waiters (child_run_id, parent_run_id) VALUES ($1, 'run_p')",
            &[&id],
        )
        .await
        .unwrap();
    }
    f.c.batch_execute(&format!(
        "INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, created_at, completed_at) \
         VALUES ('wp_time', '{env}', 'run_p', 'DATETIME', 'COMPLETED', 30, 20, 31), \
                ('wp_token', '{env}', NULL, 'MANUAL', 'TIMED_OUT', 80, 50, 81); \
         INSERT INTO waitpoint_waiters (waitpoint_id, run_id) VALUES ('wp_token', 'run_p');",
        env = f.env
    ))
    .await
    .unwrap();

    let waits = f.store.run_waits(&f.env, "run_p").await.unwrap();
    assert_eq!(
        waits,
        vec![
            WaitRecord {
                kind: WaitKind::DateTime,
                id: "wp_time".into(),
                since: 20,
                deadline: Some(30),
                done_at: Some(31),
                timed_out: false,
            },
            WaitRecord {
                kind: WaitKind::Runs(vec!["run_c1".into(), "run_c2".into()]),
                id: "run_c1".into(),
                since: 40,
                deadline: None,
                done_at: Some(95),
                timed_out: false,
            },
            WaitRecord {
                kind: WaitKind::Token,
                id: "wp_token".into(),
                since: 50,
                deadline: Some(80),
                done_at: Some(81),
                timed_out: true,
            },
            WaitRecord {
                kind: WaitKind::Runs(vec!["run_c3".into()]),
                id: "run_c3".into(),
                since: 60,
                deadline: None,
                done_at: None,
                timed_out: false,
            },
        ]
    );
    assert!(
        f.store
            .run_waits(&f.other, "run_p")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.store
            .run_waits(&f.env, "run_missing")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_runs_tree_is_its_roots_descendants() {
    let f = fixture().await;
    for (id, parent, depth, finished) in [
        ("run_r", None, 0, None),
        ("run_b", Some("run_r"), 1, Some(70)),
        ("run_a", Some("run_r"), 1, None),
        ("run_g", Some("run_a"), 2, None),
    ] {
        f.run(
            &f.env,
            R {
                id,
                status: "EXECUTING",
                created_at: 10 * depth + 1,
                finished_at: finished,
                parent,
                root: parent.map(|_| "run_r"),
                depth,
                ..Default::default()
            },
        )
        .await;
    }
    f.run(
        &f.env,
        R {
            id: "run_x",
            status: "QUEUED",
            created_at: 5,
            ..Default::default()
        },
    )
    .await;
    let tree = f.store.run_tree(&f.env, "run_g", 10).await.unwrap();
    let got: Vec<(&str, Option<&str>, u32)> = tree
        .iter()
        .map(|n| (n.id.as_str(), n.parent_run_id.as_deref(), n.depth))
        .collect();
    assert_eq!(
        got,
        vec![
            ("run_r", None, 0),
            ("run_a", Some("run_r"), 1),
            ("run_b", Some("run_r"), 1),
            ("run_g", Some("run_a"), 2)
        ]
    );
    assert_eq!(tree[2].finished_at, Some(70));
    assert_eq!(tree[3].created_at, 21);
    assert_eq!(tree[0].status, RunStatus::Executing);
    assert_eq!(f.store.run_tree(&f.env, "run_r", 2).await.unwrap().len(), 2);
    assert_eq!(
        f.store.run_tree(&f.env, "run_x", 10).await.unwrap().len(),
        1
    );
    assert!(
        f.store
            .run_tree(&f.other, "run_g", 10)
            .await
            .unwrap()
            .is_empty()
    );
}
