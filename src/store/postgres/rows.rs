//! Leaf: the PostgreSQL queries' shared parts — cached statements, typed column reads, and the
//! row mappers of runs, attempts and lanes (their column lists are `store::codec`'s, the same
//! text as SQLite's).
//!
//! Every integer column is a `BIGINT` (see `migrations`): values are bound as `i64` and read
//! back through [`int`], so a stored value the model's type cannot hold is reported as corrupt
//! data, never wrapped.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use crate::model::*;
use crate::store::StoreError;
pub(super) use crate::store::codec::{
    ATTEMPT_COLUMNS, RUN_COLUMNS, RUN_FROM, decode_error, duration_ms, encode_error, hex,
    ms_duration, outbound_hosts,
};

/// Statement parameters.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Runs a statement from the connection's statement cache; returns how many rows it changed.
pub(super) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// Takes the transaction's advisory locks of class `class` on `names` (each by its hash), in one
/// order — sorted by key, duplicates once — so two transactions locking overlapping sets cannot
/// deadlock on each other.
pub(super) async fn lock_sorted(
    c: &impl GenericClient,
    class: i32,
    names: &[&str],
) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    exec(
        c,
        &format!(
            "SELECT pg_advisory_xact_lock({class}, key) FROM \
             (SELECT DISTINCT hashtext(name) AS key FROM unnest($1::text[]) AS name ORDER BY key) keys"
        ),
        &[&names],
    )
    .await?;
    Ok(())
}

/// Every row a cached statement returns.
pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// The row a cached statement returns, if it returns one.
pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// The one row a cached statement returns (an error if it returns none).
pub(super) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

/// Column `i` of `row`, as `T`.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

/// Integer column `i` of `row`, as the model's type `T`.
pub(super) fn int<T: TryFrom<i64>>(row: &Row, i: usize) -> Result<T, StoreError> {
    let value: i64 = get(row, i)?;
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {i}: {value} is out of range")))
}

/// Nullable integer column `i` of `row`, as the model's type `T`.
pub(super) fn opt_int<T: TryFrom<i64>>(row: &Row, i: usize) -> Result<Option<T>, StoreError> {
    get::<Option<i64>>(row, i)?
        .map(|value| {
            T::try_from(value)
                .map_err(|_| StoreError::Corrupt(format!("column {i}: {value} is out of range")))
        })
        .transpose()
}

/// Flag column `i` of `row` (`0` or `1`).
pub(super) fn flag(row: &Row, i: usize) -> Result<bool, StoreError> {
    Ok(get::<i64>(row, i)? != 0)
}

/// An unknown stored value, reported as corrupt data.
pub(super) fn corrupt(name: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {name} {value:?}"))
}

/// Whether the environment has this run: every read or write of a run's parts checks it first.
pub(super) async fn run_in_env(
    c: &impl GenericClient,
    environment_id: &str,
    run_id: &str,
) -> Result<bool, StoreError> {
    Ok(query_opt(
        c,
        "SELECT 1 FROM runs WHERE id = $1 AND environment_id = $2",
        &[&run_id, &environment_id],
    )
    .await?
    .is_some())
}

pub(super) async fn load_run(c: &impl GenericClient, id: &str) -> Result<Option<Run>, StoreError> {
    query_opt(
        c,
        &format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(run_from_row)
    .transpose()
}

pub(super) fn run_from_row(row: &Row) -> Result<Run, StoreError> {
    let status: String = get(row, 3)?;
    let machine: String = get(row, 10)?;
    let error: Option<String> = get(row, 6)?;
    let tags: String = get(row, 32)?;
    Ok(Run {
        id: get(row, 0)?,
        environment_id: get(row, 1)?,
        task_id: get(row, 2)?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        payload: get(row, 4)?,
        output: get(row, 5)?,
        error: error.as_deref().map(decode_error),
        deployment_id: get(row, 7)?,
        version: get(row, 8)?,
        queue: get(row, 9)?,
        machine: Machine::parse(&machine).ok_or_else(|| corrupt("machine", &machine))?,
        retry: RetryPolicy {
            max_attempts: int(row, 11)?,
            factor: get(row, 12)?,
            min_timeout_ms: int(row, 13)?,
            max_timeout_ms: int(row, 14)?,
            randomize: flag(row, 15)?,
        },
        attempt_count: int(row, 16)?,
        queue_timestamp: get(row, 17)?,
        available_at: get(row, 18)?,
        created_at: get(row, 19)?,
        updated_at: get(row, 20)?,
        started_at: get(row, 21)?,
        finished_at: get(row, 22)?,
        fuel_used: int(row, 23)?,
        compute_ms: int(row, 24)?,
        environment_slug: get(row, 25)?,
        priority_ms: get(row, 26)?,
        delay_until: get(row, 27)?,
        ttl: get::<Option<i64>>(row, 28)?.map(ms_duration),
        expires_at: get(row, 29)?,
        expired_at: get(row, 30)?,
        idempotency_key: get(row, 31)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        metadata: get(row, 33)?,
        max_duration: get::<Option<i64>>(row, 34)?.map(ms_duration),
        concurrency_key: get(row, 35)?,
        lock_to_version: get(row, 36)?,
        batch_id: get(row, 37)?,
        oom_machine: get::<Option<String>>(row, 38)?
            .map(|m| Machine::parse(&m).ok_or_else(|| corrupt("machine", &m)))
            .transpose()?,
        // The seed is any 64-bit value, stored as its bit pattern.
        seed: get::<i64>(row, 39)? as u64,
        checkpointed: flag(row, 40)?,
        parent_run_id: get(row, 41)?,
        root_run_id: get(row, 42)?,
        depth: int(row, 43)?,
        idempotency_key_options: {
            let key: Option<String> = get(row, 44)?;
            let scope: Option<String> = get(row, 45)?;
            match (key, scope) {
                (Some(key), Some(scope)) => Some(IdempotencyKeyOptions {
                    scope: IdempotencyScope::parse(&scope)
                        .ok_or_else(|| corrupt("idempotency scope", &scope))?,
                    key,
                }),
                _ => None,
            }
        },
    })
}

pub(super) fn attempt_from_row(r: &Row) -> Result<Attempt, StoreError> {
    let status: String = get(r, 2)?;
    let error: Option<String> = get(r, 6)?;
    Ok(Attempt {
        run_id: get(r, 0)?,
        number: int(r, 1)?,
        status: AttemptStatus::parse(&status).ok_or_else(|| corrupt("attempt status", &status))?,
        deployment_id: get(r, 3)?,
        started_at: get(r, 4)?,
        finished_at: get(r, 5)?,
        error: error.as_deref().map(decode_error),
        fuel_used: int(r, 7)?,
        compute_ms: int(r, 8)?,
    })
}

pub(super) fn lane_from_row(row: &Row) -> Result<Lane, StoreError> {
    Ok(Lane {
        environment_id: get(row, 0)?,
        queue: get(row, 1)?,
        concurrency_key: get(row, 2)?,
    })
}
