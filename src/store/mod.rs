//! Persistence behind one facade: [`Store`] takes and returns domain types only, whatever the
//! backend. `sqlite` is the embedded default (and **the only module that imports rusqlite**).
//!
//! The contract every backend keeps:
//! - **Ok means durable.** A write that answered `Ok` is committed and on disk (SQLite: group
//!   commit, the WAL `fdatasync`'ed before the answer); a write that failed stored nothing of
//!   itself.
//! - **The store never decides a run's next status.** Callers pass the status they expect and the
//!   one the engine's state machine computed; writes are compare-and-set (`WHERE id = ? AND
//!   status = ?`), and zero rows is [`StoreError::Conflict`].
//! - **Effects commit with their journal.** A token, child runs or a metadata change a run makes
//!   is stored in one transaction with the journal the attempt recorded before it
//!   ([`JournalWith`]); the journal's entries are built by a pure function of the effect's result.
//! - Nothing here runs caller code inside a transaction except such pure functions of values.

mod carry;
mod codec;
mod error;
mod postgres;
mod sqlite;
mod stats;
mod types;

use std::path::Path;

use tokio::sync::watch;

pub use error::StoreError;
pub use sqlite::DURABILITY;
pub use stats::*;
pub use types::*;

/// Scratch PostgreSQL databases for one measurement each (`kiln bench --database`).
pub mod postgres_scratch {
    pub use super::postgres::{create_scratch_database, drop_database, runs_by_host};
}

use crate::metadata::{MetadataError, MetadataOp};
use crate::model::*;
use crate::schedule::Schedule;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Opens (creating if needed) the SQLite database `kiln.db` in `dir`, runs migrations, and
    /// starts its writer. A database from a newer kiln, or one another process holds locked, is
    /// refused before anything is written.
    pub fn open_sqlite(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(dir)?),
        })
    }

    /// Connects to the PostgreSQL database at `url`, runs migrations and takes a lease for
    /// this host among those sharing the database. A database from a newer kiln is refused
    /// before anything is written.
    pub async fn connect_postgres(url: &str, host: SharedHost) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(postgres::PostgresStore::connect(url, host).await?),
        })
    }

    /// Ticks after every committed write (the value counts commits); watchers re-read what they
    /// watch when it moves.
    pub fn commits(&self) -> watch::Receiver<u64> {
        match &self.backend {
            Backend::Sqlite(s) => s.commits(),
            Backend::Postgres(s) => s.commits(),
        }
    }

    /// The runs each committed write group changed (their ids, any environment's), from now
    /// on: one message per group that changed a run, after its commit. A watcher that falls far
    /// behind gets `Lagged` from the channel and should re-read what it watches.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<RunChanges> {
        match &self.backend {
            Backend::Sqlite(s) => s.changes(),
            Backend::Postgres(s) => s.changes(),
        }
    }

    /// The lanes commits left with ready runs, when the database is shared (PostgreSQL: any
    /// host's commits, so each host's scheduler claims what another queued). `None` for SQLite,
    /// where this host's engine queued everything itself.
    pub fn lane_hints(&self) -> Option<tokio::sync::broadcast::Receiver<LaneHint>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s) => Some(s.lane_hints()),
        }
    }

    /// What other hosts sharing the database did that this host's engine acts on (slots given
    /// back, runs canceled, runs orphaned by a lapsed lease). `None` for SQLite, where there is
    /// no other host.
    pub fn host_hints(&self) -> Option<tokio::sync::broadcast::Receiver<HostHint>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s) => Some(s.host_hints()),
        }
    }

    /// Runs holding a slot (DEQUEUED or EXECUTING) on every host sharing the database, in an
    /// environment or one of its queues; `None` on SQLite, where the engine's scheduler counts
    /// every run itself.
    pub async fn shared_holding(
        &self,
        environment_id: &str,
        queue: Option<&str>,
    ) -> Option<Result<u32, StoreError>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s) => Some(s.holding(environment_id, queue).await),
        }
    }

    /// Ends this host's lease on a shared database, so other hosts take over at once whatever
    /// it still holds; requests are refused after it. The last step of a host's graceful stop;
    /// nothing on SQLite.
    pub async fn release_lease(&self) {
        if let Backend::Postgres(s) = &self.backend {
            s.release_lease().await;
        }
    }

    /// Asks for the runs each commit changed to be resolved until `until` (ms since the epoch);
    /// past it, commits are published as unknown changes without a read.
    pub fn want_changes_until(&self, until: Millis) {
        match &self.backend {
            Backend::Sqlite(s) => s.want_changes_until(until),
            Backend::Postgres(s) => s.want_changes_until(until),
        }
    }

    /// How many read operations the store ran so far (to check what watchers cost).
    pub fn reads(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(s) => s.reads(),
            Backend::Postgres(s) => s.reads(),
        }
    }

    /// Read connections open now: bounded, however many requests read at once.
    pub fn read_connections(&self) -> usize {
        match &self.backend {
            Backend::Sqlite(s) => s.read_connections(),
            Backend::Postgres(s) => s.read_connections(),
        }
    }

    /// The durability every commit has, as benchmarks print it.
    pub fn durability(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => sqlite::DURABILITY,
            Backend::Postgres(_) => postgres::DURABILITY,
        }
    }
}

/// Declares each facade method once: its contract (the doc comment) and signature; every backend
/// must have a method of the same name and arguments.
macro_rules! facade {
    ($(
        $(#[$meta:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        // On the backend's own runtime (see `carry`): a `&str` crosses as a
                        // `String`, every other argument as it is.
                        Backend::Postgres(s) => {
                            $( let $arg = carry::Carry::carry($arg); )*
                            let store = s.clone();
                            s.on_runtime(async move {
                                $( let mut $arg = $arg; )*
                                store.$name($( carry::Pass::pass(&mut $arg) ),*).await
                            })
                            .await
                        }
                    }
                }
            )*
        }
    };
}

facade! {
    /// Claims the heads of several lanes (up to `count` runs each, in score order) and starts
    /// them, in one write answered as soon as it ran (claim is start; see [`Staged`]): each run
    /// goes from QUEUED to EXECUTING with its attempt row, locked to its version, and comes back
    /// with what its attempt runs with; a run no version has a task for, never started, parks in
    /// PENDING_VERSION instead. Returns each lane's runs, in the order asked.
    fn claim_runs(&self, lanes: Vec<(Lane, usize)>, now: Millis) -> Staged<Vec<Vec<Claimed>>>;
    /// Applies a status change with compare-and-set. Returns the run as stored after it.
    /// The lanes returned are of parents the change resumed (a child that ended).
    fn update_run(&self, update: RunUpdate) -> Vec<Lane>;
    /// Records the end of an attempt and applies the run's new status, in one transaction.
    ///
    /// If the run was canceled meanwhile, the attempt is still recorded (as CANCELED) with its
    /// usage and logs, and the run keeps its CANCELED status.
    /// The lanes returned are of parents the run's end resumed. Answered as soon as it ran
    /// ([`Staged`]): the slot is free then; whatever depends on the end being durable waits.
    fn finish_attempt(&self, finish: FinishAttempt) -> Staged<Vec<Lane>>;
    /// [`Store::finish_attempt`] and then [`Store::claim_runs`], in one write answered as soon as
    /// it ran: a slot goes from the attempt that ended to the run that takes it over with one
    /// trip to the store. The end is recorded first, so the claim sees its slot free; an end that
    /// cannot be recorded is answered in [`FinishedAndClaimed::finished`] and stores nothing,
    /// and the claim goes ahead. A backend that commits the two apart answers fewer lanes than
    /// asked (none) when the claim failed after the end was stored.
    fn finish_and_claim(&self, finish: FinishAttempt, lanes: Vec<(Lane, usize)>, now: Millis) -> Staged<FinishedAndClaimed>;
    /// The attempts of a run, oldest first.
    fn attempts(&self, environment_id: &str, run_id: &str) -> Vec<Attempt>;
    /// A run's log lines in the order they were written, at most `limit` after line `after`.
    fn logs(&self, environment_id: &str, run_id: &str, after: i64, limit: usize) -> Vec<(i64, LogLine)>;
    /// Runs claimed or executing that no live host holds, taken over by this one: on SQLite
    /// every such run (a previous process left them); on a shared database those of host starts
    /// whose lease lapsed or ended, each run to one host of those asking at once.
    fn in_flight_runs(&self) -> Vec<Run>;
    /// Stores the components (those new) and a deployment of them, in their order, with the
    /// next version of the day (`YYYYMMDD.N`) and each component's tasks, in one transaction.
    /// The caller has checked that no task id is in two components.
    fn insert_deployment(&self, environment_id: &str, components: Vec<NewComponent>, day: String, now: Millis) -> Deployment;
    /// The newest deployment of an environment.
    fn latest_deployment(&self, environment_id: &str) -> Option<Deployment>;
    /// A deployment by id.
    fn deployment(&self, environment_id: &str, id: &str) -> Option<Deployment>;
    /// The deployment of an environment with this version.
    fn deployment_by_version(&self, environment_id: &str, version: &str) -> Option<Deployment>;
    /// An environment's deployments, newest first.
    fn list_deployments(&self, environment_id: &str) -> Vec<Deployment>;
    /// The bytes of a stored component of one of the environment's versions.
    fn component_bytes(&self, environment_id: &str, digest: &str) -> Vec<u8>;
    /// The digests of every component a run may still execute, across the host (to prune
    /// compiled artifacts): those of each environment's latest version, and of the versions
    /// runs that have not ended are locked to (by deployment or by `lockToVersion`).
    fn usable_component_digests(&self) -> Vec<String>;
    /// Queues the environment's PENDING_VERSION runs of these tasks (a version with them was
    /// deployed). They keep their queue order.
    fn enqueue_pending_version(&self, environment_id: &str, task_ids: Vec<String>, now: Millis) -> Vec<Lane>;
    /// The environment's variables, by name.
    fn env_vars(&self, environment_id: &str) -> Vec<StoredVar>;
    fn env_var(&self, environment_id: &str, name: &str) -> Option<StoredVar>;
    /// Writes `vars` in one transaction. `create`: names that exist are left alone and returned;
    /// otherwise they are overwritten. `limit` bounds how many variables the environment may hold
    /// afterwards (`Err(Refused)` naming it, nothing written).
    fn put_env_vars(&self, environment_id: &str, vars: Vec<StoredVar>, overwrite: bool, limit: usize, now: Millis) -> Vec<String>;
    /// Whether a variable of that name was there to delete.
    fn delete_env_var(&self, environment_id: &str, name: &str) -> bool;
    /// An environment's own limits (the host's where it has none).
    fn environment_limits(&self, environment_id: &str) -> crate::model::EnvironmentLimits;
    /// Every environment with its concurrency limit and limits.
    fn environments(&self) -> Vec<EnvironmentInfo>;
    /// Changes an environment's limits (each `Some` field: set, `Some(None)`: back to the host's
    /// default). `None` if there is no such environment.
    fn update_environment(&self, project: &str, environment: &str, change: EnvironmentChange) -> Option<EnvironmentInfo>;
    /// Every environment that has a deployment.
    fn deployed_environments(&self) -> Vec<Environment>;
    /// Every lane with ready runs (read once at start; afterwards the engine tracks them).
    fn ready_lanes(&self) -> Vec<Lane>;
    /// Every queue of every environment (the scheduler's limits at start).
    fn all_queues(&self) -> Vec<Queue>;
    /// The queues of a deployment's environment, as the deployment left them.
    fn environment_queues(&self, environment_id: &str) -> Vec<Queue>;
    /// One page of an environment's queues by name, and how many there are.
    fn list_queues(&self, environment_id: &str, offset: usize, limit: usize) -> (Vec<Queue>, u64);
    /// A queue of the environment, if it has one by that reference.
    fn queue(&self, environment_id: &str, queue: QueueRef) -> Option<Queue>;
    /// How many runs wait in a queue (ready or in retry backoff).
    fn queued_count(&self, environment_id: &str, queue: &str) -> u64;
    /// Pauses or resumes a queue. `None` if the environment has no such queue.
    fn set_queue_paused(&self, environment_id: &str, queue: QueueRef, paused: bool, now: Millis) -> Option<Queue>;
    /// Overrides a queue's limit (`None`: back to its definition's). `None` if the environment has
    /// no such queue.
    fn override_queue_limit(&self, environment_id: &str, queue: QueueRef, limit: Option<u32>, now: Millis) -> Option<Queue>;
    /// Inserts runs in one transaction, as one batch when `batch_id` is given. A run whose
    /// idempotency key matches a live key of an earlier run is not inserted: the earlier run is
    /// returned with `cached: true`. A key whose run failed or expired is released and reused.
    fn insert_runs(&self, runs: Vec<NewRun>, batch_id: Option<String>) -> Vec<Inserted>;
    /// [`Store::insert_runs`], answered as soon as it ran, before its commit (see [`Staged`]): the
    /// dispatcher may claim the runs in the same or the next group while the insert is on its way
    /// to disk, and a claim of an insert that is lost is lost with it. A trigger is answered only
    /// once `durable` settles.
    fn insert_runs_staged(&self, runs: Vec<NewRun>, batch_id: Option<String>) -> Staged<Vec<Inserted>>;
    /// Inserts a run's child runs (as [`Store::insert_runs`]) and, in the same transaction,
    /// appends the parent's journal and marks it as having one. `Conflict` (and nothing stored)
    /// if the parent is no longer executing.
    fn insert_child_runs(&self, runs: Vec<NewRun>, batch_id: Option<String>, journal: JournalWith<[Inserted]>, waiting: bool) -> Vec<Inserted>;
    /// Makes a two-phase batch, unsealed and without items; a live batch of the environment with
    /// the same idempotency key is returned instead, `true`.
    fn create_batch(&self, batch: NewBatch) -> (Batch, bool);
    /// A batch of the environment, with its runs by index and its failed items.
    fn batch(&self, environment_id: &str, id: &str) -> Option<Batch>;
    /// Adds items to an unsealed batch in one transaction: an index the batch has is counted as
    /// deduplicated and not run again; the others' runs are inserted (or found by idempotency
    /// key) as runs of the batch.
    fn add_batch_items(&self, environment_id: &str, batch_id: &str, items: Vec<NewBatchItem>, now: Millis) -> Result<ItemsAdded, BatchRefusal>;
    /// Seals the batch if every index has arrived; says how many have.
    fn seal_batch(&self, environment_id: &str, batch_id: &str, now: Millis) -> Option<Sealing>;
    /// Makes a bulk action with its runs in one transaction (PENDING; COMPLETED if it has none).
    fn create_bulk_action(&self, new: NewBulkAction) -> BulkAction;
    /// A bulk action of the environment.
    fn bulk_action(&self, environment_id: &str, id: &str) -> Option<BulkAction>;
    /// A page of the environment's bulk actions, newest first (`after` older, `before` newer),
    /// and whether there are more that way.
    fn list_bulk_actions(&self, environment_id: &str, limit: usize, after: Option<String>, before: Option<String>) -> (Vec<BulkAction>, bool);
    /// At most `limit` of a bulk action's runs from position `from` on.
    fn bulk_action_runs(&self, id: &str, from: u32, limit: usize) -> Vec<String>;
    /// Counts a batch done, if the action is still where the batch started (so a batch is
    /// counted once); completes it after its last run. Returns the action as it is now.
    fn record_bulk_progress(&self, id: &str, progress: BulkProgress) -> Option<BulkAction>;
    /// Aborts a PENDING bulk action of the environment; returns it as it is now (a finished one
    /// unchanged). `None` if there is no such action.
    fn abort_bulk_action(&self, environment_id: &str, id: &str, now: Millis) -> Option<BulkAction>;
    /// Every bulk action not finished (to carry on when the host starts).
    fn pending_bulk_actions(&self) -> Vec<BulkAction>;
    /// Forgets an idempotency key (for one task, or every task of the environment). Returns how
    /// many keys were removed.
    fn reset_idempotency_key(&self, environment_id: &str, key: &str, task_id: Option<String>) -> usize;
    /// Gives a DELAYED run a new delay (compare-and-set on DELAYED); its TTL counts from the new
    /// enqueue time.
    fn reschedule(&self, environment_id: &str, run_id: &str, until: Millis, now: Millis) -> ();
    /// Adds tags to a run, keeping order and dropping repeats. `Ok(Err(n))` when the result would
    /// have `n` tags, more than `max`; nothing changes then.
    fn add_tags(&self, environment_id: &str, run_id: &str, tags: Vec<String>, max: usize, now: Millis) -> Result<Vec<String>, usize>;
    /// Applies metadata operations to a run's current metadata, atomically; a refused change
    /// (too large, a bad key…) leaves it untouched. With `journal` (a change a run makes), the
    /// run's journal segment — `journal.entries` gets the new metadata — and the mark that its
    /// attempt has a journal commit with the change.
    fn change_metadata(&self, environment_id: &str, run_id: &str, now: Millis, ops: Vec<MetadataOp>, journal: Option<JournalWith<str>>) -> Result<String, MetadataError>;
    /// How many of an environment's runs have `status` (a scan of the environment's runs: for
    /// benchmarks and checks, not for request paths).
    fn count_runs(&self, environment_id: &str, status: RunStatus) -> u64;
    /// A run of an environment (another environment's run is `None`, like a missing one).
    fn run(&self, environment_id: &str, run_id: &str) -> Option<Run>;
    /// The child runs of an environment by id, as they are now (`None` for an unknown id).
    fn runs_by_id(&self, environment_id: &str, ids: Vec<String>) -> Vec<Option<Run>>;
    /// Runs by id, of any environment (for watchers of [`Store::changes`], which keep only
    /// their environment's); unknown ids are left out. One read however many.
    fn changed_runs(&self, ids: Vec<String>) -> Vec<Run>;
    /// Runs by id as [`Store::changed_runs`], each with its attempts and what it waits for.
    fn runs_in_detail(&self, ids: Vec<String>) -> Vec<RunDetail>;
    /// Ids of a run's children that have not ended.
    fn live_children(&self, environment_id: &str, run_id: &str) -> Vec<String>;
    /// A page of an environment's runs, newest first. `after` continues to older runs, `before`
    /// goes back to newer ones.
    fn list_runs(&self, environment_id: &str, filter: RunFilter, limit: usize, after: Option<String>, before: Option<String>) -> RunPage;
    /// Creates an imperative schedule, or updates the environment's schedule with this
    /// deduplication key. Returns the schedule and whether it is new.
    fn upsert_schedule(&self, environment_id: &str, deduplication_key: String, spec: ScheduleSpec, next_fire_at: Millis, max_schedules: usize, now: Millis) -> Result<(Schedule, bool), ScheduleRefusal>;
    /// Replaces the fields of an imperative schedule.
    fn update_schedule(&self, environment_id: &str, id: &str, spec: ScheduleSpec, next_fire_at: Millis, now: Millis) -> Result<Schedule, ScheduleRefusal>;
    /// Deletes an imperative schedule; returns it as it was.
    fn delete_schedule(&self, environment_id: &str, id: &str) -> Result<Schedule, ScheduleRefusal>;
    /// Activates (with `next_fire_at` unless it already has one) or deactivates a schedule.
    fn set_schedule_active(&self, environment_id: &str, id: &str, active: bool, next_fire_at: Option<Millis>, now: Millis) -> Option<Schedule>;
    /// A schedule of an environment (another environment's is `None`, like a missing one).
    fn schedule(&self, environment_id: &str, id: &str) -> Option<Schedule>;
    /// A page of an environment's schedules, newest first, and how many it has in all.
    fn list_schedules(&self, environment_id: &str, offset: usize, limit: usize) -> (Vec<Schedule>, u64);
    /// Active schedules whose next fire time has come, earliest first.
    fn due_schedules(&self, now: Millis, limit: usize) -> Vec<Schedule>;
    /// The earliest next fire time of any active schedule.
    fn next_schedule_fire(&self) -> Option<Millis>;
    /// Carries out fires in one transaction. Each moves its schedule on only if it is still
    /// active with the `next_fire_at` the engine saw, and then inserts its run (an existing run
    /// with the fire's idempotency key is returned `cached` instead). `None` for a fire that did
    /// not happen (the schedule changed meanwhile) or made no run.
    fn fire_schedules(&self, fires: Vec<ScheduleFire>) -> Vec<Option<Inserted>>;
    /// Makes the environment's declarative schedules those of `declared` (one per task), in one
    /// transaction: new ones are created active, changed ones take the new cron and time zone
    /// (keeping their active state), unchanged ones are left alone, and those of tasks that no
    /// longer declare one are deleted. Returns how many were deleted.
    fn sync_declarative_schedules(&self, environment_id: &str, declared: Vec<DeclaredSchedule>, now: Millis) -> usize;
    /// Makes sure project `default` with environment `dev` exists. A dev environment that never
    /// had a key gets `dev_key` (returned, to be shown once); a host that never had an admin key
    /// gets `admin_key` (returned likewise).
    fn bootstrap(&self, dev_key: NewKey, admin_key: NewKey, now: Millis) -> Bootstrapped;
    /// Whether this is an admin key of the host.
    fn is_admin_key(&self, key_hash: [u8; 32]) -> bool;
    /// Creates a secret key for an environment, creating the project and environment if needed.
    fn create_key(&self, project: &str, environment: &str, key: NewKey, now: Millis) -> KeyInfo;
    /// Every secret key of the host (never the secret itself), newest first.
    fn list_keys(&self) -> Vec<KeyInfo>;
    /// Revokes a key; requests with it are refused from now on. `None` if there is no such key.
    fn revoke_key(&self, id: &str, now: Millis) -> Option<KeyInfo>;
    /// An active key by its digest, with its environment and sealed copy.
    fn api_key(&self, key_hash: [u8; 32]) -> Option<ApiKey>;
    /// An environment's active keys (or its key `key_id`), newest first, at most `limit`.
    fn environment_keys(&self, environment_id: &str, key_id: Option<String>, limit: usize) -> Vec<ApiKey>;
    /// Keeps a sealed copy of a key made before keys were kept sealed; `false` if it had one.
    fn seal_key(&self, id: &str, sealed: crate::secrets::Sealed) -> bool;
    /// Inserts runs (as [`Store::insert_runs`], no batch) made with a one-time token, claiming
    /// the token's digest in the same transaction; `None` (nothing stored) if it was used.
    fn insert_runs_once(&self, runs: Vec<NewRun>, token_digest: [u8; 32]) -> Option<Vec<Inserted>>;
    /// Claims a one-time token's digest for `used_for`; `false` if it was used already.
    fn use_token(&self, token_digest: [u8; 32], environment_id: &str, used_for: &str, now: Millis) -> bool;
    /// An environment by id.
    fn environment(&self, id: &str) -> Option<Environment>;
    /// The environment an active key belongs to.
    fn environment_for_key(&self, key_hash: [u8; 32]) -> Option<Environment>;
    /// A host-wide value by name: `proposed` is stored by the first host to ask, and every
    /// host gets the stored value (a secret made once, a check every host must pass).
    fn host_value(&self, name: &str, proposed: Vec<u8>) -> Vec<u8>;
    /// Moves DELAYED runs whose time has come to QUEUED. Returns the lanes of the runs moved.
    fn enqueue_delayed(&self, now: Millis, limit: usize) -> Vec<Lane>;
    /// Ends the retry backoff of queued runs whose time has come. Returns their lanes.
    fn end_backoffs(&self, now: Millis, limit: usize) -> Vec<Lane>;
    /// Expires runs that were not started before their TTL. Returns how many expired.
    fn expire_due(&self, now: Millis, error: RunError, limit: usize) -> (usize, Vec<Lane>);
    /// The earliest delayed-run enqueue, retry backoff end or TTL expiry, if any.
    fn next_timer(&self) -> Option<Millis>;
    /// Creates a wait token, or returns the live token with the same idempotency key (`true`).
    /// With `journal`, the run's journal is appended in the same transaction and the run marked
    /// as having one, so a replay — even after a crash — returns this token and makes no other.
    fn create_token(&self, new: NewToken, journal: Option<JournalWith<(WaitToken, bool)>>) -> (WaitToken, bool);
    /// A token of the environment.
    fn token(&self, environment_id: &str, id: &str) -> Option<WaitToken>;
    /// Completes a waiting token with `output` (JSON text) and resumes the runs waiting for it.
    /// `None` if the environment has no such token; `Some(None)` if it was already done.
    fn complete_token(&self, environment_id: Option<String>, id: &str, output: String, now: Millis) -> Option<Completed>;
    /// One page of the environment's tokens, newest first: at most `limit` after (older than) or
    /// before (newer than) a cursor id.
    fn list_tokens(&self, environment_id: &str, filter: TokenFilter, limit: usize, after: Option<String>, before: Option<String>) -> (Vec<WaitToken>, bool);
    /// Checkpoints an executing attempt that waits until `until`, in one transaction: the run
    /// becomes WAITING (in `checkpoint.update`), the journal recorded since the last checkpoint is
    /// appended, a DATETIME waitpoint is created, and the logs and usage so far are stored. A run
    /// canceled meanwhile keeps its status; the attempt is recorded as canceled. Answered as soon
    /// as it ran ([`Staged`]), like every checkpoint.
    fn checkpoint(&self, checkpoint: FinishAttempt, journal: Vec<u8>, until: Millis) -> Staged<()>;
    /// Checkpoints an executing attempt that waits for token `token` (as [`Store::checkpoint`]
    /// does for a time). If the token was done by the time this commits, the run goes straight
    /// back to its queue: returns its lane.
    fn checkpoint_on_token(&self, checkpoint: FinishAttempt, journal: Vec<u8>, token: String) -> Staged<Option<Lane>>;
    /// Checkpoints an executing attempt that waits for child runs `children` to end (as
    /// [`Store::checkpoint`] does for a time). If they had all ended by the time this commits,
    /// the run goes straight back to its queue: returns its lane.
    fn checkpoint_on_runs(&self, checkpoint: FinishAttempt, journal: Vec<u8>, children: Vec<String>) -> Staged<Option<Lane>>;
    /// The journal of an attempt: its segments in order, concatenated.
    fn journal(&self, environment_id: &str, run_id: &str, attempt: u32) -> Vec<u8>;
    /// Bytes and segments of every stored journal (for the benchmark).
    fn journal_size(&self) -> (u64, u64);
    /// What a run waits for now: pending waitpoints and children that have not ended.
    fn waiting_for(&self, environment_id: &str, run_id: &str) -> Vec<WaitingFor>;
    /// Completes DATETIME waitpoints whose time came and times out wait tokens whose timeout
    /// passed (with Trigger.dev's `TRIGGER_WAITPOINT_TIMEOUT` error), and puts the WAITING runs
    /// waiting for them back in the queue (keeping their score). Returns those runs' lanes.
    fn resume_due(&self, now: Millis, limit: usize) -> Vec<Lane>;
    /// The dashboard's reads (each scans the environment's runs, so they are bounded and kept off
    /// the engine's paths). Runs created in `buckets` buckets of `bucket_ms` from `from`, counted
    /// by bucket and the status they have now.
    fn runs_by_status(&self, environment_id: &str, from: Millis, bucket_ms: i64, buckets: u32) -> Vec<StatusCount>;
    /// The spans runs spent queued (first queueing and retry waits) that overlap `from..to`, the
    /// latest `limit` of them.
    fn queue_spans(&self, environment_id: &str, from: Millis, to: Millis, limit: usize) -> QueueSpans;
    /// Durations of the runs that finished in `from..to` after starting, the latest `limit`.
    fn run_durations(&self, environment_id: &str, from: Millis, to: Millis, limit: usize) -> Vec<RunDuration>;
    /// Every wait of a run, ended or not, oldest first (none for another environment's run).
    fn run_waits(&self, environment_id: &str, run_id: &str) -> Vec<WaitRecord>;
    /// The tree a run belongs to: its root and the root's descendants, by depth, at most `limit`
    /// (none for another environment's run).
    fn run_tree(&self, environment_id: &str, run_id: &str, limit: usize) -> Vec<TreeNode>;
}
