//! Wait tokens (waitpoints of kind `MANUAL`): made by the API or by a run (with the run's journal,
//! so a replay finds the same token), completed once, listed.
//!
//! Completing a token puts the runs that wait for it back in their queues in the same transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use super::journal::commit_journal;
use super::lifecycle::finish_token;
use super::rows::*;
use crate::model::*;
use crate::store::*;

pub(super) const TOKEN_COLUMNS: &str = "id, environment_id, status, idempotency_key, idempotency_expires_at, \
     tags, output, output_is_error, completes_at, created_at, completed_at";

/// The class of the advisory locks on a token idempotency key (the second key is its hash).
const TOKEN_KEY_LOCK: i32 = 0x6b74_6f6b; // "ktok"

pub(super) fn token_from_row(row: &Row) -> Result<WaitToken, StoreError> {
    let status: String = get(row, 2)?;
    let tags: String = get(row, 5)?;
    Ok(WaitToken {
        id: get(row, 0)?,
        environment_id: get(row, 1)?,
        status: match status.as_str() {
            "PENDING" => TokenStatus::Waiting,
            "COMPLETED" => TokenStatus::Completed,
            "TIMED_OUT" => TokenStatus::TimedOut,
            other => return Err(corrupt("token status", other)),
        },
        idempotency_key: get(row, 3)?,
        idempotency_expires_at: get(row, 4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        output: get(row, 6)?,
        output_is_error: flag(row, 7)?,
        timeout_at: get(row, 8)?,
        created_at: get(row, 9)?,
        completed_at: get(row, 10)?,
    })
}

pub(super) async fn load_token(
    c: &impl GenericClient,
    environment_id: &str,
    id: &str,
) -> Result<Option<WaitToken>, StoreError> {
    query_opt(
        c,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM waitpoints \
             WHERE id = $1 AND environment_id = $2 AND kind = 'MANUAL'"
        ),
        &[&id, &environment_id],
    )
    .await?
    .as_ref()
    .map(token_from_row)
    .transpose()
}

/// The stored spelling of a token status.
fn stored_status(status: TokenStatus) -> &'static str {
    match status {
        TokenStatus::Waiting => "PENDING",
        TokenStatus::Completed => "COMPLETED",
        TokenStatus::TimedOut => "TIMED_OUT",
    }
}

impl PostgresStore {
    pub async fn create_token(
        &self,
        new: NewToken,
        journal: Option<JournalWith<(WaitToken, bool)>>,
    ) -> Result<(WaitToken, bool), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let mut found = None;
        if let Some((key, _)) = &new.idempotency {
            // Two creates with one key at once would each find no token and each insert one (the
            // second failing on the key's unique index): the key's lock makes the second wait for
            // the first's commit, and then find its token.
            exec(
                &tx,
                &format!(
                    "SELECT pg_advisory_xact_lock({TOKEN_KEY_LOCK}, \
                       hashtext($1::text || '/' || $2::text))"
                ),
                &[&new.environment_id, key],
            )
            .await?;
            let existing = query_opt(
                &tx,
                "SELECT id, idempotency_expires_at FROM waitpoints \
                 WHERE environment_id = $1 AND idempotency_key = $2",
                &[&new.environment_id, key],
            )
            .await?;
            if let Some(row) = existing {
                let (id, expires): (String, Option<Millis>) = (get(&row, 0)?, get(&row, 1)?);
                if expires.is_none_or(|e| e > new.now) {
                    found = Some(id);
                } else {
                    // An expired key is released for the new token.
                    exec(
                        &tx,
                        "UPDATE waitpoints SET idempotency_key = NULL WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                }
            }
        }
        let (token, cached) = match found {
            Some(id) => (
                load_token(&tx, &new.environment_id, &id)
                    .await?
                    .ok_or(StoreError::NotFound("token"))?,
                true,
            ),
            None => {
                let id = new_id("waitpoint");
                exec(
                    &tx,
                    "INSERT INTO waitpoints (id, environment_id, kind, status, completes_at, \
                       created_at, idempotency_key, idempotency_expires_at, tags) \
                     VALUES ($1, $2, 'MANUAL', 'PENDING', $3, $4, $5, $6, $7)",
                    &[
                        &id,
                        &new.environment_id,
                        &new.timeout_at,
                        &new.now,
                        &new.idempotency.as_ref().map(|(k, _)| k),
                        &new.idempotency.as_ref().map(|(_, e)| e),
                        &serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into()),
                    ],
                )
                .await?;
                (
                    load_token(&tx, &new.environment_id, &id)
                        .await?
                        .ok_or(StoreError::NotFound("token"))?,
                    false,
                )
            }
        };
        let made = (token, cached);
        if let Some(journal) = journal {
            // A run canceled meanwhile gets `Conflict`, and no token is stored.
            commit_journal(&tx, journal, &made, new.now).await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    pub async fn token(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<WaitToken>, StoreError> {
        let c = self.reader().await?;
        load_token(&c, environment_id, id).await
    }

    pub async fn complete_token(
        &self,
        environment_id: Option<String>,
        id: &str,
        output: String,
        now: Millis,
    ) -> Result<Option<Completed>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let env: Option<String> = query_opt(
            &tx,
            "SELECT environment_id FROM waitpoints WHERE id = $1 AND kind = 'MANUAL'",
            &[&id],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()?;
        let Some(env) = env.filter(|e| environment_id.as_ref().is_none_or(|want| want == e)) else {
            return Ok(None);
        };
        // The compare-and-set locks the token's row: a second completion at once waits, then
        // finds it done (`None`); a checkpoint waiting for it is ordered by the same lock.
        let lanes = finish_token(&tx, id, TokenStatus::Completed, &output, now).await?;
        let token = load_token(&tx, &env, id)
            .await?
            .ok_or(StoreError::NotFound("token"))?;
        tx.commit().await?;
        Ok(Some((token, lanes)))
    }

    pub async fn list_tokens(
        &self,
        environment_id: &str,
        filter: TokenFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<WaitToken>, bool), StoreError> {
        let mut sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM waitpoints WHERE environment_id = $1 AND kind = 'MANUAL'"
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(environment_id.to_owned())];
        let mut arg = |v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            format!("${}", args.len())
        };
        if !filter.statuses.is_empty() {
            let statuses: Vec<String> = filter
                .statuses
                .iter()
                .map(|s| stored_status(*s).to_owned())
                .collect();
            let p = arg(Box::new(statuses));
            sql.push_str(&format!(" AND status = ANY({p})"));
        }
        if let Some(key) = filter.idempotency_key {
            let p = arg(Box::new(key));
            sql.push_str(&format!(" AND idempotency_key = {p}"));
        }
        if !filter.tags.is_empty() {
            let p = arg(Box::new(filter.tags));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(waitpoints.tags::jsonb) AS tag \
                 WHERE tag = ANY({p}))"
            ));
        }
        if let Some(from) = filter.created_from {
            let p = arg(Box::new(from));
            sql.push_str(&format!(" AND created_at >= {p}"));
        }
        if let Some(to) = filter.created_to {
            let p = arg(Box::new(to));
            sql.push_str(&format!(" AND created_at <= {p}"));
        }
        let newest_first = before.is_none();
        if let Some(after) = after {
            let p = arg(Box::new(after));
            sql.push_str(&format!(" AND id < {p}"));
        }
        if let Some(before) = before {
            let p = arg(Box::new(before));
            sql.push_str(&format!(" AND id > {p}"));
        }
        let p = arg(Box::new((limit + 1) as i64));
        sql.push_str(&format!(
            " ORDER BY id {} LIMIT {p}",
            if newest_first { "DESC" } else { "ASC" }
        ));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.reader().await?;
        let mut tokens: Vec<WaitToken> = query(&c, &sql, &params)
            .await?
            .iter()
            .map(token_from_row)
            .collect::<Result<_, _>>()?;
        let more = tokens.len() > limit;
        tokens.truncate(limit);
        if !newest_first {
            tokens.reverse();
        }
        Ok((tokens, more))
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
