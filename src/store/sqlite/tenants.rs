//! Tenants: projects, environments and their secret keys (SHA-256 digests and sealed copies), the host's
//! admin keys, host-wide secrets, and the bootstrap of a fresh database.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::{exec, query_one};
use crate::model::*;
use crate::store::*;

/// The environment `project`/`environment`, created (with its project) if it does not exist.
pub(super) fn ensure_environment(
    c: &Connection,
    project: &str,
    environment: &str,
    now: Millis,
) -> Result<Environment, StoreError> {
    exec(
        c,
        "INSERT OR IGNORE INTO projects (id, slug, created_at) VALUES (?1, ?2, ?3)",
        params![new_id("proj"), project, now],
    )?;
    let project_id: String = query_one(
        c,
        "SELECT id FROM projects WHERE slug = ?1",
        [project],
        |r| r.get(0),
    )?;
    exec(
        c,
        "INSERT OR IGNORE INTO environments (id, project_id, slug, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![new_id("env"), project_id, environment, now],
    )?;
    Ok(Environment {
        id: query_one(
            c,
            "SELECT id FROM environments WHERE project_id = ?1 AND slug = ?2",
            params![project_id, environment],
            |r| r.get(0),
        )?,
        project_slug: project.to_owned(),
        slug: environment.to_owned(),
        limits: Default::default(),
    })
}

/// Length of the key prefix kept for display (the `tr_<env>_` part and a few secret characters).
pub(super) const KEY_PREFIX_CHARS: usize = 12;

pub(super) fn insert_key(
    c: &Connection,
    environment_id: &str,
    key: &NewKey,
    now: Millis,
) -> Result<String, StoreError> {
    let id = new_id("key");
    let prefix: String = key.plaintext.chars().take(KEY_PREFIX_CHARS).collect();
    exec(
        c,
        "INSERT INTO api_keys (id, environment_id, key_hash, created_at, prefix, sealed_nonce, sealed_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            environment_id,
            &key.hash[..],
            now,
            prefix,
            key.sealed.as_ref().map(|s| &s.nonce),
            key.sealed.as_ref().map(|s| &s.ciphertext),
        ],
    )?;
    Ok(id)
}

pub(super) fn load_key(c: &Connection, id: &str) -> Result<Option<KeyInfo>, StoreError> {
    Ok(query_one(
        c,
        "SELECT k.id, p.slug, e.slug, k.prefix, k.created_at, k.revoked_at FROM api_keys k \
         JOIN environments e ON e.id = k.environment_id JOIN projects p ON p.id = e.project_id \
         WHERE k.id = ?1",
        [id],
        |r| {
            Ok(KeyInfo {
                id: r.get(0)?,
                project: r.get(1)?,
                environment: r.get(2)?,
                prefix: r.get(3)?,
                created_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        },
    )
    .optional()?)
}

impl SqliteStore {
    pub async fn bootstrap(
        &self,
        dev_key: NewKey,
        admin_key: NewKey,
        now: Millis,
    ) -> Result<Bootstrapped, StoreError> {
        self.write(move |c| {
            let env = ensure_environment(c, "default", "dev", now)?;
            let keys: i64 = query_one(
                c,
                "SELECT count(*) FROM api_keys WHERE environment_id = ?1",
                [&env.id],
                |r| r.get(0),
            )?;
            let dev_key = if keys == 0 {
                insert_key(c, &env.id, &dev_key, now)?;
                Some(dev_key.plaintext)
            } else {
                None
            };
            let admins: i64 = query_one(c, "SELECT count(*) FROM admin_keys", [], |r| r.get(0))?;
            let admin_key = if admins == 0 {
                exec(
                    c,
                    "INSERT INTO admin_keys (id, key_hash, created_at) VALUES (?1, ?2, ?3)",
                    params![new_id("admin"), &admin_key.hash[..], now],
                )?;
                Some(admin_key.plaintext)
            } else {
                None
            };
            Ok(Bootstrapped {
                dev: env,
                dev_key,
                admin_key,
            })
        })
        .await
    }

    pub async fn is_admin_key(&self, key_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.read(move |c| {
            Ok(query_one(
                c,
                "SELECT 1 FROM admin_keys WHERE key_hash = ?1",
                [&key_hash[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    pub async fn create_key(
        &self,
        project: &str,
        environment: &str,
        key: NewKey,
        now: Millis,
    ) -> Result<KeyInfo, StoreError> {
        let (project, environment) = (project.to_owned(), environment.to_owned());
        self.write(move |c| {
            let env = ensure_environment(c, &project, &environment, now)?;
            let id = insert_key(c, &env.id, &key, now)?;
            load_key(c, &id)?.ok_or(StoreError::NotFound("key"))
        })
        .await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.read(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM api_keys ORDER BY created_at DESC, id DESC")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter()
                .filter_map(|id| load_key(c, id).transpose())
                .collect()
        })
        .await
    }

    pub async fn revoke_key(&self, id: &str, now: Millis) -> Result<Option<KeyInfo>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            exec(
                c,
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )?;
            load_key(c, &id)
        })
        .await
    }

    pub async fn environment_for_key(
        &self,
        key_hash: [u8; 32],
    ) -> Result<Option<Environment>, StoreError> {
        self.read(move |c| {
            Ok(query_one(
                c,
                "SELECT e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
                 FROM api_keys k \
                 JOIN environments e ON e.id = k.environment_id \
                 JOIN projects p ON p.id = e.project_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
                [&key_hash[..]],
                |r| {
                    Ok(Environment {
                        id: r.get(0)?,
                        project_slug: r.get(1)?,
                        slug: r.get(2)?,
                        limits: crate::model::EnvironmentLimits {
                            max_component_bytes: r.get(3)?,
                            max_payload_bytes: r.get(4)?,
                        },
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn environment(&self, id: &str) -> Result<Option<Environment>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT e.id, p.slug, e.slug, e.max_component_bytes, e.max_payload_bytes \
                 FROM environments e JOIN projects p ON p.id = e.project_id WHERE e.id = ?1",
                [&id],
                |r| {
                    Ok(Environment {
                        id: r.get(0)?,
                        project_slug: r.get(1)?,
                        slug: r.get(2)?,
                        limits: crate::model::EnvironmentLimits {
                            max_component_bytes: r.get(3)?,
                            max_payload_bytes: r.get(4)?,
                        },
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn host_value(&self, name: &str, proposed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            exec(
                c,
                "INSERT OR IGNORE INTO host_secrets (name, value) VALUES (?1, ?2)",
                params![name, proposed],
            )?;
            Ok(query_one(
                c,
                "SELECT value FROM host_secrets WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?)
        })
        .await
    }
}
