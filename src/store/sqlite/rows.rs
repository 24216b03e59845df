//! Row mappers and column lists shared by the SQLite queries: a leaf every feature module uses.
//!
//! The spelling of stored values lives in `model`'s `as_str`/`parse` pairs; a value the model does
//! not know is reported as corrupt data, never guessed.

use crate::model::*;
use crate::store::StoreError;
pub(super) use crate::store::codec::{
    ATTEMPT_COLUMNS, RUN_COLUMNS, RUN_FROM, decode_error, duration_ms, encode_error, hex,
    ms_duration, outbound_hosts,
};
use rusqlite::{Connection, OptionalExtension, Row};

/// Whether the environment has this run: every read or write of a run's parts checks it first.
pub(super) fn run_in_env(
    c: &Connection,
    environment_id: &str,
    run_id: &str,
) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND environment_id = ?2")?
            .exists(rusqlite::params![run_id, environment_id])?,
    )
}

pub(super) fn load_run(c: &Connection, id: &str) -> Result<Option<Run>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ?1"
    ))?
    .query_row([id], run_from_row)
    .optional()?)
}

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let status: String = row.get(3)?;
    let machine: String = row.get(10)?;
    let error: Option<String> = row.get(6)?;
    Ok(Run {
        id: row.get(0)?,
        environment_id: row.get(1)?,
        task_id: row.get(2)?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt_col(3, "status", &status))?,
        payload: row.get(4)?,
        output: row.get(5)?,
        error: error.as_deref().map(decode_error),
        deployment_id: row.get(7)?,
        version: row.get(8)?,
        queue: row.get(9)?,
        machine: Machine::parse(&machine).ok_or_else(|| corrupt_col(10, "machine", &machine))?,
        retry: RetryPolicy {
            max_attempts: row.get(11)?,
            factor: row.get(12)?,
            min_timeout_ms: row.get(13)?,
            max_timeout_ms: row.get(14)?,
            randomize: row.get(15)?,
        },
        attempt_count: row.get(16)?,
        queue_timestamp: row.get(17)?,
        available_at: row.get(18)?,
        created_at: row.get(19)?,
        updated_at: row.get(20)?,
        started_at: row.get(21)?,
        finished_at: row.get(22)?,
        fuel_used: row.get::<_, i64>(23)? as u64,
        compute_ms: row.get::<_, i64>(24)? as u64,
        environment_slug: row.get(25)?,
        priority_ms: row.get(26)?,
        delay_until: row.get(27)?,
        ttl: row.get::<_, Option<i64>>(28)?.map(ms_duration),
        expires_at: row.get(29)?,
        expired_at: row.get(30)?,
        idempotency_key: row.get(31)?,
        tags: serde_json::from_str(&row.get::<_, String>(32)?).unwrap_or_default(),
        metadata: row.get(33)?,
        max_duration: row.get::<_, Option<i64>>(34)?.map(ms_duration),
        concurrency_key: row.get(35)?,
        lock_to_version: row.get(36)?,
        batch_id: row.get(37)?,
        oom_machine: {
            let m: Option<String> = row.get(38)?;
            m.map(|m| Machine::parse(&m).ok_or_else(|| corrupt_col(38, "machine", &m)))
                .transpose()?
        },
        seed: row.get::<_, i64>(39)? as u64,
        checkpointed: row.get(40)?,
        parent_run_id: row.get(41)?,
        root_run_id: row.get(42)?,
        depth: row.get(43)?,
        idempotency_key_options: {
            let key: Option<String> = row.get(44)?;
            let scope: Option<String> = row.get(45)?;
            match (key, scope) {
                (Some(key), Some(scope)) => Some(IdempotencyKeyOptions {
                    scope: IdempotencyScope::parse(&scope)
                        .ok_or_else(|| corrupt_col(45, "idempotency scope", &scope))?,
                    key,
                }),
                _ => None,
            }
        },
    })
}

pub(super) fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
    let status: String = r.get(2)?;
    let error: Option<String> = r.get(6)?;
    Ok(Attempt {
        run_id: r.get(0)?,
        number: r.get(1)?,
        status: AttemptStatus::parse(&status)
            .ok_or_else(|| corrupt_col(2, "attempt status", &status))?,
        deployment_id: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        error: error.as_deref().map(decode_error),
        fuel_used: r.get::<_, i64>(7)? as u64,
        compute_ms: r.get::<_, i64>(8)? as u64,
    })
}

pub(super) fn lane_from_row(row: &Row<'_>) -> rusqlite::Result<Lane> {
    Ok(Lane {
        environment_id: row.get(0)?,
        queue: row.get(1)?,
        concurrency_key: row.get(2)?,
    })
}

pub(super) fn corrupt_col(index: usize, name: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("unknown {name} {value:?}").into(),
    )
}

/// Runs a statement from the connection's statement cache (every query is prepared once).
pub(super) fn exec<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// Reads one row with a cached statement.
pub(super) fn query_one<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}
