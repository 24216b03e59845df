use std::time::Duration;

use super::super::PostgresStore;
use super::super::run_fixtures::*;
use super::super::testing::TestDatabase;
use super::*;

fn lane_a() -> Lane {
    Lane {
        environment_id: "e".into(),
        queue: "a".into(),
        concurrency_key: None,
    }
}

/// A tenant with a deployment and executing run `run` (queue `a`) on its first attempt.
async fn executing(store: &PostgresStore, run: &str) -> super::super::Conn {
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 0, &["t"]).await;
    insert_run(&c, run, "a", "EXECUTING").await;
    c.execute(
        "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
         VALUES ($1, 1, 'EXECUTING', 'd1', 1)",
        &[&run],
    )
    .await
    .expect("an attempt");
    c
}

/// A wait token `id` of environment `e`, pending, timing out at `timeout_at`.
async fn token(c: &tokio_postgres::Client, id: &str, timeout_at: Option<i64>) {
    c.execute(
        "INSERT INTO waitpoints (id, environment_id, kind, status, completes_at, created_at) \
         VALUES ($1, 'e', 'MANUAL', 'PENDING', $2, 0)",
        &[&id, &timeout_at],
    )
    .await
    .expect("a token");
}

/// After `ms`, what `f` returns.
async fn after<T>(ms: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    f.await
}

#[tokio::test]
async fn a_run_waits_for_a_time_and_resumes_when_it_comes() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    let staged = store
        .checkpoint(suspend("r1", 10), vec![1, 2], 100)
        .await
        .expect("checkpointed");
    staged.durable.wait().await.expect("durable");
    assert_eq!(status_of(&c, "r1").await, "WAITING");
    assert_eq!(store.journal("e", "r1", 1).await.expect("journal"), [1, 2]);
    assert!(
        store
            .journal("other", "r1", 1)
            .await
            .expect("none")
            .is_empty()
    );
    assert_eq!(store.journal_size().await.expect("size"), (2, 1));
    let waits = store.waiting_for("e", "r1").await.expect("waits");
    assert!(
        matches!(
            &waits[..],
            [WaitingFor::DateTime {
                completes_at: 100,
                ..
            }]
        ),
        "{waits:?}"
    );
    assert!(
        store
            .waiting_for("other", "r1")
            .await
            .expect("none")
            .is_empty()
    );

    assert!(store.resume_due(99, 10).await.expect("none due").is_empty());
    assert_eq!(
        store.resume_due(100, 10).await.expect("resumed"),
        [lane_a()]
    );
    assert_eq!(status_of(&c, "r1").await, "QUEUED");
    assert!(
        store
            .waiting_for("e", "r1")
            .await
            .expect("waits")
            .is_empty()
    );
    assert!(store.resume_due(200, 10).await.expect("done").is_empty());
}

#[tokio::test]
async fn a_canceled_run_keeps_its_status_and_gets_no_wait() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    c.batch_execute("UPDATE runs SET status = 'CANCELED' WHERE id = 'r1'")
        .await
        .expect("canceled");
    store
        .checkpoint(suspend("r1", 10), vec![1], 100)
        .await
        .expect("recorded");
    let row = c
        .query_one(
            "SELECT r.status, a.status, (SELECT count(*) FROM waitpoints), \
               (SELECT count(*) FROM journal_segments) \
             FROM runs r JOIN attempts a ON a.run_id = r.id",
            &[],
        )
        .await
        .expect("the run");
    assert_eq!(row.get::<_, String>(0), "CANCELED");
    assert_eq!(row.get::<_, String>(1), "CANCELED");
    assert_eq!((row.get::<_, i64>(2), row.get::<_, i64>(3)), (0, 0));
}

#[tokio::test]
async fn a_run_waiting_for_a_token_resumes_at_once_if_it_is_done_or_when_it_completes() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    insert_run(&c, "r2", "a", "EXECUTING").await;
    token(&c, "done", None).await;
    token(&c, "open", None).await;
    c.batch_execute("UPDATE waitpoints SET status = 'COMPLETED' WHERE id = 'done'")
        .await
        .expect("completed");
    let lane = store
        .checkpoint_on_token(suspend("r1", 10), vec![1], "done".into())
        .await
        .expect("checkpointed")
        .value;
    assert_eq!(lane, Some(lane_a()), "a done token queues the run at once");
    assert_eq!(status_of(&c, "r1").await, "QUEUED");

    let lane = store
        .checkpoint_on_token(suspend("r2", 10), vec![1], "open".into())
        .await
        .expect("checkpointed")
        .value;
    assert_eq!(lane, None);
    assert!(matches!(
        &store.waiting_for("e", "r2").await.expect("waits")[..],
        [WaitingFor::Token { id, timeout_at: None }] if id == "open"
    ));
    let (_, lanes) = store
        .complete_token(None, "open", "{}".into(), 20)
        .await
        .expect("completed")
        .expect("a token");
    assert_eq!(lanes, Some(vec![lane_a()]));
    assert_eq!(status_of(&c, "r2").await, "QUEUED");
}

/// Exactly one of the checkpoint and the completion resumed the run, and it is queued.
async fn resumed_once(
    c: &tokio_postgres::Client,
    checkpoint: Result<Staged<Option<Lane>>, StoreError>,
    completion: Result<Option<Completed>, StoreError>,
) {
    let by_checkpoint = checkpoint.expect("checkpointed").value;
    let (_, by_completion) = completion.expect("completed").expect("a token");
    let by_completion = by_completion.expect("the token completed");
    let all: Vec<Lane> = by_checkpoint.into_iter().chain(by_completion).collect();
    assert_eq!(all, [lane_a()], "resumed exactly once");
    assert_eq!(status_of(c, "r1").await, "QUEUED");
}

/// The token completes while the checkpoint, past its read of the token, is committing: the
/// completion waits for the checkpoint (the token's row lock) and then resumes the run.
#[tokio::test]
async fn a_token_completed_while_its_waiter_checkpoints_resumes_it_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    token(&c, "tok", None).await;
    slow_commits(&c, "waitpoint_waiters", "true", 0.5).await;
    let (checkpoint, completion) = tokio::join!(
        store.checkpoint_on_token(suspend("r1", 10), vec![1], "tok".into()),
        after(150, store.complete_token(None, "tok", "{}".into(), 20)),
    );
    resumed_once(&c, checkpoint, completion).await;
}

/// The checkpoint comes while the completion is committing: it waits for it (the token's row
/// lock), then finds the token done and resumes the run itself.
#[tokio::test]
async fn a_checkpoint_on_a_token_completing_meanwhile_resumes_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    token(&c, "tok", None).await;
    slow_commits(&c, "waitpoints", "NEW.status = 'COMPLETED'", 0.5).await;
    let (checkpoint, completion) = tokio::join!(
        after(
            150,
            store.checkpoint_on_token(suspend("r1", 10), vec![1], "tok".into())
        ),
        store.complete_token(None, "tok", "{}".into(), 20),
    );
    resumed_once(&c, checkpoint, completion).await;
}

#[tokio::test]
async fn a_parent_waits_for_its_children_and_resumes_when_the_last_ends() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    insert_run(&c, "r2", "a", "EXECUTING").await;
    insert_run(&c, "ended", "b", "COMPLETED").await;
    insert_run(&c, "going", "b", "EXECUTING").await;
    let lane = store
        .checkpoint_on_runs(suspend("r1", 10), vec![1], vec!["ended".into()])
        .await
        .expect("checkpointed")
        .value;
    assert_eq!(
        lane,
        Some(lane_a()),
        "children that ended queue the parent at once"
    );

    let children = vec!["ended".to_owned(), "going".to_owned(), "going".to_owned()];
    let lane = store
        .checkpoint_on_runs(suspend("r2", 10), vec![1], children)
        .await
        .expect("checkpointed")
        .value;
    assert_eq!(lane, None);
    assert_eq!(
        store.waiting_for("e", "r2").await.expect("waits"),
        [WaitingFor::Run { id: "going".into() }]
    );
    let resumed = store
        .update_run(update(
            "going",
            RunStatus::Executing,
            RunStatus::Completed,
            20,
        ))
        .await
        .expect("ended");
    assert_eq!(resumed, [lane_a()]);
    assert_eq!(status_of(&c, "r2").await, "QUEUED");
}

/// Exactly one of the checkpoint and the child's end resumed the parent, and it is queued.
async fn parent_resumed_once(
    c: &tokio_postgres::Client,
    checkpoint: Result<Staged<Option<Lane>>, StoreError>,
    ended: Result<Vec<Lane>, StoreError>,
) {
    let all: Vec<Lane> = checkpoint
        .expect("checkpointed")
        .value
        .into_iter()
        .chain(ended.expect("ended"))
        .collect();
    assert_eq!(all, [lane_a()], "resumed exactly once");
    assert_eq!(status_of(c, "r1").await, "QUEUED");
}

/// The child ends while the parent's checkpoint, past its read of the child, is committing:
/// the end waits for it (the child's end lock) and then finds the parent among its waiters.
#[tokio::test]
async fn a_child_ending_while_its_parent_checkpoints_resumes_it_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    insert_run(&c, "child", "b", "EXECUTING").await;
    slow_commits(&c, "run_waiters", "true", 0.5).await;
    let (checkpoint, ended) = tokio::join!(
        store.checkpoint_on_runs(suspend("r1", 10), vec![1], vec!["child".into()]),
        after(
            150,
            store.update_run(update(
                "child",
                RunStatus::Executing,
                RunStatus::Completed,
                20
            ))
        ),
    );
    parent_resumed_once(&c, checkpoint, ended).await;
}

/// The parent checkpoints while its child's end is committing: the checkpoint waits for it
/// (the child's end lock), then finds the child ended and resumes itself.
#[tokio::test]
async fn a_checkpoint_on_a_child_ending_meanwhile_resumes_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    insert_run(&c, "child", "b", "EXECUTING").await;
    slow_commits(
        &c,
        "runs",
        "NEW.id = 'child' AND NEW.status = 'COMPLETED'",
        0.5,
    )
    .await;
    let (checkpoint, ended) = tokio::join!(
        after(
            150,
            store.checkpoint_on_runs(suspend("r1", 10), vec![1], vec!["child".into()])
        ),
        store.update_run(update(
            "child",
            RunStatus::Executing,
            RunStatus::Completed,
            20
        )),
    );
    parent_resumed_once(&c, checkpoint, ended).await;
}

#[tokio::test]
async fn a_token_that_times_out_resumes_its_waiters_with_the_timeout_error() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = executing(&store, "r1").await;
    token(&c, "tok", Some(50)).await;
    store
        .checkpoint_on_token(suspend("r1", 10), vec![1], "tok".into())
        .await
        .expect("checkpointed");
    assert!(store.resume_due(49, 10).await.expect("none due").is_empty());
    assert_eq!(store.resume_due(60, 10).await.expect("resumed"), [lane_a()]);
    let row = c
        .query_one(
            "SELECT status, output, output_is_error, completed_at FROM waitpoints",
            &[],
        )
        .await
        .expect("the token");
    assert_eq!(row.get::<_, String>(0), "TIMED_OUT");
    assert_eq!(
        row.get::<_, Option<String>>(1),
        Some(token_timeout_error(50))
    );
    assert_eq!(
        (row.get::<_, i64>(2), row.get::<_, Option<i64>>(3)),
        (1, Some(60))
    );
    assert_eq!(status_of(&c, "r1").await, "QUEUED");
}

/// Two passes over the same due waits at once (two hosts): each waitpoint completes once, and
/// each run resumes once.
#[tokio::test]
async fn two_passes_at_once_resume_each_run_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    for i in 0..8 {
        let (run, waitpoint) = (format!("r{i}"), format!("w{i}"));
        insert_run(&c, &run, "a", "WAITING").await;
        c.execute(
            "INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, \
               created_at) VALUES ($1, 'e', $2, 'DATETIME', 'PENDING', $3, 0)",
            &[&waitpoint, &run, &(i as i64)],
        )
        .await
        .expect("a wait");
    }
    slow_commits(&c, "runs", "true", 0.3).await;
    let (one, two) = tokio::join!(store.resume_due(50, 5), store.resume_due(50, 5));
    let (one, two) = (one.expect("resumed"), two.expect("resumed"));
    assert_eq!(one.len() + two.len(), 8, "{} + {}", one.len(), two.len());
    assert!(
        one.len() <= 5 && two.len() <= 5,
        "{} + {}",
        one.len(),
        two.len()
    );
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM runs WHERE status = 'QUEUED'), \
               (SELECT count(*) FROM waitpoints WHERE status = 'COMPLETED'), \
               (SELECT queued FROM queue_depths WHERE queue = 'a')",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (8, 8, 8)
    );
}
