//! The store's contract, driven through its facade on a real database: what every backend must
//! do whatever calls it. Each check has its positive control, so none passes by finding nothing.

use kiln::keys;
use kiln::model::{
    AttemptStatus, Environment, LogLevel, LogLine, Machine, RetryDefinition, RetryPolicy,
    RunStatus, TaskDefinition, now_ms,
};
use kiln::store::{FinishAttempt, JournalWith, NewComponent, NewRun, RunUpdate, Store, StoreError};

/// A store on a fresh database with two environments: `dev` (the bootstrap's) and `other`.
async fn two_environments() -> (tempfile::TempDir, Store, Environment, Environment) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open_sqlite(dir.path()).expect("the store opens");
    let now = now_ms();
    let dev = store
        .bootstrap(keys::environment_key("dev"), keys::admin_key(), now)
        .await
        .expect("bootstrap")
        .dev;
    let key = keys::environment_key("prod");
    let hash = key.hash;
    store
        .create_key("other", "prod", key, now)
        .await
        .expect("a second environment");
    let other = store
        .environment_for_key(hash)
        .await
        .expect("lookup")
        .expect("the new key's environment");
    (dir, store, dev, other)
}

fn task(id: &str) -> TaskDefinition {
    TaskDefinition {
        id: id.to_owned(),
        description: None,
        queue: None,
        retry: RetryDefinition::default(),
        max_duration: None,
        ttl: None,
        machine: None,
        schedule: None,
    }
}

fn component(digest: [u8; 32], bytes: Vec<u8>, tasks: Vec<TaskDefinition>) -> NewComponent {
    NewComponent {
        digest,
        name: None,
        bytes,
        tasks,
    }
}

fn new_run(env: &Environment, task: &str, status: RunStatus) -> NewRun {
    let now = now_ms();
    NewRun {
        environment_id: env.id.clone(),
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
        tags: vec!["t".into()],
        metadata: Some("{}".into()),
        max_duration: None,
        concurrency_key: None,
        lock_to_version: None,
        parent: None,
        now,
    }
}

fn line(message: &str) -> LogLine {
    LogLine {
        attempt: 1,
        at: now_ms(),
        level: LogLevel::Info,
        message: message.into(),
        attributes: None,
    }
}

#[tokio::test]
async fn every_read_and_write_of_a_run_is_scoped_to_its_environment() {
    let (_dir, store, dev, other) = two_environments().await;
    let now = now_ms();
    let deployment = store
        .insert_deployment(
            &dev.id,
            vec![component(
                [7; 32],
                b"not checked by the store".to_vec(),
                vec![task("a")],
            )],
            "20261202".into(),
            now,
        )
        .await
        .expect("a deployment");
    // A run that waits after one attempt, with logs and a journal; and a delayed one.
    let run = store
        .insert_runs(vec![new_run(&dev, "a", RunStatus::Queued)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    let delayed = store
        .insert_runs(vec![new_run(&dev, "a", RunStatus::Delayed)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    // A claim of another environment's lane finds nothing; the run's own lane starts it.
    let claim = async |env: &Environment| {
        let lane = kiln::model::Lane {
            environment_id: env.id.clone(),
            ..run.lane()
        };
        let staged = store.claim_runs(vec![(lane, 1)], now).await.expect("claim");
        staged.durable.wait().await.expect("durable");
        staged.value.into_iter().flatten().collect::<Vec<_>>()
    };
    assert!(claim(&other).await.is_empty());
    let claimed = claim(&dev).await;
    assert!(
        matches!(&claimed[..], [kiln::store::Claimed::Started { run: started, .. }]
            if started.id == run.id && started.status == RunStatus::Executing
                && started.deployment_id.as_deref() == Some(deployment.id.as_str())),
        "{claimed:?}"
    );
    let update = |env: &Environment| RunUpdate {
        run_id: run.id.clone(),
        environment_id: env.id.clone(),
        expected: RunStatus::Executing,
        status: RunStatus::Waiting,
        available_at: None,
        error: None,
        machine: None,
        checkpointed: true,
        now,
    };
    let checkpoint = |env: &Environment| FinishAttempt {
        logs: vec![line("before the wait")],
        ..FinishAttempt::closing(update(env), 1, AttemptStatus::Executing, None)
    };
    let wrong = store
        .checkpoint(checkpoint(&other), b"journal".to_vec(), now + 60_000)
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict)), "{wrong:?}");
    store
        .checkpoint(checkpoint(&dev), b"journal".to_vec(), now + 60_000)
        .await
        .expect("the run's own environment checkpoints it")
        .durable
        .wait()
        .await
        .expect("durable");

    // Reads: another environment sees nothing, the run's own sees it all.
    assert!(store.run(&other.id, &run.id).await.unwrap().is_none());
    assert!(store.run(&dev.id, &run.id).await.unwrap().is_some());
    assert!(store.attempts(&other.id, &run.id).await.unwrap().is_empty());
    assert_eq!(store.attempts(&dev.id, &run.id).await.unwrap().len(), 1);
    assert!(
        store
            .logs(&other.id, &run.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.logs(&dev.id, &run.id, 0, 10).await.unwrap().len(), 1);
    assert!(
        store
            .waiting_for(&other.id, &run.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.waiting_for(&dev.id, &run.id).await.unwrap().len(), 1);
    assert!(
        store
            .journal(&other.id, &run.id, 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.journal(&dev.id, &run.id, 1).await.unwrap(),
        b"journal"
    );
    assert!(
        store
            .deployment(&other.id, &deployment.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .deployment(&dev.id, &deployment.id)
            .await
            .unwrap()
            .is_some()
    );
    // A component's bytes are read only for an environment that deployed it.
    let digest = &deployment.components[0].digest;
    assert!(matches!(
        store.component_bytes(&other.id, digest).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.component_bytes(&dev.id, digest).await.unwrap(),
        b"not checked by the store"
    );

    // Writes: refused for another environment, done for the run's own.
    let tags = async |env: &str| {
        store
            .add_tags(env, &run.id, vec!["u".into()], 10, now)
            .await
    };
    assert!(matches!(
        tags(&other.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(tags(&dev.id).await.unwrap().unwrap(), ["t", "u"]);
    let metadata = async |env: &str| {
        let op = kiln::metadata::MetadataOp::Increment {
            key: "n".into(),
            by: 1.0,
        };
        store
            .change_metadata(env, &run.id, now, vec![op], None)
            .await
    };
    assert!(matches!(
        metadata(&other.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(metadata(&dev.id).await.unwrap().unwrap(), r#"{"n":1}"#);
    let reschedule = async |env: &str| store.reschedule(env, &delayed.id, now + 60_000, now).await;
    assert!(matches!(
        reschedule(&other.id).await,
        Err(StoreError::Conflict)
    ));
    reschedule(&dev.id).await.expect("rescheduled");
    let cancel = |env: &Environment| RunUpdate {
        run_id: delayed.id.clone(),
        environment_id: env.id.clone(),
        expected: RunStatus::Delayed,
        status: RunStatus::Canceled,
        available_at: None,
        error: None,
        machine: None,
        checkpointed: false,
        now,
    };
    assert!(matches!(
        store.update_run(cancel(&other)).await,
        Err(StoreError::Conflict)
    ));
    store
        .update_run(cancel(&dev))
        .await
        .expect("the run's own environment cancels it");

    // A child's parent is looked up within the environment too.
    let mut child = new_run(&dev, "a", RunStatus::Queued);
    child.parent = Some(kiln::store::ParentLink {
        parent_run_id: run.id.clone(),
        root_run_id: run.id.clone(),
        depth: 1,
    });
    store.insert_runs(vec![child], None).await.expect("a child");
    assert!(
        store
            .live_children(&other.id, &run.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.live_children(&dev.id, &run.id).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_effect_of_another_environments_run_stores_nothing() {
    let (_dir, store, dev, other) = two_environments().await;
    let now = now_ms();
    store
        .insert_deployment(
            &dev.id,
            vec![component([8; 32], b"x".to_vec(), vec![task("a")])],
            "20261202".into(),
            now,
        )
        .await
        .expect("a deployment");
    let run = store
        .insert_runs(vec![new_run(&dev, "a", RunStatus::Queued)], None)
        .await
        .expect("insert")
        .remove(0)
        .run;
    let staged = store
        .claim_runs(vec![(run.lane(), 1)], now)
        .await
        .expect("claim and start");
    staged.durable.wait().await.expect("durable");
    let journal = |env: &Environment| JournalWith::<str> {
        run_id: run.id.clone(),
        environment_id: env.id.clone(),
        attempt: 1,
        claim: None,
        entries: Box::new(|_| Vec::new()),
        logs: vec![line("with the effect")],
    };
    // The executing run's journal, named under another environment, is refused with its effect.
    let op = || {
        vec![kiln::metadata::MetadataOp::Increment {
            key: "n".into(),
            by: 1.0,
        }]
    };
    let changed = store
        .change_metadata(&dev.id, &run.id, now, op(), Some(journal(&other)))
        .await;
    assert!(matches!(changed, Err(StoreError::Conflict)), "{changed:?}");
    assert!(
        store
            .logs(&dev.id, &run.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .run(&dev.id, &run.id)
            .await
            .unwrap()
            .unwrap()
            .metadata
            .as_deref(),
        Some("{}"),
        "nothing of the effect was stored"
    );
    store
        .change_metadata(&dev.id, &run.id, now, op(), Some(journal(&dev)))
        .await
        .expect("stored with the run's own journal")
        .expect("a valid change");
    assert_eq!(store.logs(&dev.id, &run.id, 0, 10).await.unwrap().len(), 1);
}

/// An attempt's end and the claim of the next run share one write: the end is recorded first
/// (its run leaves EXECUTING, its logs are stored), then the next run starts. An end that cannot be
/// recorded stores nothing of itself, and the claim still goes ahead.
#[tokio::test]
async fn an_end_and_the_next_claim_are_one_write() {
    let (_dir, store, dev, _other) = two_environments().await;
    let now = now_ms();
    store
        .insert_deployment(
            &dev.id,
            vec![component([9; 32], b"x".to_vec(), vec![task("a")])],
            "20261202".into(),
            now,
        )
        .await
        .expect("a deployment");
    let runs: Vec<_> = store
        .insert_runs(
            (0..3)
                .map(|_| new_run(&dev, "a", RunStatus::Queued))
                .collect(),
            None,
        )
        .await
        .expect("insert")
        .into_iter()
        .map(|inserted| inserted.run)
        .collect();
    let lane = runs[0].lane();
    let started = |claimed: Vec<Vec<kiln::store::Claimed>>| -> Vec<String> {
        claimed
            .into_iter()
            .flatten()
            .map(|c| match c {
                kiln::store::Claimed::Started { run, .. } => run.id,
                other => panic!("not started: {other:?}"),
            })
            .collect()
    };
    let first = store
        .claim_runs(vec![(lane.clone(), 1)], now)
        .await
        .expect("claim");
    assert_eq!(started(first.value), [runs[0].id.clone()]);
    let end = |run: &kiln::model::Run, expected| FinishAttempt {
        output: Some("\"done\"".into()),
        logs: vec![line("the end")],
        ..FinishAttempt::closing(
            RunUpdate {
                run_id: run.id.clone(),
                environment_id: dev.id.clone(),
                expected,
                status: RunStatus::Completed,
                available_at: None,
                error: None,
                machine: None,
                checkpointed: false,
                now,
            },
            1,
            AttemptStatus::Completed,
            None,
        )
    };
    let both = store
        .finish_and_claim(
            end(&runs[0], RunStatus::Executing),
            vec![(lane.clone(), 1)],
            now,
        )
        .await
        .expect("the end and the claim");
    both.durable.wait().await.expect("durable");
    assert!(both.value.finished.is_ok(), "{:?}", both.value.finished);
    assert_eq!(started(both.value.claimed), [runs[1].id.clone()]);
    let status = async |id: &str| store.run(&dev.id, id).await.unwrap().unwrap().status;
    assert_eq!(status(&runs[0].id).await, RunStatus::Completed);
    assert_eq!(status(&runs[1].id).await, RunStatus::Executing);
    assert_eq!(
        store.logs(&dev.id, &runs[0].id, 0, 10).await.unwrap().len(),
        1
    );

    // The same end again: the run is not executing any more, so nothing of it is stored (no
    // second log line), and the last run is claimed all the same.
    let again = store
        .finish_and_claim(end(&runs[0], RunStatus::Executing), vec![(lane, 1)], now)
        .await
        .expect("the claim goes ahead");
    again.durable.wait().await.expect("durable");
    assert!(
        matches!(again.value.finished, Err(StoreError::Conflict)),
        "{:?}",
        again.value.finished
    );
    assert_eq!(started(again.value.claimed), [runs[2].id.clone()]);
    assert_eq!(
        store.logs(&dev.id, &runs[0].id, 0, 10).await.unwrap().len(),
        1
    );
    assert_eq!(status(&runs[2].id).await, RunStatus::Executing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reads_at_once_share_a_bounded_set_of_connections() {
    let (_dir, store, dev, _other) = two_environments().await;
    let runs: Vec<NewRun> = (0..500)
        .map(|_| new_run(&dev, "a", RunStatus::Queued))
        .collect();
    store.insert_runs(runs, None).await.expect("insert");
    let reads = (0..400).map(|_| {
        let (store, env) = (store.clone(), dev.id.clone());
        tokio::spawn(async move {
            store
                .list_runs(&env, kiln::store::RunFilter::default(), 100, None, None)
                .await
                .map(|page| page.runs.len())
        })
    });
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(read.expect("the read task").expect("the read"), 100);
    }
    let open = store.read_connections();
    assert!(open <= 16, "{open} read connections stayed open");
}
