//! `kiln runs …`: list runs, show one, cancel, replay, reschedule and tag it, print its logs, and
//! watch it change over the realtime stream.

use clap::Subcommand;
use serde_json::Value;

use super::client::{Client, ClientArgs, encode, print_json, s};

#[derive(Debug, Subcommand)]
pub(super) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status (repeatable), e.g. FAILED.
        #[arg(long)]
        status: Vec<String>,
        /// Only runs of this task (repeatable).
        #[arg(long)]
        task: Vec<String>,
        /// Only runs with this tag (repeatable: any of them).
        #[arg(long)]
        tag: Vec<String>,
        /// How many runs to show (1–100).
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Continue after this run id (the `next` cursor of a previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a run: status, attempts, output or error.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a run that has not finished.
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a run's log lines.
    Logs {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a run as it changes (status, attempts, output) until it finishes.
    Watch {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Trigger a new run with the same task, payload and tags, on the latest version.
    Replay {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change when a DELAYED run starts.
    Reschedule {
        id: String,
        /// A duration from now (`30s`, `1h`) or an ISO 8601 date.
        #[arg(long)]
        delay: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add tags to a run.
    Tag {
        id: String,
        /// Tags to add (at most 10 on a run).
        #[arg(required = true)]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn runs(cmd: RunsCommand) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::List {
            status,
            task,
            tag,
            limit,
            after,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query = vec![("page[size]".to_owned(), limit.to_string())];
            if !status.is_empty() {
                query.push(("filter[status]".into(), status.join(",").to_uppercase()));
            }
            if !task.is_empty() {
                query.push(("filter[taskIdentifier]".into(), task.join(",")));
            }
            if !tag.is_empty() {
                query.push(("filter[tag]".into(), tag.join(",")));
            }
            if let Some(after) = after {
                query.push(("page[after]".into(), after));
            }
            let page = c.send(c.get("/api/v1/runs").query(&query)).await?;
            if client.json {
                return print_json(&page);
            }
            let runs = page["data"].as_array().cloned().unwrap_or_default();
            if runs.is_empty() {
                println!("no runs");
            }
            for r in &runs {
                println!(
                    "{}  {:<15} {:<20} {}",
                    s(&r["id"]),
                    s(&r["status"]),
                    s(&r["taskIdentifier"]),
                    s(&r["createdAt"])
                );
            }
            if let Some(next) = page["pagination"]["next"].as_str() {
                println!("more: kiln runs list --after {next}");
            }
            Ok(())
        }
        RunsCommand::Get { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.get(&format!("/api/v3/runs/{}", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!(
                "{}  {}  {}",
                s(&r["id"]),
                s(&r["taskIdentifier"]),
                s(&r["status"])
            );
            println!(
                "  version   {}",
                r["version"].as_str().unwrap_or("(not started)")
            );
            println!("  created   {}", s(&r["createdAt"]));
            if let Some(f) = r["finishedAt"].as_str() {
                println!("  finished  {f}");
            }
            if let Some(d) = r["delayedUntil"].as_str() {
                println!("  delayed   until {d}");
            }
            if let Some(t) = r["ttl"].as_str() {
                println!("  ttl       {t}");
            }
            if let Some(tags) = r["tags"].as_array().filter(|t| !t.is_empty()) {
                let tags: Vec<String> = tags.iter().map(s).collect();
                println!("  tags      {}", tags.join(", "));
            }
            if let Some(k) = r["idempotencyKey"].as_str() {
                println!("  idem. key {k}");
            }
            if let Some(m) = r.get("metadata") {
                println!("  metadata  {m}");
            }
            println!("  attempts  {}", r["attemptCount"]);
            println!(
                "  usage     {} fuel, {} ms",
                r["usage"]["fuel"], r["usage"]["computeMs"]
            );
            println!("  payload   {}", r["payload"]);
            if let Some(output) = r.get("output") {
                println!("  output    {output}");
            }
            if let Some(e) = r.get("error") {
                println!("  error     {}: {}", s(&e["name"]), s(&e["message"]));
            }
            for a in r["attempts"].as_array().into_iter().flatten() {
                let err = a
                    .get("error")
                    .map(|e| format!(" — {}", s(&e["message"])))
                    .unwrap_or_default();
                println!("  attempt {} {}{err}", a["number"], s(&a["status"]));
            }
            // The first log lines, so one command shows what happened; `runs logs` has them all.
            const SHOWN_LOG_LINES: usize = 20;
            let path = format!("/api/v1/runs/{}/logs", encode(&id));
            let logs = c.send(c.get(&path)).await?;
            let lines = logs["data"].as_array().cloned().unwrap_or_default();
            if !lines.is_empty() {
                println!("  logs");
            }
            for l in lines.iter().take(SHOWN_LOG_LINES) {
                println!(
                    "    #{} {:<5} {}",
                    l["attempt"],
                    s(&l["level"]),
                    s(&l["message"])
                );
            }
            if lines.len() > SHOWN_LOG_LINES {
                println!("    … more: kiln runs logs {id}");
            }
            Ok(())
        }
        RunsCommand::Cancel { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.post(&format!("/api/v2/runs/{}/cancel", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            match r["message"].as_str() {
                Some(m) => println!("{m}"),
                None => println!("canceled {}", s(&r["id"])),
            }
            Ok(())
        }
        RunsCommand::Replay { id, client } => {
            let c = Client::new(&client)?;
            let r = c
                .send(c.post(&format!("/api/v1/runs/{}/replay", encode(&id))))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!("{}", s(&r["id"]));
            Ok(())
        }
        RunsCommand::Reschedule { id, delay, client } => {
            let c = Client::new(&client)?;
            let path = format!("/api/v1/runs/{}/reschedule", encode(&id));
            let r = c
                .send(c.post(&path).json(&serde_json::json!({ "delay": delay })))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!("{} now starts at {}", s(&r["id"]), s(&r["delayedUntil"]));
            Ok(())
        }
        RunsCommand::Tag { id, tags, client } => {
            let c = Client::new(&client)?;
            let path = format!("/api/v1/runs/{}/tags", encode(&id));
            let r = c
                .send(c.post(&path).json(&serde_json::json!({ "tags": tags })))
                .await?;
            if client.json {
                return print_json(&r);
            }
            let all: Vec<String> = r["tags"].as_array().into_iter().flatten().map(s).collect();
            println!("tags: {}", all.join(", "));
            Ok(())
        }
        RunsCommand::Watch { id, client } => {
            let c = Client::new(&client)?;
            let path = format!("/realtime/v1/runs/{}", encode(&id));
            // kiln's own stream; the Trigger.dev SDK speaks Electric's protocol on this path.
            let response = c
                .open(c.get(&path).header("accept", "text/event-stream"))
                .await?;
            let mut last = String::new();
            let mut events = Box::pin(sse_data(response));
            while let Some(data) = futures_util::StreamExt::next(&mut events).await {
                let run: Value = serde_json::from_str(&data?)?;
                if client.json {
                    println!("{run}");
                    continue;
                }
                let line = format!(
                    "{}  attempt {}",
                    s(&run["status"]),
                    run["attemptCount"].as_u64().unwrap_or(0)
                );
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if run["isCompleted"] == true {
                    if let Some(output) = run.get("output") {
                        println!("output: {output}");
                    }
                    if let Some(error) = run.get("error") {
                        println!("error: {}", s(&error["message"]));
                    }
                }
            }
            Ok(())
        }
        RunsCommand::Logs { id, client } => {
            let c = Client::new(&client)?;
            let mut after = 0i64;
            let mut all = Vec::new();
            loop {
                let page = c
                    .send(
                        c.get(&format!("/api/v1/runs/{}/logs", encode(&id)))
                            .query(&[("after", after)]),
                    )
                    .await?;
                let lines = page["data"].as_array().cloned().unwrap_or_default();
                if !client.json {
                    for l in &lines {
                        let attrs = l
                            .get("attributes")
                            .map(|a| format!(" {a}"))
                            .unwrap_or_default();
                        println!(
                            "{} #{} {:<5} {}{attrs}",
                            s(&l["at"]),
                            l["attempt"],
                            s(&l["level"]),
                            s(&l["message"])
                        );
                    }
                }
                all.extend(lines);
                match page["next"].as_i64() {
                    Some(next) => after = next,
                    None => break,
                }
            }
            if client.json {
                return print_json(&Value::Array(all));
            }
            Ok(())
        }
    }
}

/// The `data:` payloads of a Server-Sent Events response, one per event.
fn sse_data(
    response: reqwest::Response,
) -> impl futures_util::Stream<Item = anyhow::Result<String>> {
    futures_util::stream::unfold(
        (response.bytes_stream(), String::new()),
        |(mut body, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    return Some((Ok(data), (body, buffer)));
                }
                match futures_util::StreamExt::next(&mut body).await {
                    Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Some(Err(e)) => {
                        return Some((
                            Err(anyhow::Error::new(e).context("the stream broke")),
                            (body, buffer),
                        ));
                    }
                    None => return None,
                }
            }
        },
    )
}
