//! The end of a chaos round: every run in the final status and output its task implies, no key
//! or child twice, attempts within the retry policy, no effect beyond the recorded attempts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Client, Counts, Expect, Job, Round, trigger_all};

impl Round {
    /// After the last kill: sends what is left and the duplicates again through `clients` (every
    /// one's host up), lets everything finish, and checks every run. Stops no host.
    pub(crate) async fn finish(&mut self, clients: &[Client], unanswered: Vec<Job>) {
        self.counts.resent += unanswered.len();
        let left = trigger_all(clients, &self.ledger, unanswered).await;
        assert!(
            left.is_empty(),
            "the hosts are up: every trigger is answered"
        );
        let twice = std::mem::take(&mut self.twice);
        let left = trigger_all(clients, &self.ledger, twice).await;
        assert!(left.is_empty());
        let client = &clients[0];

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
        self.counts.runs = runs.len();

        // Every triggered run ends as its task implies, each read through the hosts in turn.
        let mut children_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut triggered = HashSet::new();
        for (n, (key, expect)) in self.expect.iter().enumerate() {
            let id = self
                .ledger
                .id(key)
                .unwrap_or_else(|| panic!("trigger {key} was never answered"));
            triggered.insert(id.clone());
            let run = clients[n % clients.len()]
                .call(reqwest::Method::GET, &format!("/api/v3/runs/{id}"), None)
                .await
                .unwrap();
            let attempts = run["attemptCount"].as_u64().unwrap();
            self.counts.retried += attempts.saturating_sub(1);
            self.counts.stalled += run["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["error"]["code"] == "TASK_RUN_STALLED_EXECUTING")
                .count();
            check(key, expect, &run, attempts);
            if let Expect::Effect = expect {
                let seen = self.hits.lock().unwrap().get(key).copied().unwrap_or(0);
                self.counts.effects += seen;
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
    }

    /// With the hosts stopped: the database the kills left behind is sound. The round's counts.
    pub(crate) async fn check_database(mut self, dir: &Path) -> Counts {
        let db = crate::support::StoredDb::open(dir).await;
        db.assert_sound().await;
        self.counts.resumed_from_checkpoint = db
            .one(
                "SELECT count(*) FROM (SELECT run_id FROM waitpoints WHERE run_id IS NOT NULL \
                   UNION SELECT run_id FROM waitpoint_waiters UNION SELECT parent_run_id FROM run_waiters) \
                   AS waited",
                &[],
            )
            .await;
        self.counts
    }
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
        // Each kill during an executing attempt costs that attempt (at-least-once). Two kills
        // can land on the same flaky run (its retry after a restart is among the first runs the
        // next life starts): then it fails after its purposeful failure and two cut-off
        // attempts, and nothing else.
        Expect::Flaky if status == "FAILED" => {
            let cut_off = run["attempts"]
                .as_array()
                .expect("the attempts")
                .iter()
                .filter(|a| a["error"]["code"] == "TASK_RUN_STALLED_EXECUTING")
                .count();
            assert_eq!((attempts, cut_off), (3, 2), "{}", why());
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
