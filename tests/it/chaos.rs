//! Chaos: `kiln serve` runs a mixed workload as a child process while the test SIGKILLs it at
//! random moments and starts it again. At the end every run is in the final status its task
//! implies with the right output, no idempotent trigger made two runs, no child run exists twice,
//! attempts stay within the retry policy, and SQLite's integrity check passes. Attempts start
//! optimistically (before their start is durable), and kills land among those starts: a server
//! outside the host counts the requests `fetch` runs send it, and none may have seen more
//! requests than it has recorded attempts.
//!
//! `KILN_SOAK=1` turns it into a soak: bigger rounds, each on a fresh data dir, until
//! `KILN_SOAK_MINUTES` (default 10) have passed. `KILN_CHAOS_SEED` replays a seed the test printed.
//!
//! The workload, its driver's client and the checks ([`Round`], in `chaos/checks.rs`) serve the
//! three-host round of `hosts::chaos` too.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::restart::ServeProcess;

mod checks;

/// Host flags: waits longer than 50 ms checkpoint, so most waits do.
pub(crate) const SERVE: &[&str] = &["--wait-threshold", "50ms", "--concurrency", "8"];

/// What a run must end as.
#[derive(Debug, Clone)]
enum Expect {
    /// COMPLETED with exactly this output.
    Output(Value),
    /// `flaky`: COMPLETED on attempt 2 or 3 (a kill may cost it one attempt), output naming it;
    /// FAILED only when two kills cut off both of its retries.
    Flaky,
    /// `fail`: FAILED after its two attempts.
    Failed,
    /// `wait`: COMPLETED after two checkpointed waits of 300 ms.
    Waited,
    /// `approve`: COMPLETED with the data the driver completed its token with.
    Approved,
    /// `parent`: COMPLETED with its two children's outputs, in order.
    Tree(u32),
    /// A run of a paused queue whose TTL passed.
    Expired,
    /// `fetch` of the effect server's `/effect/{key}`: COMPLETED with its answer, and the server
    /// saw no more requests than the run has recorded attempts (an attempt whose start was not
    /// yet durable when the host died had no effect outside the sandbox).
    Effect,
}

/// One trigger of the workload. Every trigger carries an idempotency key, so the driver can send
/// it again when a kill cut the request off: the answer must name the same run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    key: String,
    task: &'static str,
    payload: Value,
    options: Value,
    expect: Expect,
}

fn job(key: String, task: &'static str, payload: Value, options: Value, expect: Expect) -> Job {
    Job {
        key,
        task,
        payload,
        options,
        expect,
    }
}

/// The workload at `scale` (1 in CI): `(before the first kill, exposed to kills, triggered twice)`.
/// Runs whose key is released when they fail or expire are triggered before any kill, so a
/// trigger sent again after a kill cannot legitimately make a second run of them.
fn workload(scale: u32, effects: &str) -> (Vec<Job>, Vec<Job>, Vec<Job>) {
    let none = || json!({});
    let mut safe = Vec::new();
    for i in 0..60 * scale {
        safe.push(job(
            format!("fail-{i}"),
            "fail",
            json!(null),
            none(),
            Expect::Failed,
        ));
    }
    for i in 0..40 * scale {
        safe.push(job(
            format!("ttl-{i}"),
            "single",
            json!({ "ms": 1 }),
            json!({ "ttl": "1s" }),
            Expect::Expired,
        ));
    }
    let mut exposed = Vec::new();
    for i in 0..1500 * scale {
        let name = format!("h{i}");
        exposed.push(job(
            format!("hello-{i}"),
            "hello",
            json!({ "name": name }),
            none(),
            Expect::Output(json!({ "message": format!("Hello, {name}!") })),
        ));
    }
    for i in 0..100 * scale {
        exposed.push(job(
            format!("flaky-{i}"),
            "flaky",
            json!(null),
            none(),
            Expect::Flaky,
        ));
    }
    for i in 0..150 * scale {
        exposed.push(job(
            format!("wait-{i}"),
            "wait",
            json!({ "ms": 300, "times": 2 }),
            none(),
            Expect::Waited,
        ));
    }
    for i in 0..80 * scale {
        exposed.push(job(
            format!("approve-{i}"),
            "approve",
            json!({}),
            none(),
            Expect::Approved,
        ));
    }
    for i in 0..60 * scale {
        exposed.push(job(
            format!("parent-{i}"),
            "parent",
            json!({ "items": [["hello", { "name": format!("c{i}") }], ["echo", { "child": i }]], "wait": true }),
            none(),
            Expect::Tree(i),
        ));
    }
    for i in 0..80 * scale {
        let name = format!("d{i}");
        exposed.push(job(
            format!("delayed-{i}"),
            "hello",
            json!({ "name": name }),
            json!({ "delay": "2s" }),
            Expect::Output(json!({ "message": format!("Hello, {name}!") })),
        ));
    }
    for i in 0..150 * scale {
        let key = format!("effect-{i}");
        exposed.push(job(
            key.clone(),
            "fetch",
            json!({ "urls": [format!("{effects}/effect/{key}")] }),
            none(),
            Expect::Effect,
        ));
    }
    let mut twice = Vec::new();
    for i in 0..100 * scale {
        twice.push(job(
            format!("dup-{i}"),
            "echo",
            json!({ "dup": i }),
            none(),
            Expect::Output(json!({ "dup": i })),
        ));
    }
    (safe, exposed, twice)
}

/// The driver's view of a host that may be killed under it.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    pub(crate) fn of(host: &ServeProcess) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            url: host.url.clone(),
            key: host.key.clone(),
        }
    }

    /// `None` when the host did not answer (killed); a non-2xx answer fails the test.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let body: Value = resp.json().await.ok()?;
        assert!(status.is_success(), "{path}: {status} {body}");
        Some(body)
    }

    /// Triggers `job`; `None` if the host went away first.
    async fn trigger(&self, job: &Job) -> Option<String> {
        let mut options = job.options.clone();
        options["idempotencyKey"] = json!(job.key);
        let body = json!({ "payload": job.payload, "options": options });
        let path = format!("/api/v1/tasks/{}/trigger", job.task);
        let answer = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        Some(answer["id"].as_str().expect("a run id").to_owned())
    }

    /// Completes every waiting token with `{"token": id}`; stops quietly if the host goes away.
    async fn complete_tokens(&self) {
        let list = "/api/v1/waitpoints/tokens?filter[status]=WAITING&page[size]=100";
        let Some(page) = self.call(reqwest::Method::GET, list, None).await else {
            return;
        };
        for token in page["data"].as_array().into_iter().flatten() {
            let id = token["id"].as_str().unwrap();
            let path = format!("/api/v1/waitpoints/tokens/{id}/complete");
            let data = json!({ "data": { "token": id } });
            if self
                .call(reqwest::Method::POST, &path, Some(&data))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Every run's id and status, newest first.
    async fn all_runs(&self) -> Vec<(String, String)> {
        let mut runs = Vec::new();
        let mut after = String::new();
        loop {
            let path = format!("/api/v1/runs?page[size]=100{after}");
            let page = self
                .call(reqwest::Method::GET, &path, None)
                .await
                .expect("the host answers");
            for r in page["data"].as_array().unwrap() {
                runs.push((
                    r["id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                ));
            }
            match page["pagination"]["next"].as_str() {
                Some(next) => after = format!("&page[after]={next}"),
                None => return runs,
            }
        }
    }
}

/// Run ids by idempotency key, checked on every answer: a key must always name the same run.
#[derive(Default)]
pub(crate) struct Ledger {
    ids: Mutex<HashMap<String, String>>,
}

impl Ledger {
    fn record(&self, key: &str, id: String) {
        let mut ids = self.ids.lock().unwrap();
        if let Some(first) = ids.get(key) {
            assert_eq!(first, &id, "idempotency key {key} made two runs");
        } else {
            ids.insert(key.to_owned(), id);
        }
    }

    fn id(&self, key: &str) -> Option<String> {
        self.ids.lock().unwrap().get(key).cloned()
    }
}

/// Triggers `jobs` from 8 concurrent senders, spread over `clients` (one host's or several); a
/// trigger a host did not answer goes to the next client of its sender. Returns those no client
/// answered.
pub(crate) async fn trigger_all(
    clients: &[Client],
    ledger: &Arc<Ledger>,
    jobs: Vec<Job>,
) -> Vec<Job> {
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let unanswered = Arc::new(Mutex::new(Vec::new()));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8 {
        let (clients, ledger) = (clients.to_vec(), ledger.clone());
        let (queue, unanswered) = (queue.clone(), unanswered.clone());
        senders.spawn(async move {
            let mut at = sender;
            loop {
                let Some(job) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let mut tries = 0;
                loop {
                    match clients[at % clients.len()].trigger(&job).await {
                        Some(id) => ledger.record(&job.key, id),
                        None if tries + 1 < clients.len() => {
                            (at, tries) = (at + 1, tries + 1);
                            continue;
                        }
                        None => unanswered.lock().unwrap().push(job),
                    }
                    break;
                }
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.expect("a sender panicked");
    }
    Arc::try_unwrap(unanswered)
        .expect("the senders are done")
        .into_inner()
        .unwrap()
}

/// Completes waiting tokens every 100 ms through `clients` in turn, until aborted.
pub(crate) fn complete_tokens_until_aborted(clients: Vec<Client>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for turn in 0.. {
            clients[turn % clients.len()].complete_tokens().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A server outside the host that counts the requests tasks send it, by path: the effects
/// that leave the sandbox. It outlives every kill of the host.
async fn effect_server() -> (String, Arc<Mutex<HashMap<String, u64>>>) {
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let app = axum::Router::new()
        .route(
            "/effect/{key}",
            axum::routing::get(
                |axum::extract::State(hits): axum::extract::State<
                    Arc<Mutex<HashMap<String, u64>>>,
                >,
                 axum::extract::Path(key): axum::extract::Path<String>| async move {
                    *hits.lock().unwrap().entry(key).or_insert(0) += 1;
                    "ok"
                },
            ),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// Counts for the last line.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    runs: usize,
    kills: usize,
    pub(crate) resent: usize,
    resumed_from_checkpoint: i64,
    retried: u64,
    stalled: usize,
    effects: u64,
}

/// Runs `round(seed, scale, kills)` once, or (`KILN_SOAK=1`) in bigger rounds until
/// `KILN_SOAK_MINUTES` (default 10) have passed, printing each round's counts after `label`.
pub(crate) async fn rounds<F, R>(label: &str, mut round: F)
where
    F: FnMut(u64, u32, usize) -> R,
    R: std::future::Future<Output = Counts>,
{
    let seed = std::env::var("KILN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    let soak = std::env::var_os("KILN_SOAK").is_some_and(|v| v != "0");
    let minutes: u64 = std::env::var("KILN_SOAK_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let mut number = 0u64;
    loop {
        let round_seed = seed.wrapping_add(number);
        let (scale, kills) = if soak { (4, 40) } else { (1, 12) };
        // Said first, so a round that fails can be replayed (`KILN_CHAOS_SEED`).
        eprintln!("{label}: a round with seed {round_seed}");
        let counts = round(round_seed, scale, kills).await;
        println!(
            "{label} (seed {round_seed}): {} runs, {} kills, {} triggers resent, {} runs resumed from a checkpoint, {} retries ({} of attempts a kill cut off), {} outbound requests",
            counts.runs,
            counts.kills,
            counts.resent,
            counts.resumed_from_checkpoint,
            counts.retried,
            counts.stalled,
            counts.effects
        );
        number += 1;
        if !soak || Instant::now() >= until {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_host_at_random_loses_nothing_and_repeats_nothing() {
    rounds("chaos", |seed, scale, kills| async move {
        let dir = tempfile::tempdir().unwrap();
        chaos_round(dir.path(), seed, scale, kills).await
    })
    .await;
}

/// One round's workload, what each of its runs must end as, and the run ids the hosts answered.
pub(crate) struct Round {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) counts: Counts,
    expect: HashMap<String, Expect>,
    safe: Vec<Job>,
    /// Shuffled, with the duplicates among them.
    exposed: Vec<Job>,
    twice: Vec<Job>,
    effects: String,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl Round {
    /// The workload at `scale`, shuffled by `rng`, and the effect server its `fetch` runs call.
    pub(crate) async fn new(rng: &mut StdRng, scale: u32, kills: usize) -> Round {
        let (effects, hits) = effect_server().await;
        let (safe, mut exposed, twice) = workload(scale, &effects);
        exposed.extend(twice.iter().cloned());
        exposed.shuffle(rng);
        let expect = safe
            .iter()
            .chain(&exposed)
            .map(|j| (j.key.clone(), j.expect.clone()))
            .collect();
        Round {
            ledger: Arc::new(Ledger::default()),
            counts: Counts {
                kills,
                ..Counts::default()
            },
            expect,
            safe,
            exposed,
            twice,
            effects,
            hits,
        }
    }

    /// Before any kill: allows the effect server, pauses the queue the TTL runs wait in, and
    /// triggers the runs whose keys a failure or expiry releases. Returns the rest of the
    /// workload in `chunks` parts, one per life of a host.
    pub(crate) async fn prepare(
        &mut self,
        host: &ServeProcess,
        admin: &str,
        chunks: usize,
    ) -> VecDeque<Vec<Job>> {
        host.call_as(
            admin,
            reqwest::Method::PUT,
            "/api/v1/admin/environments/default/dev",
            Some(json!({ "allowedOutboundHosts": [self.effects] })),
        )
        .await;
        let client = Client::of(host);
        client
            .call(
                reqwest::Method::POST,
                "/api/v1/queues/single/pause",
                Some(&json!({ "type": "task", "action": "pause" })),
            )
            .await
            .expect("pause");
        let safe = std::mem::take(&mut self.safe);
        let left = trigger_all(&[client], &self.ledger, safe).await;
        assert!(left.is_empty(), "the host is up: every trigger is answered");
        let chunk = self.exposed.len().div_ceil(chunks);
        self.exposed.chunks(chunk).map(<[Job]>::to_vec).collect()
    }
}

async fn chaos_round(dir: &Path, seed: u64, scale: u32, kills: usize) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut round = Round::new(&mut rng, scale, kills).await;
    let host = ServeProcess::start(dir, SERVE);
    let admin = std::fs::read_to_string(dir.join(kiln::host::ADMIN_KEY_FILE)).expect("admin.key");
    let mut chunks = round.prepare(&host, admin.trim(), kills).await;

    // The rest goes out in one chunk per life of the host, each life ended by SIGKILL at a
    // random moment: while triggers are in flight, runs execute, waits checkpoint and resume.
    let mut unanswered: Vec<Job> = Vec::new();
    let mut host = Some(host);
    for life in 0..kills {
        let live = match host.take() {
            Some(h) => h,
            None => ServeProcess::start(dir, SERVE),
        };
        let client = Client::of(&live);
        let mut jobs = std::mem::take(&mut unanswered);
        round.counts.resent += jobs.len();
        jobs.extend(chunks.pop_front().unwrap_or_default());
        let life = life_span(&mut rng, life);
        let sending = tokio::spawn({
            let (client, ledger) = (client.clone(), round.ledger.clone());
            async move { trigger_all(&[client], &ledger, jobs).await }
        });
        let tokens = complete_tokens_until_aborted(vec![client]);
        tokio::time::sleep(life).await;
        live.kill();
        tokens.abort();
        unanswered = sending.await.expect("the senders finish");
    }

    // The last life: send what is left, the duplicates again, and let everything finish.
    let host = ServeProcess::start(dir, SERVE);
    round.finish(&[Client::of(&host)], unanswered).await;
    host.kill();
    round.check_database(dir).await
}

/// How long the `life`-th life of a host lasts: every third is short enough to end while the
/// chunk's triggers are in flight.
pub(crate) fn life_span(rng: &mut StdRng, life: usize) -> Duration {
    Duration::from_millis(if life.is_multiple_of(3) {
        rng.random_range(10..150)
    } else {
        rng.random_range(150..1200)
    })
}
