//! Environments as an admin sees and changes them: concurrency limit, upload and payload limits,
//! the outbound HTTP allow-list.

use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::store::*;

pub(super) const ENVIRONMENT_SELECT: &str = "SELECT e.id, p.slug, e.slug, e.concurrency_limit, \
     e.max_component_bytes, e.max_payload_bytes, e.allowed_outbound_hosts FROM environments e \
     JOIN projects p ON p.id = e.project_id";

pub(super) fn environment_info(r: &Row) -> Result<EnvironmentInfo, StoreError> {
    Ok(EnvironmentInfo {
        environment: Environment {
            id: get(r, 0)?,
            project_slug: get(r, 1)?,
            slug: get(r, 2)?,
            limits: crate::model::EnvironmentLimits {
                max_component_bytes: opt_int(r, 4)?,
                max_payload_bytes: opt_int(r, 5)?,
            },
        },
        concurrency_limit: opt_int(r, 3)?,
        allowed_outbound_hosts: outbound_hosts(get(r, 6)?),
    })
}

/// A limit as stored (a `BIGINT`): one that does not fit is refused, nothing written.
fn stored_limit<T: Copy + Into<u64>>(
    value: Option<T>,
    what: &str,
) -> Result<Option<i64>, StoreError> {
    value
        .map(|v| {
            i64::try_from(v.into()).map_err(|_| {
                StoreError::Refused(format!("{what} is too large (at most {})", i64::MAX))
            })
        })
        .transpose()
}

impl PostgresStore {
    pub async fn environment_limits(
        &self,
        environment_id: &str,
    ) -> Result<crate::model::EnvironmentLimits, StoreError> {
        let c = self.reader().await?;
        query_opt(
            &c,
            "SELECT max_component_bytes, max_payload_bytes FROM environments WHERE id = $1",
            &[&environment_id],
        )
        .await?
        .map(|r| {
            Ok(crate::model::EnvironmentLimits {
                max_component_bytes: opt_int(&r, 0)?,
                max_payload_bytes: opt_int(&r, 1)?,
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
    }

    pub async fn environments(&self) -> Result<Vec<EnvironmentInfo>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            &format!("{ENVIRONMENT_SELECT} ORDER BY p.slug, e.slug"),
            &[],
        )
        .await?
        .iter()
        .map(environment_info)
        .collect()
    }

    pub async fn update_environment(
        &self,
        project: &str,
        environment: &str,
        change: EnvironmentChange,
    ) -> Result<Option<EnvironmentInfo>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The row is read, changed field by field and written whole: it stays locked from the
        // read to the commit, so two admins changing different fields at once both keep theirs.
        // (`NO KEY UPDATE` leaves inserts that reference the environment free to proceed.)
        let found = query_opt(
            &tx,
            &format!(
                "{ENVIRONMENT_SELECT} WHERE p.slug = $1 AND e.slug = $2 FOR NO KEY UPDATE OF e"
            ),
            &[&project, &environment],
        )
        .await?;
        let Some(mut info) = found.as_ref().map(environment_info).transpose()? else {
            return Ok(None);
        };
        if let Some(limit) = change.concurrency_limit {
            info.concurrency_limit = limit;
        }
        let limits = &mut info.environment.limits;
        if let Some(max) = change.max_component_bytes {
            limits.max_component_bytes = max;
        }
        if let Some(max) = change.max_payload_bytes {
            limits.max_payload_bytes = max;
        }
        if let Some(hosts) = change.allowed_outbound_hosts {
            info.allowed_outbound_hosts = hosts;
        }
        let hosts = (!info.allowed_outbound_hosts.is_empty())
            .then(|| serde_json::to_string(&info.allowed_outbound_hosts).unwrap_or_default());
        let concurrency_limit = info.concurrency_limit.map(i64::from);
        let max_component_bytes = stored_limit(
            info.environment.limits.max_component_bytes,
            "the largest component",
        )?;
        let max_payload_bytes = stored_limit(
            info.environment.limits.max_payload_bytes,
            "the largest payload",
        )?;
        exec(
            &tx,
            "UPDATE environments SET concurrency_limit = $2, max_component_bytes = $3, \
               max_payload_bytes = $4, allowed_outbound_hosts = $5 WHERE id = $1",
            &[
                &info.environment.id,
                &concurrency_limit,
                &max_component_bytes,
                &max_payload_bytes,
                &hosts,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(info))
    }

    pub async fn deployed_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT e.id, p.slug, e.slug FROM environments e JOIN projects p ON p.id = e.project_id \
             WHERE EXISTS (SELECT 1 FROM deployments d WHERE d.environment_id = e.id)",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Environment {
                id: get(r, 0)?,
                project_slug: get(r, 1)?,
                slug: get(r, 2)?,
                limits: Default::default(),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDatabase;
    use super::*;

    fn key(n: u8) -> NewKey {
        NewKey {
            plaintext: format!("tr_dev_key{n}"),
            hash: [n; 32],
            sealed: None,
        }
    }

    #[tokio::test]
    async fn limits_are_read_changed_and_listed() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let made = store.create_key("proj", "prod", key(1), 10).await.unwrap();
        assert_eq!(made.environment, "prod");
        let env = store.environment_for_key([1; 32]).await.unwrap().unwrap();
        assert_eq!(
            store.environment_limits(&env.id).await.unwrap(),
            EnvironmentLimits::default()
        );
        // An unknown environment has the host's limits.
        assert_eq!(
            store.environment_limits("env_missing").await.unwrap(),
            EnvironmentLimits::default()
        );

        let changed = store
            .update_environment(
                "proj",
                "prod",
                EnvironmentChange {
                    concurrency_limit: Some(Some(7)),
                    max_component_bytes: Some(Some(1_000)),
                    max_payload_bytes: None,
                    allowed_outbound_hosts: Some(vec!["https://example.com".into()]),
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.concurrency_limit, Some(7));
        assert_eq!(changed.environment.limits.max_component_bytes, Some(1_000));
        assert_eq!(changed.environment.limits.max_payload_bytes, None);
        assert_eq!(
            store.environment_limits(&env.id).await.unwrap(),
            EnvironmentLimits {
                max_component_bytes: Some(1_000),
                max_payload_bytes: None
            }
        );
        let listed = store.environments().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].concurrency_limit, Some(7));
        assert_eq!(
            listed[0].allowed_outbound_hosts,
            vec!["https://example.com"]
        );

        // Back to the host's default, and an empty allow-list is stored as none.
        let reset = store
            .update_environment(
                "proj",
                "prod",
                EnvironmentChange {
                    concurrency_limit: Some(None),
                    allowed_outbound_hosts: Some(vec![]),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reset.concurrency_limit, None);
        assert_eq!(reset.environment.limits.max_component_bytes, Some(1_000));
        let c = store.conn().await.unwrap();
        let hosts: Option<String> = c
            .query_one(
                "SELECT allowed_outbound_hosts FROM environments WHERE id = $1",
                &[&env.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(hosts, None);

        // A limit too large for the column is refused, nothing written.
        let refused = store
            .update_environment(
                "proj",
                "prod",
                EnvironmentChange {
                    concurrency_limit: Some(Some(3)),
                    max_payload_bytes: Some(Some(u64::MAX)),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(
            store.environments().await.unwrap()[0].concurrency_limit,
            None
        );

        assert!(
            store
                .update_environment("proj", "missing", EnvironmentChange::default())
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Two admins changing different fields at once both keep their change.
    #[tokio::test]
    async fn concurrent_changes_of_different_fields_are_both_kept() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        store.create_key("proj", "prod", key(1), 10).await.unwrap();
        for round in 1..=10u32 {
            let limit = EnvironmentChange {
                concurrency_limit: Some(Some(round)),
                ..Default::default()
            };
            let payload = EnvironmentChange {
                max_payload_bytes: Some(Some(u64::from(round) * 100)),
                ..Default::default()
            };
            let (a, b) = tokio::join!(
                store.update_environment("proj", "prod", limit),
                store.update_environment("proj", "prod", payload)
            );
            a.unwrap().unwrap();
            b.unwrap().unwrap();
            let info = &store.environments().await.unwrap()[0];
            assert_eq!(info.concurrency_limit, Some(round));
            assert_eq!(
                info.environment.limits.max_payload_bytes,
                Some(u64::from(round) * 100)
            );
        }
    }

    #[tokio::test]
    async fn deployed_environments_are_those_with_a_deployment() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        store.create_key("proj", "prod", key(1), 10).await.unwrap();
        store.create_key("proj", "dev", key(2), 10).await.unwrap();
        assert!(store.deployed_environments().await.unwrap().is_empty());
        let env = store.environment_for_key([2; 32]).await.unwrap().unwrap();
        let c = store.conn().await.unwrap();
        c.batch_execute(&format!(
            "INSERT INTO components (digest, bytes, created_at) VALUES ('d1', '\\x00', 1); \
             INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
             VALUES ('dep_1', '{}', '20240101.1', 'd1', 1);",
            env.id
        ))
        .await
        .unwrap();
        let deployed = store.deployed_environments().await.unwrap();
        assert_eq!(deployed.len(), 1);
        assert_eq!(deployed[0].id, env.id);
        assert_eq!(deployed[0].project_slug, "proj");
        assert_eq!(deployed[0].slug, "dev");
    }
}
