//! Each run's copy of its environment's variables: taken when its first attempt starts, read on
//! every start, dropped when the run ends. A leaf; values stay sealed.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::rows::{exec, flag, get, query};
use crate::secrets::Sealed;
use crate::store::*;

/// Copies the environment's variables as the run's own (its first attempt starts). A copy taken
/// already (two starts racing, which the claim's row lock rules out) is kept as it is.
pub(super) async fn snapshot_run_env(
    c: &impl GenericClient,
    run_id: &str,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO run_env_vars (run_id, environment_id, name, nonce, value) \
         SELECT $1::text, environment_id, name, nonce, value FROM env_vars \
         WHERE environment_id = (SELECT environment_id FROM runs WHERE id = $1::text) \
         ON CONFLICT DO NOTHING",
        &[&run_id],
    )
    .await?;
    Ok(())
}

/// The run's copy of its environment's variables (secret or not: a run sees every value).
pub(super) async fn run_env(
    c: &impl GenericClient,
    run_id: &str,
) -> Result<Vec<StoredVar>, StoreError> {
    query(
        c,
        "SELECT environment_id, name, nonce, value, 0::bigint FROM run_env_vars \
         WHERE run_id = $1 ORDER BY name",
        &[&run_id],
    )
    .await?
    .iter()
    .map(var_from_row)
    .collect()
}

/// The run ended: its copy goes.
pub(super) async fn forget_run_env(c: &impl GenericClient, run_id: &str) -> Result<(), StoreError> {
    exec(c, "DELETE FROM run_env_vars WHERE run_id = $1", &[&run_id]).await?;
    Ok(())
}

/// A variable from `environment_id, name, nonce, value, is_secret` (the flag a `BIGINT`).
pub(super) fn var_from_row(row: &Row) -> Result<StoredVar, StoreError> {
    Ok(StoredVar {
        environment_id: get(row, 0)?,
        name: get(row, 1)?,
        sealed: Sealed {
            nonce: get(row, 2)?,
            ciphertext: get(row, 3)?,
        },
        is_secret: flag(row, 4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::run_fixtures::*;
    use super::super::testing::TestDatabase;
    use super::*;

    #[tokio::test]
    async fn a_run_keeps_the_copy_taken_at_its_start_until_it_ends() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        insert_run(&c, "r1", "a", "EXECUTING").await;
        c.batch_execute(
            "INSERT INTO env_vars (environment_id, name, nonce, value, created_at, updated_at, is_secret) \
             VALUES ('e', 'B', '\\x01', '\\x02', 0, 0, 1), ('e', 'A', '\\x03', '\\x04', 0, 0, 0)",
        )
        .await
        .expect("variables");
        snapshot_run_env(&c, "r1").await.expect("a snapshot");
        // Taken twice, the copy is kept (the second changes nothing).
        snapshot_run_env(&c, "r1").await.expect("a second snapshot");
        c.batch_execute("UPDATE env_vars SET value = '\\x09' WHERE name = 'A'")
            .await
            .expect("a change after the start");
        let vars = run_env(&c, "r1").await.expect("the copy");
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(vars[0].sealed.ciphertext, vec![4], "the value at the start");
        assert_eq!(vars[1].sealed.nonce, vec![1]);
        assert!(vars.iter().all(|v| !v.is_secret && v.environment_id == "e"));

        forget_run_env(&c, "r1").await.expect("forgotten");
        assert!(run_env(&c, "r1").await.expect("the copy").is_empty());
    }
}
