//! Row mappers and column lists shared by the SQLite queries: a leaf every feature module uses.
//!
//! The spelling of stored values lives in `model`'s `as_str`/`parse` pairs; a value the model does
//! not know is reported as corrupt data, never guessed.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::json;

use crate::model::*;
use crate::store::StoreError;

pub(super) const RUN_COLUMNS: &str = "r.id, r.environment_id, r.task_id, r.status, r.payload, r.output, r.error, \
     r.deployment_id, d.version, r.queue, r.machine, r.max_attempts, r.retry_factor, r.retry_min_ms, \
     r.retry_max_ms, r.retry_randomize, r.attempt_count, r.queue_ts, r.available_at, r.created_at, \
     r.updated_at, r.started_at, r.finished_at, r.fuel_used, r.compute_ms, e.slug, r.priority_ms, \
     r.delay_until, r.ttl_ms, r.expires_at, r.expired_at, r.idempotency_key, r.tags, r.metadata, \
     r.max_duration_ms, r.concurrency_key, r.lock_to_version, r.batch_id, r.oom_machine, r.seed, \
     r.checkpointed, r.parent_run_id, r.root_run_id, r.depth, r.idempotency_key_user, \
     r.idempotency_key_scope";

pub(super) const RUN_FROM: &str = "runs r JOIN environments e ON e.id = r.environment_id \
     LEFT JOIN deployments d ON d.id = r.deployment_id";

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

/// An attempt from `run_id, number, status, deployment_id, started_at, finished_at, error,
/// fuel_used, compute_ms`.
pub(super) const ATTEMPT_COLUMNS: &str =
    "run_id, number, status, deployment_id, started_at, finished_at, error, fuel_used, compute_ms";

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

pub(super) fn ms_duration(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn corrupt_col(index: usize, name: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("unknown {name} {value:?}").into(),
    )
}

pub(super) fn encode_error(e: &RunError) -> String {
    json!({ "code": e.code, "name": e.name, "message": e.message, "stack": e.stack }).to_string()
}

pub(super) fn decode_error(text: &str) -> RunError {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    RunError {
        code: s("code"),
        name: s("name").unwrap_or_else(|| "Error".into()),
        message: s("message").unwrap_or_default(),
        stack: s("stack"),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An environment's stored allow-list.
pub(super) fn outbound_hosts(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
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
