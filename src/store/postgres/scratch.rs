//! Scratch databases: a new, empty database on a PostgreSQL server for one measurement
//! (`kiln bench --database`), made through a database of that server the caller names and dropped
//! after. Nothing of kiln's schema is made here; the host that opens the database migrates it.

use tokio_postgres::{Config, NoTls};

use super::shown_url;
use crate::store::StoreError;

/// PostgreSQL's limit on an identifier, in bytes.
const MAX_NAME: usize = 63;

/// Creates `<prefix>_<ulid>` (lower case) through the server of `server_url` (a URL or key=value
/// string naming a database that exists, such as `postgres`) and returns its name. `prefix` is
/// lower-case letters, digits and `_`, so the name needs no quoting.
pub async fn create_scratch_database(server_url: &str, prefix: &str) -> Result<String, StoreError> {
    let name = format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase());
    if !plain_identifier(&name) || !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(StoreError::Refused(format!(
            "a scratch database's prefix is lower-case letters, digits and _ (starting with a \
             letter, {} bytes at most): {prefix:?}",
            MAX_NAME - 27
        )));
    }
    let client = admin(server_url).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| StoreError::OpenDatabase {
            database: shown(server_url),
            reason: format!("cannot create the database {name}: {e}"),
        })?;
    Ok(name)
}

/// Drops the database `name` on the server of `server_url`, closing the connections still on it
/// (best effort: a failure is logged, and a database that is not there is no failure).
pub async fn drop_database(server_url: &str, name: &str) {
    if !plain_identifier(name) {
        tracing::warn!(
            database = name,
            "not dropped: not a scratch database's name"
        );
        return;
    }
    let dropped = async {
        let client = admin(server_url).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        Ok::<_, StoreError>(())
    }
    .await;
    if let Err(e) = dropped {
        tracing::warn!(database = name, error = %e, "a scratch database was not dropped");
    }
}

/// How many runs of the database `url` each host started last, most first (a measurement's
/// check that every host of several took part).
pub async fn runs_by_host(url: &str) -> Result<Vec<u64>, StoreError> {
    let client = admin(url).await?;
    let rows = client
        .query(
            "SELECT count(*) FROM runs WHERE host_id IS NOT NULL \
             GROUP BY host_id ORDER BY count(*) DESC",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, i64>(0).max(0) as u64)
        .collect())
}

/// A connection to the database `server_url` names, its driver running on a task of its own.
async fn admin(server_url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let config: Config = server_url.parse().map_err(|e| StoreError::OpenDatabase {
        database: "the database URL".into(),
        reason: format!("{e}; expected postgres://USER@HOST:PORT/DATABASE"),
    })?;
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::OpenDatabase {
                database: shown_url(&config),
                reason: e.to_string(),
            })?;
    tokio::spawn(connection);
    Ok(client)
}

/// `server_url` without its password, for errors.
fn shown(server_url: &str) -> String {
    server_url
        .parse::<Config>()
        .map_or_else(|_| "the database URL".into(), |c| shown_url(&c))
}

/// Whether `name` is an identifier PostgreSQL takes unquoted and keeps as written.
fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_lower_case_names_are_made_or_dropped() {
        assert!(plain_identifier("kiln_bench_01jz4x6r1m5n8q2w3e4r5t6y7u"));
        for bad in [
            "",
            "Kiln",
            "kiln-bench",
            "1kiln",
            "kiln; DROP",
            "a\"b",
            &"a".repeat(64),
        ] {
            assert!(!plain_identifier(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_scratch_database_is_made_then_dropped() {
        let server = super::super::testing::admin_url();
        let client = admin(&server).await.expect("the test server answers");
        let exists = async |name: &str| {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = $1",
                    &[&name],
                )
                .await
                .expect("pg_database is read");
            row.get::<_, i64>(0) == 1
        };
        let name = create_scratch_database(&server, "kiln_scratch")
            .await
            .expect("a scratch database is made");
        assert!(name.starts_with("kiln_scratch_"), "{name}");
        assert!(exists(&name).await, "{name} was made");
        drop_database(&server, &name).await;
        assert!(!exists(&name).await, "{name} was dropped");
        // Dropping it again is no failure; a prefix that would need quoting is refused.
        drop_database(&server, &name).await;
        let refused = create_scratch_database(&server, "Kiln-Bench").await;
        assert!(
            matches!(refused, Err(StoreError::Refused(_))),
            "{refused:?}"
        );
    }
}
