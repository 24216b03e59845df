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
mod env_vars;
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

pub use env_vars::StoredVar;
pub use queries::{
    AttemptStart, Bootstrapped, EntriesFor, FinishAttempt, Inserted, JournalWith, KeyInfo, NewKey,
    NewRun, ParentLink, RunFilter, RunPage, RunUpdate,
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
        "cannot open the database at {path}: {source}; check the path exists, is writable and is not held by another process (another kiln, or a tool with it open)"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The database could not be written: the disk is full or failing. Nothing of the write was
    /// stored; the same write succeeds once space returns.
    #[error(
        "kiln could not write its database ({0}); the disk holding the data dir is probably full: free space there and try again (nothing of this request was stored)"
    )]
    Storage(String),
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match e.sqlite_error_code() {
            Some(DiskFull | SystemIoFailure) => StoreError::Storage(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether the write failed for want of space (or a failing disk), so it may work later.
    pub fn is_storage(&self) -> bool {
        matches!(self, StoreError::Storage(_))
    }
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
        let with_path = |e| match e {
            StoreError::Sqlite(source) => StoreError::Open {
                path: path.clone(),
                source,
            },
            other => other,
        };
        migrate(&conn, &path).map_err(with_path)?;
        // Take the write lock once now: a database another process holds locked stops the start
        // with its path, instead of failing the first write.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT")
            .map_err(|e| with_path(StoreError::Sqlite(e)))?;
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
        // A database from a newer kiln is refused before anything (even the journal mode in its
        // header) is written to it.
        refuse_newer_schema(&conn, path)?;
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

/// The schema version of the database; `NewerSchema` if this kiln does not know it.
fn refuse_newer_schema(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let known = migrations::MIGRATIONS.len() as i64;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > known {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    Ok(found)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = refuse_newer_schema(conn, path)?;
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
    // Jobs a rolled-back group never ran; they go first into the next group.
    let mut carried: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        let Some(first) = carried.pop_front().or_else(|| rx.blocking_recv()) else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match carried.pop_front().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            tracing::error!(error = %msg, "cannot begin a write transaction");
            // The jobs never ran; dropping them answers each caller with `Closed`.
            drop(jobs);
            continue;
        }
        let mut replies = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        let mut rolled_back = false;
        for job in jobs.by_ref() {
            replies.push(run_in_savepoint(&conn, job));
            // On a full disk or an I/O error SQLite may roll the whole transaction back by itself:
            // then nothing of this group is stored, and the jobs after it must not run outside a
            // transaction.
            if conn.is_autocommit() {
                rolled_back = true;
                break;
            }
        }
        carried.extend(jobs);
        let commit = if rolled_back {
            Err(StoreError::Storage(
                "the write transaction was rolled back".to_owned(),
            ))
        } else {
            conn.execute_batch("COMMIT").map_err(StoreError::from)
        };
        let commit = match commit {
            Ok(()) => {
                commits.send_modify(|n| *n += 1);
                Ok(())
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                tracing::error!(error = %e, "a write group failed; nothing of it was stored");
                Err(e)
            }
        };
        for reply in replies {
            reply(match &commit {
                Ok(()) => Ok(()),
                Err(StoreError::Storage(msg)) => Err(StoreError::Storage(msg.clone())),
                Err(e) => Err(StoreError::Corrupt(format!("commit failed: {e}"))),
            });
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
