use super::super::testing::TestDatabase;
use super::super::{Conn, PostgresStore};
use super::*;

/// Inserts a run of environment `e` in `queue` with `status` (its queue made first, as the store
/// makes a run's queue before the run).
pub(in crate::store::postgres) async fn insert_run(c: &Conn, id: &str, queue: &str, status: &str) {
    c.execute(
        "INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at) \
         VALUES ('queue_' || $1, 'e', $1, 'custom', 0, 0) ON CONFLICT DO NOTHING",
        &[&queue],
    )
    .await
    .expect("its queue");
    c.execute(
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, queue_ts, \
           available_at, created_at, updated_at) \
         VALUES ($1, 'e', 't', $3, 'null', $2, 'small-1x', 3, 2.0, 1000, 10000, 1, 0, 0, 0, 0)",
        &[&id, &queue, &status],
    )
    .await
    .expect("a run");
}

/// A store on a new database with one tenant: project `p` (slug `default`), environment `e`
/// (slug `dev`), and queues `a` and `b`.
pub(in crate::store::postgres) async fn tenant() -> (TestDatabase, PostgresStore) {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store
        .conn()
        .await
        .expect("a connection")
        .batch_execute(
            "INSERT INTO projects (id, slug, created_at) VALUES ('p', 'default', 0);
             INSERT INTO environments (id, project_id, slug, created_at) VALUES ('e', 'p', 'dev', 0);
             INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at)
               VALUES ('queue_a', 'e', 'a', 'custom', 0, 0), ('queue_b', 'e', 'b', 'custom', 0, 0);",
        )
        .await
        .expect("a tenant");
    (db, store)
}

type Lanes = Vec<(String, String, Option<String>)>;

/// The skip through the ready index finds exactly the lanes a `SELECT DISTINCT` finds, with and
/// without concurrency keys, across queues and environments; and its plan is seeks on the ready
/// index, never a scan of the runs.
#[tokio::test]
async fn ready_lanes_skip_through_the_index_to_the_same_lanes() {
    let (_db, store) = tenant().await;
    let c = store.conn().await.expect("a connection");
    assert!(store.ready_lanes().await.expect("no lanes").is_empty());
    c.batch_execute(
        "INSERT INTO environments (id, project_id, slug, created_at) VALUES ('f', 'p', 'prod', 0);",
    )
    .await
    .expect("another environment");
    let runs = [
        ("a", None, "QUEUED"),
        ("a", None, "QUEUED"),
        ("a", Some("k1"), "QUEUED"),
        ("a", Some("k2"), "QUEUED"),
        ("a", Some("k2"), "QUEUED"),
        ("b", Some("k1"), "QUEUED"),
        ("b", Some("k3"), "EXECUTING"),
        ("c", None, "COMPLETED"),
        ("d", Some("k1"), "QUEUED"),
    ];
    for (n, (queue, key, status)) in runs.into_iter().enumerate() {
        let id = format!("r{n}");
        insert_run(&c, &id, queue, status).await;
        c.execute(
            "UPDATE runs SET concurrency_key = $2 WHERE id = $1",
            &[&id, &key],
        )
        .await
        .expect("its key");
    }
    insert_run(&c, "other", "a", "QUEUED").await;
    insert_run(&c, "backing-off", "z", "QUEUED").await;
    c.batch_execute(
        "UPDATE runs SET environment_id = 'f' WHERE id = 'other';
         UPDATE runs SET backoff = 1 WHERE id = 'backing-off';",
    )
    .await
    .expect("an environment and a backoff");
    let distinct: Lanes = c
        .query(
            "SELECT DISTINCT environment_id, queue, concurrency_key FROM runs \
             WHERE status = 'QUEUED' AND backoff = 0 ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("the lanes")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let skipped: Lanes = store
        .ready_lanes()
        .await
        .expect("the skip")
        .into_iter()
        .map(|l| (l.environment_id, l.queue, l.concurrency_key))
        .collect();
    assert_eq!(distinct.len(), 6, "{distinct:?}");
    assert_eq!(skipped, distinct);

    // Whatever the planner would pick for this tiny table, the query can run on the ready index
    // alone: with sequential scans priced out, no step reads the table in full.
    c.batch_execute("SET enable_seqscan = off")
        .await
        .expect("no sequential scans");
    let plan: Vec<String> = c
        .query(&format!("EXPLAIN {READY_LANES}"), &[])
        .await
        .expect("a plan")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("runs_ready"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(!plan.contains("Bitmap Heap Scan on runs"), "{plan}");
}

/// Two transactions making the same new queue at once (two hosts triggering a run on it) both
/// succeed and make one queue; the deployment's limits then land on it, an override and the
/// pause flag set over the API stay, and the API's reads see all of it.
#[tokio::test]
async fn a_queue_is_made_once_however_many_make_it_and_keeps_what_the_api_set() {
    let (_db, store) = tenant().await;
    let make = || async {
        let mut c = store.conn().await.expect("a connection");
        let tx = c.transaction().await.expect("a transaction");
        ensure_queue(&tx, "e", "task/t", 5)
            .await
            .expect("the queue");
        // Both are inside their transaction at once before either commits.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.commit().await.expect("a commit");
    };
    tokio::join!(make(), make(), make());
    let queues = store.environment_queues("e").await.expect("the queues");
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "task/t"]);
    let made = &queues[2];
    assert_eq!(
        (made.kind, made.concurrency_limit, made.created_at),
        (QueueKind::Task, None, 5)
    );

    let paused = store
        .set_queue_paused("e", QueueRef::Task("t".into()), true, 6)
        .await
        .expect("pause")
        .expect("the queue");
    assert!(paused.paused);
    let overridden = store
        .override_queue_limit("e", QueueRef::Id(made.id.clone()), Some(3), 7)
        .await
        .expect("override")
        .expect("the queue");
    assert_eq!(
        (
            overridden.override_limit,
            overridden.overridden_at,
            overridden.paused
        ),
        (Some(3), Some(7), true),
        "the pause stays in what the override returns"
    );
    assert!(
        store
            .override_queue_limit("e", QueueRef::Custom("task/t".into()), None, 7)
            .await
            .expect("a lookup")
            .is_none(),
        "a custom reference never finds a task's own queue"
    );

    let task = |id: &str, limit: Option<u32>, queue: Option<&str>| TaskDefinition {
        id: id.into(),
        description: None,
        queue: queue.map(|name| QueueDefinition {
            name: name.into(),
            concurrency_limit: limit,
        }),
        retry: Default::default(),
        max_duration: None,
        ttl: None,
        machine: None,
        schedule: None,
    };
    let tasks = [
        task("t", Some(2), Some("task/t")),
        task("u", Some(1), Some("shared")),
        task("v", Some(4), Some("shared")),
    ];
    let c = store.conn().await.expect("a connection");
    sync_queues(&c, "e", &tasks, 8).await.expect("sync");
    let t = store
        .queue("e", QueueRef::Task("t".into()))
        .await
        .expect("a read")
        .expect("the task's queue");
    assert_eq!(
        (
            t.concurrency_limit,
            t.override_limit,
            t.paused,
            t.updated_at
        ),
        (Some(2), Some(3), true, 8)
    );
    let shared = store
        .queue("e", QueueRef::Custom("shared".into()))
        .await
        .expect("a read")
        .expect("the shared queue");
    assert_eq!(
        shared.concurrency_limit,
        Some(4),
        "the later task's limit wins"
    );

    let (page, total) = store.list_queues("e", 1, 2).await.expect("a page");
    let names: Vec<&str> = page.iter().map(|q| q.name.as_str()).collect();
    assert_eq!((names, total), (vec!["b", "shared"], 4));
    assert_eq!(store.all_queues().await.expect("all").len(), 4);

    insert_run(&c, "r1", "a", "QUEUED").await;
    insert_run(&c, "r2", "a", "QUEUED").await;
    insert_run(&c, "r3", "a", "EXECUTING").await;
    assert_eq!(store.queued_count("e", "a").await.expect("a count"), 2);
    assert_eq!(
        store.queued_count("e", "nowhere").await.expect("a count"),
        0
    );
}
