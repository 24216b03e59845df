//! Environment variables, stored sealed: the store keeps nonces and ciphertexts and never sees a
//! value (the engine seals and opens them).

use super::PostgresStore;
use super::rows::{exec, int, query, query_one, query_opt};
use super::run_env::var_from_row;
use crate::model::*;
use crate::store::*;

impl PostgresStore {
    pub async fn env_vars(&self, environment_id: &str) -> Result<Vec<StoredVar>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT environment_id, name, nonce, value, is_secret FROM env_vars \
             WHERE environment_id = $1 ORDER BY name",
            &[&environment_id],
        )
        .await?
        .iter()
        .map(var_from_row)
        .collect()
    }

    pub async fn env_var(
        &self,
        environment_id: &str,
        name: &str,
    ) -> Result<Option<StoredVar>, StoreError> {
        let c = self.reader().await?;
        query_opt(
            &c,
            "SELECT environment_id, name, nonce, value, is_secret FROM env_vars \
             WHERE environment_id = $1 AND name = $2",
            &[&environment_id, &name],
        )
        .await?
        .as_ref()
        .map(var_from_row)
        .transpose()
    }

    pub async fn put_env_vars(
        &self,
        environment_id: &str,
        vars: Vec<StoredVar>,
        overwrite: bool,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The count below bounds the variables the environment holds once this commits: two
        // writes at once would each count without the other's new names and both pass. Locking
        // the environment's row makes them take turns (`NO KEY UPDATE`: inserts that reference
        // the environment, such as triggers, are not held up).
        exec(
            &tx,
            "SELECT 1 FROM environments WHERE id = $1 FOR NO KEY UPDATE",
            &[&environment_id],
        )
        .await?;
        let mut kept = Vec::new();
        for var in &vars {
            let sql = if overwrite {
                // A secret stays secret when its value is written again.
                "INSERT INTO env_vars (environment_id, name, nonce, value, created_at, updated_at, is_secret) \
                 VALUES ($1, $2, $3, $4, $5, $5, $6) \
                 ON CONFLICT (environment_id, name) DO UPDATE \
                 SET nonce = excluded.nonce, value = excluded.value, updated_at = excluded.updated_at, \
                     is_secret = GREATEST(env_vars.is_secret, excluded.is_secret)"
            } else {
                "INSERT INTO env_vars \
                 (environment_id, name, nonce, value, created_at, updated_at, is_secret) \
                 VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT DO NOTHING"
            };
            let written = exec(
                &tx,
                sql,
                &[
                    &environment_id,
                    &var.name,
                    &var.sealed.nonce,
                    &var.sealed.ciphertext,
                    &now,
                    &i64::from(var.is_secret),
                ],
            )
            .await?;
            if written == 0 {
                kept.push(var.name.clone());
            }
        }
        let count: u64 = int(
            &query_one(
                &tx,
                "SELECT count(*) FROM env_vars WHERE environment_id = $1",
                &[&environment_id],
            )
            .await?,
            0,
        )?;
        if count > limit as u64 {
            // Dropping the transaction rolls it back: nothing is written.
            return Err(StoreError::Refused(format!(
                "an environment holds at most {limit} variables; delete some first"
            )));
        }
        tx.commit().await?;
        Ok(kept)
    }

    pub async fn delete_env_var(
        &self,
        environment_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        Ok(exec(
            &c,
            "DELETE FROM env_vars WHERE environment_id = $1 AND name = $2",
            &[&environment_id, &name],
        )
        .await?
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDatabase;
    use super::*;
    use crate::secrets::Sealed;

    fn var(env: &str, name: &str, value: u8, is_secret: bool) -> StoredVar {
        StoredVar {
            environment_id: env.to_owned(),
            name: name.to_owned(),
            sealed: Sealed {
                nonce: vec![value; 12],
                ciphertext: vec![value; 20],
            },
            is_secret,
        }
    }

    async fn environment(store: &PostgresStore) -> String {
        let key = NewKey {
            plaintext: "tr_dev_x".into(),
            hash: [9; 32],
            sealed: None,
        };
        store.create_key("acme", "prod", key, 1).await.unwrap();
        store
            .environment_for_key([9; 32])
            .await
            .unwrap()
            .unwrap()
            .id
    }

    #[tokio::test]
    async fn variables_are_written_read_kept_and_deleted() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let env = environment(&store).await;
        let kept = store
            .put_env_vars(
                &env,
                vec![var(&env, "B", 1, false), var(&env, "A", 2, true)],
                false,
                10,
                5,
            )
            .await
            .unwrap();
        assert!(kept.is_empty());
        let all = store.env_vars(&env).await.unwrap();
        assert_eq!(
            all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(all[0], var(&env, "A", 2, true));

        // Create only: names that exist are left alone and returned.
        let kept = store
            .put_env_vars(
                &env,
                vec![var(&env, "A", 3, false), var(&env, "C", 3, false)],
                false,
                10,
                6,
            )
            .await
            .unwrap();
        assert_eq!(kept, ["A"]);
        assert_eq!(
            store.env_var(&env, "A").await.unwrap(),
            Some(var(&env, "A", 2, true))
        );

        // Overwrite: the value changes, and a secret stays secret.
        let kept = store
            .put_env_vars(&env, vec![var(&env, "A", 4, false)], true, 10, 7)
            .await
            .unwrap();
        assert!(kept.is_empty());
        assert_eq!(
            store.env_var(&env, "A").await.unwrap(),
            Some(var(&env, "A", 4, true))
        );
        store
            .put_env_vars(&env, vec![var(&env, "B", 5, true)], true, 10, 8)
            .await
            .unwrap();
        assert_eq!(
            store.env_var(&env, "B").await.unwrap(),
            Some(var(&env, "B", 5, true))
        );

        assert!(store.delete_env_var(&env, "A").await.unwrap());
        assert!(!store.delete_env_var(&env, "A").await.unwrap());
        assert_eq!(store.env_var(&env, "A").await.unwrap(), None);
        assert_eq!(store.env_vars(&env).await.unwrap().len(), 2);
        assert!(store.env_vars("env_other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_write_past_the_limit_is_refused_whole() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let env = environment(&store).await;
        store
            .put_env_vars(&env, vec![var(&env, "A", 1, false)], false, 2, 5)
            .await
            .unwrap();
        let refused = store
            .put_env_vars(
                &env,
                vec![
                    var(&env, "A", 2, false),
                    var(&env, "B", 2, false),
                    var(&env, "C", 2, false),
                ],
                true,
                2,
                6,
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Refused(_))),
            "{refused:?}"
        );
        // Nothing was written, not even the overwrite of A.
        assert_eq!(
            store.env_vars(&env).await.unwrap(),
            vec![var(&env, "A", 1, false)]
        );
        // Overwriting at the limit is fine.
        store
            .put_env_vars(
                &env,
                vec![var(&env, "A", 3, false), var(&env, "B", 3, false)],
                true,
                2,
                7,
            )
            .await
            .unwrap();
        assert_eq!(store.env_vars(&env).await.unwrap().len(), 2);
    }

    /// Writes at once cannot together pass the limit (in a few rounds, one environment each,
    /// so a missing lock shows however the writes happen to interleave).
    #[tokio::test]
    async fn concurrent_writes_stay_within_the_limit() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        for round in 0..8u8 {
            let key = NewKey {
                plaintext: format!("tr_round_{round}"),
                hash: [round; 32],
                sealed: None,
            };
            store
                .create_key("acme", &format!("round{round}"), key, 1)
                .await
                .unwrap();
            let env = store
                .environment_for_key([round; 32])
                .await
                .unwrap()
                .unwrap()
                .id;
            // Connections for every writer first, so the writes overlap.
            let warm = (0..8).map(|_| store.env_vars(&env));
            futures_util::future::join_all(warm).await;
            // Each writer brings 20 new names; the environment holds at most 30: one fits.
            let batches: Vec<Vec<StoredVar>> = (0..8)
                .map(|w| {
                    (0..20)
                        .map(|n| var(&env, &format!("W{w}_{n}"), 1, false))
                        .collect()
                })
                .collect();
            let writes = batches
                .into_iter()
                .map(|vars| store.put_env_vars(&env, vars, false, 30, 5));
            let results = futures_util::future::join_all(writes).await;
            let written = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(written, 1, "{results:?}");
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Ok(_) | Err(StoreError::Refused(_))))
            );
            assert_eq!(store.env_vars(&env).await.unwrap().len(), 20);
        }
    }
}
