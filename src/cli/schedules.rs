//! `kiln schedules`: cron schedules over the API (create, list, get, update, delete, activate,
//! deactivate, and the time zones they can use).

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ClientArgs, encode, print_json, s};

#[derive(Debug, Subcommand)]
pub(super) enum SchedulesCommand {
    /// Create a schedule that triggers a task on a cron; creating again with the same
    /// deduplication key updates that schedule instead of making a second one.
    Create {
        /// Task id, as declared by the deployed component.
        #[arg(long)]
        task: String,
        /// Five fields: minute hour day-of-month month day-of-week, e.g. "0 9 * * 1-5".
        #[arg(long)]
        cron: String,
        /// IANA time zone the cron is read in, e.g. Europe/Berlin (default UTC; daylight saving
        /// is handled).
        #[arg(long)]
        timezone: Option<String>,
        /// Your own id for the schedule (e.g. a user id); passed to each run's payload.
        #[arg(long)]
        external_id: Option<String>,
        /// Key of the schedule in this environment: creating with it again updates it.
        #[arg(long, visible_alias = "dedup-key")]
        deduplication_key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the environment's schedules, newest first.
    List {
        /// Page to show, from 1.
        #[arg(long, default_value_t = 1)]
        page: usize,
        /// Schedules per page (1–100).
        #[arg(long, default_value_t = 25)]
        per_page: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a schedule: task, cron, time zone, next run.
    Get {
        /// The schedule's id (`sched_…`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change an imperative schedule; fields not given keep their values.
    Update {
        /// The schedule's id (`sched_…`).
        id: String,
        /// Task id to trigger instead.
        #[arg(long)]
        task: Option<String>,
        /// New cron expression (5 fields).
        #[arg(long)]
        cron: Option<String>,
        /// New IANA time zone.
        #[arg(long)]
        timezone: Option<String>,
        /// New external id.
        #[arg(long)]
        external_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an imperative schedule (declarative ones go with a deploy without their cron).
    Delete {
        /// The schedule's id (`sched_…`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start firing a deactivated schedule again, from its next tick.
    Activate {
        /// The schedule's id (`sched_…`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop firing a schedule until it is activated.
    Deactivate {
        /// The schedule's id (`sched_…`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the IANA time zone names schedules can use.
    Timezones {
        /// Leave out UTC.
        #[arg(long)]
        exclude_utc: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// One line per schedule: id, type, state, task, cron and time zone, next run.
fn line(v: &Value) -> String {
    format!(
        "{}  {:<11} {:<8} {:<20} {} ({})  next {}",
        s(&v["id"]),
        s(&v["type"]),
        if v["active"] == true {
            "active"
        } else {
            "inactive"
        },
        s(&v["task"]),
        s(&v["generator"]["expression"]),
        s(&v["timezone"]),
        s(&v["nextRun"])
    )
}

fn show(v: &Value) {
    println!("{}  {}  {}", s(&v["id"]), s(&v["type"]), {
        if v["active"] == true {
            "active"
        } else {
            "inactive"
        }
    });
    println!("  task         {}", s(&v["task"]));
    println!(
        "  cron         {} ({})",
        s(&v["generator"]["expression"]),
        s(&v["timezone"])
    );
    println!("  means        {}", s(&v["generator"]["description"]));
    println!("  next run     {}", s(&v["nextRun"]));
    println!("  external id  {}", s(&v["externalId"]));
    println!("  dedup key    {}", s(&v["deduplicationKey"]));
}

fn path(id: &str) -> String {
    format!("/api/v1/schedules/{}", encode(id))
}

pub(super) async fn run(cmd: SchedulesCommand) -> anyhow::Result<()> {
    match cmd {
        SchedulesCommand::Create {
            task,
            cron,
            timezone,
            external_id,
            deduplication_key,
            client,
        } => {
            let c = Client::new(&client)?;
            let body = json!({
                "task": task,
                "cron": cron,
                "timezone": timezone,
                "externalId": external_id,
                "deduplicationKey": deduplication_key,
            });
            let v = c.send(c.post("/api/v1/schedules").json(&body)).await?;
            if client.json {
                return print_json(&v);
            }
            println!("{}", line(&v));
        }
        SchedulesCommand::List {
            page,
            per_page,
            client,
        } => {
            let c = Client::new(&client)?;
            let query = [("page", page), ("perPage", per_page)];
            let v = c.send(c.get("/api/v1/schedules").query(&query)).await?;
            if client.json {
                return print_json(&v);
            }
            let data = v["data"].as_array().cloned().unwrap_or_default();
            if data.is_empty() {
                println!("no schedules");
            }
            for schedule in &data {
                println!("{}", line(schedule));
            }
            let total = v["pagination"]["totalPages"].as_u64().unwrap_or(0);
            if (page as u64) < total {
                println!(
                    "page {page} of {total}; more: kiln schedules list --page {}",
                    page + 1
                );
            }
        }
        SchedulesCommand::Get { id, client } => {
            let c = Client::new(&client)?;
            let v = c.send(c.get(&path(&id))).await?;
            if client.json {
                return print_json(&v);
            }
            show(&v);
        }
        SchedulesCommand::Update {
            id,
            task,
            cron,
            timezone,
            external_id,
            client,
        } => {
            let c = Client::new(&client)?;
            // The API replaces every field; keep the current value of those not given.
            let current = c.send(c.get(&path(&id))).await?;
            let body = json!({
                "task": task.map_or_else(|| current["task"].clone(), Value::from),
                "cron": cron.map_or_else(|| current["generator"]["expression"].clone(), Value::from),
                "timezone": timezone.map_or_else(|| current["timezone"].clone(), Value::from),
                "externalId": external_id.map_or_else(|| current["externalId"].clone(), Value::from),
            });
            let v = c.send(c.put(&path(&id)).json(&body)).await?;
            if client.json {
                return print_json(&v);
            }
            println!("{}", line(&v));
        }
        SchedulesCommand::Delete { id, client } => {
            let c = Client::new(&client)?;
            let v = c.send(c.delete(&path(&id))).await?;
            if client.json {
                return print_json(&v);
            }
            println!("deleted {}", s(&v["id"]));
        }
        SchedulesCommand::Activate { id, client } => {
            let c = Client::new(&client)?;
            let v = c.send(c.post(&format!("{}/activate", path(&id)))).await?;
            if client.json {
                return print_json(&v);
            }
            println!("activated {}; next run {}", s(&v["id"]), s(&v["nextRun"]));
        }
        SchedulesCommand::Deactivate { id, client } => {
            let c = Client::new(&client)?;
            let v = c.send(c.post(&format!("{}/deactivate", path(&id)))).await?;
            if client.json {
                return print_json(&v);
            }
            println!("deactivated {}", s(&v["id"]));
        }
        SchedulesCommand::Timezones {
            exclude_utc,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .send(
                    c.get("/api/v1/timezones")
                        .query(&[("excludeUtc", exclude_utc)]),
                )
                .await?;
            if client.json {
                return print_json(&v);
            }
            for zone in v["timezones"].as_array().into_iter().flatten() {
                println!("{}", s(zone));
            }
        }
    }
    Ok(())
}
