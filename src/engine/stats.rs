//! The dashboard's charts, computed from what the store keeps anyway: runs created per bucket of
//! time by their status now, queue depth over time (from the spans runs spent queued), and the
//! p50/p95 duration of each task's finished runs; and the environment a key signs in to.
//!
//! The windows, bucket counts and rows read are bounded here, so a chart never costs more than a
//! bounded scan of one environment. Nothing here writes.

use std::collections::BTreeMap;

use super::*;
use crate::store::{QueueSpan, StatusCount};

/// Longest window a chart looks back over: a week.
pub const MAX_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Most buckets (bars, or points of a line) one chart has.
pub const MAX_BUCKETS: u32 = 1_440;

/// Shortest bucket: a second.
pub const MIN_BUCKET_MS: i64 = 1_000;

/// Most queue spans and finished runs one chart reads; past this it shows the latest.
const MAX_ROWS: usize = 100_000;

/// Queues a depth chart shows by name (the deepest); the total covers every queue.
const MAX_DEPTH_QUEUES: usize = 8;

/// Buckets of time ending at the bucket that holds `now`, aligned to the bucket size (so minute
/// buckets start on the minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Millis,
    pub bucket_ms: i64,
    pub buckets: u32,
}

impl Window {
    /// The window of `window_ms` before `now` in buckets of `bucket_ms` (each clamped to the
    /// bounds above; the bucket grows when the window would need too many).
    pub fn ending(now: Millis, window_ms: i64, bucket_ms: i64) -> Window {
        let window_ms = window_ms.clamp(MIN_BUCKET_MS, MAX_WINDOW_MS);
        let min_bucket = (window_ms + i64::from(MAX_BUCKETS) - 1) / i64::from(MAX_BUCKETS);
        let bucket_ms = bucket_ms.clamp(MIN_BUCKET_MS, window_ms).max(min_bucket);
        let buckets = u32::try_from((window_ms + bucket_ms - 1) / bucket_ms)
            .unwrap_or(MAX_BUCKETS)
            .clamp(1, MAX_BUCKETS);
        let end = (now.div_euclid(bucket_ms) + 1) * bucket_ms;
        Window {
            from: end - bucket_ms * i64::from(buckets),
            bucket_ms,
            buckets,
        }
    }

    pub fn to(&self) -> Millis {
        self.from + self.bucket_ms * i64::from(self.buckets)
    }
}

/// Queue depth at the end of each bucket, for all queues and for the deepest ones.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    pub window: Window,
    /// The time of each point: each bucket's end, the last one `now`.
    pub points: Vec<Millis>,
    pub total: Vec<u64>,
    /// The deepest queues by their highest point, deepest first.
    pub queues: Vec<(String, Vec<u64>)>,
    /// More spans overlapped the window than were read: the earliest points may be low.
    pub truncated: bool,
}

/// p50 and p95 of one task's finished runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDurations {
    pub task_id: String,
    pub runs: u64,
    /// From the first attempt's start to the end.
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
    /// Compute time of the attempts (waits excluded).
    pub compute_p50_ms: u64,
    pub compute_p95_ms: u64,
}

/// The nearest-rank percentile `p` (0–100) of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How many spans hold each point (`entered <= t < left`), by a sweep over the sorted ends.
pub fn depth_at(spans: &[&QueueSpan], points: &[Millis]) -> Vec<u64> {
    let mut entered: Vec<Millis> = spans.iter().map(|s| s.entered).collect();
    let mut left: Vec<Millis> = spans.iter().filter_map(|s| s.left).collect();
    entered.sort_unstable();
    left.sort_unstable();
    let (mut i, mut j) = (0, 0);
    points
        .iter()
        .map(|&t| {
            while i < entered.len() && entered[i] <= t {
                i += 1;
            }
            while j < left.len() && left[j] <= t {
                j += 1;
            }
            (i as u64).saturating_sub(j as u64)
        })
        .collect()
}

/// Each task's percentiles, busiest task first.
pub fn task_durations(durations: &[crate::store::RunDuration]) -> Vec<TaskDurations> {
    let mut by_task: BTreeMap<&str, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for d in durations {
        let entry = by_task.entry(&d.task_id).or_default();
        entry.0.push(d.wall_ms);
        entry.1.push(d.compute_ms);
    }
    let mut out: Vec<TaskDurations> = by_task
        .into_iter()
        .map(|(task, (mut wall, mut compute))| {
            wall.sort_unstable();
            compute.sort_unstable();
            TaskDurations {
                task_id: task.to_owned(),
                runs: wall.len() as u64,
                p50_ms: percentile(&wall, 50.0),
                p95_ms: percentile(&wall, 95.0),
                max_ms: wall.last().copied().unwrap_or(0),
                compute_p50_ms: percentile(&compute, 50.0),
                compute_p95_ms: percentile(&compute, 95.0),
            }
        })
        .collect();
    out.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.task_id.cmp(&b.task_id)));
    out
}

impl Engine {
    /// Runs created in each bucket of the window, by the status they have now.
    pub async fn runs_by_status(
        &self,
        env: &Environment,
        window: Window,
    ) -> Result<Vec<StatusCount>, EngineError> {
        Ok(self
            .store
            .runs_by_status(&env.id, window.from, window.bucket_ms, window.buckets)
            .await?)
    }

    /// How many runs waited in the environment's queues at the end of each bucket.
    pub async fn queue_depth(
        &self,
        env: &Environment,
        window: Window,
    ) -> Result<QueueDepth, EngineError> {
        let now = self.now();
        let spans = self
            .store
            .queue_spans(&env.id, window.from, window.to(), MAX_ROWS)
            .await?;
        let points: Vec<Millis> = (1..=i64::from(window.buckets))
            .map(|i| (window.from + i * window.bucket_ms).min(now))
            .collect();
        let all: Vec<&QueueSpan> = spans.spans.iter().collect();
        let total = depth_at(&all, &points);
        let mut by_queue: BTreeMap<&str, Vec<&QueueSpan>> = BTreeMap::new();
        for span in &spans.spans {
            by_queue.entry(&span.queue).or_default().push(span);
        }
        let mut queues: Vec<(String, Vec<u64>)> = by_queue
            .into_iter()
            .map(|(name, spans)| (name.to_owned(), depth_at(&spans, &points)))
            .filter(|(_, depth)| depth.iter().any(|d| *d > 0))
            .collect();
        let peak = |d: &[u64]| d.iter().copied().max().unwrap_or(0);
        queues.sort_by(|a, b| peak(&b.1).cmp(&peak(&a.1)).then_with(|| a.0.cmp(&b.0)));
        queues.truncate(MAX_DEPTH_QUEUES);
        Ok(QueueDepth {
            window,
            points,
            total,
            queues,
            truncated: spans.truncated,
        })
    }

    /// p50/p95 durations of each task's runs that finished in the window.
    pub async fn task_durations(
        &self,
        env: &Environment,
        window: Window,
    ) -> Result<Vec<TaskDurations>, EngineError> {
        let durations = self
            .store
            .run_durations(&env.id, window.from, window.to(), MAX_ROWS)
            .await?;
        Ok(task_durations(&durations))
    }

    /// The key's environment with its concurrency limit and the runs holding a slot now.
    pub async fn environment_overview(
        &self,
        env: &Environment,
    ) -> Result<EnvironmentLimit, EngineError> {
        let info = self
            .store
            .environments()
            .await?
            .into_iter()
            .find(|e| e.environment.id == env.id)
            .ok_or(EngineError::Store(StoreError::NotFound("environment")))?;
        self.environment_limit(info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunDuration;

    fn span(entered: Millis, left: Option<Millis>) -> QueueSpan {
        QueueSpan {
            queue: "q".into(),
            entered,
            left,
        }
    }

    #[test]
    fn a_span_counts_from_its_entry_until_it_leaves() {
        let spans = [span(10, Some(20)), span(15, None), span(30, Some(31))];
        let refs: Vec<&QueueSpan> = spans.iter().collect();
        assert_eq!(
            depth_at(&refs, &[5, 10, 19, 20, 30, 31, 100]),
            vec![0, 1, 2, 1, 2, 1, 1]
        );
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 95.0), 95);
        assert_eq!(percentile(&[7], 95.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3], 0.0), 1);
    }

    #[test]
    fn durations_are_grouped_by_task_busiest_first() {
        let d = |task: &str, wall, compute| RunDuration {
            task_id: task.into(),
            wall_ms: wall,
            compute_ms: compute,
        };
        let out = task_durations(&[d("a", 10, 1), d("b", 5, 5), d("b", 100, 7), d("b", 7, 6)]);
        assert_eq!(out[0].task_id, "b");
        assert_eq!((out[0].runs, out[0].p50_ms, out[0].p95_ms), (3, 7, 100));
        assert_eq!((out[0].compute_p50_ms, out[0].max_ms), (6, 100));
        assert_eq!((out[1].task_id.as_str(), out[1].p50_ms), ("a", 10));
    }

    #[test]
    fn windows_are_aligned_bounded_and_hold_now() {
        let w = Window::ending(125_500, 60_000, 1_000);
        assert_eq!((w.from, w.bucket_ms, w.buckets), (66_000, 1_000, 60));
        assert!(w.from <= 125_500 && w.to() > 125_500);
        // A week in one-second buckets would be too many: the bucket grows.
        let w = Window::ending(0, MAX_WINDOW_MS * 10, 1);
        assert!(w.buckets <= MAX_BUCKETS);
        assert!(w.bucket_ms * i64::from(w.buckets) >= MAX_WINDOW_MS);
    }
}
