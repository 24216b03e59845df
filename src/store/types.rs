//! The values the store takes and returns: plain domain data, the same for every backend.
//!
//! Nothing here names a database type. The engine computes these (every option resolved, every
//! status decided) and a backend persists them; what comes back is domain data too.

use crate::model::*;
use crate::secrets::Sealed;
use crate::store::StoreError;

/// The run ids one committed write group inserted or changed.
pub type ChangedRuns = std::sync::Arc<[String]>;

/// What a watcher of [`super::Store::changes`] learns of one committed write group.
#[derive(Debug, Clone)]
pub enum RunChanges {
    /// These runs changed (any environment's); nothing else did.
    Runs(ChangedRuns),
    /// Which runs changed is not known (a read failed): re-read what you watch.
    Unknown,
}

/// A lane that holds ready runs, as a backend shared by several hosts tells each of them (a run
/// another host queued, or one a claim passed over while another write held it): a hint to
/// claim, never the truth.
#[derive(Debug, Clone)]
pub enum LaneHint {
    Lane(crate::model::Lane),
    /// Every lane of this environment (one too long to name).
    Environment(String),
    /// Every lane (hints may have been missed).
    All,
}

/// What other hosts sharing the database did that this host's engine acts on. Hints, never the
/// truth: a host that misses one finds the same on its next periodic pass.
#[derive(Debug, Clone)]
pub enum HostHint {
    /// Runs of this environment gave their slots back (an attempt ended, on any host): lanes a
    /// limit held back may start runs again.
    Slots(String),
    /// These runs were canceled (through any host): an attempt of one executing here stops.
    Canceled(Vec<String>),
    /// A host's lease lapsed, or its previous start's did: the runs it held are for a live host
    /// to take over ([`Store::in_flight_runs`](crate::store::Store)), once.
    Orphans,
}

/// How a host takes part in a database other hosts share (PostgreSQL).
#[derive(Debug, Clone)]
pub struct SharedHost {
    /// The host's name, the same on every start of one data dir: a start ends its previous
    /// start's lease, so the runs that one held are taken over at once.
    pub name: String,
    /// How long the runs a host started stay its own after it last renewed its lease; it renews
    /// every third of this.
    pub lease: std::time::Duration,
    /// The concurrency limit of an environment that sets none (the engine's default).
    pub default_environment_limit: u32,
}

/// A component of a deployment about to be stored: its bytes and their SHA-256 digest, the file
/// name the upload gave it (if any), and the tasks it defines, validated.
#[derive(Debug, Clone)]
pub struct NewComponent {
    pub digest: [u8; 32],
    pub name: Option<String>,
    pub bytes: Vec<u8>,
    pub tasks: Vec<TaskDefinition>,
}

/// A secret key about to be stored: the plaintext (shown once), its SHA-256 digest, and its copy
/// sealed under the host's secrets key.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub plaintext: String,
    pub hash: [u8; 32],
    pub sealed: Option<Sealed>,
}

/// An active secret key as the API authenticates with it.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub environment: Environment,
    pub hash: [u8; 32],
    /// `None` for a key made before kiln kept keys sealed, until it is sealed on use.
    pub sealed: Option<Sealed>,
}

/// What a start found or created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub dev: Environment,
    /// The dev environment's first key, when this start created it.
    pub dev_key: Option<String>,
    /// The host's first admin key, when this start created it.
    pub admin_key: Option<String>,
}

/// A stored key as shown to an admin: never the secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub project: String,
    pub environment: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A run to insert, every option resolved by the engine.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub environment_id: String,
    pub task_id: String,
    /// QUEUED, DELAYED or PENDING_VERSION.
    pub status: RunStatus,
    pub payload: String,
    pub queue: String,
    pub machine: Machine,
    pub retry: RetryPolicy,
    pub oom_machine: Option<Machine>,
    /// Queue timestamp: the trigger time, or the delay's end.
    pub queue_timestamp: Millis,
    pub priority_ms: i64,
    pub delay_until: Option<Millis>,
    pub ttl: Option<std::time::Duration>,
    pub expires_at: Option<Millis>,
    /// The key and when it stops matching repeats.
    pub idempotency: Option<(String, Millis)>,
    /// The user's key and scope behind the key, shown instead of the hash.
    pub idempotency_options: Option<IdempotencyKeyOptions>,
    pub tags: Vec<String>,
    pub metadata: Option<String>,
    pub max_duration: Option<std::time::Duration>,
    pub concurrency_key: Option<String>,
    pub lock_to_version: Option<String>,
    /// Set for a child run: its parent, root and depth.
    pub parent: Option<ParentLink>,
    pub now: Millis,
}

/// Where a child run hangs in its tree.
#[derive(Debug, Clone)]
pub struct ParentLink {
    pub parent_run_id: String,
    pub root_run_id: String,
    pub depth: u32,
}

/// A run as inserted, or the run an idempotency key already pointed to.
#[derive(Debug, Clone)]
pub struct Inserted {
    pub run: Run,
    pub cached: bool,
}

/// A run with its attempts (oldest first) and what it waits for while WAITING.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub waiting_for: Vec<WaitingFor>,
}

/// Filters of the runs list; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub statuses: Vec<RunStatus>,
    pub task_ids: Vec<String>,
    pub versions: Vec<String>,
    /// Runs carrying any of these tags.
    pub tags: Vec<String>,
    /// Runs carrying every one of these tags.
    pub all_tags: Vec<String>,
    /// Runs in any of these queues (`task/<id>` for a task's own).
    pub queues: Vec<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
    pub batch_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One page of runs, newest first, with cursors for the neighbouring pages.
#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Id to pass as `after` for the next (older) page.
    pub next: Option<String>,
    /// Id to pass as `before` for the previous (newer) page.
    pub previous: Option<String>,
}

/// A two-phase batch to make (or the live batch with its idempotency key).
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub environment_id: String,
    pub run_count: u32,
    /// The key and when it stops matching repeats.
    pub idempotency: Option<(String, Millis)>,
    pub idempotency_options: Option<IdempotencyKeyOptions>,
    pub now: Millis,
}

/// One item of a two-phase batch: the run it becomes, or why it cannot.
#[derive(Debug, Clone)]
pub struct NewBatchItem {
    pub index: u32,
    pub task_id: String,
    pub run: Result<NewRun, BatchItemError>,
}

/// What adding items to a batch did.
#[derive(Debug, Clone, Default)]
pub struct ItemsAdded {
    /// Indexes taken now.
    pub accepted: u32,
    /// Indexes the batch had already (not run again).
    pub deduplicated: u32,
    /// The runs of the accepted items (an existing run, `cached`, for an idempotency key).
    pub inserted: Vec<Inserted>,
}

/// Why items were not added to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRefusal {
    NotFound,
    /// Every index has arrived; the batch takes no more.
    Sealed,
}

/// A batch after its items' stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealing {
    pub sealed: bool,
    pub enqueued: u32,
    pub expected: u32,
}

/// A bulk action to make, with its runs (fixed now).
#[derive(Debug, Clone)]
pub struct NewBulkAction {
    pub environment_id: String,
    pub name: Option<String>,
    pub kind: BulkKind,
    pub run_ids: Vec<String>,
    pub now: Millis,
}

/// A batch of a bulk action done: how far it got and what it counted.
#[derive(Debug, Clone, Copy)]
pub struct BulkProgress {
    /// The position the batch started at (the action's `processed` it was read at).
    pub from: u32,
    pub done: u32,
    pub success: u32,
    pub failure: u32,
    pub now: Millis,
}

/// A status change computed by the engine, applied with compare-and-set on `expected`.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    pub run_id: String,
    /// The run's environment: a change to another environment's run is a conflict.
    pub environment_id: String,
    pub expected: RunStatus,
    pub status: RunStatus,
    pub available_at: Option<Millis>,
    pub error: Option<RunError>,
    /// The machine for the next attempt, when it changes.
    pub machine: Option<Machine>,
    /// Whether the current attempt has a checkpoint after the change.
    pub checkpointed: bool,
    pub now: Millis,
}

/// The end of one attempt: the run's new state, the attempt's result, usage and logs.
#[derive(Debug, Clone)]
pub struct FinishAttempt {
    pub update: RunUpdate,
    pub attempt: u32,
    /// The claim of the attempt (see [`AttemptStart::claim`]); `None` (a recovery, a cancel)
    /// checks none.
    pub claim: Option<String>,
    pub attempt_status: AttemptStatus,
    /// The attempt's own error; the run's error (in `update`) is only set once it is final.
    pub attempt_error: Option<RunError>,
    pub output: Option<String>,
    pub fuel_used: u64,
    pub compute_ms: u64,
    pub logs: Vec<LogLine>,
}

/// What an attempt runs with (see [`Store::start_attempt`]).
#[derive(Debug, Clone, Default)]
pub struct AttemptStart {
    /// The claim that started the attempt, on a database other hosts share: the attempt's
    /// writes carry it ([`FinishAttempt::claim`], [`JournalWith::claim`]) and are refused once
    /// the run was claimed again or taken over by another host. `None` on SQLite.
    pub claim: Option<String>,
    pub env_vars: Vec<StoredVar>,
    pub allowed_outbound_hosts: Vec<String>,
    /// The run's project and environment slugs.
    pub project: String,
    pub environment: String,
}

/// A run a claim took off its lane.
#[derive(Debug, Clone)]
pub enum Claimed {
    /// Its attempt started (claim is start): the run as it is now, what the attempt runs with,
    /// and — for an attempt that continues from a checkpoint — the journal it replays.
    Started {
        run: Box<Run>,
        start: AttemptStart,
        journal: Option<Vec<u8>>,
    },
    /// No deployed version has its task, and it never started: it waits in PENDING_VERSION.
    Parked { run_id: String },
    /// The lane has ready runs, but a limit held by runs executing elsewhere (another host's, on
    /// a shared database) left no slot for as many as were asked: the lane should be tried again
    /// when a slot of its environment comes free. At most one per lane, after its started runs.
    Limited,
}

/// An attempt's end and the claim of the runs that take over its slot, written together (see
/// `Store::finish_and_claim`).
#[derive(Debug)]
pub struct FinishedAndClaimed {
    /// The end as `Store::finish_attempt` answers it (the parents it resumed), or why it was not
    /// recorded (nothing of it is stored then); the claim went ahead either way.
    pub finished: Result<Vec<Lane>, StoreError>,
    /// Each lane's runs, as `Store::claim_runs` answers them.
    pub claimed: Vec<Vec<Claimed>>,
}

/// A run's journal to store together with an effect the run has (children it triggers, a token
/// it makes, a metadata change): `entries(effect)` returns the encoded entries the attempt recorded
/// since the last checkpoint followed by the call's own entry, which names the effect's result.
pub struct JournalWith<T: ?Sized> {
    pub run_id: String,
    pub environment_id: String,
    pub attempt: u32,
    /// The claim of the attempt (see [`AttemptStart::claim`]); `None` checks none.
    pub claim: Option<String>,
    pub entries: EntriesFor<T>,
    /// Log lines written since the last checkpoint, stored with the effect.
    pub logs: Vec<LogLine>,
}

/// Builds a journal segment once the effect's result is known.
pub type EntriesFor<T> = Box<dyn FnOnce(&T) -> Vec<u8> + Send>;

/// An environment as an admin sees it.
#[derive(Debug, Clone)]
pub struct EnvironmentInfo {
    pub environment: Environment,
    /// `None`: the host's default.
    pub concurrency_limit: Option<u32>,
    /// Outbound HTTP rules (`scheme://host[:port]`); empty: no host.
    pub allowed_outbound_hosts: Vec<String>,
}

/// A change of an environment's limits; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentChange {
    pub concurrency_limit: Option<Option<u32>>,
    pub max_component_bytes: Option<Option<u64>>,
    pub max_payload_bytes: Option<Option<u64>>,
    /// The whole new allow-list (empty: no host).
    pub allowed_outbound_hosts: Option<Vec<String>>,
}

/// The queue every run of `task` uses unless the task or the trigger names another.
pub fn task_queue_name(task: &TaskDefinition) -> String {
    match &task.queue {
        Some(q) => q.name.clone(),
        None => format!("{TASK_QUEUE_PREFIX}{}", task.id),
    }
}

/// A completion: the token as it is now, and the lanes of the runs it resumed (`None` when the
/// token was already done).
pub type Completed = (WaitToken, Option<Vec<Lane>>);

/// Filters of the tokens list; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub statuses: Vec<TokenStatus>,
    pub idempotency_key: Option<String>,
    /// Tokens carrying any of these tags.
    pub tags: Vec<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
}

/// One stored variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVar {
    pub environment_id: String,
    pub name: String,
    pub sealed: Sealed,
    /// Read back redacted (Trigger.dev's `isSecret`); runs still see the value. Once secret, a
    /// variable stays secret when its value is written again.
    pub is_secret: bool,
}

/// The fields of an imperative schedule, validated by the engine.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub task_id: String,
    pub cron: String,
    pub timezone: String,
    pub external_id: Option<String>,
}

/// Why a schedule write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleRefusal {
    NotFound,
    /// Declarative schedules change only with a deploy.
    Declarative,
    /// The environment has this many schedules, the most it may have.
    TooMany(usize),
}

/// A schedule a deployed version declares, with its first fire time.
#[derive(Debug, Clone)]
pub struct DeclaredSchedule {
    pub task_id: String,
    pub cron: String,
    pub timezone: String,
    pub next_fire_at: Option<Millis>,
}

/// One fire of a due schedule, planned by the engine.
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    pub schedule_id: String,
    /// The `next_fire_at` the engine saw; the fire happens only if it is still that.
    pub expected_next: Millis,
    /// The tick the run is for; becomes `last_fire_at` when a run is made.
    pub timestamp: Millis,
    pub next_fire_at: Option<Millis>,
    /// `None` when the task is in no deployed version: the tick passes without a run.
    pub run: Option<NewRun>,
}

impl FinishAttempt {
    /// Closes an attempt kiln ends itself (recovery, cancel, a failure outside the guest): no
    /// output, no usage, no logs of its own.
    pub fn closing(
        update: RunUpdate,
        attempt: u32,
        attempt_status: AttemptStatus,
        attempt_error: Option<RunError>,
    ) -> FinishAttempt {
        FinishAttempt {
            update,
            attempt,
            claim: None,
            attempt_status,
            attempt_error,
            output: None,
            fuel_used: 0,
            compute_ms: 0,
            logs: Vec::new(),
        }
    }
}

/// When a write answered before its commit becomes durable (see [`Staged`]). Cheap to clone;
/// every clone sees the same outcome.
#[derive(Debug, Clone)]
pub struct Durability(tokio::sync::watch::Receiver<Option<Result<(), StoreError>>>);

impl Durability {
    /// A durability and the sender that settles it.
    pub(crate) fn pending() -> (
        tokio::sync::watch::Sender<Option<Result<(), StoreError>>>,
        Durability,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Durability(rx))
    }

    /// A write that is durable already.
    pub fn settled() -> Durability {
        let (tx, durable) = Durability::pending();
        let _ = tx.send(Some(Ok(())));
        durable
    }

    /// Waits until the write is committed durably; `Err` if its transaction failed (nothing of
    /// it was stored).
    pub async fn wait(&self) -> Result<(), StoreError> {
        let mut rx = self.0.clone();
        loop {
            if let Some(outcome) = rx.borrow_and_update().clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Whether the write is durable now (`None`: not settled yet).
    pub fn now(&self) -> Option<Result<(), StoreError>> {
        self.0.borrow().clone()
    }
}

/// The result of a write that was answered as soon as it ran, before its commit: the attempt path
/// goes on at once (an optimistic start), and whatever leaves the sandbox waits for `durable`.
/// Writes queued after this one commit with it or after it, never before.
#[derive(Debug, Clone)]
pub struct Staged<T> {
    pub value: T,
    pub durable: Durability,
}
