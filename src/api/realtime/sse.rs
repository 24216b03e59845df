//! kiln's own realtime streams, as Server-Sent Events (`event: run`, `data:` the run as
//! `GET /api/v3/runs/{id}` shows it), for `kiln runs watch` and clients that ask for
//! `text/event-stream`: one run until it finishes, or the runs with any of some tags.
//!
//! Subscribers of one run share the hub's watch of it; a tags stream takes the runs the hub
//! logged as changed, so neither re-reads anything a commit did not change.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::hub::{Hub, Since, Subscriber, snapshot};
use crate::api::ApiError;
use crate::engine::EngineError;
use crate::model::{Environment, Millis};
use crate::store::RunFilter;

/// Most runs a tags stream sends first (its newest), and after a change it cannot follow.
const TAGS_PAGE: usize = 100;

/// The run now, then each change, until it has finished.
pub(super) async fn run_stream(
    subscriber: Subscriber,
    hub: Arc<Hub>,
    env: &Environment,
    run_id: &str,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    let position = hub.touch();
    let rx = match hub.existing_watch(&env.id, run_id) {
        Some(rx) => rx,
        None => {
            let view = hub
                .engine()
                .run_view(&env.id, run_id)
                .await?
                .ok_or_else(|| ApiError::from(EngineError::RunNotFound(run_id.to_owned())))?;
            let rx = hub.watch_run(&env.id, run_id, snapshot(&view));
            // A change between that read and the watch is not lost.
            let unchanged = matches!(hub.since(position, |r| r.id == run_id), Since::Runs(r, _) if r.is_empty());
            if !unchanged {
                hub.refresh_sse(vec![run_id.to_owned()]).await;
            }
            rx
        }
    };
    let stream = futures_util::stream::unfold(
        (rx, false, true, subscriber),
        |(mut rx, done, first, subscriber)| async move {
            if done || (!first && rx.changed().await.is_err()) {
                return None;
            }
            let snapshot = rx.borrow_and_update().clone()?;
            let event = Ok(Event::default().event("run").data(snapshot.json.clone()));
            Some((event, (rx, snapshot.finished, false, subscriber)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The newest runs with any of `tags`, then each run with them that changes (new ones included).
/// Open until the client goes.
pub(super) fn tags_stream(
    subscriber: Subscriber,
    hub: Arc<Hub>,
    env: Environment,
    tags: Vec<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = TagWatch {
        position: None,
        seen: HashMap::new(),
        pending: Vec::new(),
        _subscriber: subscriber,
        hub,
        env,
        tags,
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(json) = w.pending.pop() {
                return Some((Ok(Event::default().event("run").data(json)), w));
            }
            if let Some(position) = w.position {
                let forever = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
                if !w.hub.wait_past(position, forever).await && w.hub.is_closing() {
                    return None;
                }
            }
            if let Err(e) = w.poll().await {
                tracing::warn!(error = %e, "realtime: reading runs by tag failed");
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// One tags subscription: where it is in the hub's log and what it has sent.
struct TagWatch {
    hub: Arc<Hub>,
    env: Environment,
    tags: Vec<String>,
    /// `None` before the first read.
    position: Option<u64>,
    /// The last change sent of each run.
    seen: HashMap<String, Millis>,
    /// Events to send, last first.
    pending: Vec<String>,
    /// Its place among the environment's subscribers, given back when the client goes.
    _subscriber: Subscriber,
}

impl TagWatch {
    /// Queues the runs with the tags that changed since they were last sent.
    async fn poll(&mut self) -> Result<(), EngineError> {
        let since = match self.position {
            Some(after) => self.hub.since(after, |r| {
                r.environment_id == self.env.id && r.tags.iter().any(|t| self.tags.contains(t))
            }),
            None => Since::Unknown(self.hub.touch()),
        };
        let (ids, position) = match since {
            Since::Runs(runs, now) => (runs.iter().map(|r| r.id.clone()).collect(), now),
            // The first read, or changes the hub cannot name: list the newest runs again.
            Since::Unknown(now) => {
                let filter = RunFilter {
                    tags: self.tags.clone(),
                    ..RunFilter::default()
                };
                let page = self
                    .hub
                    .engine()
                    .list_runs(&self.env, filter, TAGS_PAGE, None, None)
                    .await?;
                let ids: Vec<String> = page
                    .runs
                    .iter()
                    .filter(|r| self.seen.get(&r.id) != Some(&r.updated_at))
                    .map(|r| r.id.clone())
                    .collect();
                (ids, now)
            }
        };
        self.hub.touch();
        self.position = Some(position);
        if ids.is_empty() {
            return Ok(());
        }
        let mut views = self.hub.engine().run_views(ids).await?;
        // Oldest first on the wire: `pending` pops from the end.
        views.sort_by(|a, b| b.run.id.cmp(&a.run.id));
        for view in views {
            self.seen.insert(view.run.id.clone(), view.run.updated_at);
            self.pending.push(snapshot(&view).json);
        }
        // Remember no more than a page of runs, however long the client stays.
        if self.seen.len() > TAGS_PAGE * 4 {
            let mut newest: Vec<String> = self.seen.keys().cloned().collect();
            newest.sort_unstable_by(|a, b| b.cmp(a));
            newest.truncate(TAGS_PAGE);
            self.seen.retain(|id, _| newest.contains(id));
        }
        Ok(())
    }
}
