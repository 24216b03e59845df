//! Checkpoints and what a checkpointed run waits for: a time, a wait token or child runs; the
//! stored journal it replays; and the timer pass that completes due waitpoints.
//!
//! A checkpoint that waits for a token, or for children, races with the token's completion or
//! the children's ends in other transactions; each takes the lock its counterpart takes (the
//! token's waitpoint row, the children's end locks of `lifecycle::lock_ends`) before it writes,
//! so whichever commits second sees the first, and the run is resumed exactly once.

use deadpool_postgres::GenericClient;

use super::PostgresStore;
use super::journal::append_journal;
use super::lifecycle::{FINAL, lock_ends, record_attempt, resume, resume_if_done, resume_many};
use super::rows::*;
use crate::model::*;
use crate::store::*;

/// What a run waits for now: pending waitpoints and children that have not ended.
pub(super) async fn waiting_for_run(
    c: &impl GenericClient,
    run_id: &str,
) -> Result<Vec<WaitingFor>, StoreError> {
    let mut out = Vec::new();
    for r in query(
        c,
        "SELECT id, kind, completes_at FROM waitpoints \
         WHERE status = 'PENDING' AND (run_id = $1 OR id IN \
           (SELECT waitpoint_id FROM waitpoint_waiters WHERE run_id = $1)) \
         ORDER BY id",
        &[&run_id],
    )
    .await?
    {
        let (id, kind, at): (String, String, Option<Millis>) =
            (get(&r, 0)?, get(&r, 1)?, get(&r, 2)?);
        out.push(match (kind.as_str(), at) {
            ("DATETIME", Some(completes_at)) => WaitingFor::DateTime { id, completes_at },
            _ => WaitingFor::Token { id, timeout_at: at },
        });
    }
    for r in query(
        c,
        &format!(
            "SELECT w.child_run_id FROM run_waiters w JOIN runs r ON r.id = w.child_run_id \
             WHERE w.parent_run_id = $1 AND r.status NOT IN {FINAL} ORDER BY w.child_run_id"
        ),
        &[&run_id],
    )
    .await?
    {
        out.push(WaitingFor::Run { id: get(&r, 0)? });
    }
    Ok(out)
}

impl PostgresStore {
    pub async fn checkpoint(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        until: Millis,
    ) -> Result<Staged<()>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let (run_id, attempt, now) = (
            checkpoint.update.run_id.clone(),
            checkpoint.attempt,
            checkpoint.update.now,
        );
        if !record_attempt(&tx, checkpoint).await?.0 {
            append_journal(&tx, &run_id, attempt, journal, now).await?;
            exec(
                &tx,
                "INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, \
                   created_at) \
                 SELECT $1::text, environment_id, id, 'DATETIME', 'PENDING', $2::bigint, $3::bigint \
                 FROM runs WHERE id = $4",
                &[&new_id("waitpoint"), &until, &now, &run_id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Staged {
            value: (),
            durable: Durability::settled(),
        })
    }

    pub async fn checkpoint_on_token(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        token: String,
    ) -> Result<Staged<Option<Lane>>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let (run_id, attempt, now) = (
            checkpoint.update.run_id.clone(),
            checkpoint.attempt,
            checkpoint.update.now,
        );
        // The token's row first (before the run's, the order its completion locks them in): a
        // completion under way commits before this reads the token's status, and one that comes
        // later waits for this commit and then finds the run among the waiters. Unlocked, a
        // completion could commit between this read and this commit, missing the waiter this
        // adds, and the run would wait for a token that is done.
        let status: Option<String> = query_opt(
            &tx,
            "SELECT status FROM waitpoints WHERE id = $1 FOR NO KEY UPDATE",
            &[&token],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        let mut lane = None;
        if !record_attempt(&tx, checkpoint).await?.0 {
            append_journal(&tx, &run_id, attempt, journal, now).await?;
            exec(
                &tx,
                "INSERT INTO waitpoint_waiters (waitpoint_id, run_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&token, &run_id],
            )
            .await?;
            if status.as_deref() != Some("PENDING") {
                lane = resume(&tx, &run_id, now).await?;
            }
        }
        tx.commit().await?;
        Ok(Staged {
            value: lane,
            durable: Durability::settled(),
        })
    }

    pub async fn checkpoint_on_runs(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        children: Vec<String>,
    ) -> Result<Staged<Option<Lane>>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let (run_id, attempt, now) = (
            checkpoint.update.run_id.clone(),
            checkpoint.attempt,
            checkpoint.update.now,
        );
        // The children's end locks before anything is written (see `lifecycle::lock_ends`): a
        // child ending meanwhile either commits before this reads its status, or reads the
        // waiters this adds after this commits. The children's rows are not locked: a queued
        // child stays free to be claimed.
        lock_ends(&tx, &children).await?;
        let mut lane = None;
        if !record_attempt(&tx, checkpoint).await?.0 {
            append_journal(&tx, &run_id, attempt, journal, now).await?;
            exec(
                &tx,
                "INSERT INTO run_waiters (child_run_id, parent_run_id) \
                 SELECT child, $2 FROM unnest($1::text[]) AS child ON CONFLICT DO NOTHING",
                &[&children, &run_id],
            )
            .await?;
            lane = resume_if_done(&tx, &run_id, now).await?;
        }
        tx.commit().await?;
        Ok(Staged {
            value: lane,
            durable: Durability::settled(),
        })
    }

    pub async fn journal(
        &self,
        environment_id: &str,
        run_id: &str,
        attempt: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let c = self.reader().await?;
        if !run_in_env(&c, environment_id, run_id).await? {
            return Ok(Vec::new());
        }
        super::journal::read_journal(&c, run_id, attempt).await
    }

    pub async fn journal_size(&self) -> Result<(u64, u64), StoreError> {
        let c = self.reader().await?;
        let row = query_one(
            &c,
            "SELECT coalesce(sum(length(entries)), 0)::bigint, count(*) FROM journal_segments",
            &[],
        )
        .await?;
        Ok((int(&row, 0)?, int(&row, 1)?))
    }

    pub async fn waiting_for(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<WaitingFor>, StoreError> {
        let c = self.reader().await?;
        if !run_in_env(&c, environment_id, run_id).await? {
            return Ok(Vec::new());
        }
        waiting_for_run(&c, run_id).await
    }

    pub async fn resume_due(&self, now: Millis, limit: usize) -> Result<Vec<Lane>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Due waits for a time: the waitpoints complete in one statement and their runs resume in
        // another, however many they are. A run canceled while it waited stays canceled (the
        // resume's guard). Two hosts' passes at once each take the waitpoints the other does not
        // hold (`SKIP LOCKED`), so each completes once; the pick is a CTE, run once (see
        // `timers`), so at most `limit` complete.
        let runs: Vec<Option<String>> = query(
            &tx,
            "WITH due AS MATERIALIZED (SELECT id FROM waitpoints WHERE status = 'PENDING' \
               AND completes_at IS NOT NULL AND completes_at <= $1 AND kind <> 'MANUAL' \
               ORDER BY completes_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) \
             UPDATE waitpoints SET status = 'COMPLETED', completed_at = $1 FROM due \
             WHERE waitpoints.id = due.id RETURNING run_id",
            &[&now, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
        let mut runs: Vec<String> = runs.into_iter().flatten().collect();
        runs.sort();
        let mut lanes = resume_many(&tx, &runs, now).await?;
        // Tokens that timed out: each one's error names its own deadline, and its waiters may be
        // several runs. Their rows are locked here (a token a checkpoint or a completion holds is
        // left for the next pass), before their waiters'.
        let timed_out: Vec<(String, Millis)> = query(
            &tx,
            "SELECT id, completes_at FROM waitpoints WHERE status = 'PENDING' \
             AND completes_at IS NOT NULL AND completes_at <= $1 AND kind = 'MANUAL' \
             ORDER BY completes_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED",
            &[&now, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
        for (id, at) in timed_out {
            let error = token_timeout_error(at);
            let resumed =
                super::lifecycle::finish_token(&tx, &id, TokenStatus::TimedOut, &error, now)
                    .await?;
            lanes.extend(resumed.into_iter().flatten());
        }
        tx.commit().await?;
        Ok(lanes)
    }
}

#[cfg(test)]
#[path = "waits_tests.rs"]
mod tests;
