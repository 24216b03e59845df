//! Table tests of the run state machine: every edge it takes, every edge it refuses, and that
//! the two agree with the table of edges in `model::lifecycle`.

use super::*;
use crate::model::EDGES;
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
fn every_edge_of_the_table_is_taken_and_no_other() {
    use FailureKind as F;
    let events = [
        Event::Dequeue,
        Event::StartAttempt,
        Event::Succeed,
        Event::Cancel,
        Event::Recover,
        Event::Enqueue,
        Event::Expire,
        Event::Reschedule,
        Event::Park,
        Event::Suspend,
        Event::Resume,
    ]
    .into_iter()
    .chain(
        [
            F::User,
            F::Abort,
            F::Crashed,
            F::OutOfMemory,
            F::FuelExhausted,
            F::MaxDuration,
            F::InvalidOutput,
            F::Stalled,
            F::System,
            F::Nondeterministic,
        ]
        .map(fail),
    );
    let events: Vec<Event> = events.collect();
    let mut taken = std::collections::HashSet::new();
    for status in RunStatus::ALL {
        for attempts in [0, 1, 3] {
            for checkpointed in [false, true] {
                let run = RunState {
                    checkpointed,
                    ..state(status, attempts)
                };
                for event in &events {
                    if let Ok(t) = transition(&run, *event, NOW) {
                        let edge =
                            edge_for(event.step(), status, t.state.status, |c| holds(&run, c));
                        taken.insert(edge.map(|e| (e.step, e.from, e.to, e.when)));
                    }
                }
            }
        }
    }
    assert!(!taken.contains(&None));
    for e in EDGES {
        assert!(
            taken.contains(&Some((e.step, e.from, e.to, e.when))),
            "no transition takes {e:?}"
        );
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
