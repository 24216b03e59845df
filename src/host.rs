//! The host: wires store, sandbox, deployer, engine and API together and runs them — the code
//! behind `kiln serve`, also used in-process by the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::deploy::{Deployer, Upload};
use crate::engine::{Engine, EngineConfig};
use crate::keys;
use crate::model::{
    Clock, DEFAULT_FUEL_BUDGET, Environment, Machine, RetryPolicy, SystemClock, now_ms,
};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::store::Store;

/// Name of the file in the data dir holding the dev environment's secret key.
pub const DEV_KEY_FILE: &str = "dev.key";

/// Name of the file in the data dir holding the host's admin key (written once, mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Default guest memory lent out at once: 8 GiB, sixteen small-1x attempts.
pub const DEFAULT_MEMORY_POOL_BYTES: u64 = 8 << 30;

/// Default concurrency limit of an environment (Trigger.dev's default environment limit).
pub const DEFAULT_ENVIRONMENT_CONCURRENCY: u32 = 100;

/// How long a host's runs stay its own after it last renewed its lease, by default.
pub const DEFAULT_HOST_LEASE: Duration = Duration::from_secs(15);

/// The file in the data dir naming the host (the same on every start of the data dir).
pub const HOST_NAME_FILE: &str = "host.name";

/// Default size limit of an uploaded component.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;

#[derive(Clone)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://…`) to keep runs in instead of SQLite in the data dir
    /// (which still holds the secrets key, the key files and compiled artifacts).
    pub database: Option<String>,
    /// On a database several hosts share: how long the runs this host started stay its own
    /// after it last renewed its lease (see [`crate::store::SharedHost`]).
    pub host_lease: Duration,
    /// The secrets key's file (default: `secrets.key` in the data dir); hosts sharing a
    /// database must share the key.
    pub secrets_key_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub concurrency: usize,
    /// Runs one environment may hold at once unless the admin sets another limit for it.
    pub environment_concurrency: u32,
    pub max_component_bytes: usize,
    /// Bytes the components of one deploy may have together (at least `max_component_bytes`).
    pub max_deploy_bytes: usize,
    /// Machine code of compiled components kept in memory (least recently used dropped past it).
    pub compiled_cache_bytes: usize,
    /// How the instance pool resets slots between instances.
    pub pool: crate::sandbox::PoolTuning,
    /// Compile large components first with wasmtime's baseline compiler (Winch), the optimizing
    /// one following in the background (see `deploy::QUICK_TIER_FROM_BYTES`).
    pub quick_tier: bool,
    /// Components to deploy to the dev environment at start, together as one version (skipped
    /// when the latest version has the same components, in the same order).
    pub deploy: Vec<PathBuf>,
    /// TTL of runs whose trigger and task set none.
    pub default_ttl: Option<Duration>,
    /// Where the engine reads the time (tests move a manual clock).
    pub clock: Arc<dyn Clock>,
    /// Compute-time limit of attempts whose trigger and task set none.
    pub default_max_duration: Option<Duration>,
    /// Fuel budget of an attempt on `small-1x`.
    pub fuel_budget: u64,
    /// Guest memory lent out at once, in bytes.
    pub memory_pool_bytes: u64,
    /// Waits up to this long sleep in place; longer ones checkpoint the run.
    pub wait_threshold: Duration,
    /// What one attempt may do over HTTP (requests, response size, timeouts).
    pub http_limits: crate::sandbox::http::HttpLimits,
    /// Bytes a run may write to its scratch directory (`/tmp`); `None`: its machine's memory.
    pub scratch_bytes: Option<u64>,
    /// The API's base URL as clients reach it, for wait tokens' callback URLs (default: the
    /// listen address over http).
    pub public_url: Option<String>,
}

impl HostConfig {
    /// A host on `data_dir` with the defaults of `kiln serve`.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> HostConfig {
        HostConfig {
            data_dir,
            database: None,
            host_lease: DEFAULT_HOST_LEASE,
            secrets_key_file: None,
            listen,
            concurrency: 8,
            environment_concurrency: DEFAULT_ENVIRONMENT_CONCURRENCY,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_deploy_bytes: crate::deploy::DEFAULT_MAX_DEPLOY_BYTES,
            compiled_cache_bytes: crate::deploy::DEFAULT_COMPILED_CACHE_BYTES,
            quick_tier: true,
            pool: crate::sandbox::PoolTuning::default(),
            deploy: Vec::new(),
            default_ttl: None,
            clock: Arc::new(SystemClock),
            default_max_duration: None,
            fuel_budget: DEFAULT_FUEL_BUDGET,
            memory_pool_bytes: DEFAULT_MEMORY_POOL_BYTES,
            wait_threshold: crate::sandbox::DEFAULT_WAIT_THRESHOLD,
            http_limits: crate::sandbox::http::HttpLimits::default(),
            scratch_bytes: None,
            public_url: None,
        }
    }
}

/// A started host. Dropping it does not stop it; call [`RunningHost::shutdown`].
pub struct RunningHost {
    /// The address the API listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The dev environment's secret key, if it was created by this start.
    pub new_key: Option<String>,
    pub key_file: PathBuf,
    pub dev: Environment,
    /// The components deployed at start (one version), as (file, version, its task ids).
    pub deployed: Vec<(PathBuf, String, Vec<String>)>,
    /// The engine, for embedding hosts and tests.
    pub engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    dispatcher: JoinHandle<()>,
}

impl RunningHost {
    /// Stops accepting requests, lets executing attempts finish, and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.dispatcher.await.context("the dispatcher panicked")?;
        self.server.await.context("the API server panicked")??;
        // Other hosts on a shared database take over at once what this one still held.
        self.engine.store().release_lease().await;
        Ok(())
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down.
    pub async fn serve_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing executing attempts");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Deploys the `--deploy` files to the dev environment as one version, unless the latest version
/// is already those components in that order (a restart with the same flags deploys nothing).
async fn deploy_at_start(
    engine: &Engine,
    store: &Store,
    dev: &Environment,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<(PathBuf, String, Vec<String>)>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut uploads = Vec::with_capacity(paths.len());
    let mut digests = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {} to deploy it; build it first",
                path.display()
            )
        })?;
        digests.push(
            Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        uploads.push(Upload { name, bytes });
    }
    let latest = store.latest_deployment(&dev.id).await?;
    let same =
        |d: &crate::model::Deployment| d.components.iter().map(|c| &c.digest).eq(digests.iter());
    let deployment = match latest.filter(same) {
        Some(same) => same,
        None => {
            let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            engine
                .deploy_components(dev, uploads)
                .await
                .with_context(|| format!("cannot deploy {}", files.join(", ")))?
        }
    };
    Ok(paths
        .iter()
        .zip(&deployment.components)
        .map(|(path, c)| {
            let tasks = c.tasks.iter().map(|t| t.id.clone()).collect();
            (path.clone(), deployment.version.clone(), tasks)
        })
        .collect())
}

fn write_key_file(path: &Path, key: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{key}")?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, format!("{key}\n"))?;
    Ok(())
}

/// The file whose lock says a host uses the data dir.
pub const LOCK_FILE: &str = "kiln.lock";

/// Locks the data dir for this host, so a second host on it refuses to start instead of sharing
/// the database. The lock is the OS's (released when the process ends, however it ends).
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open {}; check the data dir is writable",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            };
            anyhow::bail!(
                "the data dir {} is in use by another kiln{by}; stop it first, or pass another --data-dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The host's name: made (a new id) on the data dir's first start and kept in it, so a later
/// start of the same data dir knows its previous start's runs for its own.
fn host_name(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(HOST_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
            format!(
                "cannot read {}; make it readable, or remove it if this data dir's host never ran",
                path.display()
            )
        }),
        _ => {
            let name = format!("kiln-{}", ulid::Ulid::new().to_string().to_lowercase());
            std::fs::write(&path, format!("{name}\n")).with_context(|| {
                format!(
                    "cannot write {}; check the data dir is writable",
                    path.display()
                )
            })?;
            Ok(name)
        }
    }
}

/// Refuses a secrets key other than the one the database's first host sealed with: that host
/// stores a value sealed with its key, and every later host must open it with its own.
async fn check_secrets_key(
    store: &Store,
    secrets: &crate::secrets::SecretBox,
) -> anyhow::Result<()> {
    let proposed = secrets.seal_check();
    let stored = store.host_value(SECRETS_CHECK, proposed).await?;
    if !secrets.opens_check(&stored) {
        anyhow::bail!(
            "this database's environment variables are sealed with another secrets key than {}: \
             every host sharing a database needs the same key; copy secrets.key from the data dir \
             of the database's first host, or pass its file with --secrets-key-file",
            secrets.path().display()
        );
    }
    Ok(())
}

/// The name of the host-wide value that checks a host's secrets key.
const SECRETS_CHECK: &str = "secrets-key-check";

/// Opens the data dir, recovers interrupted runs, deploys `config.deploy`, and starts serving.
pub async fn start(config: HostConfig) -> anyhow::Result<RunningHost> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data dir {}; pass a writable --data-dir",
            config.data_dir.display()
        )
    })?;
    let lock = lock_data_dir(&config.data_dir)?;
    let secrets = match &config.secrets_key_file {
        Some(file) => crate::secrets::SecretBox::open_file(file)?,
        None => crate::secrets::SecretBox::open_or_create(&config.data_dir)?,
    };
    let store = match &config.database {
        Some(url) => {
            let shared = crate::store::SharedHost {
                name: host_name(&config.data_dir)?,
                lease: config.host_lease,
                default_environment_limit: config.environment_concurrency,
            };
            let store = Store::connect_postgres(url, shared).await?;
            check_secrets_key(&store, &secrets).await?;
            store
        }
        None => Store::open_sqlite(&config.data_dir)?,
    };
    let dev_key = keys::sealed(keys::environment_key("dev"), &secrets);
    let boot = store
        .bootstrap(dev_key, keys::admin_key(), now_ms())
        .await?;
    let key_file = config.data_dir.join(DEV_KEY_FILE);
    let new_key = boot.dev_key;
    let dev = boot.dev;
    for (file, key) in [
        (&key_file, &new_key),
        (&config.data_dir.join(ADMIN_KEY_FILE), &boot.admin_key),
    ] {
        if let Some(key) = key {
            write_key_file(file, key)
                .with_context(|| format!("cannot write a secret key to {}", file.display()))?;
        }
    }

    let concurrency = config.concurrency.max(1);
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrency,
        pool: config.pool,
        quick_tier: config.quick_tier,
    })?;
    sandbox.use_scratch_dirs(&config.data_dir.join("scratch"))?;
    let deployer = Arc::new(Deployer::new(
        store.clone(),
        sandbox.clone(),
        config.max_component_bytes,
        config.max_deploy_bytes,
        Some(config.data_dir.join("compiled")),
    ));
    deployer.set_compiled_cache_bytes(config.compiled_cache_bytes);
    let engine = Arc::new(Engine::new(
        store.clone(),
        sandbox,
        deployer.clone(),
        EngineConfig {
            concurrency,
            environment_concurrency: config.environment_concurrency,
            default_retry: RetryPolicy::default(),
            default_machine: Machine::default(),
            default_ttl: config.default_ttl,
            default_max_duration: config.default_max_duration,
            fuel_budget: config.fuel_budget,
            memory_pool_bytes: config.memory_pool_bytes,
            wait_threshold: config.wait_threshold,
            http_limits: config.http_limits.clone(),
            scratch_bytes: config.scratch_bytes,
        },
        config.clock.clone(),
        secrets,
    ));
    let recovered = engine.recover().await?;
    engine.sync_declarative_schedules().await?;
    let bulk = engine.resume_bulk_actions().await?;
    if bulk > 0 {
        tracing::info!(
            actions = bulk,
            "carrying on bulk actions the last stop interrupted"
        );
    }
    if recovered > 0 {
        tracing::info!(
            runs = recovered,
            "recovered runs interrupted by the last stop"
        );
    }

    let deployed = deploy_at_start(&engine, &store, &dev, &config.deploy).await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another kiln running? pass another --listen address",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    engine.set_token_urls(crate::engine::tokens::TokenUrls {
        base: config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        secret: store
            .host_value("token-callback", rand::random::<[u8; 32]>().to_vec())
            .await?,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = ApiState {
        realtime: api::realtime::Hub::start(engine.clone()),
        engine: engine.clone(),
        max_component_bytes: config.max_component_bytes,
        max_deploy_bytes: deployer.max_deploy_bytes(),
    };
    // The scheduler learns the queues' limits and pauses before anyone can change one: loaded
    // later, its read could land before a pause and its apply after it, undoing the pause.
    if let Err(e) = engine.load_scheduler().await {
        tracing::error!(error = %e, "loading the queues failed; queued runs start as they are triggered again");
    }
    engine.follow_lane_hints();
    engine.follow_host_hints();
    engine.prune_artifacts().await;
    let server = tokio::spawn(api::serve(listener, state, shutdown_rx.clone()));
    let dispatcher = tokio::spawn({
        let engine = engine.clone();
        async move {
            // The data dir stays locked as long as the host dispatches.
            let _lock = lock;
            engine.load_latest_versions().await;
            engine.dispatch(shutdown_rx).await;
        }
    });
    Ok(RunningHost {
        addr,
        new_key,
        key_file,
        dev,
        deployed,
        engine: engine.clone(),
        shutdown,
        server,
        dispatcher,
    })
}
