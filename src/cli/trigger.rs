//! `kiln trigger`: the trigger options and the JSON payload, sent as one trigger request; prints
//! the new run's id.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::client::{Client, ClientArgs, encode, print_json, s};

/// Trigger options, as in Trigger.dev's `options` (each is checked by the host).
#[derive(Debug, Args)]
pub(super) struct TriggerArgs {
    /// Start no earlier than this: a duration (`30s`, `1h30m`) or an ISO 8601 date.
    #[arg(long)]
    delay: Option<String>,
    /// Expire the run if it has not started within this duration (`0` opts out of defaults).
    #[arg(long)]
    ttl: Option<String>,
    /// Seconds of head start in the queue.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<f64>,
    /// A repeat trigger with this key returns the existing run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// How long the idempotency key holds (default 30d).
    #[arg(long)]
    idempotency_key_ttl: Option<String>,
    /// Tag the run (repeatable, at most 10).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Attempts at most, overriding the task's retry policy.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Compute-time limit of an attempt, in seconds (at least 5).
    #[arg(long)]
    max_duration: Option<f64>,
    /// Machine preset, e.g. small-2x.
    #[arg(long)]
    machine: Option<String>,
    /// Run on this named queue.
    #[arg(long)]
    queue: Option<String>,
    /// Concurrency key (per-user queues).
    #[arg(long)]
    concurrency_key: Option<String>,
    /// Initial metadata: a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Run on this deployed version instead of the latest.
    #[arg(long)]
    lock_to_version: Option<String>,
}

impl TriggerArgs {
    /// The `options` object of the trigger request.
    fn to_json(&self) -> anyhow::Result<Value> {
        let mut o = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_owned(), v);
            }
        };
        put("delay", self.delay.clone().map(Value::from));
        put("ttl", self.ttl.clone().map(Value::from));
        put("priority", self.priority.map(Value::from));
        put(
            "idempotencyKey",
            self.idempotency_key.clone().map(Value::from),
        );
        put(
            "idempotencyKeyTTL",
            self.idempotency_key_ttl.clone().map(Value::from),
        );
        put(
            "tags",
            (!self.tags.is_empty()).then(|| Value::from(self.tags.clone())),
        );
        put("maxAttempts", self.max_attempts.map(Value::from));
        put("maxDuration", self.max_duration.map(Value::from));
        put("machine", self.machine.clone().map(Value::from));
        put(
            "queue",
            self.queue.clone().map(|q| serde_json::json!({ "name": q })),
        );
        put(
            "concurrencyKey",
            self.concurrency_key.clone().map(Value::from),
        );
        put(
            "lockToVersion",
            self.lock_to_version.clone().map(Value::from),
        );
        if let Some(m) = &self.metadata {
            let m: Value = serde_json::from_str(m).context("--metadata must be a JSON object")?;
            put("metadata", Some(m));
        }
        Ok(Value::Object(o))
    }
}

/// Triggers one run of `task`; prints its id.
pub(super) async fn trigger(
    task: String,
    payload: Option<String>,
    options: &TriggerArgs,
    client: ClientArgs,
) -> anyhow::Result<()> {
    let payload = match payload.as_deref() {
        None => Value::Null,
        Some("-") => {
            let text = std::io::read_to_string(std::io::stdin())
                .context("cannot read the payload from standard input")?;
            parse_payload(&text)?
        }
        Some(text) => parse_payload(text)?,
    };
    let c = Client::new(&client)?;
    let path = format!("/api/v1/tasks/{}/trigger", encode(&task));
    let body = serde_json::json!({ "payload": payload, "options": options.to_json()? });
    let r = c.send(c.post(&path).json(&body)).await?;
    if client.json {
        return print_json(&r);
    }
    if r["isCached"] == true {
        eprintln!("an earlier run has this idempotency key; no new run was made");
    }
    let id = s(&r["id"]);
    // A task no deployed version has makes a run that waits: say so rather than leave it silent.
    let run = c
        .send(c.get(&format!("/api/v3/runs/{}", encode(&id))))
        .await?;
    if run["status"] == "PENDING_VERSION" {
        eprintln!(
            "no deployed version has task `{task}`: the run waits as PENDING_VERSION until one does (deploy it with `kiln deploy <file.wasm>`)"
        );
    }
    println!("{id}");
    Ok(())
}

fn parse_payload(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| {
        format!("the payload is not valid JSON: {text:?} (quote it for the shell, e.g. '{{\"name\":\"Ada\"}}')")
    })
}
