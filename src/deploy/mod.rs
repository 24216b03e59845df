//! Deploying components: validate an upload, read its task list, store it as the environment's next
//! version, and keep compiled components ready to instantiate.
//!
//! An upload is refused — with a message that says what is wrong and what to do, and nothing
//! stored — when it is too large, not wasm, a core module, lacks the `kiln:task` exports, imports
//! something kiln does not provide, or its `definitions()` fails or returns invalid tasks.

mod cache;
mod validate;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::{Deployment, Environment, now_ms};
use crate::sandbox::{CompileError, GuestFailure, Prepared, Sandbox};
use crate::store::{Store, StoreError};
use cache::CompiledCache;

pub use validate::validate;

/// Machine code of compiled components kept in memory at once, by default. Past it the least
/// recently used are dropped (their artifacts on disk load again in milliseconds).
pub const DEFAULT_COMPILED_CACHE_BYTES: usize = 1 << 30;

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
    compiled: Mutex<CompiledCache>,
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
            compiled: Mutex::new(CompiledCache::new(DEFAULT_COMPILED_CACHE_BYTES)),
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
