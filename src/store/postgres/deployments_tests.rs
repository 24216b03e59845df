use std::time::Duration;

use super::super::testing::TestDatabase;
use super::*;

async fn environment(store: &PostgresStore, name: &str, n: u8) -> String {
    let key = NewKey {
        plaintext: format!("tr_{name}_key"),
        hash: [n; 32],
        sealed: None,
    };
    store.create_key("acme", name, key, 1).await.unwrap();
    store
        .environment_for_key([n; 32])
        .await
        .unwrap()
        .unwrap()
        .id
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

fn component(n: u8, tasks: &[&str]) -> NewComponent {
    NewComponent {
        digest: [n; 32],
        name: Some(format!("c{n}.wasm")),
        bytes: vec![n; 16],
        tasks: tasks.iter().map(|t| task(t)).collect(),
    }
}

async fn count(store: &PostgresStore, sql: &str) -> i64 {
    store
        .conn()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_deployment_is_stored_and_read_back_whole() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let full = TaskDefinition {
        id: "full".into(),
        description: Some("every field".into()),
        queue: Some(QueueDefinition {
            name: "shared".into(),
            concurrency_limit: Some(3),
        }),
        retry: RetryDefinition {
            max_attempts: Some(5),
            factor: Some(1.5),
            min_timeout_ms: Some(100),
            max_timeout_ms: Some(u64::MAX),
            randomize: Some(true),
            out_of_memory_machine: Some(Machine::Large1x),
        },
        max_duration: Some(Duration::from_secs(30)),
        ttl: Some(Duration::from_millis(1_500)),
        machine: Some(Machine::Small2x),
        schedule: Some(TaskSchedule {
            cron: "0 * * * *".into(),
            timezone: "Europe/Paris".into(),
        }),
    };
    let mut first = component(1, &["a"]);
    first.tasks.push(full);
    let mut second = component(2, &["b"]);
    second.name = None;
    let made = store
        .insert_deployment(&env, vec![first, second], "20240101".into(), 100)
        .await
        .unwrap();
    assert_eq!(made.version, "20240101.1");
    assert_eq!(made.environment_id, env);
    assert_eq!(made.components.len(), 2);
    assert_eq!(made.components[0].digest, hex(&[1; 32]));

    let read = store.deployment(&env, &made.id).await.unwrap().unwrap();
    assert_eq!(read, made);
    assert_eq!(
        store.latest_deployment(&env).await.unwrap(),
        Some(made.clone())
    );
    assert_eq!(
        store
            .deployment_by_version(&env, "20240101.1")
            .await
            .unwrap(),
        Some(made.clone())
    );
    assert_eq!(
        store
            .deployment_by_version(&env, "20240101.2")
            .await
            .unwrap(),
        None
    );
    // Another environment sees none of it.
    let other = environment(&store, "staging", 2).await;
    assert_eq!(store.deployment(&other, &made.id).await.unwrap(), None);
    assert_eq!(store.latest_deployment(&other).await.unwrap(), None);
    assert!(store.list_deployments(&other).await.unwrap().is_empty());

    // The tasks' queues were made, with the definitions' limits.
    let c = store.conn().await.unwrap();
    let queues: Vec<(String, Option<i64>)> = c
        .query(
            "SELECT name, concurrency_limit FROM queues WHERE environment_id = $1 ORDER BY name",
            &[&env],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        queues,
        vec![
            ("shared".to_owned(), Some(3)),
            ("task/a".to_owned(), None),
            ("task/b".to_owned(), None)
        ]
    );

    let refused = store
        .insert_deployment(&env, vec![], "20240101".into(), 100)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn versions_count_up_within_a_day_and_restart_the_next() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let other = environment(&store, "staging", 2).await;
    let mut versions = Vec::new();
    for n in 0..11 {
        let d = store
            .insert_deployment(&env, vec![component(1, &["a"])], "20240101".into(), 100 + n)
            .await
            .unwrap();
        versions.push(d.version);
    }
    // Past 9 the number is compared as a number, not as text.
    let expected: Vec<String> = (1..=11).map(|n| format!("20240101.{n}")).collect();
    assert_eq!(versions, expected);
    let next_day = store
        .insert_deployment(&env, vec![component(1, &["a"])], "20240102".into(), 200)
        .await
        .unwrap();
    assert_eq!(next_day.version, "20240102.1");
    let elsewhere = store
        .insert_deployment(&other, vec![component(1, &["a"])], "20240101".into(), 200)
        .await
        .unwrap();
    assert_eq!(elsewhere.version, "20240101.1");
    // The same bytes are stored once.
    assert_eq!(count(&store, "SELECT count(*) FROM components").await, 1);

    let listed: Vec<String> = store
        .list_deployments(&env)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.version)
        .collect();
    let mut newest_first = expected.clone();
    newest_first.push("20240102.1".into());
    newest_first.reverse();
    assert_eq!(listed, newest_first);
}

/// Deployments made in the same millisecond: the later one is the latest, as SQLite's rowid
/// order has it.
#[tokio::test]
async fn ties_of_creation_time_go_to_the_later_deployment() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let mut made = Vec::new();
    for _ in 0..12 {
        made.push(
            store
                .insert_deployment(&env, vec![component(1, &["a"])], "20240101".into(), 100)
                .await
                .unwrap(),
        );
    }
    let latest = store.latest_deployment(&env).await.unwrap().unwrap();
    assert_eq!(latest.version, "20240101.12");
    let listed: Vec<String> = store
        .list_deployments(&env)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    let expected: Vec<String> = made.iter().rev().map(|d| d.id.clone()).collect();
    assert_eq!(listed, expected);
}

/// Deploys to one environment at once each get their own version.
#[tokio::test]
async fn concurrent_deploys_get_different_versions() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let deploys = (0..6u8).map(|n| {
        store.insert_deployment(
            &env,
            vec![component(n % 2 + 1, &["a"]), component(9, &["b"])],
            "20240101".into(),
            100,
        )
    });
    let mut versions: Vec<String> = futures_util::future::join_all(deploys)
        .await
        .into_iter()
        .map(|d| d.unwrap().version)
        .collect();
    versions.sort();
    let mut expected: Vec<String> = (1..=6).map(|n| format!("20240101.{n}")).collect();
    expected.sort();
    assert_eq!(versions, expected);
    assert_eq!(count(&store, "SELECT count(*) FROM deployments").await, 6);
    assert_eq!(count(&store, "SELECT count(*) FROM components").await, 3);
}

/// Deploys to different environments sharing components (listed in other orders) store each
/// component once and do not deadlock.
#[tokio::test]
async fn concurrent_deploys_share_components() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut envs = Vec::new();
    for n in 1..=4u8 {
        envs.push(environment(&store, &format!("e{n}"), n).await);
    }
    let deploys = envs.iter().enumerate().map(|(i, env)| {
        let mut components = vec![
            component(1, &["a"]),
            component(2, &["b"]),
            component(3, &["c"]),
        ];
        components.rotate_left(i % 3);
        if i % 2 == 1 {
            components.reverse();
        }
        store.insert_deployment(env, components, "20240101".into(), 100)
    });
    for d in futures_util::future::join_all(deploys).await {
        assert_eq!(d.unwrap().version, "20240101.1");
    }
    assert_eq!(count(&store, "SELECT count(*) FROM components").await, 3);
    assert_eq!(
        count(&store, "SELECT count(*) FROM deployment_components").await,
        12
    );
}

#[tokio::test]
async fn component_bytes_are_read_only_by_environments_that_deployed_them() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let other = environment(&store, "staging", 2).await;
    store
        .insert_deployment(&env, vec![component(7, &["a"])], "20240101".into(), 100)
        .await
        .unwrap();
    let digest = hex(&[7; 32]);
    assert_eq!(
        store.component_bytes(&env, &digest).await.unwrap(),
        vec![7; 16]
    );
    assert!(matches!(
        store.component_bytes(&other, &digest).await,
        Err(StoreError::NotFound("component"))
    ));
    assert!(matches!(
        store.component_bytes(&env, "missing").await,
        Err(StoreError::NotFound("component"))
    ));
}

/// A run row with only what these tests need.
async fn insert_run(
    store: &PostgresStore,
    id: &str,
    env: &str,
    task: &str,
    status: &str,
    deployment: Option<&str>,
    lock_to_version: Option<&str>,
) {
    store
        .conn()
        .await
        .unwrap()
        .execute(
            "INSERT INTO runs (id, environment_id, task_id, status, payload, deployment_id, queue, \
               machine, max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, \
               queue_ts, available_at, created_at, updated_at, lock_to_version, concurrency_key) \
             VALUES ($1, $2, $3, $4, '{}', $5, 'task/' || $3, 'small-1x', 3, 2.0, 1000, 10000, 1, \
               1, 1, 1, 1, $6, NULL)",
            &[&id, &env, &task, &status, &deployment, &lock_to_version],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn usable_digests_are_the_latest_versions_and_those_runs_still_need() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let other = environment(&store, "staging", 2).await;
    let _empty = environment(&store, "empty", 3).await;
    let old = store
        .insert_deployment(&env, vec![component(1, &["a"])], "20240101".into(), 100)
        .await
        .unwrap();
    let locked = store
        .insert_deployment(&env, vec![component(2, &["a"])], "20240101".into(), 110)
        .await
        .unwrap();
    let unused = store
        .insert_deployment(&env, vec![component(3, &["a"])], "20240101".into(), 115)
        .await
        .unwrap();
    store
        .insert_deployment(
            &env,
            vec![component(4, &["a"]), component(5, &["b"])],
            "20240101".into(),
            120,
        )
        .await
        .unwrap();
    store
        .insert_deployment(&other, vec![component(6, &["a"])], "20240101".into(), 100)
        .await
        .unwrap();
    let digests = |store: PostgresStore| async move {
        let mut d = store.usable_component_digests().await.unwrap();
        d.sort();
        d
    };
    let names = |ns: &[u8]| -> Vec<String> { ns.iter().map(|n| hex(&[*n; 32])).collect() };
    assert_eq!(digests(store.clone()).await, names(&[4, 5, 6]));

    // A run still going on an old version, and one locked to another; ended runs keep none.
    insert_run(&store, "run_1", &env, "a", "EXECUTING", Some(&old.id), None).await;
    insert_run(
        &store,
        "run_2",
        &env,
        "a",
        "QUEUED",
        None,
        Some(&locked.version),
    )
    .await;
    insert_run(
        &store,
        "run_3",
        &env,
        "a",
        "COMPLETED",
        Some(&unused.id),
        None,
    )
    .await;
    insert_run(
        &store,
        "run_4",
        &env,
        "a",
        "CANCELED",
        None,
        Some(&unused.version),
    )
    .await;
    assert_eq!(digests(store.clone()).await, names(&[1, 2, 4, 5, 6]));
}

#[tokio::test]
async fn pending_version_runs_of_deployed_tasks_are_queued() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let env = environment(&store, "prod", 1).await;
    let other = environment(&store, "staging", 2).await;
    insert_run(&store, "run_1", &env, "a", "PENDING_VERSION", None, None).await;
    insert_run(&store, "run_2", &env, "a", "PENDING_VERSION", None, None).await;
    insert_run(&store, "run_3", &env, "b", "PENDING_VERSION", None, None).await;
    insert_run(&store, "run_4", &env, "c", "PENDING_VERSION", None, None).await;
    insert_run(&store, "run_5", &env, "a", "DELAYED", None, None).await;
    insert_run(&store, "run_6", &other, "a", "PENDING_VERSION", None, None).await;
    let lanes = store
        .enqueue_pending_version(&env, vec!["a".into(), "b".into(), "missing".into()], 500)
        .await
        .unwrap();
    let lane = |queue: &str| Lane {
        environment_id: env.clone(),
        queue: queue.to_owned(),
        concurrency_key: None,
    };
    assert_eq!(lanes, vec![lane("task/a"), lane("task/b")]);
    let c = store.conn().await.unwrap();
    let statuses: Vec<(String, String, i64)> = c
        .query("SELECT id, status, available_at FROM runs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("run_1", "QUEUED", 500),
        ("run_2", "QUEUED", 500),
        ("run_3", "QUEUED", 500),
        ("run_4", "PENDING_VERSION", 1),
        ("run_5", "DELAYED", 1),
        ("run_6", "PENDING_VERSION", 1),
    ];
    assert_eq!(
        statuses,
        expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect::<Vec<_>>()
    );
    // A second pass finds nothing left to move.
    assert!(
        store
            .enqueue_pending_version(&env, vec!["a".into()], 600)
            .await
            .unwrap()
            .is_empty()
    );
}
