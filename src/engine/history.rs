//! A run's history as the dashboard shows it: the timeline of its life (trigger, delay, each
//! attempt's start and end, the waits between them with their checkpoint and resume, retries
//! with the time they waited, the end), and the tree of runs it belongs to.
//!
//! The timeline is a pure function of what the store keeps (the run's times, its attempts and its
//! waits), so it is the same however often it is read; it never writes.

use super::*;
use crate::model::Attempt;
#[cfg(test)]
use crate::store::WaitKind;
use crate::store::{TreeNode, WaitRecord};

/// Most runs of a tree one read returns.
pub const MAX_TREE_NODES: usize = 200;

/// What happened at one moment of a run's life.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    Triggered,
    /// Triggered with a delay: it waits until `until` before it is queued.
    Delayed {
        until: Millis,
    },
    /// The delay ended and the run was queued.
    Enqueued,
    AttemptStarted {
        attempt: u32,
    },
    AttemptEnded {
        attempt: u32,
        status: AttemptStatus,
        error: Option<RunError>,
    },
    /// The next attempt waits in the queue: it started `waited_ms` later (or is planned
    /// `waited_ms` after the failure while it has not started).
    Retry {
        attempt: u32,
        waited_ms: u64,
        started: bool,
    },
    /// The run checkpointed to wait; no instance or slot is held meanwhile.
    Waiting {
        wait: WaitRecord,
    },
    /// What it waited for came; the run went back to its queue to resume.
    Resumed {
        wait: WaitRecord,
    },
    /// The run reached a final status.
    Finished {
        status: RunStatus,
    },
}

/// One entry of a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    pub at: Millis,
    pub happening: Happening,
}

/// The timeline of a run from what the store keeps, oldest first (entries at the same moment
/// keep the order of the run's life).
pub fn timeline(run: &Run, attempts: &[Attempt], waits: &[WaitRecord]) -> Vec<Moment> {
    let mut out = vec![Moment {
        at: run.created_at,
        happening: Happening::Triggered,
    }];
    if let Some(until) = run.delay_until.filter(|u| *u > run.created_at) {
        out.push(Moment {
            at: run.created_at,
            happening: Happening::Delayed { until },
        });
        if run.status != RunStatus::Delayed && (run.started_at.is_some() || until <= run.updated_at)
        {
            out.push(Moment {
                at: until,
                happening: Happening::Enqueued,
            });
        }
    }
    for (i, attempt) in attempts.iter().enumerate() {
        out.push(Moment {
            at: attempt.started_at,
            happening: Happening::AttemptStarted {
                attempt: attempt.number,
            },
        });
        let Some(ended) = attempt.finished_at else {
            continue;
        };
        out.push(Moment {
            at: ended,
            happening: Happening::AttemptEnded {
                attempt: attempt.number,
                status: attempt.status,
                error: attempt.error.clone(),
            },
        });
        match attempts.get(i + 1) {
            Some(next) => out.push(Moment {
                at: ended,
                happening: Happening::Retry {
                    attempt: next.number,
                    waited_ms: u64::try_from(next.started_at - ended).unwrap_or(0),
                    started: true,
                },
            }),
            // A failed attempt of a run that is queued again: a retry in its backoff.
            None if run.status == RunStatus::Queued => out.push(Moment {
                at: ended,
                happening: Happening::Retry {
                    attempt: attempt.number + 1,
                    waited_ms: u64::try_from(run.available_at - ended).unwrap_or(0),
                    started: false,
                },
            }),
            None => {}
        }
    }
    for wait in waits {
        out.push(Moment {
            at: wait.since,
            happening: Happening::Waiting { wait: wait.clone() },
        });
        if let Some(done) = wait.done_at {
            out.push(Moment {
                at: done,
                happening: Happening::Resumed { wait: wait.clone() },
            });
        }
    }
    if run.status.is_final() {
        out.push(Moment {
            at: run.finished_at.or(run.expired_at).unwrap_or(run.updated_at),
            happening: Happening::Finished { status: run.status },
        });
    }
    // Stable: moments at the same time keep the order they were pushed in, which follows the
    // run's life (an attempt's end before the retry it leads to, the end last).
    out.sort_by_key(|m| m.at);
    out
}

impl Engine {
    /// The timeline of a run of the environment.
    pub async fn run_timeline(
        &self,
        env: &Environment,
        run_id: &str,
    ) -> Result<Vec<Moment>, EngineError> {
        let run = self.find(env, run_id).await?;
        let attempts = self.store.attempts(&env.id, &run.id).await?;
        let waits = self.store.run_waits(&env.id, &run.id).await?;
        Ok(timeline(&run, &attempts, &waits))
    }

    /// The tree a run of the environment belongs to (its root and the root's descendants, by
    /// depth), and whether it has more runs than [`MAX_TREE_NODES`].
    pub async fn run_tree(
        &self,
        env: &Environment,
        run_id: &str,
    ) -> Result<(Vec<TreeNode>, bool), EngineError> {
        let run = self.find(env, run_id).await?;
        let mut nodes = self
            .store
            .run_tree(&env.id, &run.id, MAX_TREE_NODES + 1)
            .await?;
        let more = nodes.len() > MAX_TREE_NODES;
        nodes.truncate(MAX_TREE_NODES);
        Ok((nodes, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus) -> Run {
        Run {
            id: "run_1".into(),
            environment_id: "env".into(),
            environment_slug: "dev".into(),
            task_id: "t".into(),
            status,
            payload: "{}".into(),
            output: None,
            error: None,
            deployment_id: None,
            version: None,
            queue: "task/t".into(),
            machine: Machine::default(),
            retry: RetryPolicy::default(),
            attempt_count: 0,
            queue_timestamp: 0,
            available_at: 0,
            created_at: 100,
            updated_at: 100,
            started_at: None,
            finished_at: None,
            fuel_used: 0,
            compute_ms: 0,
            priority_ms: 0,
            delay_until: None,
            ttl: None,
            expires_at: None,
            expired_at: None,
            idempotency_key: None,
            idempotency_key_options: None,
            tags: Vec::new(),
            metadata: None,
            max_duration: None,
            concurrency_key: None,
            lock_to_version: None,
            batch_id: None,
            oom_machine: None,
            seed: 0,
            checkpointed: false,
            parent_run_id: None,
            root_run_id: None,
            depth: 0,
        }
    }

    fn attempt(number: u32, started: Millis, ended: Option<Millis>, ok: bool) -> Attempt {
        Attempt {
            run_id: "run_1".into(),
            number,
            status: match (ended, ok) {
                (None, _) => AttemptStatus::Executing,
                (Some(_), true) => AttemptStatus::Completed,
                (Some(_), false) => AttemptStatus::Failed,
            },
            deployment_id: "dep".into(),
            started_at: started,
            finished_at: ended,
            error: (!ok).then(|| RunError::coded("X", "boom")),
            fuel_used: 0,
            compute_ms: 0,
        }
    }

    fn kinds(moments: &[Moment]) -> Vec<String> {
        moments
            .iter()
            .map(|m| {
                let name = format!("{:?}", m.happening);
                format!("{}@{}", name.split([' ', '{']).next().unwrap_or(""), m.at)
            })
            .collect()
    }

    #[test]
    fn a_retried_run_shows_each_attempt_the_wait_before_the_retry_and_its_end() {
        let mut r = run(RunStatus::Completed);
        r.finished_at = Some(700);
        let attempts = [
            attempt(1, 200, Some(300), false),
            attempt(2, 500, Some(700), true),
        ];
        let t = timeline(&r, &attempts, &[]);
        assert_eq!(
            kinds(&t),
            [
                "Triggered@100",
                "AttemptStarted@200",
                "AttemptEnded@300",
                "Retry@300",
                "AttemptStarted@500",
                "AttemptEnded@700",
                "Finished@700"
            ]
        );
        assert!(matches!(
            t[3].happening,
            Happening::Retry {
                attempt: 2,
                waited_ms: 200,
                started: true
            }
        ));
    }

    #[test]
    fn a_run_in_backoff_shows_the_planned_retry() {
        let mut r = run(RunStatus::Queued);
        r.available_at = 1_300;
        let t = timeline(&r, &[attempt(1, 200, Some(300), false)], &[]);
        assert!(matches!(
            t.last().unwrap().happening,
            Happening::Retry {
                attempt: 2,
                waited_ms: 1_000,
                started: false
            }
        ));
    }

    #[test]
    fn a_delayed_run_that_waited_shows_its_delay_checkpoint_and_resume() {
        let mut r = run(RunStatus::Executing);
        r.delay_until = Some(150);
        r.started_at = Some(160);
        let wait = WaitRecord {
            kind: WaitKind::DateTime,
            id: "waitpoint_1".into(),
            since: 170,
            deadline: Some(5_000),
            done_at: Some(5_001),
            timed_out: false,
        };
        let t = timeline(&r, &[attempt(1, 160, None, true)], &[wait]);
        assert_eq!(
            kinds(&t),
            [
                "Triggered@100",
                "Delayed@100",
                "Enqueued@150",
                "AttemptStarted@160",
                "Waiting@170",
                "Resumed@5001"
            ]
        );
    }
}
