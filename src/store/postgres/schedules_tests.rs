use super::super::PostgresStore;
use super::super::queues::tests::tenant;
use super::super::runs::tests::{keyed, new_run};
use super::*;

fn spec(task: &str, cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        task_id: task.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        external_id: Some("ext".into()),
    }
}

fn declared(task: &str, cron: &str) -> DeclaredSchedule {
    DeclaredSchedule {
        task_id: task.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        next_fire_at: Some(60_000),
    }
}

fn fire(id: &str, expected: Millis, run: Option<NewRun>) -> ScheduleFire {
    ScheduleFire {
        schedule_id: id.into(),
        expected_next: expected,
        timestamp: expected,
        next_fire_at: Some(expected + 60_000),
        run,
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

/// Requests upserting one deduplication key at once make one schedule; requests making
/// different ones at once stay within the environment's limit.
#[tokio::test]
async fn upserts_at_once_make_one_schedule_per_key_and_stay_within_the_limit() {
    let (_db, store) = tenant().await;
    let upserts = (0..5).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upsert_schedule("e", "dedup".into(), spec("t", "* * * * *"), 60_000, 10, 1)
                .await
        })
    });
    let mut made = 0;
    for result in futures_util::future::join_all(upserts).await {
        let (schedule, new) = result
            .expect("the task")
            .expect("an upsert")
            .expect("accepted");
        assert_eq!(
            (
                schedule.kind,
                schedule.deduplication_key.as_deref(),
                schedule.next_fire_at
            ),
            (ScheduleType::Imperative, Some("dedup"), Some(60_000))
        );
        made += usize::from(new);
    }
    assert_eq!(made, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM schedules").await, 1);

    let (updated, new) = store
        .upsert_schedule("e", "dedup".into(), spec("u", "0 * * * *"), 120_000, 10, 2)
        .await
        .expect("an upsert")
        .expect("accepted");
    assert!(!new);
    assert_eq!(
        (
            updated.task_id.as_str(),
            updated.cron.as_str(),
            updated.next_fire_at,
            updated.updated_at
        ),
        ("u", "0 * * * *", Some(120_000), 2)
    );

    let upserts = (0..6).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upsert_schedule(
                    "e",
                    format!("key-{n}"),
                    spec("t", "* * * * *"),
                    60_000,
                    3,
                    3,
                )
                .await
        })
    });
    let mut refused = 0;
    for result in futures_util::future::join_all(upserts).await {
        match result.expect("the task").expect("an upsert") {
            Ok(_) => {}
            Err(ScheduleRefusal::TooMany(3)) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 4);
    assert_eq!(count(&store, "SELECT count(*) FROM schedules").await, 3);
}

#[tokio::test]
async fn imperative_schedules_are_updated_deleted_activated_and_listed() {
    let (_db, store) = tenant().await;
    let make = |key: &str, at: Millis| {
        let (store, key) = (store.clone(), key.to_owned());
        async move {
            store
                .upsert_schedule("e", key, spec("t", "* * * * *"), at, 10, at)
                .await
                .expect("an upsert")
                .expect("accepted")
                .0
        }
    };
    let a = make("a", 1_000).await;
    let b = make("b", 2_000).await;
    store
        .sync_declarative_schedules("e", vec![declared("d", "0 0 * * *")], 3)
        .await
        .expect("a sync");

    let updated = store
        .update_schedule("e", &a.id, spec("t", "*/5 * * * *"), 5_000, 4)
        .await
        .expect("an update")
        .expect("accepted");
    assert_eq!(
        (updated.cron.as_str(), updated.next_fire_at),
        ("*/5 * * * *", Some(5_000))
    );
    let e = store
        .update_schedule("f", &a.id, spec("t", "* * * * *"), 1, 4)
        .await;
    assert!(matches!(e, Ok(Err(ScheduleRefusal::NotFound))), "{e:?}");

    // Newest first: b, a, then the declarative one (made at 3).
    let (page, total) = store.list_schedules("e", 0, 2).await.expect("a page");
    let ids: Vec<&str> = page.iter().map(|s| s.id.as_str()).collect();
    assert_eq!((ids, total), (vec![b.id.as_str(), a.id.as_str()], 3));
    let (rest, _) = store.list_schedules("e", 2, 2).await.expect("a page");
    assert_eq!(rest.len(), 1);
    let declarative = rest[0].clone();
    assert_eq!(declarative.kind, ScheduleType::Declarative);
    let e = store
        .update_schedule("e", &declarative.id, spec("t", "* * * * *"), 1, 4)
        .await;
    assert!(matches!(e, Ok(Err(ScheduleRefusal::Declarative))), "{e:?}");
    let e = store.delete_schedule("e", &declarative.id).await;
    assert!(matches!(e, Ok(Err(ScheduleRefusal::Declarative))), "{e:?}");

    let off = store
        .set_schedule_active("e", &a.id, false, None, 6)
        .await
        .expect("a change")
        .expect("the schedule");
    assert_eq!((off.active, off.next_fire_at), (false, None));
    let moved = store
        .update_schedule("e", &a.id, spec("t", "* * * * *"), 9_000, 7)
        .await
        .expect("an update")
        .expect("accepted");
    assert_eq!(
        moved.next_fire_at, None,
        "an inactive schedule keeps no next fire time"
    );
    let on = store
        .set_schedule_active("e", &a.id, true, Some(8_000), 8)
        .await
        .expect("a change")
        .expect("the schedule");
    assert_eq!((on.active, on.next_fire_at), (true, Some(8_000)));
    let still = store
        .set_schedule_active("e", &a.id, true, Some(99_000), 9)
        .await
        .expect("a change")
        .expect("the schedule");
    assert_eq!(
        still.next_fire_at,
        Some(8_000),
        "an active one keeps its next fire time"
    );
    assert!(
        store
            .set_schedule_active("f", &a.id, true, None, 9)
            .await
            .expect("a change")
            .is_none()
    );

    assert_eq!(store.next_schedule_fire().await.expect("next"), Some(2_000));
    let due: Vec<String> = store
        .due_schedules(10_000, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(due, [b.id.clone(), a.id.clone()]);

    let deleted = store
        .delete_schedule("e", &b.id)
        .await
        .expect("a delete")
        .expect("deleted");
    assert_eq!(deleted.id, b.id);
    let e = store.delete_schedule("e", &b.id).await;
    assert!(matches!(e, Ok(Err(ScheduleRefusal::NotFound))), "{e:?}");
    assert_eq!(
        store
            .schedule("e", &a.id)
            .await
            .expect("read")
            .map(|s| s.id),
        Some(a.id.clone())
    );
    assert!(store.schedule("f", &a.id).await.expect("read").is_none());
}

/// Two hosts firing the same tick at once make one run: the second's compare-and-set waits for
/// the first's commit and finds the tick taken. A tick without a run moves the schedule on
/// without a last fire; an inactive schedule does not fire.
#[tokio::test]
async fn a_tick_fires_once_however_many_fire_it_at_once() {
    let (_db, store) = tenant().await;
    let make = |key: &str| {
        let (store, key) = (store.clone(), key.to_owned());
        async move {
            store
                .upsert_schedule("e", key, spec("t", "* * * * *"), 60_000, 10, 1)
                .await
                .expect("an upsert")
                .expect("accepted")
                .0
        }
    };
    let (a, b) = (make("a").await, make("b").await);
    let fires = (0..4).map(|_| {
        let (store, a, b) = (store.clone(), a.id.clone(), b.id.clone());
        tokio::spawn(async move {
            // Both schedules, in either order: the compare-and-sets lock them in one order.
            let (first, second) = (
                fire(&b, 60_000, Some(new_run("t", RunStatus::Queued))),
                fire(&a, 60_000, Some(new_run("t", RunStatus::Queued))),
            );
            store.fire_schedules(vec![first, second]).await
        })
    });
    let mut runs = 0;
    for result in futures_util::future::join_all(fires).await {
        let out = result.expect("the task").expect("a fire");
        assert_eq!(out.len(), 2);
        assert!(out.iter().flatten().all(|i| !i.cached));
        runs += out.iter().flatten().count();
    }
    assert_eq!(runs, 2, "one run per schedule");
    assert_eq!(count(&store, "SELECT count(*) FROM runs").await, 2);
    let fired = store.schedule("e", &a.id).await.expect("read").expect("a");
    assert_eq!(
        (fired.next_fire_at, fired.last_fire_at),
        (Some(120_000), Some(60_000))
    );

    let out = store
        .fire_schedules(vec![fire(&a.id, 120_000, None)])
        .await
        .expect("a fire");
    assert!(out[0].is_none());
    let passed = store.schedule("e", &a.id).await.expect("read").expect("a");
    assert_eq!(
        (passed.next_fire_at, passed.last_fire_at),
        (Some(180_000), Some(60_000))
    );

    store
        .set_schedule_active("e", &b.id, false, None, 2)
        .await
        .expect("a change");
    let out = store
        .fire_schedules(vec![fire(
            &b.id,
            120_000,
            Some(new_run("t", RunStatus::Queued)),
        )])
        .await
        .expect("a fire");
    assert!(out[0].is_none(), "an inactive schedule does not fire");

    // A fire whose run's key is live returns that run.
    let earlier = store
        .insert_runs(vec![keyed("t", "tick", 10_000)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    let out = store
        .fire_schedules(vec![fire(&a.id, 180_000, Some(keyed("t", "tick", 10_000)))])
        .await
        .expect("a fire");
    let inserted = out[0].as_ref().expect("a run");
    assert!(inserted.cached && inserted.run.id == earlier.id);
}

/// A sync makes, changes, keeps and deletes the declarative schedules; two syncs at once (two
/// deployments) make each task's schedule once.
#[tokio::test]
async fn declarative_schedules_follow_the_deployment_once_per_task() {
    let (_db, store) = tenant().await;
    let syncs = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .sync_declarative_schedules(
                    "e",
                    vec![declared("a", "* * * * *"), declared("b", "0 * * * *")],
                    1,
                )
                .await
        })
    });
    for result in futures_util::future::join_all(syncs).await {
        assert_eq!(result.expect("the task").expect("a sync"), 0);
    }
    assert_eq!(count(&store, "SELECT count(*) FROM schedules").await, 2);
    let (page, _) = store.list_schedules("e", 0, 10).await.expect("a page");
    let b = page.iter().find(|s| s.task_id == "b").expect("b's").clone();
    store
        .set_schedule_active("e", &b.id, false, None, 2)
        .await
        .expect("b off");

    let removed = store
        .sync_declarative_schedules(
            "e",
            vec![declared("b", "5 * * * *"), declared("c", "* * * * *")],
            3,
        )
        .await
        .expect("a sync");
    assert_eq!(removed, 1);
    let (page, total) = store.list_schedules("e", 0, 10).await.expect("a page");
    assert_eq!(total, 2);
    let changed = page.iter().find(|s| s.task_id == "b").expect("b's");
    assert_eq!(
        (
            changed.id.as_str(),
            changed.cron.as_str(),
            changed.active,
            changed.next_fire_at
        ),
        (b.id.as_str(), "5 * * * *", false, None),
        "a changed schedule keeps its id and its active state"
    );
    let made = page.iter().find(|s| s.task_id == "c").expect("c's");
    assert_eq!(
        (made.active, made.next_fire_at, made.created_at),
        (true, Some(60_000), 3)
    );
}
