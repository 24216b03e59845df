//! `kiln bench`'s scenarios run to the end and report what they measured. No timing is asserted:
//! the numbers depend on the machine; the benchmark itself compares them with its baselines.

use kiln::bench::{ThroughputConfig, throughput};

use crate::support::{guest_path, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_scenario_completes_every_run_and_reports_rates() {
    let report = throughput(&ThroughputConfig {
        runs: 20,
        concurrency: 2,
        bench_wasm: guest_path(guests::BENCH),
    })
    .await
    .expect("the throughput scenario runs");
    assert_eq!(report.runs, 20);
    assert_eq!(report.completed, 20, "{report:?}");
    assert_eq!(report.concurrency, 2);
    for (what, x) in [
        ("kiln runs/s", report.kiln_runs_per_sec),
        ("bare runs/s", report.bare_runs_per_sec),
        ("kiln µs/run", report.kiln_us_per_run),
        ("bare µs/run", report.bare_us_per_run),
        ("ratio", report.ratio),
        (
            "bare runs/s, 1 at once",
            report.bare_sequential_runs_per_sec,
        ),
    ] {
        assert!(x.is_finite() && x > 0.0, "{what} is {x}: {report:?}");
    }
}
