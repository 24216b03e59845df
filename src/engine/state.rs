//! The run state machine: a pure function from (run state, event, now) to the next state and the
//! effects the executor must carry out.
//!
//! Nothing here reads a clock, touches the store or the sandbox: callers pass `now` and any
//! randomness in, and persist the result with a compare-and-set on the old status. Every edge is
//! covered by the table tests at the bottom.

use crate::model::{Machine, Millis, RetryPolicy, RunStatus};

/// What kind of failure ended an attempt; decides retry and final status (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `run` returned `error(..)`.
    User,
    /// `run` returned `abort(..)`: never retried.
    Abort,
    /// The guest trapped (panic, unreachable, out-of-bounds, stack overflow).
    Crashed,
    /// The machine's memory limit was hit.
    OutOfMemory,
    /// The attempt's fuel budget ran out.
    FuelExhausted,
    /// Compute time passed `maxDuration`.
    MaxDuration,
    /// The guest returned output that is not valid JSON or is too large.
    InvalidOutput,
    /// The host stopped while the attempt executed.
    Stalled,
    /// kiln itself failed (database error, bug).
    System,
    /// On replay after a checkpoint the guest made other host calls than it had recorded.
    Nondeterministic,
}

impl FailureKind {
    /// The Trigger.dev error code recorded for this kind (`None`: the user's own error).
    pub fn code(self) -> Option<&'static str> {
        match self {
            FailureKind::User | FailureKind::Abort => None,
            FailureKind::Crashed => Some("TASK_RUN_CRASHED"),
            FailureKind::OutOfMemory => Some("TASK_PROCESS_OOM_KILLED"),
            FailureKind::FuelExhausted => Some("FUEL_EXHAUSTED"),
            FailureKind::MaxDuration => Some("MAX_DURATION_EXCEEDED"),
            FailureKind::InvalidOutput => Some("TASK_OUTPUT_ERROR"),
            FailureKind::Stalled => Some("TASK_RUN_STALLED_EXECUTING"),
            FailureKind::System => Some("SYSTEM_FAILURE"),
            FailureKind::Nondeterministic => Some("TASK_NONDETERMINISTIC"),
        }
    }

    fn retriable(self) -> bool {
        matches!(
            self,
            FailureKind::User
                | FailureKind::Crashed
                | FailureKind::InvalidOutput
                | FailureKind::Stalled
        )
    }

    fn final_status(self) -> RunStatus {
        match self {
            FailureKind::User
            | FailureKind::Abort
            | FailureKind::InvalidOutput
            | FailureKind::Stalled => RunStatus::Failed,
            FailureKind::Crashed
            | FailureKind::OutOfMemory
            | FailureKind::FuelExhausted
            | FailureKind::Nondeterministic => RunStatus::Crashed,
            FailureKind::MaxDuration => RunStatus::TimedOut,
            FailureKind::System => RunStatus::SystemFailure,
        }
    }
}

/// The part of a run the state machine decides on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunState {
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempt_count: u32,
    pub retry: RetryPolicy,
    /// The machine the next attempt runs on.
    pub machine: Machine,
    /// Where to retry after running out of memory (Trigger.dev's `retry.outOfMemory.machine`).
    pub oom_machine: Option<Machine>,
    /// The current attempt has a checkpoint: its next execution replays the journal and continues
    /// the attempt instead of starting a new one.
    pub checkpointed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// The dispatcher claimed the run and holds a slot for it.
    Dequeue,
    /// An attempt begins executing.
    StartAttempt,
    /// The attempt returned output.
    Succeed,
    /// The attempt failed; `jitter` in `[0, 1)` randomizes the retry delay when the policy asks.
    Fail { kind: FailureKind, jitter: f64 },
    /// A user canceled the run.
    Cancel,
    /// The host restarted and found the run claimed or executing by a process that is gone.
    Recover,
    /// A delayed run's time came, or a version with its task was deployed.
    Enqueue,
    /// The run's TTL passed before it started.
    Expire,
    /// A delayed run got a new delay.
    Reschedule,
    /// A claimed run's task is in no deployed version yet: wait for a deploy.
    Park,
    /// The attempt waits long: its journal is checkpointed and the run leaves its slot.
    Suspend,
    /// What the run waited for happened: back to the queue, to continue the attempt.
    Resume,
}

/// What the executor must do besides storing the new state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Interrupt the attempt executing in the sandbox.
    InterruptAttempt,
    /// The run is queued again and may be dequeued at this time.
    RequeueAt(Millis),
    /// The run reached a final status.
    Finished,
    /// The next attempt runs on this machine (after running out of memory).
    SwitchMachine(Machine),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: RunState,
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a run in status {from} cannot take event {event}")]
pub struct InvalidTransition {
    pub from: RunStatus,
    pub event: &'static str,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Dequeue => "dequeue",
            Event::StartAttempt => "start-attempt",
            Event::Succeed => "succeed",
            Event::Fail { .. } => "fail",
            Event::Cancel => "cancel",
            Event::Recover => "recover",
            Event::Enqueue => "enqueue",
            Event::Expire => "expire",
            Event::Reschedule => "reschedule",
            Event::Park => "park",
            Event::Suspend => "suspend",
            Event::Resume => "resume",
        }
    }
}

/// Delay before the next attempt after attempt number `attempt` failed, or `None` when the policy
/// allows no more attempts. Trigger.dev's `calculateNextRetryDelay`:
/// `min(max, (randomize ? 1 + jitter : 1) · min · factor^(attempt − 1))`.
pub fn retry_delay_ms(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Option<u64> {
    if attempt >= policy.max_attempts.min(crate::model::MAX_ATTEMPTS_CAP) {
        return None;
    }
    let jitter = if policy.randomize {
        1.0 + jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let delay = jitter * policy.min_timeout_ms as f64 * policy.factor.powi(exponent);
    // `as` saturates for floats: an overflowing power becomes u64::MAX before the min.
    Some((delay.round() as u64).min(policy.max_timeout_ms))
}

/// The state machine. `now` is only used to compute retry times.
pub fn transition(
    run: &RunState,
    event: Event,
    now: Millis,
) -> Result<Transition, InvalidTransition> {
    use RunStatus as S;
    let invalid = || InvalidTransition {
        from: run.status,
        event: event.name(),
    };
    let to = |status: RunStatus, effects: Vec<Effect>| Transition {
        state: RunState { status, ..*run },
        effects,
    };
    // The attempt is over: the next one starts fresh.
    let ended = |t: Transition| Transition {
        state: RunState {
            checkpointed: false,
            ..t.state
        },
        ..t
    };
    match (run.status, event) {
        (S::Queued, Event::Dequeue) => Ok(to(S::Dequeued, vec![])),
        // A checkpointed attempt continues; otherwise a new attempt begins.
        (S::Dequeued, Event::StartAttempt) => Ok(Transition {
            state: RunState {
                status: S::Executing,
                attempt_count: run.attempt_count + u32::from(!run.checkpointed),
                ..*run
            },
            effects: vec![],
        }),
        (S::Executing, Event::Succeed) => Ok(ended(to(S::Completed, vec![Effect::Finished]))),
        (S::Executing, Event::Fail { kind, jitter }) => Ok(ended(fail(run, kind, jitter, now))),
        (S::Executing, Event::Suspend) => Ok(Transition {
            state: RunState {
                status: S::Waiting,
                checkpointed: true,
                ..*run
            },
            effects: vec![],
        }),
        (S::Waiting, Event::Resume) => Ok(to(S::Queued, vec![Effect::RequeueAt(now)])),
        // A host that stopped during a checkpointed attempt: continue it from the journal.
        (S::Executing, Event::Recover) if run.checkpointed => {
            Ok(to(S::Queued, vec![Effect::RequeueAt(now)]))
        }
        // A claimed run that cannot start (its task or version is gone) fails without an attempt.
        (S::Dequeued, Event::Fail { kind, .. }) => {
            Ok(to(kind.final_status(), vec![Effect::Finished]))
        }
        (S::Dequeued, Event::Recover) => Ok(to(S::Queued, vec![Effect::RequeueAt(now)])),
        (S::Executing, Event::Recover) => Ok(ended(fail(run, FailureKind::Stalled, 0.0, now))),
        (S::Executing, Event::Cancel) => Ok(to(
            S::Canceled,
            vec![Effect::InterruptAttempt, Effect::Finished],
        )),
        (status, Event::Cancel) if !status.is_final() => {
            Ok(to(S::Canceled, vec![Effect::Finished]))
        }
        (S::Delayed | S::PendingVersion, Event::Enqueue) => {
            Ok(to(S::Queued, vec![Effect::RequeueAt(now)]))
        }
        // Only a run that never started expires; a retrying run is already under way.
        (S::Queued | S::PendingVersion, Event::Expire) if run.attempt_count == 0 => {
            Ok(to(S::Expired, vec![Effect::Finished]))
        }
        (S::Delayed, Event::Reschedule) => Ok(to(S::Delayed, vec![])),
        (S::Dequeued, Event::Park) if run.attempt_count == 0 => Ok(to(S::PendingVersion, vec![])),
        _ => Err(invalid()),
    }
}

fn fail(run: &RunState, kind: FailureKind, jitter: f64, now: Millis) -> Transition {
    // Out of memory retries only onto a different machine, once it is set (Trigger.dev's rule).
    let bigger = run
        .oom_machine
        .filter(|m| kind == FailureKind::OutOfMemory && *m != run.machine);
    let retry_in = if kind.retriable() || bigger.is_some() {
        retry_delay_ms(&run.retry, run.attempt_count, jitter)
    } else {
        None
    };
    match retry_in {
        Some(delay) => {
            let at = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            let mut effects = vec![Effect::RequeueAt(at)];
            effects.extend(bigger.map(Effect::SwitchMachine));
            Transition {
                state: RunState {
                    status: RunStatus::Queued,
                    machine: bigger.unwrap_or(run.machine),
                    ..*run
                },
                effects,
            }
        }
        None => Transition {
            state: RunState {
                status: kind.final_status(),
                ..*run
            },
            effects: vec![Effect::Finished],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus as S;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 60_000,
            randomize: false,
        }
    }

    fn state(status: RunStatus, attempt_count: u32) -> RunState {
        RunState {
            status,
            attempt_count,
            retry: policy(3),
            machine: Machine::Small1x,
            oom_machine: None,
            checkpointed: false,
        }
    }

    const NOW: Millis = 1_000_000;

    fn fail(kind: FailureKind) -> Event {
        Event::Fail { kind, jitter: 0.0 }
    }

    #[test]
    fn every_valid_edge_lands_where_the_table_says() {
        use FailureKind as F;
        let cases: Vec<(RunState, Event, RunStatus, u32, Vec<Effect>)> = vec![
            (state(S::Queued, 0), Event::Dequeue, S::Dequeued, 0, vec![]),
            (
                state(S::Dequeued, 0),
                Event::StartAttempt,
                S::Executing,
                1,
                vec![],
            ),
            (
                state(S::Dequeued, 1),
                Event::StartAttempt,
                S::Executing,
                2,
                vec![],
            ),
            (
                state(S::Executing, 1),
                Event::Succeed,
                S::Completed,
                1,
                vec![Effect::Finished],
            ),
            // Retriable failures with attempts left go back to the queue after the backoff.
            (
                state(S::Executing, 1),
                fail(F::User),
                S::Queued,
                1,
                vec![Effect::RequeueAt(NOW + 1_000)],
            ),
            (
                state(S::Executing, 2),
                fail(F::User),
                S::Queued,
                2,
                vec![Effect::RequeueAt(NOW + 2_000)],
            ),
            (
                state(S::Executing, 1),
                fail(F::Crashed),
                S::Queued,
                1,
                vec![Effect::RequeueAt(NOW + 1_000)],
            ),
            (
                state(S::Executing, 1),
                fail(F::InvalidOutput),
                S::Queued,
                1,
                vec![Effect::RequeueAt(NOW + 1_000)],
            ),
            (
                state(S::Executing, 1),
                fail(F::Stalled),
                S::Queued,
                1,
                vec![Effect::RequeueAt(NOW + 1_000)],
            ),
            // Out of attempts: the kind's final status.
            (
                state(S::Executing, 3),
                fail(F::User),
                S::Failed,
                3,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 3),
                fail(F::Crashed),
                S::Crashed,
                3,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 3),
                fail(F::Stalled),
                S::Failed,
                3,
                vec![Effect::Finished],
            ),
            // Never retried.
            (
                state(S::Executing, 1),
                fail(F::Abort),
                S::Failed,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 1),
                fail(F::OutOfMemory),
                S::Crashed,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 1),
                fail(F::FuelExhausted),
                S::Crashed,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 1),
                fail(F::MaxDuration),
                S::TimedOut,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 1),
                fail(F::System),
                S::SystemFailure,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Dequeued, 0),
                fail(F::System),
                S::SystemFailure,
                0,
                vec![Effect::Finished],
            ),
            // Cancel from every non-final status; an executing attempt is interrupted.
            (
                state(S::Queued, 0),
                Event::Cancel,
                S::Canceled,
                0,
                vec![Effect::Finished],
            ),
            (
                state(S::Dequeued, 0),
                Event::Cancel,
                S::Canceled,
                0,
                vec![Effect::Finished],
            ),
            (
                state(S::Delayed, 0),
                Event::Cancel,
                S::Canceled,
                0,
                vec![Effect::Finished],
            ),
            (
                state(S::PendingVersion, 0),
                Event::Cancel,
                S::Canceled,
                0,
                vec![Effect::Finished],
            ),
            (
                state(S::Waiting, 1),
                Event::Cancel,
                S::Canceled,
                1,
                vec![Effect::Finished],
            ),
            (
                state(S::Executing, 1),
                Event::Cancel,
                S::Canceled,
                1,
                vec![Effect::InterruptAttempt, Effect::Finished],
            ),
            // A restarted host requeues claimed runs and treats executing ones as stalled attempts.
            (
                state(S::Dequeued, 0),
                Event::Recover,
                S::Queued,
                0,
                vec![Effect::RequeueAt(NOW)],
            ),
            (
                state(S::Executing, 1),
                Event::Recover,
                S::Queued,
                1,
                vec![Effect::RequeueAt(NOW + 1_000)],
            ),
            (
                state(S::Executing, 3),
                Event::Recover,
                S::Failed,
                3,
                vec![Effect::Finished],
            ),
        ];
        for (from, event, status, attempts, effects) in cases {
            let t = transition(&from, event, NOW)
                .unwrap_or_else(|e| panic!("{from:?} + {event:?} should be valid: {e}"));
            assert_eq!(t.state.status, status, "{from:?} + {event:?}");
            assert_eq!(t.state.attempt_count, attempts, "{from:?} + {event:?}");
            assert_eq!(t.effects, effects, "{from:?} + {event:?}");
        }
    }

    #[test]
    fn every_other_edge_is_rejected() {
        let events = [
            Event::Dequeue,
            Event::StartAttempt,
            Event::Succeed,
            fail(FailureKind::User),
            Event::Cancel,
            Event::Recover,
            Event::Enqueue,
            Event::Expire,
            Event::Reschedule,
            Event::Park,
            Event::Suspend,
            Event::Resume,
        ];
        // With one attempt made: a started run neither expires nor parks.
        let valid = |s: RunStatus, e: &Event| match e {
            Event::Dequeue => s == S::Queued,
            Event::StartAttempt => s == S::Dequeued,
            Event::Succeed => s == S::Executing,
            Event::Fail { .. } => matches!(s, S::Executing | S::Dequeued),
            Event::Cancel => !s.is_final(),
            Event::Recover => matches!(s, S::Dequeued | S::Executing),
            Event::Enqueue => matches!(s, S::Delayed | S::PendingVersion),
            Event::Expire | Event::Park => false,
            Event::Reschedule => s == S::Delayed,
            Event::Suspend => s == S::Executing,
            Event::Resume => s == S::Waiting,
        };
        for status in RunStatus::ALL {
            for event in events {
                let result = transition(&state(status, 1), event, NOW);
                assert_eq!(
                    result.is_ok(),
                    valid(status, &event),
                    "{status} + {event:?}"
                );
                if let Err(e) = result {
                    assert_eq!(e.from, status);
                }
            }
        }
    }

    #[test]
    fn a_checkpointed_attempt_waits_resumes_and_continues() {
        let t = transition(&state(S::Executing, 1), Event::Suspend, NOW).unwrap();
        assert_eq!((t.state.status, t.state.checkpointed), (S::Waiting, true));
        assert!(t.effects.is_empty(), "the slot is released by the executor");
        let t = transition(&t.state, Event::Resume, NOW).unwrap();
        assert_eq!(t.state.status, S::Queued);
        assert_eq!(t.effects, [Effect::RequeueAt(NOW)]);
        let dequeued = RunState {
            status: S::Dequeued,
            ..t.state
        };
        // The same attempt continues.
        let t = transition(&dequeued, Event::StartAttempt, NOW).unwrap();
        assert_eq!((t.state.status, t.state.attempt_count), (S::Executing, 1));
        // A host stop while it continues resumes it again rather than failing the attempt.
        let r = transition(&t.state, Event::Recover, NOW).unwrap();
        assert_eq!((r.state.status, r.state.attempt_count), (S::Queued, 1));
        // Its end closes the attempt: a retry starts fresh.
        let f = transition(&t.state, fail(FailureKind::User), NOW).unwrap();
        assert_eq!((f.state.status, f.state.checkpointed), (S::Queued, false));
        let done = transition(&t.state, Event::Succeed, NOW).unwrap();
        assert!(!done.state.checkpointed);
    }

    #[test]
    fn out_of_memory_retries_once_onto_the_bigger_machine() {
        let oom = fail(FailureKind::OutOfMemory);
        let with_bigger = RunState {
            oom_machine: Some(Machine::Small2x),
            ..state(S::Executing, 1)
        };
        let t = transition(&with_bigger, oom, NOW).unwrap();
        assert_eq!(t.state.status, S::Queued);
        assert_eq!(t.state.machine, Machine::Small2x);
        assert_eq!(
            t.effects,
            [
                Effect::RequeueAt(NOW + 1_000),
                Effect::SwitchMachine(Machine::Small2x)
            ]
        );
        // On the bigger machine already: no more retries.
        let again = RunState {
            attempt_count: 2,
            ..t.state
        };
        let again = RunState {
            status: S::Executing,
            ..again
        };
        assert_eq!(
            transition(&again, oom, NOW).unwrap().state.status,
            S::Crashed
        );
        // Without an OOM machine: crashed at once.
        let t = transition(&state(S::Executing, 1), oom, NOW).unwrap();
        assert_eq!(t.state.status, S::Crashed);
    }

    #[test]
    fn a_started_run_never_expires_or_parks() {
        assert!(transition(&state(S::Queued, 1), Event::Expire, NOW).is_err());
        assert!(transition(&state(S::Dequeued, 1), Event::Park, NOW).is_err());
        assert!(
            transition(&state(S::Delayed, 0), Event::Expire, NOW).is_err(),
            "TTL counts from enqueue"
        );
    }

    #[test]
    fn final_statuses_accept_nothing() {
        for status in RunStatus::ALL.into_iter().filter(|s| s.is_final()) {
            assert!(transition(&state(status, 1), Event::Cancel, NOW).is_err());
        }
    }

    #[test]
    fn retry_delay_follows_the_formula_and_caps() {
        let p = policy(10);
        assert_eq!(retry_delay_ms(&p, 1, 0.0), Some(1_000));
        assert_eq!(retry_delay_ms(&p, 2, 0.0), Some(2_000));
        assert_eq!(retry_delay_ms(&p, 3, 0.0), Some(4_000));
        assert_eq!(retry_delay_ms(&p, 7, 0.0), Some(60_000), "capped at max");
        assert_eq!(
            retry_delay_ms(&p, 10, 0.0),
            None,
            "attempt 10 of 10 is the last"
        );
        let randomized = RetryPolicy {
            randomize: true,
            ..p
        };
        assert_eq!(retry_delay_ms(&randomized, 1, 0.5), Some(1_500));
        assert_eq!(retry_delay_ms(&randomized, 1, 0.0), Some(1_000));
    }

    #[test]
    fn retry_delay_survives_absurd_policies() {
        let p = RetryPolicy {
            max_attempts: 250,
            factor: 1e300,
            min_timeout_ms: u64::MAX,
            max_timeout_ms: 5_000,
            randomize: true,
        };
        assert_eq!(retry_delay_ms(&p, 200, 0.99), Some(5_000));
        let capped = RetryPolicy {
            max_attempts: u32::MAX,
            ..p
        };
        assert_eq!(
            retry_delay_ms(&capped, 250, 0.0),
            None,
            "the global cap applies"
        );
    }
}
