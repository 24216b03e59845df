//! SQLite persistence: schema, migrations and every query. **The only module that imports rusqlite.**
//!
//! One writer thread owns the write connection and commits in groups: every write request that
//! arrives while a transaction is open joins it (each in its own savepoint, so one failing request
//! does not undo the others), and all of them are answered after the one `COMMIT`. Reads run on
//! their own connections (WAL mode lets them proceed while the writer commits).
//!
//! The store never decides a run's next status: callers pass the status they expect and the one
//! they computed, and writes are compare-and-set (`WHERE id = ? AND status = ?`); zero rows is
//! [`StoreError::Conflict`].

mod children;
mod migrations;
mod queries;
mod queues;
mod schedules;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, watch};

pub use queries::{
    Bootstrapped, EntriesFor, FinishAttempt, Inserted, JournalWith, KeyInfo, NewKey, NewRun,
    ParentLink, RunFilter, RunPage, RunUpdate,
};
pub use queues::{EnvironmentChange, EnvironmentInfo, task_queue_name};
pub use schedules::{DeclaredSchedule, ScheduleFire, ScheduleRefusal, ScheduleSpec};
pub use tokens::TokenFilter;

/// The durability every commit has (see `open_connection`), as benchmarks print it.
pub const DURABILITY: &str = "SQLite WAL, synchronous = FULL";

/// Most write requests joined into one transaction. Bounds the time a request waits for others.
const MAX_GROUP: usize = 512;

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set found the row in another state (or gone).
    #[error("the record changed concurrently; reload it and try again")]
    Conflict,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(
        "the database at {path} has schema version {found}, newer than this kiln understands ({known}); run a newer kiln or use another --data-dir"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "cannot open the database at {path}: {source}; check the path exists, is writable and is not used by another kiln"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store could not run the write (shut down, or a transaction failed to begin; see the host log)"
    )]
    Closed,
    /// The write was refused for a reason the caller passes on; nothing was stored.
    #[error("{0}")]
    Refused(String),
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::UnboundedSender<Job>,
    readers: Arc<ReaderPool>,
    /// Counts committed write groups; watchers re-read what they watch when it moves.
    commits: Arc<watch::Sender<u64>>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Store {
    /// Opens (creating if needed) `kiln.db` in `dir`, runs migrations, and starts the writer.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("kiln.db");
        let conn = open_connection(&path, false)?;
        migrate(&conn, &path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(watch::Sender::new(0));
        thread::Builder::new()
            .name("kiln-store-writer".into())
            .spawn({
                let commits = commits.clone();
                move || writer_loop(conn, rx, &commits)
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            commits,
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `op` inside the next group transaction; resolves after the commit.
    async fn write<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply_tx.send(commit.and(result));
            });
            (ok, reply)
        });
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        reply_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ticks after every committed write group (the value counts them).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Runs `op` on a read connection on the blocking pool.
    async fn read<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some(conn) => conn,
                None => open_connection(&readers.path, true)?,
            };
            let result = op(&conn);
            readers
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    if !read_only {
        // WAL lets readers run beside the writer. `synchronous = FULL` makes every commit durable
        // across power loss; group commit keeps its fsync cost per batch, not per run.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
    }
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let known = migrations::MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (index, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    commits: &watch::Sender<u64>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let replies = match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                let replies: Vec<Reply> = jobs
                    .into_iter()
                    .map(|job| run_in_savepoint(&conn, job))
                    .collect();
                match conn.execute_batch("COMMIT") {
                    Ok(()) => {
                        commits.send_modify(|n| *n += 1);
                        replies.into_iter().map(|r| (r, Ok(()))).collect::<Vec<_>>()
                    }
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        let msg = e.to_string();
                        replies
                            .into_iter()
                            .map(|r| (r, Err(StoreError::Corrupt(format!("commit failed: {msg}")))))
                            .collect()
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "cannot begin a write transaction");
                // The jobs never ran; dropping them answers each caller with `Closed`.
                drop(jobs);
                continue;
            }
        };
        for (reply, commit) in replies {
            reply(commit);
        }
    }
}

fn run_in_savepoint(conn: &Connection, job: Job) -> Reply {
    if let Err(e) = conn.execute_batch("SAVEPOINT job") {
        let msg = e.to_string();
        return Box::new(move |_| tracing::error!(error = %msg, "savepoint failed"));
    }
    let (ok, reply) = job(conn);
    if !ok {
        // Undo this request's partial writes; the others in the group stay.
        let _ = conn.execute_batch("ROLLBACK TO job");
    }
    let _ = conn.execute_batch("RELEASE job");
    reply
}
