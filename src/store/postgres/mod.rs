//! The PostgreSQL backend: one database several `kiln serve` hosts can share, behind the same
//! facade and contract as SQLite. **The only module that imports tokio-postgres.**
//!
//! Each write is one transaction on a pooled connection, committed before it is answered with
//! `synchronous_commit = on` (set by kiln on every connection, whatever the server's default), so
//! `Ok` means the commit is in PostgreSQL's flushed WAL; concurrent commits share WAL flushes
//! the way the SQLite writer's groups share an `fdatasync`. Reads run on the same pool.
//!
//! **Several hosts share one database.** Each start of a host holds a *lease* (a row of `hosts`,
//! on the database's clock) that it renews every third of its length; the runs it claims name it
//! (`runs.host_id`). A host whose lease lapsed (killed, or cut off from the database) has its
//! executing runs taken over by a live host, the way a restart recovers them on SQLite: any host
//! that finds an expired lease deletes it (one delete wins) and tells its engine, whose recovery
//! adopts the orphaned runs (`attempts::in_flight_runs`, one update: each run goes to one host).
//! A host whose own lease lapsed refuses every request until it renews, so it writes nothing
//! while another host may be taking its runs over; an attempt's end, checkpoint or journaled
//! effect also checks, in the transaction that records it, that the run still carries the
//! claim that started the attempt (`runs.claim_id`, new at every claim, cleared by a takeover).
//!
//! One more connection per host is the **session**: it `LISTEN`s for what triggers on `runs`
//! send at commit (migrations V1, V2) — the runs each commit changed (`kiln_runs`), lanes with
//! ready runs (`kiln_lanes`), environments with a slot given back (`kiln_slots`) and canceled
//! runs (`kiln_cancel`) — from any host, so realtime sees every host's changes and the schedulers
//! claim what another host queued. A notification is a hint; it is never the truth.
//!
//! The queries live in one file per job, as in the SQLite backend; `rows` is the leaf every
//! feature module uses.

mod access;
mod attempts;
mod batches;
mod bulk;
mod claim;
mod deployments;
mod env_vars;
mod environments;
mod journal;
mod lease;
mod lifecycle;
mod migrations;
mod queues;
mod rows;
mod run_env;
#[cfg(test)]
mod run_fixtures;
mod runs;
mod schedules;
mod scratch;
mod stats;
mod tenants;
#[cfg(test)]
pub(crate) mod testing;
mod timers;
mod tokens;
mod waits;
mod watchers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use super::{ChangedRuns, HostHint, LaneHint, RunChanges, SharedHost, StoreError};
use crate::model::Lane;
use lease::DB_NOW;
use lease::{Lease, keep_lease, new_host_id, register};

pub use scratch::{create_scratch_database, drop_database, runs_by_host};

/// The durability every commit has, as benchmarks print it.
pub const DURABILITY: &str =
    "PostgreSQL, each commit flushed to its WAL (synchronous_commit = on) before it is answered";

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

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod hosts_tests;

#[cfg(test)]
mod guard_tests {
    use crate::store::codec::checks;

    #[test]
    fn every_status_write_moves_runs_along_an_edge_of_the_table() {
        checks::every_status_write_moves_runs_along_an_edge_of_the_table(super::status_writes());
    }

    #[test]
    fn no_status_is_written_but_through_a_guard() {
        checks::no_status_is_written_but_through_a_guard("postgres");
    }
}

/// Pooled connections per host (reads and writes); more requests wait for one.
const POOL_SIZE: usize = 16;

/// The advisory lock migrations run under, so two hosts starting at once migrate once.
const MIGRATION_LOCK: i64 = 0x6b69_6c6e_6d69_6772; // "klnmigr"

/// Groups a slow watcher may fall behind by before it is told it missed some.
const FEED_CAPACITY: usize = 1_024;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.code() {
            Some(code) if *code == SqlState::DISK_FULL || *code == SqlState::IO_ERROR => {
                StoreError::Storage(e.to_string())
            }
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                StoreError::Busy(e.to_string())
            }
            // A NUL character (or bytes the server's encoding cannot hold) in a text.
            Some(code)
                if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *code == SqlState::UNTRANSLATABLE_CHARACTER =>
            {
                StoreError::InvalidText(
                    "the request holds a text with a NUL character (\\u0000), which kiln cannot store \
                     or look up; remove it"
                        .into(),
                )
            }
            // The server is going away or cannot take connections now (class 08, 57P0x).
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57P0") => {
                StoreError::Unavailable(e.to_string())
            }
            Some(_) => StoreError::Database(match e.as_db_error() {
                Some(db) => db.to_string(),
                None => e.to_string(),
            }),
            // The connection is gone, or could not be made (refused, reset, timed out).
            None if e.is_closed()
                || std::error::Error::source(&e)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            None => StoreError::Database(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
            e => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A pooled connection: a client with a statement cache (`prepare_cached`).
pub(super) type Conn = deadpool_postgres::Object;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    /// The runtime every facade call, connection and the session run on, apart from the
    /// caller's: CPU-bound guests on the caller's runtime never hold up a query's round trips.
    runtime: Arc<StoreRuntime>,
    pool: Pool,
    shared: Arc<Shared>,
    /// Read operations so far (tests check what watchers cost).
    reads: Arc<AtomicU64>,
    /// Where the database is, without its password (for errors and logs).
    shown: Arc<str>,
    /// The concurrency limit of an environment that sets none.
    default_environment_limit: u32,
}

/// What the store and its session's listener share.
struct Shared {
    /// Counts commits the session heard of; watchers re-read what they watch when it moves.
    commits: watch::Sender<u64>,
    /// The runs each commit changed (see `changes`).
    changes: broadcast::Sender<RunChanges>,
    /// Lanes commits left with ready runs (see `lane_hints`).
    lanes: broadcast::Sender<LaneHint>,
    /// What other hosts did that this one's engine acts on (see `host_hints`).
    hosts: broadcast::Sender<HostHint>,
    lease: Lease,
    /// The session's client: it `LISTEN`s while it lives.
    session: Mutex<Option<tokio_postgres::Client>>,
}

/// What the session's connection reports.
enum Event {
    /// Runs changed (`kiln_runs`: their ids).
    Runs(String),
    /// A lane holds ready runs (`kiln_lanes`).
    Lane(String),
    /// An environment's runs gave slots back (`kiln_slots`: its id).
    Slots(String),
    /// Runs were canceled (`kiln_cancel`: their ids).
    Canceled(String),
    Lost(tokio_postgres::Error),
}

/// The store's runtime, shut down without waiting when the last handle goes (which may be inside
/// another runtime, where waiting is not allowed).
struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Worker threads of the store's runtime: they mostly wait on sockets.
const RUNTIME_THREADS: usize = 2;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), runs migrations
    /// (refusing a database from a newer kiln), takes this host's lease and starts listening,
    /// all on a runtime of the store's own.
    pub async fn connect(url: &str, host: SharedHost) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("kiln-store-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::OpenDatabase {
                database: "given with --database".into(),
                reason: format!("cannot start the store's runtime: {e}"),
            })?;
        let runtime = Arc::new(StoreRuntime(Some(runtime)));
        let url = url.to_owned();
        let connecting = {
            let runtime = runtime.clone();
            async move { PostgresStore::connect_here(&url, host, runtime).await }
        };
        match runtime.0.as_ref() {
            Some(rt) => rt.spawn(connecting).await.map_err(|_| StoreError::Closed)?,
            None => Err(StoreError::Closed),
        }
    }

    /// Runs `work` (a facade call) on the store's runtime.
    pub(super) async fn on_runtime<R: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<R, StoreError>> + Send + 'static,
    ) -> Result<R, StoreError> {
        match self.runtime.0.as_ref() {
            Some(rt) => rt.spawn(work).await.map_err(|_| StoreError::Closed)?,
            None => Err(StoreError::Closed),
        }
    }

    /// [`PostgresStore::connect`], on the runtime it runs on.
    async fn connect_here(
        url: &str,
        host: SharedHost,
        runtime: Arc<StoreRuntime>,
    ) -> Result<PostgresStore, StoreError> {
        let mut config: Config = url.parse().map_err(|e| StoreError::OpenDatabase {
            database: "given with --database".into(),
            reason: format!("{e}; expected postgres://USER@HOST:PORT/DATABASE"),
        })?;
        // Every commit is durable before it is answered, and every statement sees what committed
        // before it began (the claims' limits count on it), whatever the server's defaults.
        config
            .options("-c synchronous_commit=on -c default_transaction_isolation=read\\ committed");
        let shown: Arc<str> = shown_url(&config).into();
        let open_error = |e: tokio_postgres::Error| StoreError::OpenDatabase {
            database: shown.to_string(),
            reason: e.to_string(),
        };

        let (session, events) = connect_session(&config).await.map_err(open_error)?;
        migrate(&session, &shown).await?;
        let id = new_host_id();
        let sent = std::time::Instant::now();
        register(&session, &id, &host.name, host.lease)
            .await
            .map_err(open_error)?;
        listen_on(&session).await.map_err(open_error)?;
        let shared = Arc::new(Shared {
            commits: watch::Sender::new(0),
            changes: broadcast::channel(FEED_CAPACITY).0,
            lanes: broadcast::channel(FEED_CAPACITY).0,
            hosts: broadcast::channel(FEED_CAPACITY).0,
            lease: Lease {
                name: host.name,
                length: host.lease,
                id: id.into(),
                renewed: Mutex::new(sent),
                released: std::sync::atomic::AtomicBool::new(false),
            },
            session: Mutex::new(Some(session)),
        });
        tokio::spawn(listen(events, config.clone(), Arc::downgrade(&shared)));

        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::OpenDatabase {
                database: shown.to_string(),
                reason: e.to_string(),
            })?;
        tokio::spawn(keep_lease(pool.clone(), Arc::downgrade(&shared)));
        Ok(PostgresStore {
            runtime,
            pool,
            shared,
            reads: Arc::new(AtomicU64::new(0)),
            shown,
            default_environment_limit: host.default_environment_limit,
        })
    }

    /// A pooled connection for one job (a transaction, or reads); refused while this host's
    /// lease is not surely its own (see `keep_lease`), so a host cut off from the database
    /// writes nothing once another host may be taking its runs over.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        // Checked once the connection is in hand: waiting for one may outlast the lease.
        let c = self.pool.get().await?;
        if !self.shared.lease.held() {
            return Err(StoreError::Unavailable(format!(
                "this host's lease on {} has lapsed (the database was out of reach for longer \
                 than --host-lease); it serves again once the lease is renewed",
                self.shown
            )));
        }
        Ok(c)
    }

    /// A pooled connection for reads, counted.
    pub(super) async fn reader(&self) -> Result<Conn, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.conn().await
    }

    /// Connections open now (in use or idle).
    pub fn read_connections(&self) -> usize {
        self.pool.status().size
    }

    pub fn commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    /// The runs each commit changed, from now on.
    pub fn changes(&self) -> broadcast::Receiver<RunChanges> {
        self.shared.changes.subscribe()
    }

    /// The lanes each commit left with ready runs, from now on (any host's commits).
    pub fn lane_hints(&self) -> broadcast::Receiver<LaneHint> {
        self.shared.lanes.subscribe()
    }

    /// What other hosts did that this host's engine acts on, from now on.
    pub fn host_hints(&self) -> broadcast::Receiver<HostHint> {
        self.shared.hosts.subscribe()
    }

    /// Nothing to do: notifications name the changed runs already, so there is nothing to
    /// resolve and nobody needs to ask for it.
    pub fn want_changes_until(&self, _until: crate::model::Millis) {}

    /// How many read operations ran so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// `postgres://user@host:port/db` of a config, without its password.
fn shown_url(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Opens a session: a connection whose notifications (and its loss) arrive as events.
async fn connect_session(
    config: &Config,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<Event>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let event = match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == "kiln_runs" => {
                    Event::Runs(n.payload().to_owned())
                }
                Ok(AsyncMessage::Notification(n)) if n.channel() == "kiln_lanes" => {
                    Event::Lane(n.payload().to_owned())
                }
                Ok(AsyncMessage::Notification(n)) if n.channel() == "kiln_slots" => {
                    Event::Slots(n.payload().to_owned())
                }
                Ok(AsyncMessage::Notification(n)) if n.channel() == "kiln_cancel" => {
                    Event::Canceled(n.payload().to_owned())
                }
                Ok(_) => continue,
                Err(e) => Event::Lost(e),
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        // Closed on purpose (the client was dropped): the channel closes with this task.
    });
    Ok((client, rx))
}

/// A `kiln_lanes` payload: `environment TAB queue TAB` (no concurrency key) or `… TAB =key`, or
/// `environment TAB *` for every lane of the environment.
fn lane_hint(payload: &str) -> Option<LaneHint> {
    let mut parts = payload.splitn(3, '\t');
    let environment_id = parts.next()?.to_owned();
    let queue = parts.next()?;
    if queue == "*" {
        return Some(LaneHint::Environment(environment_id));
    }
    let concurrency_key = match parts.next()? {
        "" => None,
        key => Some(key.strip_prefix('=')?.to_owned()),
    };
    Some(LaneHint::Lane(Lane {
        environment_id,
        queue: queue.to_owned(),
        concurrency_key,
    }))
}

/// Listens on the session for what the triggers on `runs` send.
async fn listen_on(session: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    session
        .batch_execute("LISTEN kiln_runs; LISTEN kiln_lanes; LISTEN kiln_slots; LISTEN kiln_cancel")
        .await
}

/// Follows the session: each notification of changed runs is published to the watchers and
/// ticks the commit count.
///
/// If the session is lost, notifications may be missed meanwhile: it is opened again every
/// second, and once it listens again watchers re-read (`RunChanges::Unknown`) and the scheduler
/// reads the ready lanes again (`LaneHint::All`). Writes do not depend on the session: the
/// lease (see `keep_lease`) is what keeps a host that lost the database from writing.
async fn listen(
    mut events: mpsc::UnboundedReceiver<Event>,
    config: Config,
    shared: std::sync::Weak<Shared>,
) {
    while let Some(event) = events.recv().await {
        let Some(live) = shared.upgrade() else { return };
        match event {
            Event::Lane(payload) => {
                if let Some(hint) = lane_hint(&payload) {
                    let _ = live.lanes.send(hint);
                }
            }
            Event::Slots(environment_id) => {
                let _ = live.hosts.send(HostHint::Slots(environment_id));
            }
            Event::Canceled(payload) => {
                let ids = payload
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect();
                let _ = live.hosts.send(HostHint::Canceled(ids));
            }
            Event::Runs(payload) => {
                let ids: ChangedRuns = payload
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect();
                live.commits.send_modify(|c| *c += 1);
                let _ = live.changes.send(RunChanges::Runs(ids));
            }
            Event::Lost(e) => {
                tracing::error!(error = %e, "the database session was lost; opening it again");
                drop(live);
                events = loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let Some(live) = shared.upgrade() else { return };
                    let Ok((session, events)) = connect_session(&config).await else {
                        continue;
                    };
                    if listen_on(&session).await.is_ok() {
                        *live.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
                        tracing::info!("the database session is back");
                        live.commits.send_modify(|c| *c += 1);
                        let _ = live.changes.send(RunChanges::Unknown);
                        // What was queued, freed or canceled meanwhile is read again.
                        let _ = live.lanes.send(LaneHint::All);
                        let _ = live.hosts.send(HostHint::Orphans);
                        break events;
                    }
                };
            }
        }
    }
}

/// Runs the migrations this database lacks, under an advisory lock; refuses a database whose
/// schema is newer than this kiln's.
async fn migrate(session: &tokio_postgres::Client, shown: &str) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| StoreError::OpenDatabase {
        database: shown.to_owned(),
        reason: e.to_string(),
    };
    session
        .query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let result = async {
        session
            .batch_execute("CREATE TABLE IF NOT EXISTS kiln_schema (version BIGINT NOT NULL)")
            .await
            .map_err(fail)?;
        let found: i64 = session
            .query_opt("SELECT version FROM kiln_schema", &[])
            .await
            .map_err(fail)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        let known = migrations::MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::OpenDatabase {
                database: shown.to_owned(),
                reason: format!(
                    "its schema version is {found}, newer than this kiln understands ({known}); \
                     run a newer kiln or use another database"
                ),
            });
        }
        for (index, sql) in migrations::MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as i64 + 1;
            let script = format!(
                "BEGIN; {sql}; DELETE FROM kiln_schema; INSERT INTO kiln_schema VALUES ({version}); COMMIT;"
            );
            if let Err(e) = session.batch_execute(&script).await {
                let _ = session.batch_execute("ROLLBACK").await;
                return Err(fail(e));
            }
        }
        Ok(())
    }
    .await;
    let _ = session
        .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}
