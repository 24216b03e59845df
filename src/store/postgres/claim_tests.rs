use std::collections::HashSet;
use std::time::Duration;

use super::super::run_fixtures::*;
use super::super::testing::TestDatabase;
use super::*;
use crate::store::Claimed;

fn lane(queue: &str, key: Option<&str>) -> Lane {
    Lane {
        environment_id: "e".into(),
        queue: queue.into(),
        concurrency_key: key.map(str::to_owned),
    }
}

/// The ids of the runs a lane's claim started (panics on a parked one).
/// What a claim answered, once its commit is durable (the claim answers before it).
async fn settled(
    staged: Result<crate::store::Staged<Vec<Vec<Claimed>>>, StoreError>,
) -> Vec<Vec<Claimed>> {
    let staged = staged.expect("claimed");
    staged.durable.wait().await.expect("durable");
    staged.value
}

fn started(claimed: &[Claimed]) -> Vec<String> {
    claimed
        .iter()
        .map(|c| match c {
            Claimed::Started { run, .. } => run.id.clone(),
            Claimed::Parked { run_id } => panic!("{run_id} parked"),
            Claimed::Limited => "(limited)".to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_claim_starts_each_lanes_heads_in_score_order() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d-old", "20240101.1", 1, &["t"]).await;
    deploy(&c, "d-new", "20240101.2", 2, &["t"]).await;
    for (id, score) in [("a3", 30), ("a1", 10), ("a2", 20)] {
        insert_scored(&c, id, "a", "QUEUED", score).await;
    }
    insert_scored(&c, "b1", "b", "QUEUED", 5).await;
    insert_scored(&c, "k1", "b", "QUEUED", 1).await;
    insert_scored(&c, "later", "a", "QUEUED", 0).await;
    insert_scored(&c, "pinned", "b", "QUEUED", 2).await;
    c.batch_execute(
        "UPDATE runs SET concurrency_key = 'k' WHERE id = 'k1'; \
         UPDATE runs SET backoff = 1, available_at = 99 WHERE id = 'later'; \
         UPDATE runs SET lock_to_version = '20240101.1' WHERE id = 'pinned'; \
         INSERT INTO env_vars (environment_id, name, nonce, value, created_at, updated_at) \
         VALUES ('e', 'A', '\\x01', '\\x02', 0, 0); \
         UPDATE environments SET allowed_outbound_hosts = '[\"https://x.example\"]'",
    )
    .await
    .expect("set up");

    let staged = store
        .claim_runs(
            vec![
                (lane("a", None), 2),
                (lane("b", None), 5),
                (lane("b", Some("k")), 1),
            ],
            50,
        )
        .await
        .expect("claimed");
    staged.durable.wait().await.expect("durable");
    let claimed = staged.value;
    assert_eq!(
        started(&claimed[0]),
        ["a1", "a2"],
        "score order, in backoff passed by"
    );
    assert_eq!(started(&claimed[1]), ["pinned", "b1"], "only its own lane");
    assert_eq!(started(&claimed[2]), ["k1"]);

    let Claimed::Started {
        run,
        start,
        journal,
    } = &claimed[0][0]
    else {
        panic!("started")
    };
    assert_eq!(run.status, RunStatus::Executing);
    assert_eq!(run.attempt_count, 1);
    assert_eq!(run.started_at, Some(50));
    assert_eq!(
        run.deployment_id.as_deref(),
        Some("d-new"),
        "the latest version"
    );
    assert_eq!(journal, &None);
    assert_eq!(start.env_vars.len(), 1, "the run's copy of the variables");
    assert_eq!(start.allowed_outbound_hosts, ["https://x.example"]);
    assert_eq!(
        (start.project.as_str(), start.environment.as_str()),
        ("default", "dev")
    );
    let Claimed::Started { run, .. } = &claimed[1][0] else {
        panic!("started")
    };
    assert_eq!(
        run.deployment_id.as_deref(),
        Some("d-old"),
        "the version it asked for"
    );

    let attempts: i64 = c
        .query_one(
            "SELECT count(*) FROM attempts WHERE number = 1 AND status = 'EXECUTING'",
            &[],
        )
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 5);
    let copies: i64 = c
        .query_one("SELECT count(DISTINCT run_id) FROM run_env_vars", &[])
        .await
        .expect("copies")
        .get(0);
    assert_eq!(copies, 5);
    assert_eq!(status_of(&c, "a3").await, "QUEUED");
    assert_eq!(status_of(&c, "later").await, "QUEUED");
}

#[tokio::test]
async fn a_run_no_version_has_parks_and_a_checkpointed_one_continues_from_its_journal() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    insert_scored(&c, "orphan", "a", "QUEUED", 1).await;
    insert_scored(&c, "resumed", "a", "QUEUED", 2).await;
    c.batch_execute(
        "UPDATE runs SET task_id = 'missing' WHERE id = 'orphan'; \
         UPDATE runs SET checkpointed = 1, attempt_count = 1, deployment_id = 'd1', \
           started_at = 7 WHERE id = 'resumed'; \
         INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
         VALUES ('resumed', 1, 'EXECUTING', 'd1', 7); \
         INSERT INTO journal_segments (run_id, attempt, segment, entries, created_at) \
         VALUES ('resumed', 1, 0, '\\x0102', 7), ('resumed', 1, 1, '\\x03', 8);",
    )
    .await
    .expect("set up");
    let claimed = settled(store.claim_runs(vec![(lane("a", None), 5)], 50).await).await;
    assert!(matches!(&claimed[0][0], Claimed::Parked { run_id } if run_id == "orphan"));
    assert_eq!(status_of(&c, "orphan").await, "PENDING_VERSION");
    let Claimed::Started { run, journal, .. } = &claimed[0][1] else {
        panic!("started")
    };
    assert_eq!(run.id, "resumed");
    assert_eq!(run.attempt_count, 1, "the same attempt continues");
    assert_eq!(run.started_at, Some(7));
    assert_eq!(journal.as_deref(), Some(&[1u8, 2, 3][..]));
    let attempts: i64 = c
        .query_one(
            "SELECT count(*) FROM attempts WHERE run_id = 'resumed'",
            &[],
        )
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 1);
}

/// Two claims of one lane at once, each holding its transaction open a while: they take
/// different runs, every run taken once, with one attempt.
#[tokio::test]
async fn two_claims_of_one_lane_at_once_take_different_runs() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    for i in 0..20 {
        insert_scored(&c, &format!("r{i:02}"), "a", "QUEUED", i).await;
    }
    slow_commits(&c, "attempts", "true", 0.3).await;
    let claim = || store.claim_runs(vec![(lane("a", None), 8)], 50);
    let (one, two) = tokio::join!(claim(), claim());
    let (one, two) = (settled(one).await, settled(two).await);
    let (one, two) = (started(&one[0]), started(&two[0]));
    assert_eq!((one.len(), two.len()), (8, 8), "{one:?} {two:?}");
    let all: HashSet<&String> = one.iter().chain(&two).collect();
    assert_eq!(all.len(), 16, "no run is taken twice: {one:?} {two:?}");
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'EXECUTING'), \
               count(*) FILTER (WHERE status = 'EXECUTING' AND attempt_count = 1), \
               (SELECT count(*) FROM attempts) FROM runs",
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
        (16, 16, 16)
    );

    // Four left, both ask for eight: between them they take the four, each once.
    let (one, two) = tokio::join!(claim(), claim());
    let (one, two) = (settled(one).await, settled(two).await);
    let (one, two) = (started(&one[0]), started(&two[0]));
    let rest: HashSet<&String> = one.iter().chain(&two).collect();
    assert_eq!(one.len() + two.len(), 4, "{one:?} {two:?}");
    assert_eq!(rest.len(), 4);
    assert!(rest.is_disjoint(&all));
}

/// Heads another transaction holds locked (another claim under way) are passed over at once,
/// not waited for: the claim takes the next ones.
#[tokio::test]
async fn a_claim_passes_over_heads_another_claim_holds() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    for i in 0..6 {
        insert_scored(&c, &format!("r{i}"), "a", "QUEUED", i).await;
    }
    let holder = c.transaction().await.expect("a transaction");
    holder
        .execute(
            "SELECT 1 FROM runs WHERE id IN ('r0', 'r1') FOR NO KEY UPDATE",
            &[],
        )
        .await
        .expect("locked");
    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        store.claim_runs(vec![(lane("a", None), 3)], 50),
    )
    .await
    .expect("the claim does not wait for the other's commit")
    .expect("claimed");
    assert_eq!(started(&claimed.value[0]), ["r2", "r3", "r4"]);
    holder.rollback().await.expect("released");
    let claimed = store
        .claim_runs(vec![(lane("a", None), 3)], 60)
        .await
        .expect("claimed");
    assert_eq!(started(&claimed.value[0]), ["r0", "r1", "r5"]);
}

/// Lanes are claimed in one order whatever order they are asked in (so two claims of the same
/// queues cannot deadlock on their counts), and answered in the order asked.
#[tokio::test]
async fn lanes_are_answered_in_the_order_asked() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    for (id, queue) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        insert_run(&c, id, queue, "QUEUED").await;
    }
    let (one, two) = tokio::join!(
        store.claim_runs(vec![(lane("b", None), 1), (lane("a", None), 1)], 50),
        store.claim_runs(vec![(lane("a", None), 1), (lane("b", None), 1)], 50),
    );
    let (one, two) = (settled(one).await, settled(two).await);
    assert!(started(&one[0])[0].starts_with('b') && started(&one[1])[0].starts_with('a'));
    assert!(started(&two[0])[0].starts_with('a') && started(&two[1])[0].starts_with('b'));
    let depths: i64 = c
        .query_one("SELECT sum(queued)::bigint FROM queue_depths", &[])
        .await
        .expect("depths")
        .get(0);
    assert_eq!(depths, 0);
}

/// Of two versions made in one millisecond, a run starts on the later one (`20240101.10` after
/// `20240101.9`), as `latest_deployment` reads them.
#[tokio::test]
async fn a_run_starts_on_the_latest_of_versions_made_at_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d9", "20240101.9", 5, &["t"]).await;
    deploy(&c, "d10", "20240101.10", 5, &["t"]).await;
    insert_run(&c, "r1", "a", "QUEUED").await;
    let claimed = settled(store.claim_runs(vec![(lane("a", None), 1)], 50).await).await;
    let Claimed::Started { run, .. } = &claimed[0][0] else {
        panic!("started")
    };
    assert_eq!(run.deployment_id.as_deref(), Some("d10"));
}

/// Limits count the runs every host holds, as stored: a queue's limit (its override, else its
/// definition's), its pause flag, a concurrency key's own share of the queue limit, and the
/// environment's limit (its own, else the host default). A lane cut short says so.
#[tokio::test]
async fn a_claim_starts_no_more_than_the_limits_leave_across_hosts() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    make_queue(&c, "q").await;
    c.batch_execute("UPDATE queues SET concurrency_limit = 2 WHERE name = 'q'")
        .await
        .expect("a queue limit");
    // Another host executes one run of `q` and one of key `k` of `q`.
    insert_run(&c, "elsewhere", "q", "EXECUTING").await;
    insert_run(&c, "elsewhere-k", "q", "EXECUTING").await;
    for id in ["q1", "q2", "q3", "k1", "k2", "k3"] {
        insert_run(&c, id, "q", "QUEUED").await;
    }
    c.batch_execute(
        "UPDATE runs SET host_id = 'host_other'; \
         UPDATE runs SET concurrency_key = 'k' WHERE id IN ('elsewhere-k', 'k1', 'k2', 'k3')",
    )
    .await
    .expect("runs held elsewhere");

    let claimed = settled(
        store
            .claim_runs(vec![(lane("q", None), 3), (lane("q", Some("k")), 3)], 5)
            .await,
    )
    .await;
    assert_eq!(started(&claimed[0]).len(), 2, "{:?}", started(&claimed[0]));
    assert_eq!(started(&claimed[0])[1], "(limited)");
    assert_eq!(
        started(&claimed[1]).len(),
        2,
        "each key has the queue's limit"
    );
    assert_eq!(started(&claimed[1])[1], "(limited)");
    let full = settled(store.claim_runs(vec![(lane("q", None), 1)], 6).await).await;
    assert_eq!(started(&full[0]), ["(limited)"]);

    // The runs elsewhere end: the queue has room again, up to the environment's limit.
    c.batch_execute(
        "UPDATE runs SET status = 'COMPLETED' WHERE id IN ('elsewhere', 'elsewhere-k'); \
         UPDATE environments SET concurrency_limit = 3 WHERE id = 'e'",
    )
    .await
    .expect("ended");
    let claimed = settled(
        store
            .claim_runs(vec![(lane("q", None), 2), (lane("q", Some("k")), 2)], 7)
            .await,
    )
    .await;
    // Holding now: q1, k1; the environment's limit of 3 leaves one.
    let took: Vec<String> = claimed.iter().flat_map(|c| started(c)).collect();
    assert_eq!(
        took.iter().filter(|id| !id.starts_with('(')).count(),
        1,
        "{took:?}"
    );
    assert!(took.contains(&"(limited)".to_owned()), "{took:?}");

    // A paused queue starts nothing, whatever its room.
    c.batch_execute(
        "UPDATE environments SET concurrency_limit = NULL WHERE id = 'e'; \
         UPDATE queues SET paused = 1 WHERE name = 'q'",
    )
    .await
    .expect("paused");
    let claimed = settled(store.claim_runs(vec![(lane("q", None), 2)], 8).await).await;
    assert_eq!(started(&claimed[0]), ["(limited)"]);
    let running: i64 = c
        .query_one(
            "SELECT count(*) FROM runs WHERE status = 'EXECUTING' AND host_id = $1",
            &[&&*store.host_id()],
        )
        .await
        .expect("a count")
        .get(0);
    assert_eq!(running, 3, "claims name the host that started them");
}

/// Two hosts claiming one limited queue at once never pass its limit together.
#[tokio::test]
async fn hosts_claiming_at_once_share_a_queue_limit() {
    let db = TestDatabase::create().await;
    let (a, b) = tokio::join!(db.store(), db.store());
    let c = a.conn().await.expect("a connection");
    tenant(&c).await;
    deploy(&c, "d1", "20240101.1", 1, &["t"]).await;
    make_queue(&c, "q").await;
    c.batch_execute("UPDATE queues SET concurrency_limit = 3 WHERE name = 'q'")
        .await
        .expect("a queue limit");
    for i in 0..20 {
        insert_scored(&c, &format!("r{i:02}"), "q", "QUEUED", i).await;
    }
    for round in 0..5 {
        let (x, y) = tokio::join!(
            a.claim_runs(vec![(lane("q", None), 3)], 10 + round),
            b.claim_runs(vec![(lane("q", None), 3)], 10 + round),
        );
        let (x, y) = (settled(x).await, settled(y).await);
        let took = x.iter().chain(&y).flat_map(|c| started(c));
        assert!(
            took.filter(|id| !id.starts_with('(')).count() <= 3,
            "round {round}"
        );
        let holding: i64 = c
            .query_one("SELECT count(*) FROM runs WHERE status = 'EXECUTING'", &[])
            .await
            .expect("a count")
            .get(0);
        assert_eq!(
            holding, 3,
            "round {round}: the limit is filled, never passed"
        );
        c.batch_execute("UPDATE runs SET status = 'COMPLETED' WHERE status = 'EXECUTING'")
            .await
            .expect("ended");
    }
}
