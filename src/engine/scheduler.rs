//! The scheduler: which queued runs start next, under every concurrency limit, fairly across
//! environments.
//!
//! The store holds the runs; this module holds only what the dispatcher needs to decide quickly:
//! which *lanes* (an environment's queue, or one concurrency key of it) may have ready runs, how many
//! runs each lane, queue and environment holds right now (DEQUEUED or EXECUTING), and each queue's
//! limit and pause flag. It never reads the store or a clock, so it is tested as plain data.
//!
//! **Fairness: round-robin over environments (deficit round-robin with unit cost and equal
//! quanta).** Each planning pass visits the environments that have ready lanes in turn, one run per
//! visit, and inside an environment visits its ready lanes in turn, so an environment with 100,000
//! queued runs gets one run per round like an environment with one. A run's order inside its lane is
//! the store's (score = queue timestamp − priority).
//!
//! **Slots are counted here, not in SQL.** A lane's count goes up when a pass plans a run from it
//! and down when the run leaves DEQUEUED/EXECUTING (the dispatcher's slot guard) or when the claim
//! found fewer runs than planned. A lane at its limit, or of a paused queue, is *parked*: it leaves
//! the rotation until a run of it ends or the queue resumes, so blocked lanes cost nothing per pass.
//!
//! The set of ready lanes is a hint that errs one way only: a lane may be listed and turn out empty
//! (the claim finds nothing and the lane goes idle), but every path that makes a run ready calls
//! [`Scheduler::activate`], so a lane with ready runs is never forgotten.

use std::collections::{HashMap, VecDeque};

pub use crate::model::Lane;

/// A queue's settings as the scheduler applies them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// The queue's limit (its override, else its definition's); `None`: the environment's.
    pub limit: Option<u32>,
    pub paused: bool,
}

/// Runs to claim from one lane, planned by [`Scheduler::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub lane: Lane,
    pub count: usize,
    /// The lane's activation count when planned; see [`Scheduler::claimed`].
    activations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// No known ready runs.
    Idle,
    /// In its environment's rotation.
    Ready,
    /// Has ready runs but may not start one now: at its limit, or its queue is paused.
    Parked,
}

#[derive(Debug)]
struct LaneState {
    running: u32,
    readiness: Readiness,
    /// Set (from the scheduler-wide counter, never reused) each time the lane enters the
    /// rotation; rotation entries of other generations are stale and skipped.
    generation: u64,
    /// Bumped by every activation, so a short claim cannot idle a lane a newer run just entered.
    activations: u64,
}

#[derive(Debug, Default)]
struct EnvState {
    /// `None`: the host's default environment limit.
    limit: Option<u32>,
    running: u32,
    /// Ready lanes in rotation order, with the generation they entered with.
    rotation: VecDeque<(Lane, u64)>,
    in_ring: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    limits: QueueLimits,
    running: u32,
}

/// The scheduler's state; owned by the engine behind a mutex.
#[derive(Debug)]
pub struct Scheduler {
    default_env_limit: u32,
    envs: HashMap<String, EnvState>,
    /// Environments with ready lanes, in round-robin order.
    ring: VecDeque<String>,
    lanes: HashMap<Lane, LaneState>,
    queues: HashMap<(String, String), QueueState>,
    /// Source of lane generations; never reset, so a forgotten lane's stale rotation entries
    /// can never match the lane again.
    generations: u64,
}

impl Scheduler {
    /// A scheduler whose environments may each hold `default_env_limit` runs unless set otherwise.
    pub fn new(default_env_limit: u32) -> Scheduler {
        Scheduler {
            default_env_limit,
            envs: HashMap::new(),
            ring: VecDeque::new(),
            lanes: HashMap::new(),
            queues: HashMap::new(),
            generations: 0,
        }
    }

    /// Sets an environment's limit (`None`: the host default) and lets its parked lanes try again.
    pub fn set_environment_limit(&mut self, environment_id: &str, limit: Option<u32>) {
        let env = self.envs.entry(environment_id.to_owned()).or_default();
        env.limit = limit;
        // It may have left the ring at its old limit with lanes still ready.
        if !env.in_ring && !env.rotation.is_empty() {
            env.in_ring = true;
            self.ring.push_back(environment_id.to_owned());
        }
        self.unpark(|lane| lane.environment_id == environment_id);
    }

    /// The limit that applies to an environment.
    pub fn environment_limit(&self, environment_id: &str) -> u32 {
        self.envs
            .get(environment_id)
            .and_then(|e| e.limit)
            .unwrap_or(self.default_env_limit)
    }

    /// Sets a queue's limit and pause flag and lets its parked lanes try again.
    pub fn set_queue(&mut self, environment_id: &str, queue: &str, limits: QueueLimits) {
        self.queues
            .entry((environment_id.to_owned(), queue.to_owned()))
            .or_default()
            .limits = limits;
        self.unpark(|lane| lane.environment_id == environment_id && lane.queue == queue);
    }

    /// Runs of a queue that hold a slot now.
    pub fn queue_running(&self, environment_id: &str, queue: &str) -> u32 {
        self.queues
            .get(&(environment_id.to_owned(), queue.to_owned()))
            .map_or(0, |q| q.running)
    }

    /// Runs of an environment that hold a slot now.
    pub fn environment_running(&self, environment_id: &str) -> u32 {
        self.envs.get(environment_id).map_or(0, |e| e.running)
    }

    /// Whether some environment may have a run to start.
    pub fn has_ready(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Notes that `lane` may have ready runs (a run was queued, its backoff or delay ended, …).
    pub fn activate(&mut self, lane: Lane) {
        let env = self.envs.entry(lane.environment_id.clone()).or_default();
        let state = self.lanes.entry(lane.clone()).or_insert(LaneState {
            running: 0,
            readiness: Readiness::Idle,
            generation: 0,
            activations: 0,
        });
        state.activations += 1;
        if state.readiness == Readiness::Idle {
            state.readiness = Readiness::Ready;
            self.generations += 1;
            state.generation = self.generations;
            env.rotation.push_back((lane.clone(), state.generation));
        }
        if !env.in_ring {
            env.in_ring = true;
            self.ring.push_back(lane.environment_id);
        }
    }

    /// Plans up to `free` runs to start, one per environment per round, and reserves their slots.
    /// Every returned claim must be answered with [`Scheduler::claimed`].
    pub fn plan(&mut self, free: usize) -> Vec<Claim> {
        let mut claims: Vec<Claim> = Vec::new();
        let mut budget = free;
        while budget > 0 {
            let Some(env_id) = self.ring.pop_front() else {
                break;
            };
            let Some(env) = self.envs.get_mut(&env_id) else {
                continue;
            };
            let env_limit = env.limit.unwrap_or(self.default_env_limit);
            if env.running >= env_limit {
                // Back in the ring when one of its runs ends.
                env.in_ring = false;
                continue;
            }
            let mut picked = None;
            while let Some((lane, generation)) = env.rotation.pop_front() {
                let Some(state) = self.lanes.get_mut(&lane) else {
                    continue;
                };
                if state.readiness != Readiness::Ready || state.generation != generation {
                    continue; // stale entry
                }
                let queue = self
                    .queues
                    .entry((lane.environment_id.clone(), lane.queue.clone()))
                    .or_default();
                if queue.limits.paused || state.running >= lane_limit(queue.limits, env_limit) {
                    state.readiness = Readiness::Parked;
                    continue;
                }
                state.running += 1;
                queue.running += 1;
                env.running += 1;
                env.rotation.push_back((lane.clone(), generation));
                picked = Some((lane, state.activations));
                break;
            }
            let Some((lane, activations)) = picked else {
                env.in_ring = false;
                continue;
            };
            self.ring.push_back(env_id);
            budget -= 1;
            match claims.iter_mut().find(|c| c.lane == lane) {
                Some(claim) => {
                    claim.count += 1;
                    claim.activations = activations;
                }
                None => claims.push(Claim {
                    lane,
                    count: 1,
                    activations,
                }),
            }
        }
        claims
    }

    /// Answers a planned claim: the store found `got` runs. Unused reservations are released, and a
    /// lane that came up short goes idle unless a run entered it since it was planned.
    pub fn claimed(&mut self, claim: &Claim, got: usize) {
        let short = claim.count.saturating_sub(got);
        if short == 0 {
            return;
        }
        let short = u32::try_from(short).unwrap_or(u32::MAX);
        self.release_slots(&claim.lane, short);
        if let Some(state) = self.lanes.get_mut(&claim.lane)
            && state.activations == claim.activations
        {
            state.readiness = Readiness::Idle;
        }
        self.forget_if_idle(&claim.lane);
    }

    /// Answers a claim that failed before reaching the store: its reservations are released and the
    /// lane stays as it was.
    pub fn abandoned(&mut self, claim: &Claim) {
        let count = u32::try_from(claim.count).unwrap_or(u32::MAX);
        self.release_slots(&claim.lane, count);
    }

    /// One run of `lane` stopped holding a slot (its attempt ended, it was parked or failed).
    pub fn release(&mut self, lane: &Lane) {
        self.release_slots(lane, 1);
        self.forget_if_idle(lane);
    }

    fn release_slots(&mut self, lane: &Lane, n: u32) {
        let env_limit = self.environment_limit(&lane.environment_id);
        let queue = self
            .queues
            .entry((lane.environment_id.clone(), lane.queue.clone()))
            .or_default();
        queue.running = queue.running.saturating_sub(n);
        let limits = queue.limits;
        let Some(env) = self.envs.get_mut(&lane.environment_id) else {
            return;
        };
        env.running = env.running.saturating_sub(n);
        if let Some(state) = self.lanes.get_mut(lane) {
            state.running = state.running.saturating_sub(n);
            if state.readiness == Readiness::Parked
                && !limits.paused
                && state.running < lane_limit(limits, env_limit)
            {
                state.readiness = Readiness::Ready;
                self.generations += 1;
                state.generation = self.generations;
                env.rotation.push_back((lane.clone(), state.generation));
            }
        }
        if !env.in_ring && !env.rotation.is_empty() && env.running < env_limit {
            env.in_ring = true;
            self.ring.push_back(lane.environment_id.clone());
        }
    }

    /// Puts parked lanes matching `which` back in rotation; planning parks them again if they
    /// still cannot start a run.
    fn unpark(&mut self, which: impl Fn(&Lane) -> bool) {
        for (lane, state) in self.lanes.iter_mut() {
            if state.readiness != Readiness::Parked || !which(lane) {
                continue;
            }
            let env = self.envs.entry(lane.environment_id.clone()).or_default();
            state.readiness = Readiness::Ready;
            self.generations += 1;
            state.generation = self.generations;
            env.rotation.push_back((lane.clone(), state.generation));
            if !env.in_ring {
                env.in_ring = true;
                self.ring.push_back(lane.environment_id.clone());
            }
        }
    }

    /// Drops an idle lane's state once it holds no slot, so memory follows the active lanes only.
    fn forget_if_idle(&mut self, lane: &Lane) {
        if self
            .lanes
            .get(lane)
            .is_some_and(|s| s.readiness == Readiness::Idle && s.running == 0)
        {
            self.lanes.remove(lane);
        }
    }
}

/// How many runs one lane may hold: its queue's limit (per concurrency key), never more than the
/// environment's.
fn lane_limit(limits: QueueLimits, env_limit: u32) -> u32 {
    limits.limit.map_or(env_limit, |l| l.min(env_limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(env: &str, queue: &str, key: Option<&str>) -> Lane {
        Lane {
            environment_id: env.into(),
            queue: queue.into(),
            concurrency_key: key.map(Into::into),
        }
    }

    /// Plans `free` runs and answers every claim as fully found.
    fn start(s: &mut Scheduler, free: usize) -> Vec<Lane> {
        let claims = s.plan(free);
        let mut lanes = Vec::new();
        for c in &claims {
            s.claimed(c, c.count);
            lanes.extend(std::iter::repeat_n(c.lane.clone(), c.count));
        }
        lanes
    }

    #[test]
    fn a_flooding_environment_does_not_delay_another_by_more_than_a_round() {
        let mut s = Scheduler::new(100_000);
        let flood = lane("env_a", "task/hello", None);
        // The flood's lane is active with (say) 100,000 runs behind it.
        s.activate(flood.clone());
        for _ in 0..10 {
            assert_eq!(start(&mut s, 1), vec![flood.clone()]);
        }
        let single = lane("env_b", "task/hello", None);
        s.activate(single.clone());
        // At most one more flood run starts before the other environment's run.
        let next_two = [start(&mut s, 1), start(&mut s, 1)].concat();
        assert!(next_two.contains(&single), "{next_two:?}");
    }

    #[test]
    fn one_pass_shares_its_slots_round_robin() {
        let mut s = Scheduler::new(100);
        for env in ["a", "b", "c"] {
            s.activate(lane(env, "q", None));
        }
        let started = start(&mut s, 6);
        for env in ["a", "b", "c"] {
            assert_eq!(
                started.iter().filter(|l| l.environment_id == env).count(),
                2
            );
        }
    }

    #[test]
    fn queue_limit_parks_the_lane_until_a_run_ends() {
        let mut s = Scheduler::new(100);
        let q = lane("e", "limited", None);
        s.set_queue(
            "e",
            "limited",
            QueueLimits {
                limit: Some(2),
                paused: false,
            },
        );
        s.activate(q.clone());
        assert_eq!(start(&mut s, 10).len(), 2);
        assert!(start(&mut s, 10).is_empty());
        assert_eq!(s.queue_running("e", "limited"), 2);
        s.release(&q);
        assert_eq!(start(&mut s, 10), vec![q.clone()]);
    }

    #[test]
    fn concurrency_keys_get_the_queue_limit_each() {
        let mut s = Scheduler::new(100);
        s.set_queue(
            "e",
            "q",
            QueueLimits {
                limit: Some(1),
                paused: false,
            },
        );
        let (a, b) = (lane("e", "q", Some("a")), lane("e", "q", Some("b")));
        s.activate(a.clone());
        s.activate(b.clone());
        let started = start(&mut s, 10);
        assert_eq!(started.len(), 2);
        assert!(started.contains(&a) && started.contains(&b));
        assert_eq!(s.queue_running("e", "q"), 2);
    }

    #[test]
    fn environment_limit_caps_all_its_queues() {
        let mut s = Scheduler::new(100);
        s.set_environment_limit("e", Some(3));
        for q in ["q1", "q2"] {
            s.activate(lane("e", q, None));
        }
        s.activate(lane("other", "q1", None));
        let started = start(&mut s, 100);
        assert_eq!(
            started.iter().filter(|l| l.environment_id == "e").count(),
            3
        );
        // The other environment is not limited by it.
        assert_eq!(
            started
                .iter()
                .filter(|l| l.environment_id == "other")
                .count(),
            97
        );
        s.release(&lane("e", "q1", None));
        assert_eq!(start(&mut s, 1).len(), 1);
    }

    #[test]
    fn raising_an_environment_limit_from_zero_starts_its_runs() {
        let mut s = Scheduler::new(100);
        s.set_environment_limit("e", Some(0));
        s.activate(lane("e", "q", None));
        assert!(start(&mut s, 10).is_empty());
        s.set_environment_limit("e", Some(2));
        assert_eq!(start(&mut s, 10).len(), 2);
    }

    #[test]
    fn a_forgotten_lane_comes_back_once_in_the_rotation() {
        let mut s = Scheduler::new(100);
        let (a, b) = (lane("e", "q", Some("a")), lane("e", "q", Some("b")));
        s.activate(a.clone());
        s.activate(b.clone());
        // `a` is planned, comes up short (idle) and its run ends: forgotten, with a stale entry.
        let claims = s.plan(1);
        assert_eq!(claims[0].lane, a);
        s.claimed(&claims[0], 1);
        s.release(&a);
        let claims = s.plan(1);
        assert_eq!(claims[0].lane, b);
        s.claimed(&claims[0], 1);
        let claims = s.plan(1);
        s.claimed(&claims[0], 0);
        s.release(&a);
        // Activated again, it takes one turn per round, not two.
        s.activate(a.clone());
        let started = start(&mut s, 4);
        let turns = started.iter().filter(|l| **l == a).count();
        assert_eq!(turns, 2, "{started:?}");
    }

    #[test]
    fn a_queue_limit_above_the_environment_limit_is_capped() {
        let mut s = Scheduler::new(2);
        s.set_queue(
            "e",
            "q",
            QueueLimits {
                limit: Some(50),
                paused: false,
            },
        );
        s.activate(lane("e", "q", None));
        assert_eq!(start(&mut s, 10).len(), 2);
    }

    #[test]
    fn paused_queue_starts_nothing_until_resumed() {
        let mut s = Scheduler::new(100);
        let paused = QueueLimits {
            limit: None,
            paused: true,
        };
        s.set_queue("e", "q", paused);
        s.activate(lane("e", "q", None));
        assert!(start(&mut s, 10).is_empty());
        s.set_queue("e", "q", QueueLimits::default());
        assert_eq!(start(&mut s, 3).len(), 3);
    }

    #[test]
    fn zero_limit_holds_everything() {
        let mut s = Scheduler::new(100);
        s.set_queue(
            "e",
            "q",
            QueueLimits {
                limit: Some(0),
                paused: false,
            },
        );
        s.activate(lane("e", "q", None));
        assert!(start(&mut s, 10).is_empty());
    }

    #[test]
    fn a_short_claim_idles_the_lane_and_frees_its_slots() {
        let mut s = Scheduler::new(100);
        let q = lane("e", "q", None);
        s.activate(q.clone());
        let claims = s.plan(5);
        assert_eq!(claims.len(), 1);
        s.claimed(&claims[0], 2);
        assert_eq!(s.environment_running("e"), 2);
        assert!(s.plan(5).is_empty());
        assert!(!s.has_ready());
    }

    #[test]
    fn a_run_queued_during_a_claim_keeps_its_lane_ready() {
        let mut s = Scheduler::new(100);
        let q = lane("e", "q", None);
        s.activate(q.clone());
        let claims = s.plan(5);
        // A trigger commits after the claim read the lane, and activates it again.
        s.activate(q.clone());
        s.claimed(&claims[0], 0);
        assert_eq!(s.plan(1).len(), 1);
    }

    #[test]
    fn abandoned_claims_release_slots_and_keep_the_lane() {
        let mut s = Scheduler::new(100);
        let q = lane("e", "q", None);
        s.activate(q.clone());
        let claims = s.plan(3);
        s.abandoned(&claims[0]);
        assert_eq!(s.environment_running("e"), 0);
        assert_eq!(s.plan(3)[0].count, 3);
    }

    #[test]
    fn idle_lanes_are_forgotten() {
        let mut s = Scheduler::new(10_000);
        for i in 0..1_000 {
            let l = lane("e", "q", Some(&format!("user-{i}")));
            s.activate(l);
        }
        let claims = s.plan(1_000);
        for c in &claims {
            s.claimed(c, 0);
        }
        assert!(s.lanes.is_empty());
    }
}
