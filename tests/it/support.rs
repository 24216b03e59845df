//! Test support: the example guests (built once per test process) and a real host on a free
//! loopback port with a temp data dir, driven over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::Arc;

use kiln::host::{self, HostConfig, RunningHost};
use kiln::model::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The example guests, by the name of their `.wasm` file.
pub mod guests {
    pub const HELLO: &str = "hello";
    pub const BENCH: &str = "bench";
    pub const BAD_DEFINITIONS_TRAP: &str = "bad_definitions_trap";
    pub const BAD_DUPLICATE_IDS: &str = "bad_duplicate_ids";
    pub const BAD_INVALID_ID: &str = "bad_invalid_id";
    pub const BAD_SCHEDULE: &str = "bad_schedule";
    pub const BAD_UNKNOWN_IMPORT: &str = "bad_unknown_import";
    pub const NOT_A_TASK: &str = "not_a_task";
    pub const ADVERSARY: &str = "adversary";
    pub const BAD_UTF8: &str = "bad_utf8";
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-examples")
}

/// Builds `guest-examples/` once per test process; returns the directory of the `.wasm` files.
fn built_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = guest_dir();
        // CI may keep guest builds in a cache directory outside the checkout.
        let target = std::env::var_os("KILN_GUEST_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("target"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
            .arg(&target)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo must be on PATH to build the example guests");
        assert!(
            status.success(),
            "building guest-examples failed; is the wasm32-wasip2 target installed? (`rustup target add wasm32-wasip2`)"
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// The bytes of an example guest.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn guest_path(name: &str) -> PathBuf {
    built_guests().join(format!("{name}.wasm"))
}

/// A component of the `kiln:task/task` world from a core module written in WAT,
/// `guest-examples/<name>/<name>.wat`, for what Rust cannot emit.
pub fn wat_guest(name: &str) -> Vec<u8> {
    let path = guest_dir().join(name).join(format!("{name}.wat"));
    let mut module = wat::parse_file(&path)
        .unwrap_or_else(|e| panic!("cannot assemble {}: {e}", path.display()));
    let mut wit = wit_parser::Resolve::default();
    let package = wit
        .push_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"))
        .expect("wit/ parses")
        .0;
    let world = wit
        .select_world(&[package], Some("task"))
        .expect("wit/ has the task world");
    wit_component::embed_component_metadata(
        &mut module,
        &wit,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("the world's metadata embeds");
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .unwrap_or_else(|e| {
            panic!(
                "{} is not a component of the task world: {e:#}",
                path.display()
            )
        })
}

/// The database of the hosts on `dir` when the suite runs against PostgreSQL
/// (`KILN_TEST_BACKEND=postgres`): one of their own on the test server (`KILN_TEST_POSTGRES`, by
/// default `postgres://postgres@127.0.0.1:5432/postgres`), made the first time and named in the
/// data dir, so a host restarted on the dir finds the same runs. `None`: SQLite in the data dir.
pub fn test_database(dir: &Path) -> Option<String> {
    if std::env::var("KILN_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    let named = dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&named) {
        return Some(url.trim().to_owned());
    }
    let admin = std::env::var("KILN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("kiln_it_{}", ulid::Ulid::new().to_string().to_lowercase());
    let statement = format!("CREATE DATABASE {name}");
    let server = admin.clone();
    // On a thread of its own: callers may be inside a runtime or not.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!("the PostgreSQL suite needs a server at {server} that can create databases (set KILN_TEST_POSTGRES): {e}")
                });
            tokio::spawn(connection);
            sweep_old_databases(&client).await;
            client.batch_execute(&statement).await.expect("a test database is made");
        })
    })
    .join()
    .expect("the test database is made");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    let url = format!("{base}/{name}");
    std::fs::write(&named, &url).expect("the data dir names its database");
    Some(url)
}

/// Whether the suite runs against PostgreSQL (`KILN_TEST_BACKEND=postgres`). Tests of what only
/// SQLite's files can show (a corrupt file, a full disk under the data dir) skip themselves then.
pub fn on_postgres() -> bool {
    std::env::var("KILN_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// Drops test databases earlier runs left behind (an hour old or more, unused), once per process.
async fn sweep_old_databases(client: &tokio_postgres::Client) {
    static SWEPT: OnceLock<()> = OnceLock::new();
    if SWEPT.set(()).is_err() {
        return;
    }
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'kiln_it_%'",
            &[],
        )
        .await
    else {
        return;
    };
    let hour_ago = kiln::model::now_ms() - 3_600_000;
    for row in rows {
        let name: String = row.get(0);
        let made = ulid::Ulid::from_string(&name["kiln_it_".len()..].to_uppercase())
            .map(|u| u.timestamp_ms() as i64)
            .unwrap_or(0);
        if made < hour_ago {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

/// A host running in this process.
pub struct TestHost {
    pub url: String,
    pub key: String,
    pub dir: PathBuf,
    http: reqwest::Client,
    host: Option<RunningHost>,
    _temp: Option<tempfile::TempDir>,
}

pub struct Options {
    pub concurrency: usize,
    pub max_component_bytes: usize,
    /// Bytes the components of one deploy may have together.
    pub max_deploy_bytes: usize,
    pub default_ttl: Option<Duration>,
    pub fuel_budget: u64,
    pub memory_pool_bytes: u64,
    /// Drive the engine's time by hand (for rules measured in hours or days).
    pub clock: Option<Arc<ManualClock>>,
    /// Waits longer than this checkpoint (the host default when `None`).
    pub wait_threshold: Option<Duration>,
    /// What one attempt may do over HTTP.
    pub http_limits: kiln::sandbox::http::HttpLimits,
    /// Bytes a run may write to `/tmp` (its machine's memory when `None`).
    pub scratch_bytes: Option<u64>,
    /// Machine code of compiled components kept in memory.
    pub compiled_cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 4,
            max_component_bytes: host::DEFAULT_MAX_COMPONENT_BYTES,
            max_deploy_bytes: kiln::deploy::DEFAULT_MAX_DEPLOY_BYTES,
            default_ttl: None,
            fuel_budget: kiln::model::DEFAULT_FUEL_BUDGET,
            memory_pool_bytes: host::DEFAULT_MEMORY_POOL_BYTES,
            clock: None,
            wait_threshold: None,
            http_limits: kiln::sandbox::http::HttpLimits::default(),
            scratch_bytes: None,
            compiled_cache_bytes: kiln::deploy::DEFAULT_COMPILED_CACHE_BYTES,
        }
    }
}

impl Options {
    /// Default options with a manual clock starting now.
    pub fn manual_clock() -> (Options, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(kiln::model::now_ms()));
        (
            Options {
                clock: Some(clock.clone()),
                ..Options::default()
            },
            clock,
        )
    }
}

impl TestHost {
    pub async fn start() -> TestHost {
        TestHost::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestHost {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut host = TestHost::start_in(&dir, options).await;
        host._temp = Some(temp);
        host
    }

    /// Starts a host on an existing data dir (for restart tests; the caller keeps the dir alive).
    pub async fn start_in(dir: &Path, options: Options) -> TestHost {
        let mut config = HostConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
        config.database = test_database(dir);
        config.concurrency = options.concurrency;
        config.max_component_bytes = options.max_component_bytes;
        config.max_deploy_bytes = options.max_deploy_bytes;
        config.default_ttl = options.default_ttl;
        config.fuel_budget = options.fuel_budget;
        if let Some(threshold) = options.wait_threshold {
            config.wait_threshold = threshold;
        }
        config.memory_pool_bytes = options.memory_pool_bytes;
        config.http_limits = options.http_limits;
        config.scratch_bytes = options.scratch_bytes;
        config.compiled_cache_bytes = options.compiled_cache_bytes;
        if let Some(clock) = options.clock {
            config.clock = clock;
        }
        let running = host::start(config).await.expect("host starts");
        let key = std::fs::read_to_string(&running.key_file)
            .expect("the dev key file exists")
            .trim()
            .to_owned();
        TestHost {
            url: format!("http://{}", running.addr),
            key,
            dir: dir.to_path_buf(),
            http: reqwest::Client::new(),
            host: Some(running),
            _temp: None,
        }
    }

    /// Guest instances alive in the host now.
    pub fn live_instances(&self) -> usize {
        self.host
            .as_ref()
            .expect("host running")
            .engine
            .live_instances()
    }

    /// Components this host compiled from wasm bytes (not loaded from an artifact).
    pub fn compilations(&self) -> u64 {
        self.host
            .as_ref()
            .map_or(0, |h| h.engine.deployer().compilations())
    }

    /// Whether the component with this digest is in memory as optimized code (`Some(false)`:
    /// the quick tier's).
    pub fn is_optimized(&self, digest: &str) -> Option<bool> {
        self.host
            .as_ref()
            .and_then(|h| h.engine.deployer().is_optimized(digest))
    }

    /// Read operations the host's store ran so far.
    pub fn store_reads(&self) -> u64 {
        self.host.as_ref().map_or(0, |h| h.engine.store().reads())
    }

    /// Compiled components the host keeps in memory now, and their machine code in bytes.
    pub fn compiled_in_memory(&self) -> (usize, usize) {
        self.host
            .as_ref()
            .map_or((0, 0), |h| h.engine.deployer().compiled_in_memory())
    }

    /// Tells the engine its (manual) clock moved.
    pub fn wake(&self) {
        if let Some(h) = &self.host {
            h.engine.wake();
        }
    }

    /// Stops the host gracefully, keeping the data dir (returned if this host owned it).
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(h) = self.host.take() {
            h.shutdown().await.expect("clean shutdown");
        }
        self._temp.take()
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request_as(&self.key, method, path, body).await
    }

    /// A request made with another key (a second tenant, a revoked key, the admin key).
    pub async fn request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// A secret key for another environment of this host, made with the admin API.
    pub async fn new_environment_key(&self, project: &str, environment: &str) -> (String, String) {
        let (status, body) = self
            .request_as(
                &self.admin_key(),
                reqwest::Method::POST,
                "/api/v1/admin/keys",
                Some(json!({ "project": project, "environment": environment })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let field = |f: &str| body[f].as_str().expect("key field").to_owned();
        (field("id"), field("key"))
    }

    /// The host's admin key.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.dir.join(host::ADMIN_KEY_FILE))
            .expect("admin.key")
            .trim()
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// Uploads raw bytes as a deployment.
    pub async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.upload_as(&self.key, bytes).await
    }

    /// Uploads raw bytes as a deployment of the environment of `key`.
    pub async fn upload_as(&self, key: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/deployments?wait=true", self.url))
            .bearer_auth(key)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("upload sent");
        read(resp).await
    }

    /// Uploads components as one deploy, `multipart/form-data` with a part per component (named
    /// by its file name when it has one).
    pub async fn upload_parts(&self, parts: Vec<(Option<String>, Vec<u8>)>) -> (StatusCode, Value) {
        const BOUNDARY: &str = "kiln-test-boundary-5c1d";
        let body = kiln::api::multipart::form_data(BOUNDARY, parts);
        let resp = self
            .http
            .post(format!("{}/api/v1/deployments?wait=true", self.url))
            .bearer_auth(&self.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload sent");
        read(resp).await
    }

    /// Deploys example guests together as one version, each named `<guest>.wasm`; panics unless
    /// it is accepted.
    pub async fn deploy_together(&self, names: &[&str]) -> Value {
        let parts = names
            .iter()
            .map(|n| (Some(format!("{n}.wasm")), guest(n)))
            .collect();
        let (status, body) = self.upload_parts(parts).await;
        assert_eq!(status, StatusCode::CREATED, "deploying {names:?}: {body}");
        body
    }

    /// Deploys an example guest; panics unless it is accepted.
    pub async fn deploy(&self, name: &str) -> Value {
        let (status, body) = self.upload(guest(name)).await;
        assert_eq!(status, StatusCode::CREATED, "deploying {name}: {body}");
        body
    }

    /// Triggers a run; panics unless it is accepted. Returns the run id.
    pub async fn trigger(&self, task: &str, payload: Value) -> String {
        self.trigger_with(task, payload, json!({})).await
    }

    /// Triggers a run with options; panics unless it is accepted. Returns the run id.
    pub async fn trigger_with(&self, task: &str, payload: Value, options: Value) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/tasks/{task}/trigger"),
                json!({ "payload": payload, "options": options }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "triggering {task}: {body}");
        body["id"].as_str().expect("run id").to_owned()
    }

    /// Completes the newest wait token with `data`; the answer's status.
    pub async fn complete_newest_token(&self, data: Value) -> StatusCode {
        let (_, list) = self.get("/api/v1/waitpoints/tokens").await;
        let token = list["data"][0]["id"].as_str().expect("a token").to_owned();
        let (status, _) = self
            .post(
                &format!("/api/v1/waitpoints/tokens/{token}/complete"),
                json!({ "data": data }),
            )
            .await;
        status
    }

    pub async fn run(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v3/runs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls a run until `done` holds for it (at most 60 s).
    pub async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.run(id).await;
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never became {what}: {run:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the run reaches a final status.
    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_for(id, "final", |r| r["isCompleted"] == true)
            .await
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, status, |r| r["status"] == status).await
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The database of the host on `dir`, whichever backend the suite runs on, for tests that look
/// at what was stored (or change it, to play an older kiln): SQLite's `kiln.db` in the data dir,
/// or the dir's PostgreSQL database. Statements are written with `?1`-style parameters (the
/// same SQL runs on both; PostgreSQL gets `$1`).
pub enum StoredDb {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// A parameter of a [`StoredDb`] statement.
pub enum Param<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl StoredDb {
    pub async fn open(dir: &Path) -> StoredDb {
        match test_database(dir) {
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("the test database");
                tokio::spawn(connection);
                StoredDb::Postgres(client)
            }
            None => {
                let db = rusqlite::Connection::open(dir.join("kiln.db")).expect("kiln.db");
                db.busy_timeout(Duration::from_secs(5))
                    .expect("a busy timeout");
                StoredDb::Sqlite(db)
            }
        }
    }

    fn postgres_sql(sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                out.push('$');
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The first column of the statement's rows (integers as `i64`, texts, blobs as bytes —
    /// `T` says which).
    pub async fn column<T>(&self, sql: &str, params: &[Param<'_>]) -> Vec<T>
    where
        T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>,
    {
        match self {
            StoredDb::Sqlite(db) => {
                let params: Vec<&dyn rusqlite::ToSql> = params
                    .iter()
                    .map(|p| match p {
                        Param::Text(t) => t as &dyn rusqlite::ToSql,
                        Param::Bytes(b) => b as &dyn rusqlite::ToSql,
                    })
                    .collect();
                let mut statement = db.prepare(sql).expect("the statement");
                statement
                    .query_map(params.as_slice(), |r| r.get::<_, T>(0))
                    .expect("its rows")
                    .collect::<Result<_, _>>()
                    .expect("its rows")
            }
            StoredDb::Postgres(client) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| match p {
                        Param::Text(t) => t as &(dyn tokio_postgres::types::ToSql + Sync),
                        Param::Bytes(b) => b as &(dyn tokio_postgres::types::ToSql + Sync),
                    })
                    .collect();
                client
                    .query(&StoredDb::postgres_sql(sql), &params)
                    .await
                    .expect("the statement")
                    .iter()
                    .map(|r| r.get::<_, T>(0))
                    .collect()
            }
        }
    }

    /// The first column of the statement's one row.
    pub async fn one<T>(&self, sql: &str, params: &[Param<'_>]) -> T
    where
        T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.column(sql, params)
            .await
            .into_iter()
            .next()
            .expect("a row")
    }

    /// Runs a statement; returns how many rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> u64 {
        match self {
            StoredDb::Sqlite(db) => {
                let params: Vec<&dyn rusqlite::ToSql> = params
                    .iter()
                    .map(|p| match p {
                        Param::Text(t) => t as &dyn rusqlite::ToSql,
                        Param::Bytes(b) => b as &dyn rusqlite::ToSql,
                    })
                    .collect();
                db.execute(sql, params.as_slice()).expect("the statement") as u64
            }
            StoredDb::Postgres(client) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| match p {
                        Param::Text(t) => t as &(dyn tokio_postgres::types::ToSql + Sync),
                        Param::Bytes(b) => b as &(dyn tokio_postgres::types::ToSql + Sync),
                    })
                    .collect();
                client
                    .execute(&StoredDb::postgres_sql(sql), &params)
                    .await
                    .expect("the statement")
            }
        }
    }

    /// Whether the database holds `needle` anywhere as plain bytes: SQLite's files as they are on
    /// disk, or a full data dump of the PostgreSQL database (`pg_dump`).
    pub fn holds_plain(dir: &Path, needle: &[u8]) -> Option<String> {
        let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        match test_database(dir) {
            Some(url) => {
                let dump = Command::new("pg_dump")
                    .args(["--data-only", "--dbname", &url])
                    .output()
                    .expect("pg_dump runs (the PostgreSQL suite needs the server's client tools)");
                assert!(
                    dump.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&dump.stderr)
                );
                // BYTEA columns are dumped as hex.
                let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                (holds(&dump.stdout) || holds(hex.as_bytes())).then(|| "the database".to_owned())
            }
            None => ["kiln.db", "kiln.db-wal"].into_iter().find_map(|file| {
                let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
                holds(&bytes).then(|| file.to_owned())
            }),
        }
    }

    /// Checks the database's own consistency: SQLite's `PRAGMA integrity_check` (PostgreSQL
    /// checks its pages itself; there, that every foreign key holds is what the schema enforces).
    pub async fn assert_sound(&self) {
        if let StoredDb::Sqlite(db) = self {
            let integrity: String = db
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .expect("an integrity check");
            assert_eq!(integrity, "ok");
        }
    }
}
