use super::super::PostgresStore;
use super::super::run_fixtures::*;
use super::super::testing::TestDatabase;
use super::*;

use RunStatus::{Completed, Executing, Failed, Queued};

fn lane_a() -> Lane {
    Lane {
        environment_id: "e".into(),
        queue: "a".into(),
        concurrency_key: None,
    }
}

/// Ends child `id` (EXECUTING → COMPLETED) in a transaction of its own.
async fn end_child(store: &PostgresStore, id: &str) -> Result<Vec<Lane>, StoreError> {
    let mut c = store.conn().await?;
    let tx = c.transaction().await?;
    let lanes = apply_update(&tx, &update(id, Executing, Completed, 10)).await?;
    tx.commit().await?;
    Ok(lanes)
}

#[test]
fn the_sql_list_of_final_statuses_matches_the_model() {
    for s in RunStatus::ALL {
        assert_eq!(is_final_sql(s.as_str()), s.is_final(), "{s}");
    }
}

#[tokio::test]
async fn a_change_is_a_compare_and_set_along_an_edge_of_the_table() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "r1", "a", "EXECUTING").await;
    c.batch_execute(
        "INSERT INTO run_env_vars (run_id, environment_id, name, nonce, value) \
         VALUES ('r1', 'e', 'A', '\\x01', '\\x02')",
    )
    .await
    .expect("a copy of the variables");

    let refused = apply_update(&c, &update("r1", Executing, Executing, 5)).await;
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    let mut other = update("r1", Executing, Completed, 5);
    other.environment_id = "elsewhere".into();
    let conflict = apply_update(&c, &other).await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict)),
        "{conflict:?}"
    );

    let mut change = update("r1", Executing, Failed, 5);
    change.error = Some(RunError {
        code: None,
        name: "Error".into(),
        message: "boom".into(),
        stack: None,
    });
    assert!(apply_update(&c, &change).await.expect("applied").is_empty());
    let row = c
        .query_one(
            "SELECT status, finished_at, error, updated_at FROM runs WHERE id = 'r1'",
            &[],
        )
        .await
        .expect("the run");
    assert_eq!(row.get::<_, String>(0), "FAILED");
    assert_eq!(row.get::<_, Option<i64>>(1), Some(5));
    assert!(row.get::<_, String>(2).contains("boom"));
    assert_eq!(row.get::<_, i64>(3), 5);
    assert!(
        super::super::run_env::run_env(&c, "r1")
            .await
            .expect("the copy")
            .is_empty(),
        "an ended run's copy of the variables goes"
    );
    // The status it expected is gone: a second change of the same kind conflicts.
    let again = apply_update(&c, &change).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
}

#[tokio::test]
async fn a_retry_in_the_future_is_in_backoff() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "soon", "a", "EXECUTING").await;
    insert_run(&c, "now", "a", "EXECUTING").await;
    let mut later = update("soon", Executing, Queued, 5);
    later.available_at = Some(100);
    apply_update(&c, &later).await.expect("requeued");
    let mut at_once = update("now", Executing, Queued, 5);
    at_once.available_at = Some(5);
    apply_update(&c, &at_once).await.expect("requeued");
    let backoff: Vec<(String, i64, i64)> = c
        .query(
            "SELECT id, backoff, available_at FROM runs ORDER BY id",
            &[],
        )
        .await
        .expect("runs")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        backoff,
        [("now".into(), 0, 5), ("soon".into(), 1, 100)],
        "only a retry whose time has not come waits out of the ready index"
    );
}

#[tokio::test]
async fn an_attempt_records_its_end_usage_and_logs_or_its_cancelation() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 0, &["t"]).await;
    for (id, status) in [
        ("done", "EXECUTING"),
        ("gone", "CANCELED"),
        ("moved", "QUEUED"),
        ("taken", "EXECUTING"),
    ] {
        insert_run(&c, id, "a", status).await;
        c.execute(
            "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
             VALUES ($1, 1, 'EXECUTING', 'd1', 1)",
            &[&id],
        )
        .await
        .expect("an attempt");
        super::super::journal::append_journal(&c, id, 1, vec![1], 1)
            .await
            .expect("a journal");
    }
    let mut end = finish(
        update("done", Executing, Completed, 9),
        1,
        AttemptStatus::Completed,
    );
    end.output = Some("42".into());
    end.fuel_used = 7;
    end.compute_ms = 3;
    end.logs = vec![LogLine {
        attempt: 1,
        at: 8,
        level: LogLevel::Info,
        message: "bye".into(),
        attributes: Some("{}".into()),
    }];
    end.claim = Some("claim_a".into());
    c.execute(
        "UPDATE runs SET claim_id = 'claim_a' WHERE id = 'done'",
        &[],
    )
    .await
    .expect("claimed by a");
    let (canceled, resumed) = record_attempt(&c, end.clone()).await.expect("recorded");
    assert!(!canceled && resumed.is_empty());
    let row = c
        .query_one(
            "SELECT r.status, r.output, r.fuel_used, r.compute_ms, a.status, a.finished_at, \
               a.fuel_used, (SELECT count(*) FROM run_logs l WHERE l.run_id = r.id), \
               (SELECT count(*) FROM journal_segments j WHERE j.run_id = r.id) \
             FROM runs r JOIN attempts a ON a.run_id = r.id WHERE r.id = 'done'",
            &[],
        )
        .await
        .expect("the run");
    assert_eq!(row.get::<_, String>(0), "COMPLETED");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("42"));
    assert_eq!((row.get::<_, i64>(2), row.get::<_, i64>(3)), (7, 3));
    assert_eq!(row.get::<_, String>(4), "COMPLETED");
    assert_eq!(row.get::<_, Option<i64>>(5), Some(9));
    assert_eq!(row.get::<_, i64>(6), 7);
    assert_eq!((row.get::<_, i64>(7), row.get::<_, i64>(8)), (1, 0));

    // Canceled meanwhile: the attempt is closed as canceled with its usage, the run stays.
    let mut gone = end.clone();
    gone.update.run_id = "gone".into();
    let (canceled, _) = record_attempt(&c, gone).await.expect("recorded");
    assert!(canceled);
    let row = c
        .query_one(
            "SELECT r.status, r.output, r.fuel_used, a.status FROM runs r \
             JOIN attempts a ON a.run_id = r.id WHERE r.id = 'gone'",
            &[],
        )
        .await
        .expect("the run");
    assert_eq!(row.get::<_, String>(0), "CANCELED");
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, i64>(2), 7);
    assert_eq!(row.get::<_, String>(3), "CANCELED");

    // Moved on some other way: a conflict, and nothing recorded.
    let mut moved = end.clone();
    moved.update.run_id = "moved".into();
    let e = record_attempt(&c, moved).await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");

    // Claimed again since, or taken over by another host (this one's lease lapsed): a
    // conflict, and nothing recorded.
    c.execute(
        "UPDATE runs SET claim_id = 'claim_b' WHERE id = 'taken'",
        &[],
    )
    .await
    .expect("claimed by b");
    let mut taken = end;
    taken.update.run_id = "taken".into();
    let e = record_attempt(&c, taken).await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");
    let row = c
        .query_one(
            "SELECT r.status, a.status FROM runs r JOIN attempts a ON a.run_id = r.id WHERE r.id = 'taken'",
            &[],
        )
        .await
        .expect("the run");
    assert_eq!(row.get::<_, String>(0), "EXECUTING");
    assert_eq!(row.get::<_, String>(1), "EXECUTING");
}

#[tokio::test]
async fn a_parent_resumes_once_its_last_child_ends() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "parent", "a", "WAITING").await;
    for child in ["c1", "c2"] {
        insert_run(&c, child, "b", "EXECUTING").await;
        c.execute(
            "INSERT INTO run_waiters (child_run_id, parent_run_id) VALUES ($1, 'parent')",
            &[&child],
        )
        .await
        .expect("a waiter");
    }
    assert!(end_child(&store, "c1").await.expect("ended").is_empty());
    assert_eq!(status_of(&c, "parent").await, "WAITING");
    assert_eq!(end_child(&store, "c2").await.expect("ended"), [lane_a()]);
    assert_eq!(status_of(&c, "parent").await, "QUEUED");
}

/// Two children ending at once, each commit held open after its checks: the parent's row lock
/// makes the second check once the first committed, so the parent resumes, once. (Without it,
/// each sees the other still executing and the parent waits forever.)
#[tokio::test]
async fn two_children_ending_at_once_resume_their_parent_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "parent", "a", "WAITING").await;
    for child in ["c1", "c2"] {
        insert_run(&c, child, "b", "EXECUTING").await;
        c.execute(
            "INSERT INTO run_waiters (child_run_id, parent_run_id) VALUES ($1, 'parent')",
            &[&child],
        )
        .await
        .expect("a waiter");
    }
    slow_commits(&c, "runs", "NEW.id LIKE 'c%'", 0.4).await;
    let (first, second) = tokio::join!(end_child(&store, "c1"), end_child(&store, "c2"));
    let lanes: Vec<Lane> = [first.expect("ended"), second.expect("ended")].concat();
    assert_eq!(
        lanes,
        [lane_a()],
        "the parent is resumed by exactly one of them"
    );
    assert_eq!(status_of(&c, "parent").await, "QUEUED");
}

#[tokio::test]
async fn a_token_completes_once_and_resumes_its_waiting_runs() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    for (id, status) in [("w1", "WAITING"), ("w2", "WAITING"), ("gone", "CANCELED")] {
        insert_run(&c, id, "a", status).await;
    }
    c.batch_execute(
        "INSERT INTO waitpoints (id, environment_id, kind, status, created_at) \
         VALUES ('tok', 'e', 'MANUAL', 'PENDING', 0); \
         INSERT INTO waitpoint_waiters (waitpoint_id, run_id) \
         VALUES ('tok', 'w1'), ('tok', 'w2'), ('tok', 'gone');",
    )
    .await
    .expect("a token");
    let finish_once = |store: PostgresStore| async move {
        let mut c = store.conn().await?;
        let tx = c.transaction().await?;
        let done = finish_token(&tx, "tok", TokenStatus::Completed, "{}", 3).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(done)
    };
    let (one, two) = tokio::join!(finish_once(store.clone()), finish_once(store.clone()));
    let (one, two) = (one.expect("finished"), two.expect("finished"));
    let lanes = match (one, two) {
        (Some(lanes), None) | (None, Some(lanes)) => lanes,
        other => panic!("a token completes exactly once: {other:?}"),
    };
    assert_eq!(lanes, [lane_a(), lane_a()]);
    for (id, status) in [("w1", "QUEUED"), ("w2", "QUEUED"), ("gone", "CANCELED")] {
        assert_eq!(status_of(&c, id).await, status, "{id}");
    }
    let row = c
        .query_one(
            "SELECT status, output, output_is_error, completed_at FROM waitpoints",
            &[],
        )
        .await
        .expect("the token");
    assert_eq!(row.get::<_, String>(0), "COMPLETED");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("{}"));
    assert_eq!(
        (row.get::<_, i64>(2), row.get::<_, Option<i64>>(3)),
        (0, Some(3))
    );
}

#[tokio::test]
async fn only_waiting_runs_resume() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "w", "a", "WAITING").await;
    insert_run(&c, "x", "a", "CANCELED").await;
    let ids = vec!["w".to_owned(), "x".to_owned(), "missing".to_owned()];
    assert_eq!(resume_many(&c, &ids, 4).await.expect("resumed"), [lane_a()]);
    assert!(resume_many(&c, &[], 4).await.expect("none").is_empty());
    assert_eq!(resume(&c, "w", 5).await.expect("not waiting"), None);
    assert_eq!(resume(&c, "x", 5).await.expect("not waiting"), None);
    let row = c
        .query_one("SELECT available_at, backoff FROM runs WHERE id = 'w'", &[])
        .await
        .expect("the run");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4, 0));
}
