//! Deploying components: validate an upload, read its task list, store it as the environment's next
//! version, and keep compiled components ready to instantiate.
//!
//! An upload is refused — with a message that says what is wrong and what to do, and nothing
//! stored — when it is too large, not wasm, a core module, lacks the `kiln:task` exports, imports
//! something kiln does not provide, or its `definitions()` fails or returns invalid tasks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::{
    Deployment, Environment, MAX_ATTEMPTS_CAP, Machine, QueueDefinition, RetryDefinition,
    TaskDefinition, TaskSchedule, now_ms,
};
use crate::sandbox::{CompileError, DeclaredTask, GuestFailure, Prepared, Sandbox};
use crate::schedule::CronSchedule;
use crate::store::{Store, StoreError};

/// Most tasks one component may declare.
const MAX_TASKS: usize = 1_000;
/// Longest task id or queue name.
const MAX_ID_LEN: usize = 128;
/// Longest task description.
const MAX_DESCRIPTION_LEN: usize = 2_000;
/// Trigger.dev's bounds on a queue's concurrency limit.
const MAX_QUEUE_LIMIT: u32 = 100_000;
/// Trigger.dev's minimum `maxDuration`.
const MIN_MAX_DURATION: Duration = Duration::from_secs(5);
/// Longest retry delay a task may ask for.
const MAX_RETRY_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the upload is empty; send the bytes of a `.wasm` component as the request body")]
    Empty,
    #[error(
        "the component is {size} bytes; the limit is {limit} bytes (shrink it with `opt-level = \"s\"`, `lto = true` and `strip = true`, or raise the host's --max-component-bytes)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("calling the component's `definitions()` failed: {0}")]
    Definitions(String),
    #[error("the component's task definitions are invalid: {}", .0.join("; "))]
    InvalidTasks(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates and stores deployments, and caches compiled components by content digest: in
/// memory, and on disk as precompiled artifacts so a restarted host does not compile again.
pub struct Deployer {
    store: Store,
    sandbox: Sandbox,
    max_component_bytes: usize,
    compiled: Mutex<HashMap<String, Prepared>>,
    /// Where precompiled artifacts are kept (`<data-dir>/compiled`); `None` keeps none.
    artifacts: Option<PathBuf>,
}

impl Deployer {
    pub fn new(
        store: Store,
        sandbox: Sandbox,
        max_component_bytes: usize,
        artifacts: Option<PathBuf>,
    ) -> Deployer {
        Deployer {
            store,
            sandbox,
            max_component_bytes,
            compiled: Mutex::new(HashMap::new()),
            artifacts,
        }
    }

    /// Components compiled from wasm bytes by this process (artifact loads are not counted).
    pub fn compilations(&self) -> u64 {
        self.sandbox.compilations()
    }

    /// The artifact file of a component for this engine configuration.
    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.artifacts.as_ref()?;
        Some(dir.join(format!("{digest}-{}.cwasm", self.sandbox.fingerprint())))
    }

    /// Writes a component's artifact (best effort: a failure only costs a compile after restart).
    fn save_artifact(&self, digest: &str, prepared: &Prepared) {
        let Some(path) = self.artifact_path(digest) else {
            return;
        };
        let write = || -> anyhow::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Write aside and rename, so a crash never leaves a torn artifact under the real name.
            let tmp = path.with_extension("cwasm.tmp");
            std::fs::write(&tmp, self.sandbox.artifact(prepared)?)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not save the compiled artifact");
        }
    }

    /// Validates `bytes` and makes it the environment's newest version.
    pub async fn deploy(
        &self,
        env: &Environment,
        bytes: Vec<u8>,
    ) -> Result<Deployment, DeployError> {
        if bytes.is_empty() {
            return Err(DeployError::Empty);
        }
        if bytes.len() > self.max_component_bytes {
            return Err(DeployError::TooLarge {
                size: bytes.len(),
                limit: self.max_component_bytes,
            });
        }
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let prepared = self.sandbox.compile(bytes.clone()).await?;
        let declared = self
            .sandbox
            .definitions(&prepared)
            .await
            .map_err(|f: GuestFailure| DeployError::Definitions(f.message))?;
        let tasks = validate(declared).map_err(DeployError::InvalidTasks)?;
        let now = now_ms();
        let day = jiff::Timestamp::from_millisecond(now)
            .map(|t| t.strftime("%Y%m%d").to_string())
            .unwrap_or_else(|_| "19700101".into());
        let deployment = self
            .store
            .insert_deployment(&env.id, &digest, bytes, tasks, day, now)
            .await?;
        self.save_artifact(&deployment.component_digest, &prepared);
        self.cache()
            .insert(deployment.component_digest.clone(), prepared);
        Ok(deployment)
    }

    /// The compiled component of a deployment: from memory, else from its artifact on disk, else
    /// compiled from the stored bytes (and the artifact written for the next start).
    pub async fn prepared(&self, deployment: &Deployment) -> Result<Prepared, DeployError> {
        let digest = &deployment.component_digest;
        if let Some(p) = self.cache().get(digest) {
            return Ok(p.clone());
        }
        let loaded = match self.artifact_path(digest).filter(|p| p.exists()) {
            Some(path) => match self.sandbox.load_artifact(&path) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiling again: the artifact did not load");
                    None
                }
            },
            None => None,
        };
        let prepared = match loaded {
            Some(p) => p,
            None => {
                let bytes = self.store.component_bytes(digest).await?;
                let started = std::time::Instant::now();
                let p = self.sandbox.compile(bytes).await?;
                tracing::info!(digest = %digest, ms = started.elapsed().as_millis() as u64, "compiled component");
                self.save_artifact(digest, &p);
                p
            }
        };
        self.cache().insert(digest.clone(), prepared.clone());
        Ok(prepared)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prepared>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn machine(
    field: &str,
    task: &str,
    value: Option<String>,
    problems: &mut Vec<String>,
) -> Option<Machine> {
    let value = value?;
    let parsed = Machine::parse(&value);
    if parsed.is_none() {
        let names: Vec<&str> = Machine::ALL.iter().map(|m| m.as_str()).collect();
        problems.push(format!(
            "task `{task}`: {field} `{value}` is not a machine preset (use one of {})",
            names.join(", ")
        ));
    }
    parsed
}

fn show_limit(limit: Option<u32>) -> String {
    limit.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

/// Checks every declared task; returns all problems found, not just the first.
pub fn validate(declared: Vec<DeclaredTask>) -> Result<Vec<TaskDefinition>, Vec<String>> {
    let mut problems = Vec::new();
    if declared.is_empty() {
        problems.push(
            "the component declares no tasks; return at least one from `definitions()`".into(),
        );
    }
    if declared.len() > MAX_TASKS {
        return Err(vec![format!(
            "the component declares {} tasks; the limit is {MAX_TASKS}",
            declared.len()
        )]);
    }
    let mut seen = std::collections::HashSet::new();
    // Named queue → (first task declaring it, its limit): tasks sharing a queue must agree.
    let mut queue_limits: std::collections::HashMap<String, (String, Option<u32>)> =
        std::collections::HashMap::new();
    let mut tasks = Vec::with_capacity(declared.len());
    for d in declared {
        let id = d.id;
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        if !valid_name(&id) {
            problems.push(format!(
                "task id `{shown}` is invalid: use 1–{MAX_ID_LEN} characters of letters, digits, `-`, `_` and `.`"
            ));
        } else if !seen.insert(id.clone()) {
            problems.push(format!(
                "task id `{id}` is declared more than once; task ids must be unique"
            ));
        }
        if d.description
            .as_ref()
            .is_some_and(|s| s.len() > MAX_DESCRIPTION_LEN)
        {
            problems.push(format!(
                "task `{shown}`: the description is longer than {MAX_DESCRIPTION_LEN} bytes"
            ));
        }
        let queue = d.queue_name.map(|name| {
            // A task may limit its own queue, `task/<its id>`; other names are named queues.
            let own = name.strip_prefix(crate::model::TASK_QUEUE_PREFIX) == Some(id.as_str());
            if !own && !valid_name(&name) {
                problems.push(format!(
                    "task `{shown}`: queue name `{}` is invalid: use 1–{MAX_ID_LEN} characters of letters, digits, `-`, `_` and `.` (or `task/{shown}` for the task's own queue)",
                    name.chars().take(MAX_ID_LEN).collect::<String>()
                ));
            }
            QueueDefinition {
                name,
                concurrency_limit: d.queue_concurrency_limit,
            }
        });
        if let Some(q) = &queue {
            match queue_limits.get(&q.name) {
                Some((first, limit)) if *limit != q.concurrency_limit => {
                    problems.push(format!(
                        "task `{shown}`: queue `{}` is declared with concurrency limit {} here but {} by task `{first}`; declare one limit for a shared queue",
                        q.name,
                        show_limit(q.concurrency_limit),
                        show_limit(*limit),
                    ));
                }
                Some(_) => {}
                None => {
                    queue_limits.insert(q.name.clone(), (shown.to_string(), q.concurrency_limit));
                }
            }
        }
        if d.queue_concurrency_limit
            .is_some_and(|l| l > MAX_QUEUE_LIMIT)
        {
            problems.push(format!(
                "task `{shown}`: queue concurrency limit must be 0–{MAX_QUEUE_LIMIT}"
            ));
        }
        let retry = match d.retry {
            None => RetryDefinition::default(),
            Some(r) => {
                if r.max_attempts
                    .is_some_and(|n| n == 0 || n > MAX_ATTEMPTS_CAP)
                {
                    problems.push(format!(
                        "task `{shown}`: retry max attempts must be 1–{MAX_ATTEMPTS_CAP}"
                    ));
                }
                if r.factor
                    .is_some_and(|f| !f.is_finite() || f <= 0.0 || f > 100.0)
                {
                    problems.push(format!(
                        "task `{shown}`: retry factor must be a number above 0 and at most 100"
                    ));
                }
                for (name, value) in [
                    ("min timeout", r.min_timeout_ms),
                    ("max timeout", r.max_timeout_ms),
                ] {
                    if value.is_some_and(|v| v > MAX_RETRY_DELAY_MS) {
                        problems.push(format!(
                            "task `{shown}`: retry {name} must be at most {MAX_RETRY_DELAY_MS} ms (24 h)"
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (r.min_timeout_ms, r.max_timeout_ms)
                    && min > max
                {
                    problems.push(format!(
                        "task `{shown}`: retry min timeout ({min} ms) is above the max timeout ({max} ms)"
                    ));
                }
                RetryDefinition {
                    max_attempts: r.max_attempts,
                    factor: r.factor,
                    min_timeout_ms: r.min_timeout_ms,
                    max_timeout_ms: r.max_timeout_ms,
                    randomize: r.randomize,
                    out_of_memory_machine: machine(
                        "retry out-of-memory machine",
                        &shown,
                        r.out_of_memory_machine,
                        &mut problems,
                    ),
                }
            }
        };
        let max_duration = d.max_duration_ms.map(Duration::from_millis);
        if max_duration.is_some_and(|m| m < MIN_MAX_DURATION) {
            problems.push(format!(
                "task `{shown}`: max duration must be at least 5 seconds"
            ));
        }
        let schedule =
            d.schedule.and_then(
                |s| match CronSchedule::parse(&s.cron, s.timezone.as_deref()) {
                    Ok(cron) => Some(TaskSchedule {
                        cron: cron.expression().to_owned(),
                        timezone: cron.timezone().to_owned(),
                    }),
                    Err(e) => {
                        problems.push(format!("task `{shown}`: schedule {e}"));
                        None
                    }
                },
            );
        tasks.push(TaskDefinition {
            schedule,
            machine: machine("machine", &shown, d.machine, &mut problems),
            id,
            description: d.description,
            queue,
            retry,
            max_duration,
            ttl: d.ttl_ms.map(Duration::from_millis),
        });
    }
    if problems.is_empty() {
        Ok(tasks)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> DeclaredTask {
        DeclaredTask {
            id: id.into(),
            description: None,
            queue_name: None,
            queue_concurrency_limit: None,
            retry: None,
            max_duration_ms: None,
            ttl_ms: None,
            machine: None,
            schedule: None,
        }
    }

    #[test]
    fn valid_tasks_pass() {
        let tasks = validate(vec![task("hello"), task("send-email.v2_x")]).unwrap();
        assert_eq!(tasks.len(), 2);
    }

    #[test]
    fn every_problem_is_reported() {
        let mut bad_machine = task("big");
        bad_machine.machine = Some("huge-9x".into());
        let mut short = task("short");
        short.max_duration_ms = Some(1_000);
        let problems = validate(vec![
            task("dup"),
            task("dup"),
            task("not a valid id!"),
            task(""),
            bad_machine,
            short,
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("`dup` is declared more than once"));
        assert!(problems[1].contains("`not a valid id!` is invalid"));
        assert!(problems[3].contains("huge-9x"));
        assert!(problems[4].contains("at least 5 seconds"));
    }

    #[test]
    fn tasks_sharing_a_queue_must_agree_on_its_limit() {
        let with_queue = |id: &str, limit: Option<u32>| {
            let mut t = task(id);
            t.queue_name = Some("shared".into());
            t.queue_concurrency_limit = limit;
            t
        };
        assert!(validate(vec![with_queue("a", Some(2)), with_queue("b", Some(2))]).is_ok());
        let problems =
            validate(vec![with_queue("a", Some(2)), with_queue("b", Some(3))]).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("queue `shared`"), "{problems:?}");
    }

    #[test]
    fn no_tasks_is_refused() {
        assert!(validate(vec![]).unwrap_err()[0].contains("declares no tasks"));
    }

    #[test]
    fn absurd_retry_settings_are_refused() {
        let mut t = task("t");
        t.retry = Some(crate::sandbox::DeclaredRetry {
            max_attempts: Some(0),
            factor: Some(f64::NAN),
            min_timeout_ms: Some(5_000),
            max_timeout_ms: Some(1_000),
            randomize: None,
            out_of_memory_machine: Some("nope".into()),
        });
        assert_eq!(validate(vec![t]).unwrap_err().len(), 4);
    }

    #[test]
    fn bad_schedules_name_the_task_and_the_field() {
        let declared = |id: &str, cron: &str, timezone: Option<&str>| {
            let mut t = task(id);
            t.schedule = Some(crate::sandbox::DeclaredSchedule {
                cron: cron.into(),
                timezone: timezone.map(Into::into),
            });
            t
        };
        let problems = validate(vec![
            declared("cron", "61 * * * *", None),
            declared("zone", "0 * * * *", Some("Mars/Olympus_Mons")),
        ])
        .unwrap_err();
        assert!(
            problems[0].starts_with("task `cron`: schedule cron `61 * * * *`"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("task `zone`: schedule timezone `Mars/Olympus_Mons`"),
            "{problems:#?}"
        );
        let ok = validate(vec![declared("good", "0  9 * * *", Some("Europe/Berlin"))]).unwrap();
        assert_eq!(
            ok[0].schedule,
            Some(TaskSchedule {
                cron: "0 9 * * *".into(),
                timezone: "Europe/Berlin".into()
            })
        );
    }
}
