//! The [`Hub`]: what realtime subscribers share, fed by the store's list of the runs each commit
//! changed ([`Engine::changes`]).
//!
//! After a commit that changed runs, and only while someone follows realtime, the hub reads the
//! changed runs once (one read for the group, whatever the number of subscribers) and keeps them
//! in a bounded log of recent groups, numbered. A subscriber's position is a group number: it
//! takes the runs of the groups after it that match its feed (a run, runs with tags, a batch),
//! so a commit that changed nothing a subscriber watches costs it nothing but a scan of the log.
//! kiln's own Server-Sent Events of one run share one watch channel per run, refreshed from the
//! same groups (one more read for the group, for their attempts).
//!
//! It must never lose a change: when it cannot say what changed after a position (the log was
//! trimmed, nobody listened, a group's runs could not be read), [`Hub::since`] answers
//! [`Since::Unknown`] and the subscriber reads its whole feed again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, watch};

use crate::engine::{Engine, RunView};
use crate::model::Run;
use crate::store::RunChanges;

/// Most groups the log keeps.
const MAX_GROUPS: usize = 4_096;

/// Most bytes of runs (payloads, outputs, metadata) the log keeps.
const MAX_BYTES: usize = 64 << 20;

/// How long after the last realtime request the hub keeps reading changed runs: a subscriber
/// between two long-polls has no request open, and must still find the groups it missed.
const INTEREST_MS: i64 = 120_000;

/// Most realtime subscribers (open streams and held long-polls) one environment may have at once.
pub const MAX_SUBSCRIBERS_PER_ENVIRONMENT: usize = 200;

/// Most realtime subscribers the host holds at once, all environments together.
pub const MAX_SUBSCRIBERS: usize = 2_000;

/// One committed group: its number and the runs it changed, as they were after it.
struct Group {
    seq: u64,
    runs: Vec<Arc<Run>>,
}

/// What changed after a position.
pub(super) enum Since {
    /// The matching runs (each once, as it is now) and the position they bring the subscriber to.
    Runs(Vec<Arc<Run>>, u64),
    /// Not known: read the feed again. The position to take after that read.
    Unknown(u64),
}

/// A run as kiln's SSE subscribers of it receive it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub(super) json: String,
    pub(super) finished: bool,
}

pub(super) type Watched = watch::Sender<Option<Arc<Snapshot>>>;

struct State {
    /// Oldest first.
    groups: VecDeque<Group>,
    bytes: usize,
    /// The newest group's number.
    seq: u64,
    /// Every group numbered above this is in `groups`.
    known_after: u64,
    /// SSE watches, by (environment, run).
    sse: HashMap<(String, String), Arc<Watched>>,
}

/// The shared state of realtime subscribers (see the module's documentation).
pub struct Hub {
    engine: Arc<Engine>,
    /// Distinguishes this process's positions from an earlier one's.
    boot: u64,
    state: Mutex<State>,
    /// The newest group's number; waiters wake when it moves.
    latest: watch::Sender<u64>,
    /// Turns true when the host stops: held requests answer at once.
    closing: watch::Sender<bool>,
    /// When the last realtime request came (ms since 1970).
    last_request: AtomicI64,
    /// Subscribers held now, by environment (see [`Hub::admit`]).
    subscribers: Mutex<HashMap<String, usize>>,
}

/// A realtime subscriber's place, held as long as its stream or long-poll is open.
pub(super) struct Subscriber {
    hub: Arc<Hub>,
    environment_id: String,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut held = self.hub.held();
        if let Some(count) = held.get_mut(&self.environment_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.environment_id);
            }
        }
    }
}

fn size_of(run: &Run) -> usize {
    512 + run.payload.len()
        + run.output.as_ref().map_or(0, String::len)
        + run.metadata.as_ref().map_or(0, String::len)
}

fn wall_ms() -> i64 {
    crate::model::now_ms()
}

impl Hub {
    /// A hub over the engine's runs, with the task that follows its changes running.
    pub fn start(engine: Arc<Engine>) -> Arc<Hub> {
        let changes = engine.changes();
        let hub = Arc::new(Hub {
            engine,
            boot: u64::try_from(wall_ms()).unwrap_or(0),
            state: Mutex::new(State {
                groups: VecDeque::new(),
                bytes: 0,
                seq: 0,
                known_after: 0,
                sse: HashMap::new(),
            }),
            latest: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            last_request: AtomicI64::new(i64::MIN / 2),
            subscribers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(pump(Arc::downgrade(&hub), changes));
        hub
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more subscriber of `environment_id`, or a 429 when the environment or
    /// the host holds as many as it may: every open stream costs the host memory, so a client
    /// cannot open them without end.
    pub(super) fn admit(
        self: &Arc<Self>,
        environment_id: &str,
    ) -> Result<Subscriber, crate::api::ApiError> {
        let mut held = self.held();
        let total: usize = held.values().sum();
        let mine = held.get(environment_id).copied().unwrap_or(0);
        let refused = if mine >= MAX_SUBSCRIBERS_PER_ENVIRONMENT {
            Some(format!(
                "this environment already has {mine} realtime subscriptions open, the most it may \
                 have ({MAX_SUBSCRIBERS_PER_ENVIRONMENT}); close some streams, or watch runs by \
                 tag or batch instead of one stream per run"
            ))
        } else if total >= MAX_SUBSCRIBERS {
            Some(format!(
                "this host already holds {total} realtime subscriptions, the most it may \
                 ({MAX_SUBSCRIBERS}); try again later"
            ))
        } else {
            None
        };
        if let Some(message) = refused {
            return Err(crate::api::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                message,
            ));
        }
        *held.entry(environment_id.to_owned()).or_insert(0) += 1;
        Ok(Subscriber {
            hub: self.clone(),
            environment_id: environment_id.to_owned(),
        })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// This process's mark in the positions it gives out.
    pub(super) fn boot(&self) -> u64 {
        self.boot
    }

    /// Held requests answer now; no new one waits.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A realtime request came: keep reading changed runs for a while. Returns the current
    /// position, to take before reading a feed (a change committed after it is in a later group).
    pub(super) fn touch(&self) -> u64 {
        let now = wall_ms();
        self.last_request.store(now, Ordering::SeqCst);
        self.engine
            .want_changes_until(now.saturating_add(INTEREST_MS));
        self.state().seq
    }

    fn interested(&self) -> bool {
        wall_ms() - self.last_request.load(Ordering::SeqCst) < INTEREST_MS
            || self.latest.receiver_count() > 0
    }

    /// The runs matching `matches` that changed after position `after`, or `Unknown` if that is
    /// not known here.
    pub(super) fn since(&self, after: u64, matches: impl Fn(&Run) -> bool) -> Since {
        let state = self.state();
        if after < state.known_after || after > state.seq {
            return Since::Unknown(state.seq);
        }
        let mut seen = HashSet::new();
        let mut runs = Vec::new();
        // Newest first, so each run is taken as it is now.
        for group in state.groups.iter().rev().take_while(|g| g.seq > after) {
            for run in &group.runs {
                if matches(run) && seen.insert(run.id.as_str()) {
                    runs.push(run.clone());
                }
            }
        }
        runs.reverse();
        Since::Runs(runs, state.seq)
    }

    /// Waits until a group after `position` arrives; `false` if `deadline` passed or the host is
    /// stopping first.
    pub(super) async fn wait_past(&self, position: u64, deadline: tokio::time::Instant) -> bool {
        let mut latest = self.latest.subscribe();
        let mut closing = self.closing.subscribe();
        if *closing.borrow() {
            return false;
        }
        tokio::select! {
            moved = latest.wait_for(|seq| *seq > position) => moved.is_ok(),
            _ = closing.wait_for(|c| *c) => false,
            _ = tokio::time::sleep_until(deadline) => false,
        }
    }

    /// Whether the host is stopping.
    pub(super) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Subscribes to kiln's SSE watch of a run, if one exists.
    pub(super) fn existing_watch(
        &self,
        env_id: &str,
        run_id: &str,
    ) -> Option<watch::Receiver<Option<Arc<Snapshot>>>> {
        let state = self.state();
        state
            .sse
            .get(&(env_id.to_owned(), run_id.to_owned()))
            .map(|w| w.subscribe())
    }

    /// Subscribes to kiln's SSE watch of a run, starting it at `current` if there is none.
    pub(super) fn watch_run(
        &self,
        env_id: &str,
        run_id: &str,
        current: Snapshot,
    ) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let key = (env_id.to_owned(), run_id.to_owned());
        let mut state = self.state();
        state
            .sse
            .entry(key)
            .or_insert_with(|| Arc::new(watch::Sender::new(Some(Arc::new(current)))))
            .subscribe()
    }

    /// A group committed: read its runs (once) if anyone follows, log them, refresh the SSE
    /// watches among them, and wake the waiters.
    async fn record(&self, ids: &[String]) {
        let sse_watched: Vec<String> = {
            let mut state = self.state();
            state.sse.retain(|_, w| w.receiver_count() > 0);
            let watched: HashSet<&str> = state.sse.keys().map(|(_, run)| run.as_str()).collect();
            ids.iter()
                .filter(|id| watched.contains(id.as_str()))
                .cloned()
                .collect()
        };
        let runs = if self.interested() {
            match self.engine.changed_runs(ids.to_vec()).await {
                Ok(runs) => Some(runs),
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: reading the changed runs failed");
                    None
                }
            }
        } else {
            None
        };
        if !sse_watched.is_empty() {
            self.refresh_sse(sse_watched).await;
        }
        let mut state = self.state();
        state.seq += 1;
        let seq = state.seq;
        match runs {
            Some(runs) => {
                let runs: Vec<Arc<Run>> = runs.into_iter().map(Arc::new).collect();
                state.bytes += runs.iter().map(|r| size_of(r)).sum::<usize>();
                state.groups.push_back(Group { seq, runs });
                while state.groups.len() > MAX_GROUPS || state.bytes > MAX_BYTES {
                    let Some(old) = state.groups.pop_front() else {
                        break;
                    };
                    state.bytes -= old.runs.iter().map(|r| size_of(r)).sum::<usize>();
                    state.known_after = old.seq;
                }
            }
            None => {
                state.groups.clear();
                state.bytes = 0;
                state.known_after = seq;
            }
        }
        drop(state);
        self.latest.send_replace(seq);
    }

    /// Which runs changed is not known: positions before now cannot be served from the log, and
    /// every SSE watch is read again.
    async fn forget(&self) {
        let watched: Vec<String> = {
            let mut state = self.state();
            state.seq += 1;
            state.known_after = state.seq;
            state.groups.clear();
            state.bytes = 0;
            state.sse.retain(|_, w| w.receiver_count() > 0);
            state.sse.keys().map(|(_, run)| run.clone()).collect()
        };
        if !watched.is_empty() {
            self.refresh_sse(watched).await;
        }
        let seq = self.state().seq;
        self.latest.send_replace(seq);
    }

    /// Reads SSE-watched runs (one read for all) and publishes those that changed.
    pub(super) async fn refresh_sse(&self, ids: Vec<String>) {
        let views = match self.engine.run_views(ids).await {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(error = %e, "realtime: reading watched runs failed");
                return;
            }
        };
        let state = self.state();
        for view in views {
            let key = (view.run.environment_id.clone(), view.run.id.clone());
            if let Some(sender) = state.sse.get(&key) {
                let now = snapshot(&view);
                sender.send_if_modified(|last| {
                    if last.as_deref() == Some(&now) {
                        return false;
                    }
                    *last = Some(Arc::new(now));
                    true
                });
            }
        }
    }
}

/// A run as kiln's SSE streams send it: as `GET /api/v3/runs/{id}` shows it.
pub(super) fn snapshot(view: &RunView) -> Snapshot {
    let dto = super::super::dto::RunDto::from(view);
    Snapshot {
        finished: dto.is_completed(),
        json: serde_json::to_string(&dto).unwrap_or_default(),
    }
}

async fn pump(hub: Weak<Hub>, mut changes: broadcast::Receiver<RunChanges>) {
    loop {
        let change = changes.recv().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        // Streams held open (SSE, long-polls) keep the changes coming.
        if hub.interested() {
            hub.engine
                .want_changes_until(wall_ms().saturating_add(INTEREST_MS));
        }
        match change {
            Ok(RunChanges::Runs(ids)) => hub.record(&ids).await,
            Ok(RunChanges::Unknown) | Err(broadcast::error::RecvError::Lagged(_)) => {
                hub.forget().await
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
