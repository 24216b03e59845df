//! The table of a run's status changes: every edge the state machine may take, as (step, from,
//! to, condition). It is the one place the edges are written down: `engine::state::transition`
//! refuses anything the table lacks, and every set-based status write of a store backend takes its
//! `WHERE status IN (…)` guard (and the condition it implies) from here.

use super::RunStatus;

/// What happens to a run, without the data an event carries (the state machine's events by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Claimed with a slot, not yet started.
    Dequeue,
    /// An attempt starts (a new one, or a checkpointed one continues).
    StartAttempt,
    Succeed,
    Fail,
    /// The attempt checkpoints and the run leaves its slot.
    Suspend,
    /// What a waiting run waited for happened.
    Resume,
    /// A host found the run claimed or executing by a process that is gone.
    Recover,
    Cancel,
    /// A delayed run's time came, or a version with its task was deployed.
    Enqueue,
    /// The TTL passed before the run started.
    Expire,
    Reschedule,
    /// A claimed run's task is in no deployed version yet.
    Park,
}

/// What must hold of a run besides its status for an edge to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    Always,
    /// No attempt has started (`attempt_count = 0`).
    NeverStarted,
    /// The current attempt has a checkpoint (its next execution replays the journal).
    Checkpointed,
    NotCheckpointed,
}

/// One status change the state machine may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub step: Step,
    pub from: RunStatus,
    pub to: RunStatus,
    pub when: Condition,
}

const fn edge(step: Step, from: RunStatus, to: RunStatus, when: Condition) -> Edge {
    Edge {
        step,
        from,
        to,
        when,
    }
}

use Condition::{Always, Checkpointed, NeverStarted, NotCheckpointed};
use RunStatus as S;
use Step as E;

/// Every edge of the run state machine.
pub const EDGES: &[Edge] = &[
    edge(E::Dequeue, S::Queued, S::Dequeued, Always),
    edge(E::StartAttempt, S::Dequeued, S::Executing, Always),
    edge(E::Succeed, S::Executing, S::Completed, Always),
    // A failed attempt retries (back to the queue) or ends with its kind's final status.
    edge(E::Fail, S::Executing, S::Queued, Always),
    edge(E::Fail, S::Executing, S::Failed, Always),
    edge(E::Fail, S::Executing, S::Crashed, Always),
    edge(E::Fail, S::Executing, S::TimedOut, Always),
    edge(E::Fail, S::Executing, S::SystemFailure, Always),
    // A claimed run that cannot start fails without an attempt.
    edge(E::Fail, S::Dequeued, S::Failed, Always),
    edge(E::Fail, S::Dequeued, S::Crashed, Always),
    edge(E::Fail, S::Dequeued, S::TimedOut, Always),
    edge(E::Fail, S::Dequeued, S::SystemFailure, Always),
    edge(E::Suspend, S::Executing, S::Waiting, Always),
    edge(E::Resume, S::Waiting, S::Queued, Always),
    edge(E::Recover, S::Dequeued, S::Queued, Always),
    // A checkpointed attempt continues from its journal; any other stalled, and retries or fails.
    edge(E::Recover, S::Executing, S::Queued, Checkpointed),
    edge(E::Recover, S::Executing, S::Queued, NotCheckpointed),
    edge(E::Recover, S::Executing, S::Failed, NotCheckpointed),
    edge(E::Cancel, S::PendingVersion, S::Canceled, Always),
    edge(E::Cancel, S::Delayed, S::Canceled, Always),
    edge(E::Cancel, S::Queued, S::Canceled, Always),
    edge(E::Cancel, S::Dequeued, S::Canceled, Always),
    edge(E::Cancel, S::Executing, S::Canceled, Always),
    edge(E::Cancel, S::Waiting, S::Canceled, Always),
    edge(E::Enqueue, S::Delayed, S::Queued, Always),
    edge(E::Enqueue, S::PendingVersion, S::Queued, Always),
    // Only a run that never started expires; a retrying run is already under way.
    edge(E::Expire, S::Queued, S::Expired, NeverStarted),
    edge(E::Expire, S::PendingVersion, S::Expired, NeverStarted),
    edge(E::Reschedule, S::Delayed, S::Delayed, Always),
    edge(E::Park, S::Dequeued, S::PendingVersion, NeverStarted),
];

/// The statuses a run first gets when it is triggered.
pub const INITIAL: [RunStatus; 3] = [S::Queued, S::Delayed, S::PendingVersion];

/// The edge of `step` from `from` to `to`, if the table has one whose condition `holds`.
pub fn edge_for(
    step: Step,
    from: RunStatus,
    to: RunStatus,
    holds: impl Fn(Condition) -> bool,
) -> Option<&'static Edge> {
    EDGES
        .iter()
        .find(|e| e.step == step && e.from == from && e.to == to && holds(e.when))
}

/// Whether some step may take a run from `from` to `to` (used to check a compare-and-set the
/// engine computed).
pub fn allowed(from: RunStatus, to: RunStatus) -> bool {
    EDGES.iter().any(|e| e.from == from && e.to == to)
}

/// The guard of a set-based write of `step` to `to`: the statuses it may take runs from — of
/// those the caller means (`only`; empty: all the table has) — and the one condition they share.
/// Panics when `only` names a status the table has no such edge from: a statement built so is a
/// bug, and the statements are built once, when first used (every test that runs them finds it).
pub fn guard(step: Step, to: RunStatus, only: &[RunStatus]) -> (Vec<RunStatus>, Condition) {
    let edges: Vec<&Edge> = EDGES
        .iter()
        .filter(|e| e.step == step && e.to == to && (only.is_empty() || only.contains(&e.from)))
        .collect();
    for wanted in only {
        assert!(
            edges.iter().any(|e| e.from == *wanted),
            "the state machine has no {step:?} edge from {wanted} to {to}"
        );
    }
    let when = edges.first().map_or(Always, |e| e.when);
    assert!(
        edges.iter().all(|e| e.when == when),
        "{step:?} to {to}: the edges from {only:?} have different conditions; guard them apart"
    );
    (edges.iter().map(|e| e.from).collect(), when)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_have_no_way_out_and_initial_ones_no_way_in_but_by_the_table() {
        for e in EDGES {
            assert!(!e.from.is_final(), "{e:?} leaves a final status");
        }
        for s in INITIAL {
            assert!(!s.is_final());
        }
    }

    #[test]
    fn guards_come_from_the_table() {
        assert_eq!(
            guard(Step::Enqueue, S::Queued, &[]),
            (vec![S::Delayed, S::PendingVersion], Always)
        );
        assert_eq!(
            guard(Step::Expire, S::Expired, &[]),
            (vec![S::Queued, S::PendingVersion], NeverStarted)
        );
        assert_eq!(
            guard(Step::Resume, S::Queued, &[S::Waiting]),
            (vec![S::Waiting], Always)
        );
    }

    #[test]
    #[should_panic(expected = "no Resume edge from DELAYED")]
    fn a_guard_the_table_lacks_is_refused() {
        guard(Step::Resume, S::Queued, &[S::Delayed]);
    }
}
