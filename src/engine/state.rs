//! The run state machine: a pure function from (run state, event, now) to the next state and the
//! effects the executor must carry out.
//!
//! Nothing here reads a clock, touches the store or the sandbox: callers pass `now` and any
//! randomness in, and persist the result with a compare-and-set on the old status. Every edge is
//! covered by the table tests at the bottom.

use crate::model::{Condition, Machine, Millis, RetryPolicy, RunStatus, Step, edge_for};

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
    /// On replay after a checkpoint the guest made other host calls than it had recorded: the
    /// attempt fails, and a retry starts fresh (without the journal).
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
                | FailureKind::Nondeterministic
        )
    }

    fn final_status(self) -> RunStatus {
        match self {
            FailureKind::User
            | FailureKind::Abort
            | FailureKind::InvalidOutput
            | FailureKind::Stalled
            | FailureKind::Nondeterministic => RunStatus::Failed,
            FailureKind::Crashed | FailureKind::OutOfMemory | FailureKind::FuelExhausted => {
                RunStatus::Crashed
            }
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
    /// The kind of the event, as the table of edges names it.
    pub fn step(&self) -> Step {
        match self {
            Event::Dequeue => Step::Dequeue,
            Event::StartAttempt => Step::StartAttempt,
            Event::Succeed => Step::Succeed,
            Event::Fail { .. } => Step::Fail,
            Event::Cancel => Step::Cancel,
            Event::Recover => Step::Recover,
            Event::Enqueue => Step::Enqueue,
            Event::Expire => Step::Expire,
            Event::Reschedule => Step::Reschedule,
            Event::Park => Step::Park,
            Event::Suspend => Step::Suspend,
            Event::Resume => Step::Resume,
        }
    }

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

/// Whether `condition` holds of `run`.
fn holds(run: &RunState, condition: Condition) -> bool {
    match condition {
        Condition::Always => true,
        Condition::NeverStarted => run.attempt_count == 0,
        Condition::Checkpointed => run.checkpointed,
        Condition::NotCheckpointed => !run.checkpointed,
    }
}

/// The state machine. `now` is only used to compute retry times. The status change it makes is
/// always an edge of [`EDGES`] whose condition holds; anything else is an invalid transition.
pub fn transition(
    run: &RunState,
    event: Event,
    now: Millis,
) -> Result<Transition, InvalidTransition> {
    let t = decide(run, event, now)?;
    match edge_for(event.step(), run.status, t.state.status, |c| holds(run, c)) {
        Some(_) => Ok(t),
        None => Err(InvalidTransition {
            from: run.status,
            event: event.name(),
        }),
    }
}

/// The next state and effects, before the check against the table.
fn decide(run: &RunState, event: Event, now: Millis) -> Result<Transition, InvalidTransition> {
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
#[path = "state_tests.rs"]
mod tests;
