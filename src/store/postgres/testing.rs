//! Test-only: a database of its own for each test, on the real PostgreSQL server the tests use
//! (`KILN_TEST_POSTGRES`, by default `postgres://postgres@127.0.0.1:5432/postgres`, which must
//! be able to create databases). A test that cannot reach it fails and says what it needs.

use tokio_postgres::NoTls;

use super::PostgresStore;

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

    /// A store on this database (migrated, holding its host lock).
    pub(crate) async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url)
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

    /// A new database is migrated to the newest schema, a second host on it is refused while the
    /// first holds it, and a database from a newer kiln is refused.
    #[tokio::test]
    async fn a_database_is_migrated_locked_to_one_host_and_refused_when_newer() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        let version: i64 = c
            .query_one("SELECT version FROM kiln_schema", &[])
            .await
            .expect("the schema version")
            .get(0);
        assert_eq!(version, super::super::migrations::MIGRATIONS.len() as i64);

        let second = PostgresStore::connect(&db.url).await;
        let Err(e) = second else {
            panic!("a second host on the same database is refused")
        };
        assert!(e.to_string().contains("another kiln host"), "{e}");

        drop(c);
        drop(store);
        // The first host's session closes with its store; then the database takes a new host.
        let mut reopened = None;
        for _ in 0..50 {
            match PostgresStore::connect(&db.url).await {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let reopened = reopened.expect("the database takes a host once the first stopped");
        reopened
            .conn()
            .await
            .expect("a connection")
            .batch_execute("UPDATE kiln_schema SET version = version + 1")
            .await
            .expect("the version is raised");
        drop(reopened);
        let mut refused = None;
        for _ in 0..50 {
            match PostgresStore::connect(&db.url).await {
                Err(e) if e.to_string().contains("another kiln host") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
                Ok(_) => panic!("a database from a newer kiln is refused"),
            }
        }
        let e = refused.expect("the newer database is refused");
        assert!(e.to_string().contains("newer than this kiln"), "{e}");
    }
}
