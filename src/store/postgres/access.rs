//! What public access tokens need: an environment's active keys with their sealed copies (to
//! check a token's signature), sealing a key made before keys were kept sealed, and the one-time
//! trigger tokens already used (each digest once, claimed in the transaction of what it made).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use super::runs::insert_all;
use crate::model::*;
use crate::secrets::Sealed;
use crate::store::*;

const KEY_SELECT: &str = "SELECT k.id, k.key_hash, k.sealed_nonce, k.sealed_key, \
       e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
     FROM api_keys k JOIN environments e ON e.id = k.environment_id \
     JOIN projects p ON p.id = e.project_id";

fn key_from_row(r: &Row) -> Result<ApiKey, StoreError> {
    let hash: Vec<u8> = get(r, 1)?;
    let nonce: Option<Vec<u8>> = get(r, 2)?;
    let ciphertext: Option<Vec<u8>> = get(r, 3)?;
    Ok(ApiKey {
        id: get(r, 0)?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("column 1: a key digest is 32 bytes".into()))?,
        sealed: nonce
            .zip(ciphertext)
            .map(|(nonce, ciphertext)| Sealed { nonce, ciphertext }),
        environment: Environment {
            id: get(r, 4)?,
            project_slug: get(r, 5)?,
            slug: get(r, 6)?,
            limits: EnvironmentLimits {
                max_component_bytes: opt_int(r, 7)?,
                max_payload_bytes: opt_int(r, 8)?,
            },
        },
    })
}

/// Claims a one-time token's digest; `false` if it was used already.
///
/// The insert is the check: a second claim of the digest in another transaction waits for the
/// first to commit and then inserts nothing, so a token makes what it makes once, however many
/// hosts it is sent to at once.
async fn claim(
    c: &impl GenericClient,
    digest: &[u8; 32],
    environment_id: &str,
    used_for: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    Ok(exec(
        c,
        "INSERT INTO used_tokens (digest, environment_id, used_for, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&&digest[..], &environment_id, &used_for, &now],
    )
    .await?
        == 1)
}

impl PostgresStore {
    pub async fn api_key(&self, key_hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        query_opt(
            &self.reader().await?,
            &format!("{KEY_SELECT} WHERE k.key_hash = $1 AND k.revoked_at IS NULL"),
            &[&&key_hash[..]],
        )
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }

    pub async fn environment_keys(
        &self,
        environment_id: &str,
        key_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<ApiKey>, StoreError> {
        query(
            &self.reader().await?,
            &format!(
                "{KEY_SELECT} WHERE k.environment_id = $1 AND k.revoked_at IS NULL \
                 AND ($2::text IS NULL OR k.id = $2::text) ORDER BY k.created_at DESC LIMIT $3"
            ),
            &[&environment_id, &key_id, &(limit as i64)],
        )
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    pub async fn seal_key(&self, id: &str, sealed: Sealed) -> Result<bool, StoreError> {
        // Compare-and-set on the missing copy: of two hosts sealing one key at once, one does.
        Ok(exec(
            &self.conn().await?,
            "UPDATE api_keys SET sealed_nonce = $2, sealed_key = $3 \
             WHERE id = $1 AND sealed_key IS NULL",
            &[&id, &sealed.nonce, &sealed.ciphertext],
        )
        .await?
            == 1)
    }

    pub async fn insert_runs_once(
        &self,
        runs: Vec<NewRun>,
        token_digest: [u8; 32],
    ) -> Result<Option<Vec<Inserted>>, StoreError> {
        let Some(first) = runs.first() else {
            return Ok(Some(Vec::new()));
        };
        let used_for = format!("trigger {}", first.task_id);
        let (environment_id, now) = (first.environment_id.clone(), first.now);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if !claim(&tx, &token_digest, &environment_id, &used_for, now).await? {
            return Ok(None);
        }
        let inserted = insert_all(&tx, runs, None).await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }

    pub async fn use_token(
        &self,
        token_digest: [u8; 32],
        environment_id: &str,
        used_for: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        claim(
            &self.conn().await?,
            &token_digest,
            environment_id,
            used_for,
            now,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::queues::tests::tenant;
    use super::super::runs::tests::new_run;
    use super::*;

    #[tokio::test]
    async fn keys_are_found_by_digest_and_sealed_once() {
        let (_db, store) = tenant().await;
        let c = store.conn().await.expect("a connection");
        c.batch_execute(
            "UPDATE environments SET max_payload_bytes = 1024 WHERE id = 'e';
             INSERT INTO api_keys (id, environment_id, key_hash, created_at)
               VALUES ('k1', 'e', decode(repeat('01', 32), 'hex'), 1),
                      ('k2', 'e', decode(repeat('02', 32), 'hex'), 2),
                      ('k3', 'e', decode(repeat('03', 32), 'hex'), 3);
             UPDATE api_keys SET revoked_at = 5 WHERE id = 'k3';",
        )
        .await
        .expect("keys");
        let key = store.api_key([1; 32]).await.expect("a read").expect("k1");
        assert_eq!(
            (key.id.as_str(), key.hash, key.sealed.is_none()),
            ("k1", [1; 32], true)
        );
        assert_eq!(
            (
                key.environment.project_slug.as_str(),
                key.environment.slug.as_str(),
                key.environment.limits.max_payload_bytes,
                key.environment.limits.max_component_bytes
            ),
            ("default", "dev", Some(1024), None)
        );
        assert!(
            store.api_key([3; 32]).await.expect("a read").is_none(),
            "revoked"
        );
        assert!(store.api_key([9; 32]).await.expect("a read").is_none());

        let keys = store.environment_keys("e", None, 10).await.expect("keys");
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["k2", "k1"]);
        let one = store
            .environment_keys("e", Some("k1".into()), 10)
            .await
            .expect("keys");
        assert_eq!(one.len(), 1);
        assert_eq!(
            store
                .environment_keys("e", None, 1)
                .await
                .expect("keys")
                .len(),
            1
        );

        let sealed = || Sealed {
            nonce: vec![1, 2],
            ciphertext: vec![3, 4],
        };
        let (a, b) = tokio::join!(
            store.seal_key("k1", sealed()),
            store.seal_key("k1", sealed())
        );
        assert!(a.expect("seal") ^ b.expect("seal"), "sealed once");
        let key = store.api_key([1; 32]).await.expect("a read").expect("k1");
        assert_eq!(key.sealed.map(|s| s.ciphertext), Some(vec![3, 4]));
    }

    /// One token sent to several hosts at once makes its runs once: every other use gets `None`
    /// and stores nothing.
    #[tokio::test]
    async fn a_one_time_token_makes_its_runs_once_however_many_use_it_at_once() {
        let (_db, store) = tenant().await;
        let uses = (0..6).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_runs_once(vec![new_run("t", RunStatus::Queued)], [7; 32])
                    .await
            })
        });
        let mut made = 0;
        for result in futures_util::future::join_all(uses).await {
            if let Some(runs) = result.expect("the task").expect("a use") {
                assert_eq!(runs.len(), 1);
                made += 1;
            }
        }
        assert_eq!(made, 1);
        assert_eq!(
            store
                .count_runs("e", RunStatus::Queued)
                .await
                .expect("count"),
            1
        );
        let used_for: String = store
            .conn()
            .await
            .expect("a connection")
            .query_one("SELECT used_for FROM used_tokens", &[])
            .await
            .expect("the claim")
            .get(0);
        assert_eq!(used_for, "trigger t");

        assert!(
            store
                .use_token([8; 32], "e", "wait", 1)
                .await
                .expect("a use")
        );
        assert!(
            !store
                .use_token([8; 32], "e", "wait", 1)
                .await
                .expect("a use")
        );
        assert_eq!(
            store
                .insert_runs_once(Vec::new(), [7; 32])
                .await
                .expect("nothing")
                .map(|runs| runs.len()),
            Some(0)
        );
    }
}
