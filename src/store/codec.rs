//! Leaf: how stored values are spelled, whatever the backend — durations in milliseconds, a run's
//! error as JSON, digests as hex, an allow-list as a JSON array — and the `WHERE` guards of
//! set-based status writes, taken from the state machine's table of edges (`model::lifecycle`),
//! so a write can only move runs along an edge that exists. Every statement of either backend
//! that writes a run's status is built from [`status_guard`].

use serde_json::json;

use crate::model::{
    Condition, DeployedComponent, Deployment, Millis, RunError, RunStatus, Step, TaskDefinition,
    guard,
};
use crate::store::{StoreError, WaitKind, WaitRecord};

/// The columns a run is read from (`rows::run_from_row` of each backend), from [`RUN_FROM`].
pub(crate) const RUN_COLUMNS: &str = "r.id, r.environment_id, r.task_id, r.status, r.payload, r.output, r.error, \
     r.deployment_id, d.version, r.queue, r.machine, r.max_attempts, r.retry_factor, r.retry_min_ms, \
     r.retry_max_ms, r.retry_randomize, r.attempt_count, r.queue_ts, r.available_at, r.created_at, \
     r.updated_at, r.started_at, r.finished_at, r.fuel_used, r.compute_ms, e.slug, r.priority_ms, \
     r.delay_until, r.ttl_ms, r.expires_at, r.expired_at, r.idempotency_key, r.tags, r.metadata, \
     r.max_duration_ms, r.concurrency_key, r.lock_to_version, r.batch_id, r.oom_machine, r.seed, \
     r.checkpointed, r.parent_run_id, r.root_run_id, r.depth, r.idempotency_key_user, \
     r.idempotency_key_scope";

pub(crate) const RUN_FROM: &str = "runs r JOIN environments e ON e.id = r.environment_id \
     LEFT JOIN deployments d ON d.id = r.deployment_id";

/// An attempt from `run_id, number, status, deployment_id, started_at, finished_at, error,
/// fuel_used, compute_ms`.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "run_id, number, status, deployment_id, started_at, finished_at, error, fuel_used, compute_ms";

/// `status = 'A'` or `status IN ('A', 'B')`, and the condition the edges need, for a write of
/// `step` to `to` from the statuses `only` names (empty: all the table has).
pub(crate) fn status_guard(step: Step, to: RunStatus, only: &[RunStatus]) -> String {
    let (from, when) = guard(step, to, only);
    let statuses = match from.as_slice() {
        [one] => format!("status = '{}'", one.as_str()),
        many => format!(
            "status IN ({})",
            many.iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let condition = match when {
        Condition::Always => "",
        Condition::NeverStarted => " AND attempt_count = 0",
        Condition::Checkpointed => " AND checkpointed = 1",
        Condition::NotCheckpointed => " AND checkpointed = 0",
    };
    format!("{statuses}{condition}")
}

pub(crate) fn ms_duration(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn encode_error(e: &RunError) -> String {
    json!({ "code": e.code, "name": e.name, "message": e.message, "stack": e.stack }).to_string()
}

pub(crate) fn decode_error(text: &str) -> RunError {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    RunError {
        code: s("code"),
        name: s("name").unwrap_or_else(|| "Error".into()),
        message: s("message").unwrap_or_default(),
        stack: s("stack"),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An environment's stored allow-list.
pub(crate) fn outbound_hosts(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// A deployment from its stored parts: its components in order and its tasks (each with the
/// digest of the component that defines it), the tasks given to their components. A task naming
/// a component the deployment lacks, or a deployment without one, is corrupt data.
pub(crate) fn assemble_deployment(
    id: &str,
    environment_id: String,
    version: String,
    created_at: Millis,
    mut components: Vec<DeployedComponent>,
    tasks: Vec<(Option<String>, TaskDefinition)>,
) -> Result<Deployment, StoreError> {
    for (digest, task) in tasks {
        let owner = components
            .iter_mut()
            .find(|comp| Some(&comp.digest) == digest.as_ref())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "task `{}` of deployment {id} names a component the deployment lacks",
                    task.id
                ))
            })?;
        owner.tasks.push(task);
    }
    if components.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "deployment {id} has no component"
        )));
    }
    Ok(Deployment {
        id: id.to_owned(),
        environment_id,
        version,
        created_at,
        components,
    })
}

/// The waits for children of a run, from its children as `(id, created_at, finished_at,
/// group)` where children waited for together share a group (their batch, or the child alone):
/// one wait per group, since its first child was made, done once all of them are.
pub(crate) fn child_waits(
    children: Vec<(String, Millis, Option<Millis>, String)>,
) -> Vec<WaitRecord> {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut waits: Vec<WaitRecord> = Vec::new();
    for (id, created, finished, group) in children {
        match at.get(&group) {
            Some(&i) => {
                let wait = &mut waits[i];
                if let WaitKind::Runs(ids) = &mut wait.kind {
                    ids.push(id);
                }
                wait.since = wait.since.min(created);
                wait.done_at = match (wait.done_at, finished) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            None => {
                at.insert(group, waits.len());
                waits.push(WaitRecord {
                    kind: WaitKind::Runs(vec![id.clone()]),
                    id,
                    since: created,
                    deadline: None,
                    done_at: finished,
                    timed_out: false,
                });
            }
        }
    }
    waits
}

/// The checks each backend's tests run on its own statements.
#[cfg(test)]
pub(crate) mod checks {
    use crate::model::{RunStatus, allowed};

    /// The status a statement writes (`SET status = 'X'`) and the statuses its `WHERE` guards on.
    fn writes_and_guards(sql: &str) -> (Option<RunStatus>, Vec<RunStatus>) {
        let quoted_after = |text: &str, prefix: &str| -> Vec<RunStatus> {
            text.match_indices(prefix)
                .filter_map(|(at, _)| {
                    let rest = &text[at + prefix.len()..];
                    Some(rest[..rest.find('\'')?].to_owned())
                })
                .filter_map(|s| RunStatus::parse(&s))
                .collect()
        };
        let written = quoted_after(sql, "SET status = '").into_iter().next();
        let (_, guard) = sql.split_once(" WHERE ").unwrap_or_default();
        // A statement whose rows come from a CTE has its `SET` after the first `WHERE`.
        let guard = match written {
            Some(w) => guard.replace(&format!("SET status = '{}'", w.as_str()), ""),
            None => guard.to_owned(),
        };
        let guard = guard.as_str();
        let mut guards = quoted_after(guard, "status = '");
        for (at, _) in guard.match_indices("status IN (") {
            let list = &guard[at..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            guards.extend(
                list.split('\'')
                    .skip(1)
                    .step_by(2)
                    .filter_map(RunStatus::parse),
            );
        }
        (written, guards)
    }

    /// Every statement listed writes a status the table allows from each status it guards on.
    pub(crate) fn every_status_write_moves_runs_along_an_edge_of_the_table(
        statements: Vec<(&'static str, &'static str)>,
    ) {
        assert!(statements.len() >= 8, "every status write is listed");
        for (name, sql) in statements {
            let (written, guards) = writes_and_guards(sql);
            let written = written.unwrap_or_else(|| panic!("{name} writes no status: {sql}"));
            assert!(!guards.is_empty(), "{name}: the write is guarded: {sql}");
            for from in guards {
                assert!(
                    allowed(from, written),
                    "{name} writes {written} over {from}, which the table does not allow: {sql}"
                );
            }
        }
    }

    /// No statement of the backend in `dir` (under `src/store/`) writes a run's status but
    /// through [`super::status_guard`] (its tests, in `*_tests.rs` files or after
    /// `#[cfg(test)]`, set up whatever they need).
    pub(crate) fn no_status_is_written_but_through_a_guard(dir: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/store")
            .join(dir);
        for entry in std::fs::read_dir(&dir).expect("the store's sources") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.extension().is_none_or(|e| e != "rs")
                || name == "guards.rs"
                || name.ends_with("_tests.rs")
                || name.ends_with("fixtures.rs")
                || name == "testing.rs"
            {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("UTF-8 source");
            // Tests set up whatever states they need; the store's own statements come first.
            let text = source.split("#[cfg(test)]").next().unwrap_or_default();
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            for (at, _) in text.match_indices("UPDATE runs SET ") {
                let rest = &text[at + "UPDATE runs SET ".len()..];
                let set = &rest[..rest.find("WHERE").unwrap_or(rest.len())];
                let Some(write) = set.find("status = ") else {
                    continue;
                };
                let value = &set[write + "status = ".len()..];
                // The one compare-and-set of an engine-computed change, checked when it runs.
                let runtime =
                    file == "lifecycle.rs" && (value.starts_with('?') || value.starts_with('$'));
                assert!(
                    runtime || value.starts_with("'{"),
                    "{file}: a run status written literally (`status = {}`): build the statement with status_guard",
                    &value[..value.len().min(20)]
                );
            }
        }
    }
}
