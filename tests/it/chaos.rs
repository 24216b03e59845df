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

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::restart::ServeProcess;

/// Host flags: waits longer than 50 ms checkpoint, so most waits do.
const SERVE: &[&str] = &["--wait-threshold", "50ms", "--concurrency", "8"];

/// What a run must end as.
#[derive(Debug, Clone)]
enum Expect {
    /// COMPLETED with exactly this output.
    Output(Value),
    /// `flaky`: COMPLETED on attempt 2 or 3 (a kill may cost it one attempt), output naming it.
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
struct Job {
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
struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    fn of(host: &ServeProcess) -> Client {
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
struct Ledger {
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

/// Triggers `jobs` from 8 concurrent senders; returns those the host did not answer.
async fn trigger_all(client: &Client, ledger: &Arc<Ledger>, jobs: Vec<Job>) -> Vec<Job> {
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let unanswered = Arc::new(Mutex::new(Vec::new()));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, ledger) = (client.clone(), ledger.clone());
        let (queue, unanswered) = (queue.clone(), unanswered.clone());
        senders.spawn(async move {
            loop {
                let Some(job) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                match client.trigger(&job).await {
                    Some(id) => ledger.record(&job.key, id),
                    None => unanswered.lock().unwrap().push(job),
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
struct Counts {
    runs: usize,
    kills: usize,
    resent: usize,
    resumed_from_checkpoint: i64,
    retried: u64,
    stalled: usize,
    effects: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_host_at_random_loses_nothing_and_repeats_nothing() {
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
    let mut round = 0u64;
    loop {
        let round_seed = seed.wrapping_add(round);
        let dir = tempfile::tempdir().unwrap();
        let (scale, kills) = if soak { (4, 40) } else { (1, 12) };
        let counts = chaos_round(dir.path(), round_seed, scale, kills).await;
        println!(
            "chaos (seed {round_seed}): {} runs, {} kills, {} triggers resent, {} runs resumed from a checkpoint, {} retries ({} of attempts a kill cut off), {} outbound requests",
            counts.runs,
            counts.kills,
            counts.resent,
            counts.resumed_from_checkpoint,
            counts.retried,
            counts.stalled,
            counts.effects
        );
        round += 1;
        if !soak || Instant::now() >= until {
            break;
        }
    }
}

async fn chaos_round(dir: &Path, seed: u64, scale: u32, kills: usize) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let (effects, hits) = effect_server().await;
    let (safe, mut exposed, twice) = workload(scale, &effects);
    exposed.extend(twice.iter().cloned());
    exposed.shuffle(&mut rng);
    let expect: HashMap<String, Expect> = safe
        .iter()
        .chain(&exposed)
        .map(|j| (j.key.clone(), j.expect.clone()))
        .collect();
    let ledger = Arc::new(Ledger::default());
    let mut counts = Counts {
        kills,
        ..Counts::default()
    };

    // Before any kill: pause the queue the TTL runs wait in, and trigger the runs whose keys a
    // failure or expiry releases.
    let host = ServeProcess::start(dir, SERVE);
    let admin = std::fs::read_to_string(dir.join(kiln::host::ADMIN_KEY_FILE)).expect("admin.key");
    host.call_as(
        admin.trim(),
        reqwest::Method::PUT,
        "/api/v1/admin/environments/default/dev",
        Some(json!({ "allowedOutboundHosts": [effects] })),
    )
    .await;
    let client = Client::of(&host);
    client
        .call(
            reqwest::Method::POST,
            "/api/v1/queues/single/pause",
            Some(&json!({ "type": "task", "action": "pause" })),
        )
        .await
        .expect("pause");
    let left = trigger_all(&client, &ledger, safe).await;
    assert!(left.is_empty(), "the host is up: every trigger is answered");

    // The rest goes out in one chunk per life of the host, each life ended by SIGKILL at a
    // random moment: while triggers are in flight, runs execute, waits checkpoint and resume.
    let chunk = exposed.len().div_ceil(kills);
    let mut chunks: VecDeque<Vec<Job>> = exposed.chunks(chunk).map(<[Job]>::to_vec).collect();
    let mut unanswered: Vec<Job> = Vec::new();
    let mut host = Some(host);
    for life in 0..kills {
        let live = match host.take() {
            Some(h) => h,
            None => ServeProcess::start(dir, SERVE),
        };
        let client = Client::of(&live);
        let mut jobs = std::mem::take(&mut unanswered);
        counts.resent += jobs.len();
        jobs.extend(chunks.pop_front().unwrap_or_default());
        // Every third life is short enough to end while the chunk's triggers are in flight.
        let life = Duration::from_millis(if life % 3 == 0 {
            rng.random_range(10..150)
        } else {
            rng.random_range(150..1200)
        });
        let sending = tokio::spawn({
            let (client, ledger) = (client.clone(), ledger.clone());
            async move { trigger_all(&client, &ledger, jobs).await }
        });
        let tokens = tokio::spawn({
            let client = client.clone();
            async move {
                loop {
                    client.complete_tokens().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        tokio::time::sleep(life).await;
        live.kill();
        tokens.abort();
        unanswered = sending.await.expect("the senders finish");
    }

    // The last life: send what is left, the duplicates again, and let everything finish.
    let host = ServeProcess::start(dir, SERVE);
    let client = Client::of(&host);
    counts.resent += unanswered.len();
    let left = trigger_all(&client, &ledger, unanswered).await;
    assert!(left.is_empty(), "the host is up: every trigger is answered");
    let left = trigger_all(&client, &ledger, twice).await;
    assert!(left.is_empty());

    let final_status = |s: &str| {
        matches!(
            s,
            "COMPLETED"
                | "FAILED"
                | "CRASHED"
                | "SYSTEM_FAILURE"
                | "EXPIRED"
                | "CANCELED"
                | "TIMED_OUT"
        )
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let runs = loop {
        client.complete_tokens().await;
        let runs = client.all_runs().await;
        let open: Vec<_> = runs.iter().filter(|(_, s)| !final_status(s)).collect();
        if open.is_empty() {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "{} runs never finished, e.g. {:?}",
            open.len(),
            &open[..open.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    counts.runs = runs.len();

    // Every triggered run ends as its task implies.
    let mut children_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut triggered = HashSet::new();
    for (key, expect) in &expect {
        let id = ledger
            .id(key)
            .unwrap_or_else(|| panic!("trigger {key} was never answered"));
        triggered.insert(id.clone());
        let run = client
            .call(reqwest::Method::GET, &format!("/api/v3/runs/{id}"), None)
            .await
            .unwrap();
        let attempts = run["attemptCount"].as_u64().unwrap();
        counts.retried += attempts.saturating_sub(1);
        counts.stalled += run["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["error"]["code"] == "TASK_RUN_STALLED_EXECUTING")
            .count();
        check(key, expect, &run, attempts);
        if let Expect::Effect = expect {
            let seen = hits.lock().unwrap().get(key).copied().unwrap_or(0);
            counts.effects += seen;
            assert!(
                (1..=attempts).contains(&seen),
                "{key}: the server saw {seen} requests from {attempts} recorded attempts: an \
                 attempt whose start was not durable had an effect: {run:#}"
            );
        }
        if let Expect::Tree(_) = expect {
            let ids = run["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect();
            children_of.insert(id, ids);
        }
    }
    // The only other runs are the trees' children, each made once.
    let mut seen_children = 0;
    for (id, _) in &runs {
        if triggered.contains(id) {
            continue;
        }
        let run = client
            .call(reqwest::Method::GET, &format!("/api/v3/runs/{id}"), None)
            .await
            .unwrap();
        let parent = run["parentRunId"]
            .as_str()
            .unwrap_or_else(|| panic!("run {id} was neither triggered nor a child: {run:#}"));
        let siblings = children_of
            .get(parent)
            .unwrap_or_else(|| panic!("child {id} of an unknown parent {parent}"));
        assert!(
            siblings.contains(id),
            "child {id} of {parent} is not among the children it waited for {siblings:?}: a child was made twice"
        );
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        seen_children += 1;
    }
    assert_eq!(
        seen_children,
        children_of.len() * 2,
        "every tree has exactly two children"
    );
    host.kill();

    // The database the kills left behind is sound.
    let db = crate::support::StoredDb::open(dir).await;
    db.assert_sound().await;
    counts.resumed_from_checkpoint = db
        .one(
            "SELECT count(*) FROM (SELECT run_id FROM waitpoints WHERE run_id IS NOT NULL \
               UNION SELECT run_id FROM waitpoint_waiters UNION SELECT parent_run_id FROM run_waiters) \
               AS waited",
            &[],
        )
        .await;
    counts
}

/// Checks that `run`, triggered as `key`, ended as `expect` says.
fn check(key: &str, expect: &Expect, run: &Value, attempts: u64) {
    let status = run["status"].as_str().unwrap();
    let output = &run["output"];
    let why = || format!("{key}: {run:#}");
    // The host default and the example tasks allow 2 or 3 attempts; a kill during an attempt
    // counts as one (at-least-once), so only the policy bounds the count.
    assert!(attempts <= 3, "{}", why());
    if !matches!(expect, Expect::Expired) {
        assert!(attempts >= 1, "{}", why());
    }
    match expect {
        Expect::Output(want) => {
            assert_eq!(status, "COMPLETED", "{}", why());
            assert_eq!(output, want, "{}", why());
        }
        Expect::Flaky => {
            assert_eq!(status, "COMPLETED", "{}", why());
            assert!(attempts >= 2, "{}", why());
            assert_eq!(output["attempt"].as_u64(), Some(attempts), "{}", why());
        }
        Expect::Failed => {
            assert_eq!(status, "FAILED", "{}", why());
            assert_eq!(attempts, 2, "{}", why());
        }
        Expect::Waited => {
            assert_eq!(status, "COMPLETED", "{}", why());
            let waited =
                output["after_ms"].as_u64().unwrap() - output["before_ms"].as_u64().unwrap();
            assert!(
                waited >= 600,
                "two 300 ms waits took {waited} ms: {}",
                why()
            );
        }
        Expect::Approved => {
            assert_eq!(status, "COMPLETED", "{}", why());
            assert_eq!(
                output["data"],
                json!({ "token": output["token"] }),
                "{}",
                why()
            );
        }
        Expect::Tree(i) => {
            assert_eq!(status, "COMPLETED", "{}", why());
            let children = output.as_array().expect("the children's results");
            assert_eq!(children.len(), 2, "{}", why());
            assert_eq!(
                children[0]["ok"],
                json!({ "message": format!("Hello, c{i}!") }),
                "{}",
                why()
            );
            assert_eq!(children[1]["ok"], json!({ "child": i }), "{}", why());
        }
        Expect::Expired => {
            assert_eq!(status, "EXPIRED", "{}", why());
            assert_eq!(attempts, 0, "{}", why());
        }
        Expect::Effect => {
            assert_eq!(status, "COMPLETED", "{}", why());
            assert_eq!(output[0]["status"], 200, "{}", why());
            assert_eq!(output[0]["body"], "ok", "{}", why());
        }
    }
}
