//! Attempts: the start (the run locked to its version, the attempt row, the run's copy of its
//! environment variables), the end with its usage and logs, and reading attempts and logs.

use std::sync::LazyLock;

use rusqlite::{Connection, params};

use super::SqliteStore;
use super::guards::status_guard;
use super::lifecycle::{apply_update, record_attempt};
use super::rows::*;
use crate::model::*;
use crate::store::*;

pub(super) fn attempt_start(c: &Connection, run_id: &str) -> Result<AttemptStart, StoreError> {
    let (project, environment, hosts) = c
        .prepare_cached(
            "SELECT p.slug, e.slug, e.allowed_outbound_hosts FROM runs r \
             JOIN environments e ON e.id = r.environment_id JOIN projects p ON p.id = e.project_id \
             WHERE r.id = ?1",
        )?
        .query_row([run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
    Ok(AttemptStart {
        env_vars: super::run_env::run_env(c, run_id)?,
        allowed_outbound_hosts: super::rows::outbound_hosts(hosts),
        project,
        environment,
    })
}

/// A claimed run whose attempt has a checkpoint continues it (`StartAttempt`, same number).
pub(super) static CONTINUE_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{executing}', updated_at = ?3 \
         WHERE id = ?1 AND environment_id = ?4 AND {guard} AND attempt_count = ?2 \
           AND checkpointed = 1",
        executing = RunStatus::Executing.as_str(),
        guard = status_guard(Step::StartAttempt, RunStatus::Executing, &[])
    )
});

/// A claimed run starts a new attempt (`StartAttempt`), locked to its deployment.
pub(super) static START_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = '{executing}', attempt_count = ?2, \
           deployment_id = coalesce(deployment_id, ?3), \
           started_at = coalesce(started_at, ?4), updated_at = ?4 \
         WHERE id = ?1 AND environment_id = ?5 AND {guard} AND attempt_count = ?2 - 1 \
           AND checkpointed = 0",
        executing = RunStatus::Executing.as_str(),
        guard = status_guard(Step::StartAttempt, RunStatus::Executing, &[])
    )
});

impl SqliteStore {
    pub async fn start_attempt(
        &self,
        environment_id: &str,
        run_id: &str,
        deployment_id: &str,
        attempt: u32,
        now: Millis,
    ) -> Result<AttemptStart, StoreError> {
        let (environment_id, run_id, deployment_id) = (
            environment_id.to_owned(),
            run_id.to_owned(),
            deployment_id.to_owned(),
        );
        self.write(move |c| {
            // A checkpointed attempt continues: same number, its row stays.
            let continued = c.prepare_cached(&CONTINUE_ATTEMPT)?.execute(params![
                run_id,
                attempt,
                now,
                environment_id
            ])?;
            if continued == 1 {
                return attempt_start(c, &run_id);
            }
            let changed = c.prepare_cached(&START_ATTEMPT)?.execute(params![
                run_id,
                attempt,
                deployment_id,
                now,
                environment_id
            ])?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            c.execute(
                "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) \
                 VALUES (?1, ?2, 'EXECUTING', ?3, ?4)",
                params![run_id, attempt, deployment_id, now],
            )?;
            if attempt == 1 {
                super::run_env::snapshot_run_env(c, &run_id)?;
            }
            attempt_start(c, &run_id)
        })
        .await
    }

    pub async fn update_run(&self, update: RunUpdate) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| apply_update(c, &update)).await
    }

    pub async fn finish_attempt(&self, finish: FinishAttempt) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| record_attempt(c, finish).map(|(_, resumed)| resumed))
            .await
    }

    pub async fn attempts(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            if !run_in_env(c, &environment_id, &run_id)? {
                return Ok(Vec::new());
            }
            Ok(c.prepare_cached(
                "SELECT run_id, number, status, deployment_id, started_at, finished_at, error, fuel_used, compute_ms \
                 FROM attempts WHERE run_id = ?1 ORDER BY number",
            )?
            .query_map([&run_id], attempt_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn logs(
        &self,
        environment_id: &str,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            if !run_in_env(c, &environment_id, &run_id)? {
                return Ok(Vec::new());
            }
            Ok(c.prepare_cached(
                "SELECT id, attempt, at, level, message, attributes FROM run_logs \
                 WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![run_id, after, limit as i64], |r| {
                let level: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    LogLine {
                        attempt: r.get(1)?,
                        at: r.get(2)?,
                        level: LogLevel::parse(&level)
                            .ok_or_else(|| corrupt_col(3, "log level", &level))?,
                        message: r.get(4)?,
                        attributes: r.get(5)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn in_flight_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.read(|c| {
            Ok(c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.status IN ('DEQUEUED', 'EXECUTING')"
            ))?
            .query_map([], run_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }
}
