//! Deploying components: validate an upload of one or more components, read each one's task list,
//! store them together as the environment's next version, and keep compiled components ready to
//! instantiate.
//!
//! An upload is refused — with a message that says what is wrong and what to do, and nothing
//! stored — when a component is too large, not wasm, a core module, lacks the `kiln:task`
//! exports, imports something kiln does not provide, or its `definitions()` fails or returns
//! invalid tasks; and when the components are too many or too large together, or two of them
//! define the same task id (the message names the task and both components).

mod cache;
mod progress;
mod validate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::{Deployment, Environment, TaskDefinition, now_ms};
use crate::sandbox::{CompileError, GuestFailure, Prepared, Sandbox, check_header};
use crate::store::{NewComponent, Store, StoreError};
use cache::CompiledCache;
use progress::CompileRate;

pub use progress::{Phase, Progress, Snapshot};
pub use validate::validate;

/// Machine code of compiled components kept in memory at once, by default. Past it the least
/// recently used are dropped (their artifacts on disk load again in milliseconds).
pub const DEFAULT_COMPILED_CACHE_BYTES: usize = 1 << 30;

/// Components at least this large compile first with the sandbox's quick tier (Winch: a 12 MB
/// JavaScript component in about 0.9 s instead of 7), so the deploy and its first runs need not
/// wait; the optimizing compiler's code replaces it in the background. Smaller ones compile
/// optimized at once (a few hundred milliseconds).
pub const QUICK_TIER_FROM_BYTES: usize = 4 << 20;

/// Most components one version may have: each is compiled and validated while the deploy
/// waits, and each compiled one is kept in memory.
pub const MAX_COMPONENTS: usize = 16;
/// Bytes the components of one deploy may have together, by default (at least the limit of one).
pub const DEFAULT_MAX_DEPLOY_BYTES: usize = 128 << 20;

/// Most tasks one component may declare.
pub(crate) const MAX_TASKS: usize = 1_000;
/// Longest task id or queue name.
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest task description.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 2_000;
/// Trigger.dev's bounds on a queue's concurrency limit.
pub(crate) const MAX_QUEUE_LIMIT: u32 = 100_000;
/// Trigger.dev's minimum `maxDuration`.
pub(crate) const MIN_MAX_DURATION: Duration = Duration::from_secs(5);
/// Longest retry delay a task may ask for.
pub(crate) const MAX_RETRY_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the upload is empty; send the bytes of a `.wasm` component as the request body")]
    Empty,
    #[error(
        "the component is {size} bytes; the limit is {limit} bytes (shrink it with `opt-level = \"s\"`, `lto = true` and `strip = true`, or raise the host's --max-component-bytes)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the components are {size} bytes together; the limit is {limit} bytes (deploy fewer or smaller components, or raise the host's --max-deploy-bytes)"
    )]
    TooLargeTogether { size: usize, limit: usize },
    #[error("the deploy has no component; send the bytes of at least one `.wasm` component")]
    NoComponents,
    #[error(
        "the deploy has {count} components; a version has at most {limit} (put more tasks in fewer components)"
    )]
    TooManyComponents { count: usize, limit: usize },
    /// What was wrong with one component of a deploy of several.
    #[error("component `{component}`: {error}")]
    InComponent {
        component: String,
        error: Box<DeployError>,
    },
    #[error(
        "`{first}` and `{second}` are the same component (the same bytes); give each component once"
    )]
    SameComponentTwice { first: String, second: String },
    #[error(
        "task `{task}` is defined by two components, `{first}` and `{second}`; a task id is defined by one component of a version: rename the task in one of them or leave one component out"
    )]
    TaskInTwoComponents {
        task: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("calling the component's `definitions()` failed: {0}")]
    Definitions(String),
    #[error("the component's task definitions are invalid: {}", .0.join("; "))]
    InvalidTasks(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeployError {
    /// The error itself, out of the component it was found in.
    pub fn innermost(&self) -> &DeployError {
        match self {
            DeployError::InComponent { error, .. } => error.innermost(),
            other => other,
        }
    }
}

/// A component as a deploy receives it: its bytes and, when the upload named it, its file name.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: Option<String>,
    pub bytes: Vec<u8>,
}

impl Upload {
    /// A component the upload did not name.
    pub fn unnamed(bytes: Vec<u8>) -> Upload {
        Upload { name: None, bytes }
    }
}

/// A component that passed the checks that cost nothing, with its digest and the name errors
/// give it.
struct Labeled {
    upload: Upload,
    digest: [u8; 32],
    label: String,
}

/// The components of a deploy that passed [`Deployer::admit`], ready to compile.
pub struct Admitted {
    uploads: Vec<Labeled>,
}

impl Admitted {
    /// Each component's name (its file name, else its content digest) and size.
    pub fn components(&self) -> impl Iterator<Item = (&str, usize)> {
        self.uploads
            .iter()
            .map(|l| (l.label.as_str(), l.upload.bytes.len()))
    }

    /// The progress of a deploy of these components that has not started.
    pub fn progress(&self) -> Progress {
        let (name, bytes) = self.components().next().unwrap_or(("", 0));
        Progress::new(self.uploads.len(), name, bytes)
    }
}

/// A component that passed every check, ready to store.
struct Checked {
    component: NewComponent,
    prepared: Prepared,
    label: String,
}

/// Validates and stores deployments, and caches compiled components by content digest: in
/// memory, and on disk as precompiled artifacts so a restarted host does not compile again.
pub struct Deployer {
    store: Store,
    sandbox: Sandbox,
    max_component_bytes: usize,
    max_deploy_bytes: usize,
    compiled: Arc<Mutex<CompiledCache>>,
    /// Components whose optimized code is being compiled in the background, by digest.
    optimizing: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Deploys compile one at a time: a compile already uses every core.
    compiler: tokio::sync::Semaphore,
    compile_rate: CompileRate,
    /// Where precompiled artifacts are kept (`<data-dir>/compiled`); `None` keeps none.
    artifacts: Option<PathBuf>,
    /// One lock per component being loaded or compiled for attempts, by digest, so attempts
    /// that need the same component at once wait for one compile instead of each running one.
    loading: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Deployer {
    pub fn new(
        store: Store,
        sandbox: Sandbox,
        max_component_bytes: usize,
        max_deploy_bytes: usize,
        artifacts: Option<PathBuf>,
    ) -> Deployer {
        Deployer {
            store,
            sandbox,
            max_component_bytes,
            max_deploy_bytes: max_deploy_bytes.max(max_component_bytes),
            compiled: Arc::new(Mutex::new(CompiledCache::new(DEFAULT_COMPILED_CACHE_BYTES))),
            optimizing: Arc::default(),
            compiler: tokio::sync::Semaphore::new(1),
            compile_rate: CompileRate::default(),
            artifacts,
            loading: Mutex::default(),
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
        if let Some(path) = self.artifact_path(digest) {
            write_artifact(&self.sandbox, &path, prepared);
        }
    }

    /// Keeps a component compiled for a stored version: its artifact and its place in memory,
    /// or, for the quick tier's code, its place in memory until the optimizing compiler's code
    /// (compiled from `bytes` in the background) replaces it.
    fn keep(&self, digest: &str, prepared: Prepared, bytes: impl FnOnce() -> Vec<u8>) {
        if prepared.is_optimized() {
            self.save_artifact(digest, &prepared);
            self.cache().insert(digest.to_owned(), prepared);
            return;
        }
        self.cache().insert(digest.to_owned(), prepared);
        self.optimize_later(digest, bytes());
    }

    /// Compiles a component with the optimizing compiler in the background, then writes its
    /// artifact and puts it in memory in place of the quick tier's code. Attempts that began on
    /// the quick code finish on it; a run checkpointed on one resumes on the other (the two
    /// compile the same deterministic wasm; only fuel counts differ a little). If the host stops
    /// first, the next start compiles again the same way.
    fn optimize_later(&self, digest: &str, bytes: Vec<u8>) {
        let fresh = self
            .optimizing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_owned());
        if !fresh {
            return;
        }
        let (sandbox, compiled, optimizing) = (
            self.sandbox.clone(),
            self.compiled.clone(),
            self.optimizing.clone(),
        );
        let (digest, artifact) = (digest.to_owned(), self.artifact_path(digest));
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match sandbox.compile(bytes).await {
                Ok(prepared) => {
                    if let Some(path) = artifact {
                        write_artifact(&sandbox, &path, &prepared);
                    }
                    compiled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(digest.clone(), prepared);
                    tracing::info!(digest = %digest, ms = started.elapsed().as_millis() as u64, "optimized code replaces the quick tier's");
                }
                Err(e) => {
                    tracing::warn!(digest = %digest, error = %e, "the optimizing compiler failed; the quick tier's code keeps running");
                }
            }
            optimizing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest);
        });
    }

    /// Whether the component with this digest is in memory as the optimizing compiler's code
    /// (`Some(false)`: the quick tier's, replaced soon), or not in memory at all.
    pub fn is_optimized(&self, digest: &str) -> Option<bool> {
        self.cache().get(digest).map(|p| p.is_optimized())
    }

    /// Removes the compiled artifacts no run can use any more: those of components not in
    /// `usable` (see `Store::usable_component_digests`), and those another engine configuration
    /// wrote (an older kiln, other pool or metering settings). Returns how many files and bytes
    /// went. Removing one a run needs after all only costs a compile from the stored bytes.
    pub fn prune_artifacts(&self, usable: &std::collections::HashSet<String>) -> (usize, u64) {
        let Some(dir) = &self.artifacts else {
            return (0, 0);
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (0, 0);
        };
        let suffix = format!("-{}.cwasm", self.sandbox.fingerprint());
        let torn_suffix = format!("{suffix}.tmp");
        let (mut files, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            // Only kiln's own files: `<digest>-<fingerprint>.cwasm`, and the `.tmp` of a write a
            // crash cut off.
            let Some(stem) = name
                .strip_suffix(".cwasm")
                .or_else(|| name.strip_suffix(".cwasm.tmp"))
            else {
                continue;
            };
            // A digest is hex, so the first `-` ends it.
            let keep = (name.ends_with(&suffix) || name.ends_with(&torn_suffix))
                && stem
                    .split_once('-')
                    .is_some_and(|(digest, _)| usable.contains(digest));
            if keep {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    files += 1;
                    bytes += size;
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an unused compiled artifact");
                }
            }
        }
        (files, bytes)
    }

    /// Bytes the components of one deploy may have together (never below one component's).
    pub fn max_deploy_bytes(&self) -> usize {
        self.max_deploy_bytes
    }

    /// The checks of a deploy that cost nothing (counts, sizes, the wasm header, the same
    /// component twice), done before it waits for the compiler, so a deploy in the background is
    /// refused at once for them. [`Deployer::deploy_admitted`] does the rest: with several
    /// components, an error found in one names it, a task id two of them define is refused
    /// naming both, and nothing is stored unless all pass.
    pub fn admit(&self, env: &Environment, uploads: Vec<Upload>) -> Result<Admitted, DeployError> {
        if uploads.is_empty() {
            return Err(DeployError::NoComponents);
        }
        if uploads.len() > MAX_COMPONENTS {
            return Err(DeployError::TooManyComponents {
                count: uploads.len(),
                limit: MAX_COMPONENTS,
            });
        }
        let total = uploads.iter().map(|u| u.bytes.len()).sum::<usize>();
        if uploads.len() > 1 && total > self.max_deploy_bytes {
            return Err(DeployError::TooLargeTogether {
                size: total,
                limit: self.max_deploy_bytes,
            });
        }
        let several = uploads.len() > 1;
        let mut labeled: Vec<Labeled> = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let digest: [u8; 32] = Sha256::digest(&upload.bytes).into();
            let label = upload.name.clone().unwrap_or_else(|| hex(&digest));
            self.check_size(env, &upload.bytes)
                .map_err(|e| in_component(several, &label, e))?;
            if let Some(same) = labeled.iter().find(|l| l.digest == digest) {
                return Err(DeployError::SameComponentTwice {
                    first: same.label.clone(),
                    second: label,
                });
            }
            labeled.push(Labeled {
                upload,
                digest,
                label,
            });
        }
        // Every size is checked before any content.
        for l in &labeled {
            check_header(&l.upload.bytes).map_err(|e| in_component(several, &l.label, e.into()))?;
        }
        Ok(Admitted { uploads: labeled })
    }

    /// Compiles and checks admitted components, one deploy at a time (a compile uses every
    /// core), telling `progress` how far it got, and stores them as the next version.
    pub async fn deploy_admitted(
        &self,
        env: &Environment,
        admitted: Admitted,
        progress: &Progress,
    ) -> Result<Deployment, DeployError> {
        let several = admitted.uploads.len() > 1;
        // Closed only when the deployer is dropped, which no deploy outlives.
        let _compiler = self.compiler.acquire().await.ok();
        let mut checked: Vec<Checked> = Vec::with_capacity(admitted.uploads.len());
        for (index, labeled) in admitted.uploads.into_iter().enumerate() {
            let Labeled {
                upload,
                digest,
                label,
            } = labeled;
            let (component, prepared) = self
                .check(upload, digest, index, &label, progress)
                .await
                .map_err(|e| in_component(several, &label, e))?;
            for task in &component.tasks {
                if let Some(other) = checked.iter().find(|c| defines(&c.component.tasks, task)) {
                    return Err(DeployError::TaskInTwoComponents {
                        task: task.id.clone(),
                        first: other.label.clone(),
                        second: label,
                    });
                }
            }
            checked.push(Checked {
                component,
                prepared,
                label,
            });
        }
        if let Some(last) = checked.last() {
            progress.enter(
                Phase::Storing,
                checked.len() - 1,
                &last.label,
                last.component.bytes.len(),
                None,
            );
        }
        let now = now_ms();
        let day = jiff::Timestamp::from_millisecond(now)
            .map(|t| t.strftime("%Y%m%d").to_string())
            .unwrap_or_else(|_| "19700101".into());
        // The quick tier's code is replaced from the bytes once the version is stored.
        let mut compiled = Vec::with_capacity(checked.len());
        let mut components = Vec::with_capacity(checked.len());
        for c in checked {
            let bytes = (!c.prepared.is_optimized()).then(|| c.component.bytes.clone());
            compiled.push((c.prepared, bytes));
            components.push(c.component);
        }
        let deployment = self
            .store
            .insert_deployment(&env.id, components, day, now)
            .await?;
        for (stored, (prepared, bytes)) in deployment.components.iter().zip(compiled) {
            self.keep(&stored.digest, prepared, || bytes.unwrap_or_default());
        }
        Ok(deployment)
    }

    /// A component's size against the host's limit, or the environment's when the admin set a
    /// lower one.
    fn check_size(&self, env: &Environment, bytes: &[u8]) -> Result<(), DeployError> {
        if bytes.is_empty() {
            return Err(DeployError::Empty);
        }
        let limit = env
            .limits
            .max_component_bytes
            .map_or(self.max_component_bytes, |l| {
                usize::try_from(l).map_or(self.max_component_bytes, |l| {
                    l.min(self.max_component_bytes)
                })
            });
        if bytes.len() > limit {
            return Err(DeployError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Validates one component (its size checked): that it compiles, and the tasks its
    /// `definitions()` declares.
    async fn check(
        &self,
        upload: Upload,
        digest: [u8; 32],
        index: usize,
        label: &str,
        progress: &Progress,
    ) -> Result<(NewComponent, Prepared), DeployError> {
        let bytes = upload.bytes;
        let size = bytes.len();
        progress.enter(
            Phase::Compiling,
            index,
            label,
            size,
            self.compile_rate.estimate(size),
        );
        let prepared = self.compile_first(&bytes).await?;
        progress.enter(Phase::Definitions, index, label, size, None);
        let declared = self
            .sandbox
            .definitions(&prepared)
            .await
            .map_err(|f: GuestFailure| DeployError::Definitions(f.message))?;
        let tasks = validate(declared).map_err(DeployError::InvalidTasks)?;
        let component = NewComponent {
            digest,
            name: upload.name,
            bytes,
            tasks,
        };
        Ok((component, prepared))
    }

    /// Compiles wasm bytes as a deploy or a first run needs them: a large component with the
    /// quick tier when the sandbox has one (falling back to the optimizing compiler for what the
    /// quick tier refuses, e.g. relaxed SIMD), else optimized. Timed for the estimates of later
    /// deploys.
    async fn compile_first(&self, bytes: &[u8]) -> Result<Prepared, CompileError> {
        let size = bytes.len();
        let started = std::time::Instant::now();
        let quick = size >= QUICK_TIER_FROM_BYTES && self.sandbox.has_quick_tier();
        let prepared = match quick {
            true => match self.sandbox.compile_quick(bytes.to_vec()).await {
                Ok(prepared) => prepared,
                // What Winch refuses (relaxed SIMD, tail calls, exceptions) fails compiling; a
                // missing export or import fails the same under either compiler.
                Err(CompileError::Invalid(why)) => {
                    tracing::info!(error = %why, "the quick tier cannot compile the component; compiling it optimized");
                    self.sandbox.compile(bytes.to_vec()).await?
                }
                Err(other) => return Err(other),
            },
            false => self.sandbox.compile(bytes.to_vec()).await?,
        };
        self.compile_rate.record(size, started.elapsed());
        Ok(prepared)
    }

    /// The compiled component with this digest, of one of the environment's versions: from
    /// memory, else from its artifact on disk, else compiled from the stored bytes (and the
    /// artifact written for the next start).
    pub async fn prepared(
        &self,
        environment_id: &str,
        digest: &str,
    ) -> Result<Prepared, DeployError> {
        if let Some(p) = self.cache().get(digest) {
            return Ok(p.clone());
        }
        let lock = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.to_owned())
            .or_default()
            .clone();
        let loaded = {
            let _one_at_a_time = lock.lock().await;
            self.load_or_compile(environment_id, digest).await
        };
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // The last one out forgets the lock (the map holds one reference, this call another).
        if Arc::strong_count(&lock) <= 2 {
            loading.remove(digest);
        }
        loaded
    }

    /// [`Deployer::prepared`] under its digest's lock: an attempt that waited for another's
    /// compile finds the code in memory.
    async fn load_or_compile(
        &self,
        environment_id: &str,
        digest: &str,
    ) -> Result<Prepared, DeployError> {
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
                let bytes = self.store.component_bytes(environment_id, digest).await?;
                let started = std::time::Instant::now();
                let p = self.compile_first(&bytes).await?;
                tracing::info!(digest = %digest, ms = started.elapsed().as_millis() as u64, optimized = p.is_optimized(), "compiled component");
                self.keep(digest, p.clone(), || bytes);
                return Ok(p);
            }
        };
        self.cache().insert(digest.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// Bounds the machine code kept in memory (see [`DEFAULT_COMPILED_CACHE_BYTES`]).
    pub fn set_compiled_cache_bytes(&self, budget: usize) {
        self.cache().set_budget(budget);
    }

    /// Compiled components in memory now, and their machine code in bytes.
    pub fn compiled_in_memory(&self) -> (usize, usize) {
        let cache = self.cache();
        (cache.len(), cache.bytes())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CompiledCache> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes an artifact aside and renames it into place, so a crash never leaves a torn one under
/// the real name (best effort: a failure only costs a compile after restart).
fn write_artifact(sandbox: &Sandbox, path: &std::path::Path, prepared: &Prepared) {
    let write = || -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("cwasm.tmp");
        std::fs::write(&tmp, sandbox.artifact(prepared)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "could not save the compiled artifact");
    }
}

/// An error of one component, named when the deploy has several.
fn in_component(several: bool, label: &str, error: DeployError) -> DeployError {
    match several {
        true => DeployError::InComponent {
            component: label.to_owned(),
            error: Box::new(error),
        },
        false => error,
    }
}

/// Whether `tasks` has a task with the id of `task`.
fn defines(tasks: &[TaskDefinition], task: &TaskDefinition) -> bool {
    tasks.iter().any(|t| t.id == task.id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
