//! Test-only: a database of its own for each test, on the real PostgreSQL server the tests use
//! (`KILN_TEST_POSTGRES`, by default `postgres://postgres@127.0.0.1:5432/postgres`, which must
//! be able to create databases). A test that cannot reach it fails and says what it needs.

use tokio_postgres::NoTls;

use std::time::Duration;

use super::PostgresStore;
use crate::store::SharedHost;

/// What a test host shares the database as: environments unlimited unless a test sets one.
pub(crate) fn shared_host(name: &str, lease: Duration) -> SharedHost {
    SharedHost {
        name: name.to_owned(),
        lease,
        default_environment_limit: 1_000,
    }
}

/// The server's maintenance database, from which test databases are made and dropped.
pub(crate) fn admin_url() -> String {
    std::env::var("KILN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A new, empty database, dropped when this is.
pub(crate) struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub(crate) async fn create() -> TestDatabase {
        let admin = admin_url();
        let (client, connection) =
            tokio_postgres::connect(&admin, NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "the PostgreSQL tests need a server at {admin} that can create databases \
                     (set KILN_TEST_POSTGRES to another): {e}"
                    )
                });
        tokio::spawn(connection);
        let name = format!("kiln_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("a test database is created");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// A store on this database (migrated, holding a lease for a host of its own).
    pub(crate) async fn store(&self) -> PostgresStore {
        self.host(
            &format!("test-{}", ulid::Ulid::new()),
            Duration::from_secs(15),
        )
        .await
    }

    /// A store for the host `name` with leases of `lease`.
    pub(crate) async fn host(&self, name: &str, lease: Duration) -> PostgresStore {
        PostgresStore::connect(&self.url, shared_host(name, lease))
            .await
            .expect("the store connects")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url(), NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database is migrated to the newest schema once, however many hosts share it, and
    /// a database from a newer kiln is refused.
    #[tokio::test]
    async fn hosts_share_a_migrated_database_and_a_newer_one_is_refused() {
        let db = TestDatabase::create().await;
        let (first, second) = tokio::join!(db.store(), db.store());
        let c = first.conn().await.expect("a connection");
        let version: i64 = c
            .query_one("SELECT version FROM kiln_schema", &[])
            .await
            .expect("the schema version")
            .get(0);
        assert_eq!(version, super::super::migrations::MIGRATIONS.len() as i64);
        let hosts: i64 = c
            .query_one("SELECT count(*) FROM hosts", &[])
            .await
            .expect("the hosts")
            .get(0);
        assert_eq!(hosts, 2, "each host holds a lease");
        assert_ne!(first.host_id(), second.host_id());

        c.batch_execute("UPDATE kiln_schema SET version = version + 1")
            .await
            .expect("the version is raised");
        let Err(e) =
            PostgresStore::connect(&db.url, shared_host("newer", Duration::from_secs(15))).await
        else {
            panic!("a database from a newer kiln is refused")
        };
        assert!(e.to_string().contains("newer than this kiln"), "{e}");
    }
}
