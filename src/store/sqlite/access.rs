//! What public access tokens need: an environment's active keys with their sealed copies (to
//! check a token's signature), sealing a key made before keys were kept sealed, and the one-time
//! trigger tokens already used (each digest once, claimed in the transaction of what it made).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::runs::insert_all;
use crate::model::*;
use crate::secrets::Sealed;
use crate::store::*;

const KEY_SELECT: &str = "SELECT k.id, k.key_hash, k.sealed_nonce, k.sealed_key, \
       e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
     FROM api_keys k JOIN environments e ON e.id = k.environment_id \
     JOIN projects p ON p.id = e.project_id";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let hash: Vec<u8> = r.get(1)?;
    let nonce: Option<Vec<u8>> = r.get(2)?;
    let ciphertext: Option<Vec<u8>> = r.get(3)?;
    Ok(ApiKey {
        id: r.get(0)?,
        hash: hash.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Blob,
                "a key digest is 32 bytes".into(),
            )
        })?,
        sealed: nonce
            .zip(ciphertext)
            .map(|(nonce, ciphertext)| Sealed { nonce, ciphertext }),
        environment: Environment {
            id: r.get(4)?,
            project_slug: r.get(5)?,
            slug: r.get(6)?,
            limits: EnvironmentLimits {
                max_component_bytes: r.get(7)?,
                max_payload_bytes: r.get(8)?,
            },
        },
    })
}

/// Claims a one-time token's digest; `false` if it was used already.
fn claim(
    c: &Connection,
    digest: &[u8; 32],
    environment_id: &str,
    used_for: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "INSERT OR IGNORE INTO used_tokens (digest, environment_id, used_for, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&digest[..], environment_id, used_for, now])?
        == 1)
}

impl SqliteStore {
    pub async fn api_key(&self, key_hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "{KEY_SELECT} WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
            ))?
            .query_row([&key_hash[..]], key_from_row)
            .optional()?)
        })
        .await
    }

    pub async fn environment_keys(
        &self,
        environment_id: &str,
        key_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "{KEY_SELECT} WHERE k.environment_id = ?1 AND k.revoked_at IS NULL \
                 AND (?2 IS NULL OR k.id = ?2) ORDER BY k.created_at DESC LIMIT ?3"
            ))?
            .query_map(params![environment_id, key_id, limit as i64], key_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn seal_key(&self, id: &str, sealed: Sealed) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE api_keys SET sealed_nonce = ?2, sealed_key = ?3 WHERE id = ?1 AND sealed_key IS NULL",
                params![id, sealed.nonce, sealed.ciphertext],
            )? == 1)
        })
        .await
    }

    pub async fn insert_runs_once(
        &self,
        runs: Vec<NewRun>,
        token_digest: [u8; 32],
    ) -> Result<Option<Vec<Inserted>>, StoreError> {
        self.write(move |c| {
            let Some(first) = runs.first() else {
                return Ok(Some(Vec::new()));
            };
            let used_for = format!("trigger {}", first.task_id);
            if !claim(
                c,
                &token_digest,
                &first.environment_id,
                &used_for,
                first.now,
            )? {
                return Ok(None);
            }
            Ok(Some(insert_all(c, runs, None)?))
        })
        .await
    }

    pub async fn use_token(
        &self,
        token_digest: [u8; 32],
        environment_id: &str,
        used_for: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (environment_id, used_for) = (environment_id.to_owned(), used_for.to_owned());
        self.write(move |c| claim(c, &token_digest, &environment_id, &used_for, now))
            .await
    }
}
