//! Wait tokens (waitpoints of kind `MANUAL`): made by the API or by a run (with the run's journal,
//! so a replay finds the same token), completed once, listed.
//!
//! Completing a token puts the runs that wait for it back in their queues in the same transaction.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::journal::commit_journal;
use super::lifecycle::finish_token;
use super::rows::exec;
use crate::model::*;
use crate::store::*;

pub(super) const TOKEN_COLUMNS: &str = "id, environment_id, status, idempotency_key, idempotency_expires_at, \
     tags, output, output_is_error, completes_at, created_at, completed_at";

pub(super) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<WaitToken> {
    let status: String = row.get(2)?;
    Ok(WaitToken {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        status: match status.as_str() {
            "PENDING" => TokenStatus::Waiting,
            "COMPLETED" => TokenStatus::Completed,
            "TIMED_OUT" => TokenStatus::TimedOut,
            other => return Err(super::rows::corrupt_col(2, "token status", other)),
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

pub(super) fn load_token(
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

impl SqliteStore {
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
                        exec(
                c,
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
                    exec(
                c,
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

    pub async fn token(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<WaitToken>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| load_token(c, &environment_id, &id))
            .await
    }

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
}
