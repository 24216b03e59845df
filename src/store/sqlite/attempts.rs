//! Attempts: the start (the run locked to its version, the attempt row, the run's copy of its
//! environment variables), the end with its usage and logs, and reading attempts and logs.

use rusqlite::params;

use super::SqliteStore;
use super::lifecycle::{apply_update, record_attempt};
use super::rows::*;
use crate::model::*;
use crate::store::*;

impl SqliteStore {
    pub async fn update_run(&self, update: RunUpdate) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| apply_update(c, &update)).await
    }

    pub async fn finish_attempt(
        &self,
        finish: FinishAttempt,
    ) -> Result<Staged<Vec<Lane>>, StoreError> {
        self.write_staged(move |c| record_attempt(c, finish).map(|(_, resumed)| resumed))
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
