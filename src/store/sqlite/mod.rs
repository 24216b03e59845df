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

mod access;
mod attempts;
mod batches;
mod bulk;
mod changes;
mod claim;
mod deployments;
mod env_vars;
mod environments;
#[cfg(test)]
mod fixtures;
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
mod watchers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{Durability, RunChanges, Staged, StoreError};
use crate::model::Millis;

/// The durability every commit has (see `open_connection`), as benchmarks print it.
pub const DURABILITY: &str = "SQLite WAL, each commit fdatasync'ed before it is answered";

/// Most write requests joined into one transaction. Bounds the time a request waits for others.
const MAX_GROUP: usize = 512;

/// Longest a group stays open for requests that keep arriving before it commits.
const MAX_GROUP_TIME: std::time::Duration = std::time::Duration::from_millis(5);

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 512;

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every set-based statement that writes a run's status, by name, for the check against the
/// state machine's table.
#[cfg(test)]
fn status_writes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("claim and start", &claim::START_CLAIMED),
        ("claim and continue", &claim::CONTINUE_CLAIMED),
        ("claim and park", &claim::PARK_CLAIMED),
        ("enqueue delayed", &timers::ENQUEUE_DELAYED),
        (
            "enqueue pending version",
            &deployments::ENQUEUE_PENDING_VERSION,
        ),
        ("expire", &timers::EXPIRE_DUE),
        ("resume", &lifecycle::RESUME),
        ("resume waiters", &lifecycle::RESUME_WAITERS),
        ("resume many", &lifecycle::RESUME_MANY),
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
    /// The runs each committed group changed (see `changes`).
    changes: broadcast::Sender<RunChanges>,
    /// Until when a watcher wants changed runs resolved.
    changes_wanted: Arc<AtomicI64>,
    /// Read operations so far (tests check what watchers cost).
    reads: Arc<AtomicU64>,
}

/// Read connections: at most [`MAX_READERS`] open at once (each holds its own page cache), so
/// however many requests read at the same time, the store's memory stays bounded; more wait.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

/// Most read connections open at once.
const MAX_READERS: usize = 16;

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
        let syncer = start_syncer(&path)?;
        // Commits write the WAL without waiting for the disk; the syncer makes them durable
        // before anyone is answered (see `start_syncer`). Checkpoints still sync as FULL does.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_error(&path, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(watch::Sender::new(0));
        let feed = changes::feed();
        let changes_wanted = Arc::new(AtomicI64::new(i64::MIN));
        let collector = changes::Collector::install(&conn, feed.clone(), changes_wanted.clone(), {
            let path = path.clone();
            move || open_connection(&path, true).ok()
        });
        thread::Builder::new()
            .name("kiln-store-writer".into())
            .spawn({
                let commits = commits.clone();
                move || writer_loop(conn, rx, &commits, &collector, &syncer)
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            commits,
            changes: feed,
            changes_wanted,
            reads: Arc::new(AtomicU64::new(0)),
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(MAX_READERS),
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

    /// Runs `op` inside the next group transaction and answers as soon as it ran, before the
    /// commit: the value, and a [`Durability`] that settles when the group commits (or fails).
    /// A failed `op` is answered with its error at once (nothing of it is stored).
    pub(super) async fn write_staged<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<Staged<R>, StoreError> {
        let (ran_tx, ran_rx) = oneshot::channel();
        let (settle, durable) = Durability::pending();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            let ok = result.is_ok();
            let _ = ran_tx.send(result);
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let _ = settle.send(Some(commit));
            });
            (ok, reply)
        });
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        let value = ran_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Staged { value, durable })
    }

    /// Read connections open now (in use or idle).
    pub fn read_connections(&self) -> usize {
        self.readers
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            + MAX_READERS
            - self.readers.permits.available_permits()
    }

    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The runs each committed write group changed, from now on.
    pub fn changes(&self) -> broadcast::Receiver<RunChanges> {
        self.changes.subscribe()
    }

    /// Resolves the runs each group changed until `until` (ms since the epoch).
    pub fn want_changes_until(&self, until: Millis) {
        self.changes_wanted.fetch_max(until, Ordering::Relaxed);
    }

    /// How many read operations ran so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Runs `op` on a read connection on the blocking pool.
    pub(super) async fn read<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let readers = self.readers.clone();
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = readers.clone();
        tokio::task::spawn_blocking(move || {
            let readers = pool;
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
    // Every statement kiln runs stays prepared (rusqlite keeps 16 by default, fewer than the hot
    // path alone uses, and parsing SQL again costs more than running it).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if !read_only {
        // A database from a newer kiln is refused before anything (even the journal mode in its
        // header) is written to it.
        refuse_newer_schema(&conn, path)?;
        // WAL lets readers run beside the writer. `synchronous = FULL` makes every commit durable
        // across power loss (migrations run so); once the store runs, the syncer takes that part
        // over (see `start_syncer`).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // The writer's statement journals (a statement that fires triggers inside a savepoint
        // keeps one) and temporary B-trees stay in memory: as files, each was a create, writes
        // and an unlink in the writer's path.
        conn.pragma_update(None, "temp_store", "MEMORY")
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

/// Starts the thread that makes committed groups durable: it takes the replies of every group
/// committed since its last sync, calls `fdatasync` on the WAL once for all of them, and only
/// then answers them. So the writer executes the next group while the previous one's sync is in
/// flight (pipelined group commit), and `Ok` still means on disk: a group's frames were written
/// to the WAL before its replies reached the syncer, so the sync that follows covers them. A
/// sync that keeps failing leaves nothing the host can promise: it stops the process, and the
/// next start recovers what the disk holds.
fn start_syncer(path: &Path) -> Result<std::sync::mpsc::Sender<Vec<Reply>>, StoreError> {
    let wal_path = {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        PathBuf::from(p)
    };
    let wal = std::fs::File::open(&wal_path).map_err(|e| StoreError::Open {
        path: wal_path.clone(),
        reason: e.to_string(),
    })?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Reply>>();
    thread::Builder::new()
        .name("kiln-store-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut groups = vec![first];
                groups.extend(rx.try_iter());
                let mut failures = 0;
                while let Err(e) = wal.sync_data() {
                    failures += 1;
                    tracing::error!(error = %e, path = %wal_path.display(), "syncing the WAL failed");
                    if failures == 3 {
                        tracing::error!("the WAL cannot be made durable; stopping");
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                for reply in groups.into_iter().flatten() {
                    reply(Ok(()));
                }
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the sync thread: {e}")))?;
    Ok(tx)
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    commits: &watch::Sender<u64>,
    changed: &changes::Collector,
    syncer: &std::sync::mpsc::Sender<Vec<Reply>>,
) {
    loop {
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        changed.begin();
        if let Err(e) = control(&conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            tracing::error!(error = %msg, "cannot begin a write transaction");
            // The job never ran; dropping it answers its caller with `Closed`.
            drop(first);
            continue;
        }
        // The group stays open while jobs keep coming (each runs as it arrives, so an attempt
        // started by this group can end in it too), up to MAX_GROUP jobs or MAX_GROUP_TIME.
        let opened = std::time::Instant::now();
        let mut replies = Vec::new();
        let mut next = Some(first);
        let mut rolled_back = false;
        while let Some(job) = next.take() {
            replies.push(run_in_savepoint(&conn, job));
            // On a full disk or an I/O error SQLite may roll the whole transaction back by itself:
            // then nothing of this group is stored, and no job may run outside a transaction.
            if conn.is_autocommit() {
                rolled_back = true;
                break;
            }
            if replies.len() >= MAX_GROUP || opened.elapsed() >= MAX_GROUP_TIME {
                break;
            }
            next = rx.try_recv().ok();
        }
        let commit = if rolled_back {
            Err(StoreError::Storage(
                "the write transaction was rolled back".to_owned(),
            ))
        } else {
            control(&conn, "COMMIT").map_err(StoreError::from)
        };
        let error = match commit {
            Ok(()) => {
                commits.send_modify(|n| *n += 1);
                changed.committed();
                // Answered once the syncer has the group on disk. Without it, no `Ok` could be
                // promised durable: stop, as a failed sync does (what was written is recovered).
                if syncer.send(replies).is_err() {
                    tracing::error!("the WAL sync thread is gone; stopping");
                    std::process::abort();
                }
                continue;
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                tracing::error!(error = %e, "a write group failed; nothing of it was stored");
                e
            }
        };
        for reply in replies {
            reply(Err(match &error {
                StoreError::Storage(msg) => StoreError::Storage(msg.clone()),
                e => StoreError::Corrupt(format!("commit failed: {e}")),
            }));
        }
    }
}

/// Runs one cached statement that takes no parameters (transaction control).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `op` in a savepoint of its own inside the current job: its writes are undone if it fails,
/// and its error is answered as its value. `Err` only when the transaction itself is gone (SQLite
/// rolled it back on a full disk or an I/O error): nothing may run after that.
pub(super) fn within_savepoint<R>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<Result<R, StoreError>, StoreError> {
    control(conn, "SAVEPOINT part")?;
    let result = op(conn);
    if conn.is_autocommit() {
        return Err(StoreError::Storage(
            "the write transaction was rolled back".to_owned(),
        ));
    }
    if result.is_err() {
        control(conn, "ROLLBACK TO part")?;
    }
    control(conn, "RELEASE part")?;
    Ok(result)
}

fn run_in_savepoint(conn: &Connection, job: Job) -> Reply {
    if let Err(e) = control(conn, "SAVEPOINT job") {
        let msg = e.to_string();
        return Box::new(move |_| tracing::error!(error = %msg, "savepoint failed"));
    }
    let (ok, reply) = job(conn);
    if !ok {
        // Undo this request's partial writes; the others in the group stay.
        let _ = control(conn, "ROLLBACK TO job");
    }
    let _ = control(conn, "RELEASE job");
    reply
}
