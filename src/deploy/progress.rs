//! How far a deploy has got: which component it is on, in which phase, since when, and how long
//! compiling it should take on this host (from the rate of the compiles before it).
//!
//! wasmtime reports nothing while it compiles, so the estimate is the component's size over the
//! bytes per second the host's recent compiles managed; until one has been measured there is
//! none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a deploy is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the compiler: deploys compile one at a time (each uses every core).
    Waiting,
    /// Compiling a component to machine code.
    Compiling,
    /// Calling the component's `definitions()` and checking its tasks.
    Definitions,
    /// Storing the version.
    Storing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Compiling => "compiling",
            Phase::Definitions => "definitions",
            Phase::Storing => "storing",
        }
    }
}

/// A deploy's progress as a reader sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: Phase,
    /// The component the phase is about (1-based), of `components`.
    pub component: usize,
    pub components: usize,
    /// Its file name, or its content digest when the upload did not name it.
    pub name: String,
    pub bytes: usize,
    /// Time in this phase so far.
    pub elapsed: Duration,
    /// How long compiling this component should take here, when the phase is compiling and the
    /// host has compiled before.
    pub estimate: Option<Duration>,
}

/// The progress of one deploy, written by the deployer and read by whoever follows it.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    component: usize,
    components: usize,
    name: String,
    bytes: usize,
    since: Instant,
    estimate: Option<Duration>,
}

impl Progress {
    /// A deploy of `components` components, the first `name` of `bytes`, that has not started.
    pub fn new(components: usize, name: &str, bytes: usize) -> Progress {
        Progress {
            state: Mutex::new(State {
                phase: Phase::Waiting,
                component: 1,
                components,
                name: name.to_owned(),
                bytes,
                since: Instant::now(),
                estimate: None,
            }),
        }
    }

    /// Enters `phase` for component `index` (0-based) of the deploy.
    pub(super) fn enter(
        &self,
        phase: Phase,
        index: usize,
        name: &str,
        bytes: usize,
        estimate: Option<Duration>,
    ) {
        let mut state = self.lock();
        state.phase = phase;
        state.component = index + 1;
        state.name.clear();
        state.name.push_str(name);
        state.bytes = bytes;
        state.since = Instant::now();
        state.estimate = estimate;
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            phase: state.phase,
            component: state.component,
            components: state.components,
            name: state.name.clone(),
            bytes: state.bytes,
            elapsed: state.since.elapsed(),
            estimate: state.estimate,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The host's compile speed, in wasm bytes per second, from the compiles it has done (each new
/// one weighs half).
#[derive(Debug, Default)]
pub(super) struct CompileRate {
    bytes_per_second: Mutex<Option<f64>>,
}

impl CompileRate {
    pub(super) fn record(&self, bytes: usize, took: Duration) {
        // A compile too short to time says nothing about the rate of a long one.
        if took < Duration::from_millis(20) {
            return;
        }
        let rate = bytes as f64 / took.as_secs_f64();
        let mut current = self
            .bytes_per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *current = Some(current.map_or(rate, |old| (old + rate) / 2.0));
    }

    /// How long compiling `bytes` should take, once a compile has been measured.
    pub(super) fn estimate(&self, bytes: usize) -> Option<Duration> {
        let rate = (*self
            .bytes_per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner()))?;
        (rate > 0.0).then(|| Duration::from_secs_f64(bytes as f64 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_the_measured_rate() {
        let rate = CompileRate::default();
        assert_eq!(rate.estimate(1_000), None, "no compile measured yet");
        rate.record(1_000, Duration::from_millis(5));
        assert_eq!(rate.estimate(1_000), None, "too short a compile to time");
        rate.record(10_000_000, Duration::from_secs(10));
        assert_eq!(rate.estimate(2_000_000), Some(Duration::from_secs(2)));
        rate.record(10_000_000, Duration::from_secs(5));
        // (1 MB/s + 2 MB/s) / 2
        assert_eq!(rate.estimate(3_000_000), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_snapshot_tells_the_phase_and_component() {
        let progress = Progress::new(2, "a.wasm", 7);
        let s = progress.snapshot();
        assert_eq!((s.component, s.name.as_str(), s.bytes), (1, "a.wasm", 7));
        assert_eq!(progress.snapshot().phase, Phase::Waiting);
        progress.enter(
            Phase::Compiling,
            1,
            "b.wasm",
            42,
            Some(Duration::from_secs(3)),
        );
        let s = progress.snapshot();
        assert_eq!(
            (s.phase, s.component, s.components, s.name.as_str(), s.bytes),
            (Phase::Compiling, 2, 2, "b.wasm", 42)
        );
        assert_eq!(s.estimate, Some(Duration::from_secs(3)));
    }
}
