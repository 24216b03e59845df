//! `kiln tokens …`: make, list, show and complete wait tokens.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ClientArgs, encode, print_json, s};

#[derive(Debug, Subcommand)]
pub(super) enum TokensCommand {
    /// Make a wait token; prints its id and callback URL.
    Create {
        /// Time out after this long (e.g. `1h`) or at this ISO 8601 date.
        #[arg(long)]
        timeout: Option<String>,
        /// Return the live token with this key instead of making another.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// How long the key stays live (default 30d).
        #[arg(long)]
        idempotency_key_ttl: Option<String>,
        /// A tag (repeatable, at most 10).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens, newest first.
    List {
        /// Only tokens in these statuses: waiting, completed, timed_out (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only tokens with this tag (repeatable: any of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a token, with its output once it is done.
    Get {
        /// The token's id (`waitpoint_…`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Complete a token with JSON data; the runs waiting for it resume. A token completes once.
    Complete {
        /// The token's id (`waitpoint_…`).
        id: String,
        /// JSON data (default `null`), e.g. '{"approved":true}'.
        data: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn show(t: &Value) {
    let done = t["completedAt"]
        .as_str()
        .map(|at| format!("  done {at}"))
        .unwrap_or_default();
    let timeout = t["timeoutAt"]
        .as_str()
        .map(|at| format!("  times out {at}"))
        .unwrap_or_default();
    println!(
        "{}  {}  created {}{timeout}{done}",
        s(&t["id"]),
        s(&t["status"]),
        s(&t["createdAt"])
    );
}

pub(super) async fn tokens(cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create {
            timeout,
            idempotency_key,
            idempotency_key_ttl,
            tags,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({});
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            if let Some(k) = idempotency_key {
                body["idempotencyKey"] = json!(k);
            }
            if let Some(t) = idempotency_key_ttl {
                body["idempotencyKeyTTL"] = json!(t);
            }
            if !tags.is_empty() {
                body["tags"] = json!(tags);
            }
            let t = c
                .send(c.post("/api/v1/waitpoints/tokens").json(&body))
                .await?;
            if client.json {
                return print_json(&t);
            }
            println!("{}", s(&t["id"]));
            if t["isCached"] == true {
                eprintln!("an earlier token has this idempotency key; no new token was made");
            }
            eprintln!("complete it by POSTing JSON to {}", s(&t["url"]));
        }
        TokensCommand::List {
            status,
            tags,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query = vec![("page[size]".to_owned(), "100".to_owned())];
            if !status.is_empty() {
                query.push(("filter[status]".into(), status.join(",").to_uppercase()));
            }
            if !tags.is_empty() {
                query.push(("filter[tags]".into(), tags.join(",")));
            }
            let list = c
                .send(c.get("/api/v1/waitpoints/tokens").query(&query))
                .await?;
            if client.json {
                return print_json(&list);
            }
            let data = list["data"].as_array().cloned().unwrap_or_default();
            if data.is_empty() {
                println!("no tokens");
            }
            data.iter().for_each(show);
        }
        TokensCommand::Get { id, client } => {
            let c = Client::new(&client)?;
            let t = c
                .send(c.get(&format!("/api/v1/waitpoints/tokens/{}", encode(&id))))
                .await?;
            if client.json {
                return print_json(&t);
            }
            show(&t);
            if let Some(output) = t["output"].as_str() {
                println!("output: {output}");
            }
        }
        TokensCommand::Complete { id, data, client } => {
            let data: Value = match data {
                None => Value::Null,
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "the data is not valid JSON ({e}); quote it for the shell, e.g. '{{\"approved\":true}}'"
                    )
                })?,
            };
            let c = Client::new(&client)?;
            let path = format!("/api/v1/waitpoints/tokens/{}/complete", encode(&id));
            let r = c.send(c.post(&path).json(&json!({ "data": data }))).await?;
            if client.json {
                return print_json(&r);
            }
            println!("completed {id}");
        }
    }
    Ok(())
}
