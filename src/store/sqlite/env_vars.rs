//! Environment variables, stored sealed: the store keeps nonces and ciphertexts and never sees a
//! value (the engine seals and opens them).

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{exec, query_one};
use super::run_env::var_from_row;
use crate::model::*;
use crate::store::*;

impl SqliteStore {
    pub async fn env_vars(&self, environment_id: &str) -> Result<Vec<StoredVar>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT environment_id, name, nonce, value, is_secret FROM env_vars \
                 WHERE environment_id = ?1 ORDER BY name",
            )?
            .query_map([environment_id], var_from_row)?
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
        })
        .await
    }

    pub async fn env_var(
        &self,
        environment_id: &str,
        name: &str,
    ) -> Result<Option<StoredVar>, StoreError> {
        let (environment_id, name) = (environment_id.to_owned(), name.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT environment_id, name, nonce, value, is_secret FROM env_vars \
                 WHERE environment_id = ?1 AND name = ?2",
            )?
            .query_row([environment_id, name], var_from_row)
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    pub async fn put_env_vars(
        &self,
        environment_id: &str,
        vars: Vec<StoredVar>,
        overwrite: bool,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let mut kept = Vec::new();
            for var in &vars {
                let sql = if overwrite {
                    // A secret stays secret when its value is written again.
                    "INSERT INTO env_vars (environment_id, name, nonce, value, created_at, updated_at, is_secret) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) \
                     ON CONFLICT (environment_id, name) DO UPDATE \
                     SET nonce = excluded.nonce, value = excluded.value, updated_at = excluded.updated_at, \
                         is_secret = max(is_secret, excluded.is_secret)"
                } else {
                    "INSERT OR IGNORE INTO env_vars \
                     (environment_id, name, nonce, value, created_at, updated_at, is_secret) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)"
                };
                let written = c.prepare_cached(sql)?.execute(params![
                    environment_id,
                    var.name,
                    var.sealed.nonce,
                    var.sealed.ciphertext,
                    now,
                    var.is_secret
                ])?;
                if written == 0 {
                    kept.push(var.name.clone());
                }
            }
            let count: i64 = query_one(
                c,
                "SELECT count(*) FROM env_vars WHERE environment_id = ?1",
                [&environment_id],
                |r| r.get(0),
            )?;
            if count as usize > limit {
                return Err(StoreError::Refused(format!(
                    "an environment holds at most {limit} variables; delete some first"
                )));
            }
            Ok(kept)
        })
        .await
    }

    pub async fn delete_env_var(
        &self,
        environment_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let (environment_id, name) = (environment_id.to_owned(), name.to_owned());
        self.write(move |c| {
            Ok(exec(
                c,
                "DELETE FROM env_vars WHERE environment_id = ?1 AND name = ?2",
                [environment_id, name],
            )? == 1)
        })
        .await
    }
}
