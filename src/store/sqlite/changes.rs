//! Which runs each committed write group changed, for watchers that follow runs (realtime).
//!
//! SQLite's update hook on the writer's connection collects the rowids of `runs` rows a group
//! inserts or updates (a push into a vector: the writer's hot path pays nothing more). After the
//! group commits, and only if someone listens, the rowids go to a resolver thread that turns them
//! into run ids on its own read connection and publishes them. A group rolled back publishes
//! nothing; a savepoint rolled back inside a committed group may publish a rowid that is gone or
//! unchanged, which costs a watcher one needless read, never a missed change.
//!
//! It must never block or fail the writer: if the resolver is gone or a read fails, the group's
//! changes are published as unknown (watchers then re-read what they watch).

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::Action;
use tokio::sync::broadcast;

use crate::store::{ChangedRuns, RunChanges};

/// Groups a slow watcher may fall behind by before it is told it missed some.
const FEED_CAPACITY: usize = 1_024;

/// Rowids resolved per query (well under SQLite's limit of bound variables).
const RESOLVE_CHUNK: usize = 500;

/// The writer's side: the hook's rowids of the group being written.
pub(super) struct Collector {
    rowids: Arc<Mutex<Vec<i64>>>,
    /// Until when (ms since the epoch) a watcher wants the changed runs resolved; past it a
    /// group is published as unknown without reading anything.
    wanted_until: Arc<std::sync::atomic::AtomicI64>,
    resolver: std::sync::mpsc::Sender<Vec<i64>>,
    feed: broadcast::Sender<RunChanges>,
}

impl Collector {
    /// Installs the hook on the writer's connection and starts the resolver, which reads through
    /// connections from `open_reader`.
    pub(super) fn install(
        conn: &Connection,
        feed: broadcast::Sender<RunChanges>,
        wanted_until: Arc<std::sync::atomic::AtomicI64>,
        open_reader: impl Fn() -> Option<Connection> + Send + 'static,
    ) -> Collector {
        let rowids = Arc::new(Mutex::new(Vec::new()));
        let hooked = rowids.clone();
        conn.update_hook(Some(
            move |action: Action, _db: &str, table: &str, rowid: i64| {
                if table == "runs"
                    && matches!(action, Action::SQLITE_INSERT | Action::SQLITE_UPDATE)
                {
                    hooked.lock().unwrap_or_else(|e| e.into_inner()).push(rowid);
                }
            },
        ));
        let (resolver, jobs) = std::sync::mpsc::channel::<Vec<i64>>();
        let published = feed.clone();
        let started = std::thread::Builder::new()
            .name("kiln-store-changes".into())
            .spawn(move || resolve_loop(jobs, open_reader, &published));
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the change resolver; realtime re-reads instead");
        }
        Collector {
            rowids,
            wanted_until,
            resolver,
            feed,
        }
    }

    /// A group begins: forget what a failed one collected.
    pub(super) fn begin(&self) {
        self.rowids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The group committed: hand its rowids to the resolver if anyone listens.
    pub(super) fn committed(&self) {
        let mut rowids =
            std::mem::take(&mut *self.rowids.lock().unwrap_or_else(|e| e.into_inner()));
        if rowids.is_empty() || self.feed.receiver_count() == 0 {
            return;
        }
        let wanted = self.wanted_until.load(std::sync::atomic::Ordering::Relaxed);
        if crate::model::now_ms() > wanted {
            let _ = self.feed.send(RunChanges::Unknown);
            return;
        }
        rowids.sort_unstable();
        rowids.dedup();
        if self.resolver.send(rowids).is_err() {
            let _ = self.feed.send(RunChanges::Unknown);
        }
    }
}

fn resolve_loop(
    jobs: std::sync::mpsc::Receiver<Vec<i64>>,
    open_reader: impl Fn() -> Option<Connection>,
    feed: &broadcast::Sender<RunChanges>,
) {
    let mut conn = None;
    while let Ok(rowids) = jobs.recv() {
        if conn.is_none() {
            conn = open_reader();
        }
        let resolved = conn.as_ref().and_then(|c| match resolve(c, &rowids) {
            Ok(ids) => Some(ids),
            Err(e) => {
                tracing::warn!(error = %e, "cannot resolve the runs a commit changed");
                None
            }
        });
        let _ = feed.send(match resolved {
            Some(ids) => RunChanges::Runs(ChangedRuns::from(ids)),
            None => {
                conn = None;
                RunChanges::Unknown
            }
        });
    }
}

fn resolve(c: &Connection, rowids: &[i64]) -> rusqlite::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(rowids.len());
    for chunk in rowids.chunks(RESOLVE_CHUNK) {
        let sql = format!(
            "SELECT id FROM runs WHERE rowid IN ({})",
            vec!["?"; chunk.len()].join(",")
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(chunk), |r| r.get(0))?;
        for id in rows {
            ids.push(id?);
        }
    }
    Ok(ids)
}

/// A feed with no group yet.
pub(super) fn feed() -> broadcast::Sender<RunChanges> {
    broadcast::channel(FEED_CAPACITY).0
}
