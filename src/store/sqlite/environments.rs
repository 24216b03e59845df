//! Environments as an admin sees and changes them: concurrency limit, upload and payload limits,
//! the outbound HTTP allow-list.

use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::exec;
use super::rows::*;
use crate::model::*;
use crate::store::*;

pub(super) const ENVIRONMENT_SELECT: &str = "SELECT e.id, p.slug, e.slug, e.concurrency_limit, \
     e.max_component_bytes, e.max_payload_bytes, e.allowed_outbound_hosts FROM environments e \
     JOIN projects p ON p.id = e.project_id";

pub(super) fn environment_info(r: &Row<'_>) -> rusqlite::Result<EnvironmentInfo> {
    Ok(EnvironmentInfo {
        environment: Environment {
            id: r.get(0)?,
            project_slug: r.get(1)?,
            slug: r.get(2)?,
            limits: crate::model::EnvironmentLimits {
                max_component_bytes: r.get(4)?,
                max_payload_bytes: r.get(5)?,
            },
        },
        concurrency_limit: r.get(3)?,
        allowed_outbound_hosts: outbound_hosts(r.get(6)?),
    })
}

impl SqliteStore {
    pub async fn environment_limits(
        &self,
        environment_id: &str,
    ) -> Result<crate::model::EnvironmentLimits, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT max_component_bytes, max_payload_bytes FROM environments WHERE id = ?1",
            )?
            .query_row([environment_id], |r| {
                Ok(crate::model::EnvironmentLimits {
                    max_component_bytes: r.get(0)?,
                    max_payload_bytes: r.get(1)?,
                })
            })
            .optional()?
            .unwrap_or_default())
        })
        .await
    }

    pub async fn environments(&self) -> Result<Vec<EnvironmentInfo>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare(&format!("{ENVIRONMENT_SELECT} ORDER BY p.slug, e.slug"))?
                    .query_map([], environment_info)?
                    .collect::<Result<_, _>>()?,
            )
        })
        .await
    }

    pub async fn update_environment(
        &self,
        project: &str,
        environment: &str,
        change: EnvironmentChange,
    ) -> Result<Option<EnvironmentInfo>, StoreError> {
        let (project, environment) = (project.to_owned(), environment.to_owned());
        self.write(move |c| {
            let found = c
                .prepare(&format!(
                    "{ENVIRONMENT_SELECT} WHERE p.slug = ?1 AND e.slug = ?2"
                ))?
                .query_row(params![project, environment], environment_info)
                .optional()?;
            let Some(mut info) = found else {
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
            exec(
                c,
                "UPDATE environments SET concurrency_limit = ?2, max_component_bytes = ?3, \
                   max_payload_bytes = ?4, allowed_outbound_hosts = ?5 WHERE id = ?1",
                params![
                    info.environment.id,
                    info.concurrency_limit,
                    info.environment.limits.max_component_bytes,
                    info.environment.limits.max_payload_bytes,
                    hosts
                ],
            )?;
            Ok(Some(info))
        })
        .await
    }

    pub async fn deployed_environments(&self) -> Result<Vec<Environment>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(
                "SELECT e.id, p.slug, e.slug FROM environments e JOIN projects p ON p.id = e.project_id \
                 WHERE EXISTS (SELECT 1 FROM deployments d WHERE d.environment_id = e.id)",
            )?
            .query_map([], |r| {
                Ok(Environment {
                    id: r.get(0)?,
                    project_slug: r.get(1)?,
                    slug: r.get(2)?,
                    limits: Default::default(),
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }
}
