//! `kiln bench`'s scenarios run to the end and report what they measured. No timing is asserted:
//! the numbers depend on the machine; the benchmark itself compares them with its baselines. What
//! is asserted is that each report agrees with itself: rates with counts and times, ratios with
//! their parts, percentiles in order — so a wrong computation fails here.

/// Whether `a` and `b` agree to within `tolerance` of their size (float arithmetic, rounding).
fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs())
}

use kiln::bench::{
    LanguageComponent, LanguagesConfig, QueueScaleConfig, ThroughputConfig, languages, queue_scale,
    throughput,
};

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
    let n = report.runs as f64;
    assert!(
        close(report.kiln_runs_per_sec * report.kiln_secs, n, 1e-6),
        "{report:?}"
    );
    assert!(
        close(report.bare_runs_per_sec * report.bare_secs, n, 1e-6),
        "{report:?}"
    );
    assert!(
        close(report.kiln_us_per_run * report.kiln_runs_per_sec, 1e6, 1e-6),
        "{report:?}"
    );
    assert!(
        close(report.bare_us_per_run * report.bare_runs_per_sec, 1e6, 1e-6),
        "{report:?}"
    );
    assert!(
        close(
            report.ratio,
            report.kiln_us_per_run / report.bare_us_per_run,
            1e-6
        ),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_scenario_claims_and_drains_at_each_backlog() {
    let report = queue_scale(&QueueScaleConfig {
        sizes: vec![2_000, 3_000],
        concurrency: 2,
        bench_wasm: guest_path(guests::BENCH),
    })
    .await
    .expect("the queue scenario runs");
    let queued: Vec<usize> = report.points.iter().map(|p| p.queued).collect();
    assert_eq!(queued, [2_000, 3_000]);
    for p in &report.points {
        for x in [p.fill_us_per_run, p.claim_us_per_run, p.drain_runs_per_sec] {
            assert!(x.is_finite() && x > 0.0, "{report:?}");
        }
    }
    let (first, last) = (&report.points[0], &report.points[1]);
    assert!(
        close(
            report.claim_ratio,
            last.claim_us_per_run / first.claim_us_per_run,
            1e-6
        ),
        "{report:?}"
    );
    assert!(
        close(
            report.drain_ratio,
            first.drain_runs_per_sec / last.drain_runs_per_sec,
            1e-6
        ),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_scenario_checkpoints_resumes_and_measures_replay() {
    let report = kiln::bench::waits(&kiln::bench::WaitsConfig {
        waiting: 50,
        repeat: 1,
        concurrency: 2,
        bench_wasm: guest_path(guests::BENCH),
    })
    .await
    .expect("the waits scenario runs");
    assert_eq!(report.waiting, 50);
    assert!(report.journal_bytes_per_wait > 0.0, "{report:?}");
    assert!(
        close(
            report.replay_ratio,
            report.replay_compute_ms / report.original_compute_ms,
            1e-6
        ),
        "{report:?}"
    );
    assert!(
        report.rss_waiting_mb >= 0.0 && report.rss_idle_mb > 0.0,
        "{report:?}"
    );
    assert!(
        report.trigger_to_waiting_ms > 0.0 && report.resume_to_completed_ms > 0.0,
        "{report:?}"
    );
    for x in [
        report.checkpoint_runs_per_sec,
        report.resume_runs_per_sec,
        report.original_compute_ms,
    ] {
        assert!(x.is_finite() && x > 0.0, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_scenario_samples_light_and_loaded() {
    let report = kiln::bench::latency(&kiln::bench::LatencyConfig {
        runs: 5,
        concurrency: 2,
        bench_wasm: guest_path(guests::BENCH),
        load_runs_per_sec: 100.0,
    })
    .await
    .expect("the latency scenario runs");
    for stats in [&report.in_process, &report.http, &report.loaded] {
        for p in [&stats.trigger_call, &stats.start_observed] {
            assert!(
                p.p50_ms > 0.0 && p.p99_ms >= p.p50_ms && p.max_ms >= p.p99_ms,
                "{report:?}"
            );
        }
        // A run cannot be seen starting before it was triggered.
        assert!(
            stats.start_observed.p50_ms >= stats.trigger_call.p50_ms * 0.5,
            "{report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn languages_scenario_measures_each_built_component_and_names_a_missing_one() {
    let js = tokio::task::spawn_blocking(crate::sdk_build::js_component_path)
        .await
        .expect("the TypeScript build");
    let guest_dir = guest_path(guests::HELLO)
        .parent()
        .expect("the guests' directory")
        .to_path_buf();
    let missing = std::path::PathBuf::from("no/such/app.wasm");
    let report = languages(&LanguagesConfig {
        repeat: 1,
        concurrency: 2,
        components: LanguageComponent::all(&guest_dir, js, missing),
    })
    .await
    .expect("the languages scenario runs");
    let names: Vec<&str> = report.languages.iter().map(|l| l.language).collect();
    assert_eq!(names, ["Rust", "TypeScript", "Python"]);
    let python = &report.languages[2];
    let why = python.missing.as_deref().expect("Python is missing");
    assert!(
        why.contains("no/such/app.wasm") && why.contains("kiln_sdk build"),
        "{why}"
    );
    for l in &report.languages[..2] {
        assert!(l.missing.is_none(), "{l:?}");
        for (what, x) in [
            ("deploy", l.deploy_ms),
            ("bare compile", l.bare_compile_ms),
            ("instantiate", l.instantiate_ms),
            ("warm run", l.warm_run_ms),
            ("bare call", l.bare_call_ms),
            ("checkpoint", l.to_checkpoint_ms),
            ("resume", l.resume_ms),
            ("journal bytes", l.journal_bytes),
        ] {
            assert!(x.is_finite() && x > 0.0, "{what} is {x}: {l:?}");
        }
        // Every run reads the clock before its wait; no entry is stored larger than whole.
        assert!(l.journal_clock_reads >= 1.0, "{l:?}");
        assert!(
            l.journal_entries > l.journal_clock_reads,
            "the wait is journaled too: {l:?}"
        );
        assert!(l.journal_bytes <= l.journal_plain_bytes, "{l:?}");
    }
    let js = &report.languages[1];
    // The JavaScript engine reads the clock many times; after the first, each read is stored
    // compactly.
    assert!(js.journal_clock_reads > 2.0, "{js:?}");
    assert!(js.journal_bytes < js.journal_plain_bytes, "{js:?}");
    assert!(
        js.component_mb > 5.0 * report.languages[0].component_mb,
        "the JavaScript engine is in the component: {js:?}"
    );
    let rows = report.rows();
    assert!(
        rows.iter().any(|r| r.metric == "Python: not measured"),
        "{rows:?}"
    );
}

/// The PostgreSQL server of the backends scenario's test (`KILN_TEST_POSTGRES`, as the store's
/// tests), whose user can create databases.
fn test_server() -> String {
    std::env::var("KILN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_scenario_measures_sqlite_and_postgres_side_by_side_on_scratch_databases() {
    let server = test_server();
    let report = kiln::bench::backends(&kiln::bench::BackendsConfig {
        runs: 20,
        latency_runs: 5,
        concurrency: 2,
        bench_wasm: guest_path(guests::BENCH),
        database: server.clone(),
    })
    .await
    .expect("the backends scenario runs");
    let (sqlite, postgres) = (&report.sqlite, &report.postgres);
    assert!(sqlite.durability.contains("SQLite"), "{report:?}");
    assert!(postgres.durability.contains("PostgreSQL"), "{report:?}");
    for (name, b) in [("SQLite", sqlite), ("PostgreSQL", postgres)] {
        assert_eq!(b.completed, 20, "{name}: {report:?}");
        let p = &b.latency.start_observed;
        for (what, x) in [
            ("runs/s", b.runs_per_sec),
            ("µs/run", b.us_per_run),
            ("p50", p.p50_ms),
        ] {
            assert!(x.is_finite() && x > 0.0, "{name} {what} is {x}: {report:?}");
        }
        assert!(p.p99_ms >= p.p50_ms && p.max_ms >= p.p99_ms, "{report:?}");
        assert!(close(b.runs_per_sec * b.secs, 20.0, 1e-6), "{report:?}");
    }
    for (ratio, pg, lite) in [
        (
            report.throughput_ratio,
            postgres.us_per_run,
            sqlite.us_per_run,
        ),
        (
            report.latency_p50_ratio,
            postgres.latency.start_observed.p50_ms,
            sqlite.latency.start_observed.p50_ms,
        ),
        (
            report.latency_p99_ratio,
            postgres.latency.start_observed.p99_ms,
            sqlite.latency.start_observed.p99_ms,
        ),
    ] {
        assert!(close(ratio, pg / lite, 1e-6), "{report:?}");
    }

    // Each PostgreSQL measurement had a database of its own, gone now; SQLite had none.
    assert!(sqlite.databases.is_empty(), "{report:?}");
    assert_eq!(postgres.databases.len(), 3, "{report:?}");
    let distinct: std::collections::HashSet<_> = postgres.databases.iter().collect();
    assert_eq!(distinct.len(), 3, "{report:?}");

    // Two hosts on one database ran the same runs (and the warm-up run), each started once.
    let two = &report.two_hosts;
    assert_eq!(two.completed, 20, "{report:?}");
    assert_eq!(two.runs_by_host.iter().sum::<u64>(), 21, "{report:?}");
    assert!(two.runs_by_host.len() <= 2, "{report:?}");
    assert!(
        close(
            report.two_hosts_ratio,
            two.us_per_run / postgres.us_per_run,
            1e-6
        ),
        "{report:?}"
    );
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    tokio::spawn(connection);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = ANY($1)",
            &[&postgres.databases],
        )
        .await
        .expect("pg_database is read")
        .get(0);
    assert_eq!(left, 0, "the scratch databases are dropped: {report:?}");

    // The table has both stores' rows, each PostgreSQL figure beside SQLite's with its ratio,
    // and says what is not measured and why.
    let rows = report.rows();
    let row = |metric: &str| {
        rows.iter()
            .find(|r| r.metric.contains(metric))
            .unwrap_or_else(|| panic!("no row {metric:?}: {rows:#?}"))
    };
    assert!(row("SQLite durability").metric.contains(sqlite.durability));
    assert!(
        row("PostgreSQL durability")
            .metric
            .contains(postgres.durability)
    );
    for metric in ["wall time per run", "p50", "p99"] {
        let r = row(metric);
        for cell in [&r.kiln, &r.baseline] {
            let x: f64 = cell.parse().unwrap_or_else(|_| panic!("{r:?}"));
            assert!(x > 0.0, "{r:?}");
        }
        assert!(r.ratio.is_some_and(|x| x > 0.0), "{r:?}");
    }
    let two_hosts = row("two PostgreSQL hosts vs one: wall time");
    assert!(two_hosts.ratio.is_some_and(|x| x > 0.0), "{rows:#?}");
    assert!(
        two_hosts.metric.contains("runs started per host"),
        "{rows:#?}"
    );
}
