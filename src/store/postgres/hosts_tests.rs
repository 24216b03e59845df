//! Leases: the runs of a host whose lease lapsed are taken over, each by one host; a restart of
//! a host takes its previous start's runs over at once; a host that finds its own lease lapsed
//! takes a new one, and the ends of the attempts it ran are refused.

use std::time::Duration;

use super::lease::renew;
use super::run_fixtures::*;
use super::testing::TestDatabase;
use super::*;
use crate::store::{FinishAttempt, RunUpdate, StoreError};

const LEASE: Duration = Duration::from_secs(15);

/// Marks the runs `ids` as claimed by `host` (each with the claim `<host>/<id>`).
async fn held_by(c: &Conn, host: &str, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    c.execute(
        "UPDATE runs SET host_id = $1, claim_id = $1 || '/' || id WHERE id = ANY($2)",
        &[&host, &ids],
    )
    .await
    .expect("held");
}

fn ids(runs: &[crate::model::Run]) -> Vec<String> {
    runs.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn a_lapsed_hosts_runs_are_taken_over_each_by_one_host() {
    let db = TestDatabase::create().await;
    let a = db.host("a", LEASE).await;
    let b = db.host("b", LEASE).await;
    let c3 = db.host("c", LEASE).await;
    let c = b.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "r1", "q", "EXECUTING").await;
    insert_run(&c, "r2", "q", "DEQUEUED").await;
    insert_run(&c, "r3", "q", "QUEUED").await;
    insert_run(&c, "mine", "q", "EXECUTING").await;
    held_by(&c, &a.host_id(), &["r1", "r2", "r3"]).await;
    held_by(&c, &b.host_id(), &["mine"]).await;

    // A live lease keeps its runs.
    assert!(b.in_flight_runs().await.expect("read").is_empty());
    assert!(c3.in_flight_runs().await.expect("read").is_empty());

    c.execute(
        "UPDATE hosts SET lease_until = 0 WHERE id = $1",
        &[&&*a.host_id()],
    )
    .await
    .expect("lapsed");
    let (by_b, by_c) = tokio::join!(b.in_flight_runs(), c3.in_flight_runs());
    let (by_b, by_c) = (ids(&by_b.expect("taken")), ids(&by_c.expect("taken")));
    let mut all: Vec<String> = by_b.iter().chain(&by_c).cloned().collect();
    all.sort();
    assert_eq!(all, ["r1", "r2"], "b took {by_b:?}, c took {by_c:?}");
    let holder: String = c
        .query_one("SELECT host_id FROM runs WHERE id = 'r1'", &[])
        .await
        .expect("r1")
        .get(0);
    assert!(
        holder == *b.host_id() || holder == *c3.host_id(),
        "{holder}"
    );
    assert!(
        b.in_flight_runs().await.expect("read").is_empty(),
        "taken once"
    );

    // The lapsed host takes its lease again at its next renewal, under the same id: what it
    // still tries to record of a run another host took over is refused.
    let id = a.host_id();
    renew(&a.pool, &a.shared).await.expect("renewed");
    assert_eq!(a.host_id(), id);
    let live: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM hosts WHERE id = $1 AND lease_until >= {DB_NOW}"),
            &[&&*id],
        )
        .await
        .expect("a count")
        .get(0);
    assert_eq!(live, 1, "the lease is held again");
    assert!(b.in_flight_runs().await.expect("read").is_empty());
    let mut end = FinishAttempt::closing(
        RunUpdate {
            run_id: "r1".into(),
            environment_id: "e".into(),
            expected: crate::model::RunStatus::Executing,
            status: crate::model::RunStatus::Completed,
            available_at: None,
            error: None,
            machine: None,
            checkpointed: false,
            now: 5,
        },
        1,
        crate::model::AttemptStatus::Completed,
        None,
    );
    end.claim = Some(format!("{id}/r1"));
    let refused = a.finish_attempt(end).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict)),
        "{:?}",
        refused.err()
    );

    // A renewal of a live lease keeps its id.
    let kept = b.host_id();
    renew(&b.pool, &b.shared).await.expect("renewed");
    assert_eq!(b.host_id(), kept);
}

#[tokio::test]
async fn a_restarted_host_takes_its_previous_starts_runs_over_at_once() {
    let db = TestDatabase::create().await;
    let before = db.host("same-dir", LEASE).await;
    let c = before.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "r1", "q", "EXECUTING").await;
    held_by(&c, &before.host_id(), &["r1"]).await;
    let other = db.host("other-dir", LEASE).await;
    assert!(other.in_flight_runs().await.expect("read").is_empty());

    // Its lease has not lapsed, but a new start of the same host ends it.
    let after = db.host("same-dir", LEASE).await;
    assert_eq!(ids(&after.in_flight_runs().await.expect("taken")), ["r1"]);
}
