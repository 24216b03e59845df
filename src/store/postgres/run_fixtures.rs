//! Rows for the PostgreSQL store's unit tests, written straight into a migrated database: one
//! tenant (project `p`, environment `e`) with queues, runs of it in any status, a deployment, and
//! the changes and attempt ends the tests apply. Test-only; a leaf.

use tokio_postgres::Client;

use crate::model::*;
use crate::store::*;

/// Inserts a run of environment `e` in `queue` with `status` (task `t`, score 0).
pub(crate) async fn insert_run(c: &Client, id: &str, queue: &str, status: &str) {
    insert_scored(c, id, queue, status, 0).await;
}

/// Inserts a run as [`insert_run`] does, with queue order `score`.
pub(crate) async fn insert_scored(c: &Client, id: &str, queue: &str, status: &str, score: i64) {
    c.execute(
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, queue_ts, \
           available_at, created_at, updated_at, score) \
         VALUES ($1, 'e', 't', $3, 'null', $2, 'small-1x', 3, 2.0, 1000, 10000, 1, 0, 0, 0, 0, $4)",
        &[&id, &queue, &status, &score],
    )
    .await
    .expect("a run");
}

/// A tenant with queues `a` and `b`. Another queue is made with [`make_queue`] before any run of
/// it, as the store makes a run's queue before the run.
pub(crate) async fn tenant(c: &Client) {
    c.batch_execute(
        "INSERT INTO projects (id, slug, created_at) VALUES ('p', 'default', 0);
         INSERT INTO environments (id, project_id, slug, created_at) VALUES ('e', 'p', 'dev', 0);",
    )
    .await
    .expect("a tenant");
    for name in ["a", "b"] {
        make_queue(c, name).await;
    }
}

/// A custom queue `name` of environment `e`.
pub(crate) async fn make_queue(c: &Client, name: &str) {
    c.execute(
        "INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at) \
         VALUES ($1, 'e', $1, 'custom', 0, 0)",
        &[&name],
    )
    .await
    .expect("a queue");
}

/// A deployment `id` of environment `e` with version `version`, made at `at`, defining `tasks`.
pub(crate) async fn deploy(c: &Client, id: &str, version: &str, at: i64, tasks: &[&str]) {
    c.execute(
        "INSERT INTO components (digest, bytes, created_at) VALUES ('digest', '\\x00', 0) \
         ON CONFLICT DO NOTHING",
        &[],
    )
    .await
    .expect("a component");
    c.execute(
        "INSERT INTO deployments (id, environment_id, version, component_digest, created_at) \
         VALUES ($1, 'e', $2, 'digest', $3)",
        &[&id, &version, &at],
    )
    .await
    .expect("a deployment");
    for (position, task) in tasks.iter().enumerate() {
        c.execute(
            "INSERT INTO tasks (deployment_id, position, task_id) VALUES ($1, $2, $3)",
            &[&id, &(position as i64), task],
        )
        .await
        .expect("a task");
    }
}

/// A run's status as stored.
pub(crate) async fn status_of(c: &Client, id: &str) -> String {
    c.query_one("SELECT status FROM runs WHERE id = $1", &[&id])
        .await
        .expect("the run")
        .get(0)
}

/// The change of run `id` (environment `e`) from `expected` to `status` at `now`.
pub(crate) fn update(id: &str, expected: RunStatus, status: RunStatus, now: Millis) -> RunUpdate {
    RunUpdate {
        run_id: id.into(),
        environment_id: "e".into(),
        expected,
        status,
        available_at: None,
        error: None,
        machine: None,
        checkpointed: false,
        now,
    }
}

/// The end of attempt `attempt` with `update`, recorded as `status`, without usage or logs.
pub(crate) fn finish(update: RunUpdate, attempt: u32, status: AttemptStatus) -> FinishAttempt {
    FinishAttempt {
        update,
        attempt,
        claim: None,
        attempt_status: status,
        attempt_error: None,
        output: None,
        fuel_used: 0,
        compute_ms: 0,
        logs: Vec::new(),
    }
}

/// The checkpoint of attempt 1 of an executing run `id` that waits (EXECUTING → WAITING).
pub(crate) fn suspend(id: &str, now: Millis) -> FinishAttempt {
    let mut update = update(id, RunStatus::Executing, RunStatus::Waiting, now);
    update.checkpointed = true;
    finish(update, 1, AttemptStatus::Executing)
}

/// Makes every transaction that writes a row of `table` matching `when` (SQL over `NEW`) sleep
/// `seconds` (once) when it commits, holding its locks: a test widens the window between a
/// transaction's reads and its commit, so the races the store's locks rule out happen without
/// them.
pub(crate) async fn slow_commits(c: &Client, table: &str, when: &str, seconds: f64) {
    c.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             -- Once per transaction, however many rows it writes.
             IF current_setting('test.slept', true) IS DISTINCT FROM 'yes' THEN
                 PERFORM set_config('test.slept', 'yes', true);
                 PERFORM pg_sleep(TG_ARGV[0]::float8);
             END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER slow_commit_{table} AFTER INSERT OR UPDATE ON {table}
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when})
          EXECUTE FUNCTION test_slow_commit('{seconds}');"
    ))
    .await
    .expect("a slow commit trigger");
}
