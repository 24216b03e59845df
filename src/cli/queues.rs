//! `kiln queues …` and `kiln envs …`: queue limits and pause, environment limits.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{AdminArgs, Client, ClientArgs, encode, print_json, s};

#[derive(Debug, Subcommand)]
pub(super) enum QueuesCommand {
    /// List the environment's queues: limit, running and queued runs, paused or not.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one queue. QUEUE is a queue id (`queue_…`), `task/<task id>` for a task's own queue,
    /// or a named queue's name.
    Get {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a queue: none of its runs start until it is resumed (executing ones finish).
    Pause {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused queue.
    Resume {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Override a queue's concurrency limit (0–100000, at most the environment's limit) until
    /// `kiln queues reset`.
    Limit {
        queue: String,
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drop a queue's override: its definition's limit applies again.
    Reset {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum EnvsCommand {
    /// List every environment with its concurrency limit and the runs holding a slot now.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set how many runs an environment may hold at once (`default`: the host's
    /// `--environment-concurrency`).
    Limit {
        /// Project name, e.g. `acme`.
        #[arg(long, default_value = "default")]
        project: String,
        /// Environment name, e.g. `dev`.
        #[arg(long = "env")]
        environment: String,
        /// A whole number, or `default`.
        limit: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set an environment's limits below the host's; each takes a number or `default`.
    Set {
        /// Project name, e.g. `acme`.
        #[arg(long, default_value = "default")]
        project: String,
        /// Environment name, e.g. `dev`.
        #[arg(long = "env")]
        environment: String,
        /// Runs the environment may hold at once.
        #[arg(long)]
        concurrency: Option<String>,
        /// Largest component upload, in bytes.
        #[arg(long)]
        max_component_bytes: Option<String>,
        /// Largest trigger payload, in bytes.
        #[arg(long)]
        max_payload_bytes: Option<String>,
        /// A host the environment's tasks may reach over HTTP: `scheme://host[:port]` (`*.` for
        /// subdomains, `*` for any scheme, host or port). Repeat it for each; the list given
        /// replaces the environment's.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Take every outbound host away (tasks can reach none).
        #[arg(long, conflicts_with = "allow_hosts")]
        no_outbound: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A limit as the user wrote it: a number, or `default` (the host's).
fn limit_value(text: &str) -> anyhow::Result<Value> {
    match text {
        "default" => Ok(Value::Null),
        n => Ok(Value::from(n.parse::<u64>().map_err(|_| {
            anyhow::anyhow!("the limit must be a whole number or `default`, not `{n}`")
        })?)),
    }
}

/// The path segment and `type` for a queue as the user wrote it.
fn queue_param(queue: &str) -> (String, &'static str) {
    if queue.starts_with("queue_") {
        (encode(queue), "id")
    } else if let Some(task) = queue.strip_prefix("task/") {
        (encode(task), "task")
    } else {
        (encode(queue), "custom")
    }
}

fn show_queue(q: &Value) {
    let limit = q["concurrencyLimit"]
        .as_u64()
        .map_or_else(|| "environment's".to_owned(), |l| l.to_string());
    let name = if q["type"] == "task" {
        format!("task/{}", s(&q["name"]))
    } else {
        s(&q["name"])
    };
    let paused = if q["paused"] == true { "  PAUSED" } else { "" };
    println!(
        "{name}  limit {limit}  running {}  queued {}  {}{paused}",
        q["running"],
        q["queued"],
        s(&q["id"])
    );
}

pub(super) async fn queues(cmd: QueuesCommand) -> anyhow::Result<()> {
    let (client, queue) = match &cmd {
        QueuesCommand::List { client } => {
            let c = Client::new(client)?;
            let mut page = 1;
            let mut all = Vec::new();
            loop {
                let list = c
                    .send(c.get(&format!("/api/v1/queues?page={page}&perPage=100")))
                    .await?;
                all.extend(list["data"].as_array().cloned().unwrap_or_default());
                if page >= list["pagination"]["totalPages"].as_u64().unwrap_or(0) {
                    break;
                }
                page += 1;
            }
            if client.json {
                return print_json(&Value::Array(all));
            }
            all.iter().for_each(show_queue);
            return Ok(());
        }
        QueuesCommand::Get { client, queue } => {
            let c = Client::new(client)?;
            let (param, kind) = queue_param(queue);
            let q = c
                .send(c.get(&format!("/api/v1/queues/{param}?type={kind}")))
                .await?;
            (client, q)
        }
        QueuesCommand::Pause { client, queue } | QueuesCommand::Resume { client, queue } => {
            let c = Client::new(client)?;
            let (param, kind) = queue_param(queue);
            let action = if matches!(cmd, QueuesCommand::Pause { .. }) {
                "pause"
            } else {
                "resume"
            };
            let body = json!({ "type": kind, "action": action });
            let q = c
                .send(c.post(&format!("/api/v1/queues/{param}/pause")).json(&body))
                .await?;
            (client, q)
        }
        QueuesCommand::Limit {
            client,
            queue,
            limit,
        } => {
            let c = Client::new(client)?;
            let (param, kind) = queue_param(queue);
            let body = json!({ "type": kind, "concurrencyLimit": limit });
            let path = format!("/api/v1/queues/{param}/concurrency/override");
            (client, c.send(c.post(&path).json(&body)).await?)
        }
        QueuesCommand::Reset { client, queue } => {
            let c = Client::new(client)?;
            let (param, kind) = queue_param(queue);
            let body = json!({ "type": kind });
            let path = format!("/api/v1/queues/{param}/concurrency/reset");
            (client, c.send(c.post(&path).json(&body)).await?)
        }
    };
    if client.json {
        return print_json(&queue);
    }
    show_queue(&queue);
    Ok(())
}

fn show_environment(e: &Value) {
    let bytes = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "host's".to_owned(), |n| n.to_string())
    };
    println!(
        "{}/{}  limit {}  running {}  max component {}  max payload {}  {}",
        s(&e["project"]),
        s(&e["environment"]),
        e["concurrencyLimit"],
        e["running"],
        bytes(&e["maxComponentBytes"]),
        bytes(&e["maxPayloadBytes"]),
        s(&e["id"])
    );
    let hosts: Vec<&str> = e["allowedOutboundHosts"]
        .as_array()
        .map(|h| h.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !hosts.is_empty() {
        println!("  outbound HTTP to {}", hosts.join(", "));
    }
}

pub(super) async fn envs(cmd: EnvsCommand) -> anyhow::Result<()> {
    match cmd {
        EnvsCommand::List { admin } => {
            let c = Client::admin(&admin)?;
            let list = c.send(c.get("/api/v1/admin/environments")).await?;
            if admin.json {
                return print_json(&list);
            }
            list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .for_each(show_environment);
        }
        EnvsCommand::Limit {
            project,
            environment,
            limit,
            admin,
        } => {
            let c = Client::admin(&admin)?;
            let path = format!(
                "/api/v1/admin/environments/{}/{}",
                encode(&project),
                encode(&environment)
            );
            let body = json!({ "concurrencyLimit": limit_value(&limit)? });
            let e = c.send(c.put(&path).json(&body)).await?;
            if admin.json {
                return print_json(&e);
            }
            show_environment(&e);
        }
        EnvsCommand::Set {
            project,
            environment,
            concurrency,
            max_component_bytes,
            max_payload_bytes,
            allow_hosts,
            no_outbound,
            admin,
        } => {
            let mut body = serde_json::Map::new();
            if !allow_hosts.is_empty() {
                body.insert("allowedOutboundHosts".into(), Value::from(allow_hosts));
            } else if no_outbound {
                body.insert("allowedOutboundHosts".into(), Value::Null);
            }
            for (field, value) in [
                ("concurrencyLimit", concurrency),
                ("maxComponentBytes", max_component_bytes),
                ("maxPayloadBytes", max_payload_bytes),
            ] {
                if let Some(v) = value {
                    body.insert(field.to_owned(), limit_value(&v)?);
                }
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to set: give --concurrency, --max-component-bytes, --max-payload-bytes, --allow-host or --no-outbound"
                );
            }
            let c = Client::admin(&admin)?;
            let path = format!(
                "/api/v1/admin/environments/{}/{}",
                encode(&project),
                encode(&environment)
            );
            let e = c.send(c.put(&path).json(&body)).await?;
            if admin.json {
                return print_json(&e);
            }
            show_environment(&e);
        }
    }
    Ok(())
}
