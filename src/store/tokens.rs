//! Wait tokens (waitpoints of kind `MANUAL`), the runs waiting for them, and host secrets.
//!
//! A token is created (by the API, or by a run together with the run's journal so a replay finds
//! the same token), completed once (later completions change nothing), or times out by the timer.
//! Completing or timing out puts the runs that wait for it back in their queues in the same
//! transaction.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries::{JournalWith, commit_journal, lane_from_row, record_attempt};
use super::{FinishAttempt, Store, StoreError};
use crate::model::{Lane, Millis, NewToken, TokenStatus, WaitToken, new_id};

const TOKEN_COLUMNS: &str = "id, environment_id, status, idempotency_key, idempotency_expires_at, \
     tags, output, output_is_error, completes_at, created_at, completed_at";

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<WaitToken> {
    let status: String = row.get(2)?;
    Ok(WaitToken {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        status: match status.as_str() {
            "PENDING" => TokenStatus::Waiting,
            "COMPLETED" => TokenStatus::Completed,
            "TIMED_OUT" => TokenStatus::TimedOut,
            other => return Err(super::queries::corrupt_col(2, "token status", other)),
        },
        idempotency_key: row.get(3)?,
        idempotency_expires_at: row.get(4)?,
        tags: serde_json::from_str(&row.get::<_, String>(5)?).unwrap_or_default(),
        output: row.get(6)?,
        output_is_error: row.get(7)?,
        timeout_at: row.get(8)?,
        created_at: row.get(9)?,
        completed_at: row.get(10)?,
    })
}

fn load_token(
    c: &Connection,
    environment_id: &str,
    id: &str,
) -> Result<Option<WaitToken>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM waitpoints \
             WHERE id = ?1 AND environment_id = ?2 AND kind = 'MANUAL'"
    ))?
    .query_row(params![id, environment_id], token_from_row)
    .optional()?)
}

/// Puts the WAITING runs that wait for `waitpoint` back in their queues; returns their lanes.
fn resume_waiters(c: &Connection, waitpoint: &str, now: Millis) -> Result<Vec<Lane>, StoreError> {
    Ok(c.prepare_cached(
        "UPDATE runs SET status = 'QUEUED', available_at = ?2, backoff = 0, updated_at = ?2 \
             WHERE status = 'WAITING' \
               AND id IN (SELECT run_id FROM waitpoint_waiters WHERE waitpoint_id = ?1) \
             RETURNING environment_id, queue, concurrency_key",
    )?
    .query_map(params![waitpoint, now], lane_from_row)?
    .collect::<Result<_, _>>()?)
}

/// Completes a token still waiting (data, or the timeout error) and resumes its waiters. `None`
/// if it was already done: a token completes once.
pub(super) fn finish_token(
    c: &Connection,
    id: &str,
    status: TokenStatus,
    output: &str,
    now: Millis,
) -> Result<Option<Vec<Lane>>, StoreError> {
    let changed = c
        .prepare_cached(
            "UPDATE waitpoints SET status = ?2, output = ?3, output_is_error = ?4, completed_at = ?5 \
             WHERE id = ?1 AND kind = 'MANUAL' AND status = 'PENDING'",
        )?
        .execute(params![
            id,
            match status {
                TokenStatus::TimedOut => "TIMED_OUT",
                _ => "COMPLETED",
            },
            output,
            status == TokenStatus::TimedOut,
            now
        ])?;
    if changed == 0 {
        return Ok(None);
    }
    resume_waiters(c, id, now).map(Some)
}

/// A completion: the token as it is now, and the lanes of the runs it resumed (`None` when the
/// token was already done).
pub type Completed = (WaitToken, Option<Vec<Lane>>);

/// Filters of the tokens list; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub statuses: Vec<TokenStatus>,
    pub idempotency_key: Option<String>,
    /// Tokens carrying any of these tags.
    pub tags: Vec<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
}

impl Store {
    /// Creates a wait token, or returns the live token with the same idempotency key (`true`).
    /// With `journal`, the run's journal is appended in the same transaction and the run marked
    /// as having one, so a replay — even after a crash — returns this token and makes no other.
    pub async fn create_token(
        &self,
        new: NewToken,
        journal: Option<JournalWith<(WaitToken, bool)>>,
    ) -> Result<(WaitToken, bool), StoreError> {
        self.write(move |c| {
            let mut found = None;
            if let Some((key, _)) = &new.idempotency {
                let existing: Option<(String, Option<Millis>)> = c
                    .query_row(
                        "SELECT id, idempotency_expires_at FROM waitpoints \
                         WHERE environment_id = ?1 AND idempotency_key = ?2",
                        params![new.environment_id, key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match existing {
                    Some((id, expires)) if expires.is_none_or(|e| e > new.now) => found = Some(id),
                    // An expired key is released for the new token.
                    Some((id, _)) => {
                        c.execute(
                            "UPDATE waitpoints SET idempotency_key = NULL WHERE id = ?1",
                            [id],
                        )?;
                    }
                    None => {}
                }
            }
            let (token, cached) = match found {
                Some(id) => (
                    load_token(c, &new.environment_id, &id)?.ok_or(StoreError::NotFound("token"))?,
                    true,
                ),
                None => {
                    let id = new_id("waitpoint");
                    c.execute(
                        "INSERT INTO waitpoints (id, environment_id, kind, status, completes_at, created_at, \
                           idempotency_key, idempotency_expires_at, tags) \
                         VALUES (?1, ?2, 'MANUAL', 'PENDING', ?3, ?4, ?5, ?6, ?7)",
                        params![
                            id,
                            new.environment_id,
                            new.timeout_at,
                            new.now,
                            new.idempotency.as_ref().map(|(k, _)| k),
                            new.idempotency.as_ref().map(|(_, e)| e),
                            serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into()),
                        ],
                    )?;
                    (
                        load_token(c, &new.environment_id, &id)?
                            .ok_or(StoreError::NotFound("token"))?,
                        false,
                    )
                }
            };
            let made = (token, cached);
            if let Some(journal) = journal {
                // A run canceled meanwhile gets `Conflict`, and no token is stored.
                commit_journal(c, journal, &made, new.now)?;
            }
            Ok(made)
        })
        .await
    }

    /// A token of the environment.
    pub async fn token(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<WaitToken>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| load_token(c, &environment_id, &id))
            .await
    }

    /// Completes a waiting token with `output` (JSON text) and resumes the runs waiting for it.
    /// `None` if the environment has no such token; `Some(None)` if it was already done.
    pub async fn complete_token(
        &self,
        environment_id: Option<String>,
        id: &str,
        output: String,
        now: Millis,
    ) -> Result<Option<Completed>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            let env: Option<String> = c
                .query_row(
                    "SELECT environment_id FROM waitpoints WHERE id = ?1 AND kind = 'MANUAL'",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(env) = env.filter(|e| environment_id.as_ref().is_none_or(|want| want == e))
            else {
                return Ok(None);
            };
            let lanes = finish_token(c, &id, TokenStatus::Completed, &output, now)?;
            let token = load_token(c, &env, &id)?.ok_or(StoreError::NotFound("token"))?;
            Ok(Some((token, lanes)))
        })
        .await
    }

    /// One page of the environment's tokens, newest first: at most `limit` after (older than) or
    /// before (newer than) a cursor id.
    pub async fn list_tokens(
        &self,
        environment_id: &str,
        filter: TokenFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<WaitToken>, bool), StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM waitpoints WHERE environment_id = ?1 AND kind = 'MANUAL'"
            );
            let mut args: Vec<rusqlite::types::Value> = vec![environment_id.into()];
            let arg = |v: rusqlite::types::Value, args: &mut Vec<rusqlite::types::Value>| {
                args.push(v);
                format!("?{}", args.len())
            };
            if !filter.statuses.is_empty() {
                let list: Vec<String> = filter
                    .statuses
                    .iter()
                    .map(|s| {
                        let db = match s {
                            TokenStatus::Waiting => "PENDING",
                            TokenStatus::Completed => "COMPLETED",
                            TokenStatus::TimedOut => "TIMED_OUT",
                        };
                        arg(db.to_owned().into(), &mut args)
                    })
                    .collect();
                sql.push_str(&format!(" AND status IN ({})", list.join(", ")));
            }
            if let Some(key) = filter.idempotency_key {
                let p = arg(key.into(), &mut args);
                sql.push_str(&format!(" AND idempotency_key = {p}"));
            }
            if !filter.tags.is_empty() {
                let list: Vec<String> = filter
                    .tags
                    .into_iter()
                    .map(|t| arg(t.into(), &mut args))
                    .collect();
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(waitpoints.tags) WHERE value IN ({}))",
                    list.join(", ")
                ));
            }
            if let Some(from) = filter.created_from {
                let p = arg(from.into(), &mut args);
                sql.push_str(&format!(" AND created_at >= {p}"));
            }
            if let Some(to) = filter.created_to {
                let p = arg(to.into(), &mut args);
                sql.push_str(&format!(" AND created_at <= {p}"));
            }
            let newest_first = before.is_none();
            if let Some(after) = after {
                let p = arg(after.into(), &mut args);
                sql.push_str(&format!(" AND id < {p}"));
            }
            if let Some(before) = before {
                let p = arg(before.into(), &mut args);
                sql.push_str(&format!(" AND id > {p}"));
            }
            let p = arg(((limit + 1) as i64).into(), &mut args);
            sql.push_str(&format!(
                " ORDER BY id {} LIMIT {p}",
                if newest_first { "DESC" } else { "ASC" }
            ));
            let mut tokens: Vec<WaitToken> = c
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), token_from_row)?
                .collect::<Result<_, _>>()?;
            let more = tokens.len() > limit;
            tokens.truncate(limit);
            if !newest_first {
                tokens.reverse();
            }
            Ok((tokens, more))
        })
        .await
    }

    /// Checkpoints an executing attempt that waits for token `token` (as [`Store::checkpoint`]
    /// does for a time). If the token was done by the time this commits, the run goes straight
    /// back to its queue: returns its lane.
    pub async fn checkpoint_on_token(
        &self,
        checkpoint: FinishAttempt,
        journal: Vec<u8>,
        token: String,
    ) -> Result<Option<Lane>, StoreError> {
        self.write(move |c| {
            let (run_id, attempt, now) = (
                checkpoint.update.run_id.clone(),
                checkpoint.attempt,
                checkpoint.update.now,
            );
            if record_attempt(c, checkpoint)?.0 {
                return Ok(None);
            }
            append_journal(c, &run_id, attempt, journal, now)?;
            c.execute(
                "INSERT OR IGNORE INTO waitpoint_waiters (waitpoint_id, run_id) VALUES (?1, ?2)",
                params![token, run_id],
            )?;
            let pending = c
                .prepare_cached("SELECT 1 FROM waitpoints WHERE id = ?1 AND status = 'PENDING'")?
                .exists([&token])?;
            if pending {
                return Ok(None);
            }
            super::children::resume(c, &run_id, now)
        })
        .await
    }

    /// A host-wide secret by name, made (32 random bytes) the first time it is asked for.
    pub async fn host_secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            let fresh: [u8; 32] = rand::random();
            c.execute(
                "INSERT OR IGNORE INTO host_secrets (name, value) VALUES (?1, ?2)",
                params![name, fresh.to_vec()],
            )?;
            Ok(c.query_row(
                "SELECT value FROM host_secrets WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

/// Appends a segment to an attempt's journal.
pub(super) fn append_journal(
    c: &Connection,
    run_id: &str,
    attempt: u32,
    entries: Vec<u8>,
    now: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO journal_segments (run_id, attempt, segment, entries, created_at) \
         SELECT ?1, ?2, coalesce(max(segment) + 1, 0), ?3, ?4 FROM journal_segments \
         WHERE run_id = ?1 AND attempt = ?2",
    )?
    .execute(params![run_id, attempt, entries, now])?;
    Ok(())
}
