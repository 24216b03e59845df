//! The SQLite backend: kiln's embedded default, one database file in the data dir.
//! **The only module that imports rusqlite.**
//!
//! One writer thread owns the write connection and commits in groups: every write request that
//! arrives while a transaction is open joins it (each in its own savepoint, so one failing request
//! does not undo the others), and all of them are answered after the one `COMMIT`, so a caller
//! that got `Ok` knows its write is durable. Reads run on their own connections (WAL mode lets
//! them proceed while the writer commits). The queries live in one file per job, next to the
//! method that runs each; `rows`, `journal` and `run_env` are leaves, `lifecycle` holds what ends
//! or resumes a run, and the feature modules depend only on those (and `queues` for a run's
//! queue, `runs` for a schedule's run).

mod attempts;
mod deployments;
mod env_vars;
mod environments;
mod guards;
mod journal;
mod lifecycle;
mod migrations;
mod queues;
mod rows;
mod run_env;
mod runs;
mod schedules;
mod stats;
mod tenants;
mod timers;
mod tokens;
mod waits;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, watch};

use super::StoreError;

/// The durability every commit has (see `open_connection`), as benchmarks print it.
pub const DURABILITY: &str = "SQLite WAL, synchronous = FULL";

/// Most write requests joined into one transaction. Bounds the time a request waits for others.
const MAX_GROUP: usize = 512;

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every set-based statement that writes a run's status, by name, for the check against the
/// state machine's table.
#[cfg(test)]
fn status_writes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("claim", &queues::CLAIM),
        ("start attempt", &attempts::START_ATTEMPT),
        ("continue attempt", &attempts::CONTINUE_ATTEMPT),
        ("enqueue delayed", &timers::ENQUEUE_DELAYED),
        (
            "enqueue pending version",
            &deployments::ENQUEUE_PENDING_VERSION,
        ),
        ("expire", &timers::EXPIRE_DUE),
        ("resume", &lifecycle::RESUME),
        ("resume waiters", &lifecycle::RESUME_WAITERS),
    ]
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match e.sqlite_error_code() {
            Some(DiskFull | SystemIoFailure) => StoreError::Storage(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// The error of opening `path`, with what to check.
fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<Job>,
    readers: Arc<ReaderPool>,
    /// Counts committed write groups; watchers re-read what they watch when it moves.
    commits: Arc<watch::Sender<u64>>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `kiln.db` in `dir`, runs migrations, and starts the writer.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join("kiln.db");
        let conn = open_connection(&path, false)?;
        migrate(&conn, &path)?;
        // Take the write lock once now: a database another process holds locked stops the start
        // with its path, instead of failing the first write.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT")
            .map_err(|e| open_error(&path, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(watch::Sender::new(0));
        thread::Builder::new()
            .name("kiln-store-writer".into())
            .spawn({
                let commits = commits.clone();
                move || writer_loop(conn, rx, &commits)
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            commits,
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `op` inside the next group transaction; resolves after the commit.
    pub(super) async fn write<R: Send + 'static>(
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
    pub(super) async fn read<R: Send + 'static>(
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
    let open_err = |e| open_error(path, e);
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
        .map_err(|e| open_error(path, e))?;
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
    // A full disk stays a storage error; anything else names the file.
    let fail = |e: rusqlite::Error| match StoreError::from(e) {
        StoreError::Database(reason) => StoreError::Open {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    };
    for (index, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
    {
        let tx = conn.unchecked_transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
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
