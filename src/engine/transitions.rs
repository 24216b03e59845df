//! The state machine's results as store changes: a run's decision state, the compare-and-set update
//! of a transition, and the mapping of an attempt's outcome to the machine's event.

use super::*;

pub(super) fn run_state(run: &Run) -> RunState {
    RunState {
        status: run.status,
        attempt_count: run.attempt_count,
        retry: run.retry,
        machine: run.machine,
        oom_machine: run.oom_machine,
        checkpointed: run.checkpointed,
    }
}

/// The store change for transition `t` of `run`: compare-and-set on the run's status as loaded.
pub(super) fn run_update(run: &Run, t: &Transition, now: Millis) -> RunUpdate {
    RunUpdate {
        run_id: run.id.clone(),
        environment_id: run.environment_id.clone(),
        expected: run.status,
        status: t.state.status,
        available_at: requeue_time(&t.effects),
        error: None,
        machine: t.effects.iter().find_map(|e| match e {
            Effect::SwitchMachine(m) => Some(*m),
            _ => None,
        }),
        checkpointed: t.state.checkpointed,
        now,
    }
}

/// Maps an attempt's outcome to the state machine's event, the output to store and the error.
pub(super) fn outcome_event(outcome: AttemptOutcome) -> (Event, Option<String>, Option<RunError>) {
    let jitter = rand::random::<f64>();
    let fail = |kind: FailureKind, name: String, message: String, stack: Option<String>| {
        (
            Event::Fail { kind, jitter },
            None,
            Some(RunError {
                code: kind.code().map(str::to_owned),
                name,
                message,
                stack,
            }),
        )
    };
    match outcome {
        AttemptOutcome::Output(output) => (Event::Succeed, Some(output), None),
        // Handled by the caller before the outcome becomes an event.
        AttemptOutcome::Suspended { .. } => fail(
            FailureKind::System,
            "Error".into(),
            "a suspended attempt reached the end-of-attempt path".into(),
            None,
        ),
        AttemptOutcome::TaskError {
            abort,
            name,
            message,
            stack,
        } => {
            let kind = if abort {
                FailureKind::Abort
            } else {
                FailureKind::User
            };
            fail(kind, name, message, stack)
        }
        AttemptOutcome::InvalidOutput(message) => fail(
            FailureKind::InvalidOutput,
            "TaskOutputError".into(),
            message,
            None,
        ),
        AttemptOutcome::Failed(f) => {
            let kind = match f.kind {
                TrapKind::Crash => FailureKind::Crashed,
                TrapKind::OutOfMemory => FailureKind::OutOfMemory,
                TrapKind::FuelExhausted => FailureKind::FuelExhausted,
                TrapKind::Timeout => FailureKind::MaxDuration,
                // The run is already CANCELED; the attempt's end is recorded as canceled.
                TrapKind::Canceled => FailureKind::Abort,
                TrapKind::Nondeterministic => FailureKind::Nondeterministic,
            };
            fail(kind, "Error".into(), f.message, f.stack)
        }
    }
}

/// When a transition puts the run back in the queue, if it does.
pub(super) fn requeue_time(effects: &[Effect]) -> Option<Millis> {
    effects.iter().find_map(|e| match e {
        Effect::RequeueAt(at) => Some(*at),
        _ => None,
    })
}
