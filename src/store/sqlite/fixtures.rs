//! Rows for the store's unit tests, written straight into a migrated database: one tenant
//! (project `p`, environment `e`) with queues, and runs of it in any status. Test-only; a leaf.

use rusqlite::{Connection, params};

/// Inserts a run of environment `e` in `queue` with `status`.
pub(super) fn insert_run(c: &Connection, id: &str, queue: &str, status: &str) {
    c.execute(
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, queue_ts, \
           available_at, created_at, updated_at) \
         VALUES (?1, 'e', 't', ?3, 'null', ?2, 'small-1x', 3, 2.0, 1000, 10000, 1, 0, 0, 0, 0)",
        params![id, queue, status],
    )
    .expect("a run");
}

/// A tenant with queues `a` and `b`. Another queue is made with [`make_queue`] before any run of
/// it, as the store makes a run's queue before the run.
pub(super) fn tenant(c: &Connection) {
    c.execute_batch(
        "INSERT INTO projects (id, slug, created_at) VALUES ('p', 'default', 0);
         INSERT INTO environments (id, project_id, slug, created_at) VALUES ('e', 'p', 'dev', 0);",
    )
    .expect("a tenant");
    for name in ["a", "b"] {
        make_queue(c, name);
    }
}

/// A custom queue `name` of environment `e`.
pub(super) fn make_queue(c: &Connection, name: &str) {
    c.execute(
        "INSERT INTO queues (id, environment_id, name, kind, created_at, updated_at) \
         VALUES (?1, 'e', ?1, 'custom', 0, 0)",
        [name],
    )
    .expect("a queue");
}
