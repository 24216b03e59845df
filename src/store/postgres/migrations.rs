//! Numbered schema migrations of the PostgreSQL backend. Append only: a released migration is
//! never edited, and the index in [`MIGRATIONS`] plus one is the schema version recorded in
//! `kiln_schema`. The list starts at the schema the SQLite backend had reached (its V18) in one
//! step; from there each change to the schema is a migration in both lists, or in this one alone
//! when only a shared database needs it (V2: the hosts' leases).
//!
//! The tables and columns are SQLite's, spelled for PostgreSQL: every integer is a `BIGINT`
//! (flags too, `0`/`1`, so the status guards' SQL is the same text on both backends), `BLOB` is
//! `BYTEA`, `REAL` is `DOUBLE PRECISION`, JSON stays `TEXT` as the model writes it.

/// Every migration, oldest first.
pub const MIGRATIONS: &[&str] = &[V1_INITIAL, V2_HOSTS];

const V1_INITIAL: &str = r#"
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE environments (
    id                      TEXT PRIMARY KEY,
    project_id              TEXT NOT NULL REFERENCES projects(id),
    slug                    TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    -- NULL: the host's default environment limit.
    concurrency_limit       BIGINT,
    max_component_bytes     BIGINT,
    max_payload_bytes       BIGINT,
    -- The hosts an environment's tasks may reach over HTTP (a JSON array of rules; NULL: none).
    allowed_outbound_hosts  TEXT,
    UNIQUE (project_id, slug)
);

-- Secret keys are stored as SHA-256 digests; the plaintext is shown once at creation. The key is
-- kept sealed with the host's secrets key too, bound to its digest (it signs public tokens).
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    key_hash        BYTEA NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    prefix          TEXT NOT NULL DEFAULT '',
    sealed_nonce    BYTEA,
    sealed_key      BYTEA
);

-- Keys for the admin API (creating environments and keys); stored as SHA-256 digests.
CREATE TABLE admin_keys (
    id          TEXT PRIMARY KEY,
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Uploaded component bytes, content-addressed: two deployments of the same bytes share a row.
CREATE TABLE components (
    digest      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE deployments (
    id                TEXT PRIMARY KEY,
    environment_id    TEXT NOT NULL REFERENCES environments(id),
    version           TEXT NOT NULL,
    -- The first component's.
    component_digest  TEXT NOT NULL REFERENCES components(digest),
    created_at        BIGINT NOT NULL,
    UNIQUE (environment_id, version)
);

-- A deployment's components in order; each task names the component that defines it.
CREATE TABLE deployment_components (
    deployment_id     TEXT NOT NULL REFERENCES deployments(id),
    position          BIGINT NOT NULL,
    component_digest  TEXT NOT NULL REFERENCES components(digest),
    -- The file name the upload gave the component, if it gave one.
    name              TEXT,
    PRIMARY KEY (deployment_id, position),
    UNIQUE (deployment_id, component_digest)
);
CREATE INDEX deployment_components_by_digest ON deployment_components (component_digest);

CREATE TABLE tasks (
    deployment_id       TEXT NOT NULL REFERENCES deployments(id),
    position            BIGINT NOT NULL,
    task_id             TEXT NOT NULL,
    description         TEXT,
    queue_name          TEXT,
    queue_limit         BIGINT,
    retry_max_attempts  BIGINT,
    retry_factor        DOUBLE PRECISION,
    retry_min_ms        BIGINT,
    retry_max_ms        BIGINT,
    retry_randomize     BIGINT,
    retry_oom_machine   TEXT,
    max_duration_ms     BIGINT,
    ttl_ms              BIGINT,
    machine             TEXT,
    schedule_cron       TEXT,
    schedule_timezone   TEXT,
    component_digest    TEXT REFERENCES components(digest),
    PRIMARY KEY (deployment_id, task_id)
);

-- A task's own queue is `task/<task id>` (kind 'task'); named queues are kind 'custom'.
CREATE TABLE queues (
    id                 TEXT PRIMARY KEY,
    environment_id     TEXT NOT NULL REFERENCES environments(id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    -- From the latest deployed definition; NULL: the environment's limit.
    concurrency_limit  BIGINT,
    -- Set over the API; wins over the definition until reset.
    override_limit     BIGINT,
    overridden_at      BIGINT,
    paused             BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (environment_id, name)
);

CREATE TABLE runs (
    id                     TEXT PRIMARY KEY,
    environment_id         TEXT NOT NULL REFERENCES environments(id),
    task_id                TEXT NOT NULL,
    status                 TEXT NOT NULL,
    payload                TEXT NOT NULL,
    output                 TEXT,
    error                  TEXT,
    deployment_id          TEXT REFERENCES deployments(id),
    queue                  TEXT NOT NULL,
    machine                TEXT NOT NULL,
    max_attempts           BIGINT NOT NULL,
    retry_factor           DOUBLE PRECISION NOT NULL,
    retry_min_ms           BIGINT NOT NULL,
    retry_max_ms           BIGINT NOT NULL,
    retry_randomize        BIGINT NOT NULL,
    attempt_count          BIGINT NOT NULL DEFAULT 0,
    queue_ts               BIGINT NOT NULL,
    available_at           BIGINT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    started_at             BIGINT,
    finished_at            BIGINT,
    fuel_used              BIGINT NOT NULL DEFAULT 0,
    compute_ms             BIGINT NOT NULL DEFAULT 0,
    priority_ms            BIGINT NOT NULL DEFAULT 0,
    -- Queue order: queue timestamp minus priority. Retries and re-queues keep it.
    score                  BIGINT NOT NULL DEFAULT 0,
    delay_until            BIGINT,
    ttl_ms                 BIGINT,
    expires_at             BIGINT,
    expired_at             BIGINT,
    idempotency_key        TEXT,
    tags                   TEXT NOT NULL DEFAULT '[]',
    metadata               TEXT,
    max_duration_ms        BIGINT,
    concurrency_key        TEXT,
    lock_to_version        TEXT,
    batch_id               TEXT,
    -- The machine a run retries on after running out of memory.
    oom_machine            TEXT,
    -- A QUEUED run in retry backoff is out of the ready index until its time comes.
    backoff                BIGINT NOT NULL DEFAULT 0,
    -- Seeds the guest's randomness, so a replayed execution sees the same numbers.
    seed                   BIGINT NOT NULL DEFAULT 0,
    -- The current attempt has a checkpoint: it continues from its journal.
    checkpointed           BIGINT NOT NULL DEFAULT 0,
    parent_run_id          TEXT,
    root_run_id            TEXT,
    depth                  BIGINT NOT NULL DEFAULT 0,
    -- The key and scope behind a hashed `idempotency_key` (Trigger.dev's `idempotencyKeyOptions`).
    idempotency_key_user   TEXT,
    idempotency_key_scope  TEXT
);

-- The ready queue, one index range per lane (environment, queue, concurrency key) in score order:
-- a lane's head is an index seek that never passes another lane's runs.
CREATE INDEX runs_ready ON runs (environment_id, queue, concurrency_key, score)
 WHERE status = 'QUEUED' AND backoff = 0;
CREATE INDEX runs_backoff ON runs (available_at) WHERE status = 'QUEUED' AND backoff = 1;
-- Runs claimed or executing, found again after a restart.
CREATE INDEX runs_in_flight ON runs (status) WHERE status IN ('DEQUEUED', 'EXECUTING');
-- Listing newest first (ids are ULIDs, so they sort by creation time).
CREATE INDEX runs_by_environment ON runs (environment_id, id);
CREATE INDEX runs_delayed ON runs (available_at) WHERE status = 'DELAYED';
CREATE INDEX runs_expiring ON runs (expires_at)
 WHERE status IN ('QUEUED', 'PENDING_VERSION') AND expires_at IS NOT NULL;
CREATE INDEX runs_pending_version ON runs (environment_id, task_id) WHERE status = 'PENDING_VERSION';
CREATE INDEX runs_by_batch ON runs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE attempts (
    run_id         TEXT NOT NULL REFERENCES runs(id),
    number         BIGINT NOT NULL,
    status         TEXT NOT NULL,
    deployment_id  TEXT NOT NULL REFERENCES deployments(id),
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    error          TEXT,
    fuel_used      BIGINT NOT NULL DEFAULT 0,
    compute_ms     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE run_logs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL,
    attributes  TEXT
);
CREATE INDEX run_logs_by_run ON run_logs (run_id, id);

CREATE TABLE run_tags (
    run_id          TEXT NOT NULL REFERENCES runs(id),
    environment_id  TEXT NOT NULL,
    tag             TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE INDEX run_tags_by_tag ON run_tags (environment_id, tag, run_id);

-- One live key per (environment, task); a repeat trigger within `expires_at` returns `run_id`.
-- A trigger claims its key before it inserts the key's run (so a second trigger with the key
-- waits for the first and finds its run): the reference to the run is checked at commit.
CREATE TABLE idempotency_keys (
    environment_id  TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    key             TEXT NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs(id) DEFERRABLE INITIALLY DEFERRED,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (environment_id, task_id, key)
);

-- Batches made in one request are complete when made (sealed); two-phase batches are made with
-- the number of runs they will have and sealed once every index has arrived.
CREATE TABLE batches (
    id                      TEXT PRIMARY KEY,
    environment_id          TEXT NOT NULL REFERENCES environments(id),
    run_count               BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    sealed                  BIGINT NOT NULL DEFAULT 1,
    sealed_at               BIGINT,
    updated_at              BIGINT NOT NULL DEFAULT 0,
    idempotency_key         TEXT,
    idempotency_key_user    TEXT,
    idempotency_key_scope   TEXT,
    idempotency_expires_at  BIGINT
);
CREATE UNIQUE INDEX batches_by_idempotency_key ON batches (environment_id, idempotency_key)
 WHERE idempotency_key IS NOT NULL;

-- One row per index of a two-phase batch: the run it became, or why it did not.
CREATE TABLE batch_items (
    batch_id    TEXT NOT NULL REFERENCES batches(id),
    idx         BIGINT NOT NULL,
    task_id     TEXT NOT NULL,
    run_id      TEXT REFERENCES runs(id),
    error       TEXT,
    error_code  TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (batch_id, idx)
);

-- What an attempt observed, in segments appended at each checkpoint (see sandbox::journal).
CREATE TABLE journal_segments (
    run_id      TEXT NOT NULL REFERENCES runs(id),
    attempt     BIGINT NOT NULL,
    segment     BIGINT NOT NULL,
    entries     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, attempt, segment)
);

-- Something a run waits for. DATETIME waitpoints complete at `completes_at`; tokens (kind
-- 'MANUAL') time out then. Status PENDING, COMPLETED or TIMED_OUT.
CREATE TABLE waitpoints (
    id                      TEXT PRIMARY KEY,
    environment_id          TEXT NOT NULL REFERENCES environments(id),
    run_id                  TEXT REFERENCES runs(id),
    kind                    TEXT NOT NULL,
    status                  TEXT NOT NULL,
    completes_at            BIGINT,
    created_at              BIGINT NOT NULL,
    completed_at            BIGINT,
    idempotency_key         TEXT,
    idempotency_expires_at  BIGINT,
    tags                    TEXT NOT NULL DEFAULT '[]',
    -- The completion data (JSON text), or the timeout error when `output_is_error`.
    output                  TEXT,
    output_is_error         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX waitpoints_due ON waitpoints (completes_at)
 WHERE status = 'PENDING' AND completes_at IS NOT NULL;
CREATE INDEX waitpoints_by_run ON waitpoints (run_id);
CREATE UNIQUE INDEX waitpoints_by_idempotency_key ON waitpoints (environment_id, idempotency_key)
 WHERE idempotency_key IS NOT NULL;
CREATE INDEX waitpoints_by_environment ON waitpoints (environment_id, kind, id);

-- Runs checkpointed until a token completes.
CREATE TABLE waitpoint_waiters (
    waitpoint_id  TEXT NOT NULL REFERENCES waitpoints(id),
    run_id        TEXT NOT NULL REFERENCES runs(id),
    PRIMARY KEY (waitpoint_id, run_id)
);
CREATE INDEX waitpoint_waiters_by_run ON waitpoint_waiters (run_id);

-- A WAITING parent waits until every child it waits for has ended.
CREATE TABLE run_waiters (
    child_run_id   TEXT NOT NULL REFERENCES runs(id),
    parent_run_id  TEXT NOT NULL REFERENCES runs(id),
    PRIMARY KEY (child_run_id, parent_run_id)
);
CREATE INDEX run_waiters_by_parent ON run_waiters (parent_run_id);

-- Host-wide secrets, e.g. the key that signs wait tokens' callback URLs.
CREATE TABLE host_secrets (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);

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
    active             BIGINT NOT NULL DEFAULT 1,
    -- The next fire time; NULL while inactive. Firing and moving it on happen in one transaction.
    next_fire_at       BIGINT,
    last_fire_at       BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE UNIQUE INDEX schedules_by_dedup_key ON schedules (environment_id, deduplication_key)
 WHERE deduplication_key IS NOT NULL;
CREATE UNIQUE INDEX schedules_declarative ON schedules (environment_id, task_id)
 WHERE kind = 'DECLARATIVE';
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX schedules_by_environment ON schedules (environment_id, created_at);

-- Environment variables, sealed with the host's secrets key (see `secrets`), and each run's copy
-- of them taken when its first attempt starts (so replays and retries see the same values).
CREATE TABLE env_vars (
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    name            TEXT NOT NULL,
    nonce           BYTEA NOT NULL,
    value           BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    is_secret       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (environment_id, name)
);

CREATE TABLE run_env_vars (
    run_id          TEXT NOT NULL REFERENCES runs(id),
    environment_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    nonce           BYTEA NOT NULL,
    value           BYTEA NOT NULL,
    PRIMARY KEY (run_id, name)
);

-- A one-time trigger token (`otu`) by the SHA-256 of the whole token, and what it made.
CREATE TABLE used_tokens (
    digest          BYTEA PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    used_for        TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- Bulk actions: a cancel or replay of a set of runs, fixed when made, carried out in batches.
CREATE TABLE bulk_actions (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id),
    name            TEXT,
    -- CANCEL or REPLAY.
    kind            TEXT NOT NULL,
    -- PENDING until every run is done, then COMPLETED; ABORTED if stopped before.
    status          TEXT NOT NULL,
    total           BIGINT NOT NULL,
    -- Runs done so far, in position order: the next batch starts at this position.
    processed       BIGINT NOT NULL DEFAULT 0,
    success         BIGINT NOT NULL DEFAULT 0,
    failure         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    completed_at    BIGINT
);
CREATE INDEX bulk_actions_by_environment ON bulk_actions (environment_id, id);
CREATE INDEX bulk_actions_pending ON bulk_actions (id) WHERE status = 'PENDING';

CREATE TABLE bulk_action_runs (
    bulk_id   TEXT NOT NULL REFERENCES bulk_actions(id),
    position  BIGINT NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (bulk_id, position)
);

-- Each queue's count of QUEUED runs, kept by triggers in the transaction that changes a run, so
-- a queue's depth is one row read however many runs it holds.
CREATE TABLE queue_depths (
    environment_id  TEXT NOT NULL,
    queue           TEXT NOT NULL,
    queued          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (environment_id, queue)
);

CREATE FUNCTION kiln_queue_depth_made() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_depths (environment_id, queue) VALUES (NEW.environment_id, NEW.name)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER queue_depth_made AFTER INSERT ON queues
 FOR EACH ROW EXECUTE FUNCTION kiln_queue_depth_made();

-- A run that enters QUEUED, leaves it, or moves while QUEUED: out of the old queue's count and
-- into the new one's.
CREATE FUNCTION kiln_queue_depth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'QUEUED' THEN
        UPDATE queue_depths SET queued = queued - 1
         WHERE environment_id = OLD.environment_id AND queue = OLD.queue;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'QUEUED' THEN
        UPDATE queue_depths SET queued = queued + 1
         WHERE environment_id = NEW.environment_id AND queue = NEW.queue;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER queue_depth_insert AFTER INSERT ON runs
 FOR EACH ROW WHEN (NEW.status = 'QUEUED') EXECUTE FUNCTION kiln_queue_depth();
CREATE TRIGGER queue_depth_update AFTER UPDATE OF status, queue, environment_id ON runs
 FOR EACH ROW WHEN ((OLD.status = 'QUEUED' OR NEW.status = 'QUEUED')
  AND (OLD.status IS DISTINCT FROM NEW.status OR OLD.queue IS DISTINCT FROM NEW.queue
       OR OLD.environment_id IS DISTINCT FROM NEW.environment_id))
 EXECUTE FUNCTION kiln_queue_depth();
CREATE TRIGGER queue_depth_delete AFTER DELETE ON runs
 FOR EACH ROW WHEN (OLD.status = 'QUEUED') EXECUTE FUNCTION kiln_queue_depth();

-- Realtime and wake-ups: every statement that inserts or updates runs tells each host which
-- (`kiln_runs`, the ids, for watchers) and which lanes now hold ready runs (`kiln_lanes`,
-- `environment TAB queue TAB` and `=key` for a concurrency key, so the hosts' schedulers claim
-- them: a run queued by another host, or one a claim skipped because another write held it).
-- Both are hints, delivered at commit and never for a rolled-back change. Notification payloads
-- are limited to 8,000 bytes, so the ids go in chunks, and a lane too long to name is sent as
-- `environment TAB *` (its environment's lanes are read again).
CREATE FUNCTION kiln_notify_runs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    chunk TEXT;
    lane TEXT;
BEGIN
    FOR chunk IN
        SELECT string_agg(id, ',') FROM (
            SELECT id, (row_number() OVER ()) / 200 AS part FROM changed_runs
        ) numbered GROUP BY part
    LOOP
        PERFORM pg_notify('kiln_runs', chunk);
    END LOOP;
    FOR lane IN
        SELECT DISTINCT CASE
            WHEN octet_length(environment_id) + octet_length(queue)
                 + coalesce(octet_length(concurrency_key), 0) > 7000
            THEN environment_id || chr(9) || '*'
            ELSE environment_id || chr(9) || queue || chr(9) || coalesce('=' || concurrency_key, '')
        END
        FROM changed_runs WHERE status = 'QUEUED' AND backoff = 0
    LOOP
        PERFORM pg_notify('kiln_lanes', lane);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_notify_insert AFTER INSERT ON runs REFERENCING NEW TABLE AS changed_runs
 FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_runs();
CREATE TRIGGER runs_notify_update AFTER UPDATE ON runs REFERENCING NEW TABLE AS changed_runs
 FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_runs();
"#;

/// Several hosts on one database: each start of a host holds a lease it renews (`hosts`, on the
/// database's clock), a started run names the host executing it (`runs.host_id`) and the claim
/// that started its attempt (`runs.claim_id`), and runs that
/// hold a slot have an index of their own, so a claim counts them per lane and environment
/// without reading the queued ones. The update trigger also tells the hosts which environments
/// got a slot back (`kiln_slots`) and which runs were canceled (`kiln_cancel`).
const V2_HOSTS: &str = r#"
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX hosts_by_name ON hosts (name);
ALTER TABLE runs ADD COLUMN host_id TEXT;
-- The claim that started the run's current attempt (a new one at every claim, none once a host
-- took the run over): what that attempt records must carry it.
ALTER TABLE runs ADD COLUMN claim_id TEXT;
CREATE INDEX runs_holding ON runs (environment_id, queue, concurrency_key)
 WHERE status IN ('DEQUEUED', 'EXECUTING');

CREATE FUNCTION kiln_notify_runs_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    chunk TEXT;
    lane TEXT;
    environment TEXT;
BEGIN
    -- V1's notifications (the changed ids, the lanes with ready runs), as `kiln_notify_runs`
    -- sends them: a trigger's transition tables are visible to its own function only.
    FOR chunk IN
        SELECT string_agg(id, ',') FROM (
            SELECT id, (row_number() OVER ()) / 200 AS part FROM changed_runs
        ) numbered GROUP BY part
    LOOP
        PERFORM pg_notify('kiln_runs', chunk);
    END LOOP;
    FOR lane IN
        SELECT DISTINCT CASE
            WHEN octet_length(environment_id) + octet_length(queue)
                 + coalesce(octet_length(concurrency_key), 0) > 7000
            THEN environment_id || chr(9) || '*'
            ELSE environment_id || chr(9) || queue || chr(9) || coalesce('=' || concurrency_key, '')
        END
        FROM changed_runs WHERE status = 'QUEUED' AND backoff = 0
    LOOP
        PERFORM pg_notify('kiln_lanes', lane);
    END LOOP;
    FOR environment IN
        SELECT DISTINCT o.environment_id FROM old_runs o JOIN changed_runs n ON n.id = o.id
         WHERE o.status IN ('DEQUEUED', 'EXECUTING') AND n.status NOT IN ('DEQUEUED', 'EXECUTING')
    LOOP
        PERFORM pg_notify('kiln_slots', environment);
    END LOOP;
    FOR chunk IN
        SELECT string_agg(id, ',') FROM (
            SELECT n.id, (row_number() OVER ()) / 200 AS part
              FROM old_runs o JOIN changed_runs n ON n.id = o.id
             WHERE o.status IN ('DEQUEUED', 'EXECUTING') AND n.status = 'CANCELED'
        ) numbered GROUP BY part
    LOOP
        PERFORM pg_notify('kiln_cancel', chunk);
    END LOOP;
    RETURN NULL;
END $$;
DROP TRIGGER runs_notify_update ON runs;
CREATE TRIGGER runs_notify_update AFTER UPDATE ON runs
 REFERENCING OLD TABLE AS old_runs NEW TABLE AS changed_runs
 FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_runs_update();
"#;
