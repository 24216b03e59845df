use super::super::testing::TestDatabase;
use super::*;
use crate::secrets::Sealed;

fn key(n: u8) -> NewKey {
    NewKey {
        plaintext: format!("tr_dev_secret_key_{n}"),
        hash: [n; 32],
        sealed: Some(Sealed {
            nonce: vec![n; 12],
            ciphertext: vec![n; 40],
        }),
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
async fn bootstrap_makes_the_dev_key_and_admin_key_once() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let first = store.bootstrap(key(1), key(2), 5).await.unwrap();
    assert_eq!(first.dev.project_slug, "default");
    assert_eq!(first.dev.slug, "dev");
    assert_eq!(first.dev_key.as_deref(), Some("tr_dev_secret_key_1"));
    assert_eq!(first.admin_key.as_deref(), Some("tr_dev_secret_key_2"));
    assert!(store.is_admin_key([2; 32]).await.unwrap());
    assert!(!store.is_admin_key([1; 32]).await.unwrap());

    let again = store.bootstrap(key(3), key(4), 6).await.unwrap();
    assert_eq!(again.dev.id, first.dev.id);
    assert_eq!(again.dev_key, None);
    assert_eq!(again.admin_key, None);
    assert!(!store.is_admin_key([4; 32]).await.unwrap());

    let env = store.environment_for_key([1; 32]).await.unwrap().unwrap();
    assert_eq!(env.id, first.dev.id);
    assert!(store.environment_for_key([3; 32]).await.unwrap().is_none());
    // The sealed copy and the display prefix are stored.
    let c = store.conn().await.unwrap();
    let row = c
        .query_one(
            "SELECT prefix, sealed_nonce, sealed_key FROM api_keys WHERE environment_id = $1",
            &[&env.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "tr_dev_secre");
    assert_eq!(row.get::<_, Vec<u8>>(1), vec![1; 12]);
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![1; 40]);
}

/// Hosts starting at once make one dev key and one admin key between them: on a fresh database,
/// and on one whose dev environment exists without a key.
#[tokio::test]
async fn concurrent_bootstraps_make_one_dev_key_and_one_admin_key() {
    for existing in [false, true] {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        if existing {
            store
                .conn()
                .await
                .unwrap()
                .batch_execute(
                    "INSERT INTO projects (id, slug, created_at) VALUES ('proj_1', 'default', 1); \
                     INSERT INTO environments (id, project_id, slug, created_at) \
                     VALUES ('env_1', 'proj_1', 'dev', 1);",
                )
                .await
                .unwrap();
        }
        // Connections for every caller first, so the bootstraps overlap.
        let warm = (0..8).map(|_| store.is_admin_key([0; 32]));
        futures_util::future::join_all(warm).await;
        let boots = (0..8u8).map(|n| store.bootstrap(key(2 * n + 1), key(2 * n + 2), 5));
        let results = futures_util::future::join_all(boots).await;
        let results: Vec<Bootstrapped> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results.iter().filter(|b| b.dev_key.is_some()).count(), 1);
        assert_eq!(results.iter().filter(|b| b.admin_key.is_some()).count(), 1);
        assert!(results.iter().all(|b| b.dev.id == results[0].dev.id));
        if existing {
            assert_eq!(results[0].dev.id, "env_1");
        }
        assert_eq!(count(&store, "SELECT count(*) FROM api_keys").await, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM admin_keys").await, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM environments").await, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM projects").await, 1);
    }
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let a = store.create_key("acme", "prod", key(1), 10).await.unwrap();
    let b = store.create_key("acme", "prod", key(2), 20).await.unwrap();
    let c = store
        .create_key("acme", "staging", key(3), 30)
        .await
        .unwrap();
    assert_eq!(
        (a.project.as_str(), a.environment.as_str()),
        ("acme", "prod")
    );
    assert_eq!(a.prefix, "tr_dev_secre");
    assert_eq!(a.created_at, 10);
    assert_eq!(a.revoked_at, None);
    let prod_a = store.environment_for_key([1; 32]).await.unwrap().unwrap();
    let prod_b = store.environment_for_key([2; 32]).await.unwrap().unwrap();
    let staging = store.environment_for_key([3; 32]).await.unwrap().unwrap();
    assert_eq!(prod_a.id, prod_b.id);
    assert_ne!(prod_a.id, staging.id);
    assert_eq!(count(&store, "SELECT count(*) FROM projects").await, 1);

    let listed: Vec<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![c.id.clone(), b.id.clone(), a.id.clone()]);

    let revoked = store.revoke_key(&b.id, 40).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(40));
    // Revoking again keeps the first time.
    let again = store.revoke_key(&b.id, 50).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(40));
    assert!(store.environment_for_key([2; 32]).await.unwrap().is_none());
    assert!(store.environment_for_key([1; 32]).await.unwrap().is_some());
    assert!(store.revoke_key("key_missing", 40).await.unwrap().is_none());

    // A key's hash is unique.
    assert!(store.create_key("acme", "prod", key(1), 60).await.is_err());
}

/// Keys created at once for a new project and environment share one of each.
#[tokio::test]
async fn concurrent_key_creation_makes_one_environment() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let creates = (1..=8u8).map(|n| store.create_key("acme", "prod", key(n), 10));
    for made in futures_util::future::join_all(creates).await {
        let made = made.unwrap();
        assert_eq!(
            (made.project.as_str(), made.environment.as_str()),
            ("acme", "prod")
        );
    }
    assert_eq!(count(&store, "SELECT count(*) FROM projects").await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM environments").await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM api_keys").await, 8);
}

#[tokio::test]
async fn an_environment_is_read_with_its_limits() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store.create_key("acme", "prod", key(1), 10).await.unwrap();
    let env = store.environment_for_key([1; 32]).await.unwrap().unwrap();
    store
        .conn()
        .await
        .unwrap()
        .execute(
            "UPDATE environments SET max_component_bytes = 100, max_payload_bytes = 200 WHERE id = $1",
            &[&env.id],
        )
        .await
        .unwrap();
    let read = store.environment(&env.id).await.unwrap().unwrap();
    assert_eq!(read.project_slug, "acme");
    assert_eq!(read.slug, "prod");
    assert_eq!(read.limits.max_component_bytes, Some(100));
    assert_eq!(read.limits.max_payload_bytes, Some(200));
    let by_key = store.environment_for_key([1; 32]).await.unwrap().unwrap();
    assert_eq!(by_key.limits, read.limits);
    assert!(store.environment("env_missing").await.unwrap().is_none());
}

/// A host-wide value is stored once: asked for at once by many, each proposing its own, every one
/// gets the same value, the one proposal stored.
#[tokio::test]
async fn concurrent_host_value_requests_get_one_value() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let asks = (0..8).map(|i| store.host_value("callbacks", vec![i]));
    let values: Vec<Vec<u8>> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values[0].len(), 1);
    assert!(values[0][0] < 8, "one of the proposals: {values:?}");
    assert!(values.iter().all(|v| *v == values[0]));
    assert_eq!(
        store.host_value("callbacks", vec![99]).await.unwrap(),
        values[0]
    );
    assert_eq!(store.host_value("other", vec![7]).await.unwrap(), [7]);
    assert_eq!(count(&store, "SELECT count(*) FROM host_secrets").await, 2);
}
