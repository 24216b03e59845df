//! Tenants: projects, environments and their secret keys (SHA-256 digests and sealed copies), the host's
//! admin keys, host-wide secrets, and the bootstrap of a fresh database.
//!
//! Several hosts (or several requests of one) may create the same project, environment or host
//! secret at once: each "create if missing" is an `INSERT … ON CONFLICT DO NOTHING` followed by
//! a read of the row, so they all get the one row that won. (PostgreSQL makes the losing insert
//! wait for the winner's commit, and each statement of a transaction sees what was committed
//! before it began.)

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::{exec, get, int, opt_int, query, query_one, query_opt};
use crate::model::*;
use crate::store::*;

/// The advisory lock the bootstrap runs under (see [`PostgresStore::bootstrap`]).
const BOOTSTRAP_LOCK: i64 = 0x6b69_6c6e_626f_6f74; // "klnboot"

/// The environment `project`/`environment`, created (with its project) if it does not exist.
pub(super) async fn ensure_environment(
    c: &impl GenericClient,
    project: &str,
    environment: &str,
    now: Millis,
) -> Result<Environment, StoreError> {
    // Race-free: a concurrent insert of the same slug makes this one wait for its commit and
    // then do nothing; the select below reads whichever row won.
    exec(
        c,
        "INSERT INTO projects (id, slug, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&new_id("proj"), &project, &now],
    )
    .await?;
    let project_id: String = get(
        &query_one(c, "SELECT id FROM projects WHERE slug = $1", &[&project]).await?,
        0,
    )?;
    exec(
        c,
        "INSERT INTO environments (id, project_id, slug, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
        &[&new_id("env"), &project_id, &environment, &now],
    )
    .await?;
    let row = query_one(
        c,
        "SELECT id FROM environments WHERE project_id = $1 AND slug = $2",
        &[&project_id, &environment],
    )
    .await?;
    Ok(Environment {
        id: get(&row, 0)?,
        project_slug: project.to_owned(),
        slug: environment.to_owned(),
        limits: Default::default(),
    })
}

/// Length of the key prefix kept for display (the `tr_<env>_` part and a few secret characters).
pub(super) const KEY_PREFIX_CHARS: usize = 12;

pub(super) async fn insert_key(
    c: &impl GenericClient,
    environment_id: &str,
    key: &NewKey,
    now: Millis,
) -> Result<String, StoreError> {
    let id = new_id("key");
    let prefix: String = key.plaintext.chars().take(KEY_PREFIX_CHARS).collect();
    exec(
        c,
        "INSERT INTO api_keys (id, environment_id, key_hash, created_at, prefix, sealed_nonce, sealed_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            &environment_id,
            &&key.hash[..],
            &now,
            &prefix,
            &key.sealed.as_ref().map(|s| &s.nonce[..]),
            &key.sealed.as_ref().map(|s| &s.ciphertext[..]),
        ],
    )
    .await?;
    Ok(id)
}

const KEY_SELECT: &str = "SELECT k.id, p.slug, e.slug, k.prefix, k.created_at, k.revoked_at FROM api_keys k \
     JOIN environments e ON e.id = k.environment_id JOIN projects p ON p.id = e.project_id";

fn key_from_row(r: &Row) -> Result<KeyInfo, StoreError> {
    Ok(KeyInfo {
        id: get(r, 0)?,
        project: get(r, 1)?,
        environment: get(r, 2)?,
        prefix: get(r, 3)?,
        created_at: get(r, 4)?,
        revoked_at: get(r, 5)?,
    })
}

pub(super) async fn load_key(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<KeyInfo>, StoreError> {
    query_opt(c, &format!("{KEY_SELECT} WHERE k.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
}

/// An environment from `id, project slug, slug, max_component_bytes, max_payload_bytes`.
fn environment_from_row(r: &Row) -> Result<Environment, StoreError> {
    Ok(Environment {
        id: get(r, 0)?,
        project_slug: get(r, 1)?,
        slug: get(r, 2)?,
        limits: crate::model::EnvironmentLimits {
            max_component_bytes: opt_int(r, 3)?,
            max_payload_bytes: opt_int(r, 4)?,
        },
    })
}

impl PostgresStore {
    pub async fn bootstrap(
        &self,
        dev_key: NewKey,
        admin_key: NewKey,
        now: Millis,
    ) -> Result<Bootstrapped, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Hosts starting at once would each count no key and each make one: the bootstrap runs
        // under one lock, held until this transaction ends, so the second sees the first's keys.
        exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK]).await?;
        let env = ensure_environment(&tx, "default", "dev", now).await?;
        let keys: i64 = int(
            &query_one(
                &tx,
                "SELECT count(*) FROM api_keys WHERE environment_id = $1",
                &[&env.id],
            )
            .await?,
            0,
        )?;
        let dev_key = if keys == 0 {
            insert_key(&tx, &env.id, &dev_key, now).await?;
            Some(dev_key.plaintext)
        } else {
            None
        };
        let admins: i64 = int(
            &query_one(&tx, "SELECT count(*) FROM admin_keys", &[]).await?,
            0,
        )?;
        let admin_key = if admins == 0 {
            exec(
                &tx,
                "INSERT INTO admin_keys (id, key_hash, created_at) VALUES ($1, $2, $3)",
                &[&new_id("admin"), &&admin_key.hash[..], &now],
            )
            .await?;
            Some(admin_key.plaintext)
        } else {
            None
        };
        tx.commit().await?;
        Ok(Bootstrapped {
            dev: env,
            dev_key,
            admin_key,
        })
    }

    pub async fn is_admin_key(&self, key_hash: [u8; 32]) -> Result<bool, StoreError> {
        let c = self.reader().await?;
        Ok(query_opt(
            &c,
            "SELECT 1 FROM admin_keys WHERE key_hash = $1",
            &[&&key_hash[..]],
        )
        .await?
        .is_some())
    }

    pub async fn create_key(
        &self,
        project: &str,
        environment: &str,
        key: NewKey,
        now: Millis,
    ) -> Result<KeyInfo, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let env = ensure_environment(&tx, project, environment, now).await?;
        let id = insert_key(&tx, &env.id, &key, now).await?;
        let info = load_key(&tx, &id)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        tx.commit().await?;
        Ok(info)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            &format!("{KEY_SELECT} ORDER BY k.created_at DESC, k.id DESC"),
            &[],
        )
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    pub async fn revoke_key(&self, id: &str, now: Millis) -> Result<Option<KeyInfo>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        let info = load_key(&tx, id).await?;
        tx.commit().await?;
        Ok(info)
    }

    pub async fn environment_for_key(
        &self,
        key_hash: [u8; 32],
    ) -> Result<Option<Environment>, StoreError> {
        let c = self.reader().await?;
        query_opt(
            &c,
            "SELECT e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
             FROM api_keys k \
             JOIN environments e ON e.id = k.environment_id \
             JOIN projects p ON p.id = e.project_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            &[&&key_hash[..]],
        )
        .await?
        .as_ref()
        .map(environment_from_row)
        .transpose()
    }

    pub async fn environment(&self, id: &str) -> Result<Option<Environment>, StoreError> {
        let c = self.reader().await?;
        query_opt(
            &c,
            "SELECT e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
             FROM environments e JOIN projects p ON p.id = e.project_id WHERE e.id = $1",
            &[&id],
        )
        .await?
        .as_ref()
        .map(environment_from_row)
        .transpose()
    }

    pub async fn host_value(&self, name: &str, proposed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Race-free: of hosts asking at once, one insert wins and every host reads its value.
        exec(
            &tx,
            "INSERT INTO host_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &proposed],
        )
        .await?;
        let value: Vec<u8> = get(
            &query_one(
                &tx,
                "SELECT value FROM host_secrets WHERE name = $1",
                &[&name],
            )
            .await?,
            0,
        )?;
        tx.commit().await?;
        Ok(value)
    }
}

#[cfg(test)]
#[path = "tenants_tests.rs"]
mod tests;
