use super::super::PostgresStore;
use super::super::queues::tests::tenant;
use super::super::runs::tests::{keyed, new_run};
use super::*;

fn new_batch(run_count: u32, key: Option<(&str, Millis)>, now: Millis) -> NewBatch {
    NewBatch {
        environment_id: "e".into(),
        run_count,
        idempotency: key.map(|(k, at)| (k.to_owned(), at)),
        idempotency_options: key.map(|(k, _)| IdempotencyKeyOptions {
            key: format!("user-{k}"),
            scope: IdempotencyScope::Global,
        }),
        now,
    }
}

fn item(index: u32, run: Result<NewRun, &str>) -> NewBatchItem {
    NewBatchItem {
        index,
        task_id: "t".into(),
        run: run.map_err(|message| BatchItemError {
            index,
            task_id: "t".into(),
            message: message.into(),
            code: Some("PAYLOAD_TOO_LARGE".into()),
        }),
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

/// Several requests making a batch with one key at once make one batch; the others get it
/// back. A key past its expiry is released to a new batch.
#[tokio::test]
async fn a_batch_key_makes_one_batch_however_many_make_it_at_once() {
    let (_db, store) = tenant().await;
    let makes = (0..6).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_batch(new_batch(2, Some(("bk", 5_000)), 1_000))
                .await
        })
    });
    let mut made = Vec::new();
    let mut found = Vec::new();
    for result in futures_util::future::join_all(makes).await {
        let (batch, existed) = result.expect("the task").expect("every request succeeds");
        if existed {
            found.push(batch.id);
        } else {
            made.push(batch.id);
        }
    }
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(found.len() == 5 && found.iter().all(|id| id == &made[0]));
    let batch = store
        .batch("e", &made[0])
        .await
        .expect("read")
        .expect("the batch");
    assert_eq!(
        (
            batch.run_count,
            batch.sealed,
            batch.idempotency_key.as_deref()
        ),
        (2, false, Some("bk"))
    );
    assert_eq!(
        batch.idempotency_key_options.map(|o| o.key),
        Some("user-bk".to_owned())
    );
    assert!(store.batch("f", &made[0]).await.expect("read").is_none());

    let (late, existed) = store
        .create_batch(new_batch(1, Some(("bk", 9_000)), 6_000))
        .await
        .expect("after expiry");
    assert!(!existed && late.id != made[0]);
    let old = store
        .batch("e", &made[0])
        .await
        .expect("read")
        .expect("the old batch");
    assert_eq!(
        old.idempotency_key, None,
        "the old batch's key was released"
    );

    let (a, _) = store
        .create_batch(new_batch(1, None, 1))
        .await
        .expect("no key");
    let (b, _) = store
        .create_batch(new_batch(1, None, 1))
        .await
        .expect("no key");
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn items_are_added_each_index_once_and_the_batch_seals_when_all_have_arrived() {
    let (_db, store) = tenant().await;
    let (batch, _) = store
        .create_batch(new_batch(3, None, 1))
        .await
        .expect("a batch");
    let added = store
        .add_batch_items(
            "e",
            &batch.id,
            vec![
                item(0, Ok(new_run("t", RunStatus::Queued))),
                item(2, Err("too big")),
            ],
            2,
        )
        .await
        .expect("add")
        .expect("accepted");
    assert_eq!(
        (added.accepted, added.deduplicated, added.inserted.len()),
        (2, 0, 1)
    );
    let sealing = store
        .seal_batch("e", &batch.id, 3)
        .await
        .expect("seal")
        .expect("the batch");
    assert_eq!(
        (sealing.sealed, sealing.enqueued, sealing.expected),
        (false, 2, 3)
    );

    // Index 1 sent by two requests at once (two hosts), and index 0 again: one run for index 1,
    // and each repeat deduplicated.
    let add = |n: u32| {
        let (store, id) = (store.clone(), batch.id.clone());
        async move {
            let mut run = new_run("t", RunStatus::Queued);
            run.payload = format!("{{\"n\":{n}}}");
            store
                .add_batch_items(
                    "e",
                    &id,
                    vec![
                        item(1, Ok(run)),
                        item(0, Ok(new_run("t", RunStatus::Queued))),
                    ],
                    4,
                )
                .await
                .expect("add")
                .expect("accepted")
        }
    };
    let (first, second) = tokio::join!(add(1), add(2));
    assert_eq!(first.accepted + second.accepted, 1);
    assert_eq!(first.deduplicated + second.deduplicated, 3);
    assert_eq!(count(&store, "SELECT count(*) FROM runs").await, 2);

    let sealing = store
        .seal_batch("e", &batch.id, 5)
        .await
        .expect("seal")
        .expect("the batch");
    assert_eq!((sealing.sealed, sealing.enqueued), (true, 3));
    let again = store
        .seal_batch("e", &batch.id, 6)
        .await
        .expect("seal")
        .expect("the batch");
    assert!(again.sealed);
    let refused = store
        .add_batch_items(
            "e",
            &batch.id,
            vec![item(3, Ok(new_run("t", RunStatus::Queued)))],
            7,
        )
        .await
        .expect("a refusal");
    assert!(matches!(refused, Err(BatchRefusal::Sealed)));
    let missing = store
        .add_batch_items("f", &batch.id, Vec::new(), 7)
        .await
        .expect("a refusal");
    assert!(matches!(missing, Err(BatchRefusal::NotFound)));
    assert!(
        store
            .seal_batch("f", &batch.id, 7)
            .await
            .expect("seal")
            .is_none()
    );

    let read = store
        .batch("e", &batch.id)
        .await
        .expect("read")
        .expect("the batch");
    assert_eq!(
        (read.sealed, read.sealed_at, read.updated_at),
        (true, Some(5), 5)
    );
    assert_eq!(read.runs.len(), 2);
    assert_eq!(read.unfinished, 2);
    assert_eq!(read.errors.len(), 1);
    let error = &read.errors[0];
    assert_eq!(
        (error.index, error.message.as_str(), error.code.as_deref()),
        (2, "too big", Some("PAYLOAD_TOO_LARGE"))
    );
    store
        .conn()
        .await
        .expect("a connection")
        .execute(
            "UPDATE runs SET status = 'COMPLETED' WHERE id = $1",
            &[&read.runs[0]],
        )
        .await
        .expect("one ends");
    let read = store
        .batch("e", &batch.id)
        .await
        .expect("read")
        .expect("the batch");
    assert_eq!(read.unfinished, 1);
}

/// An item with an idempotency key of an earlier run is that run (`cached`), recorded at its
/// index.
#[tokio::test]
async fn an_item_with_a_live_key_is_the_earlier_run() {
    let (_db, store) = tenant().await;
    let earlier = store
        .insert_runs(vec![keyed("t", "ik", 10_000)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    let (batch, _) = store
        .create_batch(new_batch(1, None, 1))
        .await
        .expect("a batch");
    let added = store
        .add_batch_items(
            "e",
            &batch.id,
            vec![item(0, Ok(keyed("t", "ik", 10_000)))],
            2,
        )
        .await
        .expect("add")
        .expect("accepted");
    assert!(added.inserted[0].cached && added.inserted[0].run.id == earlier.id);
    let read = store
        .batch("e", &batch.id)
        .await
        .expect("read")
        .expect("the batch");
    assert_eq!(read.runs, [earlier.id]);
}
