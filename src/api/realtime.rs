//! Realtime: `GET /realtime/v1/runs/{id}` and `GET /realtime/v1/runs?tags=…` stream run changes
//! as Server-Sent Events (`event: run`, `data:` the run as `GET /api/v3/runs/{id}` shows it).
//!
//! A subscriber gets the current state first, then every change, until the run has finished.
//! Subscribers of one run share one watch channel: the [`Hub`] re-reads each watched run once
//! after a commit of the store and publishes it if it changed, so a change costs one read however
//! many clients watch the run.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::{ApiError, ApiState, Authed, dto};
use crate::engine::{Engine, EngineError};
use crate::model::{Environment, Millis};
use crate::store::RunFilter;

/// A run as a subscriber receives it.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    json: String,
    finished: bool,
}

type Watched = watch::Sender<Option<Arc<Snapshot>>>;

/// Most runs the tags stream sends per change (and first).
const TAGS_PAGE: usize = 100;

/// The shared watch channels of watched runs, refreshed after every store commit.
pub struct Hub {
    engine: Arc<Engine>,
    runs: Mutex<HashMap<(String, String), Arc<Watched>>>,
}

/// The run as `GET /api/v3/runs/{id}` shows it, if the environment has it.
async fn run_dto(
    engine: &Engine,
    env_id: &str,
    run_id: &str,
) -> Result<Option<dto::RunDto>, EngineError> {
    Ok(engine
        .run_view(env_id, run_id)
        .await?
        .as_ref()
        .map(dto::RunDto::from))
}

async fn snapshot(
    engine: &Engine,
    env_id: &str,
    run_id: &str,
) -> Result<Option<Snapshot>, EngineError> {
    let Some(dto) = run_dto(engine, env_id, run_id).await? else {
        return Ok(None);
    };
    Ok(Some(Snapshot {
        finished: dto.is_completed(),
        json: serde_json::to_string(&dto).unwrap_or_default(),
    }))
}

impl Hub {
    /// A hub over the engine's runs, with its refresh task running.
    pub fn start(engine: Arc<Engine>) -> Arc<Hub> {
        let commits = engine.commits();
        let hub = Arc::new(Hub {
            engine,
            runs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(pump(Arc::downgrade(&hub), commits));
        hub
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Watched>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to a run of the environment; the receiver holds its current state already.
    async fn subscribe(
        &self,
        env_id: &str,
        run_id: &str,
    ) -> Result<watch::Receiver<Option<Arc<Snapshot>>>, ApiError> {
        let key = (env_id.to_owned(), run_id.to_owned());
        if let Some(sender) = self.watched().get(&key) {
            return Ok(sender.subscribe());
        }
        let current = snapshot(&self.engine, env_id, run_id)
            .await?
            .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id.to_owned())))?;
        let mut watched = self.watched();
        let sender = watched
            .entry(key)
            .or_insert_with(|| Arc::new(watch::Sender::new(Some(Arc::new(current)))));
        Ok(sender.subscribe())
    }

    /// Re-reads every watched run once and publishes those that changed; forgets runs nobody
    /// watches any more.
    async fn refresh(&self) {
        let watched: Vec<((String, String), Arc<Watched>)> = {
            let mut runs = self.watched();
            runs.retain(|_, s| s.receiver_count() > 0);
            runs.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        for ((env_id, run_id), sender) in watched {
            match snapshot(&self.engine, &env_id, &run_id).await {
                Ok(Some(now)) => {
                    sender.send_if_modified(|last| {
                        if last.as_deref() == Some(&now) {
                            return false;
                        }
                        *last = Some(Arc::new(now));
                        true
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(run = %run_id, error = %e, "realtime: reading the run failed")
                }
            }
        }
    }
}

async fn pump(hub: Weak<Hub>, mut commits: watch::Receiver<u64>) {
    while commits.changed().await.is_ok() {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        hub.refresh().await;
    }
}

fn event(snapshot: &Snapshot) -> Result<Event, Infallible> {
    Ok(Event::default().event("run").data(snapshot.json.clone()))
}

/// `GET /realtime/v1/runs/{id}`: the run now, then each change, until it has finished.
pub(super) async fn subscribe_run(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(run_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = state.realtime.subscribe(&env.id, &run_id).await?;
    let stream =
        futures_util::stream::unfold((rx, false, true), |(mut rx, done, first)| async move {
            if done || (!first && rx.changed().await.is_err()) {
                return None;
            }
            let snapshot = rx.borrow_and_update().clone()?;
            Some((event(&snapshot), (rx, snapshot.finished, false)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /realtime/v1/runs?tags=a,b`: the newest runs with any of the tags, then each run of
/// them that changes (new ones included). Open until the client goes.
pub(super) async fn subscribe_tags(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tags: Vec<String> = query
        .get("tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        return Err(ApiError::bad_request(
            "give `tags` (comma-separated) to watch runs by tag, or watch one run at /realtime/v1/runs/{id}",
        ));
    }
    if let Some(other) = query.keys().find(|k| *k != "tags") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{other}`; supported: tags"
        )));
    }
    let commits = state.engine.commits();
    let watch = TagWatch {
        engine: state.engine.clone(),
        env,
        tags,
        seen: HashMap::new(),
        pending: Vec::new(),
    };
    let stream = futures_util::stream::unfold(
        (watch, commits, true),
        |(mut w, mut commits, mut first)| async move {
            loop {
                if let Some(json) = w.pending.pop() {
                    let event = Ok(Event::default().event("run").data(json));
                    return Some((event, (w, commits, first)));
                }
                if !first && commits.changed().await.is_err() {
                    return None;
                }
                first = false;
                if let Err(e) = w.poll().await {
                    tracing::warn!(error = %e, "realtime: reading runs by tag failed");
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One tags subscription: what it has sent, by run and last change.
struct TagWatch {
    engine: Arc<Engine>,
    env: Environment,
    tags: Vec<String>,
    seen: HashMap<String, Millis>,
    /// Events to send, last first.
    pending: Vec<String>,
}

impl TagWatch {
    /// Queues the runs with the tags that changed since they were last sent.
    async fn poll(&mut self) -> Result<(), EngineError> {
        let filter = RunFilter {
            tags: self.tags.clone(),
            ..RunFilter::default()
        };
        let page = self
            .engine
            .list_runs(&self.env, filter, TAGS_PAGE, None, None)
            .await?;
        let mut changed: HashSet<String> = HashSet::new();
        for run in &page.runs {
            if self.seen.get(&run.id) != Some(&run.updated_at) {
                self.seen.insert(run.id.clone(), run.updated_at);
                changed.insert(run.id.clone());
            }
        }
        // Only the newest runs are watched, and a run that left them never comes back (ids grow
        // with time): remember no more than the page, however long the client stays.
        self.seen
            .retain(|id, _| page.runs.iter().any(|r| &r.id == id));
        // Oldest first on the wire: `pending` pops from the end.
        for run in &page.runs {
            if changed.contains(&run.id)
                && let Some(dto) = run_dto(&self.engine, &self.env.id, &run.id).await?
            {
                self.pending
                    .push(serde_json::to_string(&dto).unwrap_or_default());
            }
        }
        Ok(())
    }
}
