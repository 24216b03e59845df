//! Each run's copy of its environment's variables: taken when its first attempt starts, read on
//! every start, dropped when the run ends. A leaf; values stay sealed.

use rusqlite::Connection;

use crate::secrets::Sealed;
use crate::store::*;

/// Copies the environment's variables as the run's own (its first attempt starts).
pub(super) fn snapshot_run_env(c: &Connection, run_id: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO run_env_vars (run_id, environment_id, name, nonce, value) \
         SELECT ?1, environment_id, name, nonce, value FROM env_vars \
         WHERE environment_id = (SELECT environment_id FROM runs WHERE id = ?1)",
    )?
    .execute([run_id])?;
    Ok(())
}

/// The run's copy of its environment's variables (secret or not: a run sees every value).
pub(super) fn run_env(c: &Connection, run_id: &str) -> Result<Vec<StoredVar>, StoreError> {
    c.prepare_cached(
        "SELECT environment_id, name, nonce, value, 0 FROM run_env_vars WHERE run_id = ?1 ORDER BY name",
    )?
    .query_map([run_id], var_from_row)?
    .collect::<Result<_, _>>()
    .map_err(StoreError::from)
}

/// The run ended: its copy goes.
pub(super) fn forget_run_env(c: &Connection, run_id: &str) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM run_env_vars WHERE run_id = ?1")?
        .execute([run_id])?;
    Ok(())
}

pub(super) fn var_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVar> {
    Ok(StoredVar {
        environment_id: row.get(0)?,
        name: row.get(1)?,
        sealed: Sealed {
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
        },
        is_secret: row.get(4)?,
    })
}
