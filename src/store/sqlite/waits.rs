//! Checkpoints and what a checkpointed run waits for: a time, a wait token or child runs; the
//! stored journal it replays; and the timer pass that completes due waitpoints.

use rusqlite::{Connection, params};

use super::SqliteStore;
use super::journal::append_journal;
use super::lifecycle::{FINAL, record_attempt, resume_if_done};
use super::rows::run_in_env;
use super::rows::{exec, query_one};
use crate::model::*;
use crate::store::*;

/// What a run waits for now: pending waitpoints and children that have not ended.
pub(super) fn waiting_for_run(c: &Connection, run_id: &str) -> Result<Vec<WaitingFor>, StoreError> {
    let mut out: Vec<WaitingFor> = c
        .prepare_cached(
            "SELECT id, kind, completes_at FROM waitpoints \
             WHERE status = 'PENDING' AND (run_id = ?1 OR id IN \
               (SELECT waitpoint_id FROM waitpoint_waiters WHERE run_id = ?1)) \
             ORDER BY id",
        )?
        .query_map([run_id], |r| {
            let (id, kind, at): (String, String, Option<Millis>) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(match (kind.as_str(), at) {
                ("DATETIME", Some(completes_at)) => WaitingFor::DateTime { id, completes_at },
                _ => WaitingFor::Token { id, timeout_at: at },
            })
        })?
        .collect::<Result<_, _>>()?;
    let children = c
        .prepare_cached(&format!(
            "SELECT w.child_run_id FROM run_waiters w JOIN runs r ON r.id = w.child_run_id \
             WHERE w.parent_run_id = ?1 AND r.status NOT IN {FINAL} ORDER BY w.child_run_id"
        ))?
        .query_map([run_id], |r| Ok(WaitingFor::Run { id: r.get(0)? }))?
        .collect::<Result<Vec<_>, _>>()?;
    out.extend(children);
    Ok(out)
}

impl SqliteStore {
    pub async fn checkpoint(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        until: Millis,
    ) -> Result<Staged<()>, StoreError> {
        self.write_staged(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(());
            }
            super::journal::append_journal(c, &run_id, attempt, journal, now)?;
            exec(
                c,
                "INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, created_at) \
                 SELECT ?1, environment_id, id, 'DATETIME', 'PENDING', ?2, ?3 FROM runs WHERE id = ?4",
                params![new_id("waitpoint"), until, now, run_id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn checkpoint_on_token(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        token: String,
    ) -> Result<Staged<Option<Lane>>, StoreError> {
        self.write_staged(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(None);
            }
            append_journal(c, &run_id, attempt, journal, now)?;
            exec(
                c,
                "INSERT OR IGNORE INTO waitpoint_waiters (waitpoint_id, run_id) VALUES (?1, ?2)",
                params![token, run_id],
            )?;
            let pending = c
                .prepare_cached("SELECT 1 FROM waitpoints WHERE id = ?1 AND status = 'PENDING'")?
                .exists([&token])?;
            if pending {
                return Ok(None);
            }
            super::lifecycle::resume(c, &run_id, now)
        })
        .await
    }

    pub async fn checkpoint_on_runs(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        children: Vec<String>,
    ) -> Result<Staged<Option<Lane>>, StoreError> {
        self.write_staged(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(None);
            }
            super::journal::append_journal(c, &run_id, attempt, journal, now)?;
            let mut wait = c.prepare_cached(
                "INSERT OR IGNORE INTO run_waiters (child_run_id, parent_run_id) VALUES (?1, ?2)",
            )?;
            for child in &children {
                wait.execute(params![child, run_id])?;
            }
            resume_if_done(c, &run_id, now)
        })
        .await
    }

    pub async fn journal(
        &self,
        environment_id: &str,
        run_id: &str,
        attempt: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            if !run_in_env(c, &environment_id, &run_id)? {
                return Ok(Vec::new());
            }
            super::journal::read_journal(c, &run_id, attempt)
        })
        .await
    }

    pub async fn journal_size(&self) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            Ok(query_one(
                c,
                "SELECT coalesce(sum(length(entries)), 0), count(*) FROM journal_segments",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
        .await
    }

    pub async fn waiting_for(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<WaitingFor>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            if !run_in_env(c, &environment_id, &run_id)? {
                return Ok(Vec::new());
            }
            waiting_for_run(c, &run_id)
        })
        .await
    }

    pub async fn resume_due(&self, now: Millis, limit: usize) -> Result<Vec<Lane>, StoreError> {
        self.write(move |c| {
            // Due waits for a time: the waitpoints complete in one statement and their runs
            // resume in another, however many they are. A run canceled while it waited stays
            // canceled (the resume's guard).
            let runs: Vec<Option<String>> = c
                .prepare_cached(
                    "UPDATE waitpoints SET status = 'COMPLETED', completed_at = ?1 \
                     WHERE id IN (SELECT id FROM waitpoints WHERE status = 'PENDING' \
                       AND completes_at IS NOT NULL AND completes_at <= ?1 AND kind <> 'MANUAL' \
                       ORDER BY completes_at LIMIT ?2) \
                     RETURNING run_id",
                )?
                .query_map(params![now, limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let runs: Vec<String> = runs.into_iter().flatten().collect();
            let mut lanes = super::lifecycle::resume_many(c, &runs, now)?;
            // Tokens that timed out: each one's error names its own deadline, and its waiters
            // may be several runs.
            let timed_out: Vec<(String, Millis)> = c
                .prepare_cached(
                    "SELECT id, completes_at FROM waitpoints WHERE status = 'PENDING' \
                     AND completes_at IS NOT NULL AND completes_at <= ?1 AND kind = 'MANUAL' \
                     ORDER BY completes_at LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (id, at) in timed_out {
                let error = token_timeout_error(at);
                let resumed =
                    super::lifecycle::finish_token(c, &id, TokenStatus::TimedOut, &error, now)?;
                lanes.extend(resumed.into_iter().flatten());
            }
            Ok(lanes)
        })
        .await
    }
}
