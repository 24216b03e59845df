use std::time::Duration;

use super::super::queues::tests::{insert_run, tenant};
use super::*;

/// A new run of task `task` in environment `e`, on the task's own queue.
pub(in crate::store::postgres) fn new_run(task: &str, status: RunStatus) -> NewRun {
    let now = 1_000;
    NewRun {
        environment_id: "e".into(),
        task_id: task.to_owned(),
        status,
        payload: "{}".into(),
        queue: format!("task/{task}"),
        machine: Machine::Small1x,
        retry: RetryPolicy::default(),
        oom_machine: None,
        queue_timestamp: now,
        priority_ms: 0,
        delay_until: (status == RunStatus::Delayed).then_some(now + 3_600_000),
        ttl: None,
        expires_at: None,
        idempotency: None,
        idempotency_options: None,
        tags: Vec::new(),
        metadata: None,
        max_duration: None,
        concurrency_key: None,
        lock_to_version: None,
        parent: None,
        now,
    }
}

/// [`new_run`] with idempotency key `key`, live until `expires_at`.
pub(in crate::store::postgres) fn keyed(task: &str, key: &str, expires_at: Millis) -> NewRun {
    NewRun {
        idempotency: Some((key.into(), expires_at)),
        idempotency_options: Some(IdempotencyKeyOptions {
            key: format!("user-{key}"),
            scope: IdempotencyScope::Global,
        }),
        ..new_run(task, RunStatus::Queued)
    }
}

async fn count(store: &PostgresStore, sql: &str) -> i64 {
    store
        .conn()
        .await
        .expect("a connection")
        .query_one(sql, &[])
        .await
        .expect("a count")
        .get(0)
}

#[tokio::test]
async fn a_run_is_stored_with_its_queue_tags_and_batch_and_read_back() {
    let (_db, store) = tenant().await;
    let mut delayed = new_run("t", RunStatus::Delayed);
    delayed.tags = vec!["x".into(), "y".into()];
    delayed.metadata = Some(r#"{"a":1}"#.into());
    delayed.ttl = Some(Duration::from_secs(60));
    delayed.priority_ms = 10;
    delayed.concurrency_key = Some("k".into());
    let inserted = store
        .insert_runs(
            vec![delayed, new_run("u", RunStatus::Queued)],
            Some("batch_1".into()),
        )
        .await
        .expect("insert");
    assert!(inserted.iter().all(|i| !i.cached));
    let run = &inserted[0].run;
    assert_eq!(
        (run.status, run.tags.clone(), run.metadata.as_deref()),
        (
            RunStatus::Delayed,
            vec!["x".to_owned(), "y".to_owned()],
            Some(r#"{"a":1}"#)
        )
    );
    assert_eq!(
        (run.delay_until, run.available_at, run.ttl, run.priority_ms),
        (
            Some(3_601_000),
            3_601_000,
            Some(Duration::from_secs(60)),
            10
        )
    );
    assert_eq!(run.environment_slug, "dev");
    assert_eq!(run.batch_id.as_deref(), Some("batch_1"));
    assert_eq!(
        store.run("e", &run.id).await.expect("read").as_ref(),
        Some(run)
    );
    assert!(store.run("f", &run.id).await.expect("read").is_none());

    let queues = store.environment_queues("e").await.expect("queues");
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "task/t", "task/u"]);
    assert_eq!(store.queued_count("e", "task/u").await.expect("count"), 1);
    assert_eq!(count(&store, "SELECT count(*) FROM run_tags").await, 2);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM batches WHERE sealed = 1 AND run_count = 2"
        )
        .await,
        1
    );
    assert_eq!(count(&store, "SELECT count(*) FROM batch_items").await, 2);

    let e = store
        .insert_runs(vec![new_run("t", RunStatus::Executing)], None)
        .await;
    assert!(matches!(e, Err(StoreError::Refused(_))), "{e:?}");

    let ids = vec![inserted[1].run.id.clone(), "nope".into(), run.id.clone()];
    let found = store.runs_by_id("e", ids).await.expect("by id");
    let found: Vec<Option<&str>> = found
        .iter()
        .map(|r| r.as_ref().map(|r| r.id.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            Some(inserted[1].run.id.as_str()),
            None,
            Some(run.id.as_str())
        ]
    );
    assert_eq!(
        store
            .count_runs("e", RunStatus::Delayed)
            .await
            .expect("count"),
        1
    );

    let staged = store
        .insert_runs_staged(vec![new_run("t", RunStatus::Queued)], None)
        .await
        .expect("staged");
    staged.durable.wait().await.expect("settled");
    assert_eq!(
        store
            .count_runs("e", RunStatus::Queued)
            .await
            .expect("count"),
        2
    );
}

/// Many triggers with one key at once, through the pool (several transactions at once, as two
/// hosts would): one run, returned `cached` to every other.
#[tokio::test]
async fn concurrent_triggers_with_one_key_make_one_run() {
    let (_db, store) = tenant().await;
    let triggers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.insert_runs(vec![keyed("t", "k", 10_000)], None).await })
    });
    let mut made = Vec::new();
    let mut cached = Vec::new();
    for result in futures_util::future::join_all(triggers).await {
        let inserted = result
            .expect("the task")
            .expect("every trigger succeeds")
            .remove(0);
        if inserted.cached {
            cached.push(inserted.run.id);
        } else {
            made.push(inserted.run.id);
        }
    }
    assert_eq!(made.len(), 1, "one trigger made the run: {made:?}");
    assert_eq!(cached.len(), 7);
    assert!(cached.iter().all(|id| id == &made[0]));
    assert_eq!(count(&store, "SELECT count(*) FROM runs").await, 1);
}

/// A trigger whose key another transaction holds uncommitted waits for it and returns its run;
/// if that transaction rolls back instead, the trigger makes its own.
#[tokio::test]
async fn a_trigger_waits_for_the_uncommitted_holder_of_its_key() {
    let (_db, store) = tenant().await;
    for commit in [true, false] {
        let key = format!("k-{commit}");
        let mut c = store.conn().await.expect("a connection");
        let tx = c.transaction().await.expect("a transaction");
        let first = insert_all(&tx, vec![keyed("t", &key, 10_000)], None)
            .await
            .expect("the first")
            .remove(0);
        let second = tokio::spawn({
            let (store, key) = (store.clone(), key.clone());
            async move {
                store
                    .insert_runs(vec![keyed("t", &key, 10_000)], None)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the second waits for the first");
        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        let second = second
            .await
            .expect("the task")
            .expect("the second")
            .remove(0);
        assert_eq!(second.cached, commit);
        assert_eq!(second.run.id == first.run.id, commit);
    }
    assert_eq!(count(&store, "SELECT count(*) FROM runs").await, 2);
}

#[tokio::test]
async fn a_key_of_a_failed_or_expired_run_is_released_and_a_reset_key_forgotten() {
    let (_db, store) = tenant().await;
    let insert = |run: NewRun| {
        let store = store.clone();
        async move {
            store
                .insert_runs(vec![run], None)
                .await
                .expect("insert")
                .remove(0)
        }
    };
    let first = insert(keyed("t", "k", 10_000)).await;
    let again = insert(keyed("t", "k", 10_000)).await;
    assert!(again.cached && again.run.id == first.run.id);
    assert_eq!(
        again
            .run
            .idempotency_key_options
            .as_ref()
            .map(|o| o.key.as_str()),
        Some("user-k")
    );
    // Another task's key of the same text is another key.
    assert!(!insert(keyed("u", "k", 10_000)).await.cached);

    store
        .conn()
        .await
        .expect("a connection")
        .execute(
            "UPDATE runs SET status = 'FAILED' WHERE id = $1",
            &[&first.run.id],
        )
        .await
        .expect("failed");
    let after_failure = insert(keyed("t", "k", 10_000)).await;
    assert!(!after_failure.cached && after_failure.run.id != first.run.id);

    let mut late = keyed("t", "k", 20_000);
    late.now = 10_000;
    let after_expiry = insert(late).await;
    assert!(!after_expiry.cached && after_expiry.run.id != after_failure.run.id);

    assert_eq!(
        store
            .reset_idempotency_key("e", "k", Some("u".into()))
            .await
            .expect("reset"),
        1
    );
    assert_eq!(
        store
            .reset_idempotency_key("e", "k", None)
            .await
            .expect("reset"),
        1
    );
    assert_eq!(
        store
            .reset_idempotency_key("e", "k", None)
            .await
            .expect("reset"),
        0
    );
    assert!(!insert(keyed("t", "k", 10_000)).await.cached);

    // Two runs with one key in one request: the second is the first.
    let both = store
        .insert_runs(
            vec![keyed("v", "same", 10_000), keyed("v", "same", 10_000)],
            None,
        )
        .await
        .expect("insert");
    assert!(!both[0].cached && both[1].cached && both[0].run.id == both[1].run.id);
}

/// Requests inserting runs of the same queues in opposite orders at once never deadlock: each
/// locks the queues' depth rows in one order first.
#[tokio::test]
async fn runs_of_several_queues_inserted_at_once_in_any_order_do_not_deadlock() {
    let (_db, store) = tenant().await;
    let on = |queue: &str| NewRun {
        queue: queue.into(),
        ..new_run("t", RunStatus::Queued)
    };
    for _ in 0..10 {
        let forward = store.insert_runs(vec![on("a"), on("b"), on("c")], None);
        let backward = store.insert_runs(vec![on("c"), on("b"), on("a")], None);
        let (forward, backward) = tokio::join!(forward, backward);
        forward.expect("forward");
        backward.expect("backward");
    }
    for queue in ["a", "b", "c"] {
        assert_eq!(store.queued_count("e", queue).await.expect("count"), 20);
    }
}

fn journal(run_id: &str) -> JournalWith<[Inserted]> {
    JournalWith {
        run_id: run_id.into(),
        environment_id: "e".into(),
        attempt: 1,
        claim: None,
        entries: Box::new(|children: &[Inserted]| children.len().to_string().into_bytes()),
        logs: Vec::new(),
    }
}

fn child_of(parent: &str, key: Option<&str>) -> NewRun {
    let mut run = match key {
        Some(key) => keyed("child", key, 10_000),
        None => new_run("child", RunStatus::Queued),
    };
    run.parent = Some(ParentLink {
        parent_run_id: parent.into(),
        root_run_id: parent.into(),
        depth: 1,
    });
    run
}

#[tokio::test]
async fn child_runs_commit_with_the_parents_journal_and_never_wait_for_an_ancestor() {
    let (_db, store) = tenant().await;
    let c = store.conn().await.expect("a connection");
    insert_run(&c, "parent", "a", "EXECUTING").await;
    insert_run(&c, "ended", "a", "CANCELED").await;
    let children = store
        .insert_child_runs(
            vec![child_of("parent", None), child_of("parent", Some("ck"))],
            None,
            journal("parent"),
            true,
        )
        .await
        .expect("children");
    assert_eq!(children.len(), 2);
    assert_eq!(children[0].run.parent_run_id.as_deref(), Some("parent"));
    let row = c
        .query_one(
            "SELECT checkpointed, (SELECT entries FROM journal_segments WHERE run_id = 'parent') \
             FROM runs WHERE id = 'parent'",
            &[],
        )
        .await
        .expect("the parent");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1)),
        (1, b"2".to_vec())
    );
    let mut live = store.live_children("e", "parent").await.expect("children");
    live.sort();
    let mut ids: Vec<String> = children.iter().map(|i| i.run.id.clone()).collect();
    ids.sort();
    assert_eq!(live, ids);

    // A child's key that names the parent's own ancestor (here: the parent itself).
    c.execute(
        "INSERT INTO idempotency_keys (environment_id, task_id, key, run_id, expires_at) \
         VALUES ('e', 'child', 'self', 'parent', 10000)",
        &[],
    )
    .await
    .expect("a key naming the parent");
    let e = store
        .insert_child_runs(
            vec![child_of("parent", Some("self"))],
            None,
            journal("parent"),
            true,
        )
        .await;
    assert!(matches!(e, Err(StoreError::Refused(_))), "{e:?}");
    let not_waiting = store
        .insert_child_runs(
            vec![child_of("parent", Some("self"))],
            None,
            journal("parent"),
            false,
        )
        .await
        .expect("no wait, no refusal");
    assert!(not_waiting[0].cached && not_waiting[0].run.id == "parent");

    let before = count(&store, "SELECT count(*) FROM runs").await;
    let e = store
        .insert_child_runs(vec![child_of("ended", None)], None, journal("ended"), true)
        .await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs").await,
        before,
        "nothing stored"
    );
}

#[tokio::test]
async fn a_delayed_run_is_rescheduled_and_tags_and_metadata_change_atomically() {
    let (_db, store) = tenant().await;
    let mut delayed = new_run("t", RunStatus::Delayed);
    delayed.ttl = Some(Duration::from_millis(500));
    let run = store
        .insert_runs(vec![delayed], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    store
        .reschedule("e", &run.id, 9_000, 2_000)
        .await
        .expect("reschedule");
    let moved = store
        .run("e", &run.id)
        .await
        .expect("read")
        .expect("the run");
    assert_eq!(
        (
            moved.delay_until,
            moved.available_at,
            moved.queue_timestamp,
            moved.expires_at
        ),
        (Some(9_000), 9_000, 9_000, Some(9_500))
    );
    let e = store.reschedule("f", &run.id, 9_000, 2_000).await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");
    let queued = store
        .insert_runs(vec![new_run("t", RunStatus::Queued)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    let e = store.reschedule("e", &queued.id, 9_000, 2_000).await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");

    // Tags added from many transactions at once all stay.
    let adds = (0..6).map(|n| store.add_tags("e", &run.id, vec![format!("t{n}")], 10, 3_000));
    for added in futures_util::future::join_all(adds).await {
        added.expect("add").expect("under the limit");
    }
    let tagged = store
        .run("e", &run.id)
        .await
        .expect("read")
        .expect("the run");
    assert_eq!(tagged.tags.len(), 6, "{:?}", tagged.tags);
    assert_eq!(
        store
            .add_tags("e", &run.id, vec!["t0".into(), "new".into()], 6, 3_000)
            .await
            .expect("add"),
        Err(7)
    );
    let e = store
        .add_tags("f", &run.id, vec!["x".into()], 10, 3_000)
        .await;
    assert!(matches!(e, Err(StoreError::NotFound(_))), "{e:?}");

    // Increments from many transactions at once all count.
    let increments = (0..6).map(|_| {
        let op = MetadataOp::Increment {
            key: "n".into(),
            by: 1.0,
        };
        store.change_metadata("e", &run.id, 4_000, vec![op], None)
    });
    for changed in futures_util::future::join_all(increments).await {
        changed.expect("change").expect("accepted");
    }
    let changed = store
        .run("e", &run.id)
        .await
        .expect("read")
        .expect("the run");
    let metadata: serde_json::Value =
        serde_json::from_str(changed.metadata.as_deref().unwrap_or("null")).expect("JSON");
    assert_eq!(metadata["n"], 6.0);
    assert_eq!(changed.updated_at, 4_000);
}

#[tokio::test]
async fn runs_are_listed_newest_first_by_filter_and_paged_both_ways() {
    let (_db, store) = tenant().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut run = new_run(if n % 2 == 0 { "even" } else { "odd" }, RunStatus::Queued);
        run.tags = if n < 3 {
            vec!["low".into(), "all".into()]
        } else {
            vec!["all".into()]
        };
        (run.now, run.queue_timestamp) = (n, n);
        ids.push(
            store
                .insert_runs(vec![run], None)
                .await
                .expect("insert")
                .remove(0)
                .run
                .id,
        );
        // ULIDs made in one millisecond have no order; a millisecond apart they do.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let list = |filter: RunFilter, limit, after: Option<&str>, before: Option<&str>| {
        let store = store.clone();
        let (after, before) = (after.map(str::to_owned), before.map(str::to_owned));
        async move {
            store
                .list_runs("e", filter, limit, after, before)
                .await
                .expect("a page")
        }
    };
    let ids_of = |page: &RunPage| page.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let page = list(RunFilter::default(), 2, None, None).await;
    assert_eq!(ids_of(&page), [ids[4].clone(), ids[3].clone()]);
    assert_eq!(
        (page.next.as_deref(), page.previous.as_deref()),
        (Some(ids[3].as_str()), None)
    );
    let page = list(RunFilter::default(), 2, Some(&ids[3]), None).await;
    assert_eq!(ids_of(&page), [ids[2].clone(), ids[1].clone()]);
    assert_eq!(page.previous.as_deref(), Some(ids[2].as_str()));
    let page = list(RunFilter::default(), 2, None, Some(&ids[2])).await;
    assert_eq!(ids_of(&page), [ids[4].clone(), ids[3].clone()]);

    let filter = RunFilter {
        task_ids: vec!["even".into()],
        tags: vec!["low".into()],
        ..Default::default()
    };
    assert_eq!(
        ids_of(&list(filter, 10, None, None).await),
        [ids[2].clone(), ids[0].clone()]
    );
    let filter = RunFilter {
        all_tags: vec!["low".into(), "all".into()],
        statuses: vec![RunStatus::Queued, RunStatus::Delayed],
        created_from: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ids_of(&list(filter, 10, None, None).await),
        [ids[2].clone(), ids[1].clone()]
    );
    let filter = RunFilter {
        all_tags: vec!["low".into(), "missing".into()],
        ..Default::default()
    };
    assert!(list(filter, 10, None, None).await.runs.is_empty());
    let filter = RunFilter {
        queues: vec!["task/odd".into()],
        versions: vec![],
        created_to: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ids_of(&list(filter, 10, None, None).await),
        [ids[1].clone()]
    );
}
