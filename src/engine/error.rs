//! The engine's errors: what a client asked that cannot be done (the API maps each to a status),
//! and store failures passed through.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no version is deployed in this environment yet; deploy a component with `kiln deploy <file.wasm>` first"
    )]
    NothingDeployed,
    #[error("lockToVersion: version `{0}` is not deployed in this environment")]
    UnknownVersion(String),
    #[error("lockToVersion: version `{version}` has no task `{task}`")]
    TaskNotInVersion { task: String, version: String },
    #[error("the run is {0}; only DELAYED runs can be rescheduled")]
    NotDelayed(RunStatus),
    #[error("a run may have at most {MAX_TAGS} tags; this would make {0}")]
    TooManyTags(usize),
    #[error("a batch may have 1 to {MAX_BATCH_ITEMS} items; this one has {0}")]
    BatchSize(usize),
    #[error(
        "Batch runCount of {0} exceeds maximum allowed of {max}.",
        max = batches::MAX_BATCH_RUNS
    )]
    BatchRunCount(u32),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(
        "{scope} has {count} deploys compiling already (the limit is {limit}); wait for one to end (GET /api/v1/deploys/{{id}}) and deploy again"
    )]
    TooManyDeploys {
        count: usize,
        limit: usize,
        scope: &'static str,
    },
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("{}task `{task}`: {field} {message}", item.map(|i| format!("item {i}, ")).unwrap_or_default())]
    InvalidTrigger {
        /// The item's index in a batch.
        item: Option<usize>,
        task: String,
        field: &'static str,
        message: String,
    },
    #[error(
        "the payload is {}; the limit is {limit} bytes: store large data elsewhere and pass a reference",
        size.map_or("larger than that".to_owned(), |s| format!("{s} bytes"))
    )]
    PayloadTooLarge {
        /// Its size, when the body was read whole.
        size: Option<usize>,
        limit: usize,
    },
    #[error("the run changed concurrently too many times; try again")]
    Contended,
    #[error("queue `{0}` not found")]
    QueueNotFound(String),
    #[error(
        "concurrencyLimit: {limit} is more than the environment's limit of {environment_limit}; ask the host admin to raise it"
    )]
    LimitAboveEnvironment { limit: u32, environment_limit: u32 },
    #[error("wait token `{0}` not found")]
    TokenNotFound(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("environment variable `{0}` not found")]
    EnvVarNotFound(String),
    #[error("environment variable `{0}` exists; change it with PUT, or import with override")]
    EnvVarExists(String),
    #[error("{0}")]
    InvalidEnvVar(String),
    /// A stored secret does not open with the host's key.
    #[error("{0}")]
    Secrets(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
