//! Numbered schema migrations. Append only: a released migration is never edited, and the index in
//! [`MIGRATIONS`] plus one is the schema version recorded in SQLite's `user_version`.

/// Every migration, oldest first.
pub const MIGRATIONS: &[&str] = &[
    V1_INITIAL,
    V2_TRIGGER_OPTIONS,
    V3_OOM_MACHINE,
    V4_TENANT_KEYS,
    V5_QUEUES,
    V6_CHECKPOINTS,
    V7_SCHEDULES,
    V8_TOKENS,
    V9_CHILD_RUNS,
    V10_WAITER_INDEX,
    V11_ENVIRONMENT_LIMITS,
    V12_ENV_VARS,
    V13_OUTBOUND_HOSTS,
    V14_BATCHES,
    V15_SEALED_KEYS,
    V16_BULK_ACTIONS,
    V17_DEPLOYMENT_COMPONENTS,
    V18_QUEUE_DEPTHS,
];

const V1_INITIAL: &str = r#"
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE environments (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    slug        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (project_id, slug)
);

-- Secret keys are stored as SHA-256 digests; the plaintext is shown once at creation.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    key_hash        BLOB NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

-- Uploaded component bytes, content-addressed: two deployments of the same bytes share a row.
CREATE TABLE components (
    digest      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE deployments (
    id                TEXT PRIMARY KEY,
    environment_id    TEXT NOT NULL REFERENCES environments(id),
    version           TEXT NOT NULL,
    component_digest  TEXT NOT NULL REFERENCES components(digest),
    created_at        INTEGER NOT NULL,
    UNIQUE (environment_id, version)
);

CREATE TABLE tasks (
    deployment_id       TEXT NOT NULL REFERENCES deployments(id),
    position            INTEGER NOT NULL,
    task_id             TEXT NOT NULL,
    description         TEXT,
    queue_name          TEXT,
    queue_limit         INTEGER,
    retry_max_attempts  INTEGER,
    retry_factor        REAL,
    retry_min_ms        INTEGER,
    retry_max_ms        INTEGER,
    retry_randomize     INTEGER,
    retry_oom_machine   TEXT,
    max_duration_ms     INTEGER,
    ttl_ms              INTEGER,
    machine             TEXT,
    PRIMARY KEY (deployment_id, task_id)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    environment_id   TEXT NOT NULL REFERENCES environments(id),
    task_id          TEXT NOT NULL,
    status           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    deployment_id    TEXT REFERENCES deployments(id),
    queue            TEXT NOT NULL,
    machine          TEXT NOT NULL,
    max_attempts     INTEGER NOT NULL,
    retry_factor     REAL NOT NULL,
    retry_min_ms     INTEGER NOT NULL,
    retry_max_ms     INTEGER NOT NULL,
    retry_randomize  INTEGER NOT NULL,
    attempt_count    INTEGER NOT NULL DEFAULT 0,
    queue_ts         INTEGER NOT NULL,
    available_at     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    fuel_used        INTEGER NOT NULL DEFAULT 0,
    compute_ms       INTEGER NOT NULL DEFAULT 0
);

-- The ready queue: only QUEUED rows are in it, ordered by due time then queue order.
CREATE INDEX runs_ready ON runs (available_at, queue_ts) WHERE status = 'QUEUED';
-- Runs claimed or executing, found again after a restart.
CREATE INDEX runs_in_flight ON runs (status) WHERE status IN ('DEQUEUED', 'EXECUTING');
-- Listing newest first (ids are ULIDs, so they sort by creation time).
CREATE INDEX runs_by_environment ON runs (environment_id, id);

CREATE TABLE attempts (
    run_id         TEXT NOT NULL REFERENCES runs(id),
    number         INTEGER NOT NULL,
    status         TEXT NOT NULL,
    deployment_id  TEXT NOT NULL REFERENCES deployments(id),
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    error          TEXT,
    fuel_used      INTEGER NOT NULL DEFAULT 0,
    compute_ms     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE run_logs (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL,
    attributes  TEXT
);
CREATE INDEX run_logs_by_run ON run_logs (run_id, id);
"#;

/// Trigger options: delay, TTL, priority, idempotency keys, tags, metadata, per-run limits, batches.
const V2_TRIGGER_OPTIONS: &str = r#"
ALTER TABLE runs ADD COLUMN priority_ms INTEGER NOT NULL DEFAULT 0;
-- Queue order: queue timestamp minus priority. Retries and re-queues keep it.
ALTER TABLE runs ADD COLUMN score INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET score = queue_ts;
ALTER TABLE runs ADD COLUMN delay_until INTEGER;
ALTER TABLE runs ADD COLUMN ttl_ms INTEGER;
ALTER TABLE runs ADD COLUMN expires_at INTEGER;
ALTER TABLE runs ADD COLUMN expired_at INTEGER;
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN metadata TEXT;
ALTER TABLE runs ADD COLUMN max_duration_ms INTEGER;
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE runs ADD COLUMN lock_to_version TEXT;
ALTER TABLE runs ADD COLUMN batch_id TEXT;

DROP INDEX runs_ready;
-- The ready queue in score order; due time is checked per row (only retry backoff is not due).
CREATE INDEX runs_ready ON runs (score) WHERE status = 'QUEUED';
CREATE INDEX runs_delayed ON runs (available_at) WHERE status = 'DELAYED';
CREATE INDEX runs_expiring ON runs (expires_at) WHERE status IN ('QUEUED', 'PENDING_VERSION') AND expires_at IS NOT NULL;
CREATE INDEX runs_pending_version ON runs (environment_id, task_id) WHERE status = 'PENDING_VERSION';
CREATE INDEX runs_by_batch ON runs (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE run_tags (
    run_id          TEXT NOT NULL REFERENCES runs(id),
    environment_id  TEXT NOT NULL,
    tag             TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE INDEX run_tags_by_tag ON run_tags (environment_id, tag, run_id);

-- One live key per (environment, task); a repeat trigger within `expires_at` returns `run_id`.
CREATE TABLE idempotency_keys (
    environment_id  TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    key             TEXT NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs(id),
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (environment_id, task_id, key)
);

CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    run_count       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
"#;

/// The machine a run retries on after running out of memory.
const V3_OOM_MACHINE: &str = r#"
ALTER TABLE runs ADD COLUMN oom_machine TEXT;
"#;

/// Tenant administration: a display prefix for API keys, and the host's admin keys.
const V4_TENANT_KEYS: &str = r#"
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';

-- Keys for the admin API (creating environments and keys); stored as SHA-256 digests.
CREATE TABLE admin_keys (
    id          TEXT PRIMARY KEY,
    key_hash    BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
"#;

/// Queues with limits and pause, environment limits, and a ready queue split into lanes.
const V5_QUEUES: &str = r#"
-- NULL: the host's default environment limit.
ALTER TABLE environments ADD COLUMN concurrency_limit INTEGER;

-- A task's own queue is `task/<task id>` (kind 'task'); named queues are kind 'custom'.
CREATE TABLE queues (
    id                 TEXT PRIMARY KEY,
    environment_id     TEXT NOT NULL REFERENCES environments(id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    -- From the latest deployed definition; NULL: the environment's limit.
    concurrency_limit  INTEGER,
    -- Set over the API; wins over the definition until reset.
    override_limit     INTEGER,
    overridden_at      INTEGER,
    paused             INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (environment_id, name)
);

-- A QUEUED run in retry backoff is out of the ready index until its time comes.
ALTER TABLE runs ADD COLUMN backoff INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET backoff = 1
 WHERE status = 'QUEUED' AND available_at > CAST(unixepoch('subsec') * 1000 AS INTEGER);

-- The ready queue, one index range per lane (environment, queue, concurrency key) in score order:
-- the scheduler reads a lane's head without passing another lane's runs.
DROP INDEX runs_ready;
CREATE INDEX runs_ready ON runs (environment_id, queue, concurrency_key, score)
 WHERE status = 'QUEUED' AND backoff = 0;
CREATE INDEX runs_backoff ON runs (available_at) WHERE status = 'QUEUED' AND backoff = 1;
"#;

/// Checkpoints: a per-run randomness seed, the journal of a checkpointed attempt, and waitpoints.
const V6_CHECKPOINTS: &str = r#"
-- Seeds the guest's randomness, so a replayed execution sees the same numbers.
ALTER TABLE runs ADD COLUMN seed INTEGER NOT NULL DEFAULT 0;
-- The current attempt has a checkpoint: it continues from its journal.
ALTER TABLE runs ADD COLUMN checkpointed INTEGER NOT NULL DEFAULT 0;

-- What an attempt observed, in segments appended at each checkpoint (see sandbox::journal).
CREATE TABLE journal_segments (
    run_id      TEXT NOT NULL REFERENCES runs(id),
    attempt     INTEGER NOT NULL,
    segment     INTEGER NOT NULL,
    entries     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, attempt, segment)
);

-- Something a run waits for. DATETIME waitpoints complete at `completes_at`.
CREATE TABLE waitpoints (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    run_id          TEXT REFERENCES runs(id),
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    completes_at    INTEGER,
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX waitpoints_due ON waitpoints (completes_at)
 WHERE status = 'PENDING' AND completes_at IS NOT NULL;
CREATE INDEX waitpoints_by_run ON waitpoints (run_id);
"#;

/// Cron schedules: a task's declared schedule, and the schedules that fire runs.
const V7_SCHEDULES: &str = r#"
ALTER TABLE tasks ADD COLUMN schedule_cron TEXT;
ALTER TABLE tasks ADD COLUMN schedule_timezone TEXT;

CREATE TABLE schedules (
    id                 TEXT PRIMARY KEY,
    environment_id     TEXT NOT NULL REFERENCES environments(id),
    -- DECLARATIVE (from the deployed task definition) or IMPERATIVE (created over the API).
    kind               TEXT NOT NULL,
    task_id            TEXT NOT NULL,
    cron               TEXT NOT NULL,
    timezone           TEXT NOT NULL,
    external_id        TEXT,
    deduplication_key  TEXT,
    active             INTEGER NOT NULL DEFAULT 1,
    -- The next fire time; NULL while inactive. Firing and moving it on happen in one transaction.
    next_fire_at       INTEGER,
    last_fire_at       INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
-- Creating with a deduplication key that exists updates that schedule.
CREATE UNIQUE INDEX schedules_by_dedup_key ON schedules (environment_id, deduplication_key)
    WHERE deduplication_key IS NOT NULL;
-- One declarative schedule per task of an environment.
CREATE UNIQUE INDEX schedules_declarative ON schedules (environment_id, task_id)
    WHERE kind = 'DECLARATIVE';
-- The timer pass: active schedules by next fire time.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX schedules_by_environment ON schedules (environment_id, created_at);
"#;

/// Wait tokens: waitpoints completed from outside, with data, a timeout, tags and an idempotency
/// key; and the runs waiting for a waitpoint.
const V8_TOKENS: &str = r#"
-- Tokens (kind 'MANUAL') time out at `completes_at`. Status PENDING, COMPLETED or TIMED_OUT.
ALTER TABLE waitpoints ADD COLUMN idempotency_key TEXT;
ALTER TABLE waitpoints ADD COLUMN idempotency_expires_at INTEGER;
ALTER TABLE waitpoints ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
-- The completion data (JSON text), or the timeout error when `output_is_error`.
ALTER TABLE waitpoints ADD COLUMN output TEXT;
ALTER TABLE waitpoints ADD COLUMN output_is_error INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX waitpoints_by_idempotency_key ON waitpoints (environment_id, idempotency_key)
 WHERE idempotency_key IS NOT NULL;
CREATE INDEX waitpoints_by_environment ON waitpoints (environment_id, kind, id);

-- Host-wide secrets, e.g. the key that signs wait tokens' callback URLs.
CREATE TABLE host_secrets (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);

-- Runs checkpointed until a token completes.
CREATE TABLE waitpoint_waiters (
    waitpoint_id  TEXT NOT NULL REFERENCES waitpoints(id),
    run_id        TEXT NOT NULL REFERENCES runs(id),
    PRIMARY KEY (waitpoint_id, run_id)
);
"#;

/// Child runs: a run's parent, root and depth, and the parents checkpointed until children end.
const V9_CHILD_RUNS: &str = r#"
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN root_run_id TEXT;
ALTER TABLE runs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- A WAITING parent waits until every child it waits for has ended.
CREATE TABLE run_waiters (
    child_run_id   TEXT NOT NULL REFERENCES runs(id),
    parent_run_id  TEXT NOT NULL REFERENCES runs(id),
    PRIMARY KEY (child_run_id, parent_run_id)
);
CREATE INDEX run_waiters_by_parent ON run_waiters (parent_run_id);
"#;

/// What a run waits for is looked up by run.
const V10_WAITER_INDEX: &str = r#"
CREATE INDEX waitpoint_waiters_by_run ON waitpoint_waiters (run_id);
"#;

/// Per-environment limits below the host's (NULL: the host's).
const V11_ENVIRONMENT_LIMITS: &str = r#"
ALTER TABLE environments ADD COLUMN max_component_bytes INTEGER;
ALTER TABLE environments ADD COLUMN max_payload_bytes INTEGER;
"#;

/// Environment variables, sealed with the host's secrets key (see `secrets`), and each run's copy
/// of them taken when its first attempt starts (so replays and retries see the same values).
const V12_ENV_VARS: &str = r#"
CREATE TABLE env_vars (
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    name            TEXT NOT NULL,
    nonce           BLOB NOT NULL,
    value           BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (environment_id, name)
);

CREATE TABLE run_env_vars (
    run_id          TEXT NOT NULL REFERENCES runs(id),
    environment_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    nonce           BLOB NOT NULL,
    value           BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"#;

/// The hosts an environment's tasks may reach over HTTP (a JSON array of rules; NULL: none).
const V13_OUTBOUND_HOSTS: &str = r#"
ALTER TABLE environments ADD COLUMN allowed_outbound_hosts TEXT;
"#;

/// Idempotency keys as the user gave them (the SDK sends a hash), and two-phase batches: a batch
/// is made with the number of runs it will have, its items arrive later (each index once), and it
/// is sealed once every index has arrived.
const V14_BATCHES: &str = r#"
-- The key and scope behind a hashed `idempotency_key` (Trigger.dev's `idempotencyKeyOptions`).
ALTER TABLE runs ADD COLUMN idempotency_key_user TEXT;
ALTER TABLE runs ADD COLUMN idempotency_key_scope TEXT;

-- Batches made in one request (before this version) were complete when made: sealed.
ALTER TABLE batches ADD COLUMN sealed INTEGER NOT NULL DEFAULT 1;
ALTER TABLE batches ADD COLUMN sealed_at INTEGER;
ALTER TABLE batches ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET updated_at = created_at, sealed_at = created_at;
ALTER TABLE batches ADD COLUMN idempotency_key TEXT;
ALTER TABLE batches ADD COLUMN idempotency_key_user TEXT;
ALTER TABLE batches ADD COLUMN idempotency_key_scope TEXT;
ALTER TABLE batches ADD COLUMN idempotency_expires_at INTEGER;
CREATE UNIQUE INDEX batches_by_idempotency_key ON batches (environment_id, idempotency_key)
 WHERE idempotency_key IS NOT NULL;

-- One row per index of a two-phase batch: the run it became, or why it did not.
CREATE TABLE batch_items (
    batch_id    TEXT NOT NULL REFERENCES batches(id),
    idx         INTEGER NOT NULL,
    task_id     TEXT NOT NULL,
    run_id      TEXT REFERENCES runs(id),
    error       TEXT,
    error_code  TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (batch_id, idx)
);
"#;

/// Secret keys kept sealed (so public access tokens they sign can be checked), the one-time
/// trigger tokens already used, and environment variables read back redacted.
const V15_SEALED_KEYS: &str = r#"
-- The key sealed with the host's secrets key (see `secrets`), bound to its digest; NULL for a
-- key made before this version until it is used where it signs tokens.
ALTER TABLE api_keys ADD COLUMN sealed_nonce BLOB;
ALTER TABLE api_keys ADD COLUMN sealed_key BLOB;

-- A one-time trigger token (`otu`) by the SHA-256 of the whole token, and what it made.
CREATE TABLE used_tokens (
    digest          BLOB PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    used_for        TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

ALTER TABLE env_vars ADD COLUMN is_secret INTEGER NOT NULL DEFAULT 0;
"#;

/// Bulk actions: a cancel or replay of a set of runs, fixed when made, carried out in batches.
const V16_BULK_ACTIONS: &str = r#"
CREATE TABLE bulk_actions (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    name            TEXT,
    -- CANCEL or REPLAY.
    kind            TEXT NOT NULL,
    -- PENDING until every run is done, then COMPLETED; ABORTED if stopped before.
    status          TEXT NOT NULL,
    total           INTEGER NOT NULL,
    -- Runs done so far, in position order: the next batch starts at this position.
    processed       INTEGER NOT NULL DEFAULT 0,
    success         INTEGER NOT NULL DEFAULT 0,
    failure         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX bulk_actions_by_environment ON bulk_actions (environment_id, id);
-- Unfinished actions are picked up again when the host starts.
CREATE INDEX bulk_actions_pending ON bulk_actions (id) WHERE status = 'PENDING';

-- The runs of an action, in the order they are done.
CREATE TABLE bulk_action_runs (
    bulk_id   TEXT NOT NULL REFERENCES bulk_actions(id),
    position  INTEGER NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (bulk_id, position)
);
"#;

/// A version of several components: a deployment lists its components in order, and each task
/// names the component that defines it (which executes its runs). A version deployed before this
/// has its one component, and every task of it points there. `deployments.component_digest`
/// stays: the first component's.
const V17_DEPLOYMENT_COMPONENTS: &str = r#"
CREATE TABLE deployment_components (
    deployment_id     TEXT NOT NULL REFERENCES deployments(id),
    position          INTEGER NOT NULL,
    component_digest  TEXT NOT NULL REFERENCES components(digest),
    -- The file name the upload gave the component, if it gave one.
    name              TEXT,
    PRIMARY KEY (deployment_id, position),
    UNIQUE (deployment_id, component_digest)
);
-- Whose component a digest is, when its bytes are read for an environment.
CREATE INDEX deployment_components_by_digest ON deployment_components (component_digest);
INSERT INTO deployment_components (deployment_id, position, component_digest)
 SELECT id, 0, component_digest FROM deployments;

ALTER TABLE tasks ADD COLUMN component_digest TEXT REFERENCES components(digest);
UPDATE tasks SET component_digest =
 (SELECT d.component_digest FROM deployments d WHERE d.id = tasks.deployment_id);
"#;

/// Each queue's count of QUEUED runs, kept by triggers in the transaction that changes a run, so
/// a queue's depth is one row read however many runs it holds (counting them read a million
/// index entries at a million queued). Every queue has its row from when it is made (a run's
/// queue is made before the run), so a run's change is one plain update.
const V18_QUEUE_DEPTHS: &str = r#"
CREATE TABLE queue_depths (
    environment_id  TEXT NOT NULL,
    queue           TEXT NOT NULL,
    queued          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment_id, queue)
) WITHOUT ROWID;

INSERT INTO queue_depths (environment_id, queue, queued)
 SELECT environment_id, queue, count(*) FROM runs WHERE status = 'QUEUED'
 GROUP BY environment_id, queue;
INSERT OR IGNORE INTO queue_depths (environment_id, queue) SELECT environment_id, name FROM queues;

CREATE TRIGGER queue_depth_made AFTER INSERT ON queues
BEGIN
    INSERT OR IGNORE INTO queue_depths (environment_id, queue) VALUES (new.environment_id, new.name);
END;

CREATE TRIGGER queue_depth_insert AFTER INSERT ON runs WHEN new.status = 'QUEUED'
BEGIN
    UPDATE queue_depths SET queued = queued + 1
     WHERE environment_id = new.environment_id AND queue = new.queue;
END;

-- A run that leaves QUEUED, enters it, or moves while QUEUED: out of the old queue's count and
-- into the new one's.
CREATE TRIGGER queue_depth_update AFTER UPDATE OF status, queue, environment_id ON runs
 WHEN (old.status = 'QUEUED' OR new.status = 'QUEUED')
  AND (old.status IS NOT new.status OR old.queue IS NOT new.queue
       OR old.environment_id IS NOT new.environment_id)
BEGIN
    UPDATE queue_depths SET queued = queued - 1
     WHERE old.status = 'QUEUED' AND environment_id = old.environment_id AND queue = old.queue;
    UPDATE queue_depths SET queued = queued + 1
     WHERE new.status = 'QUEUED' AND environment_id = new.environment_id AND queue = new.queue;
END;

CREATE TRIGGER queue_depth_delete AFTER DELETE ON runs WHEN old.status = 'QUEUED'
BEGIN
    UPDATE queue_depths SET queued = queued - 1
     WHERE environment_id = old.environment_id AND queue = old.queue;
END;
"#;

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::super::fixtures::{insert_run, make_queue, tenant};
    use super::MIGRATIONS;

    /// Every queue's kept depth against a count of its QUEUED runs.
    fn assert_depths_match(c: &Connection) {
        let counted: Vec<(String, i64)> = c
            .prepare(
                "SELECT queue, count(*) FROM runs WHERE status = 'QUEUED' GROUP BY queue \
                 ORDER BY queue",
            )
            .expect("a count")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("its rows")
            .collect::<Result<_, _>>()
            .expect("its rows");
        let kept: Vec<(String, i64)> = c
            .prepare("SELECT queue, queued FROM queue_depths WHERE queued > 0 ORDER BY queue")
            .expect("the depths")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("its rows")
            .collect::<Result<_, _>>()
            .expect("its rows");
        assert_eq!(kept, counted);
        let negative: i64 = c
            .query_row(
                "SELECT count(*) FROM queue_depths WHERE queued < 0",
                [],
                |r| r.get(0),
            )
            .expect("a count");
        assert_eq!(negative, 0);
    }

    /// V18 counts the runs queued before it, and its triggers then keep each queue's depth
    /// through every way a run enters or leaves QUEUED.
    #[test]
    fn queue_depths_follow_every_change_of_a_runs_status() {
        let c = Connection::open_in_memory().expect("a database");
        let v18 = MIGRATIONS
            .iter()
            .position(|m| *m == super::V18_QUEUE_DEPTHS)
            .expect("V18 is listed");
        for sql in &MIGRATIONS[..v18] {
            c.execute_batch(sql).expect("an earlier migration");
        }
        tenant(&c);
        for (id, queue, status) in [
            ("r1", "a", "QUEUED"),
            ("r2", "a", "QUEUED"),
            ("r3", "b", "QUEUED"),
            ("r4", "b", "COMPLETED"),
        ] {
            insert_run(&c, id, queue, status);
        }
        c.execute_batch(super::V18_QUEUE_DEPTHS).expect("V18");
        assert_depths_match(&c);

        let steps = [
            "INSERT",                                                            // new queued runs
            "UPDATE runs SET status = 'EXECUTING' WHERE id = 'r1'",              // claimed
            "UPDATE runs SET status = 'QUEUED' WHERE id = 'r1'",                 // a retry
            "UPDATE runs SET status = 'QUEUED' WHERE id = 'r1'",                 // no change
            "UPDATE runs SET status = 'QUEUED', updated_at = 1 WHERE id = 'r5'", // delayed, due
            "UPDATE runs SET queue = 'c' WHERE id = 'r2'",                       // moved
            "UPDATE runs SET status = 'EXPIRED' WHERE queue = 'b'",              // many at once
            "UPDATE runs SET updated_at = 2",                                    // no status change
            "DELETE FROM runs WHERE id = 'r3'",
            "UPDATE runs SET status = 'QUEUED' WHERE status = 'EXPIRED'", // back, many at once
        ];
        for step in steps {
            if step.contains("queue = 'c'") {
                make_queue(&c, "c");
            }
            if step == "INSERT" {
                insert_run(&c, "r5", "b", "DELAYED");
                insert_run(&c, "r6", "a", "QUEUED");
                insert_run(&c, "r7", "b", "QUEUED");
            } else {
                c.execute(step, []).expect(step);
            }
            assert_depths_match(&c);
        }
    }

    /// A database with a single-component version made before V17 gets that component as the
    /// version's only one, with every task pointing at it.
    #[test]
    fn v17_gives_an_existing_version_its_one_component() {
        let c = Connection::open_in_memory().expect("a database");
        c.pragma_update(None, "foreign_keys", "ON").expect("pragma");
        let v17 = MIGRATIONS
            .iter()
            .position(|m| *m == super::V17_DEPLOYMENT_COMPONENTS)
            .expect("V17 is listed");
        for sql in &MIGRATIONS[..v17] {
            c.execute_batch(sql).expect("an earlier migration");
        }
        c.execute_batch(
            "INSERT INTO projects (id, slug, created_at) VALUES ('p', 'default', 0);
             INSERT INTO environments (id, project_id, slug, created_at) VALUES ('e', 'p', 'dev', 0);
             INSERT INTO components (digest, bytes, created_at) VALUES ('abc', x'00', 0);
             INSERT INTO deployments (id, environment_id, version, component_digest, created_at)
              VALUES ('d', 'e', '20260101.1', 'abc', 0);
             INSERT INTO tasks (deployment_id, position, task_id) VALUES ('d', 0, 'one'), ('d', 1, 'two');",
        )
        .expect("a version of one component");
        for sql in &MIGRATIONS[v17..] {
            c.execute_batch(sql).expect("V17 and later");
        }
        let components: Vec<(i64, String)> = c
            .prepare("SELECT position, component_digest FROM deployment_components WHERE deployment_id = 'd'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(components, vec![(0, "abc".to_owned())]);
        let unlinked: i64 = c
            .query_row(
                "SELECT count(*) FROM tasks WHERE deployment_id = ?1 AND component_digest IS NOT 'abc'",
                params!["d"],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unlinked, 0, "every task points at the one component");
        let tasks: i64 = c
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tasks, 2);
    }
}
