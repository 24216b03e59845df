//! Runs as watchers read them (realtime): the runs a commit changed, by id and of any
//! environment (the watcher filters by its own), each read in one operation however many there
//! are, with their attempts and waits when the watcher shows those.

use rusqlite::Connection;

use super::SqliteStore;
use super::rows::*;
use super::waits::waiting_for_run;
use crate::model::*;
use crate::store::*;

/// Ids bound per query (well under SQLite's limit of bound variables).
const CHUNK: usize = 500;

fn runs_in(c: &Connection, ids: &[String]) -> Result<Vec<Run>, StoreError> {
    let mut runs = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id IN ({})",
            vec!["?"; chunk.len()].join(",")
        );
        let mut stmt = c.prepare_cached(&sql)?;
        for run in stmt.query_map(rusqlite::params_from_iter(chunk), run_from_row)? {
            runs.push(run?);
        }
    }
    Ok(runs)
}

fn attempts_of(c: &Connection, ids: &[String]) -> Result<Vec<Attempt>, StoreError> {
    let mut attempts = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id IN ({}) ORDER BY run_id, number",
            vec!["?"; chunk.len()].join(",")
        );
        let mut stmt = c.prepare_cached(&sql)?;
        for attempt in stmt.query_map(rusqlite::params_from_iter(chunk), attempt_from_row)? {
            attempts.push(attempt?);
        }
    }
    Ok(attempts)
}

impl SqliteStore {
    pub async fn changed_runs(&self, ids: Vec<String>) -> Result<Vec<Run>, StoreError> {
        self.read(move |c| runs_in(c, &ids)).await
    }

    pub async fn runs_in_detail(&self, ids: Vec<String>) -> Result<Vec<RunDetail>, StoreError> {
        self.read(move |c| {
            let runs = runs_in(c, &ids)?;
            let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
            let mut attempts = attempts_of(c, &ids)?;
            let mut out = Vec::with_capacity(runs.len());
            for run in runs {
                let (mine, rest): (Vec<Attempt>, Vec<Attempt>) =
                    attempts.into_iter().partition(|a| a.run_id == run.id);
                attempts = rest;
                let waiting_for = if run.status == RunStatus::Waiting {
                    waiting_for_run(c, &run.id)?
                } else {
                    Vec::new()
                };
                out.push(RunDetail {
                    run,
                    attempts: mine,
                    waiting_for,
                });
            }
            Ok(out)
        })
        .await
    }
}
